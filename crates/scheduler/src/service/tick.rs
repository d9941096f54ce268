//! One pass of the scheduler; see the module documentation of
//! [`crate::service`] for what a tick does, in order.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use haul_collect_core::PlanContext;
use haul_collect_core::assemble;
use haul_collect_core::job::{Mode, RangeBounds};
use haul_register::{JobRecord, QueuedRun, RunFilter, RunRecord, RunRequest, RunState, RunTrigger};

use super::settings::{JobSettings, stored_source};
use super::{Platform, PlatformError};
use crate::dag::{self, DependencyGraph, Readiness, UpstreamState};
use crate::overlap::{self, OverlapDecision};

/// The jobs of one tick, with their parsed settings.
struct Jobs {
    by_name: HashMap<String, (JobRecord, Arc<JobSettings>)>,
    graph: DependencyGraph,
}

impl Platform {
    /// Runs one scheduling pass at the clock's current time; returns the
    /// next schedule time of any job, when the next pass should happen. A
    /// pass does nothing on an instance that does not lead.
    pub async fn tick(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let _serial = self.inner.ticking.lock().await;
        if !self.is_leader() {
            return Ok(None);
        }
        let now = self.inner.clock.now();
        let jobs = self.load_jobs().await?;
        let next_fire = self.fire_schedules(&jobs, now).await?;
        self.start_ready_runs(&jobs).await?;
        self.resume_unowned_runs(&jobs).await?;
        self.enforce_timeouts(now).await?;
        self.retry_failed_runs(&jobs, now).await?;
        let load = self.inner.dispatcher.load();
        metrics::gauge!("haul_shards_running").set(load.busy as f64);
        metrics::gauge!("haul_shards_waiting").set(load.waiting as f64);
        Ok(next_fire)
    }

    async fn load_jobs(&self) -> anyhow::Result<Jobs> {
        let mut by_name = HashMap::new();
        for job in self.inner.store.jobs().await? {
            match self.inner.settings.get(&job) {
                Ok(settings) => {
                    by_name.insert(job.name.clone(), (job, settings));
                }
                Err(error) => tracing::error!(job = %job.name, error = %error, "a stored job does not parse"),
            }
        }
        let edges = by_name.values().map(|(job, settings)| {
            let upstream = settings.spec.platform.depends_on.iter().filter(|up| by_name.contains_key(*up)).cloned();
            (job.name.clone(), upstream.collect())
        });
        let graph = DependencyGraph::build(edges.collect::<Vec<_>>())?;
        Ok(Jobs { by_name, graph })
    }

    /// Queues a run for every due schedule time; returns the earliest
    /// schedule time still to come.
    async fn fire_schedules(&self, jobs: &Jobs, now: DateTime<Utc>) -> anyhow::Result<Option<DateTime<Utc>>> {
        let store = &self.inner.store;
        let mut next_fire: Option<DateTime<Utc>> = None;
        for (job, settings) in jobs.by_name.values().filter(|(job, _)| job.enabled) {
            let (Some(schedule), Some(cron)) = (&settings.schedule, &settings.cron) else { continue };
            let due = crate::cron::due(
                cron,
                schedule.misfire,
                job.planned_through,
                job.created_at,
                now,
                self.inner.config.misfire_grace,
            );
            if due.missed > 0 {
                tracing::warn!(job = %job.name, missed = due.missed, policy = ?schedule.misfire, "schedule times missed while the scheduler was away");
                metrics::counter!("haul_schedule_misfires_total", "job" => job.name.clone())
                    .increment(u64::from(due.missed));
            }
            if let Some(at) = due.fire {
                let lag = (now - at).to_std().unwrap_or_default();
                metrics::histogram!("haul_scheduler_lag_seconds").record(lag.as_secs_f64());
                self.queue_scheduled(jobs, &job.name, at).await?;
            }
            if Some(due.planned_through) != job.planned_through {
                store.set_planned_through(&job.name, due.planned_through).await?;
            }
            if let Some(next) = cron.next_after(now) {
                next_fire = Some(next_fire.map_or(next, |earliest| earliest.min(next)));
            }
        }
        Ok(next_fire)
    }

    /// Queues a scheduled run of `job` for `at`, and of every downstream job
    /// without a cron of its own, transitively.
    async fn queue_scheduled(&self, jobs: &Jobs, job: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
        let mut to_queue = vec![job.to_string()];
        while let Some(name) = to_queue.pop() {
            let Some((record, settings)) = jobs.by_name.get(&name) else { continue };
            let request = RunRequest {
                trigger: RunTrigger::Schedule,
                scheduled_for: Some(at),
                priority: settings.spec.platform.priority,
                pool: settings.spec.platform.pool.clone(),
                ..Default::default()
            };
            let queued =
                QueuedRun { job: name.clone(), spec_hash: record.spec_hash.clone(), mode: settings.spec.mode, request };
            let (run, created) = self.inner.store.enqueue_run(queued).await?;
            if created {
                tracing::info!(job = %name, run_id = %run.id, scheduled_for = %at, "scheduled run queued");
            }
            for downstream in jobs.graph.downstream(&name) {
                let follows = jobs.by_name.get(downstream).is_some_and(|(downstream_job, downstream_settings)| {
                    downstream_job.enabled && downstream_settings.cron.is_none()
                });
                if follows {
                    to_queue.push(downstream.to_string());
                }
            }
        }
        Ok(())
    }

    /// Starts the pending runs that may start, higher priority and older first.
    async fn start_ready_runs(&self, jobs: &Jobs) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let mut pending = store.runs(&RunFilter { states: vec![RunState::Pending], ..Default::default() }).await?;
        pending.reverse();
        pending.sort_by_key(|run| std::cmp::Reverse(run.request.priority));
        let active = RunFilter { states: vec![RunState::Running, RunState::Paused], ..Default::default() };
        let mut active_by_job: HashMap<String, Vec<RunRecord>> = HashMap::new();
        let mut by_state: HashMap<RunState, usize> = HashMap::from([(RunState::Pending, pending.len())]);
        for run in store.runs(&active).await? {
            *by_state.entry(run.state).or_default() += 1;
            active_by_job.entry(run.job.clone()).or_default().push(run);
        }
        for state in [RunState::Pending, RunState::Running, RunState::Paused] {
            let count = by_state.get(&state).copied().unwrap_or_default();
            metrics::gauge!("haul_runs", "state" => state.as_str()).set(count as f64);
        }

        for run in pending {
            let Some((job, settings)) = jobs.by_name.get(&run.job) else {
                // The job may have been applied (and this run triggered) after
                // the jobs were read: only a job gone from the store cancels it.
                match store.job(&run.job).await {
                    Err(haul_register::Error::NotFound { .. }) => {
                        store.set_run_state(&run.id, RunState::Cancelled, "the job was deleted").await?
                    }
                    Ok(_) => {}
                    Err(error) => return Err(error.into()),
                }
                continue;
            };
            if !self.upstream_allows(jobs, settings, &run).await? {
                continue;
            }
            let active = active_by_job.entry(run.job.clone()).or_default();
            match start_decision(settings, &run, active) {
                OverlapDecision::Queue => continue,
                OverlapDecision::Skip => {
                    let previous = active.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ");
                    let reason = format!("skipped: run {previous} of the job is still active");
                    store.set_run_state(&run.id, RunState::Cancelled, &reason).await?;
                    continue;
                }
                OverlapDecision::CancelPreviousThenStart => {
                    for previous in active.drain(..) {
                        let reason = format!("cancelled: the newer scheduled run {} replaces it", run.id);
                        self.cancel_active(&previous.id, &reason).await?;
                    }
                }
                OverlapDecision::Start => {}
            }
            match self.start_run(job, &run).await {
                Ok(started) => active.push(started),
                Err(error) => {
                    let reason = format!("cannot start: {error:#}");
                    tracing::warn!(run_id = %run.id, job = %run.job, reason, "run failed to start");
                    store.set_run_state(&run.id, RunState::Failed, &reason).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether the run's upstream runs for the same schedule time let it
    /// start; cancels it when a failed upstream skips it.
    async fn upstream_allows(&self, jobs: &Jobs, settings: &JobSettings, run: &RunRecord) -> anyhow::Result<bool> {
        let upstream = jobs.graph.upstream(&run.job);
        let Some(at) = run.request.scheduled_for.filter(|_| !upstream.is_empty()) else { return Ok(true) };
        let mut states = Vec::with_capacity(upstream.len());
        for job in upstream {
            let filter =
                RunFilter { job: Some(job.clone()), scheduled_for: Some(at), limit: Some(1), ..Default::default() };
            let latest = self.inner.store.runs(&filter).await?.into_iter().next();
            states.push((job.clone(), latest.map(|r| upstream_state(r.state))));
        }
        let policy = settings.schedule.as_ref().map(|s| s.on_upstream_failure).unwrap_or_default();
        Ok(match dag::readiness(&states, policy) {
            Readiness::Ready => true,
            Readiness::Waiting { .. } | Readiness::Blocked { .. } => false,
            Readiness::Skip { failed } => {
                let reason = format!("skipped: upstream {} did not succeed", failed.join(", "));
                self.inner.store.set_run_state(&run.id, RunState::Cancelled, &reason).await?;
                false
            }
        })
    }

    /// Plans a pending run from the job's current spec and state, and executes it.
    async fn start_run(&self, job: &JobRecord, run: &RunRecord) -> anyhow::Result<RunRecord> {
        let inner = &self.inner;
        let loaded = assemble::load(stored_source(job), &job.name, &inner.registry)?;
        let spec = &loaded.spec;
        let range = requested_range(run, spec)?;
        let context = PlanContext {
            mode: if range.is_some() { Mode::Range } else { spec.mode },
            incremental: spec.incremental.clone(),
            previous_state: inner.store.job_state(&job.name).await?,
            range: range.or_else(|| spec.range.clone()),
            parallelism: spec.parallelism,
        };
        let plan = loaded.pipeline.source.plan(&context).await?;
        let started = inner.store.start_run(&run.id, &job.spec_hash, &plan).await?;
        tracing::info!(run_id = %run.id, job = %job.name, shards = plan.shards.len(), "run started");
        self.launch(started.clone(), loaded).await?;
        Ok(started)
    }

    /// Executes the running runs that no execution here owns: after a
    /// restart, or once resumed.
    async fn resume_unowned_runs(&self, jobs: &Jobs) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let running = store.runs(&RunFilter { states: vec![RunState::Running], ..Default::default() }).await?;
        for run in running {
            if self.executions().contains_key(&run.id) {
                continue;
            }
            let failure = match jobs.by_name.get(&run.job) {
                None => Some("the job was deleted".to_string()),
                Some((job, _)) if job.spec_hash != run.spec_hash => {
                    Some("the job changed since the run was planned; retry the run to plan it again".to_string())
                }
                Some((job, _)) => match assemble::load(stored_source(job), &job.name, &self.inner.registry) {
                    Ok(loaded) => {
                        tracing::info!(run_id = %run.id, job = %run.job, "resuming run from its checkpoints");
                        self.launch(run.clone(), loaded).await.err().map(|error| format!("{error:#}"))
                    }
                    Err(error) => Some(error.to_string()),
                },
            };
            if let Some(reason) = failure {
                store.set_run_state(&run.id, RunState::Failed, &format!("cannot resume: {reason}")).await?;
            }
        }
        Ok(())
    }

    /// Cancels the runs executing past their deadline.
    async fn enforce_timeouts(&self, now: DateTime<Utc>) -> anyhow::Result<()> {
        let expired: Vec<(String, DateTime<Utc>)> = self
            .executions()
            .iter()
            .filter_map(|(run_id, execution)| execution.deadline.filter(|d| *d <= now).map(|d| (run_id.clone(), d)))
            .collect();
        for (run_id, _) in expired {
            self.cancel_active(&run_id, "timed out").await?;
        }
        Ok(())
    }

    /// Retries failed runs whose job allows more attempts, once their backoff has passed.
    async fn retry_failed_runs(&self, jobs: &Jobs, now: DateTime<Utc>) -> anyhow::Result<()> {
        let filter = RunFilter { states: vec![RunState::Failed], limit: Some(200), ..Default::default() };
        for run in self.inner.store.runs(&filter).await? {
            let Some((_, settings)) = jobs.by_name.get(&run.job) else { continue };
            let Some(failed_at) = run.finished_at else { continue };
            let Some(at) = crate::retry::next_attempt_at(&settings.run_retry, run.request.attempt, failed_at) else {
                continue;
            };
            if at <= now {
                let reason = format!("retry {} of {}", run.request.attempt, settings.run_retry.attempts);
                self.inner.store.retry_run(&run.id, &reason).await?;
                tracing::info!(run_id = %run.id, job = %run.job, reason, "retrying failed run");
            }
        }
        Ok(())
    }

    /// Cancels a run that is active here or elsewhere, stopping its execution.
    pub(super) async fn cancel_active(&self, run_id: &str, reason: &str) -> Result<(), PlatformError> {
        self.inner.store.set_run_state(run_id, RunState::Cancelled, reason).await?;
        self.stop_execution(run_id);
        Ok(())
    }
}

/// What a pending run's job allows while `active` runs of it go on.
fn start_decision(settings: &JobSettings, run: &RunRecord, active: &[RunRecord]) -> OverlapDecision {
    let policy = settings.schedule.as_ref().map(|s| s.overlap).unwrap_or_default();
    match run.request.trigger {
        RunTrigger::Schedule => {
            let scheduled = active.iter().filter(|r| r.request.trigger != RunTrigger::Backfill).count();
            overlap::decide(policy, scheduled)
        }
        RunTrigger::Backfill => {
            let running = active.iter().filter(|r| r.request.trigger == RunTrigger::Backfill).count();
            let limit = super::actions::backfill_concurrency(run);
            if running < limit { OverlapDecision::Start } else { OverlapDecision::Queue }
        }
        // Asked for by hand: never dropped, queued behind active runs unless the job allows overlap.
        RunTrigger::Manual | RunTrigger::Retry => match overlap::decide(policy, active.len()) {
            OverlapDecision::Start => OverlapDecision::Start,
            _ => OverlapDecision::Queue,
        },
    }
}

fn upstream_state(state: RunState) -> UpstreamState {
    match state {
        RunState::Succeeded => UpstreamState::Succeeded,
        RunState::Failed => UpstreamState::Failed,
        RunState::Cancelled => UpstreamState::Skipped,
        RunState::Pending | RunState::Running | RunState::Paused => UpstreamState::Active,
    }
}

/// The `[from, to)` bounds a run was asked for, on the job's range field or
/// incremental cursor.
fn requested_range(
    run: &RunRecord,
    spec: &haul_collect_core::job::JobSpec,
) -> Result<Option<RangeBounds>, PlatformError> {
    let Some(range) = run.request.params.as_ref().and_then(|params| params.get("range")) else { return Ok(None) };
    let (Some(from), Some(to)) = (range.get("from"), range.get("to")) else {
        return Err(PlatformError::Invalid("a run's range needs `from` and `to`".into()));
    };
    let field = spec.range.as_ref().and_then(|r| r.field.clone()).or_else(|| spec.incremental.cursor.clone());
    Ok(Some(RangeBounds { field, from: from.clone(), to: to.clone() }))
}

#[cfg(test)]
mod tests {
    use haul_collect_core::registry::PluginRegistry;
    use haul_common::clock::ManualClock;
    use haul_common::shutdown::CancellationToken;
    use haul_register::{SqliteStore, Store};

    use super::*;
    use crate::service::{ServiceConfig, SpecFormat};

    /// A tick reads the jobs, then the pending runs: a job applied and run in
    /// between looks deleted to it, and only a job gone from the store may
    /// cancel its runs.
    #[tokio::test]
    async fn only_a_job_gone_from_the_store_cancels_its_pending_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("server.db")).await.unwrap());
        let mut registry = PluginRegistry::default();
        haul_collect::register_builtin(&mut registry);
        let config = ServiceConfig { state_dir: dir.path().join("state"), ..Default::default() };
        let shutdown = CancellationToken::new();
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let platform = Platform::new(store.clone(), Arc::new(registry), clock, config, shutdown.clone()).await.unwrap();

        let jobs_read_first = platform.load_jobs().await.unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, "{\"id\":1}\n").unwrap();
        let spec = format!(
            "name = \"late\"\n\n[source]\ntype = \"file\"\npath = \"{}\"\n\n[sink]\ntype = \"stdout\"\n",
            input.display()
        );
        let (late, _) = platform.apply_job(&spec, SpecFormat::Toml).await.unwrap();
        let queue = |job: &str, spec_hash: &str| QueuedRun {
            job: job.to_string(),
            spec_hash: spec_hash.to_string(),
            mode: Mode::Full,
            request: RunRequest::default(),
        };
        let (kept, _) = store.enqueue_run(queue("late", &late.spec_hash)).await.unwrap();
        let (orphan, _) = store.enqueue_run(queue("gone", "hash")).await.unwrap();

        platform.start_ready_runs(&jobs_read_first).await.unwrap();
        assert_eq!(store.run(&kept.id).await.unwrap().state, RunState::Pending, "a job applied meanwhile");
        let orphan = store.run(&orphan.id).await.unwrap();
        assert_eq!((orphan.state, orphan.message.as_deref()), (RunState::Cancelled, Some("the job was deleted")));
        shutdown.cancel();
    }
}
