//! Go duration strings (`300ms`, `1h30m`, `1.5s`), plus `d` for days, as Kuberhealthy users write
//! them; and Go's formatting of a duration (`3.359431829s`), which the v2 status page shows.

use std::time::Duration;

/// Why a text is not a duration; each names the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("{0:?} is negative")]
    Negative(String),
    #[error(
        "{0:?} is not a duration (expected a number followed by a unit such as 30s, 5m, 1h30m)"
    )]
    NotADuration(String),
    #[error("{0:?} has a number without a unit (use ns, us, ms, s, m, h or d)")]
    NoUnit(String),
    #[error("{input:?} has unknown unit {unit:?} (use ns, us, ms, s, m, h or d)")]
    UnknownUnit { input: String, unit: String },
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// Parses a Go duration string. Negative values are rejected: every duration in a HealthCheck is a
/// length of time, and a sign would only ever be a mistake.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    let range = || DurationError::OutOfRange(input.to_string());
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(input.to_string()));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0; // nanoseconds
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_part = &s[start..i];
        let mut frac_part = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let fstart = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_part = &s[fstart..i];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::NotADuration(input.to_string()));
        }
        let ustart = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
            i += 1;
        }
        let unit = &s[ustart..i];
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "" => return Err(DurationError::NoUnit(input.to_string())),
            other => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_string(),
                    unit: other.to_string(),
                })
            }
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| range())?
        };
        let mut value = int.checked_mul(unit_ns).ok_or_else(range)?;
        if !frac_part.is_empty() {
            // Exact decimal fraction of the unit, truncated to nanoseconds as Go does. Digits
            // past the 19th are below a nanosecond even of a day, and more would overflow.
            let mut scale: u128 = 1;
            let mut frac: u128 = 0;
            for c in frac_part.bytes().take(19) {
                frac = frac * 10 + u128::from(c - b'0');
                scale *= 10;
            }
            value += frac * unit_ns / scale;
        }
        total = total.checked_add(value).ok_or_else(range)?;
    }
    // Go's limit: about 290 years.
    if total > i64::MAX as u128 {
        return Err(range());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats like Go's `time.Duration.String()`: `0s`, `1.5µs`, `300ms`, `3.359431829s`, `1h30m0s`.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs_total = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let h = secs_total / 3600;
    let m = (secs_total % 3600) / 60;
    let s = secs_total % 60;
    let sec = frac(u128::from(s as u64) * 1_000_000_000 + sub, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// `value / unit` as a decimal with trailing zeros trimmed.
fn frac(value: u128, unit: u128) -> String {
    let int = value / unit;
    let rem = value % unit;
    if rem == 0 {
        return int.to_string();
    }
    let digits = unit.ilog10() as usize;
    let s = format!("{rem:0digits$}");
    format!("{int}.{}", s.trim_end_matches('0'))
}

/// A compact human form for messages: `30s`, `5m`, `1h30m`, `250ms` (no zero tails).
/// A length of time as a person says it: "3m", "2h 5m", "1d 4h".
pub fn spell(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// An instant (unix seconds) as messages and documents write it: `2026-12-07T05:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn human(d: Duration) -> String {
    let mut f = format(d);
    if d >= Duration::from_secs(60) {
        if f.ends_with("m0s") {
            f.truncate(f.len() - 2);
        }
        if f.ends_with("h0m") {
            f.truncate(f.len() - 2);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_fraction_is_truncated_to_nanoseconds_not_overflowed() {
        // The recipe of issue 9: a panic in debug builds, a wrapped wrong value in release.
        assert_eq!(
            parse("0.999999999999999999999999999999s"),
            Ok(Duration::from_nanos(999_999_999))
        );
        assert_eq!(
            parse("0.99999999999999999999999999999999999999d"),
            Ok(Duration::from_nanos(86_399_999_999_999))
        );
        assert_eq!(
            parse("1.00000000000000000000000001h"),
            Ok(Duration::from_secs(3600))
        );
    }

    #[test]
    fn parses_go_syntax() {
        let cases = [
            ("300ms", Duration::from_millis(300)),
            ("90s", Duration::from_secs(90)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m30.5s", Duration::from_millis(150_500)),
            ("1d", Duration::from_secs(86_400)),
            ("1d12h", Duration::from_secs(129_600)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            (".5h", Duration::from_secs(1800)),
            ("0", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_bad_durations_naming_the_value() {
        for s in ["", "10", "abc", "5x", "-5s", "1.s.", "s", "99999999999999h"] {
            let err = parse(s).unwrap_err().to_string();
            assert!(!err.is_empty(), "{s}");
            if !s.is_empty() {
                assert!(err.contains(&format!("{s:?}")), "{s}: {err}");
            }
        }
        assert!(parse("5x")
            .unwrap_err()
            .to_string()
            .contains("unknown unit \"x\""));
        assert!(parse("10")
            .unwrap_err()
            .to_string()
            .contains("without a unit"));
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_nanos(3_359_431_829), "3.359431829s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want);
        }
    }

    #[test]
    fn format_round_trips_through_parse() {
        for ns in [
            1u64,
            999,
            1_000,
            123_456_789,
            3_359_431_829,
            86_400_000_000_000,
        ] {
            let d = Duration::from_nanos(ns);
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }

    #[test]
    fn human_trims_zero_tails() {
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
