//! `calls`: the calls in a session and the actions a scenario takes on them.
//!
//! The host keeps each call's state; the guest holds `call` resources that
//! name a call by id. Actions go to the call's [`CallLink`] (its far end),
//! whose outcomes come back as [`CallEvent`]s; this capability admits each
//! (an event the call's state does not expect is dropped) and moves the
//! state as it is delivered, so the scenario never sees a state its events
//! have not told it about. Only while running: Terminating ends every call.
//!
//! The `media` interface (0.3.0) is this capability's too: a bridge joins
//! two of these calls, and ends with either ([`media`]).

mod media;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceTableError};

use super::{Common, Factor, Gate, Phases, Refused, SessionContext, WasiStore};
use crate::bindings::scenario::calls::{self, CallState, DialOptions};
use crate::bindings::v0_1::sessionbox::scenario as v0_1;
use crate::bindings::{CallAlertingEvent, CallHandle, CallId, Capability, Refusal};
use crate::destination::HostRule;
use crate::guest::GuestCall;
use crate::limits::Limits;
use crate::log::SessionLog;
use crate::recording::{Recorder, RecordingId, RecordingStore};
use crate::sync::MutexExt;
use crate::telephony::{
    CallAction, CallContext, CallEvent, CallEvents, CallLink, ConnectCall, DialRequest, Dialer,
    IncomingCall, StreamId,
};

const PHASES: Phases = Phases::Running {
    in_terminating: "calls ended when the session began terminating",
};

/// The ids of a session's calls that are not over. Shared by the session's
/// handle, which turns away the far end's actions on any other id, and the
/// calls capability, which knows when a call ends.
#[derive(Default)]
pub struct LiveCalls(Mutex<BTreeSet<CallId>>);

impl LiveCalls {
    fn ids(&self) -> MutexGuard<'_, BTreeSet<CallId>> {
        self.0.locked()
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

pub struct Calls {
    dialer: Arc<dyn Dialer>,
    /// What each call's far end reports back with.
    events: Arc<dyn CallEvents>,
    log: SessionLog,
    limits: Arc<Limits>,
    http_rules: Arc<[HostRule]>,
    /// The same calls, as the session's handle sees them.
    live: Arc<LiveCalls>,
    legs: BTreeMap<CallId, Leg>,
    attempts: usize,
    /// Ids of outbound calls; incoming calls are numbered by the session
    /// handle, from 1 up, so these count down from the top.
    next_outbound: CallId,
    /// Each bridged call's other side (both ways round).
    bridges: BTreeMap<CallId, CallId>,
    /// Recordings in progress.
    recordings: BTreeMap<RecordingId, Arc<Recorder>>,
    /// Recordings started, which numbers them.
    recordings_started: u32,
    /// Streams not yet ended, and their calls.
    streams: BTreeMap<StreamId, CallId>,
    /// Streams started, which numbers them.
    streams_started: u32,
    /// Where the app keeps recordings, if anywhere.
    recording_store: Option<Arc<dyn RecordingStore>>,
    /// The app's speech service, if it has one.
    tts_url: Option<Arc<str>>,
    session_id: String,
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
    /// Calls that are alerting, being answered or connected.
    pub fn live(&self) -> usize {
        self.legs.values().filter(|leg| leg.state.is_live()).count()
    }

    /// The unanswered call (incoming or outbound) that has waited longest,
    /// and when it must be dropped.
    pub fn next_unanswered(&self) -> Option<(Instant, CallId)> {
        let limit = self.limits.unanswered_call;
        self.legs
            .iter()
            .filter(|(_, leg)| matches!(leg.state, LegState::Alerting | LegState::Dialing))
            .map(|(&id, leg)| (leg.alerting_since + limit, id))
            .min()
    }

    /// An incoming call reached the session: CallAlerting, with a handle
    /// for the scenario; or, past the call limits, a 403 to the caller and
    /// a refusal counted (nothing for the scenario). A full resource table
    /// is an error: it ends the session.
    pub fn alerting(
        &mut self,
        call: CallId,
        incoming: IncomingCall,
        connect: ConnectCall,
        common: Common<'_>,
    ) -> Result<Option<GuestCall>, ResourceTableError> {
        let link = connect(self.context(call));
        let ringing = self.limits.calls_ringing;
        let refusal = self.attempt_refused().or_else(|| {
            (self.ringing() >= ringing)
                .then(|| format!("{ringing} calls ringing at once is the limit"))
        });
        if let Some(reason) = refusal {
            // As VoxEngine does.
            link.act(CallAction::Reject { code: 403 });
            self.live.remove(call);
            common.gate.refuse(Capability::Calls, Refused::rule(reason));
            return Ok(None);
        }
        self.attempts += 1;
        self.insert(call, link, LegState::Alerting);
        let handle = common.table.push(CallHandle { id: call })?;
        let event = CallAlertingEvent {
            call: handle,
            caller_id: incoming.caller_id,
            destination: incoming.destination,
            display_name: incoming.display_name,
            headers: incoming.headers,
        };
        Ok(Some(GuestCall::CallAlerting { call, event }))
    }

    /// What the far end of `call` reported, as the scenario sees it: moves
    /// the call's state, or drops an event the state does not expect (a
    /// second end, a tone on a call that is not connected).
    pub fn admit(&mut self, call: CallId, event: CallEvent) -> Option<GuestCall> {
        match event {
            CallEvent::Connected => self
                .on_connected(call)
                .then_some(GuestCall::CallConnected(call)),
            CallEvent::Disconnected => self
                .on_ended(call, false)
                .then_some(GuestCall::CallDisconnected(call)),
            CallEvent::Failed { code, reason } => self
                .on_ended(call, true)
                .then_some(GuestCall::CallFailed { call, code, reason }),
            CallEvent::Message(text) => self
                .is_connected(call)
                .then_some(GuestCall::CallMessageReceived { call, text }),
            CallEvent::Tone(tone) => self
                .is_connected(call)
                .then_some(GuestCall::CallToneReceived { call, tone }),
            CallEvent::PlaybackFinished => self
                .is_connected(call)
                .then_some(GuestCall::CallPlaybackFinished(call)),
            CallEvent::Held(held) => self
                .is_connected(call)
                .then_some(GuestCall::CallHeld { call, held }),
            CallEvent::StreamEnded { stream, reason } => {
                self.streams
                    .remove(&stream)
                    .map(|call| GuestCall::StreamEnded {
                        stream,
                        call,
                        reason,
                    })
            }
            // Told whatever became of the call meanwhile.
            CallEvent::RecordingFinished {
                recording,
                duration,
                error,
            } => {
                // One that ran out of time is still listed as in progress.
                self.end_recording(recording);
                Some(GuestCall::RecordingFinished {
                    recording,
                    call,
                    duration_ms: u32::try_from(duration.as_millis()).unwrap_or(u32::MAX),
                    error,
                })
            }
        }
    }

    /// Drops a call unanswered for the limit (an incoming one is rejected,
    /// an outbound one cancelled): CallFailed 408 for the scenario.
    pub fn unanswered(&mut self, call: CallId) -> GuestCall {
        if let Some(leg) = self.legs.get_mut(&call) {
            leg.link.act(CallAction::Reject { code: 480 });
            leg.state = LegState::Failed;
            self.leg_ended(call);
        }
        self.on_ended(call, true);
        let limit = self.limits.unanswered_call;
        GuestCall::CallFailed {
            call,
            code: 408,
            reason: format!("not answered within {} ms", limit.as_millis()),
        }
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

    /// A call is over host-side: the session's handle forgets it, and its
    /// bridge (if any) ends.
    fn leg_ended(&mut self, call: CallId) {
        self.live.remove(call);
        self.unbridge(call);
        self.stop_recordings_of(call);
    }

    /// Incoming calls not yet answered or ended.
    fn ringing(&self) -> usize {
        self.legs
            .values()
            .filter(|leg| leg.state == LegState::Alerting)
            .count()
    }

    /// Moves a call to connected. False unless the call was waiting for it.
    fn on_connected(&mut self, call: CallId) -> bool {
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
    fn on_ended(&mut self, call: CallId, failed: bool) -> bool {
        match self.legs.get_mut(&call) {
            Some(leg) if !leg.end_delivered => {
                leg.end_delivered = true;
                if leg.state.is_live() {
                    leg.state = if failed {
                        LegState::Failed
                    } else {
                        LegState::Disconnected
                    };
                    self.leg_ended(call);
                }
                true
            }
            _ => false,
        }
    }

    fn is_connected(&self, call: CallId) -> bool {
        self.legs
            .get(&call)
            .is_some_and(|leg| leg.state == LegState::Connected)
    }

    /// What the far end of `call` reports back with.
    fn context(&self, call: CallId) -> CallContext {
        CallContext {
            call,
            events: Arc::clone(&self.events),
            log: self.log.clone(),
            limits: Arc::clone(&self.limits),
            http_rules: Arc::clone(&self.http_rules),
            tts_url: self.tts_url.clone(),
        }
    }

    /// Checks `action` against the call's state and the limits, then hands
    /// it to the far end.
    fn act(&mut self, gate: &Gate, id: CallId, action: CallAction) -> Result<(), Refusal> {
        let state = self.legs.get(&id).map(|leg| leg.state);
        let message_limit = self.limits.call_message_bytes;
        gate.admit(Capability::Calls, PHASES, || {
            let Some(state) = state else {
                return Err(format!("call {id} is unknown"));
            };
            let allowed = match &action {
                CallAction::Answer | CallAction::Reject { .. } => state == LegState::Alerting,
                CallAction::Hangup => state.is_live(),
                CallAction::Say { .. }
                | CallAction::Play { .. }
                | CallAction::SendMessage { .. }
                | CallAction::StartStream { .. }
                | CallAction::StopStream => state == LegState::Connected,
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
        })?;
        let leg = self.legs.get_mut(&id).expect("checked above");
        match action {
            CallAction::Answer => leg.state = LegState::Answering,
            CallAction::Reject { .. } => leg.state = LegState::Failed,
            CallAction::Hangup => leg.state = LegState::Disconnected,
            _ => {}
        }
        let ended = !leg.state.is_live();
        leg.link.act(action);
        if ended {
            self.leg_ended(id);
        }
        Ok(())
    }

    /// Places an outbound call through the dialer.
    fn dial(
        &mut self,
        gate: &Gate,
        number: String,
        options: DialOptions,
    ) -> Result<CallId, Refusal> {
        let id = self.next_outbound;
        let mut link = None;
        gate.admit(Capability::Calls, PHASES, || {
            if let Some(reason) = self.attempt_refused() {
                return Err(reason);
            }
            if number.is_empty() || number.len() > 256 || number.chars().any(char::is_control) {
                return Err(format!("{number:?} is not a number to dial"));
            }
            let request = DialRequest {
                number,
                caller_id: options.caller_id,
                display_name: options.display_name,
                headers: options.headers,
            };
            link = Some(self.dialer.dial(request, self.context(id))?);
            Ok(())
        })?;
        let link = link.expect("a dial that was admitted has placed its call");
        self.next_outbound -= 1;
        self.attempts += 1;
        self.insert(id, link, LegState::Dialing);
        Ok(id)
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
        CallAction::StartStream { .. } | CallAction::StopStream => "stream",
    }
}

pub struct CallsView<'a> {
    calls: &'a mut Calls,
    gate: &'a Gate,
    table: &'a mut ResourceTable,
}

impl HasData for Calls {
    type Data<'a> = CallsView<'a>;
}

impl Factor for Calls {
    type View = Calls;

    fn new(cx: &SessionContext<'_>) -> Self {
        Calls {
            dialer: Arc::clone(cx.dialer),
            events: Arc::clone(cx.call_events),
            log: cx.log.clone(),
            limits: Arc::clone(cx.limits),
            http_rules: Arc::clone(cx.http_rules),
            live: Arc::clone(cx.live_calls),
            legs: BTreeMap::new(),
            attempts: 0,
            next_outbound: CallId::MAX,
            bridges: BTreeMap::new(),
            recordings: BTreeMap::new(),
            recordings_started: 0,
            streams: BTreeMap::new(),
            streams_started: 0,
            recording_store: cx.app.recordings.clone(),
            tts_url: cx.app.tts_url.clone(),
            session_id: cx.id.to_owned(),
        }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> CallsView<'a> {
        CallsView {
            calls: self,
            gate: common.gate,
            table: common.table,
        }
    }

    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> CallsView<'_>,
    ) -> wasmtime::Result<()> {
        calls::add_to_linker::<T, Calls>(linker, get)?;
        crate::bindings::media::add_to_linker::<T, Calls>(linker, get)?;
        v0_1::calls::add_to_linker::<T, Calls>(linker, get)
    }

    /// Ends every live call without telling the scenario (the session's
    /// calls end with it): 480 to one still ringing, BYE (or CANCEL) to
    /// the rest.
    fn terminating(&mut self) {
        let live: Vec<CallId> = (self.legs.iter())
            .filter(|(_, leg)| leg.state.is_live())
            .map(|(&call, _)| call)
            .collect();
        for call in live {
            let leg = self.legs.get_mut(&call).expect("listed above");
            let action = if leg.state == LegState::Alerting {
                CallAction::Reject { code: 480 }
            } else {
                CallAction::Hangup
            };
            leg.link.act(action);
            leg.state = LegState::Disconnected;
            self.leg_ended(call);
        }
    }
}

impl CallsView<'_> {
    fn act(
        &mut self,
        call: &Resource<CallHandle>,
        action: CallAction,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        let id = self.table.get(call)?.id;
        Ok(self.calls.act(self.gate, id, action))
    }
}

impl calls::Host for CallsView<'_> {
    fn dial(
        &mut self,
        number: String,
        options: DialOptions,
    ) -> wasmtime::Result<Result<Resource<CallHandle>, Refusal>> {
        match self.calls.dial(self.gate, number, options) {
            Ok(id) => Ok(Ok(self.table.push(CallHandle { id })?)),
            Err(refusal) => Ok(Err(refusal)),
        }
    }
}

impl calls::HostCall for CallsView<'_> {
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
        self.act(&call, CallAction::Answer)
    }

    fn reject(
        &mut self,
        call: Resource<CallHandle>,
        code: u16,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.act(&call, CallAction::Reject { code })
    }

    fn hangup(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<Result<(), Refusal>> {
        self.act(&call, CallAction::Hangup)
    }

    fn say(
        &mut self,
        call: Resource<CallHandle>,
        text: String,
        language: Option<String>,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.act(&call, CallAction::Say { text, language })
    }

    fn play(
        &mut self,
        call: Resource<CallHandle>,
        url: String,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.act(&call, CallAction::Play { url })
    }

    fn send_message(
        &mut self,
        call: Resource<CallHandle>,
        text: String,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.act(&call, CallAction::SendMessage { text })
    }

    /// The guest let go of its handle; the call itself carries on.
    fn drop(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<()> {
        self.table.delete(call)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Phase;
    use crate::capabilities::fixture::Fixture;
    use crate::sync::MutexExt;
    use crate::telephony::InProcessLink;

    /// A far end that keeps the actions it was asked for.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<CallAction>>>);

    impl CallLink for Recorded {
        fn act(&self, action: CallAction) {
            self.0.locked().push(action);
        }
    }

    impl Recorded {
        fn connect(&self) -> ConnectCall {
            let link = self.clone();
            Box::new(move |_| Box::new(link))
        }

        fn take(&self) -> Vec<CallAction> {
            std::mem::take(&mut self.0.locked())
        }
    }

    fn in_process() -> ConnectCall {
        Box::new(|context| Box::new(InProcessLink(context)))
    }

    struct Session {
        fixture: Fixture,
        calls: Calls,
        gate: Gate,
        table: ResourceTable,
    }

    impl Session {
        fn new(limits: Limits) -> Self {
            let fixture = Fixture::new(limits);
            Session {
                calls: Calls::new(&fixture.context()),
                gate: fixture.gate(),
                table: ResourceTable::new(),
                fixture,
            }
        }

        fn ring(&mut self, call: CallId, connect: ConnectCall) -> Option<GuestCall> {
            let common = Common {
                gate: &mut self.gate,
                table: &mut self.table,
            };
            let incoming = IncomingCall::default();
            self.calls
                .alerting(call, incoming, connect, common)
                .unwrap()
        }

        fn act(&mut self, call: CallId, action: CallAction) -> Result<(), String> {
            let acted = self.calls.act(&self.gate, call, action);
            acted.map_err(|refusal| refusal.reason)
        }

        /// Call 1, answered and connected as the scenario sees it.
        fn connected() -> Self {
            let mut session = Session::new(Limits::default());
            session.ring(1, in_process());
            session.act(1, CallAction::Answer).unwrap();
            session.calls.admit(1, CallEvent::Connected).unwrap();
            session.fixture.received.take();
            session
        }
    }

    #[test]
    fn an_incoming_call_moves_only_as_its_events_are_delivered() {
        let mut session = Session::new(Limits::default());
        let alerting = session.ring(1, in_process());
        assert!(matches!(
            alerting,
            Some(GuestCall::CallAlerting { call: 1, .. })
        ));
        assert!(session.fixture.live_calls.contains(1));
        let calls = &mut session.calls;
        assert!(
            calls.admit(1, CallEvent::Tone("5".into())).is_none(),
            "a tone before the call connects is not for the scenario"
        );

        session.act(1, CallAction::Answer).unwrap();
        assert_eq!(session.fixture.received.take(), [(1, CallEvent::Connected)]);
        let calls = &mut session.calls;
        assert!(!calls.is_connected(1), "not until the scenario hears of it");
        let connected = calls.admit(1, CallEvent::Connected);
        assert!(matches!(connected, Some(GuestCall::CallConnected(1))));
        assert!(calls.admit(1, CallEvent::Connected).is_none(), "only once");

        session.act(1, CallAction::Hangup).unwrap();
        assert!(!session.fixture.live_calls.contains(1));
        assert_eq!(
            session.fixture.received.take(),
            [(1, CallEvent::Disconnected)]
        );
        let calls = &mut session.calls;
        let ended = calls.admit(1, CallEvent::Disconnected);
        assert!(matches!(ended, Some(GuestCall::CallDisconnected(1))));
        assert!(
            calls
                .admit(
                    1,
                    CallEvent::Failed {
                        code: 500,
                        reason: String::new()
                    }
                )
                .is_none()
        );
        assert_eq!(session.fixture.ledger.meter_now().uses["calls"], 2);
    }

    #[test]
    fn each_action_is_checked_against_the_call_state() {
        let say = || CallAction::Say {
            text: "hi".into(),
            language: None,
        };
        let long = "x".repeat(Limits::default().call_message_bytes + 1);
        let alerting = || {
            let mut session = Session::new(Limits::default());
            session.ring(1, in_process());
            session
        };
        let disconnected = || {
            let mut session = Session::connected();
            session.act(1, CallAction::Hangup).unwrap();
            session
        };
        type Case = (
            &'static str,
            fn() -> Session,
            CallAction,
            Result<(), String>,
        );
        let cases: Vec<Case> = vec![
            ("alerting", alerting, CallAction::Answer, Ok(())),
            (
                "alerting",
                alerting,
                CallAction::Reject { code: 486 },
                Ok(()),
            ),
            (
                "alerting",
                alerting,
                CallAction::Reject { code: 200 },
                Err("a rejection needs a SIP status code from 400 to 699, not 200".into()),
            ),
            (
                "alerting",
                alerting,
                say(),
                Err("cannot say on call 1: it is alerting".into()),
            ),
            ("alerting", alerting, CallAction::Hangup, Ok(())),
            (
                "connected",
                Session::connected,
                CallAction::Answer,
                Err("cannot answer call 1: it is connected".into()),
            ),
            ("connected", Session::connected, say(), Ok(())),
            (
                "connected",
                Session::connected,
                CallAction::SendMessage { text: long.clone() },
                Err(format!(
                    "call messages are limited to {} bytes (got {})",
                    long.len() - 1,
                    long.len()
                )),
            ),
            ("connected", Session::connected, CallAction::Hangup, Ok(())),
            (
                "disconnected",
                disconnected,
                CallAction::Hangup,
                Err("cannot hang up call 1: it is disconnected".into()),
            ),
        ];
        for (state, session, action, expected) in cases {
            let described = format!("{action:?} on a call {state}");
            assert_eq!(session().act(1, action), expected, "{described}");
        }
        assert_eq!(
            alerting().act(9, CallAction::Answer),
            Err("call 9 is unknown".into())
        );
    }

    #[test]
    fn a_call_past_the_ringing_limit_is_rejected_and_the_refusal_booked() {
        let limits = Limits {
            calls_ringing: 1,
            ..Limits::default()
        };
        let mut session = Session::new(limits);
        let (first, second) = (Recorded::default(), Recorded::default());
        assert!(session.ring(1, first.connect()).is_some());
        assert!(session.ring(2, second.connect()).is_none());
        assert_eq!(second.take(), [CallAction::Reject { code: 403 }]);
        assert!(!session.fixture.live_calls.contains(2));
        let meter = session.fixture.ledger.meter_now();
        assert_eq!(meter.refusals["calls"]["running"], 1);
        assert_eq!(
            session.fixture.log_lines(),
            ["calls refused in running: 1 calls ringing at once is the limit"]
        );
        assert!(first.take().is_empty(), "the first call rings on");
    }

    #[test]
    fn terminating_ends_every_live_call_and_refuses_what_follows() {
        let mut session = Session::new(Limits::default());
        let (ringing, connected) = (Recorded::default(), Recorded::default());
        session.ring(1, ringing.connect());
        session.ring(2, connected.connect());
        session.act(2, CallAction::Answer).unwrap();
        session.calls.admit(2, CallEvent::Connected).unwrap();
        connected.take();

        session.gate.set_phase(Phase::Terminating);
        session.calls.terminating();
        assert_eq!(ringing.take(), [CallAction::Reject { code: 480 }]);
        assert_eq!(connected.take(), [CallAction::Hangup]);
        assert_eq!(session.calls.live(), 0);
        assert!(!session.fixture.live_calls.contains(1));
        assert_eq!(
            session.act(2, CallAction::Hangup),
            Err("calls ended when the session began terminating".into())
        );
    }

    /// A far end whose bridges are kept: the port each relay went to (None:
    /// relaying to nothing), by address.
    #[derive(Clone)]
    struct Bridged {
        port: Arc<dyn crate::telephony::MediaPort>,
        relays: Arc<Mutex<Vec<Option<usize>>>>,
    }

    struct Port;

    impl crate::telephony::MediaPort for Port {
        fn relay(&self, _: &crate::telephony::MediaFrame<'_>) {}
    }

    /// Where a port is, to tell which call's it is.
    fn address(port: &Arc<dyn crate::telephony::MediaPort>) -> usize {
        Arc::as_ptr(port) as *const () as usize
    }

    impl Bridged {
        fn new() -> Self {
            Bridged {
                port: Arc::new(Port),
                relays: Arc::default(),
            }
        }

        /// The relays so far, each as the number (from 1) of the link in
        /// `links` whose port it went to.
        fn relays(&self, links: &[Bridged]) -> Vec<Option<usize>> {
            let index = |at: usize| links.iter().position(|l| address(&l.port) == at).unwrap() + 1;
            self.relays
                .locked()
                .iter()
                .map(|at| at.map(index))
                .collect()
        }
    }

    impl CallLink for Bridged {
        fn act(&self, _: CallAction) {}

        fn media_port(&self) -> Option<Arc<dyn crate::telephony::MediaPort>> {
            Some(Arc::clone(&self.port))
        }

        fn relay_to(&self, port: Option<Arc<dyn crate::telephony::MediaPort>>) {
            self.relays.locked().push(port.as_ref().map(address));
        }
    }

    impl Session {
        /// `count` more calls (numbered on from the last), far ends that
        /// keep their bridges, connected if `connect`.
        fn ring_bridgeable(&mut self, count: CallId, connect: bool) -> Vec<Bridged> {
            let first = self.calls.legs.len() as CallId + 1;
            (first..first + count)
                .map(|call| {
                    let link = Bridged::new();
                    let far_end = link.clone();
                    self.ring(call, Box::new(move |_| Box::new(far_end)));
                    if connect {
                        self.act(call, CallAction::Answer).unwrap();
                        self.calls.admit(call, CallEvent::Connected).unwrap();
                    }
                    link
                })
                .collect()
        }
    }

    #[test]
    fn bridges_join_two_connected_calls_and_end_with_either() {
        let mut session = Session::new(Limits::default());
        // Calls 1 to 3 connected, 4 ringing.
        let mut links = session.ring_bridgeable(3, true);
        links.extend(session.ring_bridgeable(1, false));
        let connect = |session: &mut Session, a, b| {
            let connected = session.calls.connect(&session.gate, a, b);
            connected.map_err(|refusal| refusal.reason)
        };
        assert_eq!(
            connect(&mut session, 1, 1).unwrap_err(),
            "call 1 cannot be connected to itself"
        );
        assert_eq!(
            connect(&mut session, 1, 9).unwrap_err(),
            "call 9 is unknown"
        );
        assert_eq!(
            connect(&mut session, 1, 4).unwrap_err(),
            "cannot connect call 4: it is alerting"
        );
        connect(&mut session, 1, 2).unwrap();
        assert_eq!(links[0].relays(&links), [Some(2)], "1 relays to 2");
        assert_eq!(links[1].relays(&links), [Some(1)], "and 2 to 1");
        // No chains: a bridged call is in one bridge only.
        assert_eq!(
            connect(&mut session, 2, 3).unwrap_err(),
            "call 2 is already connected to call 1; disconnect it first"
        );
        let disconnected = session.calls.disconnect(&session.gate, 3);
        assert_eq!(
            disconnected.unwrap_err().reason,
            "call 3 is not connected to another call"
        );

        // Call 2's far end hangs up: the bridge ends, on both sides.
        session.calls.admit(2, CallEvent::Disconnected).unwrap();
        assert_eq!(links[0].relays(&links), [Some(2), None]);
        assert_eq!(links[1].relays(&links), [Some(1), None]);
        assert_eq!(
            connect(&mut session, 1, 2).unwrap_err(),
            "cannot connect call 2: it is disconnected"
        );

        // The scenario's own hangup and disconnect end a bridge too.
        connect(&mut session, 1, 3).unwrap();
        session.calls.disconnect(&session.gate, 3).unwrap();
        assert_eq!(links[2].relays(&links), [Some(1), None]);
        connect(&mut session, 3, 1).unwrap();
        session.act(3, CallAction::Hangup).unwrap();
        assert_eq!(links[0].relays.locked().last(), Some(&None));
        assert_eq!(session.fixture.ledger.meter_now().refused("calls"), 6);
    }

    #[test]
    fn terminating_ends_the_sessions_bridges() {
        let mut session = Session::new(Limits::default());
        let links = session.ring_bridgeable(2, true);
        session.calls.connect(&session.gate, 1, 2).unwrap();
        session.calls.terminating();
        for link in &links {
            assert_eq!(link.relays.locked().last(), Some(&None));
        }
        assert!(session.calls.bridges.is_empty());
    }

    /// Recordings kept in memory.
    #[derive(Default)]
    struct Kept(Mutex<Vec<crate::recording::Recording>>);

    impl RecordingStore for Kept {
        fn keep(
            &self,
            _session: &str,
            recording: crate::recording::Recording,
            _app_bytes: u64,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        {
            self.0.locked().push(recording);
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn options(max_seconds: u32) -> crate::bindings::media::RecordingOptions {
        crate::bindings::media::RecordingOptions {
            stereo: false,
            max_seconds,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn recordings_are_limited_and_end_by_themselves() {
        let limits = Limits {
            recording_max_duration: std::time::Duration::from_secs(2),
            recordings_per_session: 2,
            ..Limits::default()
        };
        let mut fixture = Fixture::new(limits);
        let kept = Arc::new(Kept::default());
        fixture.app.recordings = Some(Arc::clone(&kept) as Arc<dyn RecordingStore>);
        let mut session = Session {
            calls: Calls::new(&fixture.context()),
            gate: fixture.gate(),
            table: ResourceTable::new(),
            fixture,
        };
        session.ring(1, in_process());
        let record = |session: &mut Session, call, max| {
            let started = session
                .calls
                .start_recording(&session.gate, call, options(max));
            started.map_err(|refusal| refusal.reason)
        };
        assert_eq!(
            record(&mut session, 1, 60).unwrap_err(),
            "cannot record call 1: it is alerting"
        );
        session.act(1, CallAction::Answer).unwrap();
        session.calls.admit(1, CallEvent::Connected).unwrap();
        session.fixture.received.take();
        assert_eq!(
            record(&mut session, 1, 0).unwrap_err(),
            "a recording needs a max-seconds above 0"
        );

        // "Forever" is cut to the app's longest, after which it ends and
        // is kept by itself.
        assert_eq!(record(&mut session, 1, u32::MAX), Ok(1));
        assert_eq!(
            record(&mut session, 1, 60).unwrap_err(),
            "call 1 is already being recorded (recording 1)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        let finished = session.fixture.received.take();
        let [(1, event)] = &finished[..] else {
            panic!("{finished:?}");
        };
        assert_eq!(
            *event,
            CallEvent::RecordingFinished {
                recording: 1,
                duration: std::time::Duration::from_secs(2),
                error: None
            }
        );
        let delivered = session.calls.admit(1, event.clone());
        assert!(matches!(
            delivered,
            Some(GuestCall::RecordingFinished { recording: 1, .. })
        ));
        assert_eq!(kept.0.locked().len(), 1);

        // The call may be recorded again, as the session's limit allows.
        assert_eq!(record(&mut session, 1, 60), Ok(2));
        session.calls.stop_recording(&session.gate, 2).unwrap();
        assert_eq!(
            session
                .calls
                .stop_recording(&session.gate, 2)
                .unwrap_err()
                .reason,
            "recording 2 is not in progress"
        );
        assert_eq!(
            record(&mut session, 1, 60).unwrap_err(),
            "2 recordings per session is the limit"
        );
    }

    #[test]
    fn without_a_store_recording_is_refused() {
        let mut session = Session::connected();
        let refused = session.calls.start_recording(&session.gate, 1, options(60));
        assert_eq!(refused.unwrap_err().reason, "this node keeps no recordings");
    }

    #[test]
    fn streams_are_checked_and_exclude_bridges() {
        let limits = Limits {
            streams_per_session: 2,
            ..Limits::default()
        };
        let mut session = Session::new(limits);
        let rule = crate::destination::HostRule::parse("media.example").unwrap();
        session.calls.http_rules = Arc::from([rule]);
        session.ring_bridgeable(2, true);
        let stream = |session: &mut Session, call, url: &str| {
            let started = session
                .calls
                .start_stream(&session.gate, call, url.into(), vec![]);
            started.map_err(|refusal| refusal.reason)
        };
        assert_eq!(
            stream(&mut session, 1, "https://media.example/").unwrap_err(),
            "streams go to ws:// or wss:// URLs, not \"https://media.example/\""
        );
        assert_eq!(
            stream(&mut session, 1, "wss://elsewhere.example/").unwrap_err(),
            "elsewhere.example is not in the app's http_allow list"
        );
        assert_eq!(stream(&mut session, 1, "wss://media.example/ai"), Ok(1));
        assert_eq!(
            stream(&mut session, 1, "wss://media.example/ai").unwrap_err(),
            "call 1 is already streaming (stream 1)"
        );
        let connected = session.calls.connect(&session.gate, 2, 1);
        assert_eq!(
            connected.unwrap_err().reason,
            "call 1 is streaming (stream 1): a call that streams cannot be connected to another"
        );
        // Its end (reported by the far end) frees the call.
        let ended = CallEvent::StreamEnded {
            stream: 1,
            reason: "the server closed it".into(),
        };
        assert!(matches!(
            session.calls.admit(1, ended.clone()),
            Some(GuestCall::StreamEnded {
                stream: 1,
                call: 1,
                ..
            })
        ));
        assert!(session.calls.admit(1, ended).is_none(), "once");
        session.calls.connect(&session.gate, 1, 2).unwrap();
        assert_eq!(
            stream(&mut session, 2, "wss://media.example/ai").unwrap_err(),
            "call 2 is connected to call 1: a connected call cannot stream"
        );
        session.calls.disconnect(&session.gate, 1).unwrap();
        assert_eq!(stream(&mut session, 2, "wss://media.example/ai"), Ok(2));
        assert_eq!(
            stream(&mut session, 1, "wss://media.example/ai").unwrap_err(),
            "2 streams per session is the limit"
        );
    }
}
