//! Media Streams: a call's audio to a WebSocket server and back, in
//! Twilio's JSON format, so that voice-AI bridges written for it work
//! unchanged.
//!
//! Out go `connected`, `start`, a `media` message per 20 ms packet of what
//! the far end says (μ-law, base64), `dtmf` per key press, `mark` echoes
//! and `stop`. In come `media` (played into the call, paced at 20 ms, as
//! relayed audio is: a prompt takes its place), `mark` (echoed once the
//! audio before it has played) and `clear` (drops what is still to play,
//! echoing its marks). Both ways are bounded: the call's audio waits in a
//! queue of `stream_send_queue` messages for a slow server (newer audio is
//! dropped past it), and the server's at most `stream_play_buffer` ahead.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::media::RtpSender;
use super::outbound::{self, Rules};
use super::sdp::rand_u32;
use sessionbox_host::telephony::{CallContext, Codec, FrameKind, MediaFrame, MediaPort, StreamId};

/// μ-law bytes in one 20 ms packet.
const FRAME: usize = 160;
/// μ-law silence.
const SILENCE: u8 = 0xFF;

/// What the call's far end sent, for the stream.
pub enum Heard {
    /// A packet of its audio (20 ms, usually), μ-law, with its RTP
    /// sequence number.
    Audio {
        sequence: u16,
        ulaw: Vec<u8>,
    },
    Key(char),
}

/// Packets held back waiting for one that is late: three (60 ms); with a
/// fourth, the late one is taken as lost.
const REORDER_WINDOW: usize = 3;

/// A sequence number this far from the one due starts a new stream.
const JUMP: u64 = 1_000;

/// Puts the far end's packets back in order for the stream's server (a
/// recording places them by timestamp instead): in-order packets pass at
/// once, and one that overtook a late one waits for it, a little.
#[derive(Default)]
struct Reorder {
    /// The extended sequence number due next.
    next: Option<u64>,
    waiting: std::collections::BTreeMap<u64, Vec<u8>>,
}

impl Reorder {
    /// Takes a packet; the packets now due, in order.
    fn push(&mut self, sequence: u16, ulaw: Vec<u8>) -> Vec<Vec<u8>> {
        let next = *self.next.get_or_insert(u64::from(sequence) + (1 << 16));
        // Extended to the nearest of its wraps around `next`.
        let near = |wrap: u64| wrap * (1 << 16) + u64::from(sequence);
        let base = next >> 16;
        let extended = [base.saturating_sub(1), base, base + 1]
            .map(near)
            .into_iter()
            .min_by_key(|candidate| candidate.abs_diff(next))
            .expect("three candidates");
        let mut due = Vec::new();
        if extended.abs_diff(next) > JUMP {
            // A new stream (another source, or its sequence restarted):
            // what waited goes first, and the count starts over.
            due.extend(std::mem::take(&mut self.waiting).into_values());
            self.next = Some(extended);
        } else if extended < next {
            // Too late, or a duplicate: what came after it has gone on.
            return Vec::new();
        }
        self.waiting.insert(extended, ulaw);
        while let Some((&first, _)) = self.waiting.first_key_value() {
            if first != self.next.expect("set above") && self.waiting.len() <= REORDER_WINDOW {
                break;
            }
            let (sequence, packet) = self.waiting.pop_first().expect("seen above");
            self.next = Some(sequence + 1);
            due.push(packet);
        }
        due
    }
}

/// A running stream: the call's handle on it.
pub struct MediaStream {
    stop: Option<oneshot::Sender<&'static str>>,
    task: JoinHandle<()>,
}

impl MediaStream {
    /// Starts stream `id` of the call `sender` sends for, to `url`; its end
    /// is reported through `context`.
    pub fn start(
        id: StreamId,
        url: String,
        parameters: Vec<(String, String)>,
        sender: RtpSender,
        context: CallContext,
    ) -> MediaStream {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let (heard, hearing) = mpsc::channel(context.limits.stream_send_queue.max(1));
            sender.tap(Some(heard));
            let reason = run(&url, parameters, &sender, hearing, stopped, &context).await;
            sender.tap(None);
            context.note(&format!("stream {id} to {url} ended: {reason}"));
            context.stream_ended(id, reason);
        });
        MediaStream {
            stop: Some(stop),
            task,
        }
    }

    /// Ends the stream (`stop` goes out), for `reason`.
    pub fn stop(&mut self, reason: &'static str) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(reason);
        }
    }

    /// Ends the stream and waits until it has ended.
    pub async fn end(mut self, reason: &'static str) {
        self.stop(reason);
        let _ = self.task.await;
    }
}

/// Runs a stream until it ends; why it ended.
async fn run(
    url: &str,
    parameters: Vec<(String, String)>,
    sender: &RtpSender,
    mut hearing: mpsc::Receiver<Heard>,
    mut stopped: oneshot::Receiver<&'static str>,
    context: &CallContext,
) -> String {
    let limits = &context.limits;
    let connecting = async {
        let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
        let tls = uri.scheme_str() == Some("wss");
        let stream = outbound::connect(&uri, tls, context, Rules::App).await?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(limits.websocket_message_bytes))
            .max_frame_size(Some(limits.websocket_message_bytes));
        tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map(|(socket, _)| socket)
            .map_err(|e| e.to_string())
    };
    let connected = tokio::select! {
        connected = tokio::time::timeout(limits.http_connect_timeout * 2, connecting) => connected,
        reason = &mut stopped => return reason.unwrap_or("the call ended").to_owned(),
    };
    let mut socket = match connected {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => return format!("could not connect: {error}"),
        Err(_) => return "could not connect: no answer in time".to_owned(),
    };
    let mut out = Outgoing::new(parameters);
    let mut reorder = Reorder::default();
    let mut playing = Playing::new(limits.stream_play_buffer);
    let mut dropped = 0usize;
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    for message in [out.connected(), out.start()] {
        if let Err(error) = socket.send(message).await {
            return format!("the server went away: {error}");
        }
    }
    let reason = loop {
        let message = tokio::select! {
            reason = &mut stopped => break reason.unwrap_or("the call ended").to_owned(),
            heard = hearing.recv() => match heard {
                Some(Heard::Audio { sequence, ulaw }) => {
                    let mut gone = None;
                    for packet in reorder.push(sequence, ulaw) {
                        if let Err(error) = socket.send(out.media(&packet)).await {
                            gone = Some(format!("the server went away: {error}"));
                            break;
                        }
                    }
                    match gone {
                        Some(reason) => break reason,
                        None => continue,
                    }
                }
                Some(Heard::Key(key)) => out.dtmf(key),
                None => break "the call ended".to_owned(),
            },
            received = socket.next() => match received {
                Some(Ok(Message::Text(text))) => match playing.take(&text) {
                    Ok(Taken::Nothing) => continue,
                    Ok(Taken::Dropped) => {
                        dropped += 1;
                        continue;
                    }
                    Ok(Taken::Marks(marks)) => {
                        if let Err(reason) = out.send_marks(&mut socket, marks).await {
                            break reason;
                        }
                        continue;
                    }
                    Err(error) => break format!("the server broke the protocol: {error}"),
                },
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(frame) => format!("the server closed it ({} {})", frame.code, frame.reason),
                        None => "the server closed it".to_owned(),
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => break format!("the server went away: {error}"),
                None => break "the server went away".to_owned(),
            },
            _ = ticks.tick() => {
                let marks = playing.play_next(sender);
                if let Err(reason) = out.send_marks(&mut socket, marks).await {
                    break reason;
                }
                continue;
            }
        };
        if let Err(error) = socket.send(message).await {
            break format!("the server went away: {error}");
        }
    };
    let _ = socket.send(out.stop()).await;
    let _ = socket.close(None).await;
    if dropped > 0 {
        context.note(&format!(
            "a stream's server sent {dropped} media messages beyond the {} ms it may send ahead: \
             dropped",
            limits.stream_play_buffer.as_millis()
        ));
    }
    let missed = sender.tap_dropped();
    if missed > 0 {
        context.note(&format!(
            "a stream's server fell behind: {missed} packets of the call's audio were dropped"
        ));
    }
    reason
}

/// The messages a stream sends, numbered.
struct Outgoing {
    stream_sid: String,
    call_sid: String,
    parameters: Vec<(String, String)>,
    sequence: u64,
    chunk: u64,
}

impl Outgoing {
    fn new(parameters: Vec<(String, String)>) -> Self {
        let sid = |prefix: &str| {
            let hex: String = (0..4).map(|_| format!("{:08x}", rand_u32())).collect();
            format!("{prefix}{hex}")
        };
        Outgoing {
            stream_sid: sid("MZ"),
            call_sid: sid("CA"),
            parameters,
            sequence: 0,
            chunk: 0,
        }
    }

    fn message(&mut self, event: &str, field: &str, body: Value) -> Message {
        self.sequence += 1;
        let mut message = json!({
            "event": event,
            "sequenceNumber": self.sequence.to_string(),
            "streamSid": self.stream_sid,
        });
        message[field] = body;
        Message::text(message.to_string())
    }

    fn connected(&self) -> Message {
        let connected = json!({ "event": "connected", "protocol": "Call", "version": "1.0.0" });
        Message::text(connected.to_string())
    }

    fn start(&mut self) -> Message {
        let parameters: serde_json::Map<String, Value> = (self.parameters.iter())
            .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
            .collect();
        let start = json!({
            "accountSid": "",
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 },
        });
        self.message("start", "start", start)
    }

    fn media(&mut self, ulaw: &[u8]) -> Message {
        self.chunk += 1;
        let media = json!({
            "track": "inbound",
            "chunk": self.chunk.to_string(),
            "timestamp": ((self.chunk - 1) * 20).to_string(),
            "payload": BASE64.encode(ulaw),
        });
        self.message("media", "media", media)
    }

    fn dtmf(&mut self, key: char) -> Message {
        let dtmf = json!({ "track": "inbound_track", "digit": key.to_string() });
        self.message("dtmf", "dtmf", dtmf)
    }

    fn stop(&mut self) -> Message {
        let stop = json!({ "accountSid": "", "callSid": self.call_sid });
        self.message("stop", "stop", stop)
    }

    async fn send_marks<S>(&mut self, socket: &mut S, marks: Vec<String>) -> Result<(), String>
    where
        S: futures_util::Sink<Message> + Unpin,
        S::Error: std::fmt::Display,
    {
        for name in marks {
            let mark = self.message("mark", "mark", json!({ "name": name }));
            socket
                .send(mark)
                .await
                .map_err(|e| format!("the server went away: {e}"))?;
        }
        Ok(())
    }
}

/// What the server sent to play: μ-law waiting its turn, and the marks
/// among it.
struct Playing {
    queued: VecDeque<u8>,
    /// Each mark, with how many bytes will have played when it is reached.
    marks: VecDeque<(u64, String)>,
    played: u64,
    limit: usize,
    /// The packets' own timeline: on at 20 ms a tick, played or not.
    timestamp: u32,
    source: u32,
    talking: bool,
}

/// What a message from the server came to.
#[derive(Debug)]
enum Taken {
    Nothing,
    /// Audio past the limit, dropped.
    Dropped,
    /// Marks now reached, to echo.
    Marks(Vec<String>),
}

impl Playing {
    fn new(ahead: Duration) -> Self {
        Playing {
            queued: VecDeque::new(),
            marks: VecDeque::new(),
            played: 0,
            limit: ahead.as_millis() as usize * 8,
            timestamp: rand_u32(),
            source: rand_u32(),
            talking: false,
        }
    }

    /// Takes a message from the server.
    fn take(&mut self, text: &str) -> Result<Taken, String> {
        let message: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match message["event"].as_str() {
            Some("media") => {
                let payload = message["media"]["payload"]
                    .as_str()
                    .ok_or("a media message without media.payload")?;
                let ulaw = BASE64
                    .decode(payload)
                    .map_err(|e| format!("media.payload is not base64: {e}"))?;
                if self.queued.len() + ulaw.len() > self.limit {
                    return Ok(Taken::Dropped);
                }
                self.queued.extend(ulaw);
                Ok(Taken::Nothing)
            }
            Some("mark") => {
                let name = message["mark"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let at = self.played + self.queued.len() as u64;
                self.marks.push_back((at, name));
                Ok(Taken::Marks(self.reached()))
            }
            Some("clear") => {
                self.played += self.queued.len() as u64;
                self.queued.clear();
                Ok(Taken::Marks(self.reached()))
            }
            // Twilio's own messages, and others, are none of the call's.
            _ => Ok(Taken::Nothing),
        }
    }

    /// Plays the next 20 ms (if there is any) into the call; the marks it
    /// reached.
    fn play_next(&mut self, sender: &RtpSender) -> Vec<String> {
        self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
        if self.queued.is_empty() {
            self.talking = false;
            return Vec::new();
        }
        let take = self.queued.len().min(FRAME);
        let mut frame: Vec<u8> = self.queued.drain(..take).collect();
        frame.resize(FRAME, SILENCE);
        self.played += take as u64;
        sender.relay(&MediaFrame {
            kind: FrameKind::Audio(Codec::Pcmu),
            marker: !self.talking,
            source: self.source,
            timestamp: self.timestamp,
            payload: &frame,
        });
        self.talking = true;
        self.reached()
    }

    fn reached(&mut self) -> Vec<String> {
        let mut reached = Vec::new();
        while let Some((at, _)) = self.marks.front()
            && *at <= self.played
        {
            reached.extend(self.marks.pop_front().map(|(_, name)| name));
        }
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(bytes: usize) -> String {
        json!({ "event": "media", "media": { "payload": BASE64.encode(vec![0x11; bytes]) } })
            .to_string()
    }

    fn mark(name: &str) -> String {
        json!({ "event": "mark", "mark": { "name": name } }).to_string()
    }

    fn marks(taken: Result<Taken, String>) -> Vec<String> {
        match taken.unwrap() {
            Taken::Marks(marks) => marks,
            _ => panic!("marks expected"),
        }
    }

    #[tokio::test]
    async fn audio_plays_in_order_marks_follow_it_and_clear_drops_the_rest() {
        let loopback = "127.0.0.1".parse().unwrap();
        let rtp = crate::media::Rtp::bind(loopback, loopback, None).unwrap();
        let sender = rtp.sender();
        // 40 ms of room.
        let mut playing = Playing::new(Duration::from_millis(40));
        assert!(matches!(playing.take(&media(200)), Ok(Taken::Nothing)));
        assert!(marks(playing.take(&mark("a"))).is_empty(), "not played yet");
        assert!(
            matches!(playing.take(&media(200)), Ok(Taken::Dropped)),
            "past 40 ms ahead"
        );
        assert!(playing.play_next(&sender).is_empty(), "160 of 200 played");
        assert_eq!(playing.play_next(&sender), ["a"], "the rest, then the mark");
        assert!(playing.play_next(&sender).is_empty(), "nothing left");

        playing.take(&media(300)).unwrap();
        assert!(marks(playing.take(&mark("b"))).is_empty());
        assert_eq!(marks(playing.take(r#"{"event":"clear"}"#)), ["b"]);
        assert!(playing.queued.is_empty());

        assert!(
            playing
                .take("not json")
                .unwrap_err()
                .starts_with("not JSON")
        );
        let bad = json!({ "event": "media", "media": { "payload": "%%%" } }).to_string();
        assert!(playing.take(&bad).unwrap_err().contains("not base64"));
        assert!(matches!(
            playing.take(r#"{"event":"something-else"}"#),
            Ok(Taken::Nothing)
        ));
    }

    #[test]
    fn packets_that_overtook_a_late_one_wait_for_it_a_little() {
        let mut reorder = Reorder::default();
        let packet = |n: u8| vec![n];
        assert_eq!(
            reorder.push(65_534, packet(1)),
            [packet(1)],
            "in order: at once"
        );
        // 65,535 is late; 0 and 1 (past the wrap) wait for it.
        assert!(reorder.push(0, packet(3)).is_empty());
        assert!(reorder.push(1, packet(4)).is_empty());
        assert_eq!(
            reorder.push(65_535, packet(2)),
            [packet(2), packet(3), packet(4)]
        );
        assert!(reorder.push(65_535, packet(2)).is_empty(), "a duplicate");
        // 2 never comes: three wait for it, and the fourth gives up on it.
        for (sequence, n) in [(3, 6), (4, 7), (5, 8)] {
            assert!(reorder.push(sequence, packet(n)).is_empty());
        }
        let due = reorder.push(6, packet(9));
        assert_eq!(due, [packet(6), packet(7), packet(8), packet(9)]);
        assert!(reorder.push(2, packet(5)).is_empty(), "too late now");
        assert_eq!(reorder.push(7, packet(10)), [packet(10)]);
        // A new source's numbering, far off: it starts over at once.
        assert_eq!(reorder.push(30_000, packet(11)), [packet(11)]);
        assert_eq!(reorder.push(30_001, packet(12)), [packet(12)]);
    }
}
