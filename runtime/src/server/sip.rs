//! The server's SIP front: the listener, and the routes that give each
//! incoming call to an app (a new session, Started, then CallAlerting).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use anyhow::Result;
use axum::http::StatusCode;
use regex::Regex;

use super::Server;
use crate::config::SipConfig;
use crate::sip::{IncomingInvite, SipEndpoint, TrunkDialer};
use crate::telephony::{Dialer, NoDialer};

pub struct SipFront {
    endpoint: Arc<SipEndpoint>,
    /// Called-number patterns and their apps, first match wins.
    routes: Arc<[(Regex, String)]>,
}

impl SipFront {
    pub async fn bind(settings: &SipConfig) -> Result<SipFront> {
        let rtp_ports = settings.rtp_ports.map(|[low, high]| low..=high);
        let endpoint =
            SipEndpoint::bind(settings.listen, settings.public_address, rtp_ports).await?;
        let routes = settings
            .routes
            .iter()
            .map(|route| Ok((Regex::new(&route.number)?, route.app.clone())))
            .collect::<Result<_>>()?;
        tracing::info!(listen = %endpoint.local_addr(), "SIP listening (UDP and TCP)");
        Ok(SipFront { endpoint, routes })
    }

    /// The scenarios' outbound calls: through the trunk, or refused.
    pub fn dialer(&self, settings: &SipConfig) -> Result<Arc<dyn Dialer>> {
        Ok(match &settings.trunk {
            Some(trunk) => Arc::new(TrunkDialer::new(Arc::clone(&self.endpoint), trunk.clone())?),
            None => Arc::new(NoDialer),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    pub fn serve(&self, server: Weak<Server>) {
        let routes = Arc::clone(&self.routes);
        self.endpoint.serve(move |invite| {
            let routes = Arc::clone(&routes);
            let server = server.clone();
            tokio::spawn(async move {
                match server.upgrade() {
                    Some(server) => server.take_call(&routes, invite).await,
                    None => invite.refuse(503).await,
                }
            });
        });
    }

    pub fn stop_listening(&self) {
        self.endpoint.shutdown();
    }
}

impl Server {
    /// Routes an incoming call by the number called and starts a session of
    /// the app for it; a call that no app takes is refused with the SIP
    /// status that says why.
    async fn take_call(self: &Arc<Self>, routes: &[(Regex, String)], invite: IncomingInvite) {
        let route = routes
            .iter()
            .find(|(pattern, _)| pattern.is_match(&invite.number));
        let Some((_, app_name)) = route else {
            tracing::info!(number = %invite.number, "SIP: no route for the number called");
            return invite.refuse(404).await;
        };
        let app = {
            let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
            apps.get(app_name).cloned()
        };
        let Some(app) = app else {
            return invite.refuse(404).await;
        };
        let started = match self.start_session(app_name, &app, String::new()).await {
            Ok(started) => started,
            Err(refused) => {
                tracing::info!(app = %app_name, "SIP: call refused: {}", refused.message);
                // A tenant's quota is its own line being busy; a full node
                // is unavailable to everyone.
                let code = if refused.status == StatusCode::TOO_MANY_REQUESTS {
                    486
                } else {
                    503
                };
                return invite.refuse(code).await;
            }
        };
        if let Err(error) = invite.deliver(&started.handle).await {
            tracing::warn!(app = %app_name, "SIP: the new session did not take its call: {error}");
            let _ = started.handle.terminate();
        }
    }
}
