//! The `stdout` sink: JSON Lines on standard output. Lines are held in
//! memory and printed on commit, or as soon as they exceed
//! [`PENDING_LIMIT`] bytes so that memory stays bounded: an aborted write
//! prints nothing only when it stayed under that limit. The sink is
//! append-only anyway: a repeated commit after a crash prints its records
//! again.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use haul_collect_core::plugin::WriterContext;
use haul_collect_core::registry::{Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Delivery, ShardWriter, Sink};
use serde::Deserialize;

use crate::file::JsonRows;

/// The bytes of JSON lines held before they are printed without waiting for the commit.
const PENDING_LIMIT: usize = 1024 * 1024;

/// The `stdout` sink takes no options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

/// Builds `stdout` sinks.
pub struct StdoutSinkPlugin;

impl Plugin for StdoutSinkPlugin {
    type Config = StdoutSinkConfig;
    type Output = dyn Sink;

    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: "stdout",
            role: Role::Sink,
            description: "prints records as JSON Lines on standard output when they are committed",
            options: Vec::new(),
        }
    }

    fn build(&self, _config: StdoutSinkConfig) -> anyhow::Result<Arc<dyn Sink>> {
        Ok(Arc::new(StdoutSink))
    }
}

/// Prints committed records.
pub struct StdoutSink;

#[async_trait]
impl Sink for StdoutSink {
    async fn check(&self) -> anyhow::Result<()> {
        Ok(())
    }

    fn delivery(&self) -> Delivery {
        Delivery::AppendOnly
    }

    fn describe_output(&self) -> String {
        "standard output".to_string()
    }

    async fn open(&self, _context: &WriterContext) -> anyhow::Result<Box<dyn ShardWriter>> {
        Ok(Box::new(StdoutWriter { pending: Vec::new(), limit: PENDING_LIMIT }))
    }
}

/// Holds the JSON lines written since the last commit, up to [`PENDING_LIMIT`].
struct StdoutWriter {
    pending: Vec<u8>,
    /// [`PENDING_LIMIT`], or less in tests.
    limit: usize,
}

impl StdoutWriter {
    /// Prints the pending lines.
    async fn print(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.pending);
        tokio::task::spawn_blocking(move || {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&lines)?;
            stdout.flush()
        })
        .await
        .context("the stdout writer stopped")?
        .context("cannot write to standard output")
    }
}

#[async_trait]
impl ShardWriter for StdoutWriter {
    async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let rows = JsonRows::new(&batch.schema);
        for row in &batch.rows {
            rows.write_row(&mut self.pending, row)?;
            if self.pending.len() > self.limit {
                self.print().await?;
            }
        }
        Ok(())
    }

    async fn commit(&mut self, _sequence: u64) -> anyhow::Result<()> {
        self.print().await
    }

    async fn abort(&mut self) -> anyhow::Result<()> {
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use haul_collect_core::testsuite::numbered_batch;

    use super::*;

    #[tokio::test]
    async fn only_commits_print_and_abort_discards() {
        let mut writer = StdoutWriter { pending: Vec::new(), limit: PENDING_LIMIT };
        writer.write(&numbered_batch(1, 2)).await.unwrap();
        assert_eq!(writer.pending, b"{\"id\":1,\"name\":\"name-1\"}\n{\"id\":2,\"name\":\"name-2\"}\n");
        writer.abort().await.unwrap();
        assert!(writer.pending.is_empty());
        writer.write(&numbered_batch(3, 1)).await.unwrap();
        writer.commit(1).await.unwrap();
        assert!(writer.pending.is_empty());
        assert_eq!(StdoutSink.delivery(), Delivery::AppendOnly);
    }

    #[tokio::test]
    async fn pending_lines_stay_bounded() {
        let mut writer = StdoutWriter { pending: Vec::new(), limit: 60 };
        writer.write(&numbered_batch(1, 3)).await.unwrap();
        // Two lines of about 25 bytes each stay; the third crossed the limit and all were printed.
        assert!(writer.pending.is_empty(), "{:?}", String::from_utf8_lossy(&writer.pending));
        writer.abort().await.unwrap();
    }
}
