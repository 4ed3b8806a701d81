//! Connections a call makes on the app's behalf (fetching a prompt,
//! streaming its audio), under the app's outbound rules: its allow list,
//! and (unless allowed) no internal address, checked on the addresses the
//! name resolves to, which are the ones connected to.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use sessionbox_host::destination;
use sessionbox_host::telephony::CallContext;

/// Whose URL a connection goes to, and so which rules it is under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// The scenario's: the app's allow list and the private-address rule.
    App,
    /// The operator's (a speech service in the node's config): none.
    Operator,
}

/// A connection, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Connects to `uri`'s host (over TLS when `tls`), as `rules` allow;
/// every error is a sentence for the scenario's author.
pub async fn connect(
    uri: &http::Uri,
    tls: bool,
    context: &CallContext,
    rules: Rules,
) -> Result<Box<dyn Stream>, String> {
    let scheme = uri.scheme_str().unwrap_or_default();
    let host = uri.host().unwrap_or_default().to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    if rules == Rules::App && !destination::allowed(&context.http_rules, scheme, &host, port) {
        return Err(format!("{host} is not in the app's http_allow list"));
    }
    let limits = &context.limits;
    let allow_private = rules == Rules::Operator || limits.http_allow_private;
    let addresses = destination::resolve_public(&host, port, allow_private)
        .await
        .map_err(|(_, reason)| reason)?;
    let connect = TcpStream::connect(addresses.as_slice());
    let stream = tokio::time::timeout(limits.http_connect_timeout, connect)
        .await
        .map_err(|_| "no connection within the connect timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    if !tls {
        return Ok(Box::new(stream));
    }
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    let stream = tls_connector()
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::new(stream))
}

/// TLS with the web's root certificates, built once.
fn tls_connector() -> TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    });
    TlsConnector::from(Arc::clone(config))
}
