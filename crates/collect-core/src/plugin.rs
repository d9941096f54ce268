//! The plugin traits. A job is one [`Source`], zero or more [`Processor`]s and
//! one [`Sink`].
//!
//! Lifecycle of a run:
//! 1. [`Source::plan`] splits the input into [`ShardSpec`]s, once per run. The
//!    plan is stored, so a resumed run reuses it unchanged.
//! 2. For each shard, possibly in parallel and in other processes,
//!    [`Source::open`] starts reading at the shard's last [`Checkpoint`] (or its
//!    beginning) and [`Sink::open`] starts a writer for the same shard.
//! 3. The runtime pulls [`SourceBatch`]es, passes them through the processors,
//!    and writes them. From time to time it calls [`ShardWriter::commit`]; once
//!    that returns, the checkpoint of the last written batch is saved.
//! 4. After the last batch the writer is committed a final time and the shard
//!    is done. When every shard is done the run succeeds and the plan's
//!    [`Plan::next_state`] becomes the job's state for the next incremental run.
//!
//! Guarantee for implementors to keep: reopening a shard at a checkpoint must
//! yield exactly the records after that checkpoint, in the same order.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::job::{IncrementalSpec, Mode, RangeBounds};
use crate::{Batch, Rejected};

/// Position inside a shard up to which data is durably in the sink. Opaque to
/// all but the source that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Checkpoint(pub serde_json::Value);

/// A unit of work: a key range, a file, a byte range. Its `id` is unique within
/// a run; `descriptor` is understood only by the source that planned it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub id: String,
    pub descriptor: serde_json::Value,
}

impl ShardSpec {
    /// The descriptor as the source that planned the shard wrote it.
    pub fn read_descriptor<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_value(self.descriptor.clone())
            .map_err(|error| anyhow::anyhow!("shard {} has an invalid descriptor: {error}", self.id))
    }
}

impl Checkpoint {
    /// The position as the source that wrote it reads it.
    pub fn read<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_value(self.0.clone()).map_err(|error| anyhow::anyhow!("an invalid checkpoint: {error}"))
    }
}

/// What the planner knows about the run it plans for.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub mode: Mode,
    /// The cursor field and lookback of `incremental` mode.
    pub incremental: IncrementalSpec,
    /// The job's state left by the last successful run (`Plan::next_state`), if any.
    pub previous_state: Option<serde_json::Value>,
    /// Explicit bounds for `range` mode.
    pub range: Option<RangeBounds>,
    /// How many shards run at once; planners aim for a few shards per slot.
    pub parallelism: usize,
}

/// The shards of a run and the job state to keep if the run succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub shards: Vec<ShardSpec>,
    /// The incremental high-water mark this run reaches (e.g. the max cursor
    /// value seen at planning, or the sizes of the files read).
    pub next_state: Option<serde_json::Value>,
}

/// Records read from a shard, with the position they reach.
#[derive(Debug)]
pub struct SourceBatch {
    pub batch: Batch,
    /// Records that could not be read, with their reason and position.
    pub rejected: Vec<Rejected>,
    /// Resuming from this checkpoint yields the records after this batch.
    pub checkpoint: Checkpoint,
    /// Input bytes this batch consumed, when the source knows (files).
    pub bytes_read: Option<u64>,
}

/// A configured source of records.
#[async_trait]
pub trait Source: Send + Sync {
    /// Tests the connection and the configuration without reading data.
    async fn check(&self) -> anyhow::Result<()>;

    /// Splits the input into shards for one run.
    async fn plan(&self, context: &PlanContext) -> anyhow::Result<Plan>;

    /// Starts reading a shard after `checkpoint`, or from its start.
    async fn open(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Box<dyn ShardReader>>;

    /// The host the source reads from, as `HOST:PORT`, when it reads from
    /// one: the endpoint rate limits (`endpoint:HOST:PORT`) hold for every
    /// job reading it.
    fn endpoint(&self) -> Option<String> {
        None
    }

    /// Splits what is left of a running shard after `checkpoint` (or all of
    /// it) in two, for another worker to take a part: returns the descriptor
    /// the shard keeps and the descriptor of a new shard taking the rest, or
    /// `None` when it cannot be split (too little left, or a kind of shard
    /// this source does not split).
    ///
    /// Guarantee to keep: reading the kept descriptor from `checkpoint` and
    /// the new descriptor from its start yields exactly the records reading
    /// the shard from `checkpoint` would have, each once.
    async fn split(
        &self,
        _shard: &ShardSpec,
        _checkpoint: Option<&Checkpoint>,
    ) -> anyhow::Result<Option<(serde_json::Value, serde_json::Value)>> {
        Ok(None)
    }

    /// An estimate of the records in a shard, for the progress ETA.
    async fn estimate(&self, _shard: &ShardSpec) -> Option<u64> {
        None
    }

    /// The job state a successful run leaves, from the plan's `next_state`
    /// and the last checkpoint of every shard (in plan order). Most sources
    /// know it at planning; a source that learns it only by reading (a
    /// Singer tap's last STATE) derives it from its checkpoints.
    fn final_state(
        &self,
        planned: Option<serde_json::Value>,
        _checkpoints: &[Option<Checkpoint>],
    ) -> Option<serde_json::Value> {
        planned
    }
}

/// Reads one shard, batch by batch.
#[async_trait]
pub trait ShardReader: Send {
    /// The next batch, or `None` once the shard is exhausted. Errors marked
    /// [`crate::transient::Transient`] make the runtime reopen the shard at its
    /// last committed checkpoint after a backoff.
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>>;
}

/// How a sink behaves when the same records are written twice (after a crash
/// between the sink's commit and the checkpoint's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Rewrites replace: upsert by key, or a part file replaced by rename.
    /// Exactly-once in effect.
    Idempotent,
    /// Rewrites append again: at-least-once.
    AppendOnly,
}

/// Identifies a shard's writer: stable across resumes of the same run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterContext {
    pub job: String,
    pub run_id: String,
    pub shard_id: String,
}

/// A configured destination of records.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Tests the connection and the configuration without writing data.
    async fn check(&self) -> anyhow::Result<()>;

    /// Whether a rewrite after a crash duplicates records.
    fn delivery(&self) -> Delivery;

    /// Where the output goes, for the run summary (no credentials).
    fn describe_output(&self) -> String;

    /// Starts writing one shard.
    async fn open(&self, context: &WriterContext) -> anyhow::Result<Box<dyn ShardWriter>>;
}

/// Writes one shard's batches. Nothing is durable before [`ShardWriter::commit`].
#[async_trait]
pub trait ShardWriter: Send {
    async fn write(&mut self, batch: &Batch) -> anyhow::Result<()>;

    /// Makes every batch written so far durable. `sequence` numbers the
    /// commits of a shard from 1; a resumed shard continues the numbering from
    /// its last saved checkpoint, so a commit that was made but whose
    /// checkpoint was lost is repeated with the same number (part files use it
    /// in their name and are replaced, not duplicated).
    async fn commit(&mut self, sequence: u64) -> anyhow::Result<()>;

    /// Discards whatever was written since the last commit.
    async fn abort(&mut self) -> anyhow::Result<()>;
}

/// What a processor made of one batch.
#[derive(Debug)]
pub struct Processed {
    /// The records that go on to the next processor or the sink.
    pub batch: Batch,
    /// Records rejected with a reason: they go to the dead letters and count
    /// against the job's error limit.
    pub rejected: Vec<Rejected>,
    /// Invalid records dropped on purpose (`on_invalid = "drop"`): not written
    /// anywhere, but counted as rejected against the error limit. Records a
    /// filter removes by design are simply absent from `batch`.
    pub dropped: u64,
}

impl Processed {
    /// Every record passed on, none rejected.
    pub fn pass(batch: Batch) -> Self {
        Processed { batch, rejected: Vec::new(), dropped: 0 }
    }
}

/// Transforms batches between source and sink: cleanse, transform, filter,
/// validate, mask.
///
/// One instance serves every shard of a run, concurrently, so state kept
/// across batches (deduplication, uniqueness checks) is per run. An error
/// fails the shard; a record-level problem is a [`Rejected`] record instead.
///
/// Lifecycle per shard: `process` for each batch, then `committed` once the
/// sink has made those batches durable, or `rewound` when they were
/// discarded (a retry reads them again from the last checkpoint). State
/// learnt from a shard's batches must stay tentative until `committed`, or a
/// retried record would look like a duplicate of itself.
#[async_trait]
pub trait Processor: Send + Sync {
    async fn process(&self, shard: &str, batch: Batch) -> anyhow::Result<Processed>;

    /// Everything processed for `shard` so far is durably in the sink.
    async fn committed(&self, _shard: &str) -> anyhow::Result<()> {
        Ok(())
    }

    /// Everything processed for `shard` since its last commit was discarded.
    async fn rewound(&self, _shard: &str) {}
}
