//! phase-probe: tries the capabilities in each phase and logs the outcome,
//! for the host's phase-rule tests.
//!
//! - started: sets an interval (100 ms) and a long timeout.
//! - `/terminate` over HTTP: terminate twice (the second is a no-op while
//!   running).
//! - terminating and terminated: logs the phase, then tries set-timeout,
//!   set-interval, clear, set-custom-data and terminate, logging each as
//!   `<what>: ok` or `<what>: <refusal>`.
//! - For the size and rate limits: `/interval?<ms>` sets an interval of that
//!   period; calls are answered, and a message received on one is sent back
//!   on it, prefixed
//!   `echo: `; both report as above.

use std::collections::HashMap;

use sessionbox_guest::{
    Call, CallAlertingEvent, CallId, HttpRequestEvent, HttpResponse, Refusal, Scenario,
    StartedEvent, TimerId, export_scenario, log, session, timers,
};

#[derive(Default)]
struct PhaseProbe {
    interval: Option<TimerId>,
    calls: HashMap<CallId, Call>,
}

fn report<T>(what: &str, result: Result<T, Refusal>) {
    match result {
        Ok(_) => log(&format!("{what}: ok")),
        Err(refusal) => log(&format!("{what}: {refusal}")),
    }
}

impl PhaseProbe {
    fn probe(&self) {
        log(&format!("phase: {}", session::phase()));
        report("set-timeout", timers::set_timeout(10));
        report("set-interval", timers::set_interval(100));
        // 0 if the interval was refused in `started`: clearing an unknown
        // timer is not an error, so the phase rule is what shows.
        report("clear", timers::clear(self.interval.unwrap_or(0)));
        report("set-custom-data", session::set_custom_data("bye"));
        report("terminate", session::terminate());
    }
}

impl Scenario for PhaseProbe {
    fn started(&mut self, _event: StartedEvent) {
        match timers::set_interval(100) {
            Ok(id) => {
                log(&format!("interval {id}"));
                self.interval = Some(id);
            }
            Err(refusal) => log(&format!("refused: {refusal}")),
        }
        match timers::set_timeout(600_000) {
            Ok(id) => log(&format!("timeout {id}")),
            Err(refusal) => log(&format!("refused: {refusal}")),
        }
    }

    fn timer_fired(&mut self, id: TimerId) {
        log(&format!("timer-fired {id}"));
    }

    fn call_alerting(&mut self, event: CallAlertingEvent) {
        report("answer", event.call.answer());
        self.calls.insert(event.call.id(), event.call);
    }

    fn call_message_received(&mut self, call: CallId, text: String) {
        if let Some(call) = self.calls.get(&call) {
            report("send-message", call.send_message(&format!("echo: {text}")));
        }
    }

    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        if let Some(period) = request.path.strip_prefix("/interval?") {
            let period = period.parse().unwrap_or(0);
            report(&format!("set-interval {period}"), timers::set_interval(period));
            return HttpResponse::empty(200);
        }
        if request.path != "/terminate" {
            return HttpResponse::empty(404);
        }
        report("terminate", session::terminate());
        report("terminate again", session::terminate());
        HttpResponse::empty(200)
    }

    fn terminating(&mut self) {
        log("terminating");
        self.probe();
    }

    fn terminated(&mut self) {
        log("terminated");
        self.probe();
    }
}

export_scenario!(PhaseProbe);
