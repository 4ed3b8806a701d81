//! Speech for `say`: the text synthesized by flite (Debian's `flite`
//! package, BSD-licensed), whose `kal` voice speaks at 8 kHz, the rate a
//! G.711 call carries, so nothing is resampled.
//!
//! flite runs as a program, one per synthesis, off the tokio workers and
//! under a deadline: the binary builds without it, a node without it says
//! so in the session log, and a synthesizer that crashes or hangs cannot
//! take the node with it.
//!
//! An app may name an HTTP speech service instead (`tts_url` in the node's
//! config, for cloud voices): `GET {tts_url}?text=...&language=...`
//! answers with the speech as a WAV (8 kHz mono). It is the operator's
//! URL, so neither the app's allow list nor the private-address rule
//! applies; its answer is held to the prompt limits.
//!
//! What was said is kept in memory by voice (flite, or the service's URL),
//! language and text, so a menu a thousand callers hear is synthesized once.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::outbound::Rules;
use super::prompt::{self, Samples, read_wav};
use sessionbox_host::sync::MutexExt;
use sessionbox_host::telephony::CallContext;

/// flite's voice: `kal`, a US English male voice recorded at 8 kHz.
const VOICE: &str = "kal";

/// The longest text one `say` speaks: a few minutes of speech.
pub const MAX_TEXT_BYTES: usize = 4_096;

/// How long one synthesis may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// Samples the cache keeps at most, in bytes (about 35 minutes of speech).
const CACHE_BYTES: usize = 32 << 20;

/// `text` spoken for the call of `context`, as 8 kHz samples; every error
/// is a sentence for the scenario's author.
pub async fn synthesize(
    text: &str,
    language: Option<&str>,
    context: &CallContext,
) -> Result<Arc<Samples>, String> {
    let service = context.tts_url.as_deref();
    speakable(text, language, service)?;
    let language = language.unwrap_or("en-US");
    let key = format!("{}\0{language}\0{text}", service.unwrap_or(VOICE));
    if let Some(spoken) = cache().locked().get(&key) {
        return Ok(spoken);
    }
    let spoken = Arc::new(match service {
        Some(url) => ask_service(url, text, language, context).await?,
        None => run_flite(text).await?,
    });
    cache().locked().insert(&key, Arc::clone(&spoken));
    Ok(spoken)
}

/// Why `text` cannot be spoken (in `language`, by the speech service, or by
/// flite without one), if it cannot.
fn speakable(text: &str, language: Option<&str>, service: Option<&str>) -> Result<(), String> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "the text is {} bytes, over the {MAX_TEXT_BYTES} one `say` speaks",
            text.len()
        ));
    }
    match language {
        // A service knows its own languages.
        Some(language) if service.is_none() && !language.to_ascii_lowercase().starts_with("en") => {
            Err(format!(
                "this node's synthesizer (flite) speaks English only, not {language:?}"
            ))
        }
        _ => Ok(()),
    }
}

/// The app's speech service's answer for `text`.
async fn ask_service(
    url: &str,
    text: &str,
    language: &str,
    context: &CallContext,
) -> Result<Samples, String> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("text", text)
        .append_pair("language", language)
        .finish();
    let separator = if url.contains('?') { '&' } else { '?' };
    prompt::fetch(
        &format!("{url}{separator}{query}"),
        context,
        Rules::Operator,
    )
    .await
    .map_err(|error| format!("the app's speech service: {error}"))
}

async fn run_flite(text: &str) -> Result<Samples, String> {
    // The text is an argument (it is short: see MAX_TEXT_BYTES); flite
    // reads no text from a pipe.
    let flite = tokio::process::Command::new("flite")
        .args(["-voice", VOICE, "-o", "/dev/stdout", "-t", text])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "this node has no speech synthesizer: install flite (the Debian package `flite`)"
                    .to_owned()
            }
            _ => format!("starting the speech synthesizer (flite): {e}"),
        })?;
    let output = tokio::time::timeout(DEADLINE, flite.wait_with_output())
        .await
        .map_err(|_| format!("the speech synthesizer took over {} s", DEADLINE.as_secs()))?
        .map_err(|e| format!("the speech synthesizer (flite): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the speech synthesizer (flite) failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    read_wav(&output.stdout).map_err(|e| format!("the speech synthesizer's audio: {e}"))
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// What was said, by text; the oldest goes first past [`CACHE_BYTES`].
#[derive(Default)]
struct Cache {
    spoken: HashMap<String, Arc<Samples>>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Cache {
    fn get(&self, text: &str) -> Option<Arc<Samples>> {
        self.spoken.get(text).cloned()
    }

    fn insert(&mut self, text: &str, spoken: Arc<Samples>) {
        let size = text.len() + 2 * spoken.len();
        if self.spoken.insert(text.to_owned(), spoken).is_some() {
            return;
        }
        self.order.push_back(text.to_owned());
        self.bytes += size;
        while self.bytes > CACHE_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.spoken.remove(&oldest) {
                self.bytes -= oldest.len() + 2 * gone.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_languages_and_long_texts_are_refused_saying_why() {
        let german = speakable("Guten Tag", Some("de-DE"), None).unwrap_err();
        assert!(german.contains("English only"), "{german}");
        let service = Some("http://tts.example/speak");
        assert_eq!(speakable("Guten Tag", Some("de-DE"), service), Ok(()));
        let long = "a".repeat(MAX_TEXT_BYTES + 1);
        let error = speakable(&long, None, service).unwrap_err();
        assert!(error.contains("over the 4096"), "{error}");
    }

    #[test]
    fn the_cache_forgets_the_oldest_past_its_size() {
        let mut cache = Cache::default();
        let minute = Arc::new(vec![0i16; 8_000 * 60]);
        for n in 0..40 {
            cache.insert(&format!("text {n}"), Arc::clone(&minute));
        }
        assert!(cache.bytes <= CACHE_BYTES, "{}", cache.bytes);
        assert!(cache.get("text 0").is_none(), "the oldest went first");
        assert!(cache.get("text 39").is_some());
    }
}
