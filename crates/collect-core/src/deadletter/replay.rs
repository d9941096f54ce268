//! Replaying dead letters: fixed records go through the rest of the pipeline
//! — from the processor that rejected them (or the first, for records the
//! source rejected) — into the sink, in one commit. Records rejected again
//! become new dead letters; every replayed dead letter is marked replayed
//! once the sink has committed.

use std::sync::Arc;

use anyhow::Context;

use super::{DeadLetter, DeadLetters};
use crate::plugin::WriterContext;
use crate::runtime::Pipeline;
use crate::{Batch, DataType, Field, Rejected, Schema, Value};

/// What a replay did.
#[derive(Debug, Default, PartialEq)]
pub struct ReplayReport {
    /// Dead letters sent through the pipeline (and marked replayed).
    pub replayed: usize,
    pub written: u64,
    /// Records rejected again, now new dead letters.
    pub rejected_again: u64,
    /// Dead letters left alone, with why: e.g. a raw line the source could
    /// not read, which must be edited into a JSON object first.
    pub skipped: Vec<(String, String)>,
}

/// Replays `letters` through `pipeline`. `processor_kinds` are the `type`s of
/// the pipeline's processors, in order, to find where each letter re-enters.
pub async fn replay(
    pipeline: &Pipeline,
    processor_kinds: &[String],
    letters: Vec<DeadLetter>,
    dead_letters: &dyn DeadLetters,
    context: &WriterContext,
) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut groups: Vec<(usize, Vec<DeadLetter>)> = Vec::new();
    for letter in letters {
        if !letter.rejected.record.is_object() {
            report.skipped.push((letter.id, "the record is raw text: edit it into a JSON object to replay it".into()));
            continue;
        }
        let entry = processor_kinds.iter().position(|kind| *kind == letter.rejected.stage).unwrap_or(0);
        match groups.iter_mut().find(|(start, _)| *start == entry) {
            Some((_, group)) => group.push(letter),
            None => groups.push((entry, vec![letter])),
        }
    }

    let mut writer = pipeline.sink.open(context).await.context("opening the sink")?;
    let mut replayed_ids = Vec::new();
    for (entry, group) in groups {
        let mut batch = to_batch(&group);
        let mut rejected: Vec<Rejected> = Vec::new();
        for processor in &pipeline.processors[entry.min(pipeline.processors.len())..] {
            let processed = processor.process(&context.shard_id, batch).await?;
            batch = processed.batch;
            report.rejected_again += processed.dropped;
            rejected.extend(processed.rejected);
        }
        report.rejected_again += rejected.len() as u64;
        dead_letters.write(context, &rejected).await?;
        writer.write(&batch).await.context("writing to the sink")?;
        report.written += batch.len() as u64;
        report.replayed += group.len();
        replayed_ids.extend(group.into_iter().map(|letter| letter.id));
    }
    dead_letters.sync().await.context("syncing dead letters")?;
    writer.commit(1).await.context("committing to the sink")?;
    for processor in &pipeline.processors {
        processor.committed(&context.shard_id).await?;
    }
    dead_letters.mark_replayed(&replayed_ids).await.context("marking dead letters replayed")?;
    Ok(report)
}

/// The letters' records as one batch: fields in first-seen order, nested values kept.
fn to_batch(letters: &[DeadLetter]) -> Batch {
    let mut names: Vec<String> = Vec::new();
    for letter in letters {
        if let Some(object) = letter.rejected.record.as_object() {
            for key in object.keys() {
                if !names.contains(key) {
                    names.push(key.clone());
                }
            }
        }
    }
    let rows: Vec<Vec<Value>> = letters
        .iter()
        .map(|letter| {
            names.iter().map(|name| Value::from_json(letter.rejected.record[name.as_str()].clone())).collect()
        })
        .collect();
    let fields = names
        .iter()
        .enumerate()
        .map(|(index, name)| Field::new(name.clone(), column_type(rows.iter().map(|row| &row[index]))))
        .collect();
    Batch::new(Arc::new(Schema::new(fields)), rows)
}

/// The type shared by a column's non-null values; JSON when they differ.
fn column_type<'a>(values: impl Iterator<Item = &'a Value>) -> DataType {
    values.fold(None, DataType::merged).unwrap_or(DataType::String)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_unions_fields_and_keeps_nesting() {
        let letter = |record: serde_json::Value| DeadLetter {
            id: "1".into(),
            at: "t".into(),
            job: "j".into(),
            run: "r".into(),
            shard: "s".into(),
            rejected: Rejected { reason: "x".into(), position: "p".into(), record, stage: "validate".into() },
            replayed_at: None,
        };
        let batch = to_batch(&[
            letter(serde_json::json!({"id": 1, "tags": ["a"]})),
            letter(serde_json::json!({"id": "2", "email": "x@y"})),
        ]);
        assert_eq!(batch.schema.names().collect::<Vec<_>>(), ["id", "tags", "email"]);
        assert_eq!(batch.schema.fields[0].data_type, DataType::Json);
        assert_eq!(batch.rows[1][1], Value::Null);
        assert_eq!(batch.rows[0][1], Value::Json(serde_json::json!(["a"])));
    }
}
