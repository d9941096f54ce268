//! The runs a worker executes shards of, each built once: the job read and
//! loaded, its plugins made (with their connection pools), its dead-letter
//! destination opened and its run settings derived, then shared by every
//! shard of the run that comes to this worker. One task per run watches the
//! run's state for all of them, as often as a lease is renewed.
//!
//! An entry leaves once its run is no longer running, or once no shard of
//! it has run here at two looks in a row; a later shard builds it again.
//! A job that cannot be built is not kept: each of its shards fails with
//! the reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haul_collect_core::assemble;
use haul_collect_core::deadletter::DeadLetters;
use haul_collect_core::registry::PluginRegistry;
use haul_collect_core::runtime::{Pipeline, RunSettings};
use haul_common::shutdown::CancellationToken;
use haul_register::limiter::Limiter;
use haul_register::{RunState, RunStatus, Store};
use tokio::sync::watch;

use crate::service::settings::stored_source;
use crate::service::{RateLimitOverrides, run_rate_limits};

/// A run built on this worker, shared by its shards here.
pub(super) struct PreparedRun {
    pub run: RunStatus,
    pub pipeline: Pipeline,
    pub settings: RunSettings,
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Cancelled once the run leaves the running state.
    pub halted: CancellationToken,
}

/// What a worker can do with a run's shards.
pub(super) enum Preparation {
    Ready(Arc<PreparedRun>),
    /// The run is paused, cancelled or over.
    NotRunning,
    /// The job cannot be built here, for this reason.
    Unbuildable(anyhow::Error),
}

/// How runs are built on a worker.
pub(super) struct RunBuilder {
    pub store: Arc<dyn Store>,
    pub plugins: Arc<PluginRegistry>,
    /// Where default dead-letter files go.
    pub state_dir: PathBuf,
    pub limiter: Arc<dyn Limiter>,
    pub rate_limits: watch::Receiver<RateLimitOverrides>,
    /// How often a run's state is looked at.
    pub watch_every: Duration,
}

/// The runs built on a worker, by run id; see the module documentation.
pub(super) struct PreparedRuns {
    builder: RunBuilder,
    runs: Mutex<HashMap<String, Arc<PreparedRun>>>,
}

impl PreparedRuns {
    pub fn new(builder: RunBuilder) -> Arc<Self> {
        Arc::new(PreparedRuns { builder, runs: Mutex::new(HashMap::new()) })
    }

    /// The run, built here once while it runs. An error means the store
    /// could not be read.
    pub async fn get(self: &Arc<Self>, run_id: &str) -> anyhow::Result<Preparation> {
        if let Some(prepared) = self.live(run_id) {
            return Ok(Preparation::Ready(prepared));
        }
        let run = self.builder.store.run_status(run_id).await?;
        if run.state != RunState::Running {
            return Ok(Preparation::NotRunning);
        }
        let prepared = match self.build(run).await? {
            Ok(prepared) => Arc::new(prepared),
            Err(error) => return Ok(Preparation::Unbuildable(error)),
        };
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another shard of the run may have built it meanwhile: one is kept.
        if let Some(kept) = runs.get(run_id).filter(|kept| !kept.halted.is_cancelled()) {
            return Ok(Preparation::Ready(kept.clone()));
        }
        runs.insert(run_id.to_string(), prepared.clone());
        tokio::spawn(self.clone().watch(prepared.clone()));
        Ok(Preparation::Ready(prepared))
    }

    /// The run's entry, unless it halted.
    fn live(&self, run_id: &str) -> Option<Arc<PreparedRun>> {
        let runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        runs.get(run_id).filter(|prepared| !prepared.halted.is_cancelled()).cloned()
    }

    /// Reads the run's job and builds it; the inner error says why it cannot be built.
    async fn build(&self, run: RunStatus) -> anyhow::Result<anyhow::Result<PreparedRun>> {
        let builder = &self.builder;
        let job = builder.store.job(&run.job).await?;
        if job.spec_hash != run.spec_hash {
            return Ok(Err(anyhow::anyhow!(
                "the job changed since the run was planned; retry the run to plan it again"
            )));
        }
        let built = assemble::load(stored_source(&job), &job.name, &builder.plugins).and_then(|loaded| {
            let dead_letters = assemble::dead_letters(&loaded, &builder.plugins, &builder.state_dir)?;
            Ok((loaded, dead_letters))
        });
        let (loaded, dead_letters) = match built {
            Ok(built) => built,
            Err(error) => return Ok(Err(error.into())),
        };
        let endpoint = loaded.pipeline.source.endpoint();
        let rate_limits = run_rate_limits(&builder.rate_limits, &run.job, &run.pool, endpoint, loaded.spec.rate_limit);
        let settings = RunSettings {
            limiter: builder.limiter.clone(),
            rate_limits,
            ..RunSettings::for_job(&loaded.spec, &run.id)
        };
        Ok(Ok(PreparedRun { run, pipeline: loaded.pipeline, settings, dead_letters, halted: CancellationToken::new() }))
    }

    /// Follows the run's state until it halts (then tells its shards) or no
    /// shard of it has run here at two looks in a row; then drops the entry.
    async fn watch(self: Arc<Self>, prepared: Arc<PreparedRun>) {
        let run_id = prepared.run.id.clone();
        let mut idle_looks = 0;
        loop {
            tokio::time::sleep(self.builder.watch_every).await;
            match self.builder.store.run_status(&run_id).await {
                Ok(run) if run.state != RunState::Running => {
                    tracing::info!(run_id, state = %run.state, "the run halted: stopping its shards");
                    prepared.halted.cancel();
                    self.forget(&prepared);
                    return;
                }
                Ok(_) => {}
                // A store outage is the ledgers' to ride out.
                Err(error) => tracing::debug!(run_id, error = %error, "checking the run's state failed"),
            }
            let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Held by the table and this task alone: no shard of it runs here. Shards
            // take their entry under the same lock, so none can start unwatched.
            idle_looks = if Arc::strong_count(&prepared) <= 2 { idle_looks + 1 } else { 0 };
            if idle_looks >= 2 {
                remove_if_same(&mut runs, &prepared);
                return;
            }
        }
    }

    fn forget(&self, prepared: &Arc<PreparedRun>) {
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        remove_if_same(&mut runs, prepared);
    }
}

/// Removes the run's entry if it is still `prepared` (not a rebuilt one).
fn remove_if_same(runs: &mut HashMap<String, Arc<PreparedRun>>, prepared: &Arc<PreparedRun>) {
    if runs.get(&prepared.run.id).is_some_and(|entry| Arc::ptr_eq(entry, prepared)) {
        runs.remove(&prepared.run.id);
    }
}
