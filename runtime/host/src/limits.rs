//! The limits a scenario runs under, with the defaults from VoxEngine's
//! published session limits (see the README's limits table). Every limit is
//! configuration from day one, per app, even where enforcement is hardened
//! later.

use std::time::Duration;

use serde::Deserialize;

/// Per-scenario limits. Durations are in milliseconds in configuration files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Compute time one event handler may use; time spent waiting on the host
    /// (an outbound HTTP request, say) does not count.
    #[serde(with = "millis")]
    pub handler_compute: Duration,
    /// Linear memory of one session's instance, in bytes.
    pub memory_bytes: usize,
    /// A session with no calls and no outside activity for this long enters
    /// Terminating.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// An incoming call nobody answered is dropped after this long.
    #[serde(with = "millis")]
    pub unanswered_call: Duration,
    /// Timers pending at once.
    pub timers: usize,
    /// The shortest interval `set-interval` accepts.
    #[serde(with = "millis")]
    pub min_interval: Duration,
    /// Outbound HTTP requests in flight at once.
    pub http_concurrent: usize,
    /// Outbound HTTP requests over a session's life (while running).
    pub http_per_session: usize,
    /// Outbound HTTP requests in Terminating.
    pub http_in_terminating: usize,
    /// Bytes of one outbound HTTP response body.
    pub http_response_bytes: usize,
    /// Bytes of an outbound request's or response's header section.
    pub http_header_bytes: usize,
    #[serde(with = "millis")]
    pub http_connect_timeout: Duration,
    #[serde(with = "millis")]
    pub http_total_timeout: Duration,
    /// Call attempts over a session's life.
    pub calls_per_session: usize,
    /// Incoming calls ringing (not yet answered) at once.
    pub calls_ringing: usize,
    /// Incoming WebSockets allowed beyond one per call (VoxEngine: calls + 3).
    pub websockets_beyond_calls: usize,
    /// Bytes of a session's custom data.
    pub custom_data_bytes: usize,
    /// Characters of one log line; longer lines are truncated and marked.
    pub log_line_chars: usize,
    /// Bytes of a session's whole log; later lines are counted, not kept.
    pub log_bytes: usize,
    /// Bytes of one message sent on a call, either way.
    pub call_message_bytes: usize,
    /// Bytes of a prompt file `play` fetches (a WAV; 8 kB is a second).
    pub prompt_bytes: usize,
    /// Bytes of one WebSocket message, either way.
    pub websocket_message_bytes: usize,
    /// Hosts outbound HTTP may reach: `*`, `host`, `*.domain`, each
    /// optionally with `scheme://` and `:port`.
    pub http_allow: Vec<String>,
    /// Whether outbound HTTP may reach loopback, private, link-local and
    /// cloud-metadata addresses (off: only public addresses).
    pub http_allow_private: bool,
    /// Bytes of the body a scenario answers an HttpRequest with.
    pub http_answer_bytes: usize,
    /// Host resources (handles) a session may hold at once: calls, sockets,
    /// WASI streams, HTTP requests and responses.
    pub resources: usize,
    /// Events waiting in a session's queue; past this, new events are refused
    /// to their sender.
    pub queued_events: usize,
    /// Bytes of one storage key.
    pub storage_key_bytes: usize,
    /// Bytes of one storage value.
    pub storage_value_bytes: usize,
    /// The longest TTL a storage key may be given.
    #[serde(with = "millis")]
    pub storage_max_ttl: Duration,
    /// Keys the app's storage holds at most (an app-wide quota).
    pub storage_keys: u64,
    /// Bytes of keys and values the app's storage holds at most.
    pub storage_bytes: u64,
    /// Storage operations one handler may make.
    pub storage_ops_per_handler: usize,
    /// The longest one recording may run. A recording is held in memory
    /// until it ends: 16 kB a second a channel.
    #[serde(with = "millis")]
    pub recording_max_duration: Duration,
    /// Recordings over a session's life.
    pub recordings_per_session: usize,
    /// Bytes of WAV the app's kept recordings take at most (an app-wide
    /// quota, over the history's retention).
    pub recording_bytes: u64,
    /// Audio streams over a session's life.
    pub streams_per_session: usize,
    /// Messages of a call's audio (20 ms each) waiting for a stream's
    /// server; past this, newer audio is dropped.
    pub stream_send_queue: usize,
    /// Audio a stream's server may send ahead of what has played; past
    /// this, the excess is dropped.
    #[serde(with = "millis")]
    pub stream_play_buffer: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handler_compute: Duration::from_secs(1),
            memory_bytes: 16 << 20,
            idle_timeout: Duration::from_secs(60),
            unanswered_call: Duration::from_secs(60),
            timers: 100,
            min_interval: Duration::from_millis(100),
            http_concurrent: 3,
            http_per_session: 35,
            http_in_terminating: 1,
            http_response_bytes: 2 << 20,
            http_header_bytes: 64 << 10,
            http_connect_timeout: Duration::from_secs(6),
            http_total_timeout: Duration::from_secs(90),
            calls_per_session: 50,
            calls_ringing: 10,
            websockets_beyond_calls: 3,
            custom_data_bytes: 200,
            log_line_chars: 15_000,
            log_bytes: 1 << 20,
            call_message_bytes: 8_192,
            prompt_bytes: 4 << 20,
            websocket_message_bytes: 64 << 10,
            queued_events: 1_024,
            http_answer_bytes: 1 << 20,
            resources: 10_000,
            http_allow: vec!["*".into()],
            http_allow_private: false,
            storage_key_bytes: 200,
            storage_value_bytes: 2_000,
            storage_max_ttl: Duration::from_secs(90 * 86_400),
            storage_keys: 10_000,
            storage_bytes: 10 << 20,
            storage_ops_per_handler: 1_000,
            recording_max_duration: Duration::from_secs(600),
            recordings_per_session: 10,
            recording_bytes: 1 << 30,
            streams_per_session: 10,
            stream_send_queue: 50,
            stream_play_buffer: Duration::from_secs(30),
        }
    }
}

/// (De)serialises a `Duration` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
