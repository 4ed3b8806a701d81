//! Call recordings: what a call's far end says and what it hears, captured
//! by the call's media as it happens ([`Recorder`]) and kept, once finished,
//! wherever the node keeps them ([`RecordingStore`]).
//!
//! Both tracks are laid on one timeline at 8 kHz from the moment recording
//! began. The far end's audio is placed by its RTP timestamps, anchored at
//! the arrival of its first packet: that is the recording's jitter buffer,
//! putting late and reordered packets where they belong and leaving lost
//! ones as silence. What the far end hears is placed as it is sent, each
//! packet following the last while the clock agrees. A stream that jumps
//! (a new source, a pause in sending) is anchored again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::bindings::CallId;
use crate::sync::MutexExt;
use crate::telephony::{CallEvent, CallEvents};

/// Names a recording within its session (from 1): its `{n}` in the API.
pub type RecordingId = u32;

/// Samples a second.
const RATE: usize = 8_000;
/// How far a track may drift from the clock before it is anchored again:
/// 60 ms, three packets.
const DRIFT: usize = 480;

/// A finished recording, as it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: RecordingId,
    pub call: CallId,
    pub channels: u16,
    pub duration: Duration,
    /// A WAV file: 16-bit PCM, 8 kHz.
    pub wav: Vec<u8>,
}

/// Where a node keeps an app's recordings: with the session's history.
pub trait RecordingStore: Send + Sync + 'static {
    /// Keeps `recording` of the session `session`, unless the app's
    /// recordings would pass `app_bytes`; Err says why not.
    fn keep(
        &self,
        session: &str,
        recording: Recording,
        app_bytes: u64,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// Where a finished recording goes, and who hears of it.
pub struct Destination {
    pub store: Arc<dyn RecordingStore>,
    pub session: String,
    pub app_bytes: u64,
    pub events: Arc<dyn CallEvents>,
}

/// One recording in progress: its call's media feeds it.
pub struct Recorder {
    id: RecordingId,
    call: CallId,
    stereo: bool,
    started: Instant,
    max_samples: usize,
    /// None once finished: later audio is dropped.
    tracks: Mutex<Option<Tracks>>,
    destination: Destination,
}

#[derive(Default)]
struct Tracks {
    /// What the far end says.
    heard: Track,
    /// What the far end hears.
    sent: Track,
    /// Where the far end's stream is on the timeline: its source, and the
    /// timeline position of its timestamp 0.
    heard_anchor: Option<(u32, i64)>,
}

#[derive(Default)]
struct Track {
    samples: Vec<i16>,
    /// Where the next of its audio goes, if it keeps on.
    cursor: usize,
}

impl Track {
    /// Lays `samples` at `at`, as far as `max` allows; what lies between
    /// the track's end and `at` stays silent.
    fn lay(&mut self, at: usize, samples: &[i16], max: usize) {
        let end = (at + samples.len()).min(max);
        if end <= at {
            return;
        }
        if self.samples.len() < end {
            self.samples.resize(end, 0);
        }
        self.samples[at..end].copy_from_slice(&samples[..end - at]);
        self.cursor = end;
    }
}

impl Recorder {
    pub fn new(
        id: RecordingId,
        call: CallId,
        stereo: bool,
        max: Duration,
        destination: Destination,
    ) -> Self {
        Recorder {
            id,
            call,
            stereo,
            started: Instant::now(),
            max_samples: (max.as_millis() as usize).saturating_mul(RATE / 1000),
            tracks: Mutex::new(Some(Tracks::default())),
            destination,
        }
    }

    pub fn id(&self) -> RecordingId {
        self.id
    }

    pub fn call(&self) -> CallId {
        self.call
    }

    /// The timeline position now.
    fn now(&self) -> usize {
        (self.started.elapsed().as_micros() as usize).saturating_mul(RATE) / 1_000_000
    }

    /// The far end's audio: `samples` of its stream `source` at RTP
    /// `timestamp`.
    pub fn heard(&self, source: u32, timestamp: u32, samples: &[i16]) {
        let now = self.now();
        let mut tracks = self.tracks.locked();
        let Some(tracks) = tracks.as_mut() else {
            return;
        };
        let placed = |origin: i64| origin + i64::from(timestamp);
        let at = match tracks.heard_anchor {
            Some((anchored, origin))
                if anchored == source && placed(origin).abs_diff(now as i64) <= DRIFT as u64 =>
            {
                placed(origin)
            }
            _ => {
                tracks.heard_anchor = Some((source, now as i64 - i64::from(timestamp)));
                now as i64
            }
        };
        tracks
            .heard
            .lay(at.max(0) as usize, samples, self.max_samples);
    }

    /// Audio the far end is sent now.
    pub fn sent(&self, samples: &[i16]) {
        let now = self.now();
        let mut tracks = self.tracks.locked();
        let Some(tracks) = tracks.as_mut() else {
            return;
        };
        let cursor = tracks.sent.cursor;
        let at = if cursor.abs_diff(now) <= DRIFT {
            cursor
        } else {
            now
        };
        tracks.sent.lay(at, samples, self.max_samples);
    }

    /// Ends the recording (once; later calls do nothing) and keeps it; the
    /// scenario hears `recording-finished` once it is kept, or why not.
    pub fn finish(&self) {
        let Some(tracks) = self.tracks.locked().take() else {
            return;
        };
        // Up to now, and the end of audio already sent or heard (a packet
        // covers the 20 ms after it), in whole milliseconds, so that the
        // duration told is the data's.
        let per_ms = RATE / 1000;
        let laid = tracks.heard.samples.len().max(tracks.sent.samples.len());
        let length = self.now().max(laid).min(self.max_samples).div_ceil(per_ms) * per_ms;
        let recording = Recording {
            id: self.id,
            call: self.call,
            channels: if self.stereo { 2 } else { 1 },
            duration: Duration::from_millis((length / per_ms) as u64),
            wav: wav(&tracks, length, self.stereo),
        };
        let Destination {
            store,
            session,
            app_bytes,
            events,
        } = &self.destination;
        let (id, call, duration) = (self.id, self.call, recording.duration);
        let kept = store.keep(session, recording, *app_bytes);
        let events = Arc::clone(events);
        tokio::spawn(async move {
            let error = kept.await.err();
            events.send(
                call,
                CallEvent::RecordingFinished {
                    recording: id,
                    duration,
                    error,
                },
            );
        });
    }
}

/// The WAV of `length` samples of each track: two channels (the far end
/// left, what it heard right), or one with both mixed.
fn wav(tracks: &Tracks, length: usize, stereo: bool) -> Vec<u8> {
    let sample = |track: &Track, index: usize| track.samples.get(index).copied().unwrap_or(0);
    let channels: u16 = if stereo { 2 } else { 1 };
    let data_bytes = length * 2 * usize::from(channels);
    let mut wav = Vec::with_capacity(44 + data_bytes);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_bytes as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&channels.to_le_bytes());
    wav.extend_from_slice(&(RATE as u32).to_le_bytes());
    wav.extend_from_slice(&(RATE as u32 * 2 * u32::from(channels)).to_le_bytes());
    wav.extend_from_slice(&(2 * channels).to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data_bytes as u32).to_le_bytes());
    for index in 0..length {
        let (heard, sent) = (sample(&tracks.heard, index), sample(&tracks.sent, index));
        if stereo {
            wav.extend_from_slice(&heard.to_le_bytes());
            wav.extend_from_slice(&sent.to_le_bytes());
        } else {
            wav.extend_from_slice(&heard.saturating_add(sent).to_le_bytes());
        }
    }
    wav
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that keeps what it is given.
    #[derive(Default)]
    struct Kept(Mutex<Vec<Recording>>);

    impl RecordingStore for Kept {
        fn keep(
            &self,
            _session: &str,
            recording: Recording,
            app_bytes: u64,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
            let result = if recording.wav.len() as u64 > app_bytes {
                Err(format!(
                    "the app's recordings are limited to {app_bytes} bytes"
                ))
            } else {
                self.0.locked().push(recording);
                Ok(())
            };
            Box::pin(std::future::ready(result))
        }
    }

    /// Call events as the session's queue would receive them.
    #[derive(Default)]
    struct Heard(Mutex<Vec<(CallId, CallEvent)>>);

    impl CallEvents for Heard {
        fn send(&self, call: CallId, event: CallEvent) {
            self.0.locked().push((call, event));
        }
    }

    fn recorder(stereo: bool, max: Duration, app_bytes: u64) -> (Recorder, Arc<Kept>, Arc<Heard>) {
        let (kept, heard) = (Arc::new(Kept::default()), Arc::new(Heard::default()));
        let destination = Destination {
            store: Arc::clone(&kept) as Arc<dyn RecordingStore>,
            session: "s".into(),
            app_bytes,
            events: Arc::clone(&heard) as Arc<dyn CallEvents>,
        };
        (Recorder::new(1, 7, stereo, max, destination), kept, heard)
    }

    /// The samples of channel `channel` of a kept WAV.
    fn channel(wav: &[u8], channels: usize, channel: usize) -> Vec<i16> {
        wav[44..]
            .chunks_exact(2)
            .skip(channel)
            .step_by(channels)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect()
    }

    async fn finished(kept: &Kept, heard: &Heard) -> Recording {
        // The store's answer comes back on a task of its own.
        for _ in 0..100 {
            if !heard.0.locked().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let events = heard.0.locked();
        assert!(
            matches!(
                events[..],
                [(
                    7,
                    CallEvent::RecordingFinished {
                        recording: 1,
                        error: None,
                        ..
                    }
                )]
            ),
            "{events:?}"
        );
        kept.0.locked()[0].clone()
    }

    #[tokio::test(start_paused = true)]
    async fn the_far_end_is_placed_by_its_timestamps_and_lost_packets_are_silence() {
        let (recorder, kept, heard) = recorder(true, Duration::from_secs(60), u64::MAX);
        // Packets 0, 2 and (late, after 3) 1 of a stream; 3 was lost.
        recorder.heard(9, 1000, &[100; 160]);
        tokio::time::advance(Duration::from_millis(40)).await;
        recorder.heard(9, 1320, &[300; 160]);
        tokio::time::advance(Duration::from_millis(30)).await;
        recorder.heard(9, 1160, &[200; 160]);
        tokio::time::advance(Duration::from_millis(50)).await;
        recorder.heard(9, 1640, &[500; 160]);
        // What the far end heard, in two packets 20 ms apart (a millisecond
        // late: they still follow on).
        recorder.sent(&[-1; 160]);
        tokio::time::advance(Duration::from_millis(21)).await;
        recorder.sent(&[-2; 160]);
        tokio::time::advance(Duration::from_millis(59)).await;
        recorder.finish();
        recorder.heard(9, 1800, &[600; 160]);
        let recording = finished(&kept, &heard).await;
        assert_eq!(
            (recording.channels, recording.duration),
            (2, Duration::from_millis(200))
        );
        let left = channel(&recording.wav, 2, 0);
        assert_eq!(left.len(), 1600);
        let expected: Vec<i16> = [100, 200, 300, 0, 500]
            .iter()
            .flat_map(|&v| [v; 160])
            .chain([0; 800])
            .collect();
        assert_eq!(
            left, expected,
            "in timestamp order, the lost packet silent, nothing after the end"
        );
        let right = channel(&recording.wav, 2, 1);
        let start = 120 * 8;
        assert!(right[..start].iter().all(|&s| s == 0));
        assert_eq!(right[start..start + 160], [-1; 160]);
        assert_eq!(right[start + 160..start + 320], [-2; 160], "following on");
    }

    #[tokio::test(start_paused = true)]
    async fn one_channel_mixes_both_and_the_longest_is_kept_to() {
        let (recorder, kept, heard) = recorder(false, Duration::from_millis(30), u64::MAX);
        recorder.heard(1, 0, &[1000; 160]);
        recorder.sent(&[24; 160]);
        tokio::time::advance(Duration::from_millis(20)).await;
        recorder.heard(1, 160, &[1000; 160]);
        tokio::time::advance(Duration::from_secs(5)).await;
        recorder.finish();
        let recording = finished(&kept, &heard).await;
        assert_eq!(
            (recording.channels, recording.duration),
            (1, Duration::from_millis(30))
        );
        let mono = channel(&recording.wav, 1, 0);
        assert_eq!(mono.len(), 240, "30 ms");
        assert!(mono[..160].iter().all(|&s| s == 1024) && mono[160..].iter().all(|&s| s == 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_recording_past_the_apps_bytes_is_not_kept_and_the_scenario_hears_why() {
        let (recorder, kept, heard) = recorder(false, Duration::from_secs(1), 100);
        tokio::time::advance(Duration::from_millis(100)).await;
        recorder.finish();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(kept.0.locked().is_empty());
        let events = heard.0.locked();
        let [
            (
                7,
                CallEvent::RecordingFinished {
                    error: Some(error), ..
                },
            ),
        ] = &events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(error, "the app's recordings are limited to 100 bytes");
    }
}
