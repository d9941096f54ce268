//! The `Retry-After` header (RFC 9110 §10.2.3): a number of seconds, or an
//! HTTP date (all three formats HTTP allows).

use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};

/// How long a `Retry-After` value asks to wait, counted from `now`; a date
/// in the past means no wait. `None` when the value is neither form.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // Too many digits for a u64 means "a very long time".
        return Some(value.parse().map(Duration::from_secs).unwrap_or(Duration::MAX));
    }
    let date = parse_http_date(value)?;
    Some(SystemTime::from(date).duration_since(now).unwrap_or(Duration::ZERO))
}

/// An HTTP date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or the
/// obsolete RFC 850 and asctime forms that recipients must still accept.
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|date| date.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn seconds_and_dates() {
        let now = at(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:51:37 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:47 1994", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::MAX));
    }

    #[test]
    fn rejects_other_text() {
        for value in ["", "-5", "1.5", "soon", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(value, at(0)), None, "{value}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(value in ".*", now in 0u64..4_000_000_000) {
            let _ = parse_retry_after(&value, at(now));
        }

        #[test]
        fn a_formatted_date_reads_back(now in 0u64..4_000_000_000, wait in 0u64..1_000_000) {
            let date = DateTime::<Utc>::from(at(now + wait));
            let text = date.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            prop_assert_eq!(parse_retry_after(&text, at(now)), Some(Duration::from_secs(wait)));
        }
    }
}
