//! A call's media: one RTP socket. Prompts go out as G.711 in 20 ms packets
//! with running sequence numbers and timestamps; RFC 4733 telephone events
//! come in as tones.
//!
//! RTP is symmetric: once the far end's first packet of the call's codec
//! (or its telephone events) arrives, audio goes back to where it came
//! from, not to the address its SDP gave, which behind a NAT is a private
//! one nobody can reach. The address is latched once, so a stranger's
//! packets later in the call cannot take the audio elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::prompt::{self, Samples};
use super::sdp::{RemoteAudio, rand_u32};
use sessionbox_host::sync::MutexExt;

/// Samples in one packet: 20 ms at 8 kHz.
const FRAME: usize = 160;
const PACKET_TIME: Duration = Duration::from_millis(20);

pub struct Rtp {
    sender: RtpSender,
    /// The address our SDP gives for this socket.
    advertised: SocketAddr,
    receiver: Option<JoinHandle<()>>,
}

/// What sends the call's audio; a prompt being played holds one.
#[derive(Clone)]
pub struct RtpSender {
    socket: Arc<UdpSocket>,
    clock: Arc<Mutex<Clock>>,
    /// Where the far end's audio came from, once it has.
    latched: Arc<Mutex<Option<SocketAddr>>>,
    /// While the far end holds the call, prompts play on in silence.
    held: Arc<AtomicBool>,
}

/// Where the stream we send is: the same SSRC, sequence and timeline across
/// every prompt of the call, as one RTP stream must be.
struct Clock {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    last_sent: Option<Instant>,
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
        let sender = RtpSender {
            socket: Arc::new(UdpSocket::from_std(socket)?),
            clock: Arc::new(Mutex::new(Clock {
                ssrc: rand_u32(),
                sequence: rand_u32() as u16,
                timestamp: rand_u32(),
                last_sent: None,
            })),
            latched: Arc::default(),
            held: Arc::default(),
        };
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

    /// Starts listening to the far end: its first packet latches where
    /// our audio goes, and its telephone events become tones for
    /// `on_tone`.
    pub fn listen(&mut self, remote: &RemoteAudio, on_tone: impl Fn(char) + Send + 'static) {
        if self.receiver.is_some() {
            return;
        }
        let socket = Arc::clone(&self.sender.socket);
        let latched = Arc::clone(&self.sender.latched);
        let (codec, events) = (remote.codec.payload_type(), remote.telephone_event);
        self.receiver = Some(tokio::spawn(async move {
            let mut buffer = [0u8; 1500];
            let mut last_event = None;
            while let Ok((length, from)) = socket.recv_from(&mut buffer).await {
                let packet = &buffer[..length];
                let Some(payload_type) = rtp_payload_type(packet) else {
                    continue;
                };
                if payload_type == codec || Some(payload_type) == events {
                    latched.locked().get_or_insert(from);
                }
                if let Some(events) = events
                    && let Some((timestamp, tone)) = telephone_event(packet, events)
                    // An event is sent several times (and its end three
                    // times) under one timestamp: it is one key press.
                    && last_event != Some(timestamp)
                {
                    last_event = Some(timestamp);
                    on_tone(tone);
                }
            }
        }));
    }
}

impl RtpSender {
    /// The far end holds the call (`true`: it takes no audio) or resumes it.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::Relaxed);
    }

    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Streams `samples` to the far end in real time; resolves when the
    /// last packet is sent.
    pub async fn play(&self, samples: Samples, remote: &RemoteAudio) {
        let (socket, clock) = (&self.socket, &self.clock);
        let codec = remote.codec;
        {
            let payload = prompt::encode(codec, &samples);
            let silence = prompt::encode(codec, &[0]);
            let mut ticks = tokio::time::interval(PACKET_TIME);
            for (index, frame) in payload.chunks(FRAME).enumerate() {
                ticks.tick().await;
                let mut packet = Vec::with_capacity(12 + FRAME);
                {
                    let mut clock = clock.locked();
                    let now = Instant::now();
                    if index == 0 {
                        // Time passed since the last prompt passes on the
                        // timeline too; the marker starts a talkspurt.
                        if let Some(last) = clock.last_sent {
                            let gap = (now - last).as_millis() as u32 * 8;
                            clock.timestamp = clock.timestamp.wrapping_add(gap.max(FRAME as u32));
                        }
                    } else {
                        clock.timestamp = clock.timestamp.wrapping_add(FRAME as u32);
                    }
                    clock.sequence = clock.sequence.wrapping_add(1);
                    clock.last_sent = Some(now);
                    let marker = if index == 0 { 0x80 } else { 0 };
                    packet.extend_from_slice(&[0x80, marker | codec.payload_type()]);
                    packet.extend_from_slice(&clock.sequence.to_be_bytes());
                    packet.extend_from_slice(&clock.timestamp.to_be_bytes());
                    packet.extend_from_slice(&clock.ssrc.to_be_bytes());
                }
                packet.extend_from_slice(frame);
                // The last frame is filled up with silence.
                packet.resize(12 + FRAME, silence[0]);
                // On hold the timeline runs on and nothing is sent, so a
                // prompt still ends when it would have.
                if self.is_held() {
                    continue;
                }
                let to = self.latched.locked().unwrap_or(remote.addr);
                // A lost packet is lost: RTP does not resend.
                let _ = socket.send_to(&packet, to).await;
            }
        }
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

/// The payload type of an RTP (version 2) packet.
fn rtp_payload_type(packet: &[u8]) -> Option<u8> {
    (packet.len() >= 12 && packet[0] >> 6 == 2).then(|| packet[1] & 0x7F)
}

/// The RFC 4733 event in an RTP packet of `payload_type`, with the packet's
/// timestamp (which names the event).
fn telephone_event(packet: &[u8], payload_type: u8) -> Option<(u32, char)> {
    if rtp_payload_type(packet) != Some(payload_type) {
        return None;
    }
    let timestamp = u32::from_be_bytes(packet[4..8].try_into().ok()?);
    let header = 12 + 4 * usize::from(packet[0] & 0x0F);
    let event = *packet.get(header)?;
    let tone = match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => return None,
    };
    Some((timestamp, tone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Codec;
    use tokio::sync::mpsc;

    fn event_packet(event: u8, timestamp: u32, end: bool) -> Vec<u8> {
        let mut packet = vec![0x80, 101, 0, 1];
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&7u32.to_be_bytes());
        packet.extend_from_slice(&[event, if end { 0x8A } else { 0x0A }, 0, 160]);
        packet
    }

    #[test]
    fn telephone_events_are_read() {
        assert_eq!(
            telephone_event(&event_packet(5, 9, false), 101),
            Some((9, '5'))
        );
        assert_eq!(
            telephone_event(&event_packet(11, 9, true), 101),
            Some((9, '#'))
        );
        assert_eq!(
            telephone_event(&event_packet(13, 9, true), 101),
            Some((9, 'B'))
        );
        assert_eq!(
            telephone_event(&event_packet(5, 9, false), 96),
            None,
            "another payload type"
        );
        assert_eq!(
            telephone_event(&event_packet(16, 9, false), 101),
            None,
            "not a key"
        );
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
        let remote = RemoteAudio {
            addr: far.local_addr().unwrap(),
            codec: Codec::Pcmu,
            telephone_event: Some(101),
            direction: Default::default(),
        };
        // 2.5 frames: three packets, the last filled with silence.
        rtp.sender().play(vec![1000; 400], &remote).await;
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
        rtp.listen(&remote, move |tone| {
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
        let remote = RemoteAudio {
            addr: in_sdp.local_addr().unwrap(),
            codec: Codec::Pcmu,
            telephone_event: Some(101),
            direction: Default::default(),
        };
        let (tones, mut received) = mpsc::unbounded_channel();
        rtp.listen(&remote, move |tone| {
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

        rtp.sender().play(vec![1000; FRAME], &remote).await;
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
}
