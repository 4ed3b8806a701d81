//! visit-counter: counts the visits to every session of the app together.
//!
//! Each request to the access URL adds 1 to the app's storage key `visits`
//! and answers `{"visits":N}`. The increment is atomic on the host, so
//! concurrent requests from many sessions all count; a refusal (e.g. the
//! storage is unavailable) answers 503 with the refusal's text.

use serde_json::json;
use sessionbox_guest::{HttpRequestEvent, HttpResponse, Scenario, export_scenario, storage};

#[derive(Default)]
struct VisitCounter;

impl Scenario for VisitCounter {
    fn http_request(&mut self, _request: HttpRequestEvent) -> HttpResponse {
        match storage::increment("visits", 1) {
            Ok(visits) => HttpResponse::json(200, json!({ "visits": visits }).to_string()),
            Err(refusal) => HttpResponse::text(503, refusal.to_string()),
        }
    }
}

export_scenario!(VisitCounter);
