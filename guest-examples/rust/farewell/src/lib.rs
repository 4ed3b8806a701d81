//! farewell: notifies a webhook when the session ends.
//!
//! The session's custom data is the webhook URL. In `terminating` a scenario
//! may make exactly one outbound HTTP request and set no timers: the first
//! POST goes out, while a timer and a second POST show what refusals look
//! like (a `Refusal`, and wasi:http's `HttpRequestDenied`). `POST /stop` on
//! the access URL ends the session.

use serde_json::json;
use sessionbox_guest::{
    HttpRequestEvent, HttpResponse, Scenario, StartedEvent, export_scenario, http, log, session,
    timers,
};

#[derive(Default)]
struct Farewell {
    webhook: String,
}

impl Scenario for Farewell {
    fn started(&mut self, event: StartedEvent) {
        log(&format!("started, webhook={}", event.custom_data));
        self.webhook = event.custom_data;
    }

    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        if request.path.split('?').next() != Some("/stop") {
            return HttpResponse::empty(404);
        }
        if let Err(refusal) = session::terminate() {
            log(&format!("refused: {refusal}"));
        }
        HttpResponse::empty(200)
    }

    fn terminating(&mut self) {
        // Timers ended with the running phase.
        if let Err(refusal) = timers::set_timeout(1000) {
            log(&format!("timer refused: {refusal}"));
        }
        let body = json!({ "session": session::id(), "event": "terminating" }).to_string();
        match http::post(&self.webhook, "application/json", body.as_bytes()) {
            Ok(answer) => log(&format!("webhook answered {}", answer.status)),
            Err(error) => log(&format!("webhook failed: {error}")),
        }
        // One request is all `terminating` allows: this one is refused.
        match http::post(&self.webhook, "application/json", body.as_bytes()) {
            Ok(answer) => log(&format!("second request answered {}", answer.status)),
            Err(error) => log(&format!("second request refused: {error}")),
        }
    }

    fn terminated(&mut self) {
        log("terminated");
    }
}

export_scenario!(Farewell);
