//! Prompts for `play`: fetched over HTTP(S) under the app's outbound rules,
//! read from WAV (as `say`'s speech is too), and coded as G.711.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;

use super::g711;
use super::outbound::{self, Rules};
use sessionbox_host::telephony::CallContext;
use sessionbox_host::telephony::Codec;

/// A prompt's audio: 8 kHz mono linear samples.
pub type Samples = Vec<i16>;

/// The prompt built into Sessionbox, for trying calls out without hosting a
/// file.
pub const CHIME: &str = "bundled:chime";

/// Fetches and decodes the prompt at `url`, under `rules`. Every error is
/// a sentence for the scenario's author.
pub async fn fetch(url: &str, context: &CallContext, rules: Rules) -> Result<Samples, String> {
    if url == CHIME {
        return Ok(chime());
    }
    let limits = &context.limits;
    let total: Duration = limits.http_total_timeout;
    let body = tokio::time::timeout(total, get(url, context, rules))
        .await
        .map_err(|_| format!("GET {url}: no whole answer within {} ms", total.as_millis()))??;
    read_wav(&body).map_err(|e| format!("{url}: {e}"))
}

/// GETs `url` under `rules` ([`outbound::connect`]). No redirects are
/// followed.
async fn get(url: &str, context: &CallContext, rules: Rules) -> Result<Vec<u8>, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let tls = match uri.scheme_str().unwrap_or_default() {
        "http" => false,
        "https" => true,
        _ => {
            return Err(format!(
                "prompts are fetched over http or https, not {url:?}"
            ));
        }
    };
    let stream = outbound::connect(&uri, tls, context, rules)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let failed = |e: &dyn std::fmt::Display| format!("GET {url}: {e}");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    tokio::spawn(connection);
    let host = uri.host().unwrap_or_default();
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(&e))?;
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    let limit = context.limits.prompt_bytes;
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| match e.downcast::<LengthLimitError>() {
            Ok(_) => format!("prompts are limited to {limit} bytes; {url} is longer"),
            Err(e) => failed(&e),
        })?;
    Ok(body.to_bytes().to_vec())
}

/// Two falling notes (E5, C5), each fading over 400 ms.
fn chime() -> Samples {
    [659.25, 523.25]
        .iter()
        .flat_map(|frequency| {
            (0..3200).map(move |n| {
                let t = f64::from(n) / 8000.0;
                let fade = (-t * 6.0).exp();
                ((t * frequency * std::f64::consts::TAU).sin() * fade * 12000.0) as i16
            })
        })
        .collect()
}

/// Reads an 8 kHz mono WAV: 16-bit PCM, A-law or μ-law.
pub(crate) fn read_wav(bytes: &[u8]) -> Result<Samples, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a WAV file".into());
    }
    let mut format = None;
    let mut rest = &bytes[12..];
    while rest.len() >= 8 {
        let id = &rest[0..4];
        let size = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        let body = rest.get(8..8 + size).unwrap_or(&rest[8..]);
        match id {
            b"fmt " => format = Some(read_format(body)?),
            b"data" => {
                let format = format.ok_or("the WAV's data comes before its format")?;
                return Ok(decode(format, body));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let next = (8 + size + (size & 1)).min(rest.len());
        rest = &rest[next..];
    }
    Err("the WAV has no audio data".into())
}

#[derive(Debug, Clone, Copy)]
enum Encoding {
    Linear16,
    Alaw,
    Ulaw,
}

fn read_format(fmt: &[u8]) -> Result<Encoding, String> {
    if fmt.len() < 16 {
        return Err("the WAV's format chunk is short".into());
    }
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let rate = u32::from_le_bytes(fmt[4..8].try_into().expect("4 bytes"));
    let bits = u16_at(14);
    // WAVE_FORMAT_EXTENSIBLE names the real format in its sub-format GUID.
    if tag == 0xFFFE && fmt.len() >= 26 {
        tag = u16_at(24);
    }
    if channels != 1 || rate != 8000 {
        return Err(format!(
            "prompts must be 8 kHz mono; this WAV is {rate} Hz with {channels} channels"
        ));
    }
    match (tag, bits) {
        (1, 16) => Ok(Encoding::Linear16),
        (6, 8) => Ok(Encoding::Alaw),
        (7, 8) => Ok(Encoding::Ulaw),
        _ => Err(format!(
            "prompts must be 16-bit PCM, A-law or μ-law; this WAV is format {tag} with {bits} bits"
        )),
    }
}

fn decode(encoding: Encoding, data: &[u8]) -> Samples {
    match encoding {
        Encoding::Linear16 => data
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect(),
        Encoding::Alaw => g711::decode(Codec::Pcma, data),
        Encoding::Ulaw => g711::decode(Codec::Pcmu, data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV of `data` in `tag` format, 8 kHz mono unless told otherwise.
    pub(crate) fn wav(tag: u16, bits: u16, rate: u32, data: &[u8]) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&1u16.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(bits) / 8).to_le_bytes());
        fmt.extend_from_slice(&(bits / 8).to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        let mut out = b"RIFF\0\0\0\0WAVE".to_vec();
        for (id, body) in [(b"fmt ", fmt.as_slice()), (b"data", data)] {
            out.extend_from_slice(id);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
        }
        out
    }

    #[test]
    fn wavs_in_each_encoding_are_read() {
        let pcm: Vec<u8> = [1000i16, -1000, 0]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(read_wav(&wav(1, 16, 8000, &pcm)).unwrap(), [1000, -1000, 0]);
        let ulaw = read_wav(&wav(7, 8, 8000, &[0xFF, 0x7F])).unwrap();
        assert_eq!(ulaw, [0, 0], "both μ-law zeros");
        assert_eq!(read_wav(&wav(6, 8, 8000, &[0xD5; 160])).unwrap().len(), 160);
    }

    #[test]
    fn other_wavs_are_refused_with_the_reason() {
        assert_eq!(
            read_wav(&wav(1, 16, 44100, &[0; 4])).unwrap_err(),
            "prompts must be 8 kHz mono; this WAV is 44100 Hz with 1 channels"
        );
        assert!(
            read_wav(&wav(3, 32, 8000, &[0; 8]))
                .unwrap_err()
                .contains("format 3 with 32 bits")
        );
        assert_eq!(read_wav(b"ID3 an mp3").unwrap_err(), "not a WAV file");
    }
}
