//! A rough record count of a `file` shard for the progress ETA: the shard's
//! bytes divided by the average line length of a sample from its start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::plan::ShardDescriptor;

/// The bytes sampled to measure the average line length.
const SAMPLE_BYTES: u64 = 64 * 1024;

/// The records a shard of an uncompressed file holds, roughly; `None` for
/// gzip files, whose decompressed size is unknown before reading them.
pub(crate) fn estimate_records(descriptor: &ShardDescriptor) -> Option<u64> {
    if descriptor.gzip {
        return None;
    }
    let bytes = descriptor.end.unwrap_or(descriptor.size).saturating_sub(descriptor.start);
    let mut file = File::open(&descriptor.path).ok()?;
    file.seek(SeekFrom::Start(descriptor.start)).ok()?;
    let mut sample = Vec::new();
    file.take(SAMPLE_BYTES.min(bytes)).read_to_end(&mut sample).ok()?;
    let lines = sample.iter().filter(|&&byte| byte == b'\n').count() as u64;
    match (lines, sample.len() as u64) {
        (_, 0) => Some(0),
        (0, _) => Some(1),
        (lines, sampled) => Some(bytes.saturating_mul(lines) / sampled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::plan::InputFormat;

    #[test]
    fn estimates_from_the_average_line_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, "0123456789\n".repeat(100)).unwrap();
        let path = path.display().to_string();
        let whole = ShardDescriptor { path, format: InputFormat::Jsonl, gzip: false, start: 0, end: None, size: 1100 };
        assert_eq!(estimate_records(&whole), Some(100));
        let range = ShardDescriptor { start: 550, end: Some(770), ..whole.clone() };
        assert_eq!(estimate_records(&range), Some(20));
        assert_eq!(estimate_records(&ShardDescriptor { gzip: true, ..whole }), None);
    }
}
