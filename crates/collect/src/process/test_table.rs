//! Batches written as readable tables in processor tests: typed field names,
//! then rows of JSON values, each read as its field's type (times and dates
//! as text, decimals as text).

use std::sync::Arc;

use haul_collect_core::{Batch, DataType, Field, Schema, Value};
use serde_json::Value as Json;

/// A batch with `fields` and the rows of the JSON array `rows`.
pub fn table(fields: &[(&str, DataType)], rows: Json) -> Batch {
    let schema = Arc::new(Schema::new(fields.iter().map(|(name, data_type)| Field::new(*name, *data_type)).collect()));
    let rows = match rows {
        Json::Array(rows) => rows,
        other => panic!("rows must be an array, not {other}"),
    };
    let rows = rows
        .into_iter()
        .map(|row| match row {
            Json::Array(values) => {
                assert_eq!(values.len(), fields.len(), "row of the wrong width");
                values.into_iter().zip(fields).map(|(json, (_, data_type))| value(json, *data_type)).collect()
            }
            other => panic!("a row must be an array, not {other}"),
        })
        .collect();
    Batch::new(schema, rows)
}

fn value(json: Json, data_type: DataType) -> Value {
    if json.is_null() {
        return Value::Null;
    }
    let text = || json.as_str().map(str::to_string).unwrap_or_else(|| json.to_string());
    match data_type {
        DataType::Bool => Value::Bool(json.as_bool().expect("a bool")),
        DataType::Int => Value::Int(json.as_i64().expect("an integer")),
        DataType::Float => Value::Float(json.as_f64().expect("a number")),
        DataType::Decimal => Value::Decimal(text()),
        DataType::String => Value::String(text()),
        DataType::Bytes => Value::Bytes(text().into_bytes()),
        DataType::Date => Value::Date(text().parse().expect("a date")),
        DataType::Timestamp => Value::Timestamp(text().parse().expect("a timestamp like 2024-01-02T03:04:05")),
        DataType::TimestampTz => Value::TimestampTz(text().parse().expect("an RFC 3339 time")),
        DataType::Json => Value::Json(json),
    }
}
