//! G.711 (μ-law and A-law), after the ITU-T reference and Sun's g711.c:
//! prompts are coded with it, WAVs in it decoded, and a bridge between a
//! PCMU call and a PCMA call transcodes with it.

use sessionbox_host::telephony::Codec;

/// Codes linear samples as `codec`.
pub fn encode(codec: Codec, samples: &[i16]) -> Vec<u8> {
    match codec {
        Codec::Pcmu => samples.iter().map(|&s| linear_to_ulaw(s)).collect(),
        Codec::Pcma => samples.iter().map(|&s| linear_to_alaw(s)).collect(),
    }
}

/// Decodes `codec` bytes to linear samples.
pub fn decode(codec: Codec, bytes: &[u8]) -> Vec<i16> {
    match codec {
        Codec::Pcmu => bytes.iter().map(|&b| ulaw_to_linear(b)).collect(),
        Codec::Pcma => bytes.iter().map(|&b| alaw_to_linear(b)).collect(),
    }
}

/// Recodes `from` bytes as `to` bytes, into `out` (whose length it sets).
pub fn transcode(from: Codec, to: Codec, bytes: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(bytes.iter().map(|&b| match (from, to) {
        (Codec::Pcmu, Codec::Pcma) => linear_to_alaw(ulaw_to_linear(b)),
        (Codec::Pcma, Codec::Pcmu) => linear_to_ulaw(alaw_to_linear(b)),
        _ => b,
    }));
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(ULAW_CLIP) + ULAW_BIAS;
    // The segment: where the highest set bit of the 8 bits above the
    // mantissa is.
    let exponent = (31 - (s >> 7).max(1).leading_zeros()) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

fn ulaw_to_linear(byte: u8) -> i16 {
    let byte = !byte;
    let exponent = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }) as i16
}

fn linear_to_alaw(sample: i16) -> u8 {
    let s = i32::from(sample) >> 3; // A-law codes 13 bits
    let (sign, magnitude) = if s >= 0 { (0xD5, s) } else { (0x55, -s - 1) };
    let magnitude = magnitude.min(0x0FFF);
    let byte = if magnitude < 0x20 {
        (magnitude >> 1) as u8
    } else {
        let exponent = (31 - magnitude.leading_zeros()) as i32 - 4;
        ((exponent << 4) | ((magnitude >> exponent) & 0x0F)) as u8
    };
    byte ^ sign
}

fn alaw_to_linear(byte: u8) -> i16 {
    let byte = byte ^ 0x55;
    let exponent = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0F);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if byte & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_round_trips_within_its_step() {
        for sample in (-32768..=32767).step_by(97).map(|s: i32| s as i16) {
            let tolerance = (i32::from(sample).abs() / 16).max(16);
            let mu = i32::from(ulaw_to_linear(linear_to_ulaw(sample)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(sample)));
            assert!(
                (mu - i32::from(sample)).abs() <= tolerance,
                "μ-law {sample} -> {mu}"
            );
            assert!(
                (a - i32::from(sample)).abs() <= tolerance,
                "A-law {sample} -> {a}"
            );
        }
        // Silence codes as the well-known idle patterns.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
    }

    #[test]
    fn transcoding_keeps_the_sound_within_a_step() {
        let samples: Vec<i16> = (-32768..=32767)
            .step_by(251)
            .map(|s: i32| s as i16)
            .collect();
        let mut out = Vec::new();
        transcode(
            Codec::Pcmu,
            Codec::Pcma,
            &encode(Codec::Pcmu, &samples),
            &mut out,
        );
        for (&sample, a) in samples.iter().zip(decode(Codec::Pcma, &out)) {
            let tolerance = (i32::from(sample).abs() / 8).max(32);
            assert!(
                (i32::from(a) - i32::from(sample)).abs() <= tolerance,
                "{sample} -> {a}"
            );
        }
        transcode(Codec::Pcma, Codec::Pcmu, &[0xD5; 4], &mut out);
        let silence = decode(Codec::Pcmu, &out);
        assert!(
            silence.iter().all(|s| s.abs() <= 8),
            "A-law silence stays silent: {silence:?}"
        );
    }
}
