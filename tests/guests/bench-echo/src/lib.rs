//! bench-echo: the benchmark workload's scenario. Logs `started <custom
//! data>`, `terminating` and `terminated`; answers every HttpRequest 200 with
//! the request body and one header. Nothing else, so the benchmark measures
//! the host.

use sessionbox_guest::{
    Header, HttpRequestEvent, HttpResponse, Scenario, StartedEvent, export_scenario, log,
};

#[derive(Default)]
struct BenchEcho;

impl Scenario for BenchEcho {
    fn started(&mut self, event: StartedEvent) {
        log(&format!("started {}", event.custom_data));
    }

    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: vec![Header::new("content-type", "application/octet-stream")],
            body: request.body,
        }
    }

    fn terminating(&mut self) {
        log("terminating");
    }

    fn terminated(&mut self) {
        log("terminated");
    }
}

export_scenario!(BenchEcho);
