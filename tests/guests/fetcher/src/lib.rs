//! fetcher: `GET /fetch?<url>` fetches `<url>` with outbound HTTP and answers
//! `200 status <n> <body>`, or `502 <error>` when the fetch failed. For the
//! outbound HTTP policy tests: what the guest can and cannot reach.
//!
//! - It follows redirects as an HTTP library would (up to 5 hops), each hop
//!   a new request that the host checks anew, and logs each one.
//! - A request header `x-pad: <n>` makes it send a header of `n` bytes.
//! - Its custom data lists fetches for the last two events, as pairs
//!   `terminating <url>` and `terminated <url>` separated by spaces; each
//!   logs `<event> fetch answered <status>` or `<event> fetch refused:
//!   <error>`.

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

    fn terminating(&mut self) {
        fetch_planned("terminating");
    }

    fn terminated(&mut self) {
        fetch_planned("terminated");
    }
}

/// The fetches the custom data plans for `event`.
fn fetch_planned(event: &str) {
    let plan = session::custom_data();
    let words: Vec<&str> = plan.split_whitespace().collect();
    for pair in words.chunks(2) {
        if let [when, url] = pair
            && *when == event
        {
            match http::get(url) {
                Ok(result) => log(&format!("{event} fetch answered {}", result.status)),
                Err(error) => log(&format!("{event} fetch refused: {error}")),
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
