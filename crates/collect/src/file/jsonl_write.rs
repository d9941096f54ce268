//! Writing JSON Lines: one object per record with its keys in schema order,
//! for the `file` sink's parts and the `stdout` sink.

use std::fs::File;
use std::io::Write;

use anyhow::Context;
use haul_collect_core::{Batch, Schema, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::part::{PartEncoder, PartOutput};

/// Writes one record as a JSON object and a line end.
pub(crate) fn write_json_row(output: &mut impl Write, schema: &Schema, row: &[Value]) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *output, &JsonRow { schema, row })?;
    output.write_all(b"\n")?;
    Ok(())
}

/// A record serialised as an object whose keys follow the schema.
struct JsonRow<'a> {
    schema: &'a Schema,
    row: &'a [Value],
}

impl Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.row.len()))?;
        for (name, value) in self.schema.names().zip(self.row) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A JSON Lines part file.
pub(crate) struct JsonlEncoder {
    output: PartOutput,
}

impl JsonlEncoder {
    pub fn new(output: PartOutput) -> JsonlEncoder {
        JsonlEncoder { output }
    }
}

impl PartEncoder for JsonlEncoder {
    /// Every record names its own keys.
    fn fits(&self, _schema: &Schema) -> bool {
        true
    }

    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        for row in &batch.rows {
            write_json_row(&mut self.output, &batch.schema, row).context("cannot write a json line")?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<File> {
        self.output.finish().context("cannot finish the json lines part")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use haul_collect_core::{DataType, Field};

    use super::*;

    #[test]
    fn keys_follow_the_schema_and_values_nest() {
        let schema = Schema::new(vec![Field::new("z", DataType::Int), Field::new("a", DataType::Json)]);
        let batch = Batch::new(Arc::new(schema), vec![vec![Value::Int(1), Value::Json(serde_json::json!({"b": [1]}))]]);
        let mut out = Vec::new();
        write_json_row(&mut out, &batch.schema, &batch.rows[0]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"z\":1,\"a\":{\"b\":[1]}}\n");
    }
}
