//! The worker agent of the distributed mode (`haul worker`): it takes the
//! shard assignments of its pools from the [`Dispatcher`] — those that need
//! no worker label, and those that need one of its labels — at most `slots`
//! at a time, claims each shard's lease in the store, runs the shard through
//! the pipeline runtime from its last checkpoint, and acknowledges the
//! assignment once the shard's outcome is in the store; then it rings the
//! dispatcher's doorbell (at most every 100 ms per run, see [`rings`]), so
//! that the leader looks at the run soon instead of at its next poll.
//!
//! A worker keeps no state of its own; the store is the source of truth.
//! - An assignment for a shard that is finished, leased by another live
//!   worker, or whose run is not running, is acknowledged and dropped: the
//!   leader offers the shard again if it ever needs to.
//! - An assignment that fails before its shard is claimed (the store is
//!   unreachable) goes back to its queue for another try.
//! - A shard whose job cannot be built here fails with the reason, so its run
//!   ends instead of waiting.
//! - A run is built once on a worker and shared by its shards there (see
//!   [`prepared`]); the worker watches the run's state, and once it is paused
//!   or cancelled, its shards commit, checkpoint and release at their next
//!   batch boundary.
//! - A running shard the leader asks to split (a straggler) is split at its
//!   next checkpoint, when its source can: the worker goes on with the part
//!   it keeps, and the leader offers the new shard to an idle worker.
//! - On shutdown (SIGTERM) the worker takes nothing new, and its running
//!   shards checkpoint and release their leases at their next batch boundary;
//!   the leader offers them again at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use haul_collect_core::registry::PluginRegistry;
use haul_collect_core::runtime::{RunOutcome, execute, progress_for};
use haul_common::shutdown::CancellationToken;
use haul_register::dispatch::{
    AssignmentConsumer, Delivery, Dispatcher, Error as DispatchError, Placement, ShardAssignment,
};
use haul_register::ledger::StoreLedger;
use haul_register::limiter::Limiter;
use haul_register::{ClaimedShard, Error as StoreError, ShardState, Store};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::service::RateLimitOverrides;

mod prepared;
mod rings;

use prepared::{Preparation, PreparedRuns, RunBuilder};
use rings::{Ring, RingPace};

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Unique among live workers; the owner its leases are held under.
    pub id: String,
    /// The pools (worker groups) whose shards it takes.
    pub pools: Vec<String>,
    /// The worker labels it carries: besides the shards of its pools that
    /// need no label, it takes those that need one of these.
    pub labels: Vec<String>,
    /// Shards it runs at once.
    pub slots: usize,
    pub lease_ttl: Duration,
    /// Where default dead-letter files go.
    pub state_dir: PathBuf,
    /// Where the runs' `[rate_limit]`s take their permits (Redis in a cluster).
    pub limiter: Arc<dyn Limiter>,
    /// Rate limits that replace the job files' `[rate_limit]`, by job name.
    pub rate_limits: watch::Receiver<RateLimitOverrides>,
}

/// The worker agent; see the module documentation.
pub struct Worker {
    store: Arc<dyn Store>,
    dispatcher: Arc<dyn Dispatcher>,
    runs: Arc<PreparedRuns>,
    config: WorkerConfig,
    load: watch::Sender<u32>,
    rings: Arc<std::sync::Mutex<RingPace>>,
}

/// The deliveries of one placement's consumer, each with its placement; the
/// consumer's end comes as a last `None`.
type Deliveries = futures::stream::BoxStream<'static, (Placement, Option<Result<Delivery, DispatchError>>)>;

/// Takes `consumer`'s deliveries as a stream; after an error, it waits a
/// second before asking again, without holding up the other placements.
fn deliveries(placement: Placement, consumer: Box<dyn AssignmentConsumer>) -> Deliveries {
    futures::stream::unfold((Some(consumer), false), move |(consumer, failed)| {
        let placement = placement.clone();
        async move {
            let mut consumer = consumer?;
            if failed {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let delivery = consumer.next().await;
            let failed = matches!(delivery, Some(Err(_)));
            let open = delivery.is_some();
            Some(((placement, delivery), (open.then_some(consumer), failed)))
        }
    })
    .boxed()
}

/// What became of one assignment.
enum Handled {
    /// The shard ran here, to this outcome.
    Ran(RunOutcome),
    /// Nothing to do here: why.
    Skipped(&'static str),
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        plugins: Arc<PluginRegistry>,
        dispatcher: Arc<dyn Dispatcher>,
        config: WorkerConfig,
    ) -> Arc<Self> {
        let runs = PreparedRuns::new(RunBuilder {
            store: store.clone(),
            plugins,
            state_dir: config.state_dir.clone(),
            limiter: config.limiter.clone(),
            rate_limits: config.rate_limits.clone(),
            // as often as a shard's lease is renewed
            watch_every: (config.lease_ttl / 3).max(Duration::from_millis(100)),
        });
        Arc::new(Worker { store, dispatcher, runs, config, load: watch::Sender::new(0), rings: Arc::default() })
    }

    /// The shards running here now, for the worker's registry entry.
    pub fn load(&self) -> watch::Receiver<u32> {
        self.load.subscribe()
    }

    /// Takes and runs assignments until `shutdown`; then waits up to `grace`
    /// for the running shards to checkpoint and release. Returns whether they
    /// all stopped in time.
    ///
    /// It takes from every placement it serves (see
    /// [`Placement::served_by`]) through one loop: once a slot is free, the
    /// first assignment of any of them takes it.
    pub async fn run(self: &Arc<Self>, shutdown: CancellationToken, grace: Duration) -> anyhow::Result<bool> {
        let prefetch = u16::try_from(self.config.slots.max(1)).unwrap_or(u16::MAX);
        let placements = Placement::served_by(&self.config.pools, &self.config.labels);
        anyhow::ensure!(!placements.is_empty(), "a worker needs at least one pool");
        let mut consumers = Vec::new();
        for placement in placements {
            let consumer = self
                .dispatcher
                .consume(&placement, prefetch)
                .await
                .with_context(|| format!("taking the assignments of {placement}"))?;
            consumers.push(deliveries(placement, consumer));
        }
        let mut deliveries = futures::stream::select_all(consumers);
        let config = &self.config;
        tracing::info!(worker = %config.id, pools = ?config.pools, labels = ?config.labels, slots = config.slots, "worker taking shards");

        // Cancelled on shutdown, or when a placement's assignments stop coming.
        let halt = shutdown.child_token();
        let slots = Arc::new(Semaphore::new(config.slots.max(1)));
        let shards = TaskTracker::new();
        let closed = loop {
            let slot = tokio::select! {
                _ = shutdown.cancelled() => break None,
                slot = slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
            };
            let (placement, delivery) = tokio::select! {
                _ = shutdown.cancelled() => break None,
                next = deliveries.next() => next.expect("a placement's deliveries end with its closing"),
            };
            match delivery {
                None => break Some(placement),
                Some(Err(error)) => tracing::warn!(error = %error, %placement, "taking an assignment failed"),
                Some(Ok(delivery)) => {
                    let (worker, halt) = (self.clone(), halt.clone());
                    shards.spawn(async move {
                        worker.settle(delivery, halt).await;
                        drop(slot);
                    });
                }
            }
        };
        // Whatever stopped the taking, the running shards stop at their next
        // batch boundary and release.
        halt.cancel();
        drop(deliveries);
        shards.close();
        let drained = tokio::time::timeout(grace, shards.wait()).await.is_ok();
        match closed {
            Some(placement) => anyhow::bail!("the broker stopped delivering the assignments of {placement}"),
            None => Ok(drained),
        }
    }

    /// Runs one assignment and settles it with the broker.
    async fn settle(&self, delivery: Delivery, shutdown: CancellationToken) {
        let assignment = delivery.assignment.clone();
        self.load.send_modify(|load| *load += 1);
        let handled = self.handle(&assignment, shutdown).await;
        self.load.send_modify(|load| *load = load.saturating_sub(1));
        let settled = match handled {
            Ok(handled) => {
                match handled {
                    Handled::Ran(outcome) => {
                        tracing::debug!(run_id = %assignment.run_id, shard = %assignment.shard_id, ?outcome, "shard ran");
                        self.ring(&assignment);
                    }
                    Handled::Skipped(why) => {
                        tracing::debug!(run_id = %assignment.run_id, shard = %assignment.shard_id, why, "assignment skipped")
                    }
                }
                delivery.ack().await
            }
            Err(error) => {
                tracing::warn!(run_id = %assignment.run_id, shard = %assignment.shard_id, error = %format!("{error:#}"), "assignment failed before its shard was claimed; giving it back");
                tokio::time::sleep(Duration::from_secs(1)).await;
                delivery.requeue().await
            }
        };
        if let Err(error) = settled {
            // The broker delivers it again, which the lease claim makes harmless.
            tracing::warn!(run_id = %assignment.run_id, shard = %assignment.shard_id, error = %error, "settling an assignment failed");
        }
    }

    /// Rings the doorbell for a shard whose outcome is in the store, in the
    /// background and at the pace of [`rings`]: the leader looks at its run
    /// soon instead of at its next poll.
    fn ring(&self, ended: &ShardAssignment) {
        let now = tokio::time::Instant::now();
        let ring = self.rings.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).ended(&ended.run_id, now);
        let at = match ring {
            Ring::Now => None,
            Ring::At(at) => Some(at),
            Ring::Due => return,
        };
        let (dispatcher, rings, ended) = (self.dispatcher.clone(), self.rings.clone(), ended.clone());
        tokio::spawn(async move {
            if let Some(at) = at {
                tokio::time::sleep_until(at).await;
                let now = tokio::time::Instant::now();
                rings.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).rung_later(&ended.run_id, now);
            }
            if let Err(error) = dispatcher.ring(&ended).await {
                tracing::debug!(run_id = %ended.run_id, shard = %ended.shard_id, %error, "ringing the doorbell failed");
            }
        });
    }

    /// Runs the assigned shard if it is this worker's to run. An error means
    /// nothing was claimed and the assignment should be tried again.
    async fn handle(&self, assignment: &ShardAssignment, shutdown: CancellationToken) -> anyhow::Result<Handled> {
        let prepared = match self.runs.get(&assignment.run_id).await? {
            Preparation::Ready(prepared) => prepared,
            Preparation::NotRunning => return Ok(Handled::Skipped("the run is not running")),
            Preparation::Unbuildable(error) => return self.fail_unbuildable(assignment, &error).await,
        };
        let run = &prepared.run;
        let ledger = Arc::new(
            StoreLedger::new(self.store.clone(), &run.id, &self.config.id, self.config.lease_ttl)
                .only_free_shards()
                .fence_commits(),
        );
        let shard = match ledger.claim_offered(&assignment.shard_id).await {
            Ok(Some(shard)) => shard,
            Ok(None) => return Ok(Handled::Skipped("the shard is not free")),
            Err(error) if matches!(error.downcast_ref(), Some(StoreError::RunNotRunning { .. })) => {
                return Ok(Handled::Skipped("the run is not running"));
            }
            Err(error) => return Err(error),
        };
        let shards = vec![shard];
        let progress = progress_for(&shards);
        // The shard stops at its next batch boundary on shutdown or once its run halts.
        let stop = shutdown.child_token();
        let halting = tokio::spawn({
            let (halted, stop) = (prepared.halted.clone(), stop.clone());
            async move {
                halted.cancelled().await;
                stop.cancel()
            }
        });
        let report = execute(
            prepared.pipeline.clone(),
            prepared.settings.clone(),
            shards,
            ledger.clone(),
            prepared.dead_letters.clone(),
            progress,
            stop,
        )
        .await;
        halting.abort();
        if let Err(error) = ledger.release_unacquired().await {
            // Its lease runs out instead, and the shard is offered again then.
            tracing::warn!(run_id = %run.id, shard = %assignment.shard_id, error = %format!("{error:#}"), "giving back a shard the run never started failed");
        }
        let labels = [("job", run.job.clone())];
        metrics::counter!("haul_records_read_total", &labels).increment(report.totals.records_read);
        metrics::counter!("haul_records_written_total", &labels).increment(report.totals.records_written);
        Ok(Handled::Ran(report.outcome))
    }

    /// Fails a shard whose job cannot be built here, so that its run ends
    /// with the reason instead of waiting for it.
    async fn fail_unbuildable(&self, assignment: &ShardAssignment, error: &anyhow::Error) -> anyhow::Result<Handled> {
        let claimed = self
            .store
            .claim_shard(&assignment.run_id, &assignment.shard_id, &self.config.id, self.config.lease_ttl)
            .await;
        let Ok(Some(ClaimedShard { lease, resume, .. })) = claimed else {
            return Ok(Handled::Skipped("the shard is not free"));
        };
        let reason = format!("cannot build the job on worker {}: {error:#}", self.config.id);
        tracing::error!(run_id = %assignment.run_id, shard = %assignment.shard_id, reason, "failing the shard");
        self.store.finish_shard(&lease, ShardState::Failed, &resume, Some(&reason)).await?;
        Ok(Handled::Ran(RunOutcome::Failed(vec![reason])))
    }
}
