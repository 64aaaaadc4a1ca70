//! Timestamp parsing for audit logs: RFC 3339 / ISO 8601 to epoch milliseconds.
//!
//! Every provider writes ISO 8601, with or without fractional seconds, with `Z`, a numeric offset,
//! or (O365 `CreationTime`) no zone at all, which means UTC. The parser is hand-written because it
//! runs once per event on the hot path and needs no allocation or locale; it is tested against
//! known instants below.

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff…][Z|±HH:MM|±HHMM]` (a space is accepted for `T`) into
/// milliseconds since the Unix epoch. Returns `None` for anything else.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let mut v: i64 = 0;
        for &c in b.get(from..from + len)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if i < b.len() && (b[i] == b'.' || b[i] == b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_secs: i64 = if i == b.len() {
        0
    } else {
        match b[i] {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            sign @ (b'+' | b'-') => {
                let rest = &s[i + 1..];
                let (h, m) = match rest.len() {
                    5 if rest.as_bytes()[2] == b':' => (num(i + 1, 2)?, num(i + 4, 2)?),
                    4 => (num(i + 1, 2)?, num(i + 3, 2)?),
                    2 => (num(i + 1, 2)?, 0),
                    _ => return None,
                };
                let v = h * 3600 + m * 60;
                if sign == b'+' {
                    v
                } else {
                    -v
                }
            }
            _ => return None,
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_instants() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        // 2024-07-31T12:50:02Z = 1722430202 s
        assert_eq!(
            parse_rfc3339_ms("2024-07-31T12:50:02Z"),
            Some(1_722_430_202_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-07-31T12:50:02.5Z"),
            Some(1_722_430_202_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-07-31T12:50:02.123456789Z"),
            Some(1_722_430_202_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-07-31T14:50:02+02:00"),
            Some(1_722_430_202_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-07-31T10:50:02-0200"),
            Some(1_722_430_202_000)
        );
        // O365 CreationTime has no zone: UTC.
        assert_eq!(
            parse_rfc3339_ms("2024-07-31T12:50:02"),
            Some(1_722_430_202_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2024-07-31",
            "2024-13-01T00:00:00Z",
            "2024-07-31T12:50:02Q",
            "abcd-ef-ghTij:kl:mnZ",
            "2024-07-31T12:50:02.",
        ] {
            assert_eq!(parse_rfc3339_ms(s), None, "{s}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [0, 1_722_430_202_123, 951_782_400_000, -1_000] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
        }
    }
}
