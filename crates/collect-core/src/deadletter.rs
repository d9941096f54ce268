//! Dead letters: every rejected record, with its reason, source position, and
//! the job, run and shard it belongs to. Nothing is dropped silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use serde::Serialize;

use crate::Rejected;
use crate::plugin::WriterContext;

/// Receives rejected records. Writes must be durable when `write` returns:
/// the shard's checkpoint may be saved right after.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    async fn write(&self, context: &WriterContext, rejected: &[Rejected]) -> anyhow::Result<()>;

    /// Where the dead letters go, for the run summary.
    fn describe(&self) -> String;
}

/// One line of a dead-letter file.
#[derive(Debug, Serialize)]
struct DeadLetterLine<'a> {
    at: String,
    job: &'a str,
    run: &'a str,
    shard: &'a str,
    #[serde(flatten)]
    rejected: &'a Rejected,
}

/// Dead letters appended to a JSON Lines file.
pub struct FileDeadLetters {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl FileDeadLetters {
    /// The file is created on the first rejected record.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileDeadLetters { path: path.into(), file: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl DeadLetters for FileDeadLetters {
    async fn write(&self, context: &WriterContext, rejected: &[Rejected]) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut text = Vec::new();
        for record in rejected {
            let line = DeadLetterLine {
                at: at.clone(),
                job: &context.job,
                run: &context.run_id,
                shard: &context.shard_id,
                rejected: record,
            };
            serde_json::to_writer(&mut text, &line)?;
            text.push(b'\n');
        }
        let mut guard = self.file.lock().map_err(|_| anyhow::anyhow!("dead-letter file lock poisoned"))?;
        if guard.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating dead-letter folder {}", parent.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("opening dead-letter file {}", self.path.display()))?;
            *guard = Some(file);
        }
        let file = guard.as_mut().expect("opened above");
        file.write_all(&text).with_context(|| format!("writing dead letters to {}", self.path.display()))?;
        file.sync_data().with_context(|| format!("syncing dead letters to {}", self.path.display()))?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_lines_with_context() {
        let dir = tempfile::tempdir().unwrap();
        let letters = FileDeadLetters::new(dir.path().join("dl/dead.jsonl"));
        let context = WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
        let rejected = Rejected {
            reason: "bad".into(),
            position: "in.csv:3".into(),
            record: serde_json::json!("a,b"),
            stage: "source".into(),
        };
        letters.write(&context, std::slice::from_ref(&rejected)).await.unwrap();
        letters.write(&context, &[rejected]).await.unwrap();
        let text = std::fs::read_to_string(letters.path()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"], "bad");
        assert_eq!(lines[0]["position"], "in.csv:3");
        assert_eq!(lines[0]["shard"], "s");
    }
}
