//! SIP: real calls in and out, through rsipstack's transaction and dialog
//! layers (RFC 3261) over UDP and TCP.
//!
//! [`SipEndpoint`] listens; each new INVITE becomes an [`IncomingInvite`]
//! that the server routes to an app, and, once a session takes it, a
//! [`call::SipCall`] task that drives the dialog and the call's RTP
//! ([`media`]), playing prompts ([`prompt`]) and speech ([`speech`]). In-dialog requests (ACK, BYE, INFO, MESSAGE, CANCEL) reach
//! their dialog here. [`trunk::TrunkDialer`] places the scenarios' outbound
//! calls through a configured trunk.

mod call;
mod g711;
pub mod media;
mod outbound;
mod prompt;
pub mod sdp;
mod speech;
mod stream;
mod trunk;
mod wav_out;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use rsipstack::dialog::dialog::Dialog;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::headers::ToTypedHeader;
use rsipstack::sip::{HasHeaders, Header, HeadersExt, Method, StatusCode, Uri};
use rsipstack::transaction::{
    Endpoint, EndpointBuilder, TransactionReceiver, transaction::Transaction,
};
use rsipstack::transport::TransportLayer;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use tokio_util::sync::CancellationToken;

use call::{Direction, SipCall};
use media::Rtp;
use sessionbox_host::bindings::CallId;
use sessionbox_host::bindings::Header as CallHeader;
use sessionbox_host::session::{SessionError, SessionHandle};
use sessionbox_host::sync::MutexExt;
use sessionbox_host::telephony::IncomingCall;
pub use trunk::{Trunk, TrunkDialer};
pub use wav_out::WavOut;

/// A SIP listener on UDP and TCP at one address, and the dialogs it holds.
pub struct SipEndpoint {
    endpoint: Endpoint,
    layer: Arc<DialogLayer>,
    cancel: CancellationToken,
    /// The address it listens on (both transports).
    local: SocketAddr,
    /// The address given to the far end in Contact and SDP.
    advertised: IpAddr,
    /// Where calls' RTP sockets go (any free port when None).
    rtp_ports: Option<RangeInclusive<u16>>,
    /// Our IPv6 address for IPv6 offers, when `advertised` is IPv4.
    media_v6: Option<Ipv6Addr>,
    incoming: Mutex<Option<TransactionReceiver>>,
    /// Whether new calls are welcome: a draining node answers OPTIONS
    /// with 503, so that a dispatcher in front stops sending it calls.
    taking_calls: AtomicBool,
}

impl SipEndpoint {
    /// Listens on `listen` (UDP and TCP; port 0 picks one). `advertised` is
    /// the address peers reach us at; it must be given when `listen` is a
    /// wildcard address. Calls' RTP takes even ports of `rtp_ports`; a call
    /// whose offer is IPv6 gets its media on `media_v6`, if given.
    pub async fn bind(
        listen: SocketAddr,
        advertised: Option<IpAddr>,
        rtp_ports: Option<RangeInclusive<u16>>,
        media_v6: Option<Ipv6Addr>,
    ) -> Result<Arc<SipEndpoint>> {
        let advertised = match advertised {
            Some(ip) => ip,
            None if listen.ip().is_unspecified() => {
                return Err(anyhow!(
                    "sip.listen {listen} is a wildcard address: set sip.public_address to the address callers reach"
                ));
            }
            None => listen.ip(),
        };
        let cancel = CancellationToken::new();
        let transports = TransportLayer::new(cancel.clone());
        let udp = UdpConnection::create_connection(listen, None, Some(cancel.child_token()))
            .await
            .with_context(|| format!("sip.listen: binding UDP {listen}"))?;
        let local = udp
            .get_addr()
            .get_socketaddr()
            .map_err(|e| anyhow!("sip.listen: {e}"))?;
        // TCP on the same port UDP took (which matters when it was 0).
        let tcp_at = SocketAddr::new(listen.ip(), local.port());
        let tcp = TcpListenerConnection::new(tcp_at, None)
            .await
            .with_context(|| format!("sip.listen: binding TCP {tcp_at}"))?;
        transports.add_transport(udp.into());
        transports.add_transport(tcp.into());
        let endpoint = EndpointBuilder::new()
            .with_user_agent(concat!("sessionbox/", env!("CARGO_PKG_VERSION")))
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transports)
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| anyhow!("sip: {e}"))?;
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        Ok(Arc::new(SipEndpoint {
            endpoint,
            layer,
            cancel,
            local: SocketAddr::new(listen.ip(), local.port()),
            advertised,
            rtp_ports,
            media_v6: media_v6.filter(|_| advertised.is_ipv4()),
            incoming: Mutex::new(Some(incoming)),
            taking_calls: AtomicBool::new(true),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether OPTIONS say this endpoint takes new calls (INVITEs are
    /// still routed: whoever takes them decides).
    pub fn set_taking_calls(&self, taking: bool) {
        self.taking_calls.store(taking, Ordering::Relaxed);
    }

    /// Our Contact: where the far end sends in-dialog requests.
    fn contact(&self) -> Uri {
        let at = SocketAddr::new(self.advertised, self.local.port());
        Uri::try_from(format!("sip:sessionbox@{at}").as_str()).expect("a valid SIP URI")
    }

    /// A new RTP socket for a call, on our IPv6 address when the far end's
    /// media is IPv6 and we have one.
    fn rtp(&self, far_end_ipv6: bool) -> std::io::Result<Rtp> {
        match self.media_v6 {
            Some(v6) if far_end_ipv6 => Rtp::bind(v6.into(), v6.into(), self.rtp_ports.clone()),
            _ => Rtp::bind(self.local.ip(), self.advertised, self.rtp_ports.clone()),
        }
    }

    /// The address our media is at for a far end whose media is IPv6 (or
    /// not).
    fn media_address(&self, far_end_ipv6: bool) -> IpAddr {
        match self.media_v6 {
            Some(v6) if far_end_ipv6 => v6.into(),
            _ => self.advertised,
        }
    }

    /// Runs the endpoint until [`shutdown`](Self::shutdown): every new
    /// INVITE goes to `route`, which must answer it one way or the other.
    pub fn serve(self: &Arc<Self>, route: impl Fn(IncomingInvite) + Send + Sync + 'static) {
        let Some(mut incoming) = self.incoming.locked().take() else {
            tracing::error!("the SIP endpoint is already being served");
            return;
        };
        let inner = self.endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(error) = inner.serve().await {
                tracing::error!("the SIP endpoint stopped: {error}");
            }
        });
        let sip = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(tx) = incoming.recv().await {
                sip.dispatch(tx, &route);
            }
        });
    }

    fn dispatch(self: &Arc<Self>, mut tx: Transaction, route: &impl Fn(IncomingInvite)) {
        let has_tag = tx
            .original
            .to_header()
            .and_then(|to| to.tag())
            .is_ok_and(|tag| tag.is_some());
        if tx.original.method == Method::Invite && !has_tag {
            route(IncomingInvite::new(tx, Arc::clone(self)));
            return;
        }
        match self.layer.match_dialog(&tx) {
            Some(Dialog::Invite(mut dialog)) => {
                tokio::spawn(async move {
                    if let Err(error) = dialog.handle(&mut tx).await {
                        tracing::debug!("SIP {}: {error}", tx.original.method);
                    }
                });
            }
            _ => {
                // Keep-alive OPTIONS are welcome (and tell a dispatcher
                // whether to send calls); anything else out of a dialog we
                // hold is not ours.
                let status = match tx.original.method {
                    Method::Options if self.taking_calls.load(Ordering::Relaxed) => StatusCode::OK,
                    Method::Options => StatusCode::ServiceUnavailable,
                    Method::Ack => return,
                    Method::Register | Method::Subscribe | Method::Publish => {
                        StatusCode::MethodNotAllowed
                    }
                    _ => StatusCode::CallTransactionDoesNotExist,
                };
                tokio::spawn(async move {
                    let _ = tx.reply(status).await;
                });
            }
        }
    }

    /// Stops listening. Calls still up end with their sessions.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

/// A new incoming call, not yet given to a session.
pub struct IncomingInvite {
    tx: Transaction,
    sip: Arc<SipEndpoint>,
    /// The number or SIP user called (the request URI's user).
    pub number: String,
    /// The call as the session will see it.
    pub call: IncomingCall,
}

impl IncomingInvite {
    fn new(tx: Transaction, sip: Arc<SipEndpoint>) -> Self {
        let request = &tx.original;
        let from = request
            .from_header()
            .ok()
            .and_then(|from| from.typed().ok());
        let to = request.to_header().ok().and_then(|to| to.typed().ok());
        let number = request.uri.user().unwrap_or_default().to_owned();
        let headers = request
            .headers()
            .iter()
            .filter_map(|header| match header {
                Header::Other(name, value) if name.to_ascii_lowercase().starts_with("x-") => {
                    Some(CallHeader {
                        name: name.clone(),
                        value: value.clone(),
                    })
                }
                _ => None,
            })
            .collect();
        let call = IncomingCall {
            caller_id: from
                .as_ref()
                .and_then(|from| from.uri.user().map(str::to_owned))
                .unwrap_or_default(),
            destination: to
                .as_ref()
                .and_then(|to| to.uri.user().map(str::to_owned))
                .unwrap_or_else(|| number.clone()),
            display_name: from
                .and_then(|from| from.display_name)
                .map(|name| name.trim_matches('"').to_owned())
                .unwrap_or_default(),
            headers,
        };
        IncomingInvite {
            tx,
            sip,
            number,
            call,
        }
    }

    /// Whether the caller's offer puts its media on IPv6.
    fn offers_ipv6(&self) -> bool {
        sdp::parse(self.tx.original.body()).is_ok_and(|offer| offer.addr.is_ipv6())
    }

    /// Why this node cannot carry the call's audio, if it cannot: an offer
    /// whose media is IPv6 when ours is IPv4 only (or the other way round)
    /// would get an answer and no audio at all.
    pub fn unplayable(&self) -> Option<String> {
        let offer = sdp::parse(self.tx.original.body()).ok()?;
        let ours = self.sip.media_address(offer.addr.is_ipv6());
        (offer.addr.is_ipv6() != ours.is_ipv6()).then(|| {
            format!(
                "the offer's audio is at {}, and this node's media is on {ours}",
                offer.addr.ip()
            )
        })
    }

    /// Turns the call away with a final response.
    pub async fn refuse(mut self, code: u16) {
        if let Err(error) = self.tx.reply(StatusCode::from(code)).await {
            tracing::debug!("SIP: refusing a call failed: {error}");
        }
    }

    /// Gives the call to `session`: CallAlerting is delivered, the caller
    /// hears ringing, and the call's task carries it from there.
    pub async fn deliver(mut self, session: &SessionHandle) -> Result<CallId, SessionError> {
        let sip = Arc::clone(&self.sip);
        let rtp = match sip.rtp(self.offers_ipv6()) {
            Ok(rtp) => rtp,
            Err(error) => {
                tracing::error!("SIP: no RTP socket for a call: {error}");
                self.refuse(500).await;
                return Err(SessionError::Refused(format!("no RTP socket: {error}")));
            }
        };
        let (states_tx, states) = sip.layer.new_dialog_state_channel();
        let dialog = match sip.layer.get_or_create_server_invite(
            &self.tx,
            states_tx,
            None,
            Some(sip.contact()),
        ) {
            Ok(dialog) => dialog,
            Err(error) => {
                self.refuse(400).await;
                return Err(SessionError::Refused(format!(
                    "not a usable INVITE: {error}"
                )));
            }
        };
        let body = self.tx.original.body();
        let direction = if body.iter().all(u8::is_ascii_whitespace) {
            Direction::IncomingWithoutOffer
        } else {
            Direction::Incoming(sdp::parse(body))
        };
        let call = SipCall {
            dialog: dialog.clone(),
            layer: Arc::clone(&sip.layer),
            states,
            rtp,
            direction,
        };
        // Ringing goes out before the session hears of the call: once it
        // has, its answer could overtake a 180 sent after.
        if let Err(error) = dialog.ringing(None, None) {
            tracing::warn!("SIP: sending 180 Ringing failed: {error}");
        }
        let connected = session.incoming_call_via(
            self.call.clone(),
            Box::new(move |context| Box::new(call.start(context))),
        );
        match connected {
            Ok(id) => {
                let mut dialog = dialog;
                tokio::spawn(async move {
                    if let Err(error) = dialog.handle(&mut self.tx).await {
                        tracing::debug!("SIP INVITE: {error}");
                    }
                });
                Ok(id)
            }
            Err(error) => {
                sip.layer.remove_dialog(&dialog.id());
                let code = if error == SessionError::Busy {
                    486
                } else {
                    480
                };
                self.refuse(code).await;
                Err(error)
            }
        }
    }
}
