//! A call's media: one RTP socket. Prompts go out as G.711 in 20 ms packets
//! with running sequence numbers and timestamps; RFC 4733 telephone events
//! come in as tones; and, while the call is bridged to another, what its
//! far end sends is relayed to the other call ([`MediaPort`]).
//!
//! RTP is symmetric: once the far end's first packet of the call's codec
//! (or its telephone events) arrives, audio goes back to where it came
//! from, not to the address its SDP gave, which behind a NAT is a private
//! one nobody can reach. The address is latched once, so a stranger's
//! packets later in the call cannot take the audio elsewhere, and only the
//! latched address's packets are relayed.
//!
//! A relay forwards each packet as it arrives, adding no delay of its own
//! (the receiving phone's jitter buffer absorbs the network's): the payload
//! as it is when both calls use one codec, transcoded when not, on the
//! receiving call's own stream (its SSRC and sequence, the sender's timing
//! moved onto its timeline).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::g711;
use super::prompt::Samples;
use super::sdp::{self, Codec, RemoteAudio, rand_u32};
use super::stream::Heard;
use sessionbox_host::recording::Recorder;
use sessionbox_host::sync::MutexExt;
use sessionbox_host::telephony::{FrameKind, MediaFrame, MediaPort};

/// Samples in one packet: 20 ms at 8 kHz.
const FRAME: usize = 160;
const PACKET_TIME: Duration = Duration::from_millis(20);

pub struct Rtp {
    sender: RtpSender,
    /// The address our SDP gives for this socket.
    advertised: SocketAddr,
    receiver: Option<JoinHandle<()>>,
}

/// What sends the call's audio, and decides what of it goes where; a
/// prompt being played and the other side of a bridge hold one.
#[derive(Clone)]
pub struct RtpSender(Arc<Stream>);

struct Stream {
    socket: UdpSocket,
    /// The same socket, for relays: a send that never waits (a full buffer
    /// drops the packet rather than stall the other call's receiving task),
    /// and does not depend on the runtime having seen the socket writable.
    relay_socket: std::net::UdpSocket,
    clock: Mutex<Clock>,
    /// Where the far end takes audio, and in which codec, once agreed.
    remote: Mutex<Option<RemoteAudio>>,
    /// Where the far end's audio came from, once it has.
    latched: Mutex<Option<SocketAddr>>,
    /// While the far end holds the call, prompts play on in silence.
    held: AtomicBool,
    /// A prompt is playing: relayed audio gives way to it.
    prompting: AtomicBool,
    /// The call has ended: nothing more is sent.
    closed: AtomicBool,
    /// The other call of a bridge, which hears what this far end sends.
    relay_to: Mutex<Option<Arc<dyn MediaPort>>>,
    /// A recording of the call, fed both ways.
    recorder: Mutex<Option<Arc<Recorder>>>,
    /// A stream of the call, fed what the far end sends.
    tap: Mutex<Option<mpsc::Sender<Heard>>>,
    /// Packets the stream's queue had no room for.
    tap_dropped: AtomicUsize,
}

/// Where the stream we send is: the same SSRC, sequence and timeline across
/// every prompt and relayed talkspurt of the call, as one RTP stream must be.
struct Clock {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    last_sent: Option<Instant>,
    /// How a relayed stream's timestamps map onto ours: its SSRC and the
    /// offset added. None until the next relayed packet anchors it (after
    /// a prompt, or from a new source).
    relay_anchor: Option<(u32, u32)>,
}

impl Clock {
    /// Moves the timeline on to now for a new talkspurt: by the time passed
    /// since the last packet, and at least one packet's worth.
    fn skip_to_now(&mut self, now: Instant) {
        if let Some(last) = self.last_sent {
            let gap = (now - last).as_millis() as u32 * 8;
            self.timestamp = self.timestamp.wrapping_add(gap.max(FRAME as u32));
        }
    }

    /// The header of the next packet, at `self.timestamp`.
    fn header(&mut self, marker: bool, payload_type: u8, now: Instant) -> [u8; 12] {
        self.sequence = self.sequence.wrapping_add(1);
        self.last_sent = Some(now);
        let mut header = [0u8; 12];
        header[0] = 0x80;
        header[1] = if marker { 0x80 } else { 0 } | payload_type;
        header[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        header[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        header
    }
}

impl Rtp {
    /// Binds a socket on `bind_ip`, on an even port of `ports` (any port
    /// when none are given); the SDP advertises `advertised_ip`.
    pub fn bind(
        bind_ip: IpAddr,
        advertised_ip: IpAddr,
        ports: Option<RangeInclusive<u16>>,
    ) -> std::io::Result<Rtp> {
        // Bound synchronously: dialing happens inside a (synchronous) host call.
        let socket = match ports {
            None => std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))?,
            Some(ports) => bind_in(bind_ip, ports)?,
        };
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        let relay_socket = socket.try_clone()?;
        let sender = RtpSender(Arc::new(Stream {
            socket: UdpSocket::from_std(socket)?,
            relay_socket,
            clock: Mutex::new(Clock {
                ssrc: rand_u32(),
                sequence: rand_u32() as u16,
                timestamp: rand_u32(),
                last_sent: None,
                relay_anchor: None,
            }),
            remote: Mutex::default(),
            latched: Mutex::default(),
            held: AtomicBool::default(),
            prompting: AtomicBool::default(),
            closed: AtomicBool::default(),
            relay_to: Mutex::default(),
            recorder: Mutex::default(),
            tap: Mutex::default(),
            tap_dropped: AtomicUsize::default(),
        }));
        Ok(Rtp {
            sender,
            advertised: SocketAddr::new(advertised_ip, port),
            receiver: None,
        })
    }

    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    pub fn sender(&self) -> RtpSender {
        self.sender.clone()
    }

    /// Starts listening to the far end (at the media agreed by then): its
    /// first packet latches where our audio goes, its telephone events
    /// become tones for `on_tone`, and while the call is bridged its audio
    /// and events go on to the other call.
    pub fn listen(&mut self, on_tone: impl Fn(char) + Send + 'static) {
        let Some(remote) = self.sender.remote() else {
            return;
        };
        if self.receiver.is_some() {
            return;
        }
        let stream = Arc::clone(&self.sender.0);
        self.receiver = Some(tokio::spawn(async move {
            let mut buffer = [0u8; 1500];
            let mut last_event = None;
            while let Ok((length, from)) = stream.socket.recv_from(&mut buffer).await {
                let Some(packet) = RtpPacket::parse(&buffer[..length]) else {
                    continue;
                };
                // A re-INVITE may have changed the codec since.
                let (codec, events) = stream
                    .remote
                    .locked()
                    .as_ref()
                    .map_or((remote.codec, remote.telephone_event), |remote| {
                        (remote.codec, remote.telephone_event)
                    });
                let kind = if packet.payload_type == sdp::payload_type(codec) {
                    FrameKind::Audio(codec)
                } else if Some(packet.payload_type) == events {
                    FrameKind::TelephoneEvent
                } else {
                    continue;
                };
                let source = *stream.latched.locked().get_or_insert(from);
                if kind == FrameKind::TelephoneEvent
                    && let Some((timestamp, tone)) = telephone_event(&packet)
                    // An event is sent several times (and its end three
                    // times) under one timestamp: it is one key press.
                    && last_event != Some(timestamp)
                {
                    last_event = Some(timestamp);
                    on_tone(tone);
                    stream.to_tap(Heard::Key(tone));
                }
                if source != from {
                    continue;
                }
                if let FrameKind::Audio(codec) = kind {
                    if let Some(recorder) = stream.recorder.locked().as_ref() {
                        let samples = g711::decode(codec, packet.payload);
                        recorder.heard(packet.ssrc, packet.timestamp, &samples);
                    }
                    if stream.tap.locked().is_some() {
                        let mut ulaw = packet.payload.to_vec();
                        if codec != Codec::Pcmu {
                            g711::transcode(codec, Codec::Pcmu, packet.payload, &mut ulaw);
                        }
                        stream.to_tap(Heard::Audio {
                            sequence: packet.sequence,
                            ulaw,
                        });
                    }
                }
                let relay_to = stream.relay_to.locked().clone();
                if let Some(port) = relay_to {
                    port.relay(&MediaFrame {
                        kind,
                        marker: packet.marker,
                        source: packet.ssrc,
                        timestamp: packet.timestamp,
                        payload: packet.payload,
                    });
                }
            }
        }));
    }
}

impl Stream {
    /// Hands what the far end sent to the call's stream, if it has one and
    /// the stream's queue has room.
    fn to_tap(&self, heard: Heard) {
        if let Some(tap) = self.tap.locked().as_ref()
            && tap.try_send(heard).is_err()
        {
            self.tap_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl RtpSender {
    /// Feeds what the far end sends to a stream from now on, or to none.
    pub fn tap(&self, tap: Option<mpsc::Sender<Heard>>) {
        *self.0.tap.locked() = tap;
        self.0.tap_dropped.store(0, Ordering::Relaxed);
    }

    /// How many packets the stream's queue had no room for.
    pub fn tap_dropped(&self) -> usize {
        self.0.tap_dropped.load(Ordering::Relaxed)
    }

    /// The media the far end agreed to (again, after a re-INVITE).
    pub fn set_remote(&self, remote: Option<RemoteAudio>) {
        *self.0.remote.locked() = remote;
    }

    pub fn remote(&self) -> Option<RemoteAudio> {
        self.0.remote.locked().clone()
    }

    /// The far end holds the call (`true`: it takes no audio) or resumes it.
    pub fn hold(&self, held: bool) {
        self.0.held.store(held, Ordering::Relaxed);
    }

    pub fn is_held(&self) -> bool {
        self.0.held.load(Ordering::Relaxed)
    }

    /// Relays what the far end sends to `port` from now on, or to nothing.
    pub fn relay_to(&self, port: Option<Arc<dyn MediaPort>>) {
        *self.0.relay_to.locked() = port;
    }

    /// Feeds the call's audio, both ways, to `recorder` from now on, or to
    /// none.
    pub fn record(&self, recorder: Option<Arc<Recorder>>) {
        *self.0.recorder.locked() = recorder;
    }

    /// The call has ended: nothing more goes out, nor on to a bridge.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Relaxed);
        self.relay_to(None);
        self.record(None);
    }

    /// Sends one packet of `samples` to the far end, unless the call is
    /// held or over; a recording hears what went.
    async fn send(&self, packet: &[u8], remote: &RemoteAudio, samples: &[i16]) {
        if self.is_held() || self.0.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Some(recorder) = self.0.recorder.locked().as_ref() {
            recorder.sent(samples);
        }
        let to = self.0.latched.locked().unwrap_or(remote.addr);
        // A lost packet is lost: RTP does not resend.
        let _ = self.0.socket.send_to(packet, to).await;
    }

    /// Streams `samples` to the far end in real time; resolves when the
    /// last packet is sent. Relayed audio is held back meanwhile.
    pub async fn play(&self, samples: Samples) {
        let Some(remote) = self.remote() else {
            return;
        };
        let stream = &self.0;
        let _prompting = Prompting::begin(stream);
        let codec = remote.codec;
        let payload = g711::encode(codec, &samples);
        let silence = g711::encode(codec, &[0]);
        let mut ticks = tokio::time::interval(PACKET_TIME);
        for (index, (frame, linear)) in payload.chunks(FRAME).zip(samples.chunks(FRAME)).enumerate()
        {
            ticks.tick().await;
            let mut packet = Vec::with_capacity(12 + FRAME);
            {
                let mut clock = stream.clock.locked();
                let now = Instant::now();
                if index == 0 {
                    // Time passed since the last packet passes on the
                    // timeline too; the marker starts a talkspurt.
                    clock.skip_to_now(now);
                } else {
                    clock.timestamp = clock.timestamp.wrapping_add(FRAME as u32);
                }
                packet.extend_from_slice(&clock.header(index == 0, sdp::payload_type(codec), now));
            }
            packet.extend_from_slice(frame);
            // The last frame is filled up with silence.
            packet.resize(12 + FRAME, silence[0]);
            // On hold the timeline runs on and nothing is sent, so a
            // prompt still ends when it would have.
            self.send(&packet, &remote, linear).await;
        }
    }
}

/// A prompt playing: relayed audio waits until it is dropped, and then
/// starts a new talkspurt on the timeline.
struct Prompting<'a>(&'a Stream);

impl<'a> Prompting<'a> {
    fn begin(stream: &'a Stream) -> Self {
        stream.prompting.store(true, Ordering::Relaxed);
        Prompting(stream)
    }
}

impl Drop for Prompting<'_> {
    fn drop(&mut self) {
        self.0.prompting.store(false, Ordering::Relaxed);
        self.0.clock.locked().relay_anchor = None;
    }
}

impl MediaPort for RtpSender {
    fn relay(&self, frame: &MediaFrame<'_>) {
        let stream = &self.0;
        if stream.prompting.load(Ordering::Relaxed) {
            return;
        }
        let Some(remote) = stream.remote.locked().clone() else {
            return;
        };
        let mut transcoded = Vec::new();
        let (payload_type, payload) = match frame.kind {
            FrameKind::Audio(codec) if codec == remote.codec => {
                (sdp::payload_type(codec), frame.payload)
            }
            FrameKind::Audio(codec) => {
                g711::transcode(codec, remote.codec, frame.payload, &mut transcoded);
                (sdp::payload_type(remote.codec), &transcoded[..])
            }
            FrameKind::TelephoneEvent => match remote.telephone_event {
                Some(payload_type) => (payload_type, frame.payload),
                // The far end takes no telephone events: the key press
                // still reaches the scenario, not the other call.
                None => return,
            },
        };
        let mut packet = Vec::with_capacity(12 + payload.len());
        {
            let mut clock = stream.clock.locked();
            let now = Instant::now();
            let marker = match clock.relay_anchor {
                Some((source, offset)) if source == frame.source => {
                    clock.timestamp = frame.timestamp.wrapping_add(offset);
                    frame.marker
                }
                // A new talkspurt on our timeline: after a prompt, or from
                // a new source, the sender's timing resumes from now.
                _ => {
                    clock.skip_to_now(now);
                    let offset = clock.timestamp.wrapping_sub(frame.timestamp);
                    clock.relay_anchor = Some((frame.source, offset));
                    true
                }
            };
            packet.extend_from_slice(&clock.header(marker, payload_type, now));
        }
        packet.extend_from_slice(payload);
        if stream.held.load(Ordering::Relaxed) || stream.closed.load(Ordering::Relaxed) {
            return;
        }
        if frame.kind != FrameKind::TelephoneEvent
            && let Some(recorder) = stream.recorder.locked().as_ref()
        {
            recorder.sent(&g711::decode(remote.codec, payload));
        }
        let to = stream.latched.locked().unwrap_or(remote.addr);
        let _ = stream.relay_socket.send_to(&packet, to);
    }
}

/// A socket on the first free even port of `ports`, looking from a random
/// one on (RTP takes even ports; RTCP would take the odd one above).
fn bind_in(ip: IpAddr, ports: RangeInclusive<u16>) -> std::io::Result<std::net::UdpSocket> {
    let (low, high) = (ports.start() + (ports.start() & 1), *ports.end());
    let count = if high >= low { (high - low) / 2 + 1 } else { 0 };
    let start = if count == 0 {
        0
    } else {
        rand_u32() % u32::from(count)
    } as u16;
    for step in 0..count {
        let port = low + 2 * ((start + step) % count);
        if let Ok(socket) = std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            return Ok(socket);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free RTP port in {}-{}", ports.start(), ports.end()),
    ))
}

impl Drop for Rtp {
    fn drop(&mut self) {
        if let Some(receiver) = &self.receiver {
            receiver.abort();
        }
    }
}

/// The parts of an RTP (version 2) packet a call uses.
struct RtpPacket<'a> {
    payload_type: u8,
    marker: bool,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    fn parse(packet: &'a [u8]) -> Option<Self> {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return None;
        }
        // The payload follows the CSRCs and any header extension, and
        // precedes any padding (whose last byte counts it).
        let mut start = 12 + 4 * usize::from(packet[0] & 0x0F);
        if packet[0] & 0x10 != 0 {
            let words = packet.get(start + 2..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        let mut end = packet.len();
        if packet[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*packet.last()?))?;
        }
        Some(RtpPacket {
            payload_type: packet[1] & 0x7F,
            marker: packet[1] & 0x80 != 0,
            sequence: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes(packet[4..8].try_into().ok()?),
            ssrc: u32::from_be_bytes(packet[8..12].try_into().ok()?),
            payload: packet.get(start..end)?,
        })
    }
}

/// The key pressed in an RFC 4733 event packet, with the packet's timestamp
/// (which names the event).
fn telephone_event(packet: &RtpPacket<'_>) -> Option<(u32, char)> {
    let event = *packet.payload.first()?;
    let tone = match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => return None,
    };
    Some((packet.timestamp, tone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Codec;
    use tokio::sync::mpsc;

    fn remote(addr: SocketAddr, codec: Codec) -> RemoteAudio {
        RemoteAudio {
            addr,
            codec,
            telephone_event: Some(101),
            direction: Default::default(),
        }
    }

    fn event_packet(event: u8, timestamp: u32, end: bool) -> Vec<u8> {
        let mut packet = vec![0x80, 101, 0, 1];
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&7u32.to_be_bytes());
        packet.extend_from_slice(&[event, if end { 0x8A } else { 0x0A }, 0, 160]);
        packet
    }

    fn event(packet: &[u8]) -> Option<(u32, char)> {
        telephone_event(&RtpPacket::parse(packet)?)
    }

    #[test]
    fn telephone_events_are_read() {
        assert_eq!(event(&event_packet(5, 9, false)), Some((9, '5')));
        assert_eq!(event(&event_packet(11, 9, true)), Some((9, '#')));
        assert_eq!(event(&event_packet(13, 9, true)), Some((9, 'B')));
        assert_eq!(event(&event_packet(16, 9, false)), None, "not a key");
    }

    #[test]
    fn payloads_are_found_past_csrcs_extensions_and_padding() {
        // Two CSRCs, a one-word extension, three bytes of padding.
        let mut packet = vec![0x80 | 0x20 | 0x10 | 2, 8, 0, 1];
        packet.extend_from_slice(&1234u32.to_be_bytes());
        packet.extend_from_slice(&77u32.to_be_bytes());
        packet.extend_from_slice(&[0; 8]);
        packet.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]);
        packet.extend_from_slice(b"audio");
        packet.extend_from_slice(&[0, 0, 3]);
        let parsed = RtpPacket::parse(&packet).unwrap();
        assert_eq!(parsed.payload, b"audio");
        assert_eq!(
            (parsed.payload_type, parsed.timestamp, parsed.ssrc),
            (8, 1234, 77)
        );
        assert!(
            RtpPacket::parse(&packet[..14]).is_none(),
            "cut inside the CSRCs"
        );
        assert!(RtpPacket::parse(&[0x40; 12]).is_none(), "not version 2");
    }

    #[tokio::test]
    async fn sockets_take_even_ports_of_the_range_until_it_is_full() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        // A range of two even ports, found free just now.
        let base = (40_000..60_000)
            .step_by(2)
            .find(|&port| {
                std::net::UdpSocket::bind((loopback, port)).is_ok()
                    && std::net::UdpSocket::bind((loopback, port + 2)).is_ok()
            })
            .unwrap();
        let range = base - 1..=base + 3;
        let first = Rtp::bind(loopback, loopback, Some(range.clone())).unwrap();
        let second = Rtp::bind(loopback, loopback, Some(range.clone())).unwrap();
        let mut ports = [first.advertised().port(), second.advertised().port()];
        ports.sort();
        assert_eq!(ports, [base, base + 2]);
        let error = Rtp::bind(loopback, loopback, Some(range)).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!("no free RTP port in {}-{}", base - 1, base + 3)
        );
    }

    #[tokio::test]
    async fn a_prompt_goes_out_in_order_and_one_press_is_one_tone() {
        let loopback = "127.0.0.1".parse().unwrap();
        let mut rtp = Rtp::bind(loopback, loopback, None).unwrap();
        let far = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        rtp.sender()
            .set_remote(Some(remote(far.local_addr().unwrap(), Codec::Pcmu)));
        // 2.5 frames: three packets, the last filled with silence.
        rtp.sender().play(vec![1000; 400]).await;
        let mut previous: Option<(u16, u32)> = None;
        for index in 0..3 {
            let mut packet = [0u8; 1500];
            let length = far.recv(&mut packet).await.unwrap();
            assert_eq!(length, 12 + FRAME);
            assert_eq!(
                packet[1] & 0x80 != 0,
                index == 0,
                "the marker starts the prompt"
            );
            assert_eq!(packet[1] & 0x7F, 0, "PCMU");
            let sequence = u16::from_be_bytes([packet[2], packet[3]]);
            let timestamp = u32::from_be_bytes(packet[4..8].try_into().unwrap());
            if let Some((s, t)) = previous {
                assert_eq!(sequence, s.wrapping_add(1));
                assert_eq!(timestamp, t.wrapping_add(FRAME as u32));
            }
            previous = Some((sequence, timestamp));
        }

        let (tones, mut received) = mpsc::unbounded_channel();
        rtp.listen(move |tone| {
            let _ = tones.send(tone.to_string());
        });
        for packet in [
            event_packet(5, 100, false),
            event_packet(5, 100, true),
            event_packet(5, 100, true),
            event_packet(9, 900, true),
        ] {
            far.send_to(&packet, rtp.advertised()).await.unwrap();
        }
        assert_eq!(received.recv().await.unwrap(), "5");
        assert_eq!(
            received.recv().await.unwrap(),
            "9",
            "the repeats of 5 are one press"
        );
    }

    #[tokio::test]
    async fn audio_goes_where_the_far_end_sends_from_and_stays_there() {
        let loopback = "127.0.0.1".parse().unwrap();
        let mut rtp = Rtp::bind(loopback, loopback, None).unwrap();
        // The SDP names one address (behind a NAT, a private one); the
        // far end's packets come from another.
        let in_sdp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        in_sdp.set_nonblocking(true).unwrap();
        let actual = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        rtp.sender()
            .set_remote(Some(remote(in_sdp.local_addr().unwrap(), Codec::Pcmu)));
        let (tones, mut received) = mpsc::unbounded_channel();
        rtp.listen(move |tone| {
            let _ = tones.send(tone);
        });
        // Heard once the listener has taken the packet: it is latched.
        actual
            .send_to(&event_packet(1, 10, true), rtp.advertised())
            .await
            .unwrap();
        assert_eq!(received.recv().await, Some('1'));
        stranger
            .send_to(&event_packet(2, 20, true), rtp.advertised())
            .await
            .unwrap();
        assert_eq!(received.recv().await, Some('2'));

        rtp.sender().play(vec![1000; FRAME]).await;
        let mut packet = [0u8; 1500];
        let arrived = tokio::time::timeout(Duration::from_secs(5), actual.recv(&mut packet)).await;
        let length = arrived
            .expect("the audio went where the far end sends from")
            .unwrap();
        assert_eq!(length, 12 + FRAME);
        let stray = in_sdp.recv_from(&mut packet);
        assert!(
            stray.is_err(),
            "nothing went to the SDP's address: {stray:?}"
        );
        let stray = stranger.try_recv_from(&mut packet);
        assert!(stray.is_err(), "nor to a later sender: {stray:?}");
    }

    /// An RTP packet of `payload_type` from the source `ssrc`.
    fn audio_packet(
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut packet = vec![0x80, payload_type];
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }

    /// The header fields and payload of a packet read from `socket`.
    async fn receive(socket: &UdpSocket) -> (u8, bool, u16, u32, u32, Vec<u8>) {
        let mut packet = [0u8; 1500];
        let received = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut packet)).await;
        let length = received.expect("a relayed packet").unwrap();
        let parsed = RtpPacket::parse(&packet[..length]).unwrap();
        let sequence = u16::from_be_bytes([packet[2], packet[3]]);
        (
            parsed.payload_type,
            parsed.marker,
            sequence,
            parsed.timestamp,
            parsed.ssrc,
            parsed.payload.to_vec(),
        )
    }

    #[tokio::test]
    async fn a_bridge_relays_audio_and_key_presses_on_the_other_calls_stream() {
        let loopback = "127.0.0.1".parse().unwrap();
        // Call A's far end speaks PCMU; call B's takes PCMA, with its
        // telephone events as payload type 96.
        let mut a = Rtp::bind(loopback, loopback, None).unwrap();
        let b = Rtp::bind(loopback, loopback, None).unwrap();
        let phone_a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let phone_b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.sender()
            .set_remote(Some(remote(phone_a.local_addr().unwrap(), Codec::Pcmu)));
        let mut b_remote = remote(phone_b.local_addr().unwrap(), Codec::Pcma);
        b_remote.telephone_event = Some(96);
        b.sender().set_remote(Some(b_remote));
        let (tones, mut heard) = mpsc::unbounded_channel();
        a.listen(move |tone| {
            let _ = tones.send(tone);
        });
        a.sender().relay_to(Some(Arc::new(b.sender())));

        let speech = g711::encode(Codec::Pcmu, &[3000; FRAME]);
        for (index, timestamp) in [5000u32, 5160].into_iter().enumerate() {
            let packet = audio_packet(0, 1 + index as u16, timestamp, 42, &speech);
            phone_a.send_to(&packet, a.advertised()).await.unwrap();
        }
        let (pt, marker, sequence, timestamp, ssrc, payload) = receive(&phone_b).await;
        assert_eq!(pt, 8, "transcoded to B's codec");
        assert!(marker, "a new talkspurt on B's stream");
        assert_eq!(
            payload,
            g711::encode(Codec::Pcma, &g711::decode(Codec::Pcmu, &speech))
        );
        let second = receive(&phone_b).await;
        assert_eq!(second.2, sequence.wrapping_add(1), "B's sequence runs on");
        assert_eq!(
            second.3,
            timestamp.wrapping_add(160),
            "A's timing, on B's timeline"
        );
        assert_eq!(second.4, ssrc, "one stream");
        assert!(!second.1);

        // A key press goes on under B's event payload type, and still
        // reaches the scenario.
        let press = event_packet(7, 5320, true);
        phone_a.send_to(&press, a.advertised()).await.unwrap();
        let (pt, _, _, event_time, _, payload) = receive(&phone_b).await;
        assert_eq!((pt, payload[0]), (96, 7));
        assert_eq!(event_time, timestamp.wrapping_add(320));
        assert_eq!(heard.recv().await, Some('7'));

        // Same codec both ways: the payload passes as it came.
        b.sender()
            .set_remote(Some(remote(phone_b.local_addr().unwrap(), Codec::Pcmu)));
        let packet = audio_packet(0, 4, 5480, 42, &speech);
        phone_a.send_to(&packet, a.advertised()).await.unwrap();
        let (pt, _, _, _, _, payload) = receive(&phone_b).await;
        assert_eq!((pt, payload), (0, speech.clone()));

        // A stranger's packets are not relayed: only the latched address's.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let packet = audio_packet(0, 5, 5640, 42, &[0x11; FRAME]);
        stranger.send_to(&packet, a.advertised()).await.unwrap();
        // Then the far end's next packet, which does arrive (and first).
        let packet = audio_packet(0, 6, 5800, 42, &speech);
        phone_a.send_to(&packet, a.advertised()).await.unwrap();
        let (_, _, _, _, _, payload) = receive(&phone_b).await;
        assert_eq!(payload, speech, "the stranger's packet went nowhere");

        // Unbridged, nothing more goes through.
        a.sender().relay_to(None);
        phone_a.send_to(&packet, a.advertised()).await.unwrap();
        b.sender().play(vec![0; FRAME]).await;
        let (pt, marker, ..) = receive(&phone_b).await;
        assert!(
            marker && pt == 0,
            "the next packet B hears is its own prompt"
        );
    }

    #[tokio::test]
    async fn a_prompt_takes_the_place_of_relayed_audio() {
        let loopback = "127.0.0.1".parse().unwrap();
        let b = Rtp::bind(loopback, loopback, None).unwrap();
        let phone_b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        b.sender()
            .set_remote(Some(remote(phone_b.local_addr().unwrap(), Codec::Pcmu)));
        let relayed = [0x22u8; FRAME];
        let frame = |timestamp| MediaFrame {
            kind: FrameKind::Audio(Codec::Pcmu),
            marker: false,
            source: 9,
            timestamp,
            payload: &relayed,
        };
        b.sender().relay(&frame(0));
        let (_, marker, _, first, ..) = receive(&phone_b).await;
        assert!(marker);
        let prompt = {
            let sender = b.sender();
            tokio::spawn(async move { sender.play(vec![5000; 2 * FRAME]).await })
        };
        let (_, marker, _, prompt_start, _, payload) = receive(&phone_b).await;
        assert!(marker && payload != relayed, "the prompt begins");
        // Relayed audio meanwhile is dropped.
        b.sender().relay(&frame(160));
        let (_, _, _, _, _, payload) = receive(&phone_b).await;
        assert_ne!(
            payload, relayed,
            "the prompt's second packet, not relayed audio"
        );
        prompt.await.unwrap();
        b.sender().relay(&frame(320));
        let (_, marker, _, after, _, payload) = receive(&phone_b).await;
        assert_eq!(payload, relayed);
        assert!(marker, "relayed audio resumes as a new talkspurt");
        let forward = |from: u32, to: u32| to.wrapping_sub(from) < u32::MAX / 2;
        assert!(forward(first, prompt_start) && forward(prompt_start, after));
    }
}
