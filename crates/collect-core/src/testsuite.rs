//! Conformance helpers every plugin's tests call (feature `testsuite`).
//!
//! For sources: resuming from any checkpoint yields exactly the rest; empty
//! input; one record; a batch-size boundary; malformed input never panics.
//! For sinks: only committed data is visible; an aborted write leaves
//! nothing; an idempotent sink repeating a commit (a crash between its commit
//! and the checkpoint's) holds no duplicates.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, ensure};

use crate::job::Mode;
use crate::plugin::WriterContext;
use crate::{Batch, Checkpoint, Delivery, PlanContext, Rejected, Sink, Source};

/// A plan context for a full run.
pub fn full_context(parallelism: usize) -> PlanContext {
    PlanContext { mode: Mode::Full, previous_state: None, range: None, parallelism, incremental: Default::default() }
}

/// Everything a source yields for one shard: records (as JSON objects), and
/// the checkpoint after each batch with the number of records before it.
#[derive(Debug, Default)]
pub struct ShardRead {
    pub records: Vec<serde_json::Value>,
    pub rejected: Vec<Rejected>,
    pub checkpoints: Vec<(usize, Checkpoint)>,
}

/// Reads a shard to its end, starting after `checkpoint`.
pub async fn read_shard(
    source: &dyn Source,
    shard: &crate::ShardSpec,
    checkpoint: Option<&Checkpoint>,
    batch_size: usize,
) -> anyhow::Result<ShardRead> {
    let mut reader = source.open(shard, checkpoint, batch_size).await?;
    let mut read = ShardRead::default();
    while let Some(batch) = reader.next_batch().await? {
        ensure!(batch.batch.len() <= batch_size, "batch of {} exceeds batch_size {batch_size}", batch.batch.len());
        read.records.extend(batch.batch.rows.iter().map(|row| batch.batch.row_to_json(row)));
        read.rejected.extend(batch.rejected);
        read.checkpoints.push((read.records.len(), batch.checkpoint));
    }
    Ok(read)
}

/// Plans with `context` and reads every shard in full; records in shard order.
pub async fn read_all(source: &dyn Source, context: &PlanContext, batch_size: usize) -> anyhow::Result<ShardRead> {
    let plan = source.plan(context).await?;
    let mut all = ShardRead::default();
    for shard in &plan.shards {
        let read = read_shard(source, shard, None, batch_size).await.with_context(|| format!("shard {}", shard.id))?;
        all.records.extend(read.records);
        all.rejected.extend(read.rejected);
    }
    Ok(all)
}

/// The central source guarantee: for every shard and every checkpoint it
/// emits, reopening there yields exactly the records after it. Returns every
/// record read, for the caller's own assertions.
pub async fn assert_resume_yields_rest(
    source: &dyn Source,
    context: &PlanContext,
    batch_size: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let plan = source.plan(context).await?;
    let mut all = Vec::new();
    for shard in &plan.shards {
        let full = read_shard(source, shard, None, batch_size).await?;
        for (consumed, checkpoint) in &full.checkpoints {
            let rest = read_shard(source, shard, Some(checkpoint), batch_size).await?;
            ensure!(
                rest.records == full.records[*consumed..],
                "shard {}: resuming at {:?} after {consumed} records yielded {} records, expected {}",
                shard.id,
                checkpoint,
                rest.records.len(),
                full.records.len() - consumed
            );
        }
        all.extend(full.records);
    }
    Ok(all)
}

/// The guarantee of [`Source::split`]: for every checkpoint of `shard` (and
/// its start), when the source splits there, reading the kept part from the
/// checkpoint and the new part from its start yields exactly the records
/// after the checkpoint, each once (in any order). Returns how many splits
/// the source made.
pub async fn assert_split_covers_rest(
    source: &dyn Source,
    shard: &crate::ShardSpec,
    batch_size: usize,
) -> anyhow::Result<usize> {
    let full = read_shard(source, shard, None, batch_size).await?;
    let starts = std::iter::once((0, None)).chain(full.checkpoints.iter().map(|(n, c)| (*n, Some(c.clone()))));
    let mut splits = 0;
    for (consumed, checkpoint) in starts {
        let Some((kept, rest)) = source.split(shard, checkpoint.as_ref()).await? else { continue };
        splits += 1;
        let kept = crate::ShardSpec { id: shard.id.clone(), descriptor: kept };
        let rest = crate::ShardSpec { id: format!("{}.split", shard.id), descriptor: rest };
        let mut records = read_shard(source, &kept, checkpoint.as_ref(), batch_size).await?.records;
        let new_records = read_shard(source, &rest, None, batch_size).await?.records;
        ensure!(!new_records.is_empty(), "shard {}: the new part of a split at {checkpoint:?} is empty", shard.id);
        records.extend(new_records);
        sort_json(&mut records);
        let mut expected = full.records[consumed..].to_vec();
        sort_json(&mut expected);
        ensure!(
            records == expected,
            "shard {}: split at {checkpoint:?} after {consumed} records, the parts yielded {} records, expected {}",
            shard.id,
            records.len(),
            expected.len()
        );
    }
    Ok(splits)
}

/// Checks a sink's commit semantics. `batches` are written in order to one
/// shard; `read_back` returns what the sink holds, as JSON objects, in any order.
pub async fn assert_sink_commits<F, Fut>(sink: &dyn Sink, batches: &[Batch], read_back: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<serde_json::Value>>>,
{
    let context = WriterContext { job: "conformance".into(), run_id: "run-1".into(), shard_id: "shard-0".into() };
    let expected = |count: usize| -> Vec<serde_json::Value> {
        let mut rows: Vec<_> =
            batches[..count].iter().flat_map(|b| b.rows.iter().map(|row| b.row_to_json(row))).collect();
        sort_json(&mut rows);
        rows
    };
    let held = || async {
        let mut rows = read_back().await?;
        sort_json(&mut rows);
        anyhow::Ok(rows)
    };

    // Each batch committed on its own: visible after its commit.
    let mut writer = sink.open(&context).await?;
    for (index, batch) in batches.iter().enumerate() {
        writer.write(batch).await?;
        writer.commit(index as u64 + 1).await?;
        ensure!(held().await? == expected(index + 1), "after commit {} the sink holds other records", index + 1);
    }

    // Written but aborted: not visible.
    if let Some(first) = batches.first() {
        writer.write(first).await?;
        writer.abort().await?;
        ensure!(held().await? == expected(batches.len()), "an aborted write became visible");
    }
    drop(writer);

    // A crash after the last commit but before its checkpoint: the shard is
    // reopened and the last batch is written and committed again with the same sequence.
    if sink.delivery() == Delivery::Idempotent && !batches.is_empty() {
        let mut writer = sink.open(&context).await?;
        writer.write(batches.last().expect("not empty")).await?;
        writer.commit(batches.len() as u64).await?;
        ensure!(
            held().await? == expected(batches.len()),
            "repeating a commit duplicated records in an idempotent sink"
        );
    }
    Ok(())
}

fn sort_json(rows: &mut [serde_json::Value]) {
    rows.sort_by_key(|row| row.to_string());
}

/// A batch of `count` records `{id, name}` starting at `first_id`, for sink tests.
pub fn numbered_batch(first_id: i64, count: usize) -> Batch {
    use crate::{DataType, Field, Schema, Value};
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("name", DataType::String)]));
    let rows = (0..count as i64)
        .map(|i| vec![Value::Int(first_id + i), Value::String(format!("name-{}", first_id + i))])
        .collect();
    Batch::new(schema, rows)
}
