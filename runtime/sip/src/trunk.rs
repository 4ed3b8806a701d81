//! Outbound calls through a SIP trunk: an INVITE with our SDP offer to the
//! trunk's address, digest authentication when the trunk asks for it.

use std::sync::Arc;

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::{Header, HostWithPort, Transport, Uri};
use rsipstack::transport::SipAddr;
use serde::Deserialize;

use super::SipEndpoint;
use super::call::{Direction, SipCall};
use super::sdp::{self, Codec, MediaDirection, TELEPHONE_EVENT};
use sessionbox_host::telephony::{CallContext, CallLink, DialRequest, Dialer};

/// Where outbound calls go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// `host:port` of the trunk (a provider, a PBX, a SIP proxy).
    pub address: String,
    /// `udp` (the default) or `tcp`.
    #[serde(default = "udp")]
    pub transport: String,
    /// For digest authentication, and the caller when a call names none.
    pub username: Option<String>,
    pub password: Option<String>,
}

fn udp() -> String {
    "udp".into()
}

/// Places the scenarios' outbound calls through a [`Trunk`].
pub struct TrunkDialer {
    sip: Arc<SipEndpoint>,
    trunk: Trunk,
    destination: SipAddr,
}

impl TrunkDialer {
    pub fn new(sip: Arc<SipEndpoint>, trunk: Trunk) -> anyhow::Result<TrunkDialer> {
        let transport = match trunk.transport.as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other => anyhow::bail!("sip.trunk.transport: {other:?} is neither udp nor tcp"),
        };
        let address = HostWithPort::try_from(trunk.address.as_str())
            .map_err(|e| anyhow::anyhow!("sip.trunk.address {:?}: {e}", trunk.address))?;
        Ok(TrunkDialer {
            sip,
            destination: SipAddr::new(transport, address),
            trunk,
        })
    }

    fn uri(&self, user: &str) -> Result<Uri, String> {
        Uri::try_from(format!("sip:{user}@{}", self.trunk.address).as_str())
            .map_err(|e| format!("{user:?} does not make a SIP address: {e}"))
    }
}

impl Dialer for TrunkDialer {
    fn dial(
        &self,
        request: DialRequest,
        context: CallContext,
    ) -> Result<Box<dyn CallLink>, String> {
        let mut headers = Vec::new();
        for header in request.headers {
            let name_ok = header.name.len() > 2
                && header.name[..2].eq_ignore_ascii_case("x-")
                && header
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !name_ok {
                return Err(format!(
                    "custom headers are named X-…; {:?} is not",
                    header.name
                ));
            }
            if header.value.chars().any(char::is_control) {
                return Err(format!("header {} has control characters", header.name));
            }
            headers.push(Header::Other(header.name, header.value));
        }
        let caller = request
            .caller_id
            .or_else(|| self.trunk.username.clone())
            .unwrap_or_else(|| "sessionbox".into());
        // Our offer is on our own address family.
        let rtp = self
            .sip
            .rtp(false)
            .map_err(|e| format!("no RTP socket for the call: {e}"))?;
        let offer = sdp::describe(
            rtp.advertised(),
            &[Codec::Pcmu, Codec::Pcma],
            TELEPHONE_EVENT,
            MediaDirection::SendRecv,
        );
        let credential = self.trunk.password.as_ref().map(|password| Credential {
            username: self
                .trunk
                .username
                .clone()
                .unwrap_or_else(|| caller.clone()),
            password: password.clone(),
            ..Default::default()
        });
        let invite = InviteOption {
            caller_display_name: request.display_name,
            caller: self.uri(&caller)?,
            callee: self.uri(&request.number)?,
            destination: Some(self.destination.clone()),
            content_type: Some("application/sdp".into()),
            offer: Some(offer),
            contact: self.sip.contact(),
            credential,
            headers: Some(headers),
            ..Default::default()
        };
        let layer = Arc::clone(&self.sip.layer);
        let (states_tx, states) = layer.new_dialog_state_channel();
        let (dialog, answer) = layer
            .do_invite_async(invite, states_tx)
            .map_err(|e| format!("the call could not be placed: {e}"))?;
        let call = SipCall {
            dialog,
            layer,
            states,
            rtp,
            direction: Direction::Outbound(answer),
        };
        Ok(Box::new(call.start(context)))
    }
}
