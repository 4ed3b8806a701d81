//! call-centre: the everyday flow. It answers a caller, speaks a menu, takes
//! a digit, dials an agent and connects the two.
//!
//! Key 1 dials `sales` and key 2 dials `support`, through the node's SIP
//! trunk (in `sessionbox run`, calls are answered in process). Any other key
//! repeats the menu. When the agent answers, caller and agent are connected.
//! If the agent cannot be reached, the caller hears an apology and the call
//! ends. When either side hangs up, so does the other, and the session ends.

use sessionbox_guest::{
    Call, CallAlertingEvent, CallId, Refusal, Scenario, calls, export_scenario, log, media,
    session,
};

const MENU: &str = "Press 1 for sales, or 2 for support.";
const SORRY: &str = "Sorry, nobody can take your call now. Goodbye.";

#[derive(Default)]
struct CallCentre {
    caller: Option<Call>,
    agent: Option<Call>,
    /// The apology is playing: the call ends when it finishes.
    ending: bool,
}

/// Refusals are ordinary values: log them and carry on.
fn check(result: Result<(), Refusal>) {
    if let Err(refusal) = result {
        log(&format!("refused: {refusal}"));
    }
}

fn is(call: &Option<Call>, id: CallId) -> bool {
    call.as_ref().is_some_and(|call| call.id() == id)
}

impl CallCentre {
    fn say_to_caller(&self, text: &str) {
        if let Some(caller) = &self.caller {
            check(caller.say(text, None));
        }
    }

    fn dial(&mut self, team: &str) {
        self.say_to_caller(&format!("Connecting you to {team}."));
        match calls::dial(team) {
            Ok(agent) => {
                log(&format!("dialing {team}"));
                self.agent = Some(agent);
            }
            Err(refusal) => {
                log(&format!("refused: {refusal}"));
                self.apologise();
            }
        }
    }

    fn apologise(&mut self) {
        self.ending = true;
        self.say_to_caller(SORRY);
    }
}

impl Scenario for CallCentre {
    fn call_alerting(&mut self, event: CallAlertingEvent) {
        if self.caller.is_some() {
            // One caller per session.
            check(event.call.reject(486));
            return;
        }
        check(event.call.answer());
        self.caller = Some(event.call);
    }

    fn call_connected(&mut self, id: CallId) {
        if is(&self.caller, id) {
            self.say_to_caller(MENU);
        } else if let (Some(caller), Some(agent)) = (&self.caller, &self.agent) {
            check(media::connect(caller, agent));
            log("caller and agent connected");
        }
    }

    fn call_tone_received(&mut self, id: CallId, tone: String) {
        // Once an agent is dialed, key presses are the caller's business
        // with the agent (they are relayed to the agent's phone).
        if !is(&self.caller, id) || self.agent.is_some() || self.ending {
            return;
        }
        match tone.as_str() {
            "1" => self.dial("sales"),
            "2" => self.dial("support"),
            _ => self.say_to_caller(MENU),
        }
    }

    fn call_failed(&mut self, id: CallId, code: u16, reason: String) {
        if is(&self.agent, id) {
            log(&format!("the agent's call failed: {code} {reason}"));
            self.agent = None;
            self.apologise();
        }
    }

    fn call_playback_finished(&mut self, id: CallId) {
        if self.ending && is(&self.caller, id) {
            check(self.caller.as_ref().map_or(Ok(()), Call::hangup));
        }
    }

    fn call_disconnected(&mut self, id: CallId) {
        let other = if is(&self.caller, id) {
            self.agent.take()
        } else {
            self.caller.take()
        };
        if let Some(other) = other {
            check(other.hangup());
        }
        check(session::terminate());
    }

    fn call_held(&mut self, id: CallId) {
        log(&format!("call {id} is on hold"));
    }

    fn call_resumed(&mut self, id: CallId) {
        log(&format!("call {id} is off hold"));
    }
}

export_scenario!(CallCentre);
