//! remote-control: a JSON API on the session's access URL.
//!
//! - `GET /status`: the session id, how many requests it has served
//!   (counting this one) and its custom data.
//! - `POST /custom-data`: replaces the custom data with the request body.
//! - `/stop` (any method): ends the session.
//!
//! Every request is logged as `<METHOD> <path> -> <status>`.

use serde_json::json;
use sessionbox_guest::{HttpRequestEvent, HttpResponse, Scenario, export_scenario, log, session};

#[derive(Default)]
struct RemoteControl {
    requests: u64,
}

impl RemoteControl {
    fn route(&mut self, request: &HttpRequestEvent) -> (u16, serde_json::Value) {
        // Route on the path alone; a query string does not change the route.
        let path = request.path.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("GET", "/status") => (
                200,
                json!({
                    "session": session::id(),
                    "requests": self.requests,
                    "custom_data": session::custom_data(),
                }),
            ),
            ("POST", "/custom-data") => {
                let data = String::from_utf8_lossy(&request.body);
                match session::set_custom_data(&data) {
                    Ok(()) => (200, json!({ "custom_data": data })),
                    // E.g. longer than the host's limit.
                    Err(refusal) => (400, json!({ "error": refusal.to_string() })),
                }
            }
            (_, "/stop") => {
                // The session ends after this handler returns, so the
                // response still goes out.
                if let Err(refusal) = session::terminate() {
                    log(&format!("refused: {refusal}"));
                }
                log("stopping");
                (200, json!({ "stopping": true }))
            }
            (method, _) => (
                404,
                json!({ "error": format!("no route for {method} {}", request.path) }),
            ),
        }
    }
}

impl Scenario for RemoteControl {
    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        self.requests += 1;
        let (status, body) = self.route(&request);
        log(&format!("{} {} -> {status}", request.method, request.path));
        HttpResponse::json(status, body.to_string())
    }

    fn terminating(&mut self) {
        log("terminating");
    }

    fn terminated(&mut self) {
        log("terminated");
    }
}

export_scenario!(RemoteControl);
