//! The telephony side: what carries out a scenario's call actions and brings
//! the far end's answers back as call events.
//!
//! Sessionbox talks to telephony through [`Telephony`] only. Until SIP
//! arrives, [`InProcessTelephony`] stands in for the network: every action
//! succeeds at once and its outcome is queued as the event a real call would
//! produce, so call-handling scenarios can be written and tested today.

use crate::capabilities::calls::CallId;
use crate::session::{Event, EventSink};

/// A signalling-level action on a call, as the scenario asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    Answer,
    Reject {
        code: u16,
    },
    Hangup,
    Say {
        text: String,
        language: Option<String>,
    },
    Play {
        url: String,
    },
    SendMessage {
        text: String,
    },
}

/// Carries out call actions. `events` is the session's queue: outcomes
/// (connected, playback finished, ...) are sent there, in the order the far
/// end produces them.
pub trait Telephony: Send + Sync + 'static {
    fn act(&self, call: CallId, action: CallAction, events: &EventSink);
}

/// Telephony without a network: each action's outcome follows immediately.
#[derive(Debug, Default, Clone, Copy)]
pub struct InProcessTelephony;

impl Telephony for InProcessTelephony {
    fn act(&self, call: CallId, action: CallAction, events: &EventSink) {
        let outcome = match action {
            CallAction::Answer => Event::CallConnected { call },
            CallAction::Hangup => Event::CallDisconnected { call },
            CallAction::Say { .. } | CallAction::Play { .. } => {
                Event::CallPlaybackFinished { call }
            }
            // The far end takes a rejection or a message without a reply.
            CallAction::Reject { .. } | CallAction::SendMessage { .. } => return,
        };
        events.send_from_host(outcome);
    }
}
