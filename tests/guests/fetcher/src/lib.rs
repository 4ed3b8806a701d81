//! fetcher: `GET /fetch?<url>` fetches `<url>` with outbound HTTP and answers
//! `200 status <n> <body>`, or `502 <error>` when the fetch failed. For the
//! outbound HTTP policy tests: what the guest can and cannot reach. In
//! Terminated it tries to fetch its custom data (a URL), which the phase
//! rule must refuse.

use sessionbox_guest::{
    HttpRequestEvent, HttpResponse, Scenario, export_scenario, http, log, session,
};

#[derive(Default)]
struct Fetcher;

impl Scenario for Fetcher {
    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        let Some(url) = request.path.strip_prefix("/fetch?") else {
            return HttpResponse::empty(404);
        };
        match http::get(url) {
            Ok(result) => {
                let body = String::from_utf8_lossy(&result.body);
                log(&format!("fetched {url}: {}", result.status));
                HttpResponse::text(200, format!("status {} {body}", result.status))
            }
            Err(error) => {
                log(&format!("fetch {url} failed: {error}"));
                HttpResponse::text(502, error)
            }
        }
    }

    fn terminated(&mut self) {
        let url = session::custom_data();
        if !url.is_empty() {
            match http::get(&url) {
                Ok(result) => log(&format!("terminated fetch answered {}", result.status)),
                Err(error) => log(&format!("terminated fetch refused: {error}")),
            }
        }
    }
}

export_scenario!(Fetcher);
