//! How the `cast` processor converts one value: the cast targets, strict
//! number reading with configurable decimal and thousands separators (exact
//! decimals stay text, normalised to digits with a '.' point), and dates and
//! times read with chrono strftime formats.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use haul_collect_core::{DataType, Value};
use serde::Deserialize;

/// The types `cast` converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CastTarget {
    String,
    Int,
    Float,
    Decimal,
    Bool,
    Date,
    /// A wall-clock time; an instant (UTC) when `timezone` is set.
    Timestamp,
    /// An instant, normalised to UTC; times without offset are read in `timezone` (default UTC).
    TimestampTz,
    Json,
}

impl CastTarget {
    pub fn name(self) -> &'static str {
        match self {
            CastTarget::String => "string",
            CastTarget::Int => "int",
            CastTarget::Float => "float",
            CastTarget::Decimal => "decimal",
            CastTarget::Bool => "bool",
            CastTarget::Date => "date",
            CastTarget::Timestamp => "timestamp",
            CastTarget::TimestampTz => "timestamp_tz",
            CastTarget::Json => "json",
        }
    }

    pub fn reads_times(self) -> bool {
        matches!(self, CastTarget::Date | CastTarget::Timestamp | CastTarget::TimestampTz)
    }
}

/// How numbers are written in text: `decimal = { separator = ",", thousands = "." }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberFormat {
    #[serde(default = "default_separator")]
    pub separator: char,
    #[serde(default)]
    pub thousands: Option<char>,
}

fn default_separator() -> char {
    '.'
}

impl Default for NumberFormat {
    fn default() -> Self {
        NumberFormat { separator: default_separator(), thousands: None }
    }
}

/// One field's conversion.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub target: CastTarget,
    /// The chrono strftime format for dates and times read from text.
    pub format: Option<String>,
    /// Where times without offset are, for instants.
    pub timezone: Option<FixedOffset>,
    pub numbers: NumberFormat,
}

/// A time read from text, with or without an offset.
enum Moment {
    Naive(NaiveDateTime),
    Instant(DateTime<FixedOffset>),
}

impl Conversion {
    /// The type of the field after the cast.
    pub fn output(&self) -> DataType {
        match self.target {
            CastTarget::String => DataType::String,
            CastTarget::Int => DataType::Int,
            CastTarget::Float => DataType::Float,
            CastTarget::Decimal => DataType::Decimal,
            CastTarget::Bool => DataType::Bool,
            CastTarget::Date => DataType::Date,
            CastTarget::Timestamp if self.timezone.is_none() => DataType::Timestamp,
            CastTarget::Timestamp | CastTarget::TimestampTz => DataType::TimestampTz,
            CastTarget::Json => DataType::Json,
        }
    }

    /// Whether `value` needs no conversion: null, or already of the output type.
    pub fn leaves(&self, value: &Value) -> bool {
        let output = self.output();
        match value {
            Value::Null => true,
            Value::Bool(_) => output == DataType::Bool,
            Value::Int(_) => output == DataType::Int,
            Value::Float(_) => output == DataType::Float,
            Value::Decimal(_) => output == DataType::Decimal,
            Value::String(_) => output == DataType::String,
            Value::Bytes(_) => output == DataType::Bytes,
            Value::Date(_) => output == DataType::Date,
            Value::Timestamp(_) => output == DataType::Timestamp,
            Value::TimestampTz(_) => output == DataType::TimestampTz,
            Value::Json(_) => output == DataType::Json,
        }
    }

    /// The value converted, or `None` when it cannot be.
    pub fn convert(&self, value: &Value) -> Option<Value> {
        match self.target {
            CastTarget::String => value.to_text().map(Value::String),
            CastTarget::Int => to_int(value, self.numbers).map(Value::Int),
            CastTarget::Float => to_float(value, self.numbers).map(Value::Float),
            CastTarget::Decimal => to_decimal(value, self.numbers).map(Value::Decimal),
            CastTarget::Bool => to_bool(value).map(Value::Bool),
            CastTarget::Date => self.to_date(value).map(Value::Date),
            CastTarget::Timestamp | CastTarget::TimestampTz => self.to_time(value),
            CastTarget::Json => match value {
                Value::String(text) => serde_json::from_str(text).ok().map(Value::Json),
                other => Some(Value::Json(other.to_json())),
            },
        }
    }

    fn to_date(&self, value: &Value) -> Option<NaiveDate> {
        match value {
            Value::Date(date) => Some(*date),
            Value::Timestamp(time) => Some(time.date()),
            Value::TimestampTz(time) => Some(time.date_naive()),
            Value::String(text) => {
                NaiveDate::parse_from_str(text.trim(), self.format.as_deref().unwrap_or("%Y-%m-%d")).ok()
            }
            _ => None,
        }
    }

    fn to_time(&self, value: &Value) -> Option<Value> {
        let moment = match value {
            Value::Timestamp(time) => Moment::Naive(*time),
            Value::TimestampTz(time) => Moment::Instant(time.fixed_offset()),
            Value::Date(date) => Moment::Naive(date.and_time(NaiveTime::MIN)),
            Value::String(text) => read_moment(text.trim(), self.format.as_deref())?,
            _ => return None,
        };
        match (self.output(), moment) {
            (DataType::Timestamp, Moment::Naive(time)) => Some(Value::Timestamp(time)),
            (DataType::Timestamp, Moment::Instant(_)) => None,
            (_, Moment::Naive(time)) => {
                let zone = self.timezone.unwrap_or(Utc.fix());
                zone.from_local_datetime(&time).single().map(|time| Value::TimestampTz(time.with_timezone(&Utc)))
            }
            (_, Moment::Instant(time)) => Some(Value::TimestampTz(time.with_timezone(&Utc))),
        }
    }
}

/// Times without a format: RFC 3339, ISO 8601 without offset, or a date.
const NAIVE_FORMATS: [&str; 4] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];

fn read_moment(text: &str, format: Option<&str>) -> Option<Moment> {
    let midnight = |date: NaiveDate| Moment::Naive(date.and_time(NaiveTime::MIN));
    match format {
        Some(format) => DateTime::parse_from_str(text, format)
            .map(Moment::Instant)
            .or_else(|_| NaiveDateTime::parse_from_str(text, format).map(Moment::Naive))
            .or_else(|_| NaiveDate::parse_from_str(text, format).map(midnight))
            .ok(),
        None => DateTime::parse_from_rfc3339(text).ok().map(Moment::Instant).or_else(|| {
            NAIVE_FORMATS
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                .map(Moment::Naive)
                .or_else(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(midnight))
        }),
    }
}

fn to_int(value: &Value, numbers: NumberFormat) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
        Value::Decimal(text) => text.parse().ok(),
        Value::String(text) => normalise_decimal(text, numbers)?.parse().ok(),
        _ => None,
    }
}

fn to_float(value: &Value, numbers: NumberFormat) -> Option<f64> {
    let float = match value {
        Value::Float(f) => *f,
        Value::Int(i) => *i as f64,
        Value::Decimal(text) => text.parse().ok()?,
        // Without custom separators, exponents ("1e-3") are read too.
        Value::String(text) => match normalise_decimal(text, numbers) {
            Some(normalised) => normalised.parse().ok()?,
            None if numbers == NumberFormat::default() => text.trim().parse().ok()?,
            None => return None,
        },
        _ => return None,
    };
    float.is_finite().then_some(float)
}

fn to_decimal(value: &Value, numbers: NumberFormat) -> Option<String> {
    match value {
        Value::Decimal(text) => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) if f.is_finite() => Some(f.to_string()),
        Value::String(text) => normalise_decimal(text, numbers),
        _ => None,
    }
}

fn to_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        Value::String(text) => {
            let text = text.trim();
            let any = |words: [&str; 5]| words.iter().any(|word| text.eq_ignore_ascii_case(word));
            if any(["true", "t", "yes", "y", "1"]) {
                Some(true)
            } else if any(["false", "f", "no", "n", "0"]) {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Reads a number written with `numbers`' separators, strictly: an optional
/// sign, digits (grouped by three when thousands separators appear), then
/// optionally the decimal separator and digits. Returns it with '.' as the
/// point and no grouping, e.g. "-1.234,5" → "-1234.5".
pub fn normalise_decimal(text: &str, numbers: NumberFormat) -> Option<String> {
    let text = text.trim();
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let (integer, fraction) = match unsigned.split_once(numbers.separator) {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (unsigned, None),
    };
    let mut normalised = String::with_capacity(text.len() + 1);
    normalised.push_str(sign);
    match numbers.thousands {
        Some(thousands) if integer.contains(thousands) => {
            for (position, group) in integer.split(thousands).enumerate() {
                let fits = if position == 0 { (1..=3).contains(&group.len()) } else { group.len() == 3 };
                if !fits || !all_digits(group) {
                    return None;
                }
                normalised.push_str(group);
            }
        }
        _ if integer.is_empty() && fraction.is_some() => normalised.push('0'),
        _ if all_digits(integer) => normalised.push_str(integer),
        _ => return None,
    }
    if let Some(fraction) = fraction {
        if !all_digits(fraction) {
            return None;
        }
        normalised.push('.');
        normalised.push_str(fraction);
    }
    Some(normalised)
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_read_strictly() {
        let european = NumberFormat { separator: ',', thousands: Some('.') };
        let english = NumberFormat { separator: '.', thousands: Some(',') };
        let plain = NumberFormat::default();
        let read = |text, numbers| normalise_decimal(text, numbers);
        assert_eq!(read(" -1.234.567,80 ", european).as_deref(), Some("-1234567.80"));
        assert_eq!(read("1234,5", european).as_deref(), Some("1234.5"));
        assert_eq!(read("1,234.5", english).as_deref(), Some("1234.5"));
        assert_eq!(read("+7", plain).as_deref(), Some("7"));
        assert_eq!(read(".5", plain).as_deref(), Some("0.5"));
        for bad in ["", "-", "5.", "1.2.3", "1e5", "12,34.5", "1,2345", ",123", "١٢٣", "0x10", "1 000"] {
            assert_eq!(read(bad, english), None, "{bad:?} was accepted");
        }
        assert_eq!(read("1.234", european).as_deref(), Some("1234"));
        assert_eq!(read("1234.5", european), None);
    }

    #[test]
    fn bools_and_floats_from_text() {
        assert_eq!(to_bool(&Value::from(" Yes ")), Some(true));
        assert_eq!(to_bool(&Value::from("F")), Some(false));
        assert_eq!(to_bool(&Value::from("maybe")), None);
        assert_eq!(to_float(&Value::from("1e-3"), NumberFormat::default()), Some(0.001));
        assert_eq!(to_float(&Value::from("NaN"), NumberFormat::default()), None);
        assert_eq!(to_int(&Value::Float(3.0), NumberFormat::default()), Some(3));
        assert_eq!(to_int(&Value::Float(3.5), NumberFormat::default()), None);
    }
}
