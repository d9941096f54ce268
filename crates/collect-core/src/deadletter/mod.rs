//! Dead letters: every rejected record, with its reason, the stage that
//! rejected it, its source position, and the job, run and shard it belongs
//! to. Nothing is dropped silently. Dead letters can be listed and, once
//! fixed, replayed through the rest of the pipeline (`haul deadletter`).
//!
//! Two stores serve every case: a JSON Lines file ([`FileDeadLetters`]) and a
//! table reached through any source/sink pair that can read a table in full
//! and upsert by key ([`TableDeadLetters`], used with the `sql` plugins).

mod file;
pub mod replay;
mod table;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use file::FileDeadLetters;
pub use table::TableDeadLetters;

use crate::Rejected;
use crate::plugin::WriterContext;

/// One stored dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unique among all dead letters: a time-ordered id.
    pub id: String,
    /// When it was rejected (RFC 3339, UTC).
    pub at: String,
    pub job: String,
    pub run: String,
    pub shard: String,
    #[serde(flatten)]
    pub rejected: Rejected,
    /// When it was replayed, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<String>,
}

impl DeadLetter {
    /// A new dead letter for `rejected`, stamped now.
    pub fn new(context: &WriterContext, rejected: Rejected) -> Self {
        DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            at: now(),
            job: context.job.clone(),
            run: context.run_id.clone(),
            shard: context.shard_id.clone(),
            rejected,
            replayed_at: None,
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Keeps rejected records. Writes are durable once [`DeadLetters::sync`]
/// returns: the runtime syncs before every commit of a shard's writer, so a
/// checkpoint is never saved past a rejected record that could still be
/// lost, while a store that must flush to disk does so once per commit
/// rather than once per batch. Listing and marking serve replays; a dead
/// letter is never deleted, only marked replayed.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Adds dead letters; they may stay in memory or in the page cache until
    /// the next [`DeadLetters::sync`].
    async fn write(&self, context: &WriterContext, rejected: &[Rejected]) -> anyhow::Result<()>;

    /// Makes every dead letter written so far, by any shard, durable. Stores
    /// whose writes are durable when they return keep the default.
    async fn sync(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Where the dead letters go, for summaries (no credentials).
    fn describe(&self) -> String;

    /// The dead letters of `job`, oldest first; replayed ones only with `include_replayed`.
    async fn list(&self, job: &str, include_replayed: bool) -> anyhow::Result<Vec<DeadLetter>>;

    /// Marks dead letters as replayed, by id.
    async fn mark_replayed(&self, ids: &[String]) -> anyhow::Result<()>;
}
