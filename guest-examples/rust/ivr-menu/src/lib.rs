//! ivr-menu: a phone menu whose prompts live in the app's storage.
//!
//! It answers every incoming call and, once connected, says the text at key
//! `menu`. A key press `<digit>` says the text at `menu/<digit>`; `#` hangs
//! up, and the end of the call ends the session. Operators change the menu
//! by writing those keys through the storage API, with no new upload.

use std::collections::HashMap;

use sessionbox_guest::{Call, CallAlertingEvent, CallId, Refusal, Scenario, export_scenario, log};
use sessionbox_guest::{session, storage};

/// Said when the app's storage has no `menu`.
const DEFAULT_MENU: &str = "Press 1 for sales, 2 for support, # to hang up.";
/// Said for a digit with no `menu/<digit>`.
const NO_SUCH_OPTION: &str = "No such option.";

#[derive(Default)]
struct IvrMenu {
    calls: HashMap<CallId, Call>,
}

/// Refusals are ordinary values: log them and carry on.
fn check(result: Result<(), Refusal>) {
    if let Err(refusal) = result {
        log(&format!("refused: {refusal}"));
    }
}

/// The text at `key`. A refused read is logged and counts as absent, so the
/// caller still hears the fallback.
fn prompt(key: &str) -> Option<String> {
    storage::get_text(key).unwrap_or_else(|refusal| {
        log(&format!("refused: {refusal}"));
        None
    })
}

impl IvrMenu {
    fn say(&self, id: CallId, text: &str) {
        if let Some(call) = self.calls.get(&id) {
            check(call.say(text, None));
        }
    }
}

impl Scenario for IvrMenu {
    fn call_alerting(&mut self, event: CallAlertingEvent) {
        check(event.call.answer());
        self.calls.insert(event.call.id(), event.call);
    }

    fn call_connected(&mut self, id: CallId) {
        let menu = prompt("menu");
        self.say(id, menu.as_deref().unwrap_or(DEFAULT_MENU));
    }

    fn call_tone_received(&mut self, id: CallId, tone: String) {
        match tone.as_bytes() {
            b"#" => {
                if let Some(call) = self.calls.get(&id) {
                    check(call.hangup());
                }
            }
            [digit] if digit.is_ascii_digit() => {
                let option = prompt(&format!("menu/{tone}"));
                self.say(id, option.as_deref().unwrap_or(NO_SUCH_OPTION));
            }
            // `*` and A-D are not part of this menu.
            _ => {}
        }
    }

    fn call_disconnected(&mut self, id: CallId) {
        self.calls.remove(&id);
        check(session::terminate());
    }
}

export_scenario!(IvrMenu);
