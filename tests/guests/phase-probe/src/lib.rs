//! phase-probe: tries the capabilities in each phase and logs the outcome,
//! for the host's phase-rule tests.
//!
//! - started: sets an interval (100 ms) and a long timeout.
//! - `/terminate` over HTTP: terminate twice (the second is a no-op while
//!   running).
//! - terminating and terminated: logs the phase, then tries set-timeout,
//!   set-interval, clear, set-custom-data and terminate, logging each as
//!   `<what>: ok` or `<what>: <refusal>`.

use sessionbox_guest::{
    HttpRequestEvent, HttpResponse, Refusal, Scenario, StartedEvent, TimerId, export_scenario, log,
    session, timers,
};

#[derive(Default)]
struct PhaseProbe {
    interval: Option<TimerId>,
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

    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
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
