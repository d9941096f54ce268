//! The scheduler service of `haul server`, with its embedded workers.
//!
//! A [`Platform`] owns the scheduling loop and the runs executing in this
//! process. Each [`Platform::tick`], driven by a [`Clock`] so that tests
//! move time by hand:
//! 1. fires due cron schedules (and queues cron-less downstream jobs for the
//!    same schedule time) — run creation is idempotent on job, trigger and
//!    schedule time, so a restart mid-tick never fires twice;
//! 2. starts the pending runs whose upstream runs succeeded and whose overlap
//!    policy allows, planning them from the job state their predecessors left;
//! 3. resumes running runs that no execution here owns (after a restart, or
//!    a resume);
//! 4. cancels runs past their timeout, and retries failed runs per their
//!    job's `[run_retry]`.
//!
//! A run executes through the pipeline runtime; each of its shards waits for
//! a worker slot from the [`dispatch::SlotDispatcher`] (priorities, pools,
//! per-job parallelism) and then claims its lease in the store, as a remote
//! worker would. The store stays the source of truth: everything here can be
//! rebuilt from it after a crash.

mod actions;
pub mod dispatch;
mod doorbell;
mod error;
mod execution;
mod ledger;
mod rate_limit;
mod remote;
pub mod settings;
mod straggler;
mod tick;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use haul_collect_core::registry::PluginRegistry;
use haul_common::clock::Clock;
use haul_common::shutdown::CancellationToken;
use haul_register::Store;
use haul_register::dispatch::Dispatcher;
use haul_register::limiter::{InProcessLimiter, Limiter};
use tokio::sync::{Notify, broadcast, watch};

pub use actions::{Backfill, RequestedRange, RunDetail, ShardView, SpecFormat, TriggerRequest};
pub use error::PlatformError;
use execution::Execution;
pub use rate_limit::RateLimitOverrides;
pub(crate) use rate_limit::run_rate_limits;

use crate::planner::Aging;

/// How the service runs.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Shards that run at once in this process.
    pub slots: usize,
    /// The most shards each named pool may run at once; other pools are unlimited.
    pub pools: BTreeMap<String, usize>,
    /// How often the scheduler looks at the clock when nothing wakes it.
    pub tick: Duration,
    /// A schedule time this late is still on time (see `MisfirePolicy`).
    pub misfire_grace: Duration,
    /// Waiting this long raises a shard's priority by one.
    pub aging_step: Duration,
    /// How long a shard's lease lives without renewal.
    pub lease_ttl: Duration,
    /// Where default dead-letter files go.
    pub state_dir: PathBuf,
    /// The name leases are held under; stable across restarts of this server,
    /// so a restarted server takes its shards back at once.
    pub owner: String,
    /// Where the runs' `[rate_limit]`s take their permits: shared by every run
    /// of this process, and by every server when it is on Redis.
    pub limiter: Arc<dyn Limiter>,
    /// Rate limits that replace the job files' `[rate_limit]`, by job name;
    /// a running run applies a change from its next batch.
    pub rate_limits: watch::Receiver<RateLimitOverrides>,
    /// Distributed mode: remote workers run the shards, offered to them
    /// through this dispatcher, and `slots` follows their capacity (see
    /// [`Platform::follow_capacity`]); the doorbell, which workers ring when
    /// a shard ends, is followed by [`Platform::follow_doorbell`]. `None`
    /// runs them in this process.
    pub remote_workers: Option<Arc<dyn Dispatcher>>,
    /// How often the leader looks at the shards of a run remote workers run.
    pub remote_poll: Duration,
    /// Distributed mode: a shard running this long at least, and twice the
    /// median of its run's finished shards, is asked to split while a worker
    /// slot would otherwise idle (see `straggler`).
    pub straggler_after: Duration,
    /// Whether this instance leads: only the leader schedules and follows
    /// runs; the others serve the API. Always true for a lone server.
    pub leading: watch::Receiver<bool>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            slots: 4,
            pools: BTreeMap::new(),
            tick: Duration::from_secs(1),
            misfire_grace: Duration::from_secs(60),
            aging_step: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(15),
            state_dir: PathBuf::from(".haul"),
            owner: "server".into(),
            limiter: Arc::new(InProcessLimiter::new()),
            rate_limits: watch::channel(RateLimitOverrides::new()).1,
            remote_workers: None,
            remote_poll: remote::DEFAULT_REMOTE_POLL,
            straggler_after: straggler::DEFAULT_STRAGGLER_AFTER,
            leading: watch::channel(true).1,
        }
    }
}

/// The scheduler service and its embedded workers; cheap to clone.
#[derive(Clone)]
pub struct Platform {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    registry: Arc<PluginRegistry>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    dispatcher: Arc<dispatch::SlotDispatcher>,
    settings: settings::SettingsCache,
    executions: Mutex<HashMap<String, Execution>>,
    /// Serialises ticks: the loop's and those that actions ask for.
    ticking: tokio::sync::Mutex<()>,
    wake: Notify,
    /// The runs whose shards workers rang the doorbell for (see [`Platform::follow_doorbell`]).
    rung: broadcast::Sender<String>,
    shutdown: CancellationToken,
}

impl Platform {
    /// Prepares the service on `store`, taking back at once the leases this
    /// owner held before a restart. Nothing runs until [`Platform::tick`] or
    /// [`Platform::spawn_loop`].
    pub async fn new(
        store: Arc<dyn Store>,
        registry: Arc<PluginRegistry>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Platform> {
        let expired = store.expire_leases_of(&config.owner).await?;
        if expired > 0 {
            tracing::info!(owner = %config.owner, leases = expired, "took back the leases of a previous instance");
        }
        let pools = config.pools.iter().map(|(name, limit)| (name.clone(), *limit)).collect();
        let dispatcher =
            dispatch::SlotDispatcher::new(config.slots, pools, clock.clone(), Aging { step: config.aging_step });
        Ok(Platform {
            inner: Arc::new(Inner {
                store,
                registry,
                clock,
                config,
                dispatcher,
                settings: settings::SettingsCache::default(),
                executions: Mutex::new(HashMap::new()),
                ticking: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
                rung: broadcast::channel(doorbell::RUNG_CAPACITY).0,
                shutdown,
            }),
        })
    }

    /// Ticks every `config.tick`, at each schedule time, and at once
    /// whenever something changes (a run ends, a job is submitted), until
    /// shutdown.
    pub fn spawn_loop(&self) -> tokio::task::JoinHandle<()> {
        let platform = self.clone();
        tokio::spawn(async move {
            let inner = &platform.inner;
            loop {
                let mut pause = inner.config.tick;
                match platform.tick().await {
                    Ok(Some(next_fire)) => {
                        let until_fire = (next_fire - inner.clock.now()).to_std().unwrap_or_default();
                        pause = pause.min(until_fire);
                    }
                    Ok(None) => {}
                    Err(error) => tracing::error!(error = %format!("{error:#}"), "scheduler tick failed"),
                }
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                    _ = inner.wake.notified() => {}
                }
            }
        })
    }

    /// Stops following runs as soon as this instance stops leading, until
    /// shutdown: a former leader must not act beside its successor, which
    /// takes the runs over from the store.
    pub fn step_down_on_lost_leadership(&self) -> tokio::task::JoinHandle<()> {
        let platform = self.clone();
        let mut leading = self.inner.config.leading.clone();
        tokio::spawn(async move {
            metrics::gauge!("haul_scheduler_leader").set(f64::from(u8::from(*leading.borrow_and_update())));
            loop {
                tokio::select! {
                    _ = platform.inner.shutdown.cancelled() => return,
                    changed = leading.changed() => if changed.is_err() { return },
                }
                let leads = *leading.borrow_and_update();
                metrics::gauge!("haul_scheduler_leader").set(f64::from(u8::from(leads)));
                if leads {
                    tracing::info!(owner = %platform.inner.config.owner, "leading the scheduling");
                    platform.wake();
                } else {
                    tracing::warn!(owner = %platform.inner.config.owner, "no longer leading: stopping the runs followed here");
                    for execution in platform.executions().values() {
                        execution.stop.cancel();
                    }
                }
            }
        })
    }

    /// Takes the number of worker slots from `capacity` as it changes (in
    /// distributed mode, the capacity of the live workers), until shutdown.
    pub fn follow_capacity(&self, mut capacity: watch::Receiver<usize>) -> tokio::task::JoinHandle<()> {
        let dispatcher = self.inner.dispatcher.clone();
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let slots = *capacity.borrow_and_update();
                dispatcher.set_slots(slots);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = capacity.changed() => if changed.is_err() { return },
                }
            }
        })
    }

    /// Whether this instance leads the scheduling now.
    pub fn is_leader(&self) -> bool {
        *self.inner.config.leading.borrow()
    }

    /// Waits until every execution in this process has ended (after shutdown,
    /// they release their shards at a batch boundary), or `grace` passes.
    pub async fn drain(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.executions().is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Takes new pool limits from `pool_limits` as they change (the config
    /// centre's `pools` document), replacing `config.pools`, until shutdown.
    pub fn follow_pool_limits(
        &self,
        pool_limits: tokio::sync::watch::Receiver<HashMap<String, usize>>,
    ) -> tokio::task::JoinHandle<()> {
        self.inner.dispatcher.follow_pool_limits(pool_limits, self.inner.shutdown.clone())
    }

    pub fn dispatch_load(&self) -> dispatch::DispatchLoad {
        self.inner.dispatcher.load()
    }

    /// Whether the service can take work: the store answers.
    pub async fn ready(&self) -> bool {
        self.inner.store.jobs().await.is_ok()
    }

    fn executions(&self) -> MutexGuard<'_, HashMap<String, Execution>> {
        self.inner.executions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake(&self) {
        self.inner.wake.notify_one();
    }
}
