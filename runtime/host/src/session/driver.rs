//! The session's task: walks the phases running -> terminating ->
//! terminated, delivers queued events, timers and deadlines, lends the core
//! out while idle, and publishes the record at the end.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::core::{Core, Failure};
use super::event::{Event, TerminateCause};
use super::mailbox::Mailbox;
use super::record::{FinishReason, SessionRecord};
use super::{FinishHook, Notice};
use crate::log::LogSource;
use crate::metrics::FinishLabels;

pub(crate) struct Driver {
    pub mailbox: Arc<Mailbox>,
    pub on_finish: Option<FinishHook>,
    pub scenario: String,
    pub started_at: SystemTime,
    pub finished: watch::Sender<Option<Arc<SessionRecord>>>,
    /// The session's pool slot, held until its store is gone.
    pub capacity: tokio::sync::OwnedSemaphorePermit,
}

impl Driver {
    /// Runs the session to its end and publishes its record.
    pub async fn run(self, core: Box<Core>, custom_data: String) {
        let (core, outcome) = lifecycle(&self.mailbox, core, custom_data).await;
        let finish_reason = match outcome {
            Ok(cause) => FinishReason::Terminated {
                cause: cause.into(),
            },
            Err(Failure(reason)) => reason,
        };
        self.finish(core, finish_reason);
    }

    fn finish(self, core: Box<Core>, finish_reason: FinishReason) {
        self.mailbox.close();
        let events = core.events_delivered();
        let Core {
            store, observer, ..
        } = *core;
        let state = store.data();
        state.log.write(
            LogSource::Host,
            &format!("session finished: {finish_reason}"),
        );
        let record = Arc::new(SessionRecord {
            id: state.factors.session.id().to_owned(),
            scenario: self.scenario,
            started_at: self.started_at,
            ended_at: SystemTime::now(),
            finish_reason,
            events,
            capabilities: state.gate().ledger().meter_now(),
            cpu: state.budget.lane().record(),
            log: state.log.take(),
        });
        let metrics = Arc::clone(&state.metrics);
        metrics.sessions_live.dec();
        metrics
            .sessions_finished
            .get_or_create(&FinishLabels {
                reason: record.finish_reason.label(),
            })
            .inc();
        // The instance, its memory and its pool slot are given back before
        // anyone hears the session ended: a start that follows finds room.
        drop(store);
        drop(self.capacity);
        // The hook runs first: whoever waits on the handle wakes to a world
        // where the hook has done its part (e.g. handed the record to storage).
        if let Some(on_finish) = self.on_finish {
            on_finish(Arc::clone(&record));
        }
        self.finished.send_replace(Some(Arc::clone(&record)));
        if let Some(observer) = &observer {
            let _ = observer.send(Notice::Finished(record));
        }
    }
}

async fn lifecycle(
    mailbox: &Mailbox,
    mut core: Box<Core>,
    custom_data: String,
) -> (Box<Core>, Result<TerminateCause, Failure>) {
    if let Err(failure) = core.started(custom_data).await {
        return (core, Err(failure));
    }
    let (mut core, ending) = run_until_terminating(mailbox, core).await;
    mailbox.close();
    let outcome = match ending {
        Ok(cause) => core.end(cause).await.map(|()| cause),
        Err(failure) => Err(failure),
    };
    (core, outcome)
}

/// Delivers queued events, timers and deadlines until the session is to
/// terminate, and says why. While there is nothing to do, the core is
/// on the mailbox's shelf, where callers may run handlers with it.
async fn run_until_terminating(
    mailbox: &Mailbox,
    mut core: Box<Core>,
) -> (Box<Core>, Result<TerminateCause, Failure>) {
    loop {
        if let Some(failure) = core.take_failure() {
            return (core, Err(failure));
        }
        if core.store.data().factors.session.terminate_requested() {
            return (core, Ok(TerminateCause::Scenario));
        }
        if let Some(event) = mailbox.next_event() {
            let delivered = match event {
                Event::Terminate(cause) => return (core, Ok(cause)),
                event => core.dispatch(event).await,
            };
            if let Err(failure) = delivered {
                return (core, Err(failure));
            }
            continue;
        }
        let wakeup = core.next_wakeup();
        match wakeup {
            Some((at, wakeup)) if at <= tokio::time::Instant::now() => {
                match core.wake(wakeup).await {
                    Ok(None) => {}
                    Ok(Some(cause)) => return (core, Ok(cause)),
                    Err(failure) => return (core, Err(failure)),
                }
            }
            _ => {
                let until = wakeup.map(|(at, _)| at);
                if let Err(back) = mailbox.shelve(core, until) {
                    core = back;
                    continue;
                }
                core = mailbox.reclaim(until).await;
            }
        }
    }
}
