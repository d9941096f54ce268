//! Reading one shard of the SQL source: one streaming query ordered by the
//! split key (or, for the `key IS NULL` shard, by the table's primary key,
//! resumed by skipping the rows already read), decoded into batches with the
//! checkpoint each one reaches. A row whose values cannot be decoded is
//! rejected with its reason and key instead of failing the shard.

use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use haul_collect_core::{Batch, Checkpoint, Field, Rejected, Schema, ShardReader, SourceBatch, Value};

use super::catalog::Shape;
use super::connection::Database;
use super::decode::{Column, DecodedRow};
use super::descriptor::{Conditions, ShardDescriptor, Span};
use super::dialect::{Dialect, Ident};
use super::statement::{BatchStream, Statement};

/// Where a resumed shard starts.
enum Resume {
    /// After the last key value read.
    AfterKey { last: serde_json::Value },
    /// After `read` rows; `skip` of them are still to be skipped.
    Position { read: u64, skip: u64 },
}

pub struct SqlShardReader {
    stream: BatchStream,
    schema: Arc<Schema>,
    visible: usize,
    /// The column of the split key in the rows read.
    key: usize,
    key_name: String,
    resume: Resume,
    context: String,
}

/// The comma-separated SELECT list for `columns`, with text casts where needed.
pub fn select_list(dialect: Dialect, columns: &[Column]) -> anyhow::Result<String> {
    let exprs = columns
        .iter()
        .map(|column| Ok(dialect.select_expr(&dialect.quote(&Ident::column(&column.name)?), &column.column_type)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(exprs.join(", "))
}

/// `ORDER BY` the columns, each in the form that orders its values.
fn order_by(dialect: Dialect, columns: &[&Column]) -> anyhow::Result<String> {
    let order = columns
        .iter()
        .map(|column| Ok(dialect.comparable(&dialect.quote(&Ident::column(&column.name)?), &column.column_type)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(format!(" ORDER BY {}", order.join(", ")))
}

impl SqlShardReader {
    pub fn open(
        database: &Database,
        shape: &Shape,
        shard_id: &str,
        descriptor: &ShardDescriptor,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Self> {
        let dialect = database.dialect();
        let context = format!("shard {shard_id} of the {}", shape.relation.describe());
        let schema = Arc::new(Schema::new(
            shape.selected.iter().map(|column| Field::new(&column.name, column.column_type.data_type)).collect(),
        ));
        let key_name = match &descriptor.span {
            Span::KeyRange { key, .. } | Span::KeyIsNull { key } => key,
        };
        let key_column = shape.column(key_name)?;
        let mut columns = shape.selected.clone();
        let key = match columns.iter().position(|column| column.name == key_column.name) {
            Some(index) => index,
            None => {
                columns.push(key_column.clone());
                columns.len() - 1
            }
        };
        let mut statement = Statement::new(dialect);
        statement.push(&format!(
            "SELECT {} FROM {}",
            select_list(dialect, &columns)?,
            shape.relation.sql_from(dialect)
        ));
        let resume = match &descriptor.span {
            Span::KeyRange { .. } => {
                let after = checkpoint.map(|c| c.0.get("after").cloned().context("checkpoint without `after`"));
                // A checkpoint whose rows had no readable key resumes from the start.
                let after = after.transpose().with_context(|| context.clone())?.filter(|after| !after.is_null());
                Conditions::new(&mut statement, dialect).shard(shape, descriptor, after.as_ref())?;
                statement.push(&order_by(dialect, &[key_column])?);
                Resume::AfterKey { last: after.unwrap_or(serde_json::Value::Null) }
            }
            Span::KeyIsNull { .. } => {
                if shape.primary_key.is_empty() {
                    bail!(
                        "{context}: the rows whose split key `{key_name}` is NULL have no primary key to order them by"
                    );
                }
                Conditions::new(&mut statement, dialect).shard(shape, descriptor, None)?;
                statement.push(&order_by(dialect, &shape.primary_key.iter().collect::<Vec<_>>())?);
                Resume::Position { read: 0, skip: position(checkpoint).with_context(|| context.clone())? }
            }
        };
        let stream = database.stream_batches(statement, columns.into(), batch_size);
        let visible = shape.selected.len();
        Ok(SqlShardReader { stream, schema, visible, key, key_name: key_name.clone(), resume, context })
    }

    /// Splits decoded rows into the batch and the rejected rows.
    fn sort_rows(&self, rows: Vec<DecodedRow>) -> (Vec<Vec<Value>>, Vec<Rejected>) {
        let mut good = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        for row in rows {
            match row {
                Ok(mut values) => {
                    values.truncate(self.visible);
                    good.push(values);
                }
                Err(bad) => {
                    let key = bad.values.get(self.key).map_or(serde_json::Value::Null, Value::to_json);
                    let record = self.schema.names().zip(&bad.values).map(|(n, v)| (n.to_string(), v.to_json()));
                    rejected.push(Rejected {
                        reason: bad.reason,
                        position: format!("{} {} = {key}", self.context, self.key_name),
                        record: serde_json::Value::Object(record.collect()),
                        stage: "source".into(),
                    });
                }
            }
        }
        (good, rejected)
    }
}

fn position(checkpoint: Option<&Checkpoint>) -> anyhow::Result<u64> {
    match checkpoint {
        None => Ok(0),
        Some(checkpoint) => checkpoint.0.get("offset").and_then(|v| v.as_u64()).context("checkpoint without `offset`"),
    }
}

/// The key of a decoded row, good or bad; null when it could not be decoded.
fn key_of(row: &DecodedRow, key: usize) -> Option<serde_json::Value> {
    let values = match row {
        Ok(values) => values,
        Err(bad) => &bad.values,
    };
    values.get(key).filter(|value| !value.is_null()).map(Value::to_json)
}

#[async_trait]
impl ShardReader for SqlShardReader {
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        loop {
            let Some(mut rows) = self.stream.next().await.with_context(|| format!("reading {}", self.context))? else {
                return Ok(None);
            };
            let checkpoint = match &mut self.resume {
                Resume::AfterKey { last } => {
                    if let Some(key) = rows.iter().rev().find_map(|row| key_of(row, self.key)) {
                        *last = key;
                    }
                    serde_json::json!({ "after": last })
                }
                Resume::Position { read, skip } => {
                    let skipped = (*skip).min(rows.len() as u64);
                    rows.drain(..skipped as usize);
                    *skip -= skipped;
                    *read += skipped + rows.len() as u64;
                    serde_json::json!({ "offset": *read })
                }
            };
            if rows.is_empty() {
                continue;
            }
            let (rows, rejected) = self.sort_rows(rows);
            return Ok(Some(SourceBatch {
                batch: Batch::new(self.schema.clone(), rows),
                rejected,
                checkpoint: Checkpoint(checkpoint),
                bytes_read: None,
            }));
        }
    }
}
