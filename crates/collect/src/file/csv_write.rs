//! Writing CSV parts: a header row from the part's first batch, later
//! batches mapped onto it by field name, values as text and null as empty. A
//! batch with a field the header lacks goes to a new part with its own header.

use std::fs::File;

use anyhow::Context;
use haul_collect_core::{Batch, Schema, Value};

use super::columns::{fits, map_columns};
use super::part::{PartEncoder, PartOutput};

/// A CSV part file.
pub(crate) struct CsvEncoder {
    writer: csv::Writer<PartOutput>,
    columns: Schema,
}

impl CsvEncoder {
    /// Starts a part whose header names the fields of `columns`.
    pub fn new(output: PartOutput, columns: &Schema) -> anyhow::Result<CsvEncoder> {
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(output);
        writer.write_record(columns.names()).context("cannot write the csv header")?;
        Ok(CsvEncoder { writer, columns: columns.clone() })
    }
}

impl PartEncoder for CsvEncoder {
    fn fits(&self, schema: &Schema) -> bool {
        // Every value is written as text.
        fits(&self.columns, schema, |_, _| true)
    }

    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let positions = map_columns(&self.columns, &batch.schema);
        let mut buffer = String::new();
        for row in &batch.rows {
            for position in &positions {
                let value = position.and_then(|position| row.get(position)).unwrap_or(&Value::Null);
                let text = value.text(&mut buffer).unwrap_or_default();
                self.writer.write_field(text).context("cannot write a csv field")?;
            }
            self.writer.write_record(None::<&[u8]>).context("cannot write a csv record")?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<File> {
        let output =
            self.writer.into_inner().map_err(|error| error.into_error()).context("cannot flush the csv part")?;
        output.finish().context("cannot finish the csv part")
    }
}
