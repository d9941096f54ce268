//! Conversions of haul [`Value`]s that the SQL plugins need beside decoding:
//! back from the JSON kept in shard descriptors, checkpoints and job state
//! (typed by the column they belong to), and into PostgreSQL's text input
//! form, used both for bound parameters and for `COPY`.

use std::io::{self, Write};

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use haul_collect_core::value::write_hex;
use haul_collect_core::{DataType, Value};

/// Reads a value saved as JSON (by [`Value::to_json`]) back as `data_type`.
pub fn value_from_json(json: &serde_json::Value, data_type: DataType) -> anyhow::Result<Value> {
    use serde_json::Value as J;
    if json.is_null() {
        return Ok(Value::Null);
    }
    let text = || match json {
        J::String(text) => text.clone(),
        other => other.to_string(),
    };
    let value = match data_type {
        DataType::Int => match json.as_i64() {
            Some(int) => Value::Int(int),
            None => {
                let text = text();
                match (text.parse::<i64>(), text.parse::<u64>()) {
                    (Ok(int), _) => Value::Int(int),
                    // An unsigned value above i64::MAX, decoded as a decimal.
                    (Err(_), Ok(_)) => Value::Decimal(text),
                    (Err(_), Err(_)) => bail!("`{json}` is not an integer"),
                }
            }
        },
        DataType::Float => match json.as_f64() {
            Some(float) => Value::Float(float),
            None => Value::Float(text().parse().with_context(|| format!("`{json}` is not a number"))?),
        },
        DataType::Bool => match json {
            J::Bool(b) => Value::Bool(*b),
            _ => bail!("`{json}` is not a boolean"),
        },
        DataType::Decimal => Value::Decimal(text()),
        DataType::String => Value::String(text()),
        DataType::Bytes => Value::Bytes(parse_hex(&text()).with_context(|| format!("`{json}` is not hex bytes"))?),
        DataType::Date => Value::Date(text().parse::<NaiveDate>().with_context(|| format!("`{json}` is not a date"))?),
        DataType::Timestamp => Value::Timestamp(parse_timestamp(&text())?),
        DataType::TimestampTz => Value::TimestampTz(parse_timestamp_tz(&text())?),
        DataType::Json => Value::Json(json.clone()),
    };
    Ok(value)
}

/// A wall-clock time written as `2024-01-02T03:04:05.123` or `2024-01-02 03:04:05`.
pub fn parse_timestamp(text: &str) -> anyhow::Result<NaiveDateTime> {
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .or_else(|| text.parse::<NaiveDate>().ok().and_then(|date| date.and_hms_opt(0, 0, 0)))
        .with_context(|| format!("`{text}` is not a timestamp"))
}

/// An instant written in RFC 3339 or as `2024-01-02 03:04:05.1+00:00`; a time
/// without offset is taken as UTC.
pub fn parse_timestamp_tz(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"]
        .iter()
        .find_map(|format| DateTime::parse_from_str(text, format).ok())
        .map(|instant| instant.with_timezone(&Utc))
        .map_or_else(|| parse_timestamp(text).map(|naive| naive.and_utc()), Ok)
        .with_context(|| format!("`{text}` is not a timestamp with time zone"))
}

fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits = text.strip_prefix("\\x").unwrap_or(text);
    anyhow::ensure!(digits.len().is_multiple_of(2) && digits.is_ascii(), "odd or non-ascii hex");
    (0..digits.len()).step_by(2).map(|i| Ok(u8::from_str_radix(&digits[i..i + 2], 16)?)).collect()
}

/// The value in PostgreSQL's text input syntax; `None` for NULL.
pub fn postgres_text(value: &Value) -> Option<String> {
    let mut text = Vec::new();
    match write_postgres_text(&mut text, value) {
        Ok(true) => String::from_utf8(text).ok(),
        Ok(false) | Err(_) => None,
    }
}

/// Writes the value in PostgreSQL's text input syntax straight into `out`,
/// without building it first; false for NULL, which writes nothing.
pub fn write_postgres_text(out: &mut impl Write, value: &Value) -> io::Result<bool> {
    match value {
        Value::Null => return Ok(false),
        Value::Bool(b) => out.write_all(if *b { b"t" } else { b"f" })?,
        Value::Int(int) => out.write_all(itoa::Buffer::new().format(*int).as_bytes())?,
        Value::Float(float) if float.is_nan() => out.write_all(b"NaN")?,
        Value::Float(float) if float.is_infinite() => {
            out.write_all(if *float > 0.0 { b"Infinity" } else { b"-Infinity" })?
        }
        Value::Float(float) => write!(out, "{float}")?,
        Value::Decimal(text) | Value::String(text) => out.write_all(text.as_bytes())?,
        Value::Bytes(bytes) => {
            out.write_all(b"\\x")?;
            let mut written = Ok(());
            write_hex(bytes, |digits| {
                if written.is_ok() {
                    written = out.write_all(digits.as_bytes());
                }
            });
            written?
        }
        Value::Date(date) => write_date(out, *date)?,
        Value::Timestamp(time) => write_timestamp(out, *time)?,
        Value::TimestampTz(time) => {
            write_timestamp(out, time.naive_utc())?;
            out.write_all(b"+00")?
        }
        Value::Json(json) => serde_json::to_writer(&mut *out, json)?,
    }
    Ok(true)
}

fn write_date(out: &mut impl Write, date: NaiveDate) -> io::Result<()> {
    let year = date.year();
    if !(0..=9999).contains(&year) {
        return write!(out, "{year:04}-{:02}-{:02}", date.month(), date.day());
    }
    let year = year as u32;
    let mut text = *b"0000-00-00";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], date.month());
    put_digits(&mut text[8..10], date.day());
    out.write_all(&text)
}

/// Writes `value` as exactly `slot.len()` decimal digits, zero-padded.
fn put_digits(slot: &mut [u8], mut value: u32) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fffffffff]`.
fn write_timestamp(out: &mut impl Write, time: NaiveDateTime) -> io::Result<()> {
    write_date(out, time.date())?;
    // chrono keeps a leap second as nanoseconds past 1e9.
    let (leap, nanos) = (time.nanosecond() / 1_000_000_000, time.nanosecond() % 1_000_000_000);
    let mut clock = *b" 00:00:00";
    put_digits(&mut clock[1..3], time.hour());
    put_digits(&mut clock[4..6], time.minute());
    put_digits(&mut clock[7..9], time.second() + leap);
    out.write_all(&clock)?;
    if nanos != 0 {
        let mut fraction = *b".000000000";
        put_digits(&mut fraction[1..], nanos);
        out.write_all(&fraction)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_per_type() {
        let time = parse_timestamp("2024-01-02 03:04:05.25").unwrap();
        let values = [
            (Value::Int(-3), DataType::Int),
            (Value::Float(1.5), DataType::Float),
            (Value::Decimal("12.50".into()), DataType::Decimal),
            (Value::String("a b".into()), DataType::String),
            (Value::Bytes(vec![0, 255, 16]), DataType::Bytes),
            (Value::Bool(true), DataType::Bool),
            (Value::Date(time.date()), DataType::Date),
            (Value::Timestamp(time), DataType::Timestamp),
            (Value::TimestampTz(time.and_utc()), DataType::TimestampTz),
            (Value::Json(json!({"a": [1]})), DataType::Json),
        ];
        for (value, data_type) in values {
            assert_eq!(value_from_json(&value.to_json(), data_type).unwrap(), value, "{data_type:?}");
        }
        assert!(value_from_json(&json!("x"), DataType::Int).is_err());
        let above_i64 = Value::Decimal(u64::MAX.to_string());
        assert_eq!(value_from_json(&above_i64.to_json(), DataType::Int).unwrap(), above_i64);
    }

    #[test]
    fn timestamps_with_offsets_normalise_to_utc() {
        let expected = parse_timestamp("2024-01-02 01:04:05").unwrap().and_utc();
        assert_eq!(parse_timestamp_tz("2024-01-02T03:04:05+02:00").unwrap(), expected);
        assert_eq!(parse_timestamp_tz("2024-01-02 03:04:05+02:00").unwrap(), expected);
        assert_eq!(parse_timestamp_tz("2024-01-02 01:04:05").unwrap(), expected);
    }

    #[test]
    fn postgres_text_forms() {
        assert_eq!(postgres_text(&Value::Bytes(vec![1, 171])).unwrap(), "\\x01ab");
        assert_eq!(postgres_text(&Value::Float(f64::NEG_INFINITY)).unwrap(), "-Infinity");
        assert_eq!(postgres_text(&Value::Null), None);
        let time = parse_timestamp("2024-01-02 03:04:05.25").unwrap();
        assert_eq!(postgres_text(&Value::Timestamp(time)).unwrap(), "2024-01-02 03:04:05.250000000");
        assert_eq!(postgres_text(&Value::TimestampTz(time.and_utc())).unwrap(), "2024-01-02 03:04:05.250000000+00");
        assert_eq!(postgres_text(&Value::Date(time.date())).unwrap(), "2024-01-02");
        assert_eq!(postgres_text(&Value::Float(0.1)).unwrap(), "0.1");
        assert_eq!(postgres_text(&Value::Json(json!({"a": "b"}))).unwrap(), "{\"a\":\"b\"}");
    }
}
