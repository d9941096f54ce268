//! Dead letters in a JSON Lines file: appended on every write and synced to
//! disk on [`DeadLetters::sync`] when something was appended since the last
//! sync (once per commit of a shard, not once per batch: a sync takes
//! milliseconds); marking replayed ones rewrites the file under a temporary
//! name and renames it into place, so a crash leaves either the old file or
//! the new one.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{DeadLetter, DeadLetters, now};
use crate::Rejected;
use crate::plugin::WriterContext;

/// Dead letters appended to a JSON Lines file.
pub struct FileDeadLetters {
    path: PathBuf,
    /// Serialises writers, syncs and rewrites; the file is opened per write.
    /// Holds whether appends were made since the last sync.
    unsynced: Mutex<bool>,
}

impl FileDeadLetters {
    /// The file is created on the first rejected record.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileDeadLetters { path: path.into(), unsynced: Mutex::new(false) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_all(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error).with_context(|| format!("reading {}", self.path.display())),
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a dead letter", self.path.display(), index + 1))
            })
            .collect()
    }

    fn append(&self, letters: &[DeadLetter]) -> anyhow::Result<()> {
        let mut text = Vec::new();
        for letter in letters {
            serde_json::to_writer(&mut text, letter)?;
            text.push(b'\n');
        }
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening dead-letter file {}", self.path.display()))?;
        file.write_all(&text).with_context(|| format!("writing dead letters to {}", self.path.display()))
    }
}

#[async_trait]
impl DeadLetters for FileDeadLetters {
    async fn write(&self, context: &WriterContext, rejected: &[Rejected]) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        let letters: Vec<DeadLetter> = rejected.iter().map(|r| DeadLetter::new(context, r.clone())).collect();
        let mut unsynced = self.unsynced.lock().await;
        self.append(&letters)?;
        *unsynced = true;
        Ok(())
    }

    async fn sync(&self) -> anyhow::Result<()> {
        let mut unsynced = self.unsynced.lock().await;
        if !*unsynced {
            return Ok(());
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|file| file.sync_data())
                .with_context(|| format!("syncing dead letters to {}", path.display()))
        })
        .await
        .context("syncing dead letters stopped unexpectedly")??;
        *unsynced = false;
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn list(&self, job: &str, include_replayed: bool) -> anyhow::Result<Vec<DeadLetter>> {
        let _guard = self.unsynced.lock().await;
        let letters = self.read_all()?;
        Ok(letters.into_iter().filter(|l| l.job == job && (include_replayed || l.replayed_at.is_none())).collect())
    }

    async fn mark_replayed(&self, ids: &[String]) -> anyhow::Result<()> {
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let _guard = self.unsynced.lock().await;
        let mut letters = self.read_all()?;
        let stamp = now();
        for letter in letters.iter_mut().filter(|l| ids.contains(l.id.as_str())) {
            letter.replayed_at = Some(stamp.clone());
        }
        let temporary = self.path.with_extension("jsonl.tmp");
        let mut text = Vec::new();
        for letter in &letters {
            serde_json::to_writer(&mut text, letter)?;
            text.push(b'\n');
        }
        let mut file =
            std::fs::File::create(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path).with_context(|| format!("replacing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reason: &str) -> Rejected {
        Rejected {
            reason: reason.into(),
            position: "in.csv:3".into(),
            record: serde_json::json!({"id": 3}),
            stage: "validate".into(),
        }
    }

    #[tokio::test]
    async fn appends_lists_and_marks() {
        let dir = tempfile::tempdir().unwrap();
        let letters = FileDeadLetters::new(dir.path().join("dl/dead.jsonl"));
        let context = WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
        letters.write(&context, &[rejected("bad"), rejected("worse")]).await.unwrap();
        let other = WriterContext { job: "other".into(), ..context.clone() };
        letters.write(&other, &[rejected("elsewhere")]).await.unwrap();

        let listed = letters.list("j", false).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].rejected.reason, "bad");
        assert_eq!((listed[0].run.as_str(), listed[0].shard.as_str()), ("r", "s"));
        assert_ne!(listed[0].id, listed[1].id);

        letters.mark_replayed(&[listed[0].id.clone()]).await.unwrap();
        let pending = letters.list("j", false).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].rejected.reason, "worse");
        let all = letters.list("j", true).await.unwrap();
        assert!(all[0].replayed_at.is_some());
        assert_eq!(letters.list("other", false).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn syncs_only_after_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let letters = FileDeadLetters::new(&path);
        letters.sync().await.expect("nothing to sync: the file is not even made");
        let context = WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
        letters.write(&context, &[rejected("bad")]).await.unwrap();
        assert_eq!(letters.list("j", false).await.unwrap().len(), 1, "readable before the sync");
        letters.sync().await.unwrap();
        // The file is opened to be synced only when something was appended since the last sync.
        std::fs::remove_file(&path).unwrap();
        letters.sync().await.expect("nothing appended since the last sync");
        letters.write(&context, &[rejected("worse")]).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let error = letters.sync().await.unwrap_err();
        assert!(format!("{error:#}").contains("syncing dead letters"), "{error:#}");
    }

    #[tokio::test]
    async fn a_damaged_line_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        std::fs::write(&path, "{not json\n").unwrap();
        let error = FileDeadLetters::new(&path).list("j", false).await.unwrap_err();
        assert!(format!("{error:#}").contains("dead.jsonl:1: not a dead letter"), "{error:#}");
    }
}
