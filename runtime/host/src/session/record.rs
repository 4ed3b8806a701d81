//! What every session leaves behind: the session record.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use crate::capabilities::Meter;
use crate::cpu::CpuRecord;
use crate::log::LogContents;
use crate::session::TerminateCause;

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FinishReason {
    /// Terminating and Terminated were delivered: the normal end.
    Terminated { cause: TerminateCauseName },
    /// The scenario trapped; the session ended at once.
    Trapped { event: &'static str, trap: String },
    /// A handler computed for longer than the limit.
    ComputeLimit { event: &'static str, limit_ms: u64 },
}

/// [`TerminateCause`] as it appears in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateCauseName {
    /// The scenario called `terminate()`.
    Terminate,
    IdleTimeout,
    Host,
}

impl From<TerminateCause> for TerminateCauseName {
    fn from(cause: TerminateCause) -> Self {
        match cause {
            TerminateCause::Scenario => Self::Terminate,
            TerminateCause::Idle => Self::IdleTimeout,
            TerminateCause::Host => Self::Host,
        }
    }
}

impl FinishReason {
    /// Whether the session ran its course (as opposed to failing).
    pub fn is_normal(&self) -> bool {
        matches!(self, FinishReason::Terminated { .. })
    }
}

impl FinishReason {
    /// A short, fixed name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FinishReason::Terminated { cause } => match cause {
                TerminateCauseName::Terminate => "terminate",
                TerminateCauseName::IdleTimeout => "idle_timeout",
                TerminateCauseName::Host => "host",
            },
            FinishReason::Trapped { .. } => "trapped",
            FinishReason::ComputeLimit { .. } => "compute_limit",
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinishReason::Terminated { cause } => match cause {
                TerminateCauseName::Terminate => {
                    write!(f, "terminated: the scenario called terminate()")
                }
                TerminateCauseName::IdleTimeout => write!(f, "terminated: idle timeout"),
                TerminateCauseName::Host => write!(f, "terminated: by the host"),
            },
            FinishReason::Trapped { event, trap } => write!(f, "trapped in {event}: {trap}"),
            FinishReason::ComputeLimit { event, limit_ms } => write!(
                f,
                "compute limit: the {event} handler computed for more than {limit_ms} ms"
            ),
        }
    }
}

/// A finished session's record.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub scenario: String,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    pub finish_reason: FinishReason,
    /// Events delivered, by name (`Started`, `HttpRequest`, ...).
    pub events: BTreeMap<&'static str, u64>,
    /// Capability uses and refusals.
    pub capabilities: Meter,
    /// Its time on the slow lane, and how long it was throttled there.
    pub cpu: CpuRecord,
    pub log: LogContents,
}

impl SessionRecord {
    /// How many events named `name` were delivered.
    pub fn delivered(&self, name: &str) -> u64 {
        self.events.get(name).copied().unwrap_or(0)
    }

    /// The log's text, line by line, whatever the source.
    pub fn log_lines(&self) -> impl Iterator<Item = &str> {
        self.log.lines.iter().map(|line| line.text.as_str())
    }
}
