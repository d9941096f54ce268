//! The `singer` source: runs a Singer tap and turns its `RECORD` messages
//! into batches.
//!
//! A tap cannot be split, so a run has one shard, `singer`. Each batch holds
//! the records of one stream, with the stream's name in a `_stream` field in
//! front; a batch ends at `batch_size` records, when the stream or its schema
//! changes, and at every `STATE` message, so that checkpoints fall on the
//! tap's own bookmarks whenever they can. The checkpoint is
//! `{"state": <last STATE>, "records_since_state": n, "complete": bool}`; a
//! resumed shard runs the tap again with `--state <last STATE>` and skips
//! nothing, so records read after the last `STATE` before a crash are read
//! again (at-least-once). An incremental run passes the job state to the tap
//! the same way, but the last `STATE` of a run does not yet become the job
//! state: the plan's `next_state` is fixed before the tap runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use haul_collect_core::job::Mode;
use haul_collect_core::registry::{OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{
    Batch, Checkpoint, Plan, PlanContext, Rejected, Schema, ShardReader, ShardSpec, Source, SourceBatch, Value,
};
use haul_common::duration::HumanDuration;
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::launch::Launch;
use super::process::SingerProcess;
use super::protocol::{Message, StreamLayout};

/// The `singer` source's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingerSourceConfig {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub config: Map<String, serde_json::Value>,
    #[serde(default)]
    pub catalog: Option<Map<String, serde_json::Value>>,
    #[serde(default = "default_catalog_flag")]
    pub catalog_flag: CatalogFlag,
    #[serde(default)]
    pub streams: Option<Vec<String>>,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The flag that passes the catalog: taps of different ages use either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CatalogFlag {
    #[serde(rename = "--catalog")]
    Catalog,
    #[serde(rename = "--properties")]
    Properties,
}

fn default_catalog_flag() -> CatalogFlag {
    CatalogFlag::Catalog
}

pub(crate) fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// Builds `singer` sources.
pub struct SingerSourcePlugin;

impl Plugin for SingerSourcePlugin {
    type Config = SingerSourceConfig;
    type Output = dyn Source;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "singer",
            role: Role::Source,
            description: "runs a Singer tap and reads its records; one shard, resumed from the tap's last STATE",
            options: vec![
                option("command", "string", None, "the tap's executable, a path or a name on PATH, e.g. `tap-jsonl`"),
                option("args", "array", Some("[]"), "extra arguments before `--config`"),
                option(
                    "config",
                    "table",
                    Some("{}"),
                    "the tap's config, passed as a JSON file; strings may use `${env:NAME}`",
                ),
                option("catalog", "table", None, "the tap's catalog, passed as a JSON file with `catalog_flag`"),
                option("catalog_flag", "string", Some("--catalog"), "`--catalog` or `--properties` (older taps)"),
                option("streams", "array", None, "read only these streams; records of other streams are skipped"),
                option(
                    "idle_timeout",
                    "duration",
                    Some("5m"),
                    "kill the tap and fail when it writes nothing for this long",
                ),
                option(
                    "env",
                    "table",
                    Some("{}"),
                    "extra environment variables for the tap; values may use `${env:NAME}`",
                ),
            ],
        }
    }

    fn build(&self, config: SingerSourceConfig) -> anyhow::Result<Arc<dyn Source>> {
        if config.idle_timeout.0.is_zero() {
            bail!("`idle_timeout` must be more than zero");
        }
        let launch = Launch { command: config.command, args: config.args, config: config.config, env: config.env };
        let catalog = config.catalog.map(|catalog| (config.catalog_flag, serde_json::Value::Object(catalog)));
        let streams = config.streams.map(|streams| streams.into_iter().collect());
        Ok(Arc::new(SingerSource { launch, catalog, streams: Arc::new(streams), idle_timeout: config.idle_timeout.0 }))
    }
}

/// A configured `singer` source.
pub struct SingerSource {
    launch: Launch,
    catalog: Option<(CatalogFlag, serde_json::Value)>,
    streams: Arc<Option<HashSet<String>>>,
    idle_timeout: Duration,
}

/// What the single shard carries: the state to start the tap from.
#[derive(Debug, Serialize, Deserialize)]
struct ShardDescriptor {
    state: Option<serde_json::Value>,
}

/// The position in a tap's output up to which records are in the sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SingerCheckpoint {
    /// The last `STATE` the tap emitted, or the state it was started with.
    state: Option<serde_json::Value>,
    /// Records read after that state; informative only: they are read again on resume.
    records_since_state: u64,
    /// The tap exited successfully: nothing is left to read.
    complete: bool,
}

#[async_trait]
impl Source for SingerSource {
    async fn check(&self) -> anyhow::Result<()> {
        self.launch.check()
    }

    async fn plan(&self, context: &PlanContext) -> anyhow::Result<Plan> {
        let state = match context.mode {
            Mode::Full => None,
            Mode::Incremental => context.previous_state.clone(),
            Mode::Range => bail!("the singer source does not support range mode; use full or incremental"),
        };
        let descriptor = serde_json::to_value(ShardDescriptor { state })?;
        Ok(Plan { shards: vec![ShardSpec { id: "singer".to_string(), descriptor }], next_state: None })
    }

    /// The last STATE the tap emitted becomes the job state, so the next
    /// incremental run starts the tap from it.
    fn final_state(
        &self,
        planned: Option<serde_json::Value>,
        checkpoints: &[Option<Checkpoint>],
    ) -> Option<serde_json::Value> {
        let last_state = checkpoints
            .iter()
            .flatten()
            .find_map(|checkpoint| checkpoint.read::<SingerCheckpoint>().ok().and_then(|c| c.state));
        last_state.or(planned)
    }

    async fn open(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Box<dyn ShardReader>> {
        let descriptor: ShardDescriptor = shard.read_descriptor()?;
        let checkpoint = checkpoint
            .map(Checkpoint::read::<SingerCheckpoint>)
            .transpose()
            .with_context(|| format!("shard {}", shard.id))?;
        let (state, complete) = match checkpoint {
            Some(checkpoint) => (checkpoint.state, checkpoint.complete),
            None => (descriptor.state, false),
        };
        let process = if complete {
            None
        } else {
            let mut files: Vec<(&str, &serde_json::Value)> = Vec::new();
            if let Some((flag, catalog)) = &self.catalog {
                files.push((if *flag == CatalogFlag::Catalog { "--catalog" } else { "--properties" }, catalog));
            }
            if let Some(state) = &state {
                files.push(("--state", state));
            }
            Some(self.launch.spawn(&files, false)?)
        };
        Ok(Box::new(TapReader {
            process,
            idle_timeout: self.idle_timeout,
            batch_size: batch_size.max(1),
            streams: self.streams.clone(),
            layouts: HashMap::new(),
            pending: None,
            rejected: Vec::new(),
            state,
            records_since_state: 0,
            line_number: 0,
            line: Vec::new(),
            last_schema: Arc::new(Schema::default()),
        }))
    }
}

/// Records of one stream waiting to become a batch.
struct PendingBatch {
    stream: String,
    schema: Arc<Schema>,
    rows: Vec<Vec<Value>>,
}

/// Reads a tap's output; `process` is `None` once the tap has exited.
struct TapReader {
    process: Option<SingerProcess>,
    idle_timeout: Duration,
    batch_size: usize,
    streams: Arc<Option<HashSet<String>>>,
    layouts: HashMap<String, StreamLayout>,
    pending: Option<PendingBatch>,
    rejected: Vec<Rejected>,
    state: Option<serde_json::Value>,
    records_since_state: u64,
    line_number: u64,
    line: Vec<u8>,
    /// The schema of the latest stream, for batches that carry only rejected
    /// records or a checkpoint (processors may look for their fields).
    last_schema: Arc<Schema>,
}

#[async_trait]
impl ShardReader for TapReader {
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        loop {
            let Some(process) = self.process.as_mut() else { return Ok(None) };
            if !process.next_line(&mut self.line, self.idle_timeout).await? {
                let process = self.process.take().expect("checked above");
                process.finish(self.idle_timeout).await?;
                return Ok(Some(self.cut(true)));
            }
            self.line_number += 1;
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Some(batch) = self.read_message() {
                return Ok(Some(batch));
            }
        }
    }
}

impl TapReader {
    /// Handles the line just read; returns a batch when it ends one.
    fn read_message(&mut self) -> Option<SourceBatch> {
        let message = match Message::parse(&self.line) {
            Ok(message) => message,
            Err(reason) => {
                let record = serde_json::from_slice(&self.line)
                    .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&self.line).into_owned()));
                return self.reject(reason, record);
            }
        };
        match message {
            Message::Schema { stream, .. } if !self.selected(&stream) => None,
            Message::Schema { stream, schema } => {
                let ready = self.pending.as_ref().is_some_and(|pending| pending.stream == stream);
                let ready = if ready { Some(self.cut(false)) } else { None };
                match StreamLayout::new(schema) {
                    Ok(layout) => {
                        self.last_schema = layout.schema.clone();
                        self.layouts.insert(stream, layout);
                        ready
                    }
                    Err(reason) => {
                        self.layouts.remove(&stream);
                        let record = serde_json::from_slice(&self.line).unwrap_or_default();
                        self.reject(format!("schema of stream `{stream}`: {reason}"), record).or(ready)
                    }
                }
            }
            Message::Record { stream, .. } if !self.selected(&stream) => None,
            Message::Record { stream, record } => self.read_record(stream, record),
            Message::State { value } => {
                self.state = Some(value);
                self.records_since_state = 0;
                Some(self.cut(false))
            }
            Message::ActivateVersion {} => None,
        }
    }

    fn read_record(&mut self, stream: String, record: Map<String, serde_json::Value>) -> Option<SourceBatch> {
        let Some(layout) = self.layouts.get(&stream) else {
            let reason = format!("RECORD of stream `{stream}` before its SCHEMA");
            return self.reject(reason, serde_json::Value::Object(record));
        };
        let row = match layout.row(&stream, &record) {
            Ok(row) => row,
            Err(reason) => return self.reject(reason, serde_json::Value::Object(record)),
        };
        let schema = layout.schema.clone();
        let ready = match &self.pending {
            Some(pending) if pending.stream == stream && pending.rows.len() < self.batch_size => None,
            Some(_) => Some(self.cut(false)),
            None => None,
        };
        let rows = &mut self.pending.get_or_insert_with(|| PendingBatch { stream, schema, rows: Vec::new() }).rows;
        rows.push(row);
        self.records_since_state += 1;
        ready
    }

    fn selected(&self, stream: &str) -> bool {
        self.streams.as_ref().as_ref().is_none_or(|streams| streams.contains(stream))
    }

    /// Keeps a rejected line; ends a batch when too many are waiting.
    fn reject(&mut self, reason: String, record: serde_json::Value) -> Option<SourceBatch> {
        let position = format!("stdout line {}", self.line_number);
        self.rejected.push(Rejected { reason, position, record, stage: "source".to_string() });
        self.records_since_state += 1;
        (self.rejected.len() >= self.batch_size).then(|| self.cut(false))
    }

    /// The pending records and rejected lines as a batch, at the current position.
    fn cut(&mut self, complete: bool) -> SourceBatch {
        let batch = match self.pending.take() {
            Some(pending) => {
                self.last_schema = pending.schema.clone();
                Batch::new(pending.schema, pending.rows)
            }
            None => Batch::empty(self.last_schema.clone()),
        };
        let checkpoint =
            SingerCheckpoint { state: self.state.clone(), records_since_state: self.records_since_state, complete };
        SourceBatch {
            batch,
            rejected: std::mem::take(&mut self.rejected),
            checkpoint: Checkpoint(serde_json::to_value(checkpoint).expect("a checkpoint serialises")),
            bytes_read: None,
        }
    }
}
