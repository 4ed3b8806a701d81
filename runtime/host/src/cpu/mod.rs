//! Where guest code computes, and how the CPU is shared between tenants.
//!
//! Two lanes. The *fast lane* is the tokio runtime that serves requests: a
//! handler starts there, in whichever task delivers its event, and nearly
//! every handler ends there, in microseconds. A handler still computing
//! after its first slice ([`FIRST_SLICE_TICKS`], 1–2 ms) moves to the *slow
//! lane*: a runtime of its own whose threads run at a lower OS priority
//! ([`SLOW_LANE_NICE`]), so a looping guest never holds a thread the
//! server's requests need. There it computes a slice ([`SLOW_SLICE_TICKS`],
//! 10 ms) per turn, the turns handed out between tenants in weighted fair
//! order by the [`Governor`]. When the handler returns, the session goes
//! back to the fast lane. A tenant that took more than its share of a busy
//! node in the last window is *demoted*: its handlers start on the slow
//! lane until it is back within its share.
//!
//! Moving is the work of [`Laned`], a future that wraps whatever runs a
//! session's handlers (the session's task, or a caller running one in its
//! own task): it polls it on the fast lane and, once the running handler is
//! marked long ([`LaneCell::at_deadline`], called from the epoch callback
//! inside the guest), hands the whole future to the slow lane and waits.

pub(crate) mod governor;
pub(crate) mod thread;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

pub use governor::{DEFAULT_WEIGHT, TenantCpu};
pub(crate) use governor::{Governor, Ticket, Turn};

use crate::metrics::Metrics;

/// Epoch ticks a handler computes on the fast lane before it moves: with
/// 1 ms ticks, between 1 and 2 ms.
pub const FIRST_SLICE_TICKS: u64 = 2;
/// Epoch ticks of one turn on the slow lane.
pub const SLOW_SLICE_TICKS: u64 = 10;
/// The slow lane's threads' nice value: against threads of normal priority
/// they get about a tenth of a core, and all of it when the fast lane idles.
pub const SLOW_LANE_NICE: i32 = 10;
/// Epoch ticks per accounting window (see [`Governor::close_window`]).
pub const WINDOW_TICKS: u64 = 100;

/// The engine's epoch as Sessionbox counts it, advanced with the engine's
/// by the ticker: the callback measures a slice against it.
pub(crate) struct EpochClock {
    ticks: AtomicU64,
    tick: Duration,
    base: Instant,
}

impl EpochClock {
    pub fn new(tick: Duration) -> Self {
        EpochClock {
            ticks: AtomicU64::new(0),
            tick,
            base: Instant::now(),
        }
    }

    /// Advances one tick; true when that closes an accounting window.
    pub fn advance(&self) -> bool {
        let ticks = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        ticks.is_multiple_of(WINDOW_TICKS)
    }

    pub fn window(&self) -> Duration {
        self.tick * WINDOW_TICKS as u32
    }

    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Nanoseconds since the clock began, never 0.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX) | 1
    }
}

/// The slow lane and its governor.
pub(crate) struct Lanes {
    /// Shut down without blocking when dropped: the runtime may be dropped
    /// inside another one's task.
    slow: Option<tokio::runtime::Runtime>,
    slow_handle: tokio::runtime::Handle,
    pub governor: Arc<Governor>,
    pub clock: Arc<EpochClock>,
}

impl Lanes {
    /// A slow lane of `threads` threads.
    pub fn new(threads: usize, clock: Arc<EpochClock>, metrics: Arc<Metrics>) -> Self {
        let threads = threads.max(1);
        let slow = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("sessionbox-slow")
            .on_thread_start(|| thread::lower_priority(SLOW_LANE_NICE))
            .enable_all()
            .build()
            .expect("building the slow lane's runtime");
        Lanes {
            slow_handle: slow.handle().clone(),
            slow: Some(slow),
            governor: Arc::new(Governor::new(threads, metrics)),
            clock,
        }
    }

    /// A new session's place on the lanes, its CPU charged to `tenant`.
    pub fn cell(self: &Arc<Self>, tenant: Arc<TenantCpu>) -> Arc<LaneCell> {
        self.governor.register(&tenant);
        Arc::new(LaneCell {
            clock: Arc::clone(&self.clock),
            lanes: Arc::clone(self),
            tenant,
            mark: AtomicU64::new(self.clock.ticks()),
            cpu_mark: AtomicU64::new(0),
            long: AtomicBool::new(false),
            on_slow: AtomicBool::new(false),
            in_handler: AtomicBool::new(false),
            waiting_since: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            fast_unreported_ns: AtomicU64::new(0),
            slow_cpu_ns: AtomicU64::new(0),
            throttled_ns: AtomicU64::new(0),
            slow_handlers: AtomicU64::new(0),
            demoted_handlers: AtomicU64::new(0),
        })
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        if let Some(slow) = self.slow.take() {
            slow.shutdown_background();
        }
    }
}

/// One session's place on the lanes, shared by its budget (the epoch
/// callback, inside the guest) and the [`Laned`] future that polls it.
/// A session's future is polled by one thread at a time, and the task
/// hand-offs order those polls: relaxed atomics suffice.
#[repr(C)]
pub(crate) struct LaneCell {
    // What every poll and handler touches first, together: with many
    // sessions, each event's lines are cold.
    /// The tick when the guest last resumed or was charged (fast lane).
    mark: AtomicU64,
    /// When the running handler began waiting on the host (fast lane), 0
    /// when it is not waiting.
    waiting_since: AtomicU64,
    /// How long the running handler has waited on the host.
    waited_ns: AtomicU64,
    /// Fast-lane time not yet added to the tenant's account (added in
    /// batches: one shared counter per handler would cost more than the
    /// rest of this bookkeeping).
    fast_unreported_ns: AtomicU64,
    /// The running handler belongs on the slow lane.
    long: AtomicBool,
    on_slow: AtomicBool,
    in_handler: AtomicBool,
    clock: Arc<EpochClock>,
    tenant: Arc<TenantCpu>,
    lanes: Arc<Lanes>,
    /// The thread's CPU time when the guest last resumed or was charged
    /// (slow lane).
    cpu_mark: AtomicU64,
    slow_cpu_ns: AtomicU64,
    throttled_ns: AtomicU64,
    slow_handlers: AtomicU64,
    demoted_handlers: AtomicU64,
}

/// What a guest computed since the last deadline, as the epoch callback
/// finds it.
pub(crate) enum AtDeadline {
    /// The deadline passed while the guest waited on the host, not while
    /// it computed: it may compute this many more ticks before its slice
    /// ends.
    Stale(u64),
    /// It computed this long; its handler is long now and yields.
    Computed(Duration),
}

/// A session's share of the lanes, for its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuRecord {
    /// Handlers that ran (all or partly) on the slow lane.
    pub slow_lane_handlers: u64,
    /// Handlers that started on the slow lane because the tenant was over
    /// its share of a busy node.
    pub demoted_handlers: u64,
    /// CPU used on the slow lane, in milliseconds.
    pub slow_lane_cpu_ms: f64,
    /// Time the session's handlers waited for a slow-lane turn behind
    /// other handlers, in milliseconds: the session was throttled.
    pub throttled_ms: f64,
}

/// Fast-lane time a session gathers before it reports it to its tenant.
const REPORT_FAST_NS: u64 = 100_000;

impl LaneCell {
    /// `future` (which runs this session's handlers), moving between the
    /// lanes as its handlers need.
    pub fn laned<F>(self: &Arc<Self>, future: F) -> Laned<F>
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        Laned {
            place: Place::Here(Box::pin(future)),
            cell: Arc::clone(self),
        }
    }

    /// The guest passed its epoch deadline: charge what it computed since
    /// it resumed (thread CPU on the slow lane, ticks on the fast lane).
    pub fn at_deadline(&self) -> AtDeadline {
        if self.on_slow.load(Ordering::Relaxed) {
            let now = thread::cpu_time_ns();
            let used = now.saturating_sub(self.cpu_mark.swap(now, Ordering::Relaxed));
            self.long.store(true, Ordering::Relaxed);
            return AtDeadline::Computed(Duration::from_nanos(used));
        }
        let now = self.clock.ticks();
        let ticks = now.saturating_sub(self.mark.load(Ordering::Relaxed));
        if ticks < FIRST_SLICE_TICKS {
            return AtDeadline::Stale(FIRST_SLICE_TICKS - ticks);
        }
        self.mark.store(now, Ordering::Relaxed);
        self.long.store(true, Ordering::Relaxed);
        AtDeadline::Computed(self.clock.tick * ticks as u32)
    }

    /// A handler begins. True when it must move to the slow lane before it
    /// computes (its tenant is demoted, and it is on the fast lane).
    pub fn begin_handler(&self) -> bool {
        self.in_handler.store(true, Ordering::Relaxed);
        // Its first slice starts now, not when the poll began.
        self.mark.store(self.clock.ticks(), Ordering::Relaxed);
        self.waited_ns.store(0, Ordering::Relaxed);
        self.waiting_since.store(0, Ordering::Relaxed);
        let demoted = self.tenant.is_demoted();
        self.long.store(demoted, Ordering::Relaxed);
        if demoted {
            self.demoted_handlers.fetch_add(1, Ordering::Relaxed);
        }
        demoted && !self.on_slow.load(Ordering::Relaxed)
    }

    /// The handler began `elapsed` ago and has returned: a handler that
    /// stayed on the fast lane is charged its time there (not what it
    /// waited on the host); the slow lane charged its own.
    pub fn end_handler(&self, elapsed: Duration) {
        self.in_handler.store(false, Ordering::Relaxed);
        if self.long.load(Ordering::Relaxed) {
            self.long.store(false, Ordering::Relaxed);
            self.slow_handlers.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let spent = u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_sub(self.waited_ns.load(Ordering::Relaxed));
        let unreported = self.fast_unreported_ns.load(Ordering::Relaxed) + spent;
        if unreported >= REPORT_FAST_NS {
            self.tenant.charge_fast(Duration::from_nanos(unreported));
            self.fast_unreported_ns.store(0, Ordering::Relaxed);
        } else {
            self.fast_unreported_ns.store(unreported, Ordering::Relaxed);
        }
    }

    /// The session's figures so far (at its end: what is left of its
    /// fast-lane time goes to its tenant now).
    pub fn record(&self) -> CpuRecord {
        let unreported = self.fast_unreported_ns.swap(0, Ordering::Relaxed);
        self.tenant.charge_fast(Duration::from_nanos(unreported));
        let ms = |ns: &AtomicU64| ns.load(Ordering::Relaxed) as f64 / 1e6;
        CpuRecord {
            slow_lane_handlers: self.slow_handlers.load(Ordering::Relaxed),
            demoted_handlers: self.demoted_handlers.load(Ordering::Relaxed),
            slow_lane_cpu_ms: ms(&self.slow_cpu_ns),
            throttled_ms: ms(&self.throttled_ns),
        }
    }

    fn is_long(&self) -> bool {
        self.long.load(Ordering::Relaxed)
    }

    /// Before a poll on the fast lane.
    fn resume_fast(&self) {
        let since = self.waiting_since.load(Ordering::Relaxed);
        if since != 0 {
            self.waiting_since.store(0, Ordering::Relaxed);
            let waited = self.clock.now_ns().saturating_sub(since);
            self.waited_ns.fetch_add(waited, Ordering::Relaxed);
        }
        self.on_slow.store(false, Ordering::Relaxed);
        self.mark.store(self.clock.ticks(), Ordering::Relaxed);
    }

    /// After a poll on the fast lane that did not finish.
    fn paused_fast(&self) {
        if self.in_handler.load(Ordering::Relaxed) {
            self.waiting_since
                .store(self.clock.now_ns(), Ordering::Relaxed);
        }
    }

    /// Before a poll on the slow lane; returns the thread's CPU time.
    fn resume_slow(&self) -> u64 {
        self.on_slow.store(true, Ordering::Relaxed);
        let now = thread::cpu_time_ns();
        self.cpu_mark.store(now, Ordering::Relaxed);
        now
    }
}

/// A future that runs a session's handlers, on whichever lane the running
/// handler needs (see the module's documentation).
pub(crate) struct Laned<F: Future> {
    place: Place<F>,
    cell: Arc<LaneCell>,
}

enum Place<F: Future> {
    Here(Pin<Box<F>>),
    Away(JoinHandle<Leg<F>>),
    Done,
}

/// How a stay on the slow lane ended.
enum Leg<F: Future> {
    Finished(F::Output),
    Back(Pin<Box<F>>),
}

impl<F> Future for Laned<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        loop {
            match &mut this.place {
                Place::Here(future) => {
                    this.cell.resume_fast();
                    if let Poll::Ready(output) = future.as_mut().poll(cx) {
                        this.place = Place::Done;
                        return Poll::Ready(output);
                    }
                    this.cell.paused_fast();
                    if !this.cell.is_long() {
                        return Poll::Pending;
                    }
                    let Place::Here(future) = std::mem::replace(&mut this.place, Place::Done)
                    else {
                        unreachable!("matched above")
                    };
                    // In line for a turn before the slow lane's runtime
                    // polls it: a task it queues behind another that keeps
                    // computing is not polled soon, but a turn it waits for
                    // is handed on in fair order.
                    let lanes = &this.cell.lanes;
                    let governor = Arc::clone(&lanes.governor);
                    let (ticket, holding) = match governor.request(&this.cell.tenant, None) {
                        Turn::Granted => (None, true),
                        Turn::Waiting(ticket) => (Some(ticket), false),
                    };
                    let run = SlowRun {
                        future: Some(future),
                        cell: Arc::clone(&this.cell),
                        governor,
                        ticket,
                        holding,
                    };
                    this.place = Place::Away(lanes.slow_handle.spawn(run));
                }
                Place::Away(leg) => match ready!(Pin::new(leg).poll(cx)) {
                    Ok(Leg::Finished(output)) => {
                        this.place = Place::Done;
                        return Poll::Ready(output);
                    }
                    Ok(Leg::Back(future)) => this.place = Place::Here(future),
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    // The slow lane went down with its runtime: so did the
                    // session.
                    Err(_) => return Poll::Pending,
                },
                Place::Done => panic!("a Laned future was polled after it finished"),
            }
        }
    }
}

/// A session's future on the slow lane: one governed turn per poll, until
/// the handler that brought it here returns.
///
/// A handler that ends its slice is still runnable: it asks for its next
/// turn at once, before it gives back the thread, so that while one
/// handler computes the others queue in the governor (in fair order), not
/// in the runtime's run queue (in arrival order). One that waits on the
/// host asks only once it is woken.
struct SlowRun<F: Future> {
    future: Option<Pin<Box<F>>>,
    cell: Arc<LaneCell>,
    governor: Arc<Governor>,
    /// A request for a turn, not yet granted.
    ticket: Option<Ticket>,
    /// A turn granted and not yet used.
    holding: bool,
}

impl<F: Future> SlowRun<F> {
    /// Waits for a turn, asking for one first unless it already did.
    fn ask_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let tenant = &self.cell.tenant;
        if self.ticket.is_none() {
            match self.governor.request(tenant, Some(cx.waker())) {
                Turn::Granted => {
                    self.holding = true;
                    return Poll::Ready(());
                }
                Turn::Waiting(ticket) => self.ticket = Some(ticket),
            }
        }
        let ticket = self.ticket.as_ref().expect("asked above");
        let waited = ready!(self.governor.poll_granted(ticket, cx));
        self.ticket = None;
        self.governor.throttled(tenant, waited);
        self.cell
            .throttled_ns
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        self.holding = true;
        Poll::Ready(())
    }
}

impl<F: Future> Future for SlowRun<F> {
    type Output = Leg<F>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Leg<F>> {
        let this = &mut *self;
        if !this.holding {
            ready!(this.ask_turn(cx));
        }
        let began = this.cell.resume_slow();
        let woken = Arc::new(Woken::new(cx.waker().clone()));
        let polled = {
            let waker = Waker::from(Arc::clone(&woken));
            let future = this.future.as_mut().expect("polled after it finished");
            future.as_mut().poll(&mut Context::from_waker(&waker))
        };
        let used = thread::cpu_time_ns().saturating_sub(began);
        this.cell.slow_cpu_ns.fetch_add(used, Ordering::Relaxed);
        this.holding = false;
        this.governor
            .release(&this.cell.tenant, Duration::from_nanos(used));
        match polled {
            Poll::Ready(output) => {
                this.future = None;
                Poll::Ready(Leg::Finished(output))
            }
            Poll::Pending if !this.cell.is_long() => {
                Poll::Ready(Leg::Back(this.future.take().expect("still here")))
            }
            Poll::Pending => {
                if woken.is_set() {
                    // Runnable (its slice ended): queue for the next turn
                    // now. Granted or not, this task is polled again.
                    let _ = this.ask_turn(cx);
                }
                Poll::Pending
            }
        }
    }
}

impl<F: Future> Drop for SlowRun<F> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.governor.cancel(ticket, &self.cell.tenant);
        }
        if self.holding {
            self.governor.release(&self.cell.tenant, Duration::ZERO);
        }
    }
}

/// A waker that notes whether it was woken, passing the wake on.
struct Woken {
    inner: Waker,
    set: AtomicBool,
}

impl Woken {
    fn new(inner: Waker) -> Self {
        Woken {
            inner,
            set: AtomicBool::new(false),
        }
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::Relaxed)
    }
}

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set.store(true, Ordering::Relaxed);
        self.inner.wake_by_ref();
    }
}
