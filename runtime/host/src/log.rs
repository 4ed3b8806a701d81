//! The session log: what the scenario wrote with `logger.write`, what it
//! printed to stdout and stderr, and the host's own notes (refusals, the
//! finish reason). One log per session, shared by the logger capability and
//! the WASI output streams, and passed on line by line as it grows (to the
//! session's observer).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::sync::MutexExt;
use serde::Serialize;

/// Hears of each line as it is added.
pub type LineSink = Box<dyn Fn(&LogLine) + Send + Sync>;

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// `logger.write`.
    Scenario,
    Stdout,
    Stderr,
    /// Sessionbox itself: refusals and other notes for the scenario's author.
    Host,
}

impl LogSource {
    pub fn name(self) -> &'static str {
        match self {
            LogSource::Scenario => "scenario",
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
            LogSource::Host => "host",
        }
    }

    /// The source named `name` (unknown names are the scenario's).
    pub fn from_name(name: &str) -> LogSource {
        match name {
            "stdout" => LogSource::Stdout,
            "stderr" => LogSource::Stderr,
            "host" => LogSource::Host,
            _ => LogSource::Scenario,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Milliseconds since the session started.
    pub at_ms: u64,
    pub source: LogSource,
    pub text: String,
}

/// What a session's log holds when the session ends.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogContents {
    pub lines: Vec<LogLine>,
    /// Lines that did not fit in the session's log budget.
    pub dropped_lines: u64,
}

/// Refusals noted in a session's log before the rest are only counted.
pub const MAX_REFUSAL_NOTES: u32 = 100;

/// What the log never shows: the values of the app's secrets, each
/// written as `[secret]` wherever it appears in a line.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Arc<[String]>);

pub const SECRET_MARK: &str = "[secret]";

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        // The longest first: a secret that contains another is hidden whole.
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        values.dedup();
        Secrets(values.into())
    }

    /// `text` with every secret in it replaced.
    pub fn hide<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for secret in self.0.iter() {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), SECRET_MARK));
            }
        }
        text
    }
}

/// A handle to one session's log; clones share it.
#[derive(Clone)]
pub struct SessionLog(Arc<Mutex<LogState>>);

struct LogState {
    started: Instant,
    contents: LogContents,
    bytes: usize,
    line_chars: usize,
    budget_bytes: usize,
    /// Refusals noted so far (see `note_refusal`).
    refusals_noted: u32,
    on_line: Option<LineSink>,
    secrets: Secrets,
}

impl SessionLog {
    pub(crate) fn new(
        started: Instant,
        line_chars: usize,
        budget_bytes: usize,
        on_line: Option<LineSink>,
    ) -> Self {
        SessionLog(Arc::new(Mutex::new(LogState {
            started,
            contents: LogContents::default(),
            bytes: 0,
            line_chars,
            budget_bytes,
            refusals_noted: 0,
            on_line,
            secrets: Secrets::default(),
        })))
    }

    /// The log, hiding `secrets` in every line written from now on.
    pub(crate) fn hiding(self, secrets: Secrets) -> Self {
        self.0.locked().secrets = secrets;
        self
    }

    /// Appends one line, its secrets hidden, truncated to the line limit
    /// (and saying so).
    pub fn write(&self, source: LogSource, text: &str) {
        let mut state = self.0.locked();
        let text = truncate(&state.secrets.hide(text), state.line_chars);
        if state.bytes + text.len() > state.budget_bytes {
            state.contents.dropped_lines += 1;
            return;
        }
        state.bytes += text.len();
        let line = LogLine {
            at_ms: state.started.elapsed().as_millis() as u64,
            source,
            text,
        };
        if let Some(on_line) = &state.on_line {
            on_line(&line);
        }
        state.contents.lines.push(line);
    }

    /// Notes a refusal for the scenario's author. A guest that is refused
    /// in a loop gets the first [`MAX_REFUSAL_NOTES`] noted and the rest only
    /// counted, so it cannot make the host format lines without end.
    pub(crate) fn note_refusal(&self, text: impl FnOnce() -> String) {
        let noted = {
            let mut state = self.0.locked();
            state.refusals_noted = state.refusals_noted.saturating_add(1);
            state.refusals_noted
        };
        match noted {
            n if n <= MAX_REFUSAL_NOTES => self.write(LogSource::Host, &text()),
            n if n == MAX_REFUSAL_NOTES + 1 => self.write(
                LogSource::Host,
                "further refusals are counted in the session record, not logged",
            ),
            _ => {}
        }
    }

    /// A copy of the log's contents so far.
    pub(crate) fn snapshot(&self) -> LogContents {
        self.0.locked().contents.clone()
    }

    /// Takes the log's contents, leaving it empty (at the end of a session).
    pub(crate) fn take(&self) -> LogContents {
        let mut state = self.0.locked();
        state.bytes = 0;
        std::mem::take(&mut state.contents)
    }
}

/// Cuts `text` to `max_chars` characters, marking the cut.
fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let dropped = text[cut..].chars().count();
            format!("{} [truncated: {dropped} more characters]", &text[..cut])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_the_limit_and_marked() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(
            truncate("héllo wörld", 5),
            "héllo [truncated: 6 more characters]"
        );
    }

    #[test]
    fn secrets_are_hidden_in_every_line() {
        let secrets = Secrets::new(["tok".to_owned(), "token-123".to_owned(), String::new()]);
        let log = SessionLog::new(Instant::now(), 100, 1000, None).hiding(secrets);
        log.write(LogSource::Scenario, "auth token-123 and tok, twice: tok");
        log.write(LogSource::Stdout, "nothing here");
        let lines: Vec<_> = log.take().lines.into_iter().map(|l| l.text).collect();
        assert_eq!(
            lines,
            [
                "auth [secret] and [secret], twice: [secret]",
                "nothing here"
            ]
        );
    }

    #[test]
    fn lines_past_the_budget_are_counted_not_kept() {
        let log = SessionLog::new(Instant::now(), 100, 10, None);
        log.write(LogSource::Scenario, "12345");
        log.write(LogSource::Scenario, "67890");
        log.write(LogSource::Stdout, "x");
        let contents = log.take();
        assert_eq!(contents.lines.len(), 2);
        assert_eq!(contents.dropped_lines, 1);
    }
}
