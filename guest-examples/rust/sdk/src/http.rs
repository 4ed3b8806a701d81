//! Outbound HTTP over the standard `wasi:http/outgoing-handler`.
//!
//! The host meters these requests like every other capability: while running
//! up to a per-session limit, in `terminating` exactly one, in `terminated`
//! none. A refusal is the standard `HttpRequestDenied` error code, so the
//! error text of a refused request contains `HttpRequestDenied`.
//!
//! The calls block the handler until the whole response has arrived.
//!
//! ```no_run
//! let answer = sessionbox_guest::http::post(
//!     "https://example.com/hook",
//!     "application/json",
//!     br#"{"event":"terminating"}"#,
//! )?;
//! sessionbox_guest::log(&format!("webhook answered {}", answer.status));
//! # Ok::<(), String>(())
//! ```

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method,
    OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

/// A response: its status, headers and whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResult {
    pub status: u16,
    /// (name, value) pairs as received; names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResult {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<HttpResult, String> {
    request("GET", url, &[], &[])
}

/// `POST url` with a body of the given content type.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<HttpResult, String> {
    request("POST", url, &[("content-type", content_type)], body)
}

/// Any request. `url` is absolute (`scheme://authority/path?query`).
///
/// Errors are text; a wasi:http error code appears under its name, e.g.
/// `ErrorCode::HttpRequestDenied` or `ErrorCode::ConnectionRefused`.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResult, String> {
    let target = Target::parse(url)?;

    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&fields).map_err(|e| format!("invalid header: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&to_method(method))
        .map_err(|()| format!("invalid method: {method}"))?;
    request
        .set_scheme(Some(&target.scheme))
        .map_err(|()| format!("invalid scheme in {url}"))?;
    request
        .set_authority(Some(target.authority))
        .map_err(|()| format!("invalid authority in {url}"))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| format!("invalid path in {url}"))?;
    let outgoing_body = request
        .body()
        .map_err(|()| "request body unavailable".to_string())?;

    // Send first, then stream the body: the host reads the body only once the
    // request is under way, so writing a large body first could wait forever.
    let future = outgoing_handler::handle(request, None).map_err(|e| error_text(&e))?;
    if let Err(write_error) = write_body(outgoing_body, body) {
        // The response usually says why better than the broken body stream.
        return match wait(&future) {
            Err(e) => Err(e),
            Ok(_) => Err(write_error),
        };
    }
    let response = wait(&future)?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let body = read_body(&response)?;
    Ok(HttpResult {
        status,
        headers,
        body,
    })
}

/// Writes `bytes` and finishes the body.
fn write_body(outgoing: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    if !bytes.is_empty() {
        let stream = outgoing
            .write()
            .map_err(|()| "request body stream unavailable".to_string())?;
        // wasi:io allows at most 4096 bytes per blocking write.
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("request body: {}", stream_error_text(e)))?;
        }
        // The stream is a child of the body: it must go before `finish`.
        drop(stream);
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| error_text(&e))
}

fn wait(future: &FutureIncomingResponse) -> Result<IncomingResponse, String> {
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Ok(response),
        Some(Ok(Err(e))) => Err(error_text(&e)),
        // Only if the response was already taken or is not ready, which
        // cannot happen after `block()` on the first `get()`.
        Some(Err(())) | None => Err("no response".to_string()),
    }
}

fn read_body(response: &IncomingResponse) -> Result<Vec<u8>, String> {
    let incoming = response
        .consume()
        .map_err(|()| "response body unavailable".to_string())?;
    let stream = incoming
        .stream()
        .map_err(|()| "response body stream unavailable".to_string())?;
    let mut body = Vec::new();
    let result = loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break Ok(body),
            Err(e) => break Err(format!("response body: {}", stream_error_text(e))),
        }
    };
    // Children before parents: the stream, then the body (trailers unused).
    drop(stream);
    drop(IncomingBody::finish(incoming));
    result
}

fn error_text(e: &ErrorCode) -> String {
    format!("{e:?}")
}

fn stream_error_text(e: StreamError) -> String {
    match e {
        StreamError::Closed => "closed early".to_string(),
        // A failed HTTP body stream usually carries an HTTP error code (e.g.
        // the host's response size limit); prefer it to the generic text.
        StreamError::LastOperationFailed(err) => match wasi::http::types::http_error_code(&err) {
            Some(code) => error_text(&code),
            None => err.to_debug_string(),
        },
    }
}

fn to_method(method: &str) -> Method {
    match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(method.to_string()),
    }
}

/// An absolute URL split the way wasi:http wants it.
struct Target<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_with_query: String,
}

impl<'a> Target<'a> {
    fn parse(url: &'a str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("not an absolute URL: {url:?}"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_string()),
        };
        // The fragment never goes to the server.
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() {
            return Err(format!("no host in URL: {url:?}"));
        }
        let path_with_query = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Ok(Target {
            scheme,
            authority,
            path_with_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> (String, String, String) {
        let t = Target::parse(url).unwrap();
        let scheme = match t.scheme {
            Scheme::Http => "http".to_string(),
            Scheme::Https => "https".to_string(),
            Scheme::Other(s) => s,
        };
        (scheme, t.authority.to_string(), t.path_with_query)
    }

    #[test]
    fn splits_urls() {
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            parse("http://127.0.0.1:8080/hook?a=1#x"),
            s("http", "127.0.0.1:8080", "/hook?a=1")
        );
        assert_eq!(parse("HTTPS://example.com"), s("https", "example.com", "/"));
        assert_eq!(parse("http://h?q=1"), s("http", "h", "/?q=1"));
        assert!(Target::parse("example.com/x").is_err());
        assert!(Target::parse("http:///x").is_err());
    }
}
