//! The ledger of a run executed by the embedded workers: before a shard
//! claims its lease in the store, it waits for a worker slot from the
//! [`SlotDispatcher`]; the slot is held until the shard ends.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use haul_collect_core::ShardSpec;
use haul_collect_core::runtime::{Ledger, ResumePoint, ShardOutcome};
use haul_common::shutdown::CancellationToken;
use haul_register::ledger::StoreLedger;
use std::sync::Arc;

use super::dispatch::{SlotDispatcher, SlotPermit};
use crate::planner::WaitingShard;

/// A run's shards as the dispatcher sees them.
#[derive(Debug, Clone)]
pub struct ShardTicket {
    pub run_id: String,
    pub job: String,
    pub pool: String,
    /// The worker label the shards need (the job's `worker_label`); only
    /// remote workers heed it: embedded slots run every shard.
    pub worker_label: Option<String>,
    pub priority: i32,
    /// Waiting counts from here for aging: the run's creation.
    pub enqueued_at: chrono::DateTime<chrono::Utc>,
    /// The job's maximum parallelism.
    pub job_limit: usize,
}

impl ShardTicket {
    /// The ticket of `run`'s shards, with its job's parallelism.
    pub fn of(run: &haul_register::RunRecord, job: &haul_collect_core::assemble::LoadedJob) -> Self {
        ShardTicket {
            run_id: run.id.clone(),
            job: run.job.clone(),
            pool: run.request.pool.clone(),
            worker_label: job.spec.platform.worker_label.clone(),
            priority: run.request.priority,
            enqueued_at: run.created_at,
            job_limit: job.spec.parallelism,
        }
    }
}

pub struct DispatchLedger {
    store_ledger: StoreLedger,
    dispatcher: Arc<SlotDispatcher>,
    ticket: ShardTicket,
    /// Cancelled when the run is halted: a shard still waiting for a slot gives up.
    stop: CancellationToken,
    permits: Mutex<HashMap<String, SlotPermit>>,
}

impl DispatchLedger {
    pub fn new(
        store_ledger: StoreLedger,
        dispatcher: Arc<SlotDispatcher>,
        ticket: ShardTicket,
        stop: CancellationToken,
    ) -> Self {
        DispatchLedger { store_ledger, dispatcher, ticket, stop, permits: Mutex::new(HashMap::new()) }
    }

    fn permits(&self) -> std::sync::MutexGuard<'_, HashMap<String, SlotPermit>> {
        self.permits.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Ledger for DispatchLedger {
    /// `None` when the run was halted before the shard got a slot, or when
    /// the shard is finished already.
    async fn acquire(&self, shard: &ShardSpec) -> anyhow::Result<Option<ResumePoint>> {
        let waiting = WaitingShard {
            run_id: self.ticket.run_id.clone(),
            shard_id: shard.id.clone(),
            job: self.ticket.job.clone(),
            pool: self.ticket.pool.clone(),
            priority: self.ticket.priority,
            enqueued_at: self.ticket.enqueued_at,
        };
        let permit = tokio::select! {
            permit = self.dispatcher.acquire(waiting, self.ticket.job_limit) => permit,
            _ = self.stop.cancelled() => return Ok(None),
        };
        match self.store_ledger.acquire(shard).await {
            Ok(Some(resume)) => {
                self.permits().insert(shard.id.clone(), permit);
                Ok(Some(resume))
            }
            Ok(None) => Ok(None),
            // Paused or cancelled between the slot and the claim.
            Err(_) if self.stop.is_cancelled() => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn checkpoint(&self, shard: &ShardSpec, resume: &ResumePoint) -> anyhow::Result<()> {
        self.store_ledger.checkpoint(shard, resume).await
    }

    async fn finish(&self, shard: &ShardSpec, outcome: &ShardOutcome, reached: &ResumePoint) -> anyhow::Result<()> {
        let finished = self.store_ledger.finish(shard, outcome, reached).await;
        self.permits().remove(&shard.id);
        let outcome = match outcome {
            ShardOutcome::Succeeded => "succeeded",
            ShardOutcome::Failed(_) => "failed",
            ShardOutcome::Released => "released",
        };
        metrics::counter!("haul_shards_finished_total", "job" => self.ticket.job.clone(), "outcome" => outcome)
            .increment(1);
        finished
    }
}
