//! Writing JSON Lines: one object per record with its keys in schema order,
//! for the `file` sink's parts, the `stdout` sink and Singer messages.
//!
//! Records are encoded into a byte buffer with each key of the schema
//! escaped once per batch, not once per record; the buffer goes to the file
//! in large writes.

use std::fs::File;
use std::io::Write;

use anyhow::Context;
use haul_collect_core::{Batch, Schema, Value};

use super::part::{PartEncoder, PartOutput};

/// The most a part's encoding buffer holds before it is written out.
const ENCODED_BYTES: usize = 256 * 1024;

/// Encodes the records of one schema as JSON objects: the keys, with the
/// punctuation before their values, are escaped once.
pub(crate) struct JsonRows {
    /// `{"first":`, then `,"next":` for each further field.
    keys: Vec<Vec<u8>>,
}

impl JsonRows {
    pub(crate) fn new(schema: &Schema) -> JsonRows {
        let keys = schema
            .names()
            .enumerate()
            .map(|(index, name)| {
                let mut key = vec![if index == 0 { b'{' } else { b',' }];
                // Serialising a string into a `Vec` cannot fail.
                let _ = serde_json::to_writer(&mut key, name);
                key.push(b':');
                key
            })
            .collect();
        JsonRows { keys }
    }

    /// Appends one record as a JSON object and a line end.
    pub(crate) fn write_row(&self, out: &mut Vec<u8>, row: &[Value]) -> serde_json::Result<()> {
        self.write_object(out, row)?;
        out.push(b'\n');
        Ok(())
    }

    /// Appends one record as a JSON object.
    pub(crate) fn write_object(&self, out: &mut Vec<u8>, row: &[Value]) -> serde_json::Result<()> {
        if row.is_empty() || self.keys.is_empty() {
            out.extend_from_slice(b"{}");
            return Ok(());
        }
        for (key, value) in self.keys.iter().zip(row) {
            out.extend_from_slice(key);
            serde_json::to_writer(&mut *out, value)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// A JSON Lines part file.
pub(crate) struct JsonlEncoder {
    output: PartOutput,
    encoded: Vec<u8>,
}

impl JsonlEncoder {
    pub fn new(output: PartOutput) -> JsonlEncoder {
        JsonlEncoder { output, encoded: Vec::with_capacity(ENCODED_BYTES + 4096) }
    }

    fn write_encoded(&mut self) -> anyhow::Result<()> {
        self.output.write_all(&self.encoded).context("cannot write json lines")?;
        self.encoded.clear();
        Ok(())
    }
}

impl PartEncoder for JsonlEncoder {
    /// Every record names its own keys.
    fn fits(&self, _schema: &Schema) -> bool {
        true
    }

    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let rows = JsonRows::new(&batch.schema);
        for row in &batch.rows {
            rows.write_row(&mut self.encoded, row).context("cannot write a json line")?;
            if self.encoded.len() >= ENCODED_BYTES {
                self.write_encoded()?;
            }
        }
        self.write_encoded()
    }

    fn finish(self: Box<Self>) -> anyhow::Result<File> {
        self.output.finish().context("cannot finish the json lines part")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use haul_collect_core::{DataType, Field};
    use serde::ser::{Serialize, SerializeMap, Serializer};

    use super::*;

    fn line(schema: &Schema, row: &[Value]) -> String {
        let mut out = Vec::new();
        JsonRows::new(schema).write_row(&mut out, row).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_follow_the_schema_and_values_nest() {
        let schema = Schema::new(vec![Field::new("z", DataType::Int), Field::new("a", DataType::Json)]);
        let row = [Value::Int(1), Value::Json(serde_json::json!({"b": [1]}))];
        assert_eq!(line(&schema, &row), "{\"z\":1,\"a\":{\"b\":[1]}}\n");
        assert_eq!(line(&Schema::default(), &[]), "{}\n");
    }

    /// The same object serde writes for a map of the keys to the values.
    struct AsMap<'a>(&'a Schema, &'a [Value]);

    impl Serialize for AsMap<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.1.len()))?;
            for (name, value) in self.0.names().zip(self.1) {
                map.serialize_entry(name, value)?;
            }
            map.end()
        }
    }

    #[test]
    fn escaped_keys_and_every_kind_of_value_match_serde() {
        let names = ["plain", "quo\"te", "back\\slash", "new\nline", "ünï", "\u{1}"];
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Int(-42),
            Value::Float(2.5),
            Value::String("tab\there \"q\" é \u{7f}".into()),
            Value::Float(f64::NAN),
        ];
        let schema = Schema::new(names.iter().map(|name| Field::new(*name, DataType::String)).collect());
        let expected = serde_json::to_string(&AsMap(&schema, &values)).unwrap() + "\n";
        assert_eq!(line(&schema, &values), expected);
        serde_json::from_str::<serde_json::Value>(&expected).unwrap();
    }

    #[test]
    fn parts_hold_every_line_of_batches_larger_than_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.jsonl");
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("text", DataType::String)]));
        let text = "x".repeat(1000);
        let rows: Vec<Vec<Value>> = (0..1000).map(|id| vec![Value::Int(id), Value::String(text.clone())]).collect();
        let batch = Batch::new(schema, rows);
        let mut encoder: Box<dyn PartEncoder> =
            Box::new(JsonlEncoder::new(PartOutput::new(File::create(&path).unwrap(), false)));
        encoder.write_batch(&batch).unwrap();
        encoder.write_batch(&batch).unwrap();
        drop(encoder.finish().unwrap());
        let written = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 2000);
        assert_eq!(lines[1999], format!("{{\"id\":999,\"text\":\"{text}\"}}"));
    }
}
