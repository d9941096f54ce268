//! Part files of the `file` sink: their names, the temporary file a part is
//! written to, and publishing it on commit (sync, rename over any part of
//! the same name, sync the directory) so that a part is whole or absent.
//!
//! A commit usually makes one part; when a batch does not fit the part under
//! way (a new field, another type) it makes several, numbered in its name.
//!
//! The sync on publish would write the whole part to the disk while the
//! commit waits. Instead, a part starts writing back what it holds every
//! [`WRITEBACK_BYTES`], on a thread of its own while the shard goes on, so
//! that little is left for the commit's sync.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use anyhow::Context;
use flate2::write::GzEncoder;
use haul_collect_core::{Batch, Schema};

/// The write buffer of part files.
const BUFFER_BYTES: usize = 1024 * 1024;

/// How much a part writes between the syncs it starts in the background.
const WRITEBACK_BYTES: u64 = 16 * 1024 * 1024;

/// Numbers the temporary files this process creates, so they never collide.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Encodes batches into one part file.
pub(crate) trait PartEncoder: Send {
    /// Whether batches of `schema` can go into this part.
    fn fits(&self, schema: &Schema) -> bool;

    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()>;

    /// Writes what the format needs at the end and returns the file to sync.
    fn finish(self: Box<Self>) -> anyhow::Result<File>;
}

/// The byte stream of a text part: buffered, optionally gzip-compressed.
pub(crate) enum PartOutput {
    Plain(BufWriter<WritebackFile>),
    Gzip(Box<GzEncoder<BufWriter<WritebackFile>>>),
}

impl PartOutput {
    pub fn new(file: File, gzip: bool) -> PartOutput {
        let buffered = BufWriter::with_capacity(BUFFER_BYTES, WritebackFile::new(file, WRITEBACK_BYTES));
        if gzip {
            PartOutput::Gzip(Box::new(GzEncoder::new(buffered, flate2::Compression::default())))
        } else {
            PartOutput::Plain(buffered)
        }
    }

    /// Ends the compressed stream, flushes, and returns the file.
    pub fn finish(self) -> io::Result<File> {
        let buffered = match self {
            PartOutput::Plain(buffered) => buffered,
            PartOutput::Gzip(encoder) => (*encoder).finish()?,
        };
        buffered.into_inner().map_err(|error| error.into_error())?.finish()
    }
}

impl Write for PartOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            PartOutput::Plain(buffered) => buffered.write(bytes),
            PartOutput::Gzip(encoder) => encoder.write(bytes),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            PartOutput::Plain(buffered) => buffered.write_all(bytes),
            PartOutput::Gzip(encoder) => encoder.write_all(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            PartOutput::Plain(buffered) => buffered.flush(),
            PartOutput::Gzip(encoder) => encoder.flush(),
        }
    }
}

/// A part file that syncs what was written to it, in the background, every
/// `every` bytes: one sync at a time, on a cloned handle in a thread of its
/// own. A failed sync fails the next write or [`WritebackFile::finish`].
pub(crate) struct WritebackFile {
    file: File,
    every: u64,
    /// Bytes written since the last sync started.
    unsynced: u64,
    syncing: Option<JoinHandle<io::Result<()>>>,
}

impl WritebackFile {
    pub fn new(file: File, every: u64) -> WritebackFile {
        WritebackFile { file, every, unsynced: 0, syncing: None }
    }

    /// Starts a sync unless one is still running.
    fn start_sync(&mut self) -> io::Result<()> {
        if self.syncing.as_ref().is_some_and(|sync| !sync.is_finished()) {
            return Ok(());
        }
        self.wait()?;
        let file = self.file.try_clone()?;
        self.syncing = Some(std::thread::Builder::new().name("haul-part-sync".into()).spawn(move || file.sync_data())?);
        self.unsynced = 0;
        Ok(())
    }

    /// Waits for the sync under way, if any, and returns its outcome.
    fn wait(&mut self) -> io::Result<()> {
        match self.syncing.take() {
            Some(sync) => sync.join().unwrap_or_else(|_| Err(io::Error::other("the part's sync thread panicked"))),
            None => Ok(()),
        }
    }

    /// Waits for the background sync and returns the file, for the sync that makes it durable.
    pub fn finish(mut self) -> io::Result<File> {
        self.wait()?;
        Ok(self.file)
    }
}

impl Write for WritebackFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.unsynced += written as u64;
        if self.unsynced >= self.every {
            self.start_sync()?;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The names of one shard's part files: `{prefix}-{run_id}-{shard_id}-{sequence:06}.{extension}`
/// once committed (`…-{sequence:06}-{n}.{extension}`, n from 1, when a commit
/// has several parts), `.{prefix}-{run_id}-{shard_id}.{process}-{number}.tmp`
/// while written.
#[derive(Debug, Clone)]
pub(crate) struct PartNames {
    pub directory: PathBuf,
    /// `{prefix}-{run_id}-{shard_id}`, made safe for file names.
    stem: String,
    extension: String,
}

impl PartNames {
    pub fn new(directory: &Path, prefix: &str, run_id: &str, shard_id: &str, extension: &str) -> PartNames {
        let stem = format!("{}-{}-{}", file_safe(prefix), file_safe(run_id), file_safe(shard_id));
        PartNames { directory: directory.to_path_buf(), stem, extension: extension.to_string() }
    }

    /// The names of the `count` parts of commit `sequence`.
    pub fn final_paths(&self, sequence: u64, count: usize) -> Vec<PathBuf> {
        if count == 1 {
            return vec![self.directory.join(format!("{}-{sequence:06}.{}", self.stem, self.extension))];
        }
        (1..=count)
            .map(|n| self.directory.join(format!("{}-{sequence:06}-{n}.{}", self.stem, self.extension)))
            .collect()
    }

    /// The parts of commit `sequence` already in the directory, whatever their count.
    pub fn committed_paths(&self, sequence: u64) -> anyhow::Result<Vec<PathBuf>> {
        let head = format!("{}-{sequence:06}", self.stem);
        let tail = format!(".{}", self.extension);
        let mut paths = Vec::new();
        let directory = &self.directory;
        for entry in fs::read_dir(directory).with_context(|| format!("cannot list `{}`", directory.display()))? {
            let entry = entry.with_context(|| format!("cannot list `{}`", directory.display()))?;
            let name = entry.file_name();
            let Some(middle) = name.to_str().and_then(|name| name.strip_prefix(&head)?.strip_suffix(&tail)) else {
                continue;
            };
            let numbered =
                middle.strip_prefix('-').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if middle.is_empty() || numbered {
                paths.push(entry.path());
            }
        }
        Ok(paths)
    }

    pub fn new_temp_path(&self) -> PathBuf {
        let number = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.directory.join(format!(".{}.{}-{number}.tmp", self.stem, std::process::id()))
    }

    /// Deletes temporary files this shard left behind in an earlier attempt.
    pub fn remove_stale_temps(&self) -> anyhow::Result<()> {
        let directory = &self.directory;
        let entries = fs::read_dir(directory).with_context(|| format!("cannot list `{}`", directory.display()))?;
        let head = format!(".{}.", self.stem);
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list `{}`", directory.display()))?;
            let name = entry.file_name();
            let Some(middle) = name.to_str().and_then(|name| name.strip_prefix(&head)?.strip_suffix(".tmp")) else {
                continue;
            };
            if middle.split('-').all(|number| !number.is_empty() && number.bytes().all(|byte| byte.is_ascii_digit())) {
                fs::remove_file(entry.path()).with_context(|| format!("cannot remove `{}`", entry.path().display()))?;
            }
        }
        Ok(())
    }
}

/// Replaces every character that is not a letter, digit, `-`, `_` or `.` (and
/// a leading `.`) so that a name cannot leave the directory or hide.
fn file_safe(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    match safe.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => safe,
    }
}

/// Makes a finished temporary part durable under its final name.
pub(crate) fn publish(file: File, temp: &Path, final_path: &Path) -> anyhow::Result<()> {
    file.sync_all().with_context(|| format!("cannot sync `{}`", temp.display()))?;
    drop(file);
    fs::rename(temp, final_path)
        .with_context(|| format!("cannot rename `{}` to `{}`", temp.display(), final_path.display()))?;
    if let Some(directory) = final_path.parent() {
        sync_directory(directory)?;
    }
    Ok(())
}

#[cfg(unix)]
fn sync_directory(directory: &Path) -> anyhow::Result<()> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("cannot sync the directory `{}`", directory.display()))
}

#[cfg(not(unix))]
fn sync_directory(_directory: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_start_syncing_every_so_many_bytes_and_keep_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let mut file = WritebackFile::new(File::create(&path).unwrap(), 1000);
        file.write_all(&[b'a'; 999]).unwrap();
        assert!(file.syncing.is_none());
        file.write_all(b"b").unwrap();
        assert!(file.syncing.is_some(), "a sync starts after 1000 bytes");
        assert_eq!(file.unsynced, 0);
        for _ in 0..10 {
            file.write_all(&[b'c'; 700]).unwrap();
        }
        drop(file.finish().unwrap());
        let written = fs::read(&path).unwrap();
        assert_eq!(written.len(), 8000);
        assert!(written[..999].iter().all(|&b| b == b'a') && written[999] == b'b');
        assert!(written[1000..].iter().all(|&b| b == b'c'));
    }

    #[test]
    fn names_are_safe_and_sequenced() {
        let names = PartNames::new(Path::new("out"), "part", "run/1", "../s 1", "csv.gz");
        assert_eq!(names.final_paths(7, 1), [Path::new("out/part-run_1-_._s_1-000007.csv.gz")]);
        assert_eq!(
            names.final_paths(7, 2),
            [Path::new("out/part-run_1-_._s_1-000007-1.csv.gz"), Path::new("out/part-run_1-_._s_1-000007-2.csv.gz")]
        );
        assert!(names.new_temp_path().file_name().unwrap().to_str().unwrap().starts_with(".part-run_1-_._s_1."));
    }

    #[test]
    fn stale_temps_of_the_shard_only_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let names = PartNames::new(dir.path(), "part", "r", "s1", "jsonl");
        let other = PartNames::new(dir.path(), "part", "r", "s1.x", "jsonl");
        for path in [names.new_temp_path(), other.new_temp_path(), names.final_paths(1, 1).remove(0)] {
            fs::write(path, b"x").unwrap();
        }
        names.remove_stale_temps().unwrap();
        let mut left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().any(|name| name.to_str().unwrap().starts_with(".part-r-s1.x.")));
    }

    #[test]
    fn committed_parts_of_a_sequence_are_found_in_any_count() {
        let dir = tempfile::tempdir().unwrap();
        let names = PartNames::new(dir.path(), "part", "r", "s1", "jsonl");
        let other = PartNames::new(dir.path(), "part", "r", "s1-x", "jsonl");
        let mut expected = names.final_paths(3, 2);
        expected.extend(names.final_paths(3, 1));
        let unrelated = [names.final_paths(30, 1), names.final_paths(4, 2), other.final_paths(3, 1)].concat();
        for path in expected.iter().chain(&unrelated) {
            fs::write(path, b"x").unwrap();
        }
        let mut found = names.committed_paths(3).unwrap();
        found.sort();
        expected.sort();
        assert_eq!(found, expected);
    }
}
