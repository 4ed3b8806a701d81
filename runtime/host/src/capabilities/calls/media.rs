//! `media` (0.3.0): bridges between two calls of a session, and call
//! recordings. The host keeps which call is bridged to which; the calls'
//! far ends relay the audio between themselves ([`CallLink::relay_to`]),
//! so a relayed packet never passes through the session. A recording is a
//! [`Recorder`] the call's media feeds ([`CallLink::record`]).
//!
//! [`CallLink::relay_to`]: crate::telephony::CallLink::relay_to
//! [`CallLink::record`]: crate::telephony::CallLink::record

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Resource;

use super::{Calls, CallsView, LegState, PHASES};
use crate::bindings::media::{self, RecordingOptions};
use crate::bindings::{CallHandle, CallId, Capability, Refusal};
use crate::capabilities::Gate;
use crate::recording::{Destination, Recorder, RecordingId};

impl Calls {
    /// Bridges `a` and `b`, both connected and neither bridged already.
    pub(super) fn connect(&mut self, gate: &Gate, a: CallId, b: CallId) -> Result<(), Refusal> {
        gate.admit(Capability::Calls, PHASES, || {
            if a == b {
                return Err(format!("call {a} cannot be connected to itself"));
            }
            for call in [a, b] {
                match self.legs.get(&call).map(|leg| leg.state) {
                    None => return Err(format!("call {call} is unknown")),
                    Some(LegState::Connected) => {}
                    Some(state) => {
                        return Err(
                            format!("cannot connect call {call}: it is {state:?}").to_lowercase()
                        );
                    }
                }
                if let Some(other) = self.bridges.get(&call) {
                    return Err(format!(
                        "call {call} is already connected to call {other}; disconnect it first"
                    ));
                }
            }
            Ok(())
        })?;
        let (leg_a, leg_b) = (&self.legs[&a], &self.legs[&b]);
        leg_a.link.relay_to(leg_b.link.media_port());
        leg_b.link.relay_to(leg_a.link.media_port());
        self.bridges.insert(a, b);
        self.bridges.insert(b, a);
        self.log.write(
            crate::log::LogSource::Host,
            &format!("calls {a} and {b} are connected"),
        );
        Ok(())
    }

    /// Ends the bridge `call` is in.
    pub(super) fn disconnect(&mut self, gate: &Gate, call: CallId) -> Result<(), Refusal> {
        gate.admit(Capability::Calls, PHASES, || {
            if self.bridges.contains_key(&call) {
                Ok(())
            } else {
                Err(format!("call {call} is not connected to another call"))
            }
        })?;
        self.unbridge(call);
        Ok(())
    }

    /// Ends the bridge `call` is in, if it is in one: neither side relays
    /// any more.
    pub(super) fn unbridge(&mut self, call: CallId) {
        let Some(other) = self.bridges.remove(&call) else {
            return;
        };
        self.bridges.remove(&other);
        for id in [call, other] {
            if let Some(leg) = self.legs.get(&id) {
                leg.link.relay_to(None);
            }
        }
        self.log.write(
            crate::log::LogSource::Host,
            &format!("calls {call} and {other} are no longer connected"),
        );
    }
}

impl Calls {
    /// Starts recording `call`: numbered from 1 in the session.
    pub(super) fn start_recording(
        &mut self,
        gate: &Gate,
        call: CallId,
        options: RecordingOptions,
    ) -> Result<RecordingId, Refusal> {
        let limits = &self.limits;
        gate.admit(Capability::Calls, PHASES, || {
            if self.recording_store.is_none() {
                return Err("this node keeps no recordings".to_owned());
            }
            match self.legs.get(&call).map(|leg| leg.state) {
                None => return Err(format!("call {call} is unknown")),
                Some(LegState::Connected) => {}
                Some(state) => {
                    return Err(
                        format!("cannot record call {call}: it is {state:?}").to_lowercase()
                    );
                }
            }
            if let Some(recording) = self.recordings.values().find(|r| r.call() == call) {
                return Err(format!(
                    "call {call} is already being recorded (recording {})",
                    recording.id()
                ));
            }
            if self.recordings_started as usize >= limits.recordings_per_session {
                return Err(format!(
                    "{} recordings per session is the limit",
                    limits.recordings_per_session
                ));
            }
            if options.max_seconds == 0 {
                return Err("a recording needs a max-seconds above 0".to_owned());
            }
            Ok(())
        })?;
        let store = self.recording_store.clone().expect("checked above");
        self.recordings_started += 1;
        let id = self.recordings_started;
        let max =
            Duration::from_secs(options.max_seconds.into()).min(limits.recording_max_duration);
        let destination = Destination {
            store,
            session: self.session_id.clone(),
            app_bytes: limits.recording_bytes,
            events: Arc::clone(&self.events),
        };
        let recorder = Arc::new(Recorder::new(id, call, options.stereo, max, destination));
        self.legs[&call].link.record(Some(Arc::clone(&recorder)));
        // Its time up, it ends by itself (unless it ended before).
        let timed = Arc::downgrade(&recorder);
        tokio::spawn(async move {
            tokio::time::sleep(max).await;
            if let Some(recorder) = timed.upgrade() {
                recorder.finish();
            }
        });
        self.recordings.insert(id, recorder);
        self.log.write(
            crate::log::LogSource::Host,
            &format!(
                "call {call}: recording {id} started (at most {} s)",
                max.as_secs()
            ),
        );
        Ok(id)
    }

    /// Ends recording `id`, which is kept.
    pub(super) fn stop_recording(&mut self, gate: &Gate, id: RecordingId) -> Result<(), Refusal> {
        gate.admit(Capability::Calls, PHASES, || {
            if self.recordings.contains_key(&id) {
                Ok(())
            } else {
                Err(format!("recording {id} is not in progress"))
            }
        })?;
        self.end_recording(id);
        Ok(())
    }

    /// Ends every recording of `call` (it ended).
    pub(super) fn stop_recordings_of(&mut self, call: CallId) {
        let ids: Vec<RecordingId> = (self.recordings.iter())
            .filter(|(_, recorder)| recorder.call() == call)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.end_recording(id);
        }
    }

    pub(super) fn end_recording(&mut self, id: RecordingId) {
        if let Some(recorder) = self.recordings.remove(&id) {
            if let Some(leg) = self.legs.get(&recorder.call()) {
                leg.link.record(None);
            }
            recorder.finish();
        }
    }
}

impl CallsView<'_> {
    fn id(&self, call: &Resource<CallHandle>) -> wasmtime::Result<CallId> {
        Ok(self.table.get(call)?.id)
    }
}

impl media::Host for CallsView<'_> {
    fn connect(
        &mut self,
        a: Resource<CallHandle>,
        b: Resource<CallHandle>,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        let (a, b) = (self.id(&a)?, self.id(&b)?);
        Ok(self.calls.connect(self.gate, a, b))
    }

    fn disconnect(&mut self, call: Resource<CallHandle>) -> wasmtime::Result<Result<(), Refusal>> {
        let call = self.id(&call)?;
        Ok(self.calls.disconnect(self.gate, call))
    }

    fn start_recording(
        &mut self,
        call: Resource<CallHandle>,
        options: RecordingOptions,
    ) -> wasmtime::Result<Result<RecordingId, Refusal>> {
        let call = self.id(&call)?;
        Ok(self.calls.start_recording(self.gate, call, options))
    }

    fn stop_recording(&mut self, id: RecordingId) -> wasmtime::Result<Result<(), Refusal>> {
        Ok(self.calls.stop_recording(self.gate, id))
    }
}
