//! Properties a machine checks over generated input: any request to the
//! management API gets a JSON answer, never a 5xx, and a rejected one
//! creates nothing; any config text parses or fails with an error, never a
//! panic. Bounded case counts keep CI quick; `PROPTEST_CASES` raises them.

use std::sync::Arc;

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::Value;
use sessionbox::config::Config;
use sessionbox::server::{self, Server};
use tower::ServiceExt;

const ACME: &str = "acme-key-0001";
const GLOBEX: &str = "globex-key-0002";

/// A request as generated: each part drawn from what the API knows and
/// from what it does not.
#[derive(Debug, Clone)]
struct Generated {
    method: Method,
    path: String,
    query: String,
    key: Option<&'static str>,
    body: Vec<u8>,
    content_type: Option<&'static str>,
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
        "[A-Z]{1,8}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// A path segment: a known word, an id (maybe of a live session), a
/// number, or noise (percent-encoded, so the URI stays valid).
fn segment(live: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("remote".to_owned()),
        Just("theirs".to_owned()),
        Just(live),
        "[0-9a-f]{32}",
        "[0-9a-f]{64}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("1".to_owned()),
        "\\PC{0,12}".prop_map(|s| percent(&s)),
    ]
}

/// A method and path: mostly a route the API has (with its own method),
/// sometimes anything.
fn target(live: String) -> impl Strategy<Value = (Method, String)> {
    let seg = || segment(live.clone());
    let route = |method: Method, path: BoxedStrategy<String>| {
        path.prop_map(move |path| (method.clone(), path)).boxed()
    };
    prop_oneof![
        route(
            Method::POST,
            seg()
                .prop_map(|app| format!("/v1/apps/{app}/sessions"))
                .boxed()
        ),
        route(
            Method::POST,
            seg()
                .prop_map(|app| format!("/v1/apps/{app}/calls"))
                .boxed()
        ),
        route(
            Method::PUT,
            seg()
                .prop_map(|app| format!("/v1/apps/{app}/scenario"))
                .boxed()
        ),
        route(Method::GET, Just("/v1/sessions".to_owned()).boxed()),
        route(
            Method::GET,
            seg().prop_map(|id| format!("/v1/sessions/{id}")).boxed()
        ),
        route(
            Method::DELETE,
            seg().prop_map(|id| format!("/v1/sessions/{id}")).boxed()
        ),
        route(
            Method::GET,
            seg()
                .prop_map(|id| format!("/v1/sessions/{id}/log"))
                .boxed()
        ),
        route(
            Method::POST,
            (
                seg(),
                seg(),
                prop_oneof!["hangup", "tone", "message", "\\PC{0,6}"]
            )
                .prop_map(|(id, call, action)| {
                    format!("/v1/sessions/{id}/calls/{call}/{}", percent(&action))
                })
                .boxed()
        ),
        (method(), seg(), seg()).prop_map(|(m, token, rest)| (m, format!("/s/{token}/{rest}"))),
        (
            method(),
            prop_oneof![Just("/metrics"), Just("/healthz"), Just("/readyz")]
        )
            .prop_map(|(m, p)| (m, p.to_owned())),
        (method(), prop::collection::vec(seg(), 0..5))
            .prop_map(|(m, segments)| (m, format!("/{}", segments.join("/")))),
    ]
}

/// Each of the list's parameters (and one it does not know), present or
/// not, with values of every kind.
fn query() -> impl Strategy<Value = String> {
    let value = || {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            Just(u64::MAX.to_string()),
            Just((1u64 << 63).to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("true".to_owned()),
            Just("live".to_owned()),
            "\\PC{0,10}".prop_map(|s| percent(&s)),
        ]
    };
    let keys = [
        "app",
        "state",
        "finish_reason",
        "since",
        "limit",
        "wait",
        "other",
    ];
    prop::collection::vec(prop::option::of(value()), keys.len()).prop_map(move |values| {
        keys.iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,300}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("custom_data".to_owned()),
                    Just("from".to_owned()),
                    Just("to".to_owned()),
                    Just("tone".to_owned()),
                    Just("text".to_owned()),
                    Just("headers".to_owned()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..256),
        // Past the server's max_body_bytes (4096).
        Just(vec![b'{'; 5000]),
        Just(b"\0asm\x0d\0\x01\0".to_vec()),
    ]
}

fn request(live: String) -> impl Strategy<Value = Generated> {
    (
        target(live),
        query(),
        prop_oneof![
            3 => Just(Some(ACME)),
            1 => Just(Some(GLOBEX)),
            1 => Just(Some("nope")),
            1 => Just(None)
        ],
        body(),
        prop_oneof![
            Just(None),
            Just(Some("application/json")),
            Just(Some("text/plain"))
        ],
    )
        .prop_map(
            |((method, path), query, key, body, content_type)| Generated {
                method,
                path,
                query,
                key,
                body,
                content_type,
            },
        )
}

/// Percent-encodes every byte that is not unreserved.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a request may create or change: the sessions each tenant has (live
/// or not: a session ended by an earlier request may end at any moment),
/// and the apps' scenarios.
#[derive(Debug, PartialEq)]
struct World {
    sessions: Vec<usize>,
    scenarios: Vec<Option<String>>,
}

async fn world(server: &Arc<Server>) -> World {
    let flush = Arc::clone(server);
    tokio::task::spawn_blocking(move || flush.flush_history())
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for key in [ACME, GLOBEX] {
        let answer = send(
            server,
            Method::GET,
            "/v1/sessions?limit=1000",
            Some(key),
            vec![],
            None,
        )
        .await;
        sessions.push(answer.1["sessions"].as_array().unwrap().len());
    }
    let scenarios = ["remote", "theirs"]
        .iter()
        .map(|app| server.scenario_hash(app))
        .collect();
    World {
        sessions,
        scenarios,
    }
}

async fn send(
    server: &Arc<Server>,
    method: Method,
    target: &str,
    key: Option<&str>,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> (u16, Value, String) {
    let mut request = Request::builder().method(method).uri(target);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request.body(Body::from(body)).unwrap();
    let response = server::service(Arc::clone(server))
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    )
}

async fn check(server: &Arc<Server>, generated: Generated) -> Result<(), TestCaseError> {
    let before = world(server).await;
    let target = if generated.query.is_empty() {
        generated.path.clone()
    } else {
        format!("{}?{}", generated.path, generated.query)
    };
    let is_head = generated.method == Method::HEAD;
    let (status, json, text) = send(
        server,
        generated.method,
        &target,
        generated.key,
        generated.body,
        generated.content_type,
    )
    .await;
    prop_assert!(status < 500, "{status} for {target}: {text}");
    if status >= 400 && !is_head {
        prop_assert!(
            json["error"].is_string(),
            "a {status} for {target} is not a JSON error: {text:?}"
        );
        let after = world(server).await;
        prop_assert_eq!(
            before,
            after,
            "a rejected request ({}) changed something",
            target
        );
    }
    Ok(())
}

fn config_text(dir: &std::path::Path) -> String {
    format!(
        r#"
[server]
database = "{db}"
max_body_bytes = 4096
watch_scenarios = 0
[tenants.acme]
api_keys = ["{ACME}"]
[tenants.globex]
api_keys = ["{GLOBEX}"]
[apps.remote]
tenant = "acme"
scenario = "{remote}"
limits = {{ idle_timeout = 600000 }}
[apps.theirs]
tenant = "globex"
scenario = "{hello}"
"#,
        db = dir.join("history.db").display(),
        remote = guest_path("remote-control").display(),
        hello = guest_path("hello").display(),
    )
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[test]
fn any_api_request_gets_json_never_a_5xx_and_a_rejected_one_creates_nothing() {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = tokio.block_on(async {
        let config = Config::parse(&config_text(dir.path())).unwrap();
        Server::new(config, "http://127.0.0.1:9".into())
            .await
            .unwrap()
    });
    // A live session for the generated paths to name.
    let (_, started, _) = tokio.block_on(send(
        &server,
        Method::POST,
        "/v1/apps/remote/sessions",
        Some(ACME),
        vec![],
        None,
    ));
    let live = started["session_id"].as_str().unwrap().to_owned();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: cases(512),
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    runner
        .run(&request(live), |generated| {
            tokio.block_on(check(&server, generated))
        })
        .unwrap();
}

/// A valid config with one value replaced by `value`.
fn mutated_config() -> impl Strategy<Value = String> {
    let keys = [
        "listen",
        "database",
        "retention_days",
        "shutdown_deadline",
        "max_sessions",
        "max_body_bytes",
        "max_connections",
        "header_read_timeout",
        "cpu_weight",
        "memory_bytes",
        "idle_timeout",
        "timers",
        "http_allow",
        "api_keys",
        "tenant",
        "scenario",
        "routes",
        "number",
        "rtp_ports",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        "\\PC{0,20}".prop_map(|s| format!("{s:?}")),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("[1, \"a\"]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("true".to_owned()),
    ];
    (prop::sample::select(keys.to_vec()), value).prop_map(|(key, value)| {
        let base = r#"
[server]
listen = "127.0.0.1:8080"
database = "x.db"
retention_days = 30
shutdown_deadline = 100
max_sessions = 10
max_body_bytes = 100
max_connections = 10
header_read_timeout = 100
[tenants.a]
api_keys = ["key-of-a-0001"]
quota = { cpu_weight = 100, memory_bytes = 1048576 }
[apps.x]
tenant = "a"
scenario = "x.wasm"
limits = { idle_timeout = 100, timers = 3, http_allow = ["*"] }
[sip]
listen = "127.0.0.1:5060"
rtp_ports = [10000, 10010]
routes = [{ number = "^1", app = "x" }]
"#;
        // The key's value: an array, or everything up to the next comma,
        // brace or line end.
        let pattern = regex::Regex::new(&format!(r"\b{key} = (\[[^\]]*\]|[^,}}\n]+)")).unwrap();
        pattern
            .replace_all(base, regex::NoExpand(&format!("{key} = {value}")))
            .into_owned()
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_config_text_parses_or_fails_with_a_one_line_error(text in "\\PC{0,400}") {
        if let Err(error) = Config::parse(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn a_config_with_any_value_in_any_place_parses_or_names_what_is_wrong(text in mutated_config()) {
        if let Err(error) = Config::parse(&text) {
            let error = format!("{error:#}");
            prop_assert!(!error.is_empty());
        }
    }
}
