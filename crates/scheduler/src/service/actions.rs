//! What operators ask of the platform, through the REST API and the CLI:
//! submit and manage jobs, trigger, pause, resume, cancel and retry runs,
//! backfill past intervals, and look at runs with their live progress.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use haul_collect_core::assemble;
use haul_collect_core::job::JobSource;
use haul_collect_core::progress::{ShardCounters, ShardPhase};
use haul_register::{Event, JobRecord, QueuedRun, RunFilter, RunRecord, RunRequest, RunState, RunTrigger, ShardRecord};
use serde::{Deserialize, Serialize};

use super::settings::JobSettings;
use super::{Platform, PlatformError};
use crate::dag::DependencyGraph;

/// The language a submitted job spec is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecFormat {
    /// A job file, as `haul run` reads it.
    #[default]
    Toml,
    /// The same structure in JSON.
    Json,
}

/// A run asked for by hand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Collect only `[from, to)` on the job's range field or incremental cursor.
    pub range: Option<RequestedRange>,
    /// Overrides the job's priority for this run.
    pub priority: Option<i32>,
}

/// `[from, to)` bounds asked for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedRange {
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

/// Runs over past intervals: one per schedule interval (or per `every`) in `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backfill {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The interval length for a job without a cron schedule.
    pub every: Option<Duration>,
    /// How many of the backfill's runs may run at once.
    pub concurrency: usize,
}

/// A run with its shards and history.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    pub run: RunRecord,
    pub shards: Vec<ShardView>,
    pub events: Vec<Event>,
}

/// A shard as stored, with its live counters while it executes here.
#[derive(Debug, Clone, Serialize)]
pub struct ShardView {
    #[serde(flatten)]
    pub record: ShardRecord,
    /// Counters including work not yet checkpointed; `None` when the run does not execute here.
    pub live: Option<ShardCounters>,
    pub phase: Option<ShardPhase>,
}

impl Platform {
    /// Validates a job spec exactly as `haul run` would (plugins built,
    /// errors located), checks its dependencies form a DAG of known jobs,
    /// and stores it. Returns the job and whether it is new.
    pub async fn apply_job(&self, text: &str, format: SpecFormat) -> Result<(JobRecord, bool), PlatformError> {
        let source = submitted_source(text, format)?;
        let settings = JobSettings::parse(&source, "")?;
        let name = settings.name().to_string();
        if name.is_empty() {
            return Err(PlatformError::Invalid("a job submitted to the server needs a `name`".into()));
        }
        assemble::load(source.clone(), &name, &self.inner.registry)?;
        let store = &self.inner.store;
        let mut edges: HashMap<String, Vec<String>> = HashMap::new();
        for job in store.jobs().await? {
            if job.name != name
                && let Ok(existing) = self.inner.settings.get(&job)
            {
                edges.insert(job.name.clone(), existing.spec.platform.depends_on.clone());
            }
        }
        edges.insert(name.clone(), settings.spec.platform.depends_on.clone());
        DependencyGraph::build(edges).map_err(|error| PlatformError::Invalid(error.to_string()))?;
        let created = matches!(store.job(&name).await, Err(haul_register::Error::NotFound { .. }));
        let job = store.put_job(&name, &source.text, &source.fingerprint()).await?;
        self.wake();
        Ok((job, created))
    }

    pub async fn jobs(&self) -> Result<Vec<JobRecord>, PlatformError> {
        Ok(self.inner.store.jobs().await?)
    }

    pub async fn job(&self, name: &str) -> Result<JobRecord, PlatformError> {
        Ok(self.inner.store.job(name).await?)
    }

    pub async fn set_job_enabled(&self, name: &str, enabled: bool) -> Result<JobRecord, PlatformError> {
        self.inner.store.set_job_enabled(name, enabled).await?;
        self.wake();
        self.job(name).await
    }

    /// Deletes a job that no other job depends on; its queued runs are cancelled.
    pub async fn delete_job(&self, name: &str) -> Result<(), PlatformError> {
        let store = &self.inner.store;
        store.job(name).await?;
        let dependents: Vec<String> = store
            .jobs()
            .await?
            .iter()
            .filter_map(|job| self.inner.settings.get(job).ok().map(|settings| (job.name.clone(), settings)))
            .filter(|(_, settings)| settings.spec.platform.depends_on.iter().any(|up| up == name))
            .map(|(job, _)| job)
            .collect();
        if !dependents.is_empty() {
            return Err(PlatformError::Conflict(format!("job {name} is a dependency of {}", dependents.join(", "))));
        }
        let queued = RunFilter { job: Some(name.into()), states: vec![RunState::Pending], ..Default::default() };
        for run in store.runs(&queued).await? {
            store.set_run_state(&run.id, RunState::Cancelled, "the job was deleted").await?;
        }
        store.delete_job(name).await?;
        Ok(())
    }

    /// Queues a run of `job` now; it starts at the next tick its policies allow.
    pub async fn trigger(&self, job: &str, request: TriggerRequest) -> Result<RunRecord, PlatformError> {
        let record = self.inner.store.job(job).await?;
        let settings = self.inner.settings.get(&record)?;
        let params = request.range.map(|range| serde_json::json!({ "range": range }));
        let run_request = RunRequest {
            trigger: RunTrigger::Manual,
            priority: request.priority.unwrap_or(settings.spec.platform.priority),
            pool: settings.spec.platform.pool.clone(),
            params,
            ..Default::default()
        };
        self.queue(&record, &settings, run_request).await
    }

    /// Queues one run per interval of `[from, to)`: the job's schedule
    /// intervals, or `every`. Submitting the same backfill again returns the
    /// same runs.
    pub async fn backfill(&self, job: &str, backfill: Backfill) -> Result<Vec<RunRecord>, PlatformError> {
        let record = self.inner.store.job(job).await?;
        let settings = self.inner.settings.get(&record)?;
        let intervals = match (&settings.cron, backfill.every) {
            (_, Some(every)) => crate::backfill::fixed_intervals(every, backfill.from, backfill.to),
            (Some(cron), None) => crate::backfill::intervals(cron, backfill.from, backfill.to),
            (None, None) => {
                return Err(PlatformError::Invalid(format!(
                    "job {job} has no cron schedule: give the interval length (`every`)"
                )));
            }
        }
        .map_err(|error| PlatformError::Invalid(error.to_string()))?;
        let mut runs = Vec::with_capacity(intervals.len());
        for interval in intervals {
            let range = serde_json::json!({ "from": interval.start.to_rfc3339(), "to": interval.end.to_rfc3339() });
            let request = RunRequest {
                trigger: RunTrigger::Backfill,
                scheduled_for: Some(interval.start),
                priority: settings.spec.platform.priority,
                pool: settings.spec.platform.pool.clone(),
                params: Some(serde_json::json!({ "range": range, "concurrency": backfill.concurrency.max(1) })),
                ..Default::default()
            };
            runs.push(self.queue(&record, &settings, request).await?);
        }
        Ok(runs)
    }

    async fn queue(
        &self,
        job: &JobRecord,
        settings: &JobSettings,
        request: RunRequest,
    ) -> Result<RunRecord, PlatformError> {
        let queued =
            QueuedRun { job: job.name.clone(), spec_hash: job.spec_hash.clone(), mode: settings.spec.mode, request };
        let (run, _) = self.inner.store.enqueue_run(queued).await?;
        self.wake();
        Ok(run)
    }

    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, PlatformError> {
        Ok(self.inner.store.runs(filter).await?)
    }

    pub async fn run_detail(&self, run_id: &str) -> Result<RunDetail, PlatformError> {
        let store = &self.inner.store;
        let run = store.run(run_id).await?;
        let records = store.shards(run_id).await?;
        let live: HashMap<String, (ShardCounters, ShardPhase)> = self
            .executions()
            .get(run_id)
            .map(|execution| {
                let shards = execution.progress.shards.iter();
                shards.map(|shard| (shard.id.clone(), (shard.counters(), shard.phase()))).collect()
            })
            .unwrap_or_default();
        let shards = records
            .into_iter()
            .map(|record| {
                let live = live.get(&record.spec.id);
                ShardView { live: live.map(|(counters, _)| *counters), phase: live.map(|(_, phase)| *phase), record }
            })
            .collect();
        Ok(RunDetail { run, shards, events: store.events(run_id).await? })
    }

    pub async fn shard(&self, run_id: &str, shard_id: &str) -> Result<ShardView, PlatformError> {
        let detail = self.run_detail(run_id).await?;
        detail
            .shards
            .into_iter()
            .find(|shard| shard.record.spec.id == shard_id)
            .ok_or_else(|| PlatformError::NotFound(format!("shard {shard_id} of run {run_id}")))
    }

    /// Pauses a running run: its shards commit, checkpoint and stop at their next batch boundary.
    pub async fn pause(&self, run_id: &str) -> Result<RunRecord, PlatformError> {
        self.inner.store.set_run_state(run_id, RunState::Paused, "paused by request").await?;
        self.stop_execution(run_id);
        Ok(self.inner.store.run(run_id).await?)
    }

    /// Resumes a paused run from its checkpoints.
    pub async fn resume(&self, run_id: &str) -> Result<RunRecord, PlatformError> {
        let run = self.inner.store.run(run_id).await?;
        if run.state != RunState::Paused {
            return Err(PlatformError::Conflict(format!("run {run_id} is {}, not paused", run.state)));
        }
        self.inner.store.set_run_state(run_id, RunState::Running, "resumed by request").await?;
        self.wake();
        Ok(self.inner.store.run(run_id).await?)
    }

    pub async fn cancel(&self, run_id: &str) -> Result<RunRecord, PlatformError> {
        self.cancel_active(run_id, "cancelled by request").await?;
        Ok(self.inner.store.run(run_id).await?)
    }

    /// Tries a failed run again: only its failed shards, from their
    /// checkpoints; or with `whole`, as a new run of the same request.
    pub async fn retry(&self, run_id: &str, whole: bool) -> Result<RunRecord, PlatformError> {
        let store = &self.inner.store;
        let run = store.run(run_id).await?;
        if run.state != RunState::Failed && !(whole && run.state.is_terminal()) {
            return Err(PlatformError::Conflict(format!("run {run_id} is {}, not failed", run.state)));
        }
        if !whole {
            store.retry_run(run_id, "retried by request").await?;
            self.wake();
            return Ok(store.run(run_id).await?);
        }
        let job = store.job(&run.job).await?;
        let settings = self.inner.settings.get(&job)?;
        let request = RunRequest { trigger: RunTrigger::Manual, scheduled_for: None, attempt: 1, ..run.request };
        self.queue(&job, &settings, request).await
    }
}

/// The concurrency a backfill run was queued with.
pub(super) fn backfill_concurrency(run: &RunRecord) -> usize {
    let params = run.request.params.as_ref();
    params.and_then(|p| p.get("concurrency")).and_then(|c| c.as_u64()).map_or(1, |c| c.max(1) as usize)
}

/// A submitted spec as job-file text: JSON is rewritten as TOML, so both are
/// stored, validated and shown the same way.
fn submitted_source(text: &str, format: SpecFormat) -> Result<JobSource, PlatformError> {
    match format {
        SpecFormat::Toml => Ok(JobSource::new("submitted job", text)),
        SpecFormat::Json => {
            let value: toml::Value = serde_json::from_str(text)
                .map_err(|error| PlatformError::Invalid(format!("submitted job: invalid JSON: {error}")))?;
            let toml_text = toml::to_string(&value)
                .map_err(|error| PlatformError::Invalid(format!("submitted job: not a job object: {error}")))?;
            Ok(JobSource::new("submitted job", toml_text))
        }
    }
}
