//! `media` (0.3.0): bridges between two calls of a session. The host keeps
//! which call is bridged to which; the calls' far ends relay the audio
//! between themselves ([`CallLink::relay_to`]), so a relayed packet never
//! passes through the session.

use wasmtime::component::Resource;

use super::{Calls, CallsView, LegState, PHASES};
use crate::bindings::media;
use crate::bindings::{CallHandle, CallId, Capability, Refusal};
use crate::capabilities::Gate;

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
}
