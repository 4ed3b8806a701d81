//! The start flow: quotas, the history commit, the live registry and the
//! runtime, in the order that keeps every promise: nothing runs unless it
//! is in the history, nothing refused leaves a trace, and a session is
//! findable from the moment it can finish.

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::StatusCode;
use sessionbox_host::cache::content_hash;
use sessionbox_host::metrics::QuotaLabels;
use sessionbox_host::runtime::{
    StartError, StartOptions, check_custom_data, new_session_id, random_token,
};
use sessionbox_host::session::SessionRecord;

use crate::apps::App;
use crate::error::{ApiError, start_error};
use crate::history::NewSession;
use crate::{Server, Started};

impl Server {
    /// Starts a session of `app`; Started is its first event. Its row is
    /// committed to the history before it runs (so a crash from then on
    /// leaves it `interrupted`, not missing; a history that cannot be
    /// written refuses the start with 503). The history hears of its end
    /// through the finish hook, which retires it from the live sessions
    /// once its record is committed: until then it is read from memory.
    pub(crate) async fn start_session(
        self: &Arc<Self>,
        app_name: &str,
        app: &App,
        custom_data: String,
    ) -> Result<Started, ApiError> {
        // A refusal that needs no disk comes before the history commit.
        check_custom_data(&custom_data, app.scenario.limits()).map_err(start_error)?;
        if let Some(reason) = self.no_room() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the session was not started: {reason}"),
            ));
        }
        if let Err(refused) = self.quotas.admit(&app.tenant) {
            return Err(self.quota_refusal(&app.tenant, refused.quota, refused.reason));
        }
        // The tenant's quota holds a place from here until the session ends
        // or fails to start.
        let id = new_session_id();
        let secret = random_token();
        let session = NewSession {
            id: id.clone(),
            node: self.node_id.clone(),
            tenant: app.tenant.clone(),
            app: app_name.to_owned(),
            scenario_sha256: app.scenario.content_hash().to_owned(),
            access_secret_sha256: content_hash(secret.as_bytes()),
            started_at: SystemTime::now(),
        };
        let committed = self.history.started(session.clone()).await;
        if let Err(error) = committed.unwrap_or_else(|_| Err("the history writer stopped".into())) {
            self.quotas.release(&app.tenant);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the session was not started: its history cannot be written ({error})"),
            ));
        }
        let on_finish = {
            let server = Arc::clone(self);
            let session = session.clone();
            Box::new(move |record: Arc<SessionRecord>| {
                server.quotas.release(&session.tenant);
                let retire = Arc::clone(&server);
                let id = record.id.clone();
                // Nobody listening is fine.
                let _ = server.finished.send(Arc::clone(&record));
                let then = Box::new(move || retire.live.retire(&id));
                server.history.finished(session, record, then);
            })
        };
        // In the map before it runs: its finish hook may retire it at any
        // moment from here on.
        let message_bytes = app.scenario.limits().websocket_message_bytes;
        self.live
            .starting(session.clone(), secret.clone(), message_bytes);
        let options = StartOptions {
            id: Some(id.clone()),
            custom_data,
            access_url: format!("{}/s/{id}{secret}", self.public_url),
            observer: None,
            on_finish: Some(on_finish),
            shared: self.quotas.shared(&app.tenant),
            app: app.state.clone(),
        };
        let access_url = options.access_url.clone();
        let handle = match self.runtime.start(&app.scenario, options).await {
            Ok(handle) => handle,
            Err(error) => {
                // Never ran: nothing to keep, and nothing a reader can find
                // by the time the refusal is answered.
                self.live.retire(&id);
                self.quotas.release(&app.tenant);
                let _ = self.history.forget(&id).await;
                if let StartError::SharedMemoryFull { limit_bytes } = error {
                    let reason = format!(
                        "tenant {}'s sessions use its guest memory quota ({} KiB)",
                        app.tenant,
                        limit_bytes >> 10
                    );
                    return Err(self.quota_refusal(&app.tenant, "memory_bytes", reason));
                }
                return Err(start_error(error));
            }
        };
        // Unless it already finished and was retired, it is live now.
        self.live.running(&id, &handle);
        Ok(Started { handle, access_url })
    }

    /// A start refused by one of `tenant`'s quotas: counted, and a 429 that
    /// names it.
    fn quota_refusal(&self, tenant: &str, quota: &'static str, reason: String) -> ApiError {
        self.runtime
            .metrics()
            .quota_refusals
            .get_or_create(&QuotaLabels {
                tenant: tenant.to_owned(),
                quota,
            })
            .inc();
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, reason)
    }
}
