//! call-handler: answers an incoming call, plays a prompt, hangs up.
//!
//! Call actions are signalling-level: each returns at once, and its outcome
//! arrives later as a call event naming the call's id. So the scenario keeps
//! its calls by id and moves each one on from the event handlers:
//! alerting -> answer -> connected -> say -> playback finished -> hang up ->
//! disconnected. With nothing left to do, the session idles into
//! `terminating`.

use std::collections::HashMap;

use sessionbox_guest::{Call, CallAlertingEvent, CallId, Refusal, Scenario, export_scenario, log};

#[derive(Default)]
struct CallHandler {
    calls: HashMap<CallId, Call>,
}

/// Refusals are ordinary values: log them and carry on.
fn check(result: Result<(), Refusal>) {
    if let Err(refusal) = result {
        log(&format!("refused: {refusal}"));
    }
}

impl Scenario for CallHandler {
    fn call_alerting(&mut self, event: CallAlertingEvent) {
        log(&format!("answering call from {}", event.caller_id));
        check(event.call.answer());
        self.calls.insert(event.call.id(), event.call);
    }

    fn call_connected(&mut self, id: CallId) {
        log("connected");
        if let Some(call) = self.calls.get(&id) {
            check(call.say("Thanks for calling Sessionbox. Goodbye.", Some("en-US")));
        }
    }

    fn call_playback_finished(&mut self, id: CallId) {
        log("prompt finished, hanging up");
        if let Some(call) = self.calls.get(&id) {
            check(call.hangup());
        }
    }

    fn call_disconnected(&mut self, id: CallId) {
        log("call ended");
        self.calls.remove(&id);
    }

    fn call_failed(&mut self, id: CallId, _code: u16, _reason: String) {
        // Never connected (e.g. the caller gave up): nothing left to do.
        self.calls.remove(&id);
    }

    fn terminating(&mut self) {
        log("terminating");
    }

    fn terminated(&mut self) {
        log("terminated");
    }
}

export_scenario!(CallHandler);
