//! Writing Parquet parts: haul's types mapped onto Arrow columns (all
//! nullable), one record batch per haul batch, written by `ArrowWriter` in
//! row groups of at most [`ROW_GROUP_ROWS`]. A float column also takes
//! integers; a batch with a field the part lacks or of another type goes to
//! a new part.

use std::fs::File;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType as ArrowType, Field as ArrowField, Schema as ArrowSchema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use haul_collect_core::{Batch, DataType, Field, Schema, Value};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::columns::{fits, map_columns};
use super::part::PartEncoder;

/// The most rows `ArrowWriter` buffers before writing a row group.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// How Parquet pages are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParquetCodec {
    None,
    Snappy,
    Zstd,
}

/// A Parquet part file.
pub(crate) struct ParquetEncoder {
    writer: ArrowWriter<File>,
    columns: Schema,
    arrow_schema: Arc<ArrowSchema>,
}

impl ParquetEncoder {
    /// Starts a part whose columns are the fields of `columns`.
    pub fn new(file: File, columns: &Schema, codec: ParquetCodec) -> anyhow::Result<ParquetEncoder> {
        let compression = match codec {
            ParquetCodec::None => Compression::UNCOMPRESSED,
            ParquetCodec::Snappy => Compression::SNAPPY,
            ParquetCodec::Zstd => Compression::ZSTD(ZstdLevel::default()),
        };
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let fields: Vec<ArrowField> = columns
            .fields
            .iter()
            .map(|field| ArrowField::new(&field.name, arrow_type(field.data_type), true))
            .collect();
        let arrow_schema = Arc::new(ArrowSchema::new(fields));
        let writer = ArrowWriter::try_new(file, arrow_schema.clone(), Some(properties))
            .context("cannot start the parquet part")?;
        Ok(ParquetEncoder { writer, columns: columns.clone(), arrow_schema })
    }
}

impl PartEncoder for ParquetEncoder {
    fn fits(&self, schema: &Schema) -> bool {
        fits(&self.columns, schema, |column, field| {
            column == field || (column == DataType::Float && field == DataType::Int)
        })
    }

    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let positions = map_columns(&self.columns, &batch.schema);
        let arrays = self
            .columns
            .fields
            .iter()
            .zip(positions)
            .map(|(field, position)| {
                let values = batch.rows.iter().map(|row| position.and_then(|position| row.get(position)));
                build_array(field, values)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let record_batch = RecordBatch::try_new(self.arrow_schema.clone(), arrays)
            .context("cannot assemble a parquet record batch")?;
        self.writer.write(&record_batch).context("cannot write a parquet record batch")
    }

    fn finish(self: Box<Self>) -> anyhow::Result<File> {
        self.writer.into_inner().context("cannot finish the parquet part")
    }
}

/// The Arrow type a haul type is written as.
fn arrow_type(data_type: DataType) -> ArrowType {
    match data_type {
        DataType::Bool => ArrowType::Boolean,
        DataType::Int => ArrowType::Int64,
        DataType::Float => ArrowType::Float64,
        DataType::Decimal | DataType::String | DataType::Json => ArrowType::Utf8,
        DataType::Bytes => ArrowType::Binary,
        DataType::Date => ArrowType::Date32,
        DataType::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, None),
        DataType::TimestampTz => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// One column of a record batch; a value of another type than the field's is
/// an error that names the types, never the value.
fn build_array<'a>(field: &Field, values: impl Iterator<Item = Option<&'a Value>>) -> anyhow::Result<ArrayRef> {
    let mismatch = |value: &Value| {
        anyhow::anyhow!("field `{}` is typed {:?} but holds a {} value", field.name, field.data_type, kind(value))
    };
    macro_rules! column {
        ($builder:expr, |$value:ident| $convert:expr) => {{
            let mut builder = $builder;
            for value in values {
                match value {
                    None | Some(Value::Null) => builder.append_null(),
                    Some($value) => builder.append_value($convert.ok_or_else(|| mismatch($value))?),
                }
            }
            Ok(Arc::new(builder.finish()) as ArrayRef)
        }};
    }
    match field.data_type {
        DataType::Bool => column!(BooleanBuilder::new(), |value| match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }),
        DataType::Int => column!(Int64Builder::new(), |value| match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }),
        DataType::Float => column!(Float64Builder::new(), |value| match value {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }),
        DataType::Decimal | DataType::String | DataType::Json => {
            let mut buffer = String::new();
            column!(StringBuilder::new(), |value| value.text(&mut buffer))
        }
        DataType::Bytes => column!(BinaryBuilder::new(), |value| match value {
            Value::Bytes(bytes) => Some(bytes.as_slice()),
            _ => None,
        }),
        DataType::Date => column!(Date32Builder::new(), |value| match value {
            Value::Date(date) => days_since_epoch(*date),
            _ => None,
        }),
        DataType::Timestamp => column!(TimestampMicrosecondBuilder::new(), |value| match value {
            Value::Timestamp(time) => Some(time.and_utc().timestamp_micros()),
            _ => None,
        }),
        DataType::TimestampTz => {
            column!(TimestampMicrosecondBuilder::new().with_timezone("UTC"), |value| match value {
                Value::TimestampTz(time) => Some(time.timestamp_micros()),
                _ => None,
            })
        }
    }
}

/// The variant of a value, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float(_) => "float",
        Value::Decimal(_) => "decimal",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Date(_) => "date",
        Value::Timestamp(_) => "timestamp",
        Value::TimestampTz(_) => "timestamptz",
        Value::Json(_) => "json",
    }
}

fn days_since_epoch(date: NaiveDate) -> Option<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}
