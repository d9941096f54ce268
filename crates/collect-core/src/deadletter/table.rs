//! Dead letters in a table, reached through a source that reads the table in
//! full and a sink that upserts by `id` (the `sql` plugins, built by the
//! caller). Marking a dead letter replayed upserts it with `replayed_at` set.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;

use super::{DeadLetter, DeadLetters, now};
use crate::job::Mode;
use crate::plugin::WriterContext;
use crate::{Batch, DataType, Field, PlanContext, Rejected, Schema, Sink, Source, Value};

const COLUMNS: [&str; 10] = ["id", "at", "job", "run", "shard", "stage", "reason", "position", "record", "replayed_at"];

/// Dead letters kept in a table.
pub struct TableDeadLetters {
    /// Reads the whole table.
    source: Arc<dyn Source>,
    /// Upserts rows by `id`, creating the table on first use.
    sink: Arc<dyn Sink>,
    schema: Arc<Schema>,
}

impl TableDeadLetters {
    pub fn new(source: Arc<dyn Source>, sink: Arc<dyn Sink>) -> Self {
        let schema = Arc::new(Schema::new(COLUMNS.iter().map(|name| Field::new(*name, DataType::String)).collect()));
        TableDeadLetters { source, sink, schema }
    }

    async fn upsert(&self, context: &WriterContext, letters: &[DeadLetter]) -> anyhow::Result<()> {
        let rows = letters.iter().map(to_row).collect();
        let batch = Batch::new(self.schema.clone(), rows);
        let mut writer = self.sink.open(context).await?;
        writer.write(&batch).await?;
        writer.commit(1).await
    }

    async fn read_all(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let context = PlanContext {
            mode: Mode::Full,
            incremental: Default::default(),
            previous_state: None,
            range: None,
            parallelism: 1,
        };
        let plan = self.source.plan(&context).await?;
        let mut letters = Vec::new();
        for shard in &plan.shards {
            let mut reader = self.source.open(shard, None, 1_000).await?;
            while let Some(read) = reader.next_batch().await? {
                for row in &read.batch.rows {
                    letters.push(from_row(&read.batch.schema, row)?);
                }
            }
        }
        letters.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(letters)
    }
}

fn to_row(letter: &DeadLetter) -> Vec<Value> {
    let text = |s: &str| Value::String(s.to_string());
    vec![
        text(&letter.id),
        text(&letter.at),
        text(&letter.job),
        text(&letter.run),
        text(&letter.shard),
        text(&letter.rejected.stage),
        text(&letter.rejected.reason),
        text(&letter.rejected.position),
        Value::String(letter.rejected.record.to_string()),
        letter.replayed_at.as_deref().map(text).unwrap_or(Value::Null),
    ]
}

fn from_row(schema: &Schema, row: &[Value]) -> anyhow::Result<DeadLetter> {
    let field = |name: &str| -> Option<String> {
        let value = schema.index_of(name).and_then(|index| row.get(index))?;
        value.to_text()
    };
    let required = |name: &str| field(name).with_context(|| format!("a dead letter without `{name}`"));
    let record_text = required("record")?;
    let record = serde_json::from_str(&record_text).unwrap_or(serde_json::Value::String(record_text));
    Ok(DeadLetter {
        id: required("id")?,
        at: required("at")?,
        job: required("job")?,
        run: required("run")?,
        shard: required("shard")?,
        rejected: Rejected {
            reason: required("reason")?,
            position: required("position")?,
            record,
            stage: required("stage")?,
        },
        replayed_at: field("replayed_at"),
    })
}

#[async_trait]
impl DeadLetters for TableDeadLetters {
    async fn write(&self, context: &WriterContext, rejected: &[Rejected]) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        let letters: Vec<DeadLetter> = rejected.iter().map(|r| DeadLetter::new(context, r.clone())).collect();
        self.upsert(context, &letters).await.with_context(|| format!("writing dead letters to {}", self.describe()))
    }

    fn describe(&self) -> String {
        self.sink.describe_output()
    }

    async fn list(&self, job: &str, include_replayed: bool) -> anyhow::Result<Vec<DeadLetter>> {
        let letters =
            self.read_all().await.with_context(|| format!("reading dead letters from {}", self.describe()))?;
        Ok(letters.into_iter().filter(|l| l.job == job && (include_replayed || l.replayed_at.is_none())).collect())
    }

    async fn mark_replayed(&self, ids: &[String]) -> anyhow::Result<()> {
        let stamp = now();
        let mut marked: Vec<DeadLetter> = self.read_all().await?.into_iter().filter(|l| ids.contains(&l.id)).collect();
        for letter in &mut marked {
            letter.replayed_at = Some(stamp.clone());
        }
        let context = WriterContext { job: "deadletter".into(), run_id: "replay".into(), shard_id: "mark".into() };
        self.upsert(&context, &marked).await
    }
}
