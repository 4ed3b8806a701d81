//! A counter and a histogram that every worker thread updates on the
//! dispatch path at once without sharing a cache line: each thread adds to
//! a shard of its own and a scrape sums the shards. (prometheus-client's
//! own types share one atomic or one lock between all threads; bounced
//! between two cores for every event, that cache line cost more than the
//! rest of the bookkeeping around a handler.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Atomic;

/// More shards than this machine's workers, so threads rarely share one.
const SHARDS: usize = 16;

/// One shard: alone on its cache lines (128 bytes covers the adjacent-line
/// prefetcher too).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard<T>(T);

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// A `u64` for prometheus-client's `Counter<u64, ShardedU64>`.
#[derive(Debug, Default)]
pub struct ShardedU64([Shard<AtomicU64>; SHARDS]);

impl Atomic<u64> for ShardedU64 {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    fn inc_by(&self, v: u64) -> u64 {
        self.0[shard()].0.fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// Buckets of the duration histogram: 10 µs × 4^i, i in 0..10 (10 µs to
/// ~2.6 s), and +Inf.
const BUCKETS: usize = 11;
const FIRST_BOUND_NANOS: u64 = 10_000;

#[derive(Debug, Default)]
struct DurationCounts {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

/// A histogram of durations in seconds.
#[derive(Debug, Clone, Default)]
pub struct DurationHistogram(Arc<[Shard<DurationCounts>; SHARDS]>);

impl DurationHistogram {
    pub fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = (0..BUCKETS - 1)
            .find(|&i| nanos <= FIRST_BOUND_NANOS << (2 * i))
            .unwrap_or(BUCKETS - 1);
        let counts = &self.0[shard()].0;
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = (0..BUCKETS)
            .map(|i| match i {
                i if i < BUCKETS - 1 => ((FIRST_BOUND_NANOS << (2 * i)) as f64 / 1e9, 0),
                _ => (f64::INFINITY, 0),
            })
            .collect();
        let mut sum_nanos = 0;
        for shard in self.0.iter() {
            for (total, count) in buckets.iter_mut().zip(&shard.0.buckets) {
                total.1 += count.load(Ordering::Relaxed);
            }
            sum_nanos += shard.0.sum_nanos.load(Ordering::Relaxed);
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(sum_nanos as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_lands_in_the_first_bucket_that_holds_it() {
        let histogram = DurationHistogram::default();
        for micros in [5, 10, 11, 40, 3_000_000] {
            histogram.observe(Duration::from_micros(micros));
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("h", "test", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        // Cumulative: 5 and 10 µs in le=1e-5; 11 and 40 µs by le=4e-5; 3 s only in +Inf.
        assert!(text.contains("h_bucket{le=\"0.00001\"} 2"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.00004\"} 4"), "{text}");
        assert!(text.contains("h_bucket{le=\"2.62144\"} 4"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 5"), "{text}");
        assert!(text.contains("h_count 5"), "{text}");
        assert!(text.contains("h_sum 3.000066"), "{text}");
    }
}
