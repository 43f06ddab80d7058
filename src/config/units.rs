//! Units used by the config: human durations (`"250ms"`, `"30s"`, `"5m"`) and byte sizes
//! (`16384`, `"16KiB"`, `"10MiB"`). Parsed once at load time; the request path only sees
//! `std::time::Duration` and `u64`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration parsed from a config string such as `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// A byte size parsed from an integer or a string such as `"16KiB"` or `"10MiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

/// Why a duration string is refused; each message names the input and what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// Digits alone, e.g. `"30"`.
    #[error("invalid duration \"{0}\": missing unit (use ms, s, m, h or d, e.g. \"30s\")")]
    MissingUnit(String),
    /// No number before the unit.
    #[error("invalid duration \"{0}\": expected a number followed by ms, s, m, h or d")]
    NotANumber(String),
    /// A unit other than ms, s, m, h or d.
    #[error("invalid duration \"{input}\": unknown unit \"{unit}\" (use ms, s, m, h or d)")]
    UnknownUnit {
        /// The whole (trimmed) input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// More milliseconds than a `u64` holds.
    #[error("invalid duration \"{0}\": too large")]
    TooLarge(String),
}

/// Why a size string is refused; each message names the input and what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    /// No number before the unit.
    #[error("invalid size \"{0}\": expected a number of bytes or e.g. \"16KiB\"")]
    NotANumber(String),
    /// A unit other than B, KiB, MiB or GiB (and their short forms).
    #[error("invalid size \"{input}\": unknown unit \"{unit}\" (use B, KiB, MiB or GiB)")]
    UnknownUnit {
        /// The whole (trimmed) input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// More bytes than a `u64` holds.
    #[error("invalid size \"{0}\": too large")]
    TooLarge(String),
}

/// Parses a duration string; the message says what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| DurationError::MissingUnit(s.to_string()))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_string()))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(DurationError::UnknownUnit {
                input: s.to_string(),
                unit: unit.to_string(),
            });
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| DurationError::TooLarge(s.to_string()))
}

/// Parses a size string; integers are bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| SizeError::NotANumber(s.to_string()))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" | "k" | "kB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        other => {
            return Err(SizeError::UnknownUnit {
                input: s.to_string(),
                unit: other.to_string(),
            });
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes or a string such as \"16KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("invalid size: must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    }

    #[test]
    fn rejects_bad_durations() {
        assert!(
            parse_duration("30")
                .unwrap_err()
                .to_string()
                .contains("missing unit")
        );
        assert!(parse_duration("s").is_err());
        assert!(
            parse_duration("3x")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(parse_duration("-3s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("").is_err());
    }

    /// Each refusal's text, byte for byte: it is the config problem users read.
    #[test]
    fn refusals_keep_their_text() {
        let duration = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert_eq!(
            duration(" 30 "),
            "invalid duration \"30\": missing unit (use ms, s, m, h or d, e.g. \"30s\")"
        );
        assert_eq!(
            duration("s"),
            "invalid duration \"s\": expected a number followed by ms, s, m, h or d"
        );
        assert_eq!(
            duration("3x"),
            "invalid duration \"3x\": unknown unit \"x\" (use ms, s, m, h or d)"
        );
        assert_eq!(
            duration("18446744073709551615d"),
            "invalid duration \"18446744073709551615d\": too large"
        );
        let size = |s: &str| parse_size(s).unwrap_err().to_string();
        assert_eq!(
            size("x"),
            "invalid size \"x\": expected a number of bytes or e.g. \"16KiB\""
        );
        assert_eq!(
            size("10XB"),
            "invalid size \"10XB\": unknown unit \"XB\" (use B, KiB, MiB or GiB)"
        );
        assert_eq!(
            size("18446744073709551615GiB"),
            "invalid size \"18446744073709551615GiB\": too large"
        );
    }
}
