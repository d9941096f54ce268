//! The Singer protocol's messages (`SCHEMA`, `RECORD`, `STATE`,
//! `ACTIVATE_VERSION`, one JSON object a line) and the mapping between a
//! stream's JSON Schema and a haul [`Schema`]: integers, numbers, booleans
//! and strings map to their types, `format: date-time` strings to instants,
//! `format: date` strings to dates, and anything nested or mixed to JSON.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use haul_collect_core::{DataType, Field, Schema, Value};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::{Map, json};

/// The field the source adds in front of every record: the record's stream.
pub(crate) const STREAM_FIELD: &str = "_stream";

/// One line of a tap's output.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Message {
    Schema { stream: String, schema: StreamSchema },
    Record { stream: String, record: Map<String, serde_json::Value> },
    State { value: serde_json::Value },
    ActivateVersion {},
}

impl Message {
    /// Reads one line; the error is the reason to reject it.
    pub(crate) fn parse(line: &[u8]) -> Result<Message, String> {
        serde_json::from_slice(line).map_err(|error| format!("invalid singer message: {error}"))
    }
}

/// The JSON Schema of a stream, with its properties in the tap's order.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamSchema {
    #[serde(default)]
    properties: OrderedProperties,
}

/// JSON Schema `properties` in the order they were written (a `serde_json`
/// map would sort them).
#[derive(Debug, Default)]
struct OrderedProperties(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedProperties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PropertiesVisitor;

        impl<'de> Visitor<'de> for PropertiesVisitor {
            type Value = OrderedProperties;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object of JSON Schema properties")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedProperties, A::Error> {
                let mut properties = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    properties.push(entry);
                }
                Ok(OrderedProperties(properties))
            }
        }

        deserializer.deserialize_map(PropertiesVisitor)
    }
}

/// How the records of one stream become rows: the batch schema (the stream
/// field first, then the stream's properties) and where each property goes.
#[derive(Debug)]
pub(crate) struct StreamLayout {
    pub schema: Arc<Schema>,
    positions: HashMap<String, usize>,
}

impl StreamLayout {
    /// Builds the layout of a stream from its `SCHEMA` message.
    pub(crate) fn new(schema: StreamSchema) -> Result<StreamLayout, String> {
        let mut fields = vec![Field { name: STREAM_FIELD.to_string(), data_type: DataType::String, nullable: false }];
        let mut positions = HashMap::with_capacity(schema.properties.0.len());
        for (name, property) in schema.properties.0 {
            if name == STREAM_FIELD {
                return Err(format!("the property `{STREAM_FIELD}` clashes with the field haul adds for the stream"));
            }
            let (data_type, nullable) = field_type(&property);
            if positions.insert(name.clone(), fields.len()).is_some() {
                return Err(format!("the property `{name}` appears twice"));
            }
            fields.push(Field { name, data_type, nullable });
        }
        Ok(StreamLayout { schema: Arc::new(Schema::new(fields)), positions })
    }

    /// Converts one record of the stream into a row; the error is the reason to reject it.
    pub(crate) fn row(&self, stream: &str, record: &Map<String, serde_json::Value>) -> Result<Vec<Value>, String> {
        let mut row = vec![Value::Null; self.schema.fields.len()];
        row[0] = Value::String(stream.to_string());
        for (name, json) in record {
            let position =
                *self.positions.get(name).ok_or_else(|| format!("field `{name}` is not in the stream's schema"))?;
            row[position] = convert(&self.schema.fields[position], json)?;
        }
        if let Some(field) = self.schema.fields.iter().zip(&row).find(|(f, v)| !f.nullable && v.is_null()).map(|p| p.0)
        {
            return Err(format!("field `{}` is null or missing but the schema does not allow null", field.name));
        }
        Ok(row)
    }
}

/// The haul type of a JSON Schema property, and whether it may be null.
fn field_type(property: &serde_json::Value) -> (DataType, bool) {
    let types: Vec<&str> = match property.get("type") {
        Some(serde_json::Value::String(name)) => vec![name.as_str()],
        Some(serde_json::Value::Array(names)) => names.iter().filter_map(|name| name.as_str()).collect(),
        _ => return (DataType::Json, true),
    };
    let nullable = types.contains(&"null");
    let mut concrete: Vec<&str> = types.into_iter().filter(|name| *name != "null").collect();
    concrete.sort_unstable();
    let data_type = match concrete.as_slice() {
        ["integer"] => DataType::Int,
        ["number"] | ["integer", "number"] => DataType::Float,
        ["boolean"] => DataType::Bool,
        ["string"] => match property.get("format").and_then(|format| format.as_str()) {
            Some("date-time") => DataType::TimestampTz,
            Some("date") => DataType::Date,
            _ => DataType::String,
        },
        _ => DataType::Json,
    };
    (data_type, nullable)
}

/// One JSON value as the field's type.
fn convert(field: &Field, json: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as Json;
    let value = match (field.data_type, json) {
        (_, Json::Null) => Some(Value::Null),
        (DataType::Json, json) => Some(Value::Json(json.clone())),
        (DataType::Bool, Json::Bool(b)) => Some(Value::Bool(*b)),
        (DataType::Int, Json::Number(n)) => n.as_i64().map(Value::Int),
        (DataType::Float, Json::Number(n)) => n.as_f64().map(Value::Float),
        (DataType::String, Json::String(s)) => Some(Value::String(s.clone())),
        (DataType::TimestampTz, Json::String(s)) => {
            DateTime::parse_from_rfc3339(s).ok().map(|t| Value::TimestampTz(t.with_timezone(&Utc)))
        }
        (DataType::Date, Json::String(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(Value::Date),
        _ => None,
    };
    value.ok_or_else(|| format!("field `{}`: {} is not a valid {}", field.name, describe(json), expected(field)))
}

fn describe(json: &serde_json::Value) -> String {
    match json {
        serde_json::Value::String(s) if s.len() <= 40 => format!("\"{s}\""),
        serde_json::Value::String(_) => "a long string".to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Array(_) => "an array".to_string(),
        serde_json::Value::Object(_) => "an object".to_string(),
        serde_json::Value::Null => "null".to_string(),
    }
}

fn expected(field: &Field) -> &'static str {
    match field.data_type {
        DataType::Bool => "boolean",
        DataType::Int => "64-bit integer",
        DataType::Float => "number",
        DataType::TimestampTz => "date-time (RFC 3339)",
        DataType::Date => "date (YYYY-MM-DD)",
        _ => "string",
    }
}

/// The `SCHEMA` message a target receives for a batch schema.
pub(crate) fn schema_message(stream: &str, schema: &Schema, key_properties: &[String]) -> serde_json::Value {
    let properties: Map<String, serde_json::Value> =
        schema.fields.iter().map(|field| (field.name.clone(), json_schema(field))).collect();
    json!({
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": properties},
        "key_properties": key_properties,
    })
}

/// The JSON Schema of one field, matching how [`Value`] serialises.
fn json_schema(field: &Field) -> serde_json::Value {
    let (type_name, format) = match field.data_type {
        DataType::Json => return json!({}),
        DataType::Bool => ("boolean", None),
        DataType::Int => ("integer", None),
        DataType::Float => ("number", None),
        DataType::Decimal => ("string", Some("singer.decimal")),
        DataType::String | DataType::Bytes | DataType::Timestamp => ("string", None),
        DataType::Date => ("string", Some("date")),
        DataType::TimestampTz => ("string", Some("date-time")),
    };
    let type_value = if field.nullable { json!(["null", type_name]) } else { json!(type_name) };
    match format {
        Some(format) => json!({"type": type_value, "format": format}),
        None => json!({"type": type_value}),
    }
}

/// A `RECORD` message's opening, up to where the record object starts.
pub(crate) fn record_prefix(stream: &str) -> Vec<u8> {
    let mut prefix = br#"{"type":"RECORD","stream":"#.to_vec();
    serde_json::to_writer(&mut prefix, stream).expect("a string serialises");
    prefix.extend_from_slice(br#","record":"#);
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of a `SCHEMA` message whose schema is written as text, so
    /// that the order of its properties is the order written.
    fn layout(schema: &str) -> StreamLayout {
        let message = format!(r#"{{"type": "SCHEMA", "stream": "s", "schema": {schema}}}"#);
        match Message::parse(message.as_bytes()).unwrap() {
            Message::Schema { schema, .. } => StreamLayout::new(schema).unwrap(),
            other => panic!("not a schema: {other:?}"),
        }
    }

    #[test]
    fn json_schema_types_map_to_fields_in_order() {
        let layout = layout(
            r#"{"properties": {
                "zeta": {"type": "integer"},
                "amount": {"type": ["number", "null"]},
                "at": {"type": ["null", "string"], "format": "date-time"},
                "day": {"type": "string", "format": "date"},
                "ok": {"type": ["boolean", "null"]},
                "tags": {"type": "array", "items": {}},
                "either": {"type": ["string", "integer"]},
                "untyped": {"anyOf": [{"type": "string"}]}
            }}"#,
        );
        let fields: Vec<_> = layout.schema.fields.iter().map(|f| (f.name.as_str(), f.data_type, f.nullable)).collect();
        assert_eq!(
            fields,
            vec![
                ("_stream", DataType::String, false),
                ("zeta", DataType::Int, false),
                ("amount", DataType::Float, true),
                ("at", DataType::TimestampTz, true),
                ("day", DataType::Date, false),
                ("ok", DataType::Bool, true),
                ("tags", DataType::Json, false),
                ("either", DataType::Json, false),
                ("untyped", DataType::Json, true),
            ]
        );
    }

    #[test]
    fn records_convert_or_give_a_reason() {
        let layout = layout(
            r#"{"properties": {
                "id": {"type": "integer"},
                "at": {"type": ["null", "string"], "format": "date-time"},
                "meta": {"type": ["null", "object"]}
            }}"#,
        );
        let record = |value: serde_json::Value| value.as_object().unwrap().clone();
        let row = layout.row("s", &record(json!({"id": 1, "at": "2024-01-02T04:04:05+01:00", "meta": {"a": 1}})));
        let at = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        assert_eq!(
            row.unwrap(),
            vec![Value::from("s"), Value::Int(1), Value::TimestampTz(at), Value::Json(json!({"a": 1}))]
        );
        assert_eq!(layout.row("s", &record(json!({"id": 2}))).unwrap()[2], Value::Null);
        let cases = [
            (json!({"id": 1, "at": "yesterday"}), "field `at`: \"yesterday\" is not a valid date-time (RFC 3339)"),
            (json!({"id": 1.5}), "field `id`: 1.5 is not a valid 64-bit integer"),
            (json!({"id": "1"}), "field `id`: \"1\" is not a valid 64-bit integer"),
            (json!({"at": null}), "field `id` is null or missing but the schema does not allow null"),
            (json!({"id": 1, "extra": true}), "field `extra` is not in the stream's schema"),
        ];
        for (input, reason) in cases {
            assert_eq!(layout.row("s", &record(input.clone())).unwrap_err(), reason, "{input}");
        }
    }

    #[test]
    fn messages_parse_and_bad_lines_give_reasons() {
        assert!(matches!(Message::parse(br#"{"type":"STATE","value":{"a":1}}"#), Ok(Message::State { .. })));
        let version = br#"{"type":"ACTIVATE_VERSION","stream":"s","version":1}"#;
        assert!(matches!(Message::parse(version), Ok(Message::ActivateVersion {})));
        assert!(Message::parse(b"not json").unwrap_err().starts_with("invalid singer message"));
        assert!(Message::parse(br#"{"type":"BOGUS"}"#).unwrap_err().contains("unknown variant `BOGUS`"));
        assert!(Message::parse(br#"{"type":"RECORD","stream":"s"}"#).unwrap_err().contains("missing field `record`"));
    }

    #[test]
    fn a_schema_with_the_stream_field_is_refused() {
        let schema: StreamSchema = serde_json::from_value(json!({"properties": {"_stream": {}}})).unwrap();
        assert!(StreamLayout::new(schema).unwrap_err().contains("clashes"));
    }

    #[test]
    fn batch_schemas_become_json_schemas() {
        let schema = Schema::new(vec![
            Field { name: "id".into(), data_type: DataType::Int, nullable: false },
            Field::new("at", DataType::TimestampTz),
            Field::new("meta", DataType::Json),
        ]);
        assert_eq!(
            schema_message("users", &schema, &["id".to_string()]),
            json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"], "schema": {"type": "object", "properties": {
                "id": {"type": "integer"},
                "at": {"type": ["null", "string"], "format": "date-time"},
                "meta": {},
            }}})
        );
        assert_eq!(record_prefix("a\"b"), br#"{"type":"RECORD","stream":"a\"b","record":"#.to_vec());
    }
}
