//! One field value. Nested data (objects, arrays) stays nested as JSON.

use std::fmt;
use std::sync::LazyLock;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::ser::{Serialize, Serializer};

use crate::DataType;

/// How a wall-clock time is written (`%Y-%m-%dT%H:%M:%S%.f`), parsed once:
/// parsing the format for every value cost more than the formatting.
static NAIVE_TIMESTAMP_FORMAT: LazyLock<Vec<Item<'static>>> =
    LazyLock::new(|| StrftimeItems::new("%Y-%m-%dT%H:%M:%S%.f").collect());

/// A value of a record's field. Its variant matches the field's [`crate::DataType`]
/// or is `Null`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An exact decimal, kept as its canonical text so no precision is lost.
    Decimal(String),
    String(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    /// A wall-clock time without zone.
    Timestamp(NaiveDateTime),
    /// An instant, normalised to UTC.
    TimestampTz(DateTime<Utc>),
    /// Nested data: an object, an array, or any JSON value.
    Json(serde_json::Value),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The data type this value's variant stands for; `None` for null.
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => DataType::Bool,
            Value::Int(_) => DataType::Int,
            Value::Float(_) => DataType::Float,
            Value::Decimal(_) => DataType::Decimal,
            Value::String(_) => DataType::String,
            Value::Bytes(_) => DataType::Bytes,
            Value::Date(_) => DataType::Date,
            Value::Timestamp(_) => DataType::Timestamp,
            Value::TimestampTz(_) => DataType::TimestampTz,
            Value::Json(_) => DataType::Json,
        })
    }

    /// An estimate of the value's size in bytes, used for byte-rate limits and progress.
    pub fn approximate_size(&self) -> usize {
        match self {
            Value::Null => 1,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) | Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) => 8,
            Value::Decimal(text) | Value::String(text) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
            Value::Json(json) => json_size(json),
        }
    }

    /// The value as JSON, the way the JSON Lines sink and dead letters write it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a JSON value into the closest variant; objects and arrays stay nested.
    pub fn from_json(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => n.as_f64().map(Value::Float).unwrap_or_else(|| Value::Decimal(n.to_string())),
            },
            serde_json::Value::String(s) => Value::String(s),
            nested => Value::Json(nested),
        }
    }

    /// A text rendering for text formats (CSV) and for ordering keys: no quotes, RFC 3339 times.
    pub fn to_text(&self) -> Option<String> {
        let mut text = String::new();
        self.write_text(&mut text).then_some(text)
    }

    /// Appends the value's text rendering (see [`Value::to_text`]) to `out`;
    /// false for null, which appends nothing.
    pub fn write_text(&self, out: &mut String) -> bool {
        // Writing into a `String` cannot fail.
        self.render_text(out).unwrap_or(true)
    }

    /// Writes the value's text rendering to `out`; `Ok(false)` for null.
    fn render_text(&self, out: &mut impl fmt::Write) -> Result<bool, fmt::Error> {
        match self {
            Value::Null => return Ok(false),
            Value::Bool(b) => write!(out, "{b}"),
            Value::Int(i) => write!(out, "{i}"),
            Value::Float(f) => write!(out, "{f}"),
            Value::Decimal(text) | Value::String(text) => out.write_str(text),
            Value::Bytes(bytes) => {
                let mut written = Ok(());
                write_hex(bytes, |digits| written = written.and_then(|()| out.write_str(digits)));
                written
            }
            Value::Date(d) => write!(out, "{d}"),
            Value::Timestamp(t) => write!(out, "{}", t.format_with_items(NAIVE_TIMESTAMP_FORMAT.iter())),
            Value::TimestampTz(t) => out.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            Value::Json(json) => write!(out, "{json}"),
        }?;
        Ok(true)
    }

    /// The value's text: borrowed for strings, decimals and booleans,
    /// otherwise written into `buffer` (cleared first) so that a loop can
    /// reuse one buffer.
    pub fn text<'a>(&'a self, buffer: &'a mut String) -> Option<&'a str> {
        match self {
            Value::Decimal(text) | Value::String(text) => Some(text),
            Value::Bool(b) => Some(if *b { "true" } else { "false" }),
            other => {
                buffer.clear();
                other.write_text(buffer).then_some(buffer.as_str())
            }
        }
    }
}

/// Writes `bytes` as lower-case hex digits, handing them to `push` in chunks.
pub fn write_hex(bytes: &[u8], mut push: impl FnMut(&str)) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    const CHUNK: usize = 256;
    let mut digits = [0u8; 2 * CHUNK];
    for chunk in bytes.chunks(CHUNK) {
        for (pair, byte) in digits.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        // Hex digits are ASCII, hence valid UTF-8.
        push(std::str::from_utf8(&digits[..2 * chunk.len()]).unwrap_or_default());
    }
}

fn json_size(json: &serde_json::Value) -> usize {
    match json {
        serde_json::Value::String(s) => s.len() + 2,
        serde_json::Value::Array(items) => items.iter().map(json_size).sum::<usize>() + 2,
        serde_json::Value::Object(map) => map.iter().map(|(k, v)| k.len() + 3 + json_size(v)).sum::<usize>() + 2,
        _ => 8,
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::Float(f) => serializer.serialize_str(&f.to_string()),
            Value::Json(json) => json.serialize(serializer),
            Value::Decimal(text) | Value::String(text) => serializer.serialize_str(text),
            // Written straight into the output, without a string of its own.
            other => serializer.collect_str(&Text(other)),
        }
    }
}

/// A value's text rendering, as [`fmt::Display`].
struct Text<'a>(&'a Value);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.render_text(f).map(|_| ())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_nesting() {
        let json = serde_json::json!({"a": [1, {"b": null}]});
        assert_eq!(Value::from_json(json.clone()).to_json(), json);
        assert_eq!(Value::from_json(serde_json::json!(3)), Value::Int(3));
        assert_eq!(Value::from_json(serde_json::json!(1.5)), Value::Float(1.5));
    }

    #[test]
    fn text_renderings() {
        let bytes: Vec<u8> = (0..=255).chain(0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Value::Bytes(bytes).to_text().unwrap(), expected);
        assert_eq!(Value::Null.to_text(), None);
        let mut buffer = String::from("old");
        assert_eq!(Value::Int(-7).text(&mut buffer), Some("-7"));
        assert_eq!(Value::Float(0.5).text(&mut buffer), Some("0.5"));
        assert_eq!(Value::Json(serde_json::json!({"a": [1]})).text(&mut buffer), Some("{\"a\":[1]}"));
        assert_eq!(Value::Decimal("1.20".into()).text(&mut buffer), Some("1.20"));
        assert_eq!(Value::Bool(false).text(&mut buffer), Some("false"));
        assert_eq!(Value::Bool(true).to_text().as_deref(), Some("true"));
    }

    #[test]
    fn times_serialise_as_rfc3339() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        assert_eq!(Value::TimestampTz(t).to_json(), serde_json::json!("2024-01-02T03:04:05Z"));
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::json!("NaN"));
    }

    #[test]
    fn wall_clock_times_keep_only_the_fraction_they_have() {
        let at = |text: &str| Value::Timestamp(text.parse().unwrap());
        assert_eq!(at("2024-01-02T03:04:05").to_text().unwrap(), "2024-01-02T03:04:05");
        assert_eq!(at("2024-01-02T03:04:05.5").to_text().unwrap(), "2024-01-02T03:04:05.500");
        assert_eq!(at("2024-01-02T03:04:05.000123").to_text().unwrap(), "2024-01-02T03:04:05.000123");
    }

    #[test]
    fn json_writes_each_value_as_its_text_or_its_json() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.25Z").unwrap().with_timezone(&Utc);
        let cases = [
            (Value::String("quote \" and \u{1}".into()), r#""quote \" and \u0001""#),
            (Value::Decimal("12.30".into()), r#""12.30""#),
            (Value::Bytes(vec![0, 0xab]), r#""00ab""#),
            (Value::Date(t.date_naive()), r#""2024-01-02""#),
            (Value::Timestamp(t.naive_utc()), r#""2024-01-02T03:04:05.250""#),
            (Value::TimestampTz(t), r#""2024-01-02T03:04:05.250Z""#),
            (Value::Float(f64::INFINITY), r#""inf""#),
            (Value::Json(serde_json::json!({"a": [1, null]})), r#"{"a":[1,null]}"#),
        ];
        for (value, expected) in cases {
            assert_eq!(serde_json::to_string(&value).unwrap(), expected, "{value:?}");
            assert_eq!(value.to_json(), serde_json::from_str::<serde_json::Value>(expected).unwrap(), "{value:?}");
        }
    }
}
