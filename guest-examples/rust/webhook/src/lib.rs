//! webhook: tells a web service that the session ended.
//!
//! In `terminating` (which allows exactly one outbound request) it POSTs
//! `{"session":"<id>","custom_data":"<custom data>"}` to the URL in the app's
//! variable `webhook_url`, authenticated with the secret variable
//! `webhook_token`. The URL and the token come from the server's
//! configuration, not from the code. The log says how it went, never what
//! the token is.

use serde_json::json;
use sessionbox_guest::{Scenario, export_scenario, http, log, session, variables};

#[derive(Default)]
struct Webhook;

impl Scenario for Webhook {
    fn terminating(&mut self) {
        log(&notify());
    }
}

/// Sends the notification; returns the line to log.
fn notify() -> String {
    let url = match variables::get("webhook_url") {
        Ok(url) => url,
        Err(refusal) => return refusal.to_string(),
    };
    let token = match variables::get("webhook_token") {
        Ok(token) => token,
        Err(refusal) => return refusal.to_string(),
    };
    let body = json!({
        "session": session::id(),
        "custom_data": session::custom_data(),
    })
    .to_string();
    let authorization = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", authorization.as_str()),
    ];
    match http::request("POST", &url, &headers, body.as_bytes()) {
        Ok(answer) => format!("notified {url}: {}", answer.status),
        Err(error) => format!("webhook failed: {error}"),
    }
}

export_scenario!(Webhook);
