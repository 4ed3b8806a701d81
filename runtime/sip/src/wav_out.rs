//! A call without a network whose audio is written to a WAV file: what
//! `sessionbox run --call … --audio-out call.wav` gives a scenario's author
//! to listen to, locally, with the same speech and prompts a real call
//! plays.
//!
//! The far end answers at once, as the in-process one does; each `say` and
//! `play` is rendered (synthesized, or fetched under the app's rules) and
//! appended to the file, in the order the scenario asked for them, then
//! reported finished. What a failed one would have been is in the session
//! log, as on a real call.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::outbound::Rules;
use super::prompt::{self, Samples};
use super::speech;
use sessionbox_host::sync::MutexExt;
use sessionbox_host::telephony::{CallAction, CallContext, CallLink, InProcessLink};

/// An 8 kHz, 16-bit, mono WAV file being written; its header always says
/// how much it holds, so it plays even while the session runs.
pub struct WavOut(Mutex<File>);

impl WavOut {
    pub fn create(path: &Path) -> std::io::Result<Arc<WavOut>> {
        let mut file = File::create(path)?;
        file.write_all(&header(0))?;
        Ok(Arc::new(WavOut(Mutex::new(file))))
    }

    fn append(&self, samples: &[i16]) -> std::io::Result<()> {
        let mut file = self.0.locked();
        let end = file.seek(SeekFrom::End(0))?;
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        file.write_all(&bytes)?;
        let data = (end - 44) as u32 + bytes.len() as u32;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header(data))
    }

    /// The far end of an incoming call whose audio goes to this file.
    pub fn link(self: &Arc<Self>, context: CallContext) -> Box<dyn CallLink> {
        let (actions, mut queue) = mpsc::unbounded_channel::<CallAction>();
        let out = Arc::clone(self);
        let link = WavLink {
            in_process: InProcessLink(context.clone()),
            actions,
        };
        tokio::spawn(async move {
            while let Some(action) = queue.recv().await {
                let (what, samples) = match action {
                    CallAction::Say { text, language } => (
                        "say",
                        speech::synthesize(&text, language.as_deref(), &context)
                            .await
                            .map(|spoken| Samples::clone(&spoken)),
                    ),
                    CallAction::Play { url } => {
                        ("play", prompt::fetch(&url, &context, Rules::App).await)
                    }
                    _ => continue,
                };
                match samples.map(|samples| out.append(&samples)) {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => context.note(&format!("{what}: writing the audio: {error}")),
                    Err(error) => context.note(&format!("{what}: {error}")),
                }
                context.playback_finished();
            }
        });
        Box::new(link)
    }
}

struct WavLink {
    /// What it does besides playing: what a far end in process does.
    in_process: InProcessLink,
    /// What is to be heard, in order.
    actions: mpsc::UnboundedSender<CallAction>,
}

impl CallLink for WavLink {
    fn act(&self, action: CallAction) {
        match action {
            CallAction::Say { .. } | CallAction::Play { .. } => {
                let _ = self.actions.send(action);
            }
            action => self.in_process.act(action),
        }
    }
}

/// A canonical 44-byte header for `data` bytes of 8 kHz 16-bit mono PCM.
fn header(data: u32) -> [u8; 44] {
    let mut header = [0u8; 44];
    header[0..4].copy_from_slice(b"RIFF");
    header[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    header[8..16].copy_from_slice(b"WAVEfmt ");
    header[16..20].copy_from_slice(&16u32.to_le_bytes());
    header[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    header[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    header[24..28].copy_from_slice(&8_000u32.to_le_bytes());
    header[28..32].copy_from_slice(&16_000u32.to_le_bytes()); // bytes per second
    header[32..34].copy_from_slice(&2u16.to_le_bytes()); // bytes per frame
    header[34..36].copy_from_slice(&16u16.to_le_bytes());
    header[36..40].copy_from_slice(b"data");
    header[40..44].copy_from_slice(&data.to_le_bytes());
    header
}
