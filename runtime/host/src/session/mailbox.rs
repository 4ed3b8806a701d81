//! A session's mailbox: its queue of events, and the shelf where its
//! [`Core`] waits while the session is idle.
//!
//! Why a shelf: handing every event to the session's task and its answer
//! back costs two cross-task wake-ups, which on a busy node cost more than
//! the handler itself. So while the session's task is idle it puts the core
//! on the shelf, and a caller that finds it there with nothing queued
//! ([`SessionHandle::http_request`](super::SessionHandle::http_request))
//! runs its handler in its own task and puts the core back. Events still
//! run one at a time and in arrival order: a caller takes the core only when
//! nothing is queued before it, and whoever puts the core back wakes the
//! session's task if it left anything for it to do.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, ready};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::SessionError;
use super::core::Core;
use super::event::Event;
use crate::bindings::CallId;
use crate::cpu::Laned;
use crate::sync::MutexExt;
use crate::telephony::{CallEvent, CallEvents};

pub(crate) struct Mailbox {
    state: Mutex<State>,
    /// Wakes the session's task.
    wake: Notify,
}

struct State {
    queue: VecDeque<Event>,
    capacity: usize,
    /// False once the session takes no more events (it is ending).
    open: bool,
    /// The core, while the session's task is idle and lends it out.
    shelf: Option<Box<Core>>,
    /// When the session's task wakes by itself (a timer, a deadline), as
    /// it was when the core was shelved.
    shelved_until: Option<Instant>,
    /// The session's task wants the core back from a caller.
    reclaiming: bool,
}

impl Mailbox {
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                capacity,
                open: true,
                shelf: None,
                shelved_until: None,
                reclaiming: false,
            }),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Queues an event, failing when the queue is full or the session takes
    /// no more events.
    pub fn post(&self, event: Event) -> Result<(), SessionError> {
        let state = self.state();
        state.admit()?;
        self.push(state, event);
        Ok(())
    }

    /// Takes the core to run a handler in the caller's task, if the session
    /// is idle and nothing is queued before it.
    pub fn take_idle(&self) -> Result<Option<Box<Core>>, SessionError> {
        let mut state = self.state();
        if !state.open {
            return Err(SessionError::Finished);
        }
        if !state.queue.is_empty() {
            return Ok(None);
        }
        Ok(state.shelf.take())
    }

    /// Queues an admitted event; the session's task hears of it if it is
    /// idle (otherwise whoever has the core finds it).
    fn push(&self, mut state: MutexGuard<'_, State>, event: Event) {
        state.queue.push_back(event);
        let idle = state.shelf.is_some();
        drop(state);
        if idle {
            self.wake.notify_one();
        }
    }

    /// Puts back a core a caller took. Wakes the session's task if the
    /// handler left it something to do: queued events, a timer due before
    /// it meant to wake, the session's end.
    fn put_back(&self, core: Box<Core>) {
        let mut state = self.state();
        let ends = core.is_ending();
        if ends {
            state.open = false;
        }
        let wake = ends
            || state.reclaiming
            || !state.queue.is_empty()
            || core
                .next_wakeup()
                .is_some_and(|(at, _)| state.shelved_until.is_none_or(|until| at < until));
        state.shelf = Some(core);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    /// For the session's task: the next queued event, if any.
    pub fn next_event(&self) -> Option<Event> {
        self.state().queue.pop_front()
    }

    /// For the session's task: shelves the core for callers until `until`
    /// (when the task will wake by itself), unless events are queued, in
    /// which case the core comes straight back.
    pub fn shelve(&self, core: Box<Core>, until: Option<Instant>) -> Result<(), Box<Core>> {
        let mut state = self.state();
        if !state.queue.is_empty() {
            return Err(core);
        }
        state.shelf = Some(core);
        state.shelved_until = until;
        Ok(())
    }

    /// For the session's task: waits until woken or `until`, then takes the
    /// core back (waiting for a caller that runs a handler with it).
    pub async fn reclaim(&self, until: Option<Instant>) -> Box<Core> {
        {
            let woken = self.wake.notified();
            let sleep = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = woken => {}
                () = sleep => {}
            }
        }
        loop {
            let mut woken = pin!(self.wake.notified());
            woken.as_mut().enable();
            {
                let mut state = self.state();
                if let Some(core) = state.shelf.take() {
                    state.reclaiming = false;
                    return core;
                }
                state.reclaiming = true;
            }
            woken.await;
        }
    }

    /// The session takes no more events: those queued are dropped (their
    /// senders hear the session has finished).
    pub fn close(&self) {
        let dropped = {
            let mut state = self.state();
            state.open = false;
            std::mem::take(&mut state.queue)
        };
        drop(dropped);
    }
}

impl State {
    fn admit(&self) -> Result<(), SessionError> {
        if !self.open {
            Err(SessionError::Finished)
        } else if self.queue.len() >= self.capacity {
            Err(SessionError::Busy)
        } else {
            Ok(())
        }
    }
}

/// A handler running in a caller's task with a core taken from the shelf.
/// A wasm call cannot stop halfway, so if the caller stops waiting (a
/// client disconnects), the handler runs on to its end in a task of its
/// own; either way the core goes back on the shelf.
pub(crate) struct Borrowed<F, R>
where
    F: Future<Output = (Box<Core>, R)> + Send + 'static,
    R: Send + 'static,
{
    running: Option<Laned<F>>,
    mailbox: Arc<Mailbox>,
}

impl<F, R> Borrowed<F, R>
where
    F: Future<Output = (Box<Core>, R)> + Send + 'static,
    R: Send + 'static,
{
    pub fn new(mailbox: Arc<Mailbox>, running: Laned<F>) -> Self {
        Borrowed {
            running: Some(running),
            mailbox,
        }
    }
}

impl<F, R> Future for Borrowed<F, R>
where
    F: Future<Output = (Box<Core>, R)> + Send + 'static,
    R: Send + 'static,
{
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let running = self.running.as_mut().expect("polled after it finished");
        let (core, outcome) = ready!(Pin::new(running).poll(cx));
        self.running = None;
        self.mailbox.put_back(core);
        Poll::Ready(outcome)
    }
}

impl<F, R> Drop for Borrowed<F, R>
where
    F: Future<Output = (Box<Core>, R)> + Send + 'static,
    R: Send + 'static,
{
    fn drop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // Without a runtime (it is shutting down) the session goes with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mailbox = Arc::clone(&self.mailbox);
            runtime.spawn(async move {
                let (core, _) = running.await;
                mailbox.put_back(core);
            });
        }
    }
}

/// How the host's own side of a session (its calls' far ends) reaches its
/// mailbox. Weak: a far end that outlives its session does not keep it.
#[derive(Clone)]
pub(crate) struct EventSink(pub(crate) Weak<Mailbox>);

impl CallEvents for EventSink {
    /// Queues an outcome the host itself produced (a call answered, a
    /// playback finished). A session that has ended no longer wants it; a
    /// full queue drops it, with a trace.
    fn send(&self, call: CallId, event: CallEvent) {
        let Some(mailbox) = self.0.upgrade() else {
            return;
        };
        if let Err(SessionError::Busy) = mailbox.post(Event::Call { call, event }) {
            tracing::warn!("a session's queue is full: dropped a telephony event");
        }
    }
}
