//! SDP, as far as a G.711 voice call needs it: where the far end wants its
//! audio, which codecs it takes, and our offer or answer.

use std::net::{IpAddr, SocketAddr};

pub use sessionbox_host::telephony::Codec;

/// A G.711 codec's static RTP payload type.
pub fn payload_type(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 8,
    }
}

fn codec_of(payload_type: u8) -> Option<Codec> {
    match payload_type {
        0 => Some(Codec::Pcmu),
        8 => Some(Codec::Pcma),
        _ => None,
    }
}

fn name(codec: Codec) -> &'static str {
    match codec {
        Codec::Pcmu => "PCMU",
        Codec::Pcma => "PCMA",
    }
}

/// The payload type we offer for RFC 4733 telephone events.
pub const TELEPHONE_EVENT: u8 = 101;

/// Which ways audio flows, as an SDP attribute says it (RFC 3264).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaDirection {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl MediaDirection {
    fn from_attribute(attribute: &str) -> Option<MediaDirection> {
        Some(match attribute {
            "sendrecv" => MediaDirection::SendRecv,
            "sendonly" => MediaDirection::SendOnly,
            "recvonly" => MediaDirection::RecvOnly,
            "inactive" => MediaDirection::Inactive,
            _ => return None,
        })
    }

    fn attribute(self) -> &'static str {
        match self {
            MediaDirection::SendRecv => "sendrecv",
            MediaDirection::SendOnly => "sendonly",
            MediaDirection::RecvOnly => "recvonly",
            MediaDirection::Inactive => "inactive",
        }
    }

    /// The direction that answers this one.
    pub fn answer(self) -> MediaDirection {
        match self {
            MediaDirection::SendOnly => MediaDirection::RecvOnly,
            MediaDirection::RecvOnly => MediaDirection::SendOnly,
            direction => direction,
        }
    }

    /// Whether the far end, offering this, takes no audio from us: the
    /// call is on hold.
    pub fn holds(self) -> bool {
        matches!(self, MediaDirection::SendOnly | MediaDirection::Inactive)
    }
}

/// The far end's audio, from its offer or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAudio {
    /// Where to send RTP.
    pub addr: SocketAddr,
    /// The first G.711 codec the far end listed (its preference).
    pub codec: Codec,
    /// Its payload type for telephone events, when it takes them.
    pub telephone_event: Option<u8>,
    /// Which ways it wants audio to flow.
    pub direction: MediaDirection,
}

/// Reads the first audio stream of an SDP body.
pub fn parse(body: &[u8]) -> Result<RemoteAudio, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the SDP is not UTF-8".to_owned())?;
    let mut session_ip = None;
    let mut media_ip = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut telephone_event = None;
    let mut session_direction = None;
    let mut media_direction = None;
    for line in text.lines().map(str::trim) {
        if let Some(direction) = line
            .strip_prefix("a=")
            .and_then(MediaDirection::from_attribute)
        {
            // Before the first m= line it is the session's; after, the
            // stream's, which wins.
            match audio {
                Some(_) => media_direction = media_direction.or(Some(direction)),
                None => session_direction = Some(direction),
            }
            continue;
        }
        if let Some(connection) = line.strip_prefix("c=") {
            let ip = parse_connection(connection)?;
            // A c= line after the audio m= line belongs to that stream.
            match audio {
                Some(_) => media_ip = media_ip.or(Some(ip)),
                None => session_ip = Some(ip),
            }
        } else if let Some(media) = line.strip_prefix("m=") {
            if audio.is_some() {
                break; // only the first audio stream is used
            }
            let mut fields = media.split_whitespace();
            if fields.next() != Some("audio") {
                continue;
            }
            let port = fields
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("bad media line {line:?}"))?;
            let _profile = fields.next();
            let payload_types = fields.filter_map(|pt| pt.parse().ok()).collect();
            audio = Some((port, payload_types));
        } else if let Some(rtpmap) = line.strip_prefix("a=rtpmap:")
            && audio.is_some()
            && let Some((pt, encoding)) = rtpmap.split_once(' ')
            && encoding
                .to_ascii_lowercase()
                .starts_with("telephone-event/8000")
        {
            telephone_event = pt.parse().ok();
        }
    }
    let (port, payload_types) = audio.ok_or("the SDP has no audio stream")?;
    let ip = media_ip
        .or(session_ip)
        .ok_or("the SDP has no connection address")?;
    let codec = payload_types
        .iter()
        .find_map(|&pt| codec_of(pt))
        .ok_or("the SDP offers neither PCMU nor PCMA")?;
    Ok(RemoteAudio {
        addr: SocketAddr::new(ip, port),
        codec,
        telephone_event: telephone_event.filter(|pt| payload_types.contains(pt)),
        direction: media_direction.or(session_direction).unwrap_or_default(),
    })
}

fn parse_connection(connection: &str) -> Result<IpAddr, String> {
    let mut fields = connection.split_whitespace();
    let (_net, _kind, address) = (fields.next(), fields.next(), fields.next());
    address
        .and_then(|a| a.split('/').next()?.parse().ok())
        .ok_or_else(|| format!("bad connection line {connection:?}"))
}

/// Our description: audio at `addr`, the `codecs` in order of preference,
/// telephone events (RFC 4733) at `telephone_event`, flowing `direction`.
pub fn describe(
    addr: SocketAddr,
    codecs: &[Codec],
    telephone_event: u8,
    direction: MediaDirection,
) -> Vec<u8> {
    let family = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = addr.ip();
    let session = rand_u32();
    let mut payload_types: Vec<String> = codecs
        .iter()
        .map(|&c| payload_type(c).to_string())
        .collect();
    payload_types.push(telephone_event.to_string());
    let mut sdp = format!(
        "v=0\r\no=sessionbox {session} {session} IN {family} {ip}\r\ns=sessionbox\r\n\
         c=IN {family} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {}\r\n",
        addr.port(),
        payload_types.join(" ")
    );
    for codec in codecs {
        sdp += &format!(
            "a=rtpmap:{} {}/8000\r\n",
            payload_type(*codec),
            name(*codec)
        );
    }
    sdp += &format!(
        "a=rtpmap:{telephone_event} telephone-event/8000\r\na=fmtp:{telephone_event} 0-15\r\n\
         a=ptime:20\r\na={}\r\n",
        direction.attribute()
    );
    sdp.into_bytes()
}

pub(crate) fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    u32::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\n\
        a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    #[test]
    fn an_offer_gives_address_codec_and_events() {
        let audio = parse(SIPP_OFFER.as_bytes()).unwrap();
        assert_eq!(audio.addr, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(audio.codec, Codec::Pcma, "the far end's first choice");
        assert_eq!(audio.telephone_event, Some(101));
    }

    #[test]
    fn media_level_connection_wins_and_unknown_codecs_are_refused() {
        let offer = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 7000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n";
        assert_eq!(
            parse(offer.as_bytes()).unwrap().addr,
            "10.0.0.2:7000".parse().unwrap()
        );
        let opus = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 7000 RTP/AVP 111\r\n";
        assert_eq!(
            parse(opus.as_bytes()).unwrap_err(),
            "the SDP offers neither PCMU nor PCMA"
        );
        assert_eq!(
            parse(b"v=0\r\n").unwrap_err(),
            "the SDP has no audio stream"
        );
    }

    #[test]
    fn our_description_parses_back() {
        let addr = "192.0.2.7:40000".parse().unwrap();
        let sdp = describe(
            addr,
            &[Codec::Pcmu, Codec::Pcma],
            TELEPHONE_EVENT,
            MediaDirection::RecvOnly,
        );
        let audio = parse(&sdp).unwrap();
        assert_eq!(audio.addr, addr);
        assert_eq!(audio.codec, Codec::Pcmu);
        assert_eq!(audio.telephone_event, Some(TELEPHONE_EVENT));
        assert_eq!(audio.direction, MediaDirection::RecvOnly);
    }

    #[test]
    fn a_hold_offer_says_so_and_the_stream_s_direction_wins() {
        let hold = format!("{SIPP_OFFER}a=sendonly\r\n");
        let direction = parse(hold.as_bytes()).unwrap().direction;
        assert!(direction.holds());
        assert_eq!(direction.answer(), MediaDirection::RecvOnly);
        let session_level = "v=0\r\nc=IN IP4 10.0.0.1\r\na=inactive\r\nm=audio 7000 RTP/AVP 0\r\n";
        assert_eq!(
            parse(session_level.as_bytes()).unwrap().direction,
            MediaDirection::Inactive
        );
        let both =
            "v=0\r\nc=IN IP4 10.0.0.1\r\na=inactive\r\nm=audio 7000 RTP/AVP 0\r\na=sendrecv\r\n";
        let direction = parse(both.as_bytes()).unwrap().direction;
        assert_eq!(direction, MediaDirection::SendRecv);
        assert!(!direction.holds());
    }
}
