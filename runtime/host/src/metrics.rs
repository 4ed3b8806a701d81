//! Runtime metrics in Prometheus form: sessions, events, handler time,
//! capability refusals, outbound HTTP and guest memory. One set per
//! runtime, updated where the thing happens (the driver, the capability
//! gates, the memory limiter) and rendered by `GET /metrics`.

pub(crate) mod sharded;

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sharded::{DurationHistogram, ShardedU64};

use crate::guest::EventKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub capability: &'static str,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub tenant: String,
    pub quota: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLaneLabels {
    pub tenant: String,
    /// `fast` or `slow` (see the `cpu` module).
    pub lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    /// `get`, `set`, `delete`, `increment`, `compare-and-set`, `list-keys`.
    pub op: &'static str,
    /// `ok`, or the kind of refusal (`phase`, `rule`, `quota`, `full`, ...).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SipInviteLabels {
    /// `taken` (given to a new session), `no_route`, `busy` (a tenant
    /// quota), `unavailable` (the node is full).
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub sessions_live: Gauge,
    pub sessions_started: Counter,
    pub sessions_finished: Family<FinishLabels, Counter>,
    events_delivered: Family<EventLabels, Counter<u64, ShardedU64>>,
    /// `events_delivered`'s counters by `EventKind as usize`: no label
    /// lookup on the dispatch path.
    events_by_kind: Vec<Counter<u64, ShardedU64>>,
    pub handler_seconds: DurationHistogram,
    pub refusals: Family<RefusalLabels, Counter>,
    pub http_requests: Counter,
    pub quota_refusals: Family<QuotaLabels, Counter>,
    pub guest_memory_bytes: Gauge<i64, AtomicI64>,
    pub sip_invites: Family<SipInviteLabels, Counter>,
    pub tenant_cpu_seconds: Family<TenantLaneLabels, Counter<f64, AtomicU64>>,
    pub tenant_cpu_throttled_seconds: Family<TenantLabels, Counter<f64, AtomicU64>>,
    pub tenant_cpu_demoted: Family<TenantLabels, Gauge>,
    pub history_held_writes: Gauge,
    pub history_write_failures: Counter,
    pub storage_operations: Family<StorageLabels, Counter>,
    pub storage_bytes: Family<AppLabels, Gauge>,
    pub storage_keys: Family<AppLabels, Gauge>,
    pub forwarded_requests: Counter,
    pub lease_renewal_failures: Counter,
    pub lost_sessions_interrupted: Counter,
    pub draining: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sessionbox");
        let metrics = Metrics {
            sessions_live: Gauge::default(),
            sessions_started: Counter::default(),
            sessions_finished: Family::default(),
            events_delivered: Family::default(),
            events_by_kind: Vec::new(),
            handler_seconds: DurationHistogram::default(),
            refusals: Family::default(),
            http_requests: Counter::default(),
            quota_refusals: Family::default(),
            guest_memory_bytes: Gauge::default(),
            sip_invites: Family::default(),
            tenant_cpu_seconds: Family::default(),
            tenant_cpu_throttled_seconds: Family::default(),
            tenant_cpu_demoted: Family::default(),
            history_held_writes: Gauge::default(),
            history_write_failures: Counter::default(),
            storage_operations: Family::default(),
            storage_bytes: Family::default(),
            storage_keys: Family::default(),
            forwarded_requests: Counter::default(),
            lease_renewal_failures: Counter::default(),
            lost_sessions_interrupted: Counter::default(),
            draining: Gauge::default(),
            registry: Registry::default(),
        };
        // Each metric once, under its name and help text.
        macro_rules! register {
            ($($name:literal, $help:literal => $metric:expr;)*) => {
                $(registry.register($name, $help, $metric.clone());)*
            };
        }
        register! {
            "sessions_live", "Sessions running now" => metrics.sessions_live;
            "sessions_started", "Sessions started" => metrics.sessions_started;
            "sessions_finished", "Sessions finished, by finish reason" => metrics.sessions_finished;
            "events_delivered", "Events delivered to scenarios, by kind" => metrics.events_delivered;
            "handler_seconds", "Time from an event's delivery to its handler's return"
                => metrics.handler_seconds;
            "capability_refusals", "Capability refusals, by capability and phase" => metrics.refusals;
            "outbound_http_requests", "Outbound HTTP requests sent by scenarios"
                => metrics.http_requests;
            "quota_refusals", "Session starts refused by a tenant quota" => metrics.quota_refusals;
            "guest_memory_bytes", "Linear memory held by live sessions" => metrics.guest_memory_bytes;
            "sip_invites", "Incoming SIP calls, by what became of them" => metrics.sip_invites;
            "tenant_cpu_seconds", "Handler time of a tenant's sessions, by lane (fast: \
                handlers' time less host waits; slow: thread CPU), updated every 100 ms"
                => metrics.tenant_cpu_seconds;
            "tenant_cpu_throttled_seconds", "Time a tenant's handlers waited for a slow-lane turn"
                => metrics.tenant_cpu_throttled_seconds;
            "tenant_cpu_demoted", "1 while a tenant's handlers start on the slow lane \
                (it took more than its share of a busy node)" => metrics.tenant_cpu_demoted;
            "history_held_writes", "Session history writes held in memory until the disk takes them"
                => metrics.history_held_writes;
            "history_write_failures", "Failed attempts to write the session history"
                => metrics.history_write_failures;
            "storage_operations", "Scenarios' storage operations, by operation and outcome \
                (ok, or the kind of refusal)" => metrics.storage_operations;
            "storage_bytes", "Bytes of keys and values an app's storage holds"
                => metrics.storage_bytes;
            "storage_keys", "Keys an app's storage holds" => metrics.storage_keys;
            "forwarded_requests", "Requests this node forwarded to the node that owns their \
                session (or to one with room for a new one)" => metrics.forwarded_requests;
            "lease_renewal_failures", "Failed attempts to renew this node's lease"
                => metrics.lease_renewal_failures;
            "lost_sessions_interrupted", "Live sessions of lost nodes (their lease lapsed) this \
                node marked interrupted" => metrics.lost_sessions_interrupted;
            "draining", "1 while this node drains" => metrics.draining;
        }
        let events_by_kind = EventKind::ALL
            .iter()
            .map(|kind| {
                metrics
                    .events_delivered
                    .get_or_create(&EventLabels { kind: kind.name() })
                    .clone()
            })
            .collect();
        Metrics {
            registry,
            events_by_kind,
            ..metrics
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    pub(crate) fn delivered(&self, kind: EventKind) {
        self.events_by_kind[kind as usize].inc();
    }

    pub(crate) fn refused(&self, capability: &'static str, phase: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabels { capability, phase })
            .inc();
    }
}
