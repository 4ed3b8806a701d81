//! Who computes next on the slow lane, and which tenants have used more
//! than their share of the node.
//!
//! Every tenant has a weight. The slow lane has as many *turns* as threads;
//! a turn is one poll of a handler (at most one slice of compute). When a
//! turn frees, it goes to the waiting handler whose tenant has the least
//! *virtual time*: CPU used divided by weight (weighted fair queueing, as
//! Linux's scheduler does for processes). A tenant that comes back after
//! idling starts at the least virtual time of the tenants still competing,
//! so idling banks no credit.
//!
//! Every window (100 ms, from the epoch ticker), the governor also looks at
//! what each tenant computed on both lanes. While the node was busy and
//! several tenants computed, one that took more than its weighted share of
//! the window is *demoted*: its next handlers start on the slow lane, where
//! its weight holds, until a window shows it back within its share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Atomic;

use crate::metrics::sharded::ShardedU64;
use crate::metrics::{Metrics, TenantLabels, TenantLaneLabels};
use crate::sync::MutexExt;

/// The weight a tenant gets unless configured (as cgroup v2's `cpu.weight`).
pub const DEFAULT_WEIGHT: u32 = 100;

/// A tenant's CPU account: its weight, what its sessions computed on each
/// lane, and whether it is demoted. Shared by all its sessions.
pub struct TenantCpu {
    name: String,
    weight: u32,
    /// Nanoseconds of handlers that stayed on the fast lane (their time
    /// minus what they spent waiting on the host). Per-thread shards: every
    /// handler adds to it.
    fast_ns: ShardedU64,
    /// Thread CPU nanoseconds on the slow lane.
    slow_ns: AtomicU64,
    /// Nanoseconds its handlers waited for a slow-lane turn.
    throttled_ns: AtomicU64,
    demoted: AtomicBool,
    registered: AtomicBool,
    /// Under the governor's lock: CPU nanoseconds × DEFAULT_WEIGHT / weight.
    vtime: AtomicU64,
    /// What the last window saw: fast, slow and throttled totals.
    seen: Mutex<[u64; 3]>,
}

impl TenantCpu {
    /// A tenant named `name` (in metrics) with `weight` (at least 1).
    pub fn new(name: impl Into<String>, weight: u32) -> Arc<Self> {
        Arc::new(TenantCpu {
            name: name.into(),
            weight: weight.max(1),
            fast_ns: ShardedU64::default(),
            slow_ns: AtomicU64::new(0),
            throttled_ns: AtomicU64::new(0),
            demoted: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            vtime: AtomicU64::new(0),
            seen: Mutex::new([0; 3]),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Whether its handlers start on the slow lane now.
    pub fn is_demoted(&self) -> bool {
        self.demoted.load(Ordering::Relaxed)
    }

    /// CPU its sessions used so far, both lanes.
    pub fn cpu_used(&self) -> Duration {
        Duration::from_nanos(self.fast_ns.get() + self.slow_ns.load(Ordering::Relaxed))
    }

    pub(crate) fn charge_fast(&self, time: Duration) {
        self.fast_ns.inc_by(nanos(time));
    }

    fn vtime_delta(&self, used_ns: u64) -> u64 {
        used_ns.saturating_mul(u64::from(DEFAULT_WEIGHT)) / u64::from(self.weight)
    }
}

fn nanos(time: Duration) -> u64 {
    u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)
}

/// The slow lane's turns and the tenants' accounts.
pub(crate) struct Governor {
    turns: usize,
    state: Mutex<State>,
    tenants: Mutex<Vec<Weak<TenantCpu>>>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    running: usize,
    next_ticket: u64,
    waiting: Vec<Waiter>,
    /// Tickets granted whose holder has not polled yet: when they asked.
    granted: HashMap<u64, Instant>,
    /// Turns each tenant holds or waits for (by pointer), for the floor.
    competing: HashMap<*const TenantCpu, usize>,
}

// The raw pointers in `competing` are only compared, never dereferenced.
unsafe impl Send for State {}

struct Waiter {
    ticket: u64,
    tenant: Arc<TenantCpu>,
    waker: Option<Waker>,
    since: Instant,
}

/// A request for a turn that waits.
pub(crate) struct Ticket(u64);

/// What a request for a turn got.
pub(crate) enum Turn {
    Granted,
    Waiting(Ticket),
}

impl Governor {
    pub fn new(turns: usize, metrics: Arc<Metrics>) -> Self {
        Governor {
            turns: turns.max(1),
            state: Mutex::new(State::default()),
            tenants: Mutex::new(Vec::new()),
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Makes `tenant` part of the windows' accounting (once).
    pub fn register(&self, tenant: &Arc<TenantCpu>) {
        if !tenant.registered.swap(true, Ordering::AcqRel) {
            let mut tenants = self.tenants.locked();
            tenants.retain(|t| t.strong_count() > 0);
            tenants.push(Arc::downgrade(tenant));
        }
    }

    /// Asks for a turn for `tenant`: granted at once if one is free and
    /// nobody waits, else a ticket to wait with. `waker` (if any) hears of
    /// the grant; without one, the asker must be about to poll anyway (a
    /// task just spawned).
    pub fn request(&self, tenant: &Arc<TenantCpu>, waker: Option<&Waker>) -> Turn {
        let mut state = self.state();
        let key = Arc::as_ptr(tenant);
        if !state.competing.contains_key(&key) {
            // Back from idling: no credit for the time away.
            if let Some(floor) = state.least_competing_vtime() {
                tenant.vtime.fetch_max(floor, Ordering::Relaxed);
            }
        }
        *state.competing.entry(key).or_default() += 1;
        if state.running < self.turns && state.waiting.is_empty() {
            state.running += 1;
            return Turn::Granted;
        }
        let id = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push(Waiter {
            ticket: id,
            tenant: Arc::clone(tenant),
            waker: waker.cloned(),
            since: Instant::now(),
        });
        Turn::Waiting(Ticket(id))
    }

    /// Whether the turn `ticket` waits for was granted: `Ready` with how
    /// long it waited.
    pub fn poll_granted(&self, ticket: &Ticket, cx: &mut Context<'_>) -> Poll<Duration> {
        let mut state = self.state();
        if let Some(asked) = state.granted.remove(&ticket.0) {
            return Poll::Ready(asked.elapsed());
        }
        if let Some(waiter) = state.waiting.iter_mut().find(|w| w.ticket == ticket.0) {
            waiter.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Gives a turn back after a poll that used `used` of CPU.
    pub fn release(&self, tenant: &Arc<TenantCpu>, used: Duration) {
        let used_ns = nanos(used);
        tenant.slow_ns.fetch_add(used_ns, Ordering::Relaxed);
        let mut state = self.state();
        tenant
            .vtime
            .fetch_add(tenant.vtime_delta(used_ns), Ordering::Relaxed);
        state.stop_competing(tenant);
        state.running -= 1;
        self.grant(&mut state);
    }

    /// Counts time a handler waited for its turn against its tenant.
    pub fn throttled(&self, tenant: &TenantCpu, waited: Duration) {
        tenant
            .throttled_ns
            .fetch_add(nanos(waited), Ordering::Relaxed);
    }

    /// A request dropped before its turn was used (its session went away).
    pub fn cancel(&self, ticket: Ticket, tenant: &Arc<TenantCpu>) {
        let mut state = self.state();
        if state.granted.remove(&ticket.0).is_some() {
            state.running -= 1;
        } else {
            state.waiting.retain(|w| w.ticket != ticket.0);
        }
        state.stop_competing(tenant);
        self.grant(&mut state);
    }

    /// Hands free turns to the waiters whose tenants have the least virtual
    /// time (the earliest first among equals).
    fn grant(&self, state: &mut State) {
        while state.running < self.turns && !state.waiting.is_empty() {
            let next = state
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.tenant.vtime.load(Ordering::Relaxed))
                .map(|(index, _)| index)
                .expect("not empty");
            let waiter = state.waiting.remove(next);
            state.running += 1;
            state.granted.insert(waiter.ticket, waiter.since);
            if let Some(waker) = waiter.waker {
                waker.wake();
            }
        }
    }

    /// Closes a window of `length` on a node of `cores`: demotes the
    /// tenants over their share, restores the others, and brings the
    /// metrics up to date.
    pub fn close_window(&self, length: Duration, cores: usize) {
        let tenants: Vec<Arc<TenantCpu>> = {
            let mut tenants = self.tenants.locked();
            tenants.retain(|t| t.strong_count() > 0);
            tenants.iter().filter_map(Weak::upgrade).collect()
        };
        let used: Vec<u64> = tenants
            .iter()
            .map(|tenant| {
                let now = [
                    tenant.fast_ns.get(),
                    tenant.slow_ns.load(Ordering::Relaxed),
                    tenant.throttled_ns.load(Ordering::Relaxed),
                ];
                let before = std::mem::replace(&mut *tenant.seen.locked(), now);
                let delta = |i: usize| now[i].saturating_sub(before[i]);
                self.report(tenant, delta(0), delta(1), delta(2));
                delta(0) + delta(1)
            })
            .collect();
        let shares = shares_over(&tenants, &used, nanos(length) * cores as u64);
        for (tenant, over) in tenants.iter().zip(shares) {
            tenant.demoted.store(over, Ordering::Relaxed);
            self.metrics
                .tenant_cpu_demoted
                .get_or_create(&TenantLabels {
                    tenant: tenant.name.clone(),
                })
                .set(i64::from(over));
        }
    }

    fn report(&self, tenant: &TenantCpu, fast_ns: u64, slow_ns: u64, throttled_ns: u64) {
        let seconds = |ns: u64| ns as f64 / 1e9;
        for (lane, ns) in [("fast", fast_ns), ("slow", slow_ns)] {
            if ns > 0 {
                self.metrics
                    .tenant_cpu_seconds
                    .get_or_create(&TenantLaneLabels {
                        tenant: tenant.name.clone(),
                        lane,
                    })
                    .inc_by(seconds(ns));
            }
        }
        if throttled_ns > 0 {
            self.metrics
                .tenant_cpu_throttled_seconds
                .get_or_create(&TenantLabels {
                    tenant: tenant.name.clone(),
                })
                .inc_by(seconds(throttled_ns));
        }
    }
}

/// A window's verdict, tenant by tenant: whether it took more than its
/// share. Nobody is over while the node was less than half busy or only one
/// tenant computed; otherwise a tenant is over when it used more than its
/// weight's part of what all the tenants that computed used, with 10 %
/// slack.
fn shares_over(tenants: &[Arc<TenantCpu>], used_ns: &[u64], capacity_ns: u64) -> Vec<bool> {
    let total: u64 = used_ns.iter().sum();
    let active: Vec<usize> = (0..tenants.len()).filter(|&i| used_ns[i] > 0).collect();
    if total.saturating_mul(2) < capacity_ns || active.len() < 2 {
        return vec![false; tenants.len()];
    }
    let weights: u64 = active.iter().map(|&i| u64::from(tenants[i].weight)).sum();
    (0..tenants.len())
        .map(|i| {
            let share = total as f64 * f64::from(tenants[i].weight) / weights as f64;
            used_ns[i] as f64 > share * 1.1
        })
        .collect()
}

impl State {
    fn least_competing_vtime(&self) -> Option<u64> {
        self.waiting
            .iter()
            .map(|w| w.tenant.vtime.load(Ordering::Relaxed))
            .min()
    }

    fn stop_competing(&mut self, tenant: &Arc<TenantCpu>) {
        let key = Arc::as_ptr(tenant);
        if let Some(count) = self.competing.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.competing.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn governor(turns: usize) -> Governor {
        Governor::new(turns, Arc::default())
    }

    /// Asks for a turn (or polls the ticket of an earlier request); true
    /// once it is granted.
    fn ask(g: &Governor, ticket: &mut Option<Ticket>, tenant: &Arc<TenantCpu>) -> bool {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        match ticket {
            Some(waiting) => {
                let granted = g
                    .poll_granted(waiting, &mut Context::from_waker(&waker))
                    .is_ready();
                if granted {
                    *ticket = None;
                }
                granted
            }
            None => match g.request(tenant, Some(&waker)) {
                Turn::Granted => true,
                Turn::Waiting(waiting) => {
                    *ticket = Some(waiting);
                    false
                }
            },
        }
    }

    #[test]
    fn a_free_turn_goes_to_the_tenant_that_used_least_for_its_weight() {
        let g = governor(1);
        let heavy = TenantCpu::new("heavy", 100);
        let light = TenantCpu::new("light", 100);
        let weighty = TenantCpu::new("weighty", 400);
        let (mut first, mut h, mut l, mut w) = (None, None, None, None);
        assert!(ask(&g, &mut first, &heavy), "the only turn is free");
        assert!(!ask(&g, &mut h, &heavy));
        assert!(!ask(&g, &mut l, &light));
        assert!(!ask(&g, &mut w, &weighty));
        // heavy used 10 ms: light and weighty (both at 0) come first.
        g.release(&heavy, Duration::from_millis(10));
        assert!(ask(&g, &mut l, &light), "light is first among equals");
        g.release(&light, Duration::from_millis(10));
        assert!(ask(&g, &mut w, &weighty));
        // weighty's 10 ms count a quarter: it is still behind heavy.
        g.release(&weighty, Duration::from_millis(10));
        let mut w2 = None;
        assert!(!ask(&g, &mut w2, &weighty));
        assert!(ask(&g, &mut h, &heavy), "heavy was the one waiting then");
        g.release(&heavy, Duration::from_millis(10));
        assert!(ask(&g, &mut w2, &weighty));
    }

    #[test]
    fn a_tenant_back_from_idling_starts_level_with_the_others() {
        let g = governor(1);
        let busy = TenantCpu::new("busy", 100);
        let late = TenantCpu::new("late", 100);
        let mut t = None;
        for _ in 0..5 {
            assert!(ask(&g, &mut t, &busy));
            g.release(&busy, Duration::from_millis(100));
        }
        let (mut b, mut b2, mut l) = (None, None, None);
        assert!(ask(&g, &mut b, &busy));
        assert!(!ask(&g, &mut b2, &busy));
        assert!(!ask(&g, &mut l, &late));
        assert!(
            late.vtime.load(Ordering::Relaxed) >= busy.vtime.load(Ordering::Relaxed),
            "no credit for idling"
        );
    }

    #[test]
    fn a_window_demotes_only_a_tenant_over_its_share_of_a_busy_node() {
        let t = |name, weight| TenantCpu::new(name, weight);
        let tenants = [t("a", 100), t("b", 100), t("c", 200)];
        let ms = |n: u64| n * 1_000_000;
        // 200 ms of a 2-core, 100 ms window: busy. a is over (100 > 50 × 1.1).
        let over = shares_over(&tenants, &[ms(100), ms(30), ms(70)], ms(200));
        assert_eq!(over, [true, false, false]);
        // c may use half: 100 of 200 is within it.
        let over = shares_over(&tenants, &[ms(50), ms(50), ms(100)], ms(200));
        assert_eq!(over, [false, false, false]);
        // A node less than half busy demotes nobody.
        let over = shares_over(&tenants, &[ms(90), ms(5), ms(0)], ms(200));
        assert_eq!(over, [false, false, false]);
        // Nor does a tenant computing alone.
        let over = shares_over(&tenants, &[ms(200), ms(0), ms(0)], ms(200));
        assert_eq!(over, [false, false, false]);
    }

    #[test]
    fn a_cancelled_request_gives_its_turn_on() {
        let g = governor(1);
        let a = TenantCpu::new("a", 100);
        let (mut first, mut second, mut third) = (None, None, None);
        assert!(ask(&g, &mut first, &a));
        assert!(!ask(&g, &mut second, &a));
        assert!(!ask(&g, &mut third, &a));
        g.release(&a, Duration::ZERO);
        // second was granted; its holder goes away before using it.
        g.cancel(second.take().unwrap(), &a);
        assert!(ask(&g, &mut third, &a), "the turn moved on to the next");
    }
}
