//! The runtime's shard ledger backed by the store: every shard runs under a
//! lease with a fencing epoch, renewed by a heartbeat while it runs; every
//! checkpoint is a conditional update on that epoch. The heartbeat also
//! reads whether the leader asked for the shard to split, so that the
//! runtime's question after each checkpoint costs no round trip.
//!
//! A short store outage — a database restart — pauses the shards rather
//! than failing them: claims, renewals, checkpoints and the end of a shard
//! retry transient errors with backoff ([`outage`]). Under a lease they
//! retry while the lease may still be live by this process's estimate
//! ([`lease_clock`]), without one for one ttl; then they fail with a clear
//! error. Past its expiry another owner may take the shard over, and the
//! epoch fences this one off, so giving up then is correct.

mod lease_clock;
mod outage;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{ClaimedShard, Error, Lease, ShardRecord, ShardState, Store};
use anyhow::Context;
use async_trait::async_trait;
use haul_collect_core::ShardSpec;
use haul_collect_core::runtime::{Ledger, ResumePoint, ShardOutcome};
use tokio::time::Instant;

use lease_clock::LeaseClock;
use outage::{Deadline, Failure, Operation, Reachability};

/// How often a shard held by someone else is tried again.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// Leases shards of one run for one owner (a process).
pub struct StoreLedger {
    store: Arc<dyn Store>,
    run_id: String,
    owner: String,
    ttl: Duration,
    /// Whether `acquire` waits out another owner's live lease (see [`StoreLedger::only_free_shards`]).
    wait_for_owner: bool,
    /// Whether every commit first renews the lease (see [`StoreLedger::fence_commits`]).
    fence_commits: bool,
    reachability: Arc<Reachability>,
    held: Mutex<HashMap<String, HeldLease>>,
}

struct HeldLease {
    lease: Lease,
    clock: Arc<LeaseClock>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// The shard's `split_requested` as the heartbeat last read it.
    split_requested: Arc<AtomicBool>,
    /// Where the shard resumes, for a claim made by [`StoreLedger::claim_offered`]
    /// that [`Ledger::acquire`] has not taken over yet.
    unacquired: Option<ResumePoint>,
}

impl StoreLedger {
    pub fn new(store: Arc<dyn Store>, run_id: impl Into<String>, owner: impl Into<String>, ttl: Duration) -> Self {
        let run_id = run_id.into();
        StoreLedger {
            store,
            reachability: Arc::new(Reachability::new(&run_id)),
            run_id,
            owner: owner.into(),
            ttl,
            wait_for_owner: true,
            fence_commits: false,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `acquire` give up at once on a shard another owner holds a live
    /// lease on, instead of waiting for that lease to run out: what a worker
    /// wants when a duplicated assignment reaches it (the scheduler offers
    /// the shard again should that lease expire).
    pub fn only_free_shards(mut self) -> Self {
        self.wait_for_owner = false;
        self
    }

    /// Makes every writer commit first make sure of the lease: unless this
    /// process's clock shows at least half a ttl of it left, it is renewed, a
    /// conditional update on its epoch. A worker frozen past its lease (whose
    /// shard another worker took) fails there instead of publishing output.
    /// What remains is a freeze of over half a ttl between that check and the
    /// commit itself; sinks that upsert by key are exact regardless. (A lease
    /// is only taken from an owner once it expired, or from a process that
    /// restarted under the same name: its predecessor is gone.)
    pub fn fence_commits(mut self) -> Self {
        self.fence_commits = true;
        self
    }

    /// Claims an offered shard by its id, as a worker does before it runs
    /// it: the claim hands back the shard as the store has it, so no read of
    /// it comes first. The lease is held from here, as [`Ledger::acquire`]
    /// holds one, and the run's `acquire` of the shard takes it over.
    /// `None` when the shard is not free (held by another owner or already by
    /// this one, or finished) or not in the run.
    pub async fn claim_offered(&self, shard_id: &str) -> anyhow::Result<Option<ShardSpec>> {
        let Some((claimed, sent)) = self.claim(shard_id).await? else {
            return Ok(None);
        };
        let shard = claimed.shard.clone();
        self.hold(claimed, sent, true);
        Ok(Some(shard))
    }

    /// Keeps a claimed lease, renewed by a heartbeat from now on.
    fn hold(&self, claimed: ClaimedShard, sent: Instant, unacquired: bool) {
        let ClaimedShard { lease, resume, shard } = claimed;
        let clock = Arc::new(LeaseClock::claimed(sent, self.ttl));
        let split_requested = Arc::new(AtomicBool::new(false));
        let heartbeat = self.heartbeat(lease.clone(), clock.clone(), split_requested.clone());
        let unacquired = unacquired.then_some(resume);
        if let Ok(mut held) = self.held.lock() {
            held.insert(shard.id, HeldLease { lease, clock, heartbeat, split_requested, unacquired });
        }
    }

    /// Where a shard claimed by [`StoreLedger::claim_offered`] resumes, the
    /// first time it is asked for.
    fn take_unacquired(&self, shard: &ShardSpec) -> anyhow::Result<Option<ResumePoint>> {
        Ok(self.held()?.get_mut(&shard.id).and_then(|held| held.unacquired.take()))
    }

    /// Gives back the shards claimed by [`StoreLedger::claim_offered`] that
    /// no run acquired (it was stopped first), so that they are offered again
    /// at once rather than when their leases run out.
    pub async fn release_unacquired(&self) -> anyhow::Result<()> {
        let unacquired: Vec<HeldLease> =
            self.held()?.extract_if(|_, held| held.unacquired.is_some()).map(|(_, held)| held).collect();
        unacquired.iter().for_each(|held| held.heartbeat.abort());
        let mut first_error = None;
        for HeldLease { lease, unacquired, .. } in unacquired {
            if let Err(error) = self.store.release_shard(&lease, &unacquired.unwrap_or_default()).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), |error| Err(error.into()))
    }

    fn lease(&self, shard: &ShardSpec) -> anyhow::Result<(Lease, Arc<LeaseClock>)> {
        let held = self.held.lock().map_err(|_| anyhow::anyhow!("lease table poisoned"))?;
        held.get(&shard.id)
            .map(|h| (h.lease.clone(), h.clock.clone()))
            .with_context(|| format!("shard {} is not leased here", shard.id))
    }

    /// Runs an operation that holds no lease, riding out an outage of up to one ttl.
    async fn unleased<T, Attempt>(
        &self,
        operation: Operation,
        shard_id: &str,
        attempt: impl FnMut() -> Attempt,
    ) -> anyhow::Result<T>
    where
        Attempt: Future<Output = Result<T, Error>>,
    {
        let deadline = Instant::now() + self.ttl;
        self.reachability
            .retry(operation, shard_id, Deadline::Wait(self.ttl), || deadline, attempt)
            .await
            .map_err(Failure::into_anyhow)
    }

    /// A claim of the shard, with the instant its request was sent.
    async fn claim(&self, shard_id: &str) -> anyhow::Result<Option<(ClaimedShard, Instant)>> {
        self.unleased(Operation::Claim, shard_id, || async {
            let sent = Instant::now();
            let claimed = self.store.claim_shard(&self.run_id, shard_id, &self.owner, self.ttl).await?;
            Ok(claimed.map(|claimed| (claimed, sent)))
        })
        .await
    }

    async fn record(&self, shard: &ShardSpec) -> anyhow::Result<ShardRecord> {
        self.unleased(Operation::Read, &shard.id, || self.store.shard(&self.run_id, &shard.id))
            .await
            .with_context(|| format!("reading shard {} of run {}", shard.id, self.run_id))
    }

    fn held(&self) -> anyhow::Result<std::sync::MutexGuard<'_, HashMap<String, HeldLease>>> {
        self.held.lock().map_err(|_| anyhow::anyhow!("lease table poisoned"))
    }

    /// Renews the lease every third of the ttl until it is aborted, riding
    /// out outages while the lease may be live; gives up (logged, counted)
    /// when the lease is lost or may have run out. After each renewal it
    /// reads the shard's `split_requested` into `split_requested`.
    fn heartbeat(
        &self,
        lease: Lease,
        clock: Arc<LeaseClock>,
        split_requested: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let reachability = self.reachability.clone();
        let ttl = self.ttl;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let renewed = renew(store.as_ref(), &reachability, &lease, &clock, ttl).await;
                metrics::counter!("haul_lease_renewals_total", "outcome" => if renewed.is_ok() { "renewed" } else { "failed" })
                    .increment(1);
                if let Err(failure) = renewed {
                    let error = failure.into_anyhow();
                    tracing::warn!(shard = %lease.shard_id, error = %format!("{error:#}"), "lease renewal failed, no longer renewing");
                    return;
                }
                match store.shard(&lease.run_id, &lease.shard_id).await {
                    Ok(record) => split_requested.store(record.split_requested, Ordering::Relaxed),
                    Err(error) => tracing::debug!(shard = %lease.shard_id, error = %error, "reading the shard failed"),
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

    /// Whether the shard ended in `state` under `lease`: an attempt to end it
    /// that seemed to fail, its connection broken, was applied after all.
    async fn ended_under(&self, lease: &Lease, state: ShardState) -> bool {
        let record = self.store.shard(&lease.run_id, &lease.shard_id).await;
        record.is_ok_and(|record| record.epoch == lease.epoch && record.state == state)
    }
}

/// Extends `lease` to `ttl` from now, retrying through an outage while it may
/// be live, and moves its clock on.
async fn renew(
    store: &dyn Store,
    reachability: &Reachability,
    lease: &Lease,
    clock: &LeaseClock,
    ttl: Duration,
) -> Result<(), Failure> {
    let sent = reachability
        .retry(
            Operation::Renew,
            &lease.shard_id,
            Deadline::Lease,
            || clock.expires(),
            || async {
                let sent = Instant::now();
                store.renew_lease(lease, ttl).await.map(|()| sent)
            },
        )
        .await?;
    clock.renewed(sent);
    Ok(())
}

impl Drop for StoreLedger {
    /// A dropped ledger stops renewing: its leases expire as a dead process's would.
    fn drop(&mut self) {
        if let Ok(held) = self.held.lock() {
            held.values().for_each(|h| h.heartbeat.abort());
        }
    }
}

#[async_trait]
impl Ledger for StoreLedger {
    /// Waits while another owner's lease is live (a killed process's lease
    /// runs out within the ttl), unless built [`StoreLedger::only_free_shards`];
    /// gives up on a finished shard.
    async fn acquire(&self, shard: &ShardSpec) -> anyhow::Result<Option<ResumePoint>> {
        if let Some(resume) = self.take_unacquired(shard)? {
            return Ok(Some(resume));
        }
        let (claimed, sent) = loop {
            if let Some(claimed) = self.claim(&shard.id).await? {
                break claimed;
            }
            let record = self.record(shard).await?;
            if record.state.is_terminal() || !self.wait_for_owner {
                return Ok(None);
            }
            tracing::info!(shard = %shard.id, owner = ?record.owner, "waiting for another owner's lease to expire");
            tokio::time::sleep(LEASE_POLL).await;
        };
        let resume = claimed.resume.clone();
        self.hold(claimed, sent, false);
        Ok(Some(resume))
    }

    async fn split_requested(&self, shard: &ShardSpec) -> bool {
        let held = self.held();
        held.ok()
            .and_then(|held| held.get(&shard.id).map(|h| h.split_requested.load(Ordering::Relaxed)))
            .unwrap_or(false)
    }

    /// Splits the shard in the store, once: not retried through an outage,
    /// since a split whose answer was lost may have been applied (the
    /// runtime then fails the shard, which is safe either way).
    async fn split(&self, shard: &ShardSpec, kept: &serde_json::Value, new_shard: &ShardSpec) -> anyhow::Result<()> {
        let (lease, _) = self.lease(shard)?;
        self.store.split_shard(&lease, kept, new_shard).await?;
        if let Some(held) = self.held()?.get(&shard.id) {
            held.split_requested.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Saves the checkpoint, retrying through an outage while the lease may be live.
    async fn checkpoint(&self, shard: &ShardSpec, resume: &ResumePoint) -> anyhow::Result<()> {
        let (lease, clock) = self.lease(shard)?;
        let checkpoint = resume.checkpoint.as_ref().context("a checkpoint without a position")?;
        self.reachability
            .retry(
                Operation::Checkpoint,
                &shard.id,
                Deadline::Lease,
                || clock.expires(),
                || self.store.save_checkpoint(&lease, resume.sequence, checkpoint, &resume.counters),
            )
            .await
            .map_err(Failure::into_anyhow)
    }

    /// Renews the lease before a commit when built [`StoreLedger::fence_commits`],
    /// retrying through an outage while the lease may be live. A lease this
    /// process knows to hold for at least half a ttl more needs no renewal:
    /// its clock counts a freeze too, so a worker frozen past its lease
    /// still renews here, and fails.
    async fn fence(&self, shard: &ShardSpec) -> anyhow::Result<()> {
        if self.fence_commits {
            let (lease, clock) = self.lease(shard)?;
            if clock.expires() >= Instant::now() + self.ttl / 2 {
                return Ok(());
            }
            renew(self.store.as_ref(), &self.reachability, &lease, &clock, self.ttl)
                .await
                .map_err(Failure::into_anyhow)?;
        }
        Ok(())
    }

    /// Ends the shard, retrying through an outage while the lease may be
    /// live; an end that was applied before its answer was lost counts as done.
    async fn finish(&self, shard: &ShardSpec, outcome: &ShardOutcome, reached: &ResumePoint) -> anyhow::Result<()> {
        let (lease, clock) = self.lease(shard)?;
        self.forget(shard);
        let (operation, state, error) = match outcome {
            ShardOutcome::Succeeded => (Operation::Finish, ShardState::Succeeded, None),
            ShardOutcome::Failed(error) => (Operation::Finish, ShardState::Failed, Some(error.as_str())),
            ShardOutcome::Released => (Operation::Release, ShardState::Pending, None),
        };
        let ended = self
            .reachability
            .retry(
                operation,
                &shard.id,
                Deadline::Lease,
                || clock.expires(),
                || async {
                    match operation {
                        Operation::Release => self.store.release_shard(&lease, reached).await,
                        _ => self.store.finish_shard(&lease, state, reached, error).await,
                    }
                },
            )
            .await;
        match ended {
            Ok(()) => Ok(()),
            Err(Failure::Definite { error: Error::LeaseLost { .. }, retried: true })
                if self.ended_under(&lease, state).await =>
            {
                Ok(())
            }
            Err(failure) => Err(failure.into_anyhow()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_collect_core::job::Mode;
    use haul_collect_core::progress::ShardCounters;
    use haul_collect_core::{Checkpoint, Plan};

    use crate::{NewRun, SqliteStore};

    async fn store_with_run(dir: &std::path::Path) -> (Arc<dyn Store>, String, ShardSpec) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("state.db")).await.unwrap());
        let shard = ShardSpec { id: "s0".into(), descriptor: serde_json::json!({}) };
        let plan = Plan { shards: vec![shard.clone()], next_state: None };
        let run = store
            .create_run(NewRun {
                job: "j".into(),
                spec_hash: "h".into(),
                mode: Mode::Full,
                plan,
                request: Default::default(),
            })
            .await
            .unwrap();
        (store, run.id, shard)
    }

    #[tokio::test]
    async fn a_dead_owner_is_taken_over_from_its_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run_id, shard) = store_with_run(dir.path()).await;
        let ttl = Duration::from_millis(300);

        let first = StoreLedger::new(store.clone(), &run_id, "first", ttl);
        assert_eq!(first.acquire(&shard).await.unwrap(), Some(ResumePoint::default()));
        let saved = ResumePoint {
            sequence: 1,
            checkpoint: Some(Checkpoint(serde_json::json!({"after": 42}))),
            counters: ShardCounters { records_read: 42, records_written: 42, ..Default::default() },
        };
        first.checkpoint(&shard, &saved).await.unwrap();

        // The heartbeat keeps the lease alive well past its ttl.
        tokio::time::sleep(ttl * 2).await;
        let second = StoreLedger::new(store.clone(), &run_id, "second", ttl);
        let contender = tokio::time::timeout(ttl, second.acquire(&shard)).await;
        assert!(contender.is_err(), "a live lease was taken over");

        // The first owner dies: its lease runs out and the second resumes where it stopped.
        let (first_lease, _) = first.lease(&shard).unwrap();
        drop(first);
        let resumed = tokio::time::timeout(ttl * 4, second.acquire(&shard)).await.unwrap().unwrap();
        assert_eq!(resumed, Some(saved.clone()));

        // A write by the dead owner's epoch is fenced off.
        let fenced = store.save_checkpoint(&first_lease, 2, saved.checkpoint.as_ref().unwrap(), &saved.counters).await;
        assert!(matches!(fenced, Err(crate::Error::LeaseLost { .. })), "{fenced:?}");

        second.finish(&shard, &ShardOutcome::Succeeded, &saved).await.unwrap();
        assert_eq!(second.acquire(&shard).await.unwrap(), None, "a finished shard is not run again");
    }

    #[tokio::test]
    async fn a_fresh_lease_fences_a_commit_without_the_store_and_a_lost_one_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run_id, shard) = store_with_run(dir.path()).await;
        let ttl = Duration::from_millis(400);
        let first = StoreLedger::new(store.clone(), &run_id, "first", ttl).fence_commits();
        first.acquire(&shard).await.unwrap().unwrap();
        let claimed = store.shard(&run_id, &shard.id).await.unwrap().lease_expires_at;
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.fence(&shard).await.unwrap();
        assert_eq!(store.shard(&run_id, &shard.id).await.unwrap().lease_expires_at, claimed, "no renewal");

        // Another owner takes the shard over; once the first one's clock no
        // longer vouches for its lease, its commits go to the store and fail.
        store.expire_leases_of("first").await.unwrap();
        let second = StoreLedger::new(store.clone(), &run_id, "second", ttl);
        second.acquire(&shard).await.unwrap().unwrap();
        tokio::time::sleep(ttl).await;
        let fenced = first.fence(&shard).await;
        assert!(fenced.is_err(), "a commit under a lost lease went through");
        second.fence(&shard).await.unwrap();
    }

    #[tokio::test]
    async fn the_heartbeat_brings_a_split_request_and_the_split_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run_id, shard) = store_with_run(dir.path()).await;
        let ttl = Duration::from_millis(300);
        let ledger = StoreLedger::new(store.clone(), &run_id, "owner", ttl);
        ledger.acquire(&shard).await.unwrap().unwrap();
        assert!(!ledger.split_requested(&shard).await);
        assert!(store.request_split(&run_id, &shard.id, "straggler").await.unwrap());
        tokio::time::sleep(ttl).await;
        assert!(ledger.split_requested(&shard).await, "two heartbeats have read the request");

        let new_shard = ShardSpec { id: "s0.s0".into(), descriptor: serde_json::json!({ "half": 2 }) };
        ledger.split(&shard, &serde_json::json!({ "half": 1 }), &new_shard).await.unwrap();
        assert!(!ledger.split_requested(&shard).await);
        tokio::time::sleep(ttl).await;
        assert!(!ledger.split_requested(&shard).await, "the stored request is cleared too");
        let shards = store.shards(&run_id).await.unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].spec.descriptor, serde_json::json!({ "half": 1 }));
        assert_eq!((shards[1].spec.clone(), shards[1].state), (new_shard, ShardState::Pending));
    }

    #[tokio::test]
    async fn an_offered_claim_is_taken_over_by_the_run_or_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run_id, shard) = store_with_run(dir.path()).await;
        let ttl = Duration::from_secs(30);
        let ledger = StoreLedger::new(store.clone(), &run_id, "worker", ttl).only_free_shards();
        assert_eq!(ledger.claim_offered(&shard.id).await.unwrap(), Some(shard.clone()));
        let other = StoreLedger::new(store.clone(), &run_id, "other", ttl).only_free_shards();
        assert_eq!(other.claim_offered(&shard.id).await.unwrap(), None, "a held shard is not free");

        // Not acquired: given back, pending again for the next offer.
        ledger.release_unacquired().await.unwrap();
        let record = store.shard(&run_id, &shard.id).await.unwrap();
        assert_eq!((record.state, record.epoch, record.owner), (ShardState::Pending, 1, None));

        // Acquired: the run takes the claim over, without claiming again.
        assert_eq!(ledger.claim_offered(&shard.id).await.unwrap(), Some(shard.clone()));
        assert_eq!(ledger.acquire(&shard).await.unwrap(), Some(ResumePoint::default()));
        ledger.release_unacquired().await.unwrap();
        let record = store.shard(&run_id, &shard.id).await.unwrap();
        assert_eq!((record.state, record.epoch), (ShardState::Running, 2), "an acquired claim stays");
        ledger.finish(&shard, &ShardOutcome::Succeeded, &ResumePoint::default()).await.unwrap();
        assert_eq!(other.claim_offered(&shard.id).await.unwrap(), None, "a finished shard is not free");
    }
}
