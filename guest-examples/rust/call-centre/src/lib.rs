//! call-centre: the everyday flow. It answers a caller, speaks a menu, takes
//! a digit, dials an agent and connects the two.
//!
//! Key 1 dials `sales` and key 2 dials `support`, through the node's SIP
//! trunk (in `sessionbox run`, calls are answered in process). Any other key
//! repeats the menu. When the agent answers, caller and agent are connected,
//! and the conversation is recorded in stereo (the caller left, the agent
//! right). If the agent cannot be reached, the caller hears an apology and
//! the call ends. When either side hangs up, so does the other, and the
//! session ends once the recording is kept.

use sessionbox_guest::media::{RecordingId, RecordingOptions};
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
    /// The conversation's recording, while it runs.
    recording: Option<RecordingId>,
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
            let options = RecordingOptions {
                stereo: true,
                max_seconds: 3600,
            };
            match media::start_recording(caller, options) {
                Ok(recording) => self.recording = Some(recording),
                Err(refusal) => log(&format!("refused: {refusal}")),
            }
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
        // The side that hung up goes, and takes the other with it. (The
        // other's own end, which follows, concerns neither any more.)
        let other = if is(&self.caller, id) {
            self.caller = None;
            self.agent.take()
        } else if is(&self.agent, id) {
            self.agent = None;
            self.caller.take()
        } else {
            return;
        };
        if let Some(other) = other {
            check(other.hangup());
        }
        // The recording ends with the call; the session waits until it is
        // kept.
        if self.recording.is_none() {
            check(session::terminate());
        }
    }

    fn recording_finished(
        &mut self,
        recording: RecordingId,
        _call: CallId,
        duration_ms: u32,
        error: Option<String>,
    ) {
        match error {
            None => log(&format!("recording {recording} kept: {duration_ms} ms")),
            Some(error) => log(&format!("recording {recording} not kept: {error}")),
        }
        self.recording = None;
        if self.caller.is_none() {
            check(session::terminate());
        }
    }

    fn call_held(&mut self, id: CallId) {
        log(&format!("call {id} is on hold"));
    }

    fn call_resumed(&mut self, id: CallId) {
        log(&format!("call {id} is off hold"));
    }
}

export_scenario!(CallCentre);
