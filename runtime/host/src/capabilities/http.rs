//! `http`: outbound HTTP through the standard `wasi:http/outgoing-handler`,
//! so ordinary HTTP libraries and JavaScript's `fetch` work, metered in the
//! host's `send_request` hook.
//!
//! Phase rule: while running, up to `http_per_session` requests; in
//! Terminating exactly `http_in_terminating` (one); in Terminated none. At
//! most `http_concurrent` are in flight (more wait their turn; a tenant's
//! sessions may also share a limit, [`crate::SharedLimits`]), each under the
//! connect timeout and a total timeout that covers the whole response body,
//! with the body cut off at `http_response_bytes` as it streams. Header
//! sections are limited to `http_header_bytes` both ways. A refusal reaches
//! the guest as the standard `HttpRequestDenied` error code and is noted in
//! the session log.
//!
//! Destinations are checked first ([`destination`]): the host must be on
//! the app's allowlist (else `HttpRequestDenied`), and the addresses it
//! resolves to must be public unless the app allows private ones (else
//! `DestinationIpProhibited`). Plain-HTTP requests then connect to the
//! address that was checked, so a second DNS answer cannot swap it. Redirects
//! are not followed by the host: each hop is a new request, checked anew.
//!
//! The session waits for requests in flight before delivering Terminated:
//! [`Http::wait_idle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Limited};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

use super::{Common, Factor, Ledger, Phases, SessionContext, WasiStore};
use crate::bindings::{Capability, Phase};
use crate::deadline::Deadline;
use crate::destination::{self, HostRule};
use crate::in_flight::InFlight;
use crate::limits::Limits;
use crate::metrics::Metrics;

pub struct Http {
    ctx: WasiHttpCtx,
    policy: HttpPolicy,
}

impl Http {
    /// Resolves when no outbound request is in flight.
    pub async fn wait_idle(&self) {
        self.policy.in_flight.idle().await;
    }
}

impl HasData for Http {
    type Data<'a> = WasiHttpCtxView<'a>;
}

impl Factor for Http {
    type View = Http;

    fn new(cx: &SessionContext<'_>) -> Self {
        let limits = Arc::clone(cx.limits);
        let mut ctx = WasiHttpCtx::new();
        // Headers the guest builds; wasmtime counts them in memory, which
        // is somewhat more than their size on the wire.
        ctx.set_field_size_limit(limits.http_header_bytes);
        Http {
            ctx,
            policy: HttpPolicy {
                concurrency: Arc::new(Semaphore::new(limits.http_concurrent)),
                shared_turns: cx.shared.map(|s| Arc::clone(s.http_turns())),
                limits,
                phase: Phase::Running,
                sent_running: Arc::default(),
                sent_terminating: Arc::default(),
                ledger: cx.ledger.clone(),
                metrics: Arc::clone(cx.metrics),
                rules: Arc::clone(cx.http_rules),
                in_flight: InFlight::default(),
            },
        }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> WasiHttpCtxView<'a> {
        // The hook answers for the session's phase as it is now.
        self.policy.phase = common.gate.phase();
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table: common.table,
            hooks: &mut self.policy,
        }
    }

    /// wasi-http links through its own view of the store.
    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        _get: fn(&mut T) -> WasiHttpCtxView<'_>,
    ) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }
}

/// The per-session policy behind `send_request`.
struct HttpPolicy {
    limits: Arc<Limits>,
    phase: Phase,
    /// Requests sent in each phase; shared with the requests' futures,
    /// which give back a request refused for its address before it left.
    sent_running: Arc<AtomicUsize>,
    sent_terminating: Arc<AtomicUsize>,
    /// The session's; requests in flight book through it too (an address
    /// found internal on resolution is refused after the hook returned).
    ledger: Ledger,
    metrics: Arc<Metrics>,
    rules: Arc<[HostRule]>,
    concurrency: Arc<Semaphore>,
    /// Turns shared with other sessions (the tenant's), taken after the
    /// session's own so one session's queue does not hold them.
    shared_turns: Option<Arc<Semaphore>>,
    in_flight: InFlight,
}

impl HttpPolicy {
    /// The phase rule, counting the request when it is allowed; returns the
    /// count it was taken from.
    fn admit(&mut self) -> Result<Arc<AtomicUsize>, String> {
        Phases::UntilTerminated.check(self.phase)?;
        let limits = &self.limits;
        let (sent, limit, what) = match self.phase {
            Phase::Terminating => (
                &self.sent_terminating,
                limits.http_in_terminating,
                "in terminating",
            ),
            _ => (&self.sent_running, limits.http_per_session, "per session"),
        };
        // Only the session's own task admits requests: no race between the
        // load and the store.
        if sent.load(Ordering::Acquire) >= limit {
            return Err(format!(
                "{limit} outbound request{} {what} is the limit",
                if limit == 1 { "" } else { "s" }
            ));
        }
        sent.fetch_add(1, Ordering::AcqRel);
        Ok(Arc::clone(sent))
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let what = format!("{} {}", request.method(), request.uri());
        let ledger = RequestLedger {
            ledger: self.ledger.clone(),
            metrics: Arc::clone(&self.metrics),
            phase: self.phase,
            what,
        };
        let Some(target) = Target::of(request.uri()) else {
            let error = ledger.refuse(
                "the URL has no host".into(),
                HttpError::HttpRequestUriInvalid,
            );
            return refused(request, error);
        };
        if !destination::allowed(&self.rules, &target.scheme, &target.host, target.port) {
            let reason = format!(
                "{} is not on the app's outbound HTTP allowlist",
                target.host
            );
            let error = ledger.refuse(reason, HttpError::HttpRequestDenied);
            return refused(request, error);
        }
        let admitted = match self.admit() {
            Ok(count) => count,
            Err(reason) => {
                let error = ledger.refuse(reason, HttpError::HttpRequestDenied);
                return refused(request, error);
            }
        };
        let allow_private = self.limits.http_allow_private;

        let limits = Arc::clone(&self.limits);
        let concurrency = Arc::clone(&self.concurrency);
        let shared_turns = self.shared_turns.clone();
        let in_flight = self.in_flight.start();
        let options = RequestOptions {
            connect_timeout: Some(shorter(
                options.and_then(|o| o.connect_timeout),
                limits.http_connect_timeout,
            )),
            first_byte_timeout: Some(shorter(
                options.and_then(|o| o.first_byte_timeout),
                limits.http_total_timeout,
            )),
            between_bytes_timeout: Some(shorter(
                options.and_then(|o| o.between_bytes_timeout),
                limits.http_total_timeout,
            )),
        };
        Box::new(async move {
            let _in_flight = in_flight;
            let deadline = Instant::now() + limits.http_total_timeout;
            let send = async {
                let ended = |_| HttpError::InternalError(Some("session ended".into()));
                let turn = concurrency.acquire_owned().await.map_err(ended)?;
                let shared_turn = match shared_turns {
                    Some(turns) => Some(turns.acquire_owned().await.map_err(ended)?),
                    None => None,
                };
                let mut request = request;
                let addresses =
                    match destination::resolve_public(&target.host, target.port, allow_private)
                        .await
                    {
                        Ok(addresses) => addresses,
                        Err((error, reason)) => {
                            // Never sent: it does not use up the phase's
                            // requests (Terminating's one, say).
                            admitted.fetch_sub(1, Ordering::AcqRel);
                            let error = ledger.refuse(reason, error);
                            drain(request.into_body()).await;
                            return Err(error);
                        }
                    };
                ledger.count_use();
                if target.scheme == "http" {
                    // Connect to the address just checked (the Host header
                    // keeps the name). TLS needs the name for its checks.
                    pin_authority(&mut request, addresses[0]);
                }
                let (response, io) =
                    wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
                let header_bytes = header_section_bytes(response.headers());
                if header_bytes > limits.http_header_bytes {
                    return Err(HttpError::HttpResponseHeaderSectionSize(Some(
                        header_bytes as u32,
                    )));
                }
                let max = limits.http_response_bytes;
                let response = response.map(|body| {
                    // The turns are held until the body is read or dropped.
                    let body = Deadline::new(body, deadline, (turn, shared_turn), || {
                        Box::new(HttpError::HttpResponseTimeout)
                    });
                    Limited::new(body, max)
                        .map_err(move |e| match e.downcast::<HttpError>() {
                            Ok(inner) => *inner,
                            Err(_) => HttpError::HttpResponseBodySize(Some(max as u64)),
                        })
                        .boxed_unsync()
                });
                Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
            };
            tokio::time::timeout_at(deadline, send)
                .await
                .unwrap_or(Err(HttpError::HttpResponseTimeout))
        })
    }
}

/// A request refused before it left: the error, once the guest has written
/// its body.
fn refused(request: http::Request<WasiBody>, error: HttpError) -> SendFuture {
    Box::new(async move {
        drain(request.into_body()).await;
        Err(error)
    })
}

/// Reads a refused request's body to its end, within bounds. A guest may
/// still be writing it while it waits for the answer, and some engines
/// (StarlingMonkey, in componentize-js) fail outright, instead of seeing the
/// refusal, when the body is dropped under them.
async fn drain(body: WasiBody) {
    const MOST_BYTES: usize = 1 << 20;
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(5);
    let _ = tokio::time::timeout(LONGEST, Limited::new(body, MOST_BYTES).collect()).await;
}

/// Where a request goes.
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

impl Target {
    fn of(uri: &http::Uri) -> Option<Target> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().filter(|h| !h.is_empty())?.to_owned();
        let default_port = if scheme == "http" { 80 } else { 443 };
        Some(Target {
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
            host,
        })
    }
}

/// Points a request's URI at `address`, keeping scheme, path and query.
fn pin_authority(request: &mut http::Request<WasiBody>, address: std::net::SocketAddr) {
    let mut parts = request.uri().clone().into_parts();
    if let Ok(authority) = address.to_string().parse() {
        parts.authority = Some(authority);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

/// Where a request's outcome is booked: a use once it passed every check,
/// or a refusal. Usable from the request's future, after the hook returned.
struct RequestLedger {
    ledger: Ledger,
    metrics: Arc<Metrics>,
    phase: Phase,
    /// The request, as refusals name it.
    what: String,
}

impl RequestLedger {
    /// Counts the request as sent (it passed every check).
    fn count_use(&self) {
        self.ledger.count_use(Capability::Http);
        self.metrics.http_requests.inc();
    }

    fn refuse(&self, reason: String, error: HttpError) -> HttpError {
        let reason = format!("{reason} ({})", self.what);
        self.ledger.refuse(Capability::Http, self.phase, &reason);
        error
    }
}

/// The size of a header section as on the wire (`name: value\r\n`).
fn header_section_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The shorter of the guest's timeout, if it gave one, and the limit.
fn shorter(guest: Option<std::time::Duration>, limit: std::time::Duration) -> std::time::Duration {
    guest.map_or(limit, |g| g.min(limit))
}
