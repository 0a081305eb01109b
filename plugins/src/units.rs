//! Durations (`500ms`, `15s`, `2h`) and sizes (`100KB`, `1MB`) as written in the config.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration with a unit: `ms`, `s`, `m`, `h` or `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// A size in bytes: a number with `B`, `KB`, `MB` or `GB` (powers of 1024; `K`/`M`/`G` and any
/// case accepted), or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

fn split_number(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n = s[..digits].parse().ok()?;
    Some((n, s[digits..].trim()))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{s}` (write e.g. 500ms, 15s, 5m, 2h, 1d)");
    let (n, unit) = split_number(s.trim()).ok_or_else(bad)?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{s}` is too large"))
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size `{s}` (write e.g. 512B, 100KB, 1MB, 2GB)");
    let (n, unit) = split_number(s.trim()).ok_or_else(bad)?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// Accepts a YAML string or integer and hands its text to `parse`.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::N(n) => n.to_string(),
        Raw::S(s) => s,
    })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = text(d)?;
        parse_size(&s).map(Size).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        for bad in ["", "15", "s", "1.5s", "15x", "-1s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100KB"), Ok(102_400));
        assert_eq!(parse_size("1MB"), Ok(1_048_576));
        assert_eq!(parse_size("10mb"), Ok(10_485_760));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        for bad in ["", "KB", "1TB", "1.5MB", "-1KB", "99999999999GB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
