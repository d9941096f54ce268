//! Planning the `file` source: which files a path or glob pattern matches, how
//! each is split into shards (whole files, or byte ranges of large
//! uncompressed files), and which bytes an incremental run still has to read.
//!
//! An incremental run reads an uncompressed file up to the end of its last
//! complete line: a line still being written (or a last line without a line
//! end) is left for the next run. A file replaced by another one under the
//! same name (a different inode and device) is read again from its start.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use haul_collect_core::ShardSpec;
use serde::{Deserialize, Serialize};

/// The default size of the byte ranges a large JSON Lines file is split into.
pub(crate) const DEFAULT_SPLIT_BYTES: u64 = 64 * 1024 * 1024;

/// The text formats the source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    Csv,
    Jsonl,
}

impl InputFormat {
    /// The format named by a file's extension, after a `.gz` suffix is stripped.
    fn infer(path: &Path) -> Option<InputFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        match Path::new(name).extension()?.to_str()? {
            "csv" => Some(InputFormat::Csv),
            "jsonl" | "ndjson" => Some(InputFormat::Jsonl),
            _ => None,
        }
    }
}

/// How the source decides whether a file is gzip-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputCompression {
    /// Gzip when the file name ends with `.gz`.
    #[default]
    Auto,
    None,
    Gzip,
}

impl InputCompression {
    fn is_gzip(self, path: &Path) -> bool {
        match self {
            InputCompression::Auto => path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("gz")),
            InputCompression::None => false,
            InputCompression::Gzip => true,
        }
    }
}

/// What the planner needs from the source's options.
#[derive(Debug, Clone)]
pub(crate) struct PlanOptions {
    pub pattern: String,
    pub format: Option<InputFormat>,
    pub compression: InputCompression,
    /// Set by the user; JSON Lines files fall back to [`DEFAULT_SPLIT_BYTES`].
    pub split_bytes: Option<u64>,
}

/// The part of a file one shard reads; the shard's descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ShardDescriptor {
    pub path: String,
    pub format: InputFormat,
    pub gzip: bool,
    /// Where the shard's first line may start, in the decompressed stream.
    /// Above zero, the line under way at `start` belongs to the shard before.
    pub start: u64,
    /// Lines starting at or after this offset belong to the next shard; `None`
    /// reads to the end of the file.
    pub end: Option<u64>,
    /// The file's size at planning: bytes appended later are left for the next run.
    pub size: u64,
}

/// The job state of incremental runs: each file as it was last planned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileSizes {
    pub files: BTreeMap<String, FileMark>,
}

/// How much of a file was planned, and which file it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredMark")]
pub(crate) struct FileMark {
    /// The bytes planned: up to the last complete line of an uncompressed file.
    pub size: u64,
    /// The file's identity (`device:inode`), when the system has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// A mark as stored: a plain size in the state of earlier versions.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredMark {
    Size(u64),
    Mark {
        size: u64,
        #[serde(default)]
        identity: Option<String>,
    },
}

impl From<StoredMark> for FileMark {
    fn from(stored: StoredMark) -> FileMark {
        match stored {
            StoredMark::Size(size) => FileMark { size, identity: None },
            StoredMark::Mark { size, identity } => FileMark { size, identity },
        }
    }
}

/// A file's identity: its device and inode.
#[cfg(unix)]
fn identity(metadata: &Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    Some(format!("{}:{}", metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn identity(_metadata: &Metadata) -> Option<String> {
    None
}

/// The bytes read backwards at a time when looking for the last line end.
const TAIL_BYTES: u64 = 64 * 1024;

/// The offset just after the last `\n` among the first `size` bytes of
/// `path`; 0 without one.
fn complete_lines_size(path: &Path, size: u64) -> anyhow::Result<u64> {
    let mut file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut end = size;
    let mut tail = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(TAIL_BYTES);
        tail.clear();
        file.seek(SeekFrom::Start(start)).with_context(|| format!("cannot seek `{}`", path.display()))?;
        (&mut file)
            .take(end - start)
            .read_to_end(&mut tail)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if let Some(last) = tail.iter().rposition(|&byte| byte == b'\n') {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The files a path or glob pattern names, sorted; an error when there are none.
pub(crate) fn matching_files(pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    let literal = Path::new(pattern);
    if literal.is_dir() {
        bail!("`{pattern}` is a directory; name its files with a pattern such as `{pattern}/*.csv`");
    }
    if literal.is_file() || !pattern.contains(['*', '?', '[']) {
        std::fs::metadata(literal).with_context(|| format!("cannot read `{pattern}`"))?;
        return Ok(vec![literal.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in glob::glob(pattern).with_context(|| format!("invalid glob pattern `{pattern}`"))? {
        let path = entry.with_context(|| format!("cannot list the files matching `{pattern}`"))?;
        if path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("no file matches `{pattern}`");
    }
    files.sort();
    Ok(files)
}

/// Plans the shards of a run. In `incremental` mode, an uncompressed file is
/// planned up to its last complete line, and with `previous` marks an
/// unchanged file is skipped and a grown uncompressed file is read from its
/// previous size; anything else (a gzip file that changed, a file that shrank
/// or was replaced) is read in full. Returns the shards and every matching
/// file's mark at planning.
pub(crate) fn plan_shards(
    options: &PlanOptions,
    incremental: bool,
    previous: Option<&FileSizes>,
) -> anyhow::Result<(Vec<ShardSpec>, FileSizes)> {
    let mut shards = Vec::new();
    let mut sizes = FileSizes::default();
    for (index, path) in matching_files(&options.pattern)?.iter().enumerate() {
        let metadata = std::fs::metadata(path).with_context(|| format!("cannot read `{}`", path.display()))?;
        let key = path.display().to_string();
        let format = match options.format.or_else(|| InputFormat::infer(path)) {
            Some(format) => format,
            None => bail!("cannot tell the format of `{key}` from its extension; set `format` to `csv` or `jsonl`"),
        };
        let gzip = options.compression.is_gzip(path);
        let size = if incremental && !gzip { complete_lines_size(path, metadata.len())? } else { metadata.len() };
        let mark = FileMark { size, identity: identity(&metadata) };
        sizes.files.insert(key.clone(), mark.clone());
        let from = match previous.and_then(|sizes| sizes.files.get(&key)) {
            None => 0,
            Some(known) if known.identity.is_some() && known.identity != mark.identity => {
                tracing::warn!(file = %key, "the file was replaced by another one, reading it from the start");
                0
            }
            Some(known) if known.size == size => continue,
            Some(known) if known.size < size && !gzip => known.size,
            Some(known) => {
                tracing::warn!(file = %key, known = known.size, size, "file changed in a way that cannot be read incrementally, reading it again in full");
                0
            }
        };
        let split = match (gzip, format, options.split_bytes) {
            (true, _, _) => None,
            (false, _, Some(split)) => Some(split),
            (false, InputFormat::Jsonl, None) => Some(DEFAULT_SPLIT_BYTES),
            (false, InputFormat::Csv, None) => None,
        };
        let ranges = byte_ranges(from, size, split);
        let several = ranges.len() > 1;
        for (range_index, (start, end)) in ranges.into_iter().enumerate() {
            let id = if several { format!("f{index:04}-r{range_index:04}") } else { format!("f{index:04}") };
            let descriptor = ShardDescriptor { path: key.clone(), format, gzip, start, end, size };
            shards.push(ShardSpec { id, descriptor: serde_json::to_value(descriptor)? });
        }
    }
    Ok((shards, sizes))
}

/// Splits `[from, size)` into ranges of about `split` bytes; the last one is
/// open-ended (`None`): it reads up to the size recorded in the descriptor.
fn byte_ranges(from: u64, size: u64, split: Option<u64>) -> Vec<(u64, Option<u64>)> {
    let Some(split) = split.filter(|&split| split > 0 && size.saturating_sub(from) > split) else {
        return vec![(from, None)];
    };
    let mut ranges = Vec::new();
    let mut start = from;
    while size - start > split {
        ranges.push((start, Some(start + split)));
        start += split;
    }
    ranges.push((start, None));
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_inferred_after_stripping_gz() {
        assert_eq!(InputFormat::infer(Path::new("a/b.csv.gz")), Some(InputFormat::Csv));
        assert_eq!(InputFormat::infer(Path::new("b.JSONL")), Some(InputFormat::Jsonl));
        assert_eq!(InputFormat::infer(Path::new("b.txt")), None);
        assert_eq!(InputFormat::infer(Path::new("gz")), None);
    }

    #[test]
    fn ranges_cover_the_region_without_gaps() {
        assert_eq!(byte_ranges(0, 10, Some(4)), vec![(0, Some(4)), (4, Some(8)), (8, None)]);
        assert_eq!(byte_ranges(3, 10, Some(4)), vec![(3, Some(7)), (7, None)]);
        assert_eq!(byte_ranges(0, 8, Some(4)), vec![(0, Some(4)), (4, None)]);
        assert_eq!(byte_ranges(0, 4, Some(4)), vec![(0, None)]);
        assert_eq!(byte_ranges(0, 100, None), vec![(0, None)]);
    }

    #[test]
    fn complete_lines_end_at_the_last_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let long_line = "x".repeat(2 * TAIL_BYTES as usize);
        for (text, expected) in [("", 0), ("{}", 0), ("{}\n", 3), ("{}\n{\"a\"", 3), ("a\nb\n", 4)] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(complete_lines_size(&path, text.len() as u64).unwrap(), expected, "{text:?}");
        }
        let text = format!("1\n{long_line}");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(complete_lines_size(&path, text.len() as u64).unwrap(), 2);
    }

    #[test]
    fn marks_of_earlier_versions_are_plain_sizes() {
        let state: FileSizes = serde_json::from_value(serde_json::json!({"files": {"a": 13}})).unwrap();
        assert_eq!(state.files["a"], FileMark { size: 13, identity: None });
        let mark = FileMark { size: 4, identity: Some("1:2".into()) };
        let json = serde_json::to_value(&mark).unwrap();
        assert_eq!(json, serde_json::json!({"size": 4, "identity": "1:2"}));
        assert_eq!(serde_json::from_value::<FileMark>(json).unwrap(), mark);
    }

    #[test]
    fn missing_files_and_empty_globs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.csv").display().to_string();
        let error = matching_files(&missing).unwrap_err();
        assert!(format!("{error:#}").contains("cannot read"), "{error:#}");
        let pattern = dir.path().join("*.csv").display().to_string();
        let error = matching_files(&pattern).unwrap_err();
        assert!(error.to_string().contains("no file matches"), "{error:#}");
        let error = matching_files(&dir.path().display().to_string()).unwrap_err();
        assert!(error.to_string().contains("is a directory"), "{error:#}");
    }
}
