//! `media` (0.3.0): bridges between two calls of a session, call
//! recordings, and calls' audio streamed to WebSocket servers. The host keeps which call is bridged to which; the calls'
//! far ends relay the audio between themselves ([`CallLink::relay_to`]),
//! so a relayed packet never passes through the session. A recording is a
//! [`Recorder`] the call's media feeds ([`CallLink::record`]). A stream is
//! the call's far end's to run (`CallAction::StartStream`); it reports its
//! end as a call event.
//!
//! [`CallLink::relay_to`]: crate::telephony::CallLink::relay_to
//! [`CallLink::record`]: crate::telephony::CallLink::record

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Resource;

use super::{Calls, CallsView, LegState, PHASES};
use crate::bindings::media::{self, RecordingOptions};
use crate::bindings::{CallHandle, CallId, Capability, Header, Refusal};
use crate::capabilities::Gate;
use crate::destination;
use crate::recording::{Destination, Recorder, RecordingId};
use crate::telephony::{CallAction, StreamId};

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
                if let Some(stream) = self.stream_of(call) {
                    return Err(format!(
                        "call {call} is streaming (stream {stream}): a call that streams \
                         cannot be connected to another"
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

impl Calls {
    /// The stream `call` has, if any.
    fn stream_of(&self, call: CallId) -> Option<StreamId> {
        (self.streams.iter()).find_map(|(&stream, &of)| (of == call).then_some(stream))
    }

    /// Starts streaming `call`'s audio to `url`.
    pub(super) fn start_stream(
        &mut self,
        gate: &Gate,
        call: CallId,
        url: String,
        parameters: Vec<Header>,
    ) -> Result<StreamId, Refusal> {
        let limits = &self.limits;
        gate.admit(Capability::Calls, PHASES, || {
            match self.legs.get(&call).map(|leg| leg.state) {
                None => return Err(format!("call {call} is unknown")),
                Some(LegState::Connected) => {}
                Some(state) => {
                    return Err(
                        format!("cannot stream call {call}: it is {state:?}").to_lowercase()
                    );
                }
            }
            if let Some(stream) = self.stream_of(call) {
                return Err(format!(
                    "call {call} is already streaming (stream {stream})"
                ));
            }
            if let Some(other) = self.bridges.get(&call) {
                return Err(format!(
                    "call {call} is connected to call {other}: a connected call cannot stream"
                ));
            }
            if self.streams_started as usize >= limits.streams_per_session {
                return Err(format!(
                    "{} streams per session is the limit",
                    limits.streams_per_session
                ));
            }
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
            let scheme = uri.scheme_str().unwrap_or_default();
            let tls = match scheme {
                "ws" => false,
                "wss" => true,
                _ => return Err(format!("streams go to ws:// or wss:// URLs, not {url:?}")),
            };
            let host = uri.host().unwrap_or_default();
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            if !destination::allowed(&self.http_rules, scheme, host, port) {
                return Err(format!("{host} is not in the app's http_allow list"));
            }
            Ok(())
        })?;
        self.streams_started += 1;
        let stream = self.streams_started;
        self.streams.insert(stream, call);
        let parameters = (parameters.into_iter())
            .map(|header| (header.name, header.value))
            .collect();
        self.legs[&call].link.act(CallAction::StartStream {
            stream,
            url,
            parameters,
        });
        Ok(stream)
    }

    /// Ends stream `stream`; `stream-ended` follows.
    pub(super) fn stop_stream(&mut self, gate: &Gate, stream: StreamId) -> Result<(), Refusal> {
        let call = self.streams.get(&stream).copied();
        gate.admit(Capability::Calls, PHASES, || match call {
            Some(_) => Ok(()),
            None => Err(format!("stream {stream} is not running")),
        })?;
        if let Some(leg) = call.and_then(|call| self.legs.get(&call)) {
            leg.link.act(CallAction::StopStream);
        }
        Ok(())
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

    fn start_stream(
        &mut self,
        call: Resource<CallHandle>,
        url: String,
        parameters: Vec<Header>,
    ) -> wasmtime::Result<Result<StreamId, Refusal>> {
        let call = self.id(&call)?;
        Ok(self.calls.start_stream(self.gate, call, url, parameters))
    }

    fn stop_stream(&mut self, id: StreamId) -> wasmtime::Result<Result<(), Refusal>> {
        Ok(self.calls.stop_stream(self.gate, id))
    }
}
