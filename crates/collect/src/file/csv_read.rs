//! CSV records for the `file` source: framed with `csv-core` (so quoted
//! fields may hold delimiters and line ends), read into reused buffers, and
//! turned into rows of strings named by the header or the `columns` option.

use std::io::{self, BufRead};
use std::sync::Arc;

use anyhow::{Context, bail};
use csv_core::ReadRecordResult;
use haul_collect_core::{Batch, DataType, Field, Schema, Value};

use super::input::Input;
use super::read::{MAX_RECORD_BYTES, RecordFormat};

/// The CSV options of the source, checked.
#[derive(Debug, Clone)]
pub(crate) struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    /// Whether the first record names the columns.
    pub header: bool,
    /// Column names; with `header`, they replace the header's.
    pub columns: Option<Vec<String>>,
    /// Empty fields become null rather than empty strings.
    pub empty_as_null: bool,
}

/// Whether `byte` ends a CSV line: `csv-core` ends records at `\r` and `\n`.
pub(crate) fn is_line_end(byte: u8) -> bool {
    matches!(byte, b'\r' | b'\n')
}

/// Splits a byte stream into CSV records and their fields.
struct CsvFramer {
    parser: csv_core::Reader,
    /// The fields of the last record, back to back.
    fields: Vec<u8>,
    /// Where each field of the last record ends in `fields`.
    ends: Vec<usize>,
    field_count: usize,
}

impl CsvFramer {
    fn new(options: &CsvOptions) -> CsvFramer {
        let parser = csv_core::ReaderBuilder::new().delimiter(options.delimiter).quote(options.quote).build();
        CsvFramer { parser, fields: vec![0; 4096], ends: vec![0; 64], field_count: 0 }
    }

    fn read_record(&mut self, reader: &mut dyn BufRead, raw: &mut Vec<u8>) -> io::Result<bool> {
        let (mut fields_length, mut ends_length) = (0, 0);
        loop {
            let buffer = reader.fill_buf()?;
            let at_end = buffer.is_empty();
            let (result, read, written, ended) = self.parser.read_record(
                buffer,
                self.fields.get_mut(fields_length..).unwrap_or_default(),
                self.ends.get_mut(ends_length..).unwrap_or_default(),
            );
            raw.extend_from_slice(buffer.get(..read).unwrap_or(buffer));
            reader.consume(read);
            fields_length += written;
            ends_length += ended;
            if raw.len() > MAX_RECORD_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a csv record is longer than {MAX_RECORD_BYTES} bytes, is a quote left open?"),
                ));
            }
            match result {
                ReadRecordResult::InputEmpty if at_end => return Ok(false),
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.fields.resize(self.fields.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record => {
                    self.field_count = ends_length;
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }

    /// The fields of the last record read.
    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let ends = self.ends.get(..self.field_count).unwrap_or_default();
        let starts = std::iter::once(0).chain(ends.iter().copied());
        starts.zip(ends).map(|(start, &end)| self.fields.get(start..end).unwrap_or_default())
    }
}

/// CSV rows of one file, all fields strings.
pub(crate) struct CsvFormat {
    framer: CsvFramer,
    schema: Arc<Schema>,
    empty_as_null: bool,
    rows: Vec<Vec<Value>>,
}

impl CsvFormat {
    /// Reads records named by the `columns` option, else by `header`; a name
    /// given twice is an error, since one column would hide the other.
    pub fn new(options: &CsvOptions, header: Option<Vec<String>>, path: &str) -> anyhow::Result<CsvFormat> {
        let names = options.columns.clone().or(header).unwrap_or_default();
        if let Some(duplicate) = duplicate_name(&names) {
            bail!("the csv header of `{path}` names column `{duplicate}` more than once");
        }
        let schema = Arc::new(Schema::new(names.into_iter().map(|name| Field::new(name, DataType::String)).collect()));
        Ok(CsvFormat {
            framer: CsvFramer::new(options),
            schema,
            empty_as_null: options.empty_as_null,
            rows: Vec::new(),
        })
    }
}

/// The first name that appears twice.
fn duplicate_name(names: &[String]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names.iter().find(|name| !seen.insert(name.as_str())).map(String::as_str)
}

/// Reads the header at the start of a file, leaving `input` after it; `None`
/// when the file is empty.
pub(crate) fn read_header(options: &CsvOptions, input: &mut Input) -> anyhow::Result<Option<Vec<String>>> {
    let mut framer = CsvFramer::new(options);
    let mut raw = Vec::new();
    input.skip_line_ends()?;
    if !input.read_record(|reader, raw| framer.read_record(reader, raw), &mut raw)? {
        return Ok(None);
    }
    let names = framer.fields().map(|name| std::str::from_utf8(name).map(str::to_string));
    match names.collect::<Result<Vec<_>, _>>() {
        Ok(names) => Ok(Some(names)),
        Err(error) => Err(error).context("the csv header is not valid utf-8"),
    }
}

impl RecordFormat for CsvFormat {
    fn read_record(&mut self, reader: &mut dyn BufRead, raw: &mut Vec<u8>) -> io::Result<bool> {
        self.framer.read_record(reader, raw)
    }

    fn push_row(&mut self, _raw: &[u8]) -> Result<(), String> {
        let expected = self.schema.fields.len();
        if self.framer.field_count != expected {
            return Err(format!("expected {expected} fields, found {}", self.framer.field_count));
        }
        let mut row = Vec::with_capacity(expected);
        for (index, field) in self.framer.fields().enumerate() {
            let text = std::str::from_utf8(field).map_err(|_| format!("field {} is not valid utf-8", index + 1))?;
            row.push(if text.is_empty() && self.empty_as_null { Value::Null } else { Value::String(text.to_string()) });
        }
        self.rows.push(row);
        Ok(())
    }

    fn take_batch(&mut self) -> Batch {
        Batch::new(self.schema.clone(), std::mem::take(&mut self.rows))
    }
}

/// Checks the CSV options a job file gives.
pub(crate) fn check_options(options: &CsvOptions) -> anyhow::Result<()> {
    if options.delimiter == options.quote {
        bail!("`delimiter` and `quote` must differ");
    }
    if is_line_end(options.delimiter) || is_line_end(options.quote) {
        bail!("`delimiter` and `quote` cannot be line ends");
    }
    if !options.header && options.columns.is_none() {
        bail!("`columns` is required when `header = false`");
    }
    if let Some(duplicate) = options.columns.as_deref().and_then(duplicate_name) {
        bail!("`columns` names `{duplicate}` more than once");
    }
    Ok(())
}
