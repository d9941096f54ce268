//! Live counters of a run and its shards, updated by the runtime and read by
//! whoever shows progress (the `haul run` bar, the API).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// What a shard has done so far; saved with each checkpoint so that a resumed
/// shard continues its totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShardCounters {
    pub records_read: u64,
    pub records_written: u64,
    pub records_rejected: u64,
    pub bytes_read: u64,
}

impl std::ops::AddAssign for ShardCounters {
    fn add_assign(&mut self, delta: ShardCounters) {
        self.records_read += delta.records_read;
        self.records_written += delta.records_written;
        self.records_rejected += delta.records_rejected;
        self.bytes_read += delta.bytes_read;
    }
}

/// Atomic counters of one shard.
#[derive(Debug, Default)]
pub struct ShardProgress {
    pub id: String,
    records_read: AtomicU64,
    records_written: AtomicU64,
    records_rejected: AtomicU64,
    bytes_read: AtomicU64,
    /// Estimated records in the shard, 0 when unknown.
    pub estimated_records: AtomicU64,
    state: AtomicU64,
}

/// Where a shard is in its run, as shown by progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardPhase {
    Queued,
    Running,
    Retrying,
    Done,
    Stopped,
    Failed,
}

impl ShardPhase {
    const ALL: [ShardPhase; 6] = [
        ShardPhase::Queued,
        ShardPhase::Running,
        ShardPhase::Retrying,
        ShardPhase::Done,
        ShardPhase::Stopped,
        ShardPhase::Failed,
    ];
}

impl ShardProgress {
    pub fn new(id: impl Into<String>, start: ShardCounters) -> Self {
        let progress = ShardProgress { id: id.into(), ..Default::default() };
        progress.add(start);
        progress
    }

    pub fn add(&self, delta: ShardCounters) {
        self.records_read.fetch_add(delta.records_read, Ordering::Relaxed);
        self.records_written.fetch_add(delta.records_written, Ordering::Relaxed);
        self.records_rejected.fetch_add(delta.records_rejected, Ordering::Relaxed);
        self.bytes_read.fetch_add(delta.bytes_read, Ordering::Relaxed);
    }

    /// Takes back counts of work that was discarded (an aborted, uncommitted write).
    pub fn subtract(&self, delta: ShardCounters) {
        self.records_read.fetch_sub(delta.records_read, Ordering::Relaxed);
        self.records_written.fetch_sub(delta.records_written, Ordering::Relaxed);
        self.records_rejected.fetch_sub(delta.records_rejected, Ordering::Relaxed);
        self.bytes_read.fetch_sub(delta.bytes_read, Ordering::Relaxed);
    }

    pub fn counters(&self) -> ShardCounters {
        ShardCounters {
            records_read: self.records_read.load(Ordering::Relaxed),
            records_written: self.records_written.load(Ordering::Relaxed),
            records_rejected: self.records_rejected.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }

    pub fn set_phase(&self, phase: ShardPhase) {
        let index = ShardPhase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.state.store(index as u64, Ordering::Relaxed);
    }

    pub fn phase(&self) -> ShardPhase {
        ShardPhase::ALL[self.state.load(Ordering::Relaxed) as usize % ShardPhase::ALL.len()]
    }
}

/// The counters of every shard of a run.
#[derive(Debug, Default)]
pub struct RunProgress {
    pub shards: Vec<Arc<ShardProgress>>,
}

impl RunProgress {
    pub fn totals(&self) -> ShardCounters {
        self.shards.iter().map(|s| s.counters()).fold(ShardCounters::default(), |mut total, counters| {
            total += counters;
            total
        })
    }

    /// The sum of the shards' estimates, when every shard has one.
    pub fn estimated_records(&self) -> Option<u64> {
        let estimates: Vec<u64> = self.shards.iter().map(|s| s.estimated_records.load(Ordering::Relaxed)).collect();
        (!estimates.is_empty() && estimates.iter().all(|e| *e > 0)).then(|| estimates.iter().sum())
    }
}
