//! The `singer` sink: feeds batches to a Singer target as `SCHEMA` and
//! `RECORD` messages.
//!
//! Each shard writer starts its target at its first write and sends the
//! stream's `SCHEMA` before the first record of each batch schema. A commit
//! sends `STATE {"haul": {"shard": …, "sequence": n}}` and waits for the
//! target to echo that state on its standard output: Singer targets emit a
//! state once everything before it is flushed. By default the commit also
//! closes the target's input, so the target flushes, echoes and exits (every
//! target does this), and the next write starts a new target; with
//! `keep_running` the target stays up and the echo alone acknowledges the
//! commit, for targets that emit each state as soon as it is flushed. An
//! abort kills the target. Targets usually write records as they read them,
//! so the sink is append-only unless `idempotent` says the target upserts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use haul_collect_core::plugin::WriterContext;
use haul_collect_core::registry::{OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Delivery, Schema, ShardWriter, Sink};
use haul_common::duration::HumanDuration;
use serde::Deserialize;
use serde_json::{Map, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::launch::Launch;
use super::process::SingerProcess;
use super::protocol::{record_prefix, schema_message};
use super::source::default_idle_timeout;
use crate::file::JsonRows;

/// The `singer` sink's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingerSinkConfig {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub config: Map<String, serde_json::Value>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub key_properties: Vec<String>,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub keep_running: bool,
    #[serde(default)]
    pub idempotent: bool,
}

/// Builds `singer` sinks.
pub struct SingerSinkPlugin;

impl Plugin for SingerSinkPlugin {
    type Config = SingerSinkConfig;
    type Output = dyn Sink;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "singer",
            role: Role::Sink,
            description: "feeds records to a Singer target; a commit is the target's echo of a STATE message",
            options: vec![
                option(
                    "command",
                    "string",
                    None,
                    "the target's executable, a path or a name on PATH, e.g. `target-jsonl`",
                ),
                option("args", "array", Some("[]"), "extra arguments before `--config`"),
                option(
                    "config",
                    "table",
                    Some("{}"),
                    "the target's config, passed as a JSON file; strings may use `${env:NAME}`",
                ),
                option("stream", "string", Some("the job name"), "the stream name in SCHEMA and RECORD messages"),
                option("key_properties", "array", Some("[]"), "the key fields announced in the SCHEMA message"),
                option(
                    "idle_timeout",
                    "duration",
                    Some("5m"),
                    "fail when the target takes no input or echoes no state for this long",
                ),
                option(
                    "env",
                    "table",
                    Some("{}"),
                    "extra environment variables for the target; values may use `${env:NAME}`",
                ),
                option(
                    "keep_running",
                    "boolean",
                    Some("false"),
                    "keep one target per shard and take the echo of each STATE as the commit, instead of restarting the target after each commit",
                ),
                option(
                    "idempotent",
                    "boolean",
                    Some("false"),
                    "the target upserts by key, so rewriting after a crash duplicates nothing",
                ),
            ],
        }
    }

    fn build(&self, config: SingerSinkConfig) -> anyhow::Result<Arc<dyn Sink>> {
        if config.idle_timeout.0.is_zero() {
            bail!("`idle_timeout` must be more than zero");
        }
        let launch = Launch { command: config.command, args: config.args, config: config.config, env: config.env };
        Ok(Arc::new(SingerSink {
            launch: Arc::new(launch),
            stream: config.stream,
            key_properties: Arc::new(config.key_properties),
            idle_timeout: config.idle_timeout.0,
            keep_running: config.keep_running,
            idempotent: config.idempotent,
        }))
    }
}

/// A configured `singer` sink.
pub struct SingerSink {
    launch: Arc<Launch>,
    stream: Option<String>,
    key_properties: Arc<Vec<String>>,
    idle_timeout: Duration,
    keep_running: bool,
    idempotent: bool,
}

#[async_trait]
impl Sink for SingerSink {
    async fn check(&self) -> anyhow::Result<()> {
        self.launch.check()
    }

    fn delivery(&self) -> Delivery {
        if self.idempotent { Delivery::Idempotent } else { Delivery::AppendOnly }
    }

    fn describe_output(&self) -> String {
        format!("singer target `{}`", self.launch.command)
    }

    async fn open(&self, context: &WriterContext) -> anyhow::Result<Box<dyn ShardWriter>> {
        let stream = self.stream.clone().unwrap_or_else(|| context.job.clone());
        Ok(Box::new(TargetWriter {
            launch: self.launch.clone(),
            record_prefix: record_prefix(&stream),
            stream,
            key_properties: self.key_properties.clone(),
            shard: context.shard_id.clone(),
            idle_timeout: self.idle_timeout,
            keep_running: self.keep_running,
            target: None,
            buffer: Vec::new(),
        }))
    }
}

/// A running target and what it has been told.
struct Target {
    process: SingerProcess,
    /// The last line of standard output that was JSON: targets echo states there.
    echoed: watch::Receiver<Option<serde_json::Value>>,
    /// The batch schema the last SCHEMA message described.
    announced: Option<Arc<Schema>>,
}

/// Writes one shard to its own target.
struct TargetWriter {
    launch: Arc<Launch>,
    stream: String,
    record_prefix: Vec<u8>,
    key_properties: Arc<Vec<String>>,
    shard: String,
    idle_timeout: Duration,
    keep_running: bool,
    target: Option<Target>,
    buffer: Vec<u8>,
}

#[async_trait]
impl ShardWriter for TargetWriter {
    async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.buffer.clear();
        let target = match &mut self.target {
            Some(target) => target,
            None => self.target.insert(start(&self.launch)?),
        };
        let announced = target.announced.as_ref().is_some_and(|schema| **schema == *batch.schema);
        if !announced {
            let message = schema_message(&self.stream, &batch.schema, &self.key_properties);
            serde_json::to_writer(&mut self.buffer, &message)?;
            self.buffer.push(b'\n');
            target.announced = Some(batch.schema.clone());
        }
        let rows = JsonRows::new(&batch.schema);
        for row in &batch.rows {
            self.buffer.extend_from_slice(&self.record_prefix);
            rows.write_object(&mut self.buffer, row)?;
            self.buffer.extend_from_slice(b"}\n");
        }
        self.send().await
    }

    async fn commit(&mut self, sequence: u64) -> anyhow::Result<()> {
        if self.target.is_none() {
            return Ok(());
        }
        let state = json!({"haul": {"shard": self.shard, "sequence": sequence}});
        self.buffer.clear();
        serde_json::to_writer(&mut self.buffer, &json!({"type": "STATE", "value": state}))?;
        self.buffer.push(b'\n');
        self.send().await?;
        let mut target = self.target.take().expect("checked above");
        if !self.keep_running {
            target.process.stdin = None;
        }
        let echo =
            tokio::time::timeout(self.idle_timeout, target.echoed.wait_for(|echo| echo.as_ref() == Some(&state)));
        // The echoed value is not kept: holding the watch's borrow across an await would not be `Send`.
        match echo.await.map(|acknowledged| acknowledged.map(drop)) {
            Ok(Ok(_)) if self.keep_running => {
                self.target = Some(target);
                Ok(())
            }
            Ok(Ok(_)) => target.process.finish(self.idle_timeout).await,
            Ok(Err(_)) => {
                let what = format!("the target's output ended before it acknowledged commit {sequence}");
                Err(target.process.failure(&what).await)
            }
            Err(_) => {
                let what = format!("the target did not acknowledge commit {sequence} within {:?}", self.idle_timeout);
                Err(target.process.failure(&what).await)
            }
        }
    }

    async fn abort(&mut self) -> anyhow::Result<()> {
        if let Some(target) = self.target.take() {
            target.process.kill().await;
        }
        Ok(())
    }
}

impl TargetWriter {
    /// Sends the buffer to the target's input; a target that stopped reading is an error with its standard error.
    async fn send(&mut self) -> anyhow::Result<()> {
        let target = self.target.as_mut().context("no target is running")?;
        let stdin = target.process.stdin.as_mut().context("the target's input is closed")?;
        let written = tokio::time::timeout(self.idle_timeout, async {
            stdin.write_all(&self.buffer).await?;
            stdin.flush().await
        })
        .await;
        let what = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => format!("cannot write to the target ({error})"),
            Err(_) => format!("the target took no input for {:?}", self.idle_timeout),
        };
        let target = self.target.take().expect("checked above");
        Err(target.process.failure(&what).await)
    }
}

/// Starts a target and a task that watches its standard output for echoed states.
fn start(launch: &Launch) -> anyhow::Result<Target> {
    let mut process = launch.spawn(&[], true)?;
    let mut stdout = process.take_stdout().context("the target's output is not piped")?;
    let (sender, echoed) = watch::channel(None);
    tokio::spawn(async move {
        let mut line = Vec::new();
        while stdout.read_until(b'\n', &mut line).await.is_ok_and(|read| read > 0) {
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&line) {
                sender.send_replace(Some(json));
            }
            line.clear();
        }
    });
    Ok(Target { process, echoed, announced: None })
}
