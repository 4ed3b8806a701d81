//! The server's SIP front: the listener, and the routes that give each
//! incoming call to an app (a new session, Started, then CallAlerting).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use anyhow::Result;
use axum::http::StatusCode;
use regex::Regex;

use crate::Server;
use crate::config::SipConfig;
use sessionbox_host::metrics::SipInviteLabels;
use sessionbox_host::telephony::{Dialer, NoDialer};
use sessionbox_sip::{IncomingInvite, SipEndpoint, TrunkDialer};

pub struct SipFront {
    endpoint: Arc<SipEndpoint>,
    /// Called-number patterns and their apps, first match wins.
    routes: Arc<[(Regex, String)]>,
}

impl SipFront {
    pub async fn bind(settings: &SipConfig) -> Result<SipFront> {
        let rtp_ports = settings.rtp_ports.map(|[low, high]| low..=high);
        let endpoint = SipEndpoint::bind(
            settings.listen,
            settings.public_address,
            rtp_ports,
            settings.media_address_v6,
        )
        .await?;
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

    /// OPTIONS answer 503 from now on: a dispatcher in front stops
    /// sending this node calls.
    pub fn stop_taking_calls(&self) {
        self.endpoint.set_taking_calls(false);
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
        let app = route.and_then(|(_, name)| Some((name, self.apps.named(name)?)));
        let Some((app_name, app)) = app else {
            tracing::info!(number = %invite.number, "SIP: no route for the number called");
            self.count_invite("no_route");
            return invite.refuse(404).await;
        };
        if let Some(why) = invite.unplayable() {
            tracing::info!(app = %app_name, "SIP: call refused with 488: {why}");
            self.count_invite("not_acceptable");
            return invite.refuse(488).await;
        }
        let started = match self.start_session(app_name, &app, String::new()).await {
            Ok(started) => started,
            Err(refused) => {
                tracing::info!(app = %app_name, "SIP: call refused: {}", refused.message);
                // A tenant's quota is its own line being busy; a full node
                // is unavailable to everyone.
                let (outcome, code) = if refused.status == StatusCode::TOO_MANY_REQUESTS {
                    ("busy", 486)
                } else {
                    ("unavailable", 503)
                };
                self.count_invite(outcome);
                return invite.refuse(code).await;
            }
        };
        // Counted as taken first: the caller may hear of it before this
        // task runs again.
        self.count_invite("taken");
        if let Err(error) = invite.deliver(&started.handle).await {
            tracing::warn!(app = %app_name, "SIP: the new session did not take its call: {error}");
            let _ = started.handle.terminate();
        }
    }

    fn count_invite(&self, outcome: &'static str) {
        self.runtime
            .metrics()
            .sip_invites
            .get_or_create(&SipInviteLabels { outcome })
            .inc();
    }
}
