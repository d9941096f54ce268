//! Rows to haul [`Value`]s, one implementation per backend. Column types are
//! resolved once per query ([`Column`]); each row is then decoded by column
//! index with the Rust type the wire carries, never by name.

use anyhow::anyhow;
use haul_collect_core::{DataType, Value};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlRow, MySqlValueRef};
use sqlx::postgres::{PgRow, PgValueRef, Postgres};
use sqlx::sqlite::{SqliteRow, SqliteValueRef};
use sqlx::{Decode, Row, TypeInfo, ValueRef};

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

/// A driver row that decodes into haul values.
pub trait DecodeRow: Row {
    /// Appends one value per column to `out`.
    fn decode_into(&self, columns: &[Column], out: &mut Vec<Value>) -> anyhow::Result<()>;

    fn decode(&self, columns: &[Column]) -> anyhow::Result<Vec<Value>> {
        let mut values = Vec::with_capacity(columns.len());
        self.decode_into(columns, &mut values)?;
        Ok(values)
    }
}

fn decode_error(column: &Column, error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot decode column `{}` of type {}: {error}", column.name, column.column_type.type_name)
}

fn text_value(data_type: DataType, text: &str) -> Value {
    match data_type {
        DataType::Decimal => Value::Decimal(text.to_string()),
        _ => Value::String(text.to_string()),
    }
}

impl DecodeRow for PgRow {
    fn decode_into(&self, columns: &[Column], out: &mut Vec<Value>) -> anyhow::Result<()> {
        for (index, column) in columns.iter().enumerate() {
            let raw = self.try_get_raw(index).map_err(|error| decode_error(column, error))?;
            let value = if raw.is_null() {
                Value::Null
            } else {
                decode_postgres(raw, &column.column_type).map_err(|error| decode_error(column, error))?
            };
            out.push(value);
        }
        Ok(())
    }
}

fn decode_postgres(raw: PgValueRef<'_>, column: &ColumnType) -> Result<Value, BoxDynError> {
    type P = Postgres;
    Ok(match column.wire {
        Wire::Bool => Value::Bool(<bool as Decode<P>>::decode(raw)?),
        Wire::I16 => Value::Int(<i16 as Decode<P>>::decode(raw)?.into()),
        Wire::I32 => Value::Int(<i32 as Decode<P>>::decode(raw)?.into()),
        Wire::I64 => Value::Int(<i64 as Decode<P>>::decode(raw)?),
        Wire::U64 => Value::Int(<i64 as Decode<P>>::decode(raw)?),
        Wire::F32 => Value::Float(<f32 as Decode<P>>::decode(raw)?.into()),
        Wire::F64 => Value::Float(<f64 as Decode<P>>::decode(raw)?),
        Wire::Text => text_value(column.data_type, <&str as Decode<P>>::decode(raw)?),
        Wire::Bytes => Value::Bytes(<&[u8] as Decode<P>>::decode(raw)?.to_vec()),
        Wire::Date => Value::Date(Decode::<P>::decode(raw)?),
        Wire::Timestamp => Value::Timestamp(Decode::<P>::decode(raw)?),
        Wire::TimestampTz => Value::TimestampTz(Decode::<P>::decode(raw)?),
        Wire::Json => Value::Json(<serde_json::Value as Decode<P>>::decode(raw)?),
    })
}

impl DecodeRow for MySqlRow {
    fn decode_into(&self, columns: &[Column], out: &mut Vec<Value>) -> anyhow::Result<()> {
        for (index, column) in columns.iter().enumerate() {
            let raw = self.try_get_raw(index).map_err(|error| decode_error(column, error))?;
            let value = if raw.is_null() {
                Value::Null
            } else {
                decode_mysql(raw, &column.column_type).map_err(|error| decode_error(column, error))?
            };
            out.push(value);
        }
        Ok(())
    }
}

fn decode_mysql(raw: MySqlValueRef<'_>, column: &ColumnType) -> Result<Value, BoxDynError> {
    type M = MySql;
    Ok(match column.wire {
        Wire::Bool => Value::Bool(<bool as Decode<M>>::decode(raw)?),
        Wire::I16 | Wire::I32 | Wire::I64 => Value::Int(<i64 as Decode<M>>::decode(raw)?),
        Wire::U64 => {
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
    fn decode_into(&self, columns: &[Column], out: &mut Vec<Value>) -> anyhow::Result<()> {
        for (index, column) in columns.iter().enumerate() {
            let raw = self.try_get_raw(index).map_err(|error| decode_error(column, error))?;
            let value = if raw.is_null() {
                Value::Null
            } else {
                decode_sqlite(raw, column.column_type.data_type).map_err(|error| decode_error(column, error))?
            };
            out.push(value);
        }
        Ok(())
    }
}

/// SQLite stores any value in any column: the value's storage class
/// (INTEGER, REAL, TEXT, BLOB) is read first, then converted to the column's
/// declared logical type.
fn decode_sqlite(raw: SqliteValueRef<'_>, data_type: DataType) -> Result<Value, BoxDynError> {
    type S = sqlx::Sqlite;
    let storage = raw.type_info().name().to_string();
    Ok(match (storage.as_str(), data_type) {
        ("INTEGER", DataType::Bool) => Value::Bool(<i64 as Decode<S>>::decode(raw)? != 0),
        ("INTEGER", DataType::Float) => Value::Float(<i64 as Decode<S>>::decode(raw)? as f64),
        ("INTEGER", DataType::Decimal) => Value::Decimal(<i64 as Decode<S>>::decode(raw)?.to_string()),
        ("INTEGER", DataType::String) => Value::String(<i64 as Decode<S>>::decode(raw)?.to_string()),
        ("INTEGER", DataType::Timestamp) => {
            Value::Timestamp(unix_seconds(<i64 as Decode<S>>::decode(raw)?)?.naive_utc())
        }
        ("INTEGER", DataType::TimestampTz) => Value::TimestampTz(unix_seconds(<i64 as Decode<S>>::decode(raw)?)?),
        ("INTEGER", DataType::Json) => Value::Json(<i64 as Decode<S>>::decode(raw)?.into()),
        ("INTEGER", _) => Value::Int(<i64 as Decode<S>>::decode(raw)?),
        ("REAL", DataType::Decimal) => Value::Decimal(<f64 as Decode<S>>::decode(raw)?.to_string()),
        ("REAL", DataType::String) => Value::String(<f64 as Decode<S>>::decode(raw)?.to_string()),
        ("REAL", DataType::Json) => Value::Json(<f64 as Decode<S>>::decode(raw)?.into()),
        ("REAL", _) => Value::Float(<f64 as Decode<S>>::decode(raw)?),
        ("BLOB", DataType::String) => Value::String(String::from_utf8_lossy(<&[u8] as Decode<S>>::decode(raw)?).into()),
        ("BLOB", _) => Value::Bytes(<&[u8] as Decode<S>>::decode(raw)?.to_vec()),
        (_, data_type) => sqlite_text(<&str as Decode<S>>::decode(raw)?, data_type)?,
    })
}

fn sqlite_text(text: &str, data_type: DataType) -> Result<Value, BoxDynError> {
    Ok(match data_type {
        DataType::Int => Value::Int(text.trim().parse()?),
        DataType::Float => Value::Float(text.trim().parse()?),
        DataType::Bool => Value::Bool(matches!(text.trim().to_ascii_lowercase().as_str(), "1" | "t" | "true")),
        DataType::Decimal => Value::Decimal(text.to_string()),
        DataType::String => Value::String(text.to_string()),
        DataType::Bytes => Value::Bytes(text.as_bytes().to_vec()),
        DataType::Date => Value::Date(text.trim().parse()?),
        DataType::Timestamp => Value::Timestamp(parse_timestamp(text.trim())?),
        DataType::TimestampTz => Value::TimestampTz(parse_timestamp_tz(text.trim())?),
        DataType::Json => Value::Json(serde_json::from_str(text)?),
    })
}

fn unix_seconds(seconds: i64) -> Result<chrono::DateTime<chrono::Utc>, BoxDynError> {
    chrono::DateTime::from_timestamp(seconds, 0).ok_or_else(|| format!("{seconds} is out of range").into())
}
