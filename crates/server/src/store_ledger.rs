//! The runtime's shard ledger backed by the store: every shard runs under a
//! lease with a fencing epoch, renewed by a heartbeat while it runs; every
//! checkpoint is a conditional update on that epoch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use haul_collect_core::ShardSpec;
use haul_collect_core::progress::ShardCounters;
use haul_collect_core::runtime::{Ledger, ResumePoint, ShardOutcome};
use haul_register::{Lease, ShardState, Store};

/// How often a shard held by someone else is tried again.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// Leases shards of one run for one owner (a process).
pub struct StoreLedger {
    store: Arc<dyn Store>,
    run_id: String,
    owner: String,
    ttl: Duration,
    held: Mutex<HashMap<String, HeldLease>>,
}

struct HeldLease {
    lease: Lease,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl StoreLedger {
    pub fn new(store: Arc<dyn Store>, run_id: impl Into<String>, owner: impl Into<String>, ttl: Duration) -> Self {
        StoreLedger { store, run_id: run_id.into(), owner: owner.into(), ttl, held: Mutex::new(HashMap::new()) }
    }

    fn lease(&self, shard: &ShardSpec) -> anyhow::Result<Lease> {
        let held = self.held.lock().map_err(|_| anyhow::anyhow!("lease table poisoned"))?;
        held.get(&shard.id).map(|h| h.lease.clone()).with_context(|| format!("shard {} is not leased here", shard.id))
    }

    async fn record(&self, shard: &ShardSpec) -> anyhow::Result<haul_register::ShardRecord> {
        let records = self.store.shards(&self.run_id).await?;
        records
            .into_iter()
            .find(|r| r.spec.id == shard.id)
            .with_context(|| format!("shard {} is not in the run", shard.id))
    }

    fn heartbeat(&self, lease: Lease) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let ttl = self.ttl;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(ttl / 3);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(error) = store.renew_lease(&lease, ttl).await {
                    tracing::warn!(shard = %lease.shard_id, error = %error, "lease renewal failed");
                    if matches!(error, haul_register::Error::LeaseLost { .. }) {
                        return;
                    }
                }
            }
        })
    }

    fn forget(&self, shard: &ShardSpec) {
        if let Ok(mut held) = self.held.lock()
            && let Some(held) = held.remove(&shard.id)
        {
            held.heartbeat.abort();
        }
    }
}

#[async_trait]
impl Ledger for StoreLedger {
    /// Waits while another owner's lease is live (a killed process's lease
    /// runs out within the ttl); gives up only on a finished shard.
    async fn acquire(&self, shard: &ShardSpec) -> anyhow::Result<Option<ResumePoint>> {
        let lease = loop {
            if let Some(lease) = self.store.claim_shard(&self.run_id, &shard.id, &self.owner, self.ttl).await? {
                break lease;
            }
            let record = self.record(shard).await?;
            if record.state.is_terminal() {
                return Ok(None);
            }
            tracing::info!(shard = %shard.id, owner = ?record.owner, "waiting for another owner's lease to expire");
            tokio::time::sleep(LEASE_POLL).await;
        };
        let record = self.record(shard).await?;
        let heartbeat = self.heartbeat(lease.clone());
        if let Ok(mut held) = self.held.lock() {
            held.insert(shard.id.clone(), HeldLease { lease, heartbeat });
        }
        Ok(Some(ResumePoint { sequence: record.sequence, checkpoint: record.checkpoint, counters: record.counters }))
    }

    async fn checkpoint(&self, shard: &ShardSpec, resume: &ResumePoint) -> anyhow::Result<()> {
        let lease = self.lease(shard)?;
        let checkpoint = resume.checkpoint.as_ref().context("a checkpoint without a position")?;
        self.store.save_checkpoint(&lease, resume.sequence, checkpoint, &resume.counters).await?;
        Ok(())
    }

    async fn finish(&self, shard: &ShardSpec, outcome: &ShardOutcome, counters: &ShardCounters) -> anyhow::Result<()> {
        let lease = self.lease(shard)?;
        self.forget(shard);
        match outcome {
            ShardOutcome::Succeeded => self.store.finish_shard(&lease, ShardState::Succeeded, counters, None).await?,
            ShardOutcome::Failed(error) => {
                self.store.finish_shard(&lease, ShardState::Failed, counters, Some(error)).await?
            }
            ShardOutcome::Released => self.store.release_shard(&lease).await?,
        }
        Ok(())
    }
}
