//! Rows to haul [`Value`]s, one implementation per backend. Column types are
//! resolved once per query ([`Column`]); each row is then decoded by column
//! index with the Rust type the wire carries, never by name.

use haul_collect_core::{DataType, Value};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlRow, MySqlValueRef};
use sqlx::postgres::{PgRow, PgValueRef, Postgres};
use sqlx::sqlite::{SqliteRow, SqliteValueRef};
use sqlx::{ColumnIndex, Decode, Row, TypeInfo, ValueRef};

use super::convert::{parse_timestamp, parse_timestamp_tz};
use super::dialect::{ColumnType, Dialect, Wire};

/// A result column: its name and resolved type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub column_type: ColumnType,
}

impl Column {
    /// A 64-bit integer result column, such as `COUNT(*)`.
    pub fn bigint(dialect: Dialect, name: &str) -> Column {
        Column { name: name.to_string(), column_type: dialect.column_type(dialect.bigint_type_name()) }
    }
}

/// A row whose values could not all be decoded: the values that could (the
/// others null) and why, for the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub values: Vec<Value>,
    pub reason: String,
}

/// One decoded row, or the row that could not be.
pub type DecodedRow = Result<Vec<Value>, BadRow>;

/// A driver row that decodes into haul values.
pub trait DecodeRow: Row {
    /// One value per column.
    fn decode(&self, columns: &[Column]) -> DecodedRow;
}

fn decode_error(column: &Column, error: impl std::fmt::Display) -> String {
    format!("cannot decode column `{}` of type {}: {error}", column.name, column.column_type.type_name)
}

/// Decodes each column of `row` with `decode`, the backend's conversion of
/// one non-null value.
fn decode_columns<'r, R>(
    row: &'r R,
    columns: &[Column],
    decode: impl Fn(<R::Database as sqlx::Database>::ValueRef<'r>, &ColumnType) -> Result<Value, BoxDynError>,
) -> DecodedRow
where
    R: Row,
    usize: ColumnIndex<R>,
{
    let mut values = Vec::with_capacity(columns.len());
    let mut reasons = Vec::new();
    for (index, column) in columns.iter().enumerate() {
        let value = match row.try_get_raw(index) {
            Ok(raw) if raw.is_null() => Ok(Value::Null),
            Ok(raw) => decode(raw, &column.column_type),
            Err(error) => Err(error.into()),
        };
        match value {
            Ok(value) => values.push(value),
            Err(error) => {
                reasons.push(decode_error(column, error));
                values.push(Value::Null);
            }
        }
    }
    if reasons.is_empty() { Ok(values) } else { Err(BadRow { values, reason: reasons.join("; ") }) }
}

fn text_value(data_type: DataType, text: &str) -> Value {
    match data_type {
        DataType::Decimal => Value::Decimal(text.to_string()),
        _ => Value::String(text.to_string()),
    }
}

impl DecodeRow for PgRow {
    fn decode(&self, columns: &[Column]) -> DecodedRow {
        decode_columns(self, columns, decode_postgres)
    }
}

fn decode_postgres(raw: PgValueRef<'_>, column: &ColumnType) -> Result<Value, BoxDynError> {
    type P = Postgres;
    Ok(match column.wire {
        Wire::Bool => Value::Bool(<bool as Decode<P>>::decode(raw)?),
        Wire::I16 => Value::Int(<i16 as Decode<P>>::decode(raw)?.into()),
        Wire::I32 => Value::Int(<i32 as Decode<P>>::decode(raw)?.into()),
        Wire::I64 => Value::Int(<i64 as Decode<P>>::decode(raw)?),
        Wire::F32 => Value::Float(<f32 as Decode<P>>::decode(raw)?.into()),
        Wire::F64 => Value::Float(<f64 as Decode<P>>::decode(raw)?),
        Wire::Text => text_value(column.data_type, <&str as Decode<P>>::decode(raw)?),
        Wire::Bytes => Value::Bytes(<&[u8] as Decode<P>>::decode(raw)?.to_vec()),
        Wire::Date => Value::Date(Decode::<P>::decode(raw)?),
        Wire::Timestamp => Value::Timestamp(Decode::<P>::decode(raw)?),
        Wire::TimestampTz => Value::TimestampTz(Decode::<P>::decode(raw)?),
        Wire::Json => Value::Json(<serde_json::Value as Decode<P>>::decode(raw)?),
        Wire::U64 => return Err("PostgreSQL has no unsigned integers".into()),
    })
}

impl DecodeRow for MySqlRow {
    fn decode(&self, columns: &[Column]) -> DecodedRow {
        decode_columns(self, columns, decode_mysql)
    }
}

fn decode_mysql(raw: MySqlValueRef<'_>, column: &ColumnType) -> Result<Value, BoxDynError> {
    type M = MySql;
    Ok(match column.wire {
        Wire::Bool => Value::Bool(<bool as Decode<M>>::decode(raw)?),
        Wire::I16 | Wire::I32 | Wire::I64 => Value::Int(<i64 as Decode<M>>::decode(raw)?),
        Wire::U64 => {
            // Above i64::MAX the exact value is kept as a decimal.
            let unsigned = <u64 as Decode<M>>::decode(raw)?;
            i64::try_from(unsigned).map(Value::Int).unwrap_or_else(|_| Value::Decimal(unsigned.to_string()))
        }
        Wire::F32 => Value::Float(<f32 as Decode<M>>::decode(raw)?.into()),
        Wire::F64 => Value::Float(<f64 as Decode<M>>::decode(raw)?),
        Wire::Text => text_value(column.data_type, <&str as Decode<M>>::decode(raw)?),
        Wire::Bytes => Value::Bytes(<&[u8] as Decode<M>>::decode(raw)?.to_vec()),
        Wire::Date => Value::Date(Decode::<M>::decode(raw)?),
        Wire::Timestamp => Value::Timestamp(Decode::<M>::decode(raw)?),
        Wire::TimestampTz => Value::TimestampTz(Decode::<M>::decode(raw)?),
        Wire::Json => Value::Json(<serde_json::Value as Decode<M>>::decode(raw)?),
    })
}

impl DecodeRow for SqliteRow {
    fn decode(&self, columns: &[Column]) -> DecodedRow {
        decode_columns(self, columns, |raw, column| decode_sqlite(raw, column.data_type))
    }
}

/// SQLite's storage classes.
enum Storage {
    Integer,
    Real,
    Text,
    Blob,
}

/// SQLite stores any value in any column: the value's storage class
/// (INTEGER, REAL, TEXT, BLOB) is read first, then converted to the column's
/// declared logical type.
fn decode_sqlite(raw: SqliteValueRef<'_>, data_type: DataType) -> Result<Value, BoxDynError> {
    type S = sqlx::Sqlite;
    let storage = match raw.type_info().name() {
        "INTEGER" => Storage::Integer,
        "REAL" => Storage::Real,
        "BLOB" => Storage::Blob,
        _ => Storage::Text,
    };
    Ok(match (storage, data_type) {
        (Storage::Integer, DataType::Bool) => Value::Bool(<i64 as Decode<S>>::decode(raw)? != 0),
        (Storage::Integer, DataType::Float) => Value::Float(<i64 as Decode<S>>::decode(raw)? as f64),
        (Storage::Integer, DataType::Decimal) => Value::Decimal(<i64 as Decode<S>>::decode(raw)?.to_string()),
        (Storage::Integer, DataType::String) => Value::String(<i64 as Decode<S>>::decode(raw)?.to_string()),
        (Storage::Integer, DataType::Timestamp) => {
            Value::Timestamp(unix_seconds(<i64 as Decode<S>>::decode(raw)?)?.naive_utc())
        }
        (Storage::Integer, DataType::TimestampTz) => {
            Value::TimestampTz(unix_seconds(<i64 as Decode<S>>::decode(raw)?)?)
        }
        (Storage::Integer, DataType::Json) => Value::Json(<i64 as Decode<S>>::decode(raw)?.into()),
        (Storage::Integer, _) => Value::Int(<i64 as Decode<S>>::decode(raw)?),
        (Storage::Real, DataType::Decimal) => Value::Decimal(<f64 as Decode<S>>::decode(raw)?.to_string()),
        (Storage::Real, DataType::String) => Value::String(<f64 as Decode<S>>::decode(raw)?.to_string()),
        (Storage::Real, DataType::Json) => Value::Json(<f64 as Decode<S>>::decode(raw)?.into()),
        (Storage::Real, _) => Value::Float(<f64 as Decode<S>>::decode(raw)?),
        (Storage::Blob, DataType::String) => {
            Value::String(String::from_utf8_lossy(<&[u8] as Decode<S>>::decode(raw)?).into())
        }
        (Storage::Blob, _) => Value::Bytes(<&[u8] as Decode<S>>::decode(raw)?.to_vec()),
        (Storage::Text, data_type) => sqlite_text(<&str as Decode<S>>::decode(raw)?, data_type)?,
    })
}

fn sqlite_text(text: &str, data_type: DataType) -> Result<Value, BoxDynError> {
    Ok(match data_type {
        DataType::Int => Value::Int(text.trim().parse().map_err(|_| "the text is not an integer")?),
        DataType::Float => Value::Float(text.trim().parse().map_err(|_| "the text is not a number")?),
        DataType::Bool => Value::Bool(parse_bool(text).ok_or("the text is not a boolean")?),
        DataType::Decimal => Value::Decimal(text.to_string()),
        DataType::String => Value::String(text.to_string()),
        DataType::Bytes => Value::Bytes(text.as_bytes().to_vec()),
        DataType::Date => Value::Date(text.trim().parse().map_err(|_| "the text is not a date")?),
        DataType::Timestamp => Value::Timestamp(parse_timestamp(text.trim())?),
        DataType::TimestampTz => Value::TimestampTz(parse_timestamp_tz(text.trim())?),
        DataType::Json => Value::Json(serde_json::from_str(text).map_err(|_| "the text is not json")?),
    })
}

/// A boolean written as text: true/false, t/f, yes/no, 1/0, in any case.
fn parse_bool(text: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["true", "t", "yes", "1"];
    const FALSE: [&str; 4] = ["false", "f", "no", "0"];
    let text = text.trim();
    if TRUE.iter().any(|word| text.eq_ignore_ascii_case(word)) {
        Some(true)
    } else if FALSE.iter().any(|word| text.eq_ignore_ascii_case(word)) {
        Some(false)
    } else {
        None
    }
}

fn unix_seconds(seconds: i64) -> Result<chrono::DateTime<chrono::Utc>, BoxDynError> {
    chrono::DateTime::from_timestamp(seconds, 0).ok_or_else(|| format!("{seconds} is out of range").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_text_is_checked_against_the_column_type() {
        assert_eq!(sqlite_text(" 42 ", DataType::Int).unwrap(), Value::Int(42));
        assert!(sqlite_text("forty", DataType::Int).is_err());
        for (text, expected) in [("yes", true), ("No", false), ("t", true), ("FALSE", false), ("1", true), ("0", false)]
        {
            assert_eq!(sqlite_text(text, DataType::Bool).unwrap(), Value::Bool(expected), "{text}");
        }
        assert!(sqlite_text("maybe", DataType::Bool).is_err());
    }
}
