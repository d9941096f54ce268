//! Planning the `file` source: which files a path or glob pattern matches, how
//! each is split into shards (whole files, or byte ranges of large
//! uncompressed files), and which bytes an incremental run still has to read.

use std::collections::BTreeMap;
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

/// The job state of incremental runs: each file's size when it was last planned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileSizes {
    pub files: BTreeMap<String, u64>,
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

/// Plans the shards of a run. With `previous` sizes (incremental mode) a file
/// of unchanged size is skipped and a grown uncompressed file is read from its
/// previous size; anything else is read in full. Returns the shards and every
/// matching file's size at planning.
pub(crate) fn plan_shards(
    options: &PlanOptions,
    previous: Option<&FileSizes>,
) -> anyhow::Result<(Vec<ShardSpec>, FileSizes)> {
    let mut shards = Vec::new();
    let mut sizes = FileSizes::default();
    for (index, path) in matching_files(&options.pattern)?.iter().enumerate() {
        let size = std::fs::metadata(path).with_context(|| format!("cannot read `{}`", path.display()))?.len();
        let key = path.display().to_string();
        sizes.files.insert(key.clone(), size);
        let format = match options.format.or_else(|| InputFormat::infer(path)) {
            Some(format) => format,
            None => bail!("cannot tell the format of `{key}` from its extension; set `format` to `csv` or `jsonl`"),
        };
        let gzip = options.compression.is_gzip(path);
        let from = match previous.and_then(|sizes| sizes.files.get(&key)) {
            None => 0,
            Some(&known) if known == size => continue,
            Some(&known) if known < size && !gzip => known,
            Some(&known) => {
                tracing::warn!(file = %key, known, size, "file changed in a way that cannot be read incrementally, reading it again in full");
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
