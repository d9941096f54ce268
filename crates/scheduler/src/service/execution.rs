//! Runs executing under this scheduler. In the embedded mode each is the
//! pipeline runtime over the run's shards, with a [`DispatchLedger`] that
//! makes every shard wait for a worker slot and then claim its lease; in the
//! distributed mode remote workers run the shards and the leader follows them
//! (see [`super::remote`]). When the execution ends, the run's end is
//! recorded — unless the run was stopped on purpose (pause, cancel, timeout,
//! shutdown), whose state the stopper has set or leaves for the next start.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use haul_collect_core::ShardSpec;
use haul_collect_core::assemble::{self, LoadedJob};
use haul_collect_core::progress::RunProgress;
use haul_collect_core::runtime::{RunOutcome, RunSettings, execute};
use haul_common::shutdown::CancellationToken;
use haul_register::RunRecord;
use haul_register::ledger::StoreLedger;
use tracing::Instrument;

use super::Platform;
use super::ledger::{DispatchLedger, ShardTicket};
use super::rate_limit::run_rate_limits;
use crate::lifecycle;

/// A run executing here.
pub(super) struct Execution {
    /// Cancelled to stop the run at its next batch boundary.
    pub stop: CancellationToken,
    pub progress: Arc<RunProgress>,
    /// When the run's timeout cancels it, by the service's clock.
    pub deadline: Option<DateTime<Utc>>,
}

impl Platform {
    /// Starts executing a running run, unless it executes here already.
    pub(super) async fn launch(&self, run: RunRecord, job: LoadedJob) -> anyhow::Result<()> {
        let inner = &self.inner;
        let (shards, progress) = lifecycle::progress_of(&inner.store.shards(&run.id).await?);
        let stop = inner.shutdown.child_token();
        let deadline = job
            .spec
            .platform
            .timeout
            .and_then(|timeout| chrono::Duration::from_std(timeout.0).ok())
            .map(|timeout| inner.clock.now() + timeout);
        {
            let mut executions = self.executions();
            if executions.contains_key(&run.id) {
                return Ok(());
            }
            let execution = Execution { stop: stop.clone(), progress: progress.clone(), deadline };
            executions.insert(run.id.clone(), execution);
        }
        let source = job.pipeline.source.clone();
        tracing::info!(run_id = %run.id, job = %run.job, shards = shards.len(), "run executing");
        metrics::gauge!("haul_runs_executing").increment(1.0);

        let platform = self.clone();
        let span = tracing::info_span!("run", run_id = %run.id, job = %run.job);
        let execution = async move {
            let outcome = match platform.inner.config.remote_workers.clone() {
                Some(dispatcher) => {
                    platform.drive_remote_run(run.clone(), job, dispatcher, progress, stop.clone()).await
                }
                None => platform.execute_here(&run, job, shards, progress, stop.clone()).await,
            };
            if !stop.is_cancelled() {
                match lifecycle::finish_run(platform.inner.store.as_ref(), source.as_ref(), &run, &outcome).await {
                    Ok(Some(state)) => {
                        tracing::info!(run_id = %run.id, job = %run.job, state = %state, "run ended");
                        metrics::counter!("haul_runs_finished_total", "job" => run.job.clone(), "state" => state.as_str())
                            .increment(1);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(run_id = %run.id, error = %format!("{error:#}"), "recording the end of a run failed")
                    }
                }
            }
            platform.executions().remove(&run.id);
            metrics::gauge!("haul_runs_executing").decrement(1.0);
            platform.wake();
        };
        tokio::spawn(execution.instrument(span));
        Ok(())
    }

    /// Executes the run's shards in this process, on the embedded worker slots.
    async fn execute_here(
        &self,
        run: &RunRecord,
        job: LoadedJob,
        shards: Vec<ShardSpec>,
        progress: Arc<RunProgress>,
        stop: CancellationToken,
    ) -> RunOutcome {
        let inner = &self.inner;
        let dead_letters = match assemble::dead_letters(&job, &inner.registry, &inner.config.state_dir) {
            Ok(dead_letters) => dead_letters,
            Err(error) => return RunOutcome::Failed(vec![error.to_string()]),
        };
        let store_ledger = StoreLedger::new(inner.store.clone(), &run.id, &inner.config.owner, inner.config.lease_ttl);
        let ticket = ShardTicket::of(run, &job);
        let ledger = Arc::new(DispatchLedger::new(store_ledger, inner.dispatcher.clone(), ticket, stop.clone()));
        let endpoint = job.pipeline.source.endpoint();
        let rate_limits =
            run_rate_limits(&inner.config.rate_limits, &run.job, &run.request.pool, endpoint, job.spec.rate_limit);
        let settings = RunSettings {
            limiter: inner.config.limiter.clone(),
            rate_limits,
            ..RunSettings::for_job(&job.spec, &run.id)
        };
        let report = execute(job.pipeline, settings, shards, ledger, dead_letters, progress, stop).await;
        let totals = report.totals;
        let labels = [("job", run.job.clone())];
        metrics::counter!("haul_records_read_total", &labels).increment(totals.records_read);
        metrics::counter!("haul_records_written_total", &labels).increment(totals.records_written);
        metrics::counter!("haul_records_rejected_total", &labels).increment(totals.records_rejected);
        metrics::counter!("haul_bytes_read_total", &labels).increment(totals.bytes_read);
        report.outcome
    }

    /// Stops a run's execution here, if any, at its next batch boundary.
    pub(super) fn stop_execution(&self, run_id: &str) {
        if let Some(execution) = self.executions().get(run_id) {
            execution.stop.cancel();
        }
    }
}
