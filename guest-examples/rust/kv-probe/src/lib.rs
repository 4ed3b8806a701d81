//! kv-probe: the conformance probe of `storage` and `variables`. Every
//! language has one, and they answer byte for byte alike.
//!
//! Each request's body is one command, its words separated by single
//! spaces; the answer is `200 text/plain`, one line:
//!
//! | command | answer |
//! |---|---|
//! | `set KEY VALUE [TTL]` | `ok` |
//! | `get KEY` | `value VALUE` or `none` |
//! | `del KEY` | `deleted` or `absent` |
//! | `incr KEY TIMES` (TIMES ≥ 1 increments by 1) | `ok LAST` |
//! | `cas KEY EXPECTED VALUE` (EXPECTED `-`: must be absent) | `swapped` or `lost` |
//! | `list PREFIX LIMIT [AFTER]` (PREFIX `-`: empty) | `keys K1,K2 next NEXT` (NEXT `-`: last page) |
//! | `var NAME` | `value V` |
//! | `logvar NAME` (logs `the value is V`) | `ok` |
//! | `stop` (terminates the session) | `ok` |
//!
//! A refusal answers `refused KIND: REASON`; anything else is `400 unknown
//! command`. In `terminating` it sets `saved-in-terminating` and logs
//! `terminating: <answer>`; in `terminated` it reads it back and logs
//! `terminated: <answer>`.

use std::num::NonZeroU32;

use sessionbox_guest::{
    HttpRequestEvent, HttpResponse, Refusal, Scenario, export_scenario, log, session, storage,
    variables,
};

/// Written in `terminating`, read in `terminated`.
const SAVED_KEY: &str = "saved-in-terminating";

#[derive(Default)]
struct KvProbe;

impl Scenario for KvProbe {
    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        match Command::parse(&String::from_utf8_lossy(&request.body)) {
            Some(command) => HttpResponse::text(200, command.run()),
            None => HttpResponse::text(400, "unknown command"),
        }
    }

    fn terminating(&mut self) {
        let set = Command::Set {
            key: SAVED_KEY,
            value: "yes",
            ttl: None,
        };
        log(&format!("terminating: {}", set.run()));
    }

    fn terminated(&mut self) {
        let get = Command::Get { key: SAVED_KEY };
        log(&format!("terminated: {}", get.run()));
    }
}

/// One request's command, as in the table above.
enum Command<'a> {
    Set {
        key: &'a str,
        value: &'a str,
        ttl: Option<u32>,
    },
    Get {
        key: &'a str,
    },
    Del {
        key: &'a str,
    },
    Incr {
        key: &'a str,
        times: NonZeroU32,
    },
    Cas {
        key: &'a str,
        expected: Option<&'a str>,
        value: &'a str,
    },
    List {
        prefix: &'a str,
        limit: u32,
        after: Option<&'a str>,
    },
    Var {
        name: &'a str,
    },
    LogVar {
        name: &'a str,
    },
    Stop,
}

impl<'a> Command<'a> {
    /// None for anything that is not a command (a malformed number too).
    fn parse(line: &'a str) -> Option<Self> {
        let words: Vec<&str> = line.split(' ').collect();
        Some(match words[..] {
            ["set", key, value] => Command::Set {
                key,
                value,
                ttl: None,
            },
            ["set", key, value, ttl] => Command::Set {
                key,
                value,
                ttl: Some(ttl.parse().ok()?),
            },
            ["get", key] => Command::Get { key },
            ["del", key] => Command::Del { key },
            ["incr", key, times] => Command::Incr {
                key,
                times: times.parse().ok()?,
            },
            ["cas", key, expected, value] => Command::Cas {
                key,
                expected: (expected != "-").then_some(expected),
                value,
            },
            ["list", prefix, limit] => Command::List {
                prefix: empty_if_dash(prefix),
                limit: limit.parse().ok()?,
                after: None,
            },
            ["list", prefix, limit, after] => Command::List {
                prefix: empty_if_dash(prefix),
                limit: limit.parse().ok()?,
                after: Some(after),
            },
            ["var", name] => Command::Var { name },
            ["logvar", name] => Command::LogVar { name },
            ["stop"] => Command::Stop,
            _ => return None,
        })
    }

    /// Carries the command out; returns the answer.
    fn run(self) -> String {
        let answer: Result<String, Refusal> = match self {
            Command::Set { key, value, ttl } => {
                storage::set(key, value.as_bytes(), ttl).map(|()| "ok".into())
            }
            Command::Get { key } => storage::get(key).map(|value| match value {
                Some(bytes) => format!("value {}", String::from_utf8_lossy(&bytes)),
                None => "none".into(),
            }),
            Command::Del { key } => {
                storage::delete(key).map(|was| if was { "deleted" } else { "absent" }.into())
            }
            // Stops at the first refusal; otherwise the last sum is the answer.
            Command::Incr { key, times } => (0..times.get())
                .try_fold(0, |_, _| storage::increment(key, 1))
                .map(|last| format!("ok {last}")),
            Command::Cas {
                key,
                expected,
                value,
            } => storage::compare_and_set(key, expected.map(str::as_bytes), value.as_bytes(), None)
                .map(|swapped| if swapped { "swapped" } else { "lost" }.into()),
            Command::List {
                prefix,
                limit,
                after,
            } => storage::list_keys(prefix, after, limit).map(|page| {
                let next = page.next.as_deref().unwrap_or("-");
                format!("keys {} next {next}", page.keys.join(","))
            }),
            Command::Var { name } => variables::get(name).map(|value| format!("value {value}")),
            Command::LogVar { name } => variables::get(name).map(|value| {
                // The host shows a secret's value as `[secret]` in the log.
                log(&format!("the value is {value}"));
                "ok".into()
            }),
            Command::Stop => session::terminate().map(|()| "ok".into()),
        };
        answer.unwrap_or_else(|refusal| format!("refused {}: {}", refusal.kind, refusal.reason))
    }
}

/// `-` stands for the empty prefix, which a space-separated line cannot carry.
fn empty_if_dash(prefix: &str) -> &str {
    if prefix == "-" { "" } else { prefix }
}

export_scenario!(KvProbe);
