//! One field value. Nested data (objects, arrays) stays nested as JSON.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::ser::{Serialize, Serializer};

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
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Decimal(text) | Value::String(text) => text.clone(),
            Value::Bytes(bytes) => hex(bytes),
            Value::Date(d) => d.to_string(),
            Value::Timestamp(t) => t.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
            Value::TimestampTz(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            Value::Json(json) => json.to_string(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
            other => serializer.serialize_str(&other.to_text().unwrap_or_default()),
        }
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
    fn times_serialise_as_rfc3339() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        assert_eq!(Value::TimestampTz(t).to_json(), serde_json::json!("2024-01-02T03:04:05Z"));
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::json!("NaN"));
    }
}
