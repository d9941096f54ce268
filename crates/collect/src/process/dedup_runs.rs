//! Sorted runs of 128-bit key hashes in temporary files: where exact dedup
//! keeps the hashes that no longer fit its memory limit.
//!
//! Each run is a file of big-endian hashes in ascending order, with the first
//! hash of every 4 KiB block kept in memory (1/256 of the run). A lookup
//! binary-searches those block heads, reads one block and binary-searches it:
//! one read per run. A new run is merged with the runs before it while it is
//! at least half their size, so run sizes at least double down the list and a
//! lookup reads at most log₂(keys / memory capacity) runs. Files are deleted
//! when the run ends (or by the system if the process dies).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// Hashes per block read by a lookup.
const BLOCK: usize = 256;
const HASH_BYTES: usize = 16;

/// The spilled runs, oldest and largest first.
#[derive(Default)]
pub struct SortedRuns {
    runs: Vec<SortedRun>,
}

impl SortedRuns {
    pub fn contains(&self, hash: u128) -> io::Result<bool> {
        for run in &self.runs {
            if run.contains(hash)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds hashes in ascending order that no run holds yet.
    pub fn add(&mut self, sorted: &[u128]) -> io::Result<()> {
        let mut writer = RunWriter::new()?;
        for &hash in sorted {
            writer.push(hash)?;
        }
        let mut run = writer.finish()?;
        while let Some(previous) = self.runs.pop_if(|previous| previous.len <= 2 * run.len) {
            run = SortedRun::merge(&previous, &run)?;
        }
        self.runs.push(run);
        Ok(())
    }

    #[cfg(test)]
    fn run_lengths(&self) -> Vec<u64> {
        self.runs.iter().map(|run| run.len).collect()
    }
}

/// One sorted file of hashes and the first hash of each of its blocks.
struct SortedRun {
    file: File,
    len: u64,
    block_heads: Vec<u128>,
}

impl SortedRun {
    fn contains(&self, hash: u128) -> io::Result<bool> {
        let block = self.block_heads.partition_point(|head| *head <= hash);
        if block == 0 {
            return Ok(false);
        }
        let start = (block - 1) * BLOCK;
        let count = BLOCK.min(self.len as usize - start);
        let mut buffer = [0u8; BLOCK * HASH_BYTES];
        let bytes = &mut buffer[..count * HASH_BYTES];
        let mut file = &self.file;
        file.seek(SeekFrom::Start((start * HASH_BYTES) as u64))?;
        file.read_exact(bytes)?;
        let (mut low, mut high) = (0, count);
        while low < high {
            let middle = (low + high) / 2;
            let found = decode(&bytes[middle * HASH_BYTES..(middle + 1) * HASH_BYTES]);
            match found.cmp(&hash) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(true),
            }
        }
        Ok(false)
    }

    fn merge(older: &SortedRun, newer: &SortedRun) -> io::Result<SortedRun> {
        let mut writer = RunWriter::new()?;
        let (mut left, mut right) = (RunReader::new(older)?, RunReader::new(newer)?);
        let (mut next_left, mut next_right) = (left.next()?, right.next()?);
        loop {
            match (next_left, next_right) {
                (Some(a), Some(b)) if a <= b => {
                    writer.push(a)?;
                    next_left = left.next()?;
                }
                (_, Some(b)) => {
                    writer.push(b)?;
                    next_right = right.next()?;
                }
                (Some(a), None) => {
                    writer.push(a)?;
                    next_left = left.next()?;
                }
                (None, None) => return writer.finish(),
            }
        }
    }
}

fn decode(bytes: &[u8]) -> u128 {
    let mut array = [0u8; HASH_BYTES];
    array.copy_from_slice(bytes);
    u128::from_be_bytes(array)
}

/// Writes a run to a new temporary file.
struct RunWriter {
    writer: BufWriter<File>,
    len: u64,
    block_heads: Vec<u128>,
}

impl RunWriter {
    fn new() -> io::Result<RunWriter> {
        Ok(RunWriter {
            writer: BufWriter::with_capacity(1 << 16, tempfile::tempfile()?),
            len: 0,
            block_heads: Vec::new(),
        })
    }

    fn push(&mut self, hash: u128) -> io::Result<()> {
        if self.len.is_multiple_of(BLOCK as u64) {
            self.block_heads.push(hash);
        }
        self.len += 1;
        self.writer.write_all(&hash.to_be_bytes())
    }

    fn finish(self) -> io::Result<SortedRun> {
        let file = self.writer.into_inner().map_err(|error| error.into_error())?;
        Ok(SortedRun { file, len: self.len, block_heads: self.block_heads })
    }
}

/// Reads a run from its start.
struct RunReader<'a> {
    reader: BufReader<&'a File>,
    remaining: u64,
}

impl<'a> RunReader<'a> {
    fn new(run: &'a SortedRun) -> io::Result<RunReader<'a>> {
        let mut file = &run.file;
        file.seek(SeekFrom::Start(0))?;
        Ok(RunReader { reader: BufReader::with_capacity(1 << 16, file), remaining: run.len })
    }

    fn next(&mut self) -> io::Result<Option<u128>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let mut bytes = [0u8; HASH_BYTES];
        self.reader.read_exact(&mut bytes)?;
        Ok(Some(u128::from_be_bytes(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_exactly_the_spilled_hashes_across_merges() {
        let mut runs = SortedRuns::default();
        // Spills of 300 hashes (more than a block) of the even numbers, scattered.
        let spread = |n: u128| n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let all: Vec<u128> = (0..3000u128).map(|n| spread(2 * n)).collect();
        for chunk in all.chunks(300) {
            let mut sorted = chunk.to_vec();
            sorted.sort_unstable();
            runs.add(&sorted).unwrap();
        }
        let lengths = runs.run_lengths();
        assert_eq!(lengths.iter().sum::<u64>(), 3000);
        assert!(lengths.len() <= 4, "runs were not merged: {lengths:?}");
        assert!(all.iter().all(|hash| runs.contains(*hash).unwrap()));
        assert!((0..3000u128).all(|n| !runs.contains(spread(2 * n + 1)).unwrap()));
        assert!(!runs.contains(u128::MAX).unwrap());
    }
}
