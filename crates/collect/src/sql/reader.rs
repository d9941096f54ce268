//! Reading one shard of the SQL source: one streaming query ordered by the
//! split key (or, for positional shards, read in order and resumed by
//! skipping the rows already read), decoded into batches with the
//! checkpoint each one reaches.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use haul_collect_core::{Batch, Checkpoint, DataType, Field, Schema, ShardReader, SourceBatch};

use super::catalog::{Relation, Shape};
use super::connection::Database;
use super::decode::Column;
use super::descriptor::{Conditions, ShardDescriptor, Span};
use super::dialect::{Dialect, Ident};
use super::statement::{BatchStream, Statement};

/// Where a resumed shard starts.
enum Resume {
    /// After the key value in column `index` of the last row read.
    AfterKey { index: usize },
    /// After `read` rows; `skip` of them are still to be skipped.
    Position { read: u64, skip: u64 },
}

pub struct SqlShardReader {
    stream: BatchStream,
    schema: Arc<Schema>,
    visible: usize,
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
        let mut columns = shape.selected.clone();
        let mut statement = Statement::new(dialect);
        let resume = match &descriptor.span {
            Span::KeyRange { key, lower, upper } => {
                let key = shape.column(key)?;
                let index = match columns.iter().position(|column| column.name == key.name) {
                    Some(index) => index,
                    None => {
                        columns.push(key.clone());
                        columns.len() - 1
                    }
                };
                let after = checkpoint.map(|c| c.0.get("after").cloned().context("checkpoint without `after`"));
                let after = after.transpose().with_context(|| context.clone())?;
                statement.push(&format!(
                    "SELECT {} FROM {}",
                    select_list(dialect, &columns)?,
                    shape.relation.sql_from(dialect)
                ));
                let mut conditions = Conditions::new(&mut statement, dialect);
                conditions.run_filters(shape, descriptor.window.as_ref(), descriptor.range.as_ref())?;
                conditions.null_check(key, false)?;
                for (op, bound) in [(">=", lower), ("<", upper), (">", &after)] {
                    if let Some(bound) = bound {
                        conditions.compare(key, op, bound)?;
                    }
                }
                statement.push(&format!(" ORDER BY {}", dialect.quote(&Ident::column(&key.name)?)));
                Resume::AfterKey { index }
            }
            Span::KeyIsNull { key } => {
                let key = shape.column(key)?;
                statement.push(&format!(
                    "SELECT {} FROM {}",
                    select_list(dialect, &columns)?,
                    shape.relation.sql_from(dialect)
                ));
                let mut conditions = Conditions::new(&mut statement, dialect);
                conditions.run_filters(shape, descriptor.window.as_ref(), descriptor.range.as_ref())?;
                conditions.null_check(key, true)?;
                let orderable = columns.iter().filter(|column| column.column_type.data_type != DataType::Json);
                let order: Vec<String> =
                    orderable.map(|c| Ok(dialect.quote(&Ident::column(&c.name)?))).collect::<anyhow::Result<_>>()?;
                if !order.is_empty() {
                    statement.push(&format!(" ORDER BY {}", order.join(", ")));
                }
                Resume::Position { read: 0, skip: position(checkpoint).with_context(|| context.clone())? }
            }
            Span::Whole => {
                let unchanged = shape.selected == shape.columns
                    && shape.columns.iter().all(|column| !column.column_type.cast_to_text)
                    && shape.filter.is_none()
                    && descriptor.window.is_none()
                    && descriptor.range.is_none();
                match (&shape.relation, unchanged) {
                    // The user's query runs as written, so its ORDER BY holds for resuming.
                    (Relation::Query(query), true) => {
                        statement.push(query);
                    }
                    _ => {
                        let from = shape.relation.sql_from(dialect);
                        statement.push(&format!("SELECT {} FROM {from}", select_list(dialect, &columns)?));
                        let mut conditions = Conditions::new(&mut statement, dialect);
                        conditions.run_filters(shape, descriptor.window.as_ref(), descriptor.range.as_ref())?;
                    }
                }
                Resume::Position { read: 0, skip: position(checkpoint).with_context(|| context.clone())? }
            }
        };
        let stream = database.stream_batches(&statement, columns.into(), batch_size);
        Ok(SqlShardReader { stream, schema, visible: shape.selected.len(), resume, context })
    }
}

fn position(checkpoint: Option<&Checkpoint>) -> anyhow::Result<u64> {
    match checkpoint {
        None => Ok(0),
        Some(checkpoint) => checkpoint.0.get("offset").and_then(|v| v.as_u64()).context("checkpoint without `offset`"),
    }
}

#[async_trait]
impl ShardReader for SqlShardReader {
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        loop {
            let Some(mut rows) = self.stream.next().await.with_context(|| format!("reading {}", self.context))? else {
                return Ok(None);
            };
            let checkpoint = match &mut self.resume {
                Resume::AfterKey { index } => {
                    let last = rows.last().map(|row| row[*index].to_json()).unwrap_or(serde_json::Value::Null);
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
            for row in &mut rows {
                row.truncate(self.visible);
            }
            return Ok(Some(SourceBatch {
                batch: Batch::new(self.schema.clone(), rows),
                rejected: Vec::new(),
                checkpoint: Checkpoint(checkpoint),
                bytes_read: None,
            }));
        }
    }
}
