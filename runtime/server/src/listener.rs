//! The server's HTTP/1.1 listener: connections up to a limit, the timeouts
//! that keep slow and idle clients from holding them, and a shutdown that
//! ends by its deadline whatever the clients do.
//!
//! - A request's head must arrive within `header_read_timeout`
//!   (slowloris), its body within `body_read_timeout` of the head (else
//!   408); a connection with no request in flight and no bytes moving for
//!   `idle_timeout` is closed, as is one that has not finished closing
//!   [`CLOSE_GRACE`] after it was asked to (a client that never reads).
//! - Past `max_connections`, a new connection is answered 503 and closed.
//!   The descriptor soft limit is raised to the hard limit at start, and
//!   `max_connections` is lowered to what the descriptors can hold.
//! - On shutdown the listener stops accepting and asks every connection to
//!   close once its request is answered; at the deadline it drops the rest.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use sessionbox_host::deadline::{BoxError, Deadline};
use sessionbox_host::in_flight::InFlight;

/// How long a connection asked to close (idle, or after its request) may
/// take to do so before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Descriptors kept for everything but HTTP connections: sessions' SIP and
/// RTP sockets, outbound requests, the database, the cache.
const DESCRIPTORS_KEPT: u64 = 1024;

/// What slow, idle and too many clients get.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The request body was not read within `body_read_timeout`.
#[derive(Debug)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// Serves `service` on `listener` until `shutdown` resolves, then closes
/// the connections, dropping what is left at `deadline`.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    mut limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    deadline: Duration,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let descriptors = raise_descriptor_limit();
    if let Some(descriptors) = descriptors {
        let room =
            usize::try_from(descriptors.saturating_sub(DESCRIPTORS_KEPT)).unwrap_or(usize::MAX);
        if room < limits.max_connections {
            limits.max_connections = room.max(1);
        }
    }
    tracing::info!(
        max_connections = limits.max_connections,
        file_descriptors = descriptors,
        "HTTP connection capacity"
    );
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections as they go.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                accept_failed(&error).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let (service, limits, closed) = (service.clone(), Arc::clone(&limits), closed.clone());
        connections.spawn(async move {
            connection(stream, service, &limits, closed).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(deadline, all_closed).await.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections still open at the shutdown deadline were dropped"
        );
        connections.shutdown().await;
    }
}

/// One connection, from its first byte to its close.
async fn connection<S>(
    stream: TcpStream,
    service: S,
    limits: &ConnectionLimits,
    mut closed: watch::Receiver<bool>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let in_flight = InFlight::default();
    let requests = {
        let in_flight = in_flight.clone();
        let body_read_timeout = limits.body_read_timeout;
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = in_flight.start();
            let deadline = Instant::now() + body_read_timeout;
            let request =
                request.map(|body| Body::new(Deadline::new(body, deadline, (), body_timed_out)));
            let answer = service.clone().oneshot(request);
            async move {
                let response = answer.await;
                drop(busy);
                response
            }
        })
    };
    let io = TokioIo::new(Tracked {
        stream,
        activity: Arc::clone(&activity),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = http.serve_connection(io, requests).with_upgrades();
    tokio::pin!(conn);
    let mut close_by: Option<Instant> = None;
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = closed.changed(), if !*closed.borrow() => {
                // Shutting down: no keep-alive after the request in flight;
                // the listener drops what is left at its deadline.
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at), if close_by.is_none() => {
                if in_flight.count() == 0
                    && activity.last() + limits.idle_timeout <= Instant::now()
                {
                    conn.as_mut().graceful_shutdown();
                    close_by = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            () = sleep_until_some(close_by) => return,
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn body_timed_out() -> BoxError {
    Box::new(BodyTimedOut)
}

/// A new connection past the limit: a 503 that says so, written without
/// waiting (it fits any socket buffer), then closed.
fn refuse(stream: TcpStream) {
    const BODY: &str = r#"{"error":"the server is at its connection limit; try again later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
    tracing::debug!("refused a connection: at the connection limit");
}

/// After a failed accept. Running out of descriptors or memory repeats at
/// once while the cause lasts: wait a little rather than spin. Anything
/// else concerned only the connection that failed.
async fn accept_failed(error: &io::Error) {
    let exhausted = matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if exhausted {
        tracing::warn!("accepting a connection failed: {error}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    } else {
        tracing::debug!("accepting a connection failed: {error}");
    }
}

/// Raises the soft limit of open descriptors to the hard limit; returns
/// the limit now in force.
fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid rlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// When a connection last moved bytes, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A connection's stream, noting when bytes move.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
