//! The phase machine: running -> terminating -> terminated, and what each
//! phase lets a scenario do. The phase-probe guest tries everything in every
//! phase and logs each outcome.

use crate::support::*;
use sessionbox::log::LogSource;
use sessionbox::session::TerminateCauseName;
use sessionbox::{FinishReason, Limits};

const GONE: &str = "only the logger works once the session is terminated";

#[tokio::test]
async fn terminating_cancels_timers_and_terminated_leaves_only_the_logger() {
    let runtime = runtime();
    let probe = load(&runtime, "phase-probe", Limits::default());
    let mut watched = start(&runtime, &probe, "").await;
    // The interval fires while running...
    watched.until_log("timer-fired 1").await;
    watched
        .session
        .http_request(request("POST", "/terminate", ""))
        .await
        .unwrap();
    let record = watched.finished().await;

    assert_eq!(
        record.finish_reason,
        FinishReason::Terminated {
            cause: TerminateCauseName::Terminate
        }
    );
    // ...and never after Terminating: pending timers were cancelled.
    let terminating = watched
        .seen
        .iter()
        .position(|e| *e == "Terminating")
        .unwrap();
    assert_eq!(watched.seen[terminating..], ["Terminating", "Terminated"]);
    assert!(record.delivered("TimerFired") >= 1);

    let log: Vec<_> = lines(&record, LogSource::Scenario)
        .into_iter()
        .filter(|line| !line.starts_with("timer-fired"))
        .collect();
    let timers_gone =
        "timers refused in terminating: timers ended when the session began terminating";
    assert_eq!(
        log,
        [
            "interval 1".to_owned(),
            "timeout 2".to_owned(),
            "terminate: ok".to_owned(),
            "terminate again: ok".to_owned(),
            "terminating".to_owned(),
            "phase: terminating".to_owned(),
            format!("set-timeout: {timers_gone}"),
            format!("set-interval: {timers_gone}"),
            format!("clear: {timers_gone}"),
            "set-custom-data: ok".to_owned(),
            "terminate: session refused in terminating: the session is already terminating"
                .to_owned(),
            "terminated".to_owned(),
            "phase: terminated".to_owned(),
            format!("set-timeout: timers refused in terminated: {GONE}"),
            format!("set-interval: timers refused in terminated: {GONE}"),
            format!("clear: timers refused in terminated: {GONE}"),
            format!("set-custom-data: session refused in terminated: {GONE}"),
            format!("terminate: session refused in terminated: {GONE}"),
        ]
    );
    let refusals = &record.capabilities.refusals;
    assert_eq!(refusals["timers"]["terminating"], 3);
    assert_eq!(refusals["timers"]["terminated"], 3);
    assert_eq!(refusals["session"]["terminating"], 1);
    assert_eq!(refusals["session"]["terminated"], 2);
    // Each refusal is also in the log, from the host, for the author.
    assert_eq!(
        lines(&record, LogSource::Host).len(),
        9 + 1,
        "9 refusals and the finish"
    );
}

#[tokio::test]
async fn a_session_with_nothing_to_do_idles_into_terminating() {
    let runtime = runtime();
    let hello = load(&runtime, "hello", quick_idle(100));
    let mut watched = start(&runtime, &hello, "").await;
    let record = watched.finished().await;
    assert_eq!(watched.seen, ["Started", "Terminating", "Terminated"]);
    assert_eq!(
        record.finish_reason,
        FinishReason::Terminated {
            cause: TerminateCauseName::IdleTimeout
        }
    );
    assert_eq!(record.finish_reason.to_string(), "terminated: idle timeout");
}

/// Timers are the scenario's own doing, not activity: a ticking interval
/// does not keep an otherwise idle session alive.
#[tokio::test]
async fn timers_fire_in_order_but_do_not_count_as_activity() {
    let runtime = runtime();
    let probe = load(&runtime, "phase-probe", quick_idle(350));
    let mut watched = start(&runtime, &probe, "").await;
    let record = watched.finished().await;
    assert_eq!(
        record.finish_reason,
        FinishReason::Terminated {
            cause: TerminateCauseName::IdleTimeout
        }
    );
    // The 100 ms interval is due three times before the idle deadline; each
    // firing comes before it, however late the session gets to run.
    assert!(record.delivered("TimerFired") >= 2, "{:?}", watched.seen);
    assert!(
        lines(&record, LogSource::Scenario)
            .iter()
            .filter(|line| line.starts_with("timer-fired"))
            .all(|line| *line == "timer-fired 1"),
        "only the interval fired; the long timeout was cancelled"
    );
}
