//! `calls`: the calls in a session and the actions a scenario takes on them.
//!
//! The host keeps each call's state; the guest holds `call` resources that
//! name a call by id. Actions go to the call's [`CallLink`] (its far end),
//! whose outcomes come back as events; the state moves when those events are
//! delivered, so the scenario never sees a state its events have not told it
//! about.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use wasmtime::component::Resource;

use super::{SessionState, running_only};
use crate::bindings::sessionbox::scenario::calls::{self, CallState, DialOptions};
use crate::bindings::{Capability, Refusal};
use crate::limits::Limits;
use crate::session::EventSink;
use crate::telephony::{CallAction, CallContext, CallLink, DialRequest, Dialer};

pub type CallId = u32;

/// The host side of a guest's `call` resource.
pub struct CallHandle {
    pub id: CallId,
}

/// The ids of a session's calls that are not over. Shared by the session's
/// handle, which turns away the far end's actions on any other id, and the
/// calls capability, which knows when a call ends.
#[derive(Default)]
pub(crate) struct LiveCalls(Mutex<BTreeSet<CallId>>);

impl LiveCalls {
    fn ids(&self) -> MutexGuard<'_, BTreeSet<CallId>> {
        // Nothing panics under the lock; a poisoned one is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, call: CallId) {
        self.ids().insert(call);
    }

    pub fn remove(&self, call: CallId) {
        self.ids().remove(&call);
    }

    pub fn contains(&self, call: CallId) -> bool {
        self.ids().contains(&call)
    }
}

pub(crate) struct Calls {
    dialer: Arc<dyn Dialer>,
    /// The same calls, as the session's handle sees them.
    live: Arc<LiveCalls>,
    /// Where each call's far end sends its outcomes.
    events: EventSink,
    limits: Arc<Limits>,
    legs: BTreeMap<CallId, Leg>,
    attempts: usize,
    /// Ids of outbound calls; incoming calls are numbered by the session
    /// handle, from 1 up, so these count down from the top.
    next_outbound: CallId,
}

struct Leg {
    link: Box<dyn CallLink>,
    state: LegState,
    alerting_since: Instant,
    /// The scenario has seen this call's disconnected or failed event.
    end_delivered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    /// Outbound, not yet answered.
    Dialing,
    Alerting,
    /// Answered by the scenario, not yet connected.
    Answering,
    Connected,
    Disconnected,
    Failed,
}

impl LegState {
    fn is_live(self) -> bool {
        matches!(
            self,
            Self::Dialing | Self::Alerting | Self::Answering | Self::Connected
        )
    }
}

impl Calls {
    pub fn new(
        dialer: Arc<dyn Dialer>,
        live: Arc<LiveCalls>,
        events: EventSink,
        limits: Arc<Limits>,
    ) -> Self {
        Calls {
            dialer,
            live,
            events,
            limits,
            legs: BTreeMap::new(),
            attempts: 0,
            next_outbound: CallId::MAX,
        }
    }

    /// Admits an incoming call, or rejects it (403, as VoxEngine does) and
    /// says why: the call-attempt limit, or the limit of calls ringing at
    /// once.
    pub fn admit(&mut self, call: CallId, link: Box<dyn CallLink>) -> Result<(), String> {
        let refusal = self.attempt_refused().or_else(|| {
            let ringing = self.limits.calls_ringing;
            (self.ringing() >= ringing)
                .then(|| format!("{ringing} calls ringing at once is the limit"))
        });
        if let Some(reason) = refusal {
            link.act(CallAction::Reject { code: 403 });
            self.live.remove(call);
            return Err(reason);
        }
        self.attempts += 1;
        self.insert(call, link, LegState::Alerting);
        Ok(())
    }

    /// Why another call attempt is refused, if it is.
    fn attempt_refused(&self) -> Option<String> {
        let attempts = self.limits.calls_per_session;
        (self.attempts >= attempts)
            .then(|| format!("{attempts} call attempts per session is the limit"))
    }

    fn insert(&mut self, call: CallId, link: Box<dyn CallLink>, state: LegState) {
        self.live.add(call);
        let leg = Leg {
            link,
            state,
            alerting_since: Instant::now(),
            end_delivered: false,
        };
        self.legs.insert(call, leg);
    }

    /// Incoming calls not yet answered or ended.
    fn ringing(&self) -> usize {
        self.legs
            .values()
            .filter(|leg| leg.state == LegState::Alerting)
            .count()
    }

    /// Calls that are alerting, being answered or connected.
    pub fn live(&self) -> usize {
        self.legs.values().filter(|leg| leg.state.is_live()).count()
    }

    /// Moves a call to connected as its event is delivered. False (and the
    /// event is not delivered) unless the call was waiting for it.
    pub fn on_connected(&mut self, call: CallId) -> bool {
        match self.legs.get_mut(&call) {
            Some(leg)
                if matches!(
                    leg.state,
                    LegState::Dialing | LegState::Alerting | LegState::Answering
                ) =>
            {
                leg.state = LegState::Connected;
                true
            }
            _ => false,
        }
    }

    /// Ends a call as its disconnected or failed event is delivered. A call
    /// the scenario hung up or rejected is already ended host-side, but its
    /// event is still the scenario's to see, once.
    pub fn on_ended(&mut self, call: CallId, failed: bool) -> bool {
        match self.legs.get_mut(&call) {
            Some(leg) if !leg.end_delivered => {
                if leg.state.is_live() {
                    leg.state = if failed {
                        LegState::Failed
                    } else {
                        LegState::Disconnected
                    };
                    self.live.remove(call);
                }
                leg.end_delivered = true;
                true
            }
            _ => false,
        }
    }

    /// Whether the far end's message, tone or playback event is for a call
    /// that is still connected.
    pub fn is_connected(&self, call: CallId) -> bool {
        self.legs
            .get(&call)
            .is_some_and(|leg| leg.state == LegState::Connected)
    }

    /// The unanswered call (incoming or outbound) that has waited longest,
    /// and when it must be dropped.
    pub fn next_unanswered(&self, limit: std::time::Duration) -> Option<(Instant, CallId)> {
        self.legs
            .iter()
            .filter(|(_, leg)| matches!(leg.state, LegState::Alerting | LegState::Dialing))
            .map(|(&id, leg)| (leg.alerting_since + limit, id))
            .min()
    }

    /// Ends every live call without telling the scenario (entering
    /// Terminating: the session's calls end with it).
    pub fn end_all(&mut self) {
        for (&call, leg) in &mut self.legs {
            if leg.state.is_live() {
                let action = if leg.state == LegState::Alerting {
                    CallAction::Reject { code: 480 }
                } else {
                    CallAction::Hangup
                };
                leg.link.act(action);
                leg.state = LegState::Disconnected;
                self.live.remove(call);
            }
        }
    }

    /// Drops an unanswered call (the unanswered-call limit): an incoming one
    /// is rejected, an outbound one cancelled.
    pub fn drop_unanswered(&mut self, call: CallId) {
        if let Some(leg) = self.legs.get_mut(&call) {
            leg.link.act(CallAction::Reject { code: 480 });
            leg.state = LegState::Failed;
            self.live.remove(call);
        }
    }
}

impl SessionState {
    /// What the far end of `call` reports back with: the session's queue
    /// and log, and the app's limits and HTTP rules (for prompts).
    pub(crate) fn call_context(&self, call: CallId) -> CallContext {
        CallContext::new(
            call,
            self.calls.events.clone(),
            self.log.clone(),
            Arc::clone(&self.limits),
            Arc::clone(self.http.rules()),
        )
    }

    /// Checks `action` against the call's state and the limits, then hands it
    /// to the telephony side.
    fn call_action(
        &mut self,
        call: &Resource<CallHandle>,
        action: CallAction,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        let id = self.table.get(call)?.id;
        let state = self.calls.legs.get(&id).map(|leg| leg.state);
        let message_limit = self.limits.call_message_bytes;
        let rule = running_only(self.phase(), "calls").and_then(|()| {
            let Some(state) = state else {
                return Err(format!("call {id} is unknown"));
            };
            let allowed = match &action {
                CallAction::Answer | CallAction::Reject { .. } => state == LegState::Alerting,
                CallAction::Hangup => state.is_live(),
                CallAction::Say { .. }
                | CallAction::Play { .. }
                | CallAction::SendMessage { .. } => state == LegState::Connected,
            };
            if !allowed {
                return Err(
                    format!("cannot {} call {id}: it is {state:?}", verb(&action)).to_lowercase(),
                );
            }
            match &action {
                CallAction::Reject { code } if !(400..=699).contains(code) => Err(format!(
                    "a rejection needs a SIP status code from 400 to 699, not {code}"
                )),
                CallAction::SendMessage { text } if text.len() > message_limit => Err(format!(
                    "call messages are limited to {message_limit} bytes (got {})",
                    text.len()
                )),
                _ => Ok(()),
            }
        });
        if let Err(refusal) = self.permit(Capability::Calls, rule) {
            return Ok(Err(refusal));
        }
        let leg = self.calls.legs.get_mut(&id).expect("checked above");
        match action {
            CallAction::Answer => leg.state = LegState::Answering,
            CallAction::Reject { .. } => leg.state = LegState::Failed,
            CallAction::Hangup => leg.state = LegState::Disconnected,
            _ => {}
        }
        if !leg.state.is_live() {
            self.calls.live.remove(id);
        }
        leg.link.act(action);
        Ok(Ok(()))
    }
}

fn verb(action: &CallAction) -> &'static str {
    match action {
        CallAction::Answer => "answer",
        CallAction::Reject { .. } => "reject",
        CallAction::Hangup => "hang up",
        CallAction::Say { .. } => "say on",
        CallAction::Play { .. } => "play on",
        CallAction::SendMessage { .. } => "send a message on",
    }
}

impl calls::Host for SessionState {
    fn dial(
        &mut self,
        number: String,
        options: DialOptions,
    ) -> wasmtime::Result<Result<Resource<CallHandle>, Refusal>> {
        let id = self.calls.next_outbound;
        let mut rule = running_only(self.phase(), "calls").and_then(|()| {
            if let Some(reason) = self.calls.attempt_refused() {
                return Err(reason);
            }
            if number.is_empty() || number.len() > 256 || number.chars().any(char::is_control) {
                return Err(format!("{number:?} is not a number to dial"));
            }
            Ok(())
        });
        let mut link = None;
        if rule.is_ok() {
            let request = DialRequest {
                number,
                caller_id: options.caller_id,
                display_name: options.display_name,
                headers: options.headers,
            };
            match self.calls.dialer.dial(request, self.call_context(id)) {
                Ok(placed) => link = Some(placed),
                Err(reason) => rule = Err(reason),
            }
        }
        if let Err(refusal) = self.permit(Capability::Calls, rule) {
            return Ok(Err(refusal));
        }
        let link = link.expect("a permitted dial has placed its call");
        self.calls.next_outbound -= 1;
        self.calls.attempts += 1;
        self.calls.insert(id, link, LegState::Dialing);
        Ok(Ok(self.table.push(CallHandle { id })?))
    }
}

impl calls::HostCall for SessionState {
    fn id(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<CallId> {
        Ok(self.table.get(&call)?.id)
    }

    fn state(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<CallState> {
        let id = self.table.get(&call)?.id;
        Ok(match self.calls.legs.get(&id).map(|leg| leg.state) {
            Some(LegState::Dialing | LegState::Alerting | LegState::Answering) => {
                CallState::Alerting
            }
            Some(LegState::Connected) => CallState::Connected,
            Some(LegState::Disconnected) => CallState::Disconnected,
            Some(LegState::Failed) | None => CallState::Failed,
        })
    }

    fn answer(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<Result<(), Refusal>> {
        self.call_action(&call, CallAction::Answer)
    }

    fn reject(
        &mut self,
        call: Resource<CallHandle>,
        code: u16,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.call_action(&call, CallAction::Reject { code })
    }

    fn hangup(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<Result<(), Refusal>> {
        self.call_action(&call, CallAction::Hangup)
    }

    fn say(
        &mut self,
        call: Resource<CallHandle>,
        text: String,
        language: Option<String>,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.call_action(&call, CallAction::Say { text, language })
    }

    fn play(
        &mut self,
        call: Resource<CallHandle>,
        url: String,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.call_action(&call, CallAction::Play { url })
    }

    fn send_message(
        &mut self,
        call: Resource<CallHandle>,
        text: String,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.call_action(&call, CallAction::SendMessage { text })
    }

    /// The guest let go of its handle; the call itself carries on.
    fn drop(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<()> {
        self.table.delete(call)?;
        Ok(())
    }
}
