//! JSON Lines records for the `file` source: one object per line, keys kept
//! in their order. Batches are built by [`ObjectRows`]: the union of their
//! records' keys, nulls for missing keys, `json` for mixed types.

use std::io::{self, BufRead, Read};

use haul_collect_core::Batch;

use super::read::{MAX_RECORD_BYTES, RecordFormat};
use crate::object_rows::{ObjectRows, parse_object};

/// Whether `byte` ends a JSON Lines line.
pub(crate) fn is_line_end(byte: u8) -> bool {
    byte == b'\n'
}

/// The rows of one batch under way.
#[derive(Default)]
pub(crate) struct JsonlFormat {
    rows: ObjectRows,
}

impl RecordFormat for JsonlFormat {
    fn read_record(&mut self, reader: &mut dyn BufRead, raw: &mut Vec<u8>) -> io::Result<bool> {
        let read = reader.take(MAX_RECORD_BYTES as u64 + 1).read_until(b'\n', raw)?;
        if read > MAX_RECORD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line is longer than {MAX_RECORD_BYTES} bytes"),
            ));
        }
        Ok(read > 0)
    }

    fn push_row(&mut self, raw: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(raw).map_err(|error| format!("invalid utf-8: {error}"))?;
        if text.trim().is_empty() {
            return Ok(());
        }
        let object = parse_object(text)?;
        self.rows.push(object);
        Ok(())
    }

    fn take_batch(&mut self) -> Batch {
        self.rows.take_batch()
    }
}
