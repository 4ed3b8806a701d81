//! fetcher: `GET /fetch?<url>` fetches `<url>` with outbound HTTP and answers
//! `200 status <n> <body>`, or `502 <error>` when the fetch failed. For the
//! outbound HTTP policy tests: what the guest can and cannot reach.
//!
//! - It follows redirects as an HTTP library would (up to 5 hops), each hop
//!   a new request that the host checks anew, and logs each one.
//! - A request header `x-pad: <n>` makes it send a header of `n` bytes.
//! - In Terminated it tries to fetch its custom data (a URL), which the
//!   phase rule must refuse.

use sessionbox_guest::{
    HttpRequestEvent, HttpResponse, Scenario, export_scenario, http, log, session,
};

const MAX_REDIRECTS: usize = 5;

#[derive(Default)]
struct Fetcher;

impl Scenario for Fetcher {
    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        let Some(url) = request.path.strip_prefix("/fetch?") else {
            return HttpResponse::empty(404);
        };
        let padding = request
            .headers
            .iter()
            .find(|h| h.name == "x-pad")
            .and_then(|h| h.value.parse::<usize>().ok())
            .map(|bytes| "p".repeat(bytes));
        let headers: Vec<(&str, &str)> = padding
            .iter()
            .map(|padding| ("x-padding", padding.as_str()))
            .collect();
        match follow(url, &headers) {
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

/// GETs `url`, following redirects.
fn follow(url: &str, headers: &[(&str, &str)]) -> Result<http::HttpResult, String> {
    let mut url = url.to_owned();
    for _ in 0..MAX_REDIRECTS {
        let result = http::request("GET", &url, headers, &[])?;
        match result.header("location") {
            Some(next) if (300..400).contains(&result.status) => {
                log(&format!("redirected to {next}"));
                url = next.to_owned();
            }
            _ => return Ok(result),
        }
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

export_scenario!(Fetcher);
