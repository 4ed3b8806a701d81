//! Sessions as the history takes them, for the tests and benchmarks of
//! its backends.

use std::sync::Arc;
use std::time::SystemTime;

use sessionbox::log::{LogContents, LogLine, LogSource};
use sessionbox::server::history::NewSession;
use sessionbox::session::{FinishReason, SessionRecord, TerminateCauseName};

/// A session of tenant `t` starting on `node`.
pub fn new_session(id: &str, node: &str, app: &str, started_at: SystemTime) -> NewSession {
    NewSession {
        id: id.into(),
        node: node.into(),
        tenant: "t".into(),
        app: app.into(),
        scenario_sha256: "00".into(),
        access_secret_sha256: "11".into(),
        started_at,
    }
}

/// The record of a session the host ended, with `lines` as its log.
pub fn record(id: &str, lines: &[&str]) -> Arc<SessionRecord> {
    Arc::new(SessionRecord {
        id: id.into(),
        scenario: "a".into(),
        started_at: SystemTime::now(),
        ended_at: SystemTime::now(),
        finish_reason: FinishReason::Terminated {
            cause: TerminateCauseName::Host,
        },
        events: Default::default(),
        capabilities: Default::default(),
        cpu: Default::default(),
        log: LogContents {
            lines: lines
                .iter()
                .enumerate()
                .map(|(n, text)| LogLine {
                    at_ms: n as u64,
                    source: LogSource::Scenario,
                    text: (*text).into(),
                })
                .collect(),
            dropped_lines: 0,
        },
    })
}
