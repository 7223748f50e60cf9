//! Durations as operators type them (`30s`, `15m`, `24h`, `7d`, `1h30m`) and as meshctl
//! prints them (`24h`, `1d 2h`, `12s ago`).

use std::time::Duration;

const UNITS: [(char, u64); 4] = [('d', 86400), ('h', 3600), ('m', 60), ('s', 1)];

/// Parses `30s`, `15m`, `24h`, `7d` or a sum of them (`1h30m`). A unit is required: a bare
/// `7` could mean seconds or days.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration (expected e.g. 30s, 15m, 24h or 7d)".to_owned());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let Some(&(_, size)) = UNITS.iter().find(|(unit, _)| *unit == c) else {
            return Err(format!(
                "{text:?}: unknown unit {c:?} (use s, m, h or d, e.g. 30s, 15m, 24h, 7d)"
            ));
        };
        if digits.is_empty() {
            return Err(format!("{text:?}: expected a number before {c:?}"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        total = n
            .checked_mul(size)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| format!("{text:?}: too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "{text:?}: missing unit after {digits} (use s, m, h or d, e.g. {digits}s or {digits}d)"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// [`parse`] for clap's `value_parser`.
pub fn parse_arg(text: &str) -> Result<Duration, String> {
    parse(text)
}

/// The two largest non-zero units: `45s`, `15m`, `24h`, `1d 2h`, `0s`.
pub fn short(secs: u64) -> String {
    let mut parts = Vec::new();
    let mut left = secs;
    for (unit, size) in UNITS {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n}{unit}"));
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// How long ago `then` (unix seconds) was at `now`, in the largest unit: `12s ago`,
/// `5m ago`, `3h ago`, `2d ago`; a `then` in the future (clock skew) is `just now`.
pub fn ago(then: u64, now: u64) -> String {
    let Some(secs) = now.checked_sub(then) else {
        return "just now".to_owned();
    };
    let (n, unit) = UNITS
        .iter()
        .find(|(_, size)| secs >= *size)
        .map_or((0, 's'), |&(unit, size)| (secs / size, unit));
    format!("{n}{unit} ago")
}

/// Unix seconds as `2026-11-22 21:15:16 UTC`.
pub fn utc(unix: u64) -> String {
    let days = unix / 86400;
    let rem = unix % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`,
/// restricted to dates from 1970 on.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        for (text, secs) in [
            ("30s", 30),
            ("15m", 900),
            ("24h", 86400),
            ("7d", 7 * 86400),
            ("1h30m", 5400),
            ("1d12h", 129_600),
            (" 0s ", 0),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
    }

    #[test]
    fn refuses() {
        for (text, want) in [
            ("", "empty duration (expected e.g. 30s, 15m, 24h or 7d)"),
            (
                "7",
                "\"7\": missing unit after 7 (use s, m, h or d, e.g. 7s or 7d)",
            ),
            (
                "1h30",
                "\"1h30\": missing unit after 30 (use s, m, h or d, e.g. 30s or 30d)",
            ),
            (
                "5w",
                "\"5w\": unknown unit 'w' (use s, m, h or d, e.g. 30s, 15m, 24h, 7d)",
            ),
            (
                "-5s",
                "\"-5s\": unknown unit '-' (use s, m, h or d, e.g. 30s, 15m, 24h, 7d)",
            ),
            ("h", "\"h\": expected a number before 'h'"),
            (
                "99999999999999999999s",
                "\"99999999999999999999s\": number too large",
            ),
            ("9999999999999999999d", "\"9999999999999999999d\": too long"),
        ] {
            assert_eq!(parse(text), Err(want.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn prints_short() {
        for (secs, want) in [
            (0, "0s"),
            (45, "45s"),
            (900, "15m"),
            (86400, "1d"),
            (93_600, "1d 2h"),
            (93_661, "1d 2h"),
            (3661, "1h 1m"),
        ] {
            assert_eq!(short(secs), want, "{secs}");
        }
    }

    #[test]
    fn prints_ago() {
        let now = 1_000_000;
        for (then, want) in [
            (now, "0s ago"),
            (now - 12, "12s ago"),
            (now - 59, "59s ago"),
            (now - 60, "1m ago"),
            (now - 3599, "59m ago"),
            (now - 7300, "2h ago"),
            (now - 3 * 86400 - 5, "3d ago"),
            (now + 5, "just now"),
        ] {
            assert_eq!(ago(then, now), want, "{then}");
        }
    }

    #[test]
    fn prints_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // `date -u -d @1795382116`
        assert_eq!(utc(1_795_382_116), "2026-11-22 21:15:16 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }
}
