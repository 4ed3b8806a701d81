//! Per-tenant quotas, so that one tenant cannot take the node: sessions
//! live at once, and session starts per second (a token bucket that allows
//! a burst of one second's worth), checked here at start; guest memory and
//! outbound HTTP concurrency, enforced by the runtime through the tenant's
//! [`SharedLimits`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::TenantQuota;
use sessionbox_host::cpu::TenantCpu;
use sessionbox_host::shared_limits::SharedLimits;
use sessionbox_host::sync::MutexExt;

pub struct Quotas(HashMap<String, Gate>);

struct Gate {
    quota: TenantQuota,
    live: AtomicUsize,
    bucket: Mutex<Bucket>,
    shared: Arc<SharedLimits>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// A start the quota refused: which quota, and a sentence saying why.
pub struct Refused {
    pub quota: &'static str,
    pub reason: String,
}

impl Quotas {
    pub fn new<'a>(tenants: impl IntoIterator<Item = (&'a String, &'a TenantQuota)>) -> Self {
        Quotas(
            tenants
                .into_iter()
                .map(|(tenant, quota)| {
                    let gate = Gate {
                        shared: SharedLimits::new(
                            quota.memory_bytes,
                            quota.http_concurrent,
                            TenantCpu::new(tenant.as_str(), quota.cpu_weight),
                        ),
                        quota: quota.clone(),
                        live: AtomicUsize::new(0),
                        bucket: Mutex::new(Bucket {
                            tokens: f64::from(quota.starts_per_second),
                            refilled: Instant::now(),
                        }),
                    };
                    (tenant.clone(), gate)
                })
                .collect(),
        )
    }

    /// Admits one more session for `tenant`, or says which quota is full.
    /// An admitted session must be [`Quotas::release`]d when it ends.
    pub fn admit(&self, tenant: &str) -> Result<(), Refused> {
        let Some(gate) = self.0.get(tenant) else {
            return Ok(());
        };
        let max = gate.quota.max_sessions;
        gate.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < max).then_some(live + 1)
            })
            .map_err(|_| Refused {
                quota: "max_sessions",
                reason: format!("tenant {tenant} has {max} live sessions, its quota"),
            })?;
        let rate = f64::from(gate.quota.starts_per_second);
        let mut bucket = gate.bucket.locked();
        let now = Instant::now();
        let refill = now.duration_since(bucket.refilled).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            drop(bucket);
            gate.live.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused {
                quota: "starts_per_second",
                reason: format!(
                    "tenant {tenant} started {} sessions in the last second, its quota",
                    gate.quota.starts_per_second
                ),
            });
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// The limits `tenant`'s sessions share while they run.
    pub fn shared(&self, tenant: &str) -> Option<Arc<SharedLimits>> {
        self.0.get(tenant).map(|gate| Arc::clone(&gate.shared))
    }

    pub fn release(&self, tenant: &str) {
        if let Some(gate) = self.0.get(tenant) {
            gate.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sessions_and_start_rate_are_capped() {
        let tenant = "t".to_owned();
        let quota = TenantQuota {
            max_sessions: 2,
            starts_per_second: 3,
            ..TenantQuota::default()
        };
        let quotas = Quotas::new([(&tenant, &quota)]);
        assert!(quotas.admit("t").is_ok());
        assert!(quotas.admit("t").is_ok());
        let full = quotas.admit("t").err().unwrap();
        assert_eq!(full.quota, "max_sessions");
        assert_eq!(full.reason, "tenant t has 2 live sessions, its quota");
        quotas.release("t");
        // A third start within the second still has a token...
        assert!(quotas.admit("t").is_ok());
        quotas.release("t");
        // ...a fourth does not.
        let fast = quotas.admit("t").err().unwrap();
        assert_eq!(fast.quota, "starts_per_second");
    }
}
