//! The API's wire types: what the endpoints answer and the bodies they take,
//! with their OpenAPI schemas. The store's records convert into them here, so
//! the store knows nothing of the API; the CLI client reads the same types
//! back, so both ends of the wire share one definition.

use std::time::Duration;

use chrono::{DateTime, Utc};
use haul_collect_core::job::Mode;
use haul_collect_core::progress::{ShardCounters, ShardPhase};
use haul_common::duration::HumanDuration;
use haul_register::{Event as StoredEvent, JobRecord, RunRecord, RunState, RunTrigger, ShardState};
use haul_scheduler::service::{self, RequestedRange, ShardView, TriggerRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};

use super::error::ApiError;

/// A job as the server keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub name: String,
    /// Disabled jobs are not scheduled; they can still be run by hand.
    pub enabled: bool,
    /// Counts the updates of the spec, from 1.
    pub version: u64,
    /// Hash of the stored spec; runs record the spec they were planned from.
    pub spec_hash: String,
    /// The latest schedule time the scheduler has dealt with (fired or skipped).
    pub planned_through: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A job with its spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    /// The job file's TOML text, as submitted (JSON submissions are stored as TOML).
    pub spec: String,
}

/// One execution of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    /// A UUIDv7.
    pub id: String,
    pub job: String,
    #[schema(schema_with = run_state_schema)]
    pub state: RunState,
    /// The reason given for the latest state change.
    pub message: Option<String>,
    #[schema(schema_with = mode_schema)]
    pub mode: Mode,
    /// What created the run.
    #[schema(schema_with = trigger_schema)]
    pub trigger: RunTrigger,
    /// The schedule time (or backfill interval start) the run is for.
    pub scheduled_for: Option<DateTime<Utc>>,
    pub priority: i32,
    /// The quota group the run's shards count against.
    pub pool: String,
    /// Overrides given when the run was asked for, e.g. `{"range": {"from": …, "to": …}}`.
    pub params: Option<Value>,
    /// 1 for the first try; retries count up.
    pub attempt: u32,
    /// Hash of the job spec the run was planned from.
    pub spec_hash: String,
    /// The job state (incremental cursor) this run reaches; it becomes the job's when the run succeeds.
    pub next_job_state: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A run with its shards, their progress and errors, and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    /// The shards' counters added up, live ones where the run executes on this server.
    pub totals: Counters,
    pub shards: Vec<Shard>,
    /// Every state a run or shard entered, oldest first, with its reason.
    pub events: Vec<Event>,
}

/// What a shard has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Counters {
    pub records_read: u64,
    pub records_written: u64,
    pub records_rejected: u64,
    pub bytes_read: u64,
}

/// One unit of a run: a file, a key range, a page span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Shard {
    /// Unique within its run.
    pub id: String,
    pub run_id: String,
    #[schema(schema_with = shard_state_schema)]
    pub state: ShardState,
    /// What the source planned; understood only by that source.
    pub descriptor: Value,
    /// Counters up to the last checkpoint.
    pub counters: Counters,
    /// Counters including work not yet checkpointed; absent when the run does not execute on this server.
    pub live: Option<Counters>,
    /// Where the shard is in its execution on this server.
    pub phase: Option<Phase>,
    /// The position up to which data is durably in the sink.
    pub checkpoint: Option<Value>,
    /// The commit sequence of the last checkpoint (0 before the first).
    pub sequence: u64,
    /// The fencing token of the current or last lease.
    pub epoch: u64,
    /// The holder of the current or last lease.
    pub owner: Option<String>,
    /// Why the shard failed, when it did.
    pub error: Option<String>,
}

/// Where an executing shard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Queued,
    Running,
    Retrying,
    Done,
    Stopped,
    Failed,
}

/// One line of a run's history: the run or a shard entering a state, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// The shard concerned, or absent for the run itself.
    pub shard_id: Option<String>,
    /// The state entered (`running`, `paused`, `succeeded`, …), or a shard
    /// split asked for (`split_requested`) or made (`split`).
    pub kind: String,
    pub reason: String,
}

/// A run asked for by hand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// Collect only `[from, to)` on the job's range field or incremental cursor.
    pub range: Option<RangeBody>,
    /// Overrides the job's priority for this run.
    pub priority: Option<i32>,
}

/// `[from, to)` bounds: numbers, strings or RFC 3339 times, as the job's range field holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeBody {
    pub from: Value,
    pub to: Value,
}

/// Runs over past intervals: one per schedule interval (or per `every`) in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The interval length, e.g. "1d"; required for a job without a cron schedule.
    #[schema(example = "1d")]
    pub every: Option<String>,
    /// How many of the backfill's runs may run at once; 1 when absent.
    pub concurrency: Option<usize>,
}

impl From<JobRecord> for Job {
    fn from(record: JobRecord) -> Self {
        Job {
            name: record.name,
            enabled: record.enabled,
            version: record.version,
            spec_hash: record.spec_hash,
            planned_through: record.planned_through,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

impl From<JobRecord> for JobDetail {
    fn from(mut record: JobRecord) -> Self {
        let spec = std::mem::take(&mut record.spec);
        JobDetail { job: record.into(), spec }
    }
}

impl From<RunRecord> for Run {
    fn from(record: RunRecord) -> Self {
        let request = record.request;
        Run {
            id: record.id,
            job: record.job,
            state: record.state,
            message: record.message,
            mode: record.mode,
            trigger: request.trigger,
            scheduled_for: request.scheduled_for,
            priority: request.priority,
            pool: request.pool,
            params: request.params,
            attempt: request.attempt,
            spec_hash: record.spec_hash,
            next_job_state: record.next_state,
            created_at: record.created_at,
            updated_at: record.updated_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
        }
    }
}

impl From<service::RunDetail> for RunDetail {
    fn from(detail: service::RunDetail) -> Self {
        let shards: Vec<Shard> = detail.shards.into_iter().map(Shard::from).collect();
        let totals = shards.iter().map(Shard::latest_counters).fold(Counters::default(), Counters::plus);
        RunDetail {
            run: detail.run.into(),
            totals,
            shards,
            events: detail.events.into_iter().map(Event::from).collect(),
        }
    }
}

impl Shard {
    /// The live counters while the shard executes here, the stored ones otherwise.
    pub fn latest_counters(&self) -> Counters {
        self.live.unwrap_or(self.counters)
    }
}

impl Counters {
    pub fn plus(self, other: Counters) -> Counters {
        Counters {
            records_read: self.records_read + other.records_read,
            records_written: self.records_written + other.records_written,
            records_rejected: self.records_rejected + other.records_rejected,
            bytes_read: self.bytes_read + other.bytes_read,
        }
    }
}

impl From<ShardCounters> for Counters {
    fn from(counters: ShardCounters) -> Self {
        Counters {
            records_read: counters.records_read,
            records_written: counters.records_written,
            records_rejected: counters.records_rejected,
            bytes_read: counters.bytes_read,
        }
    }
}

impl From<ShardView> for Shard {
    fn from(view: ShardView) -> Self {
        let record = view.record;
        Shard {
            id: record.spec.id,
            run_id: record.run_id,
            state: record.state,
            descriptor: record.spec.descriptor,
            counters: record.counters.into(),
            live: view.live.map(Counters::from),
            phase: view.phase.map(Phase::from),
            checkpoint: record.checkpoint.map(|checkpoint| checkpoint.0),
            sequence: record.sequence,
            epoch: record.epoch,
            owner: record.owner,
            error: record.error,
        }
    }
}

impl From<ShardPhase> for Phase {
    fn from(phase: ShardPhase) -> Self {
        match phase {
            ShardPhase::Queued => Phase::Queued,
            ShardPhase::Running => Phase::Running,
            ShardPhase::Retrying => Phase::Retrying,
            ShardPhase::Done => Phase::Done,
            ShardPhase::Stopped => Phase::Stopped,
            ShardPhase::Failed => Phase::Failed,
        }
    }
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Retrying => "retrying",
            Phase::Done => "done",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }
}

impl From<StoredEvent> for Event {
    fn from(event: StoredEvent) -> Self {
        Event { at: event.at, shard_id: event.shard_id, kind: event.kind, reason: event.reason }
    }
}

impl From<TriggerBody> for TriggerRequest {
    fn from(body: TriggerBody) -> Self {
        TriggerRequest {
            range: body.range.map(|range| RequestedRange { from: range.from, to: range.to }),
            priority: body.priority,
        }
    }
}

impl TryFrom<BackfillBody> for service::Backfill {
    type Error = ApiError;

    fn try_from(body: BackfillBody) -> Result<Self, ApiError> {
        let every: Option<Duration> = body
            .every
            .map(|text| text.parse::<HumanDuration>().map(|every| every.0))
            .transpose()
            .map_err(|error| ApiError::invalid(format!("`every`: {error}")))?;
        if body.from >= body.to {
            return Err(ApiError::invalid(format!("`from` ({}) must be before `to` ({})", body.from, body.to)));
        }
        Ok(service::Backfill { from: body.from, to: body.to, every, concurrency: body.concurrency.unwrap_or(1) })
    }
}

/// A string schema that takes one of `names`.
fn one_of(names: impl IntoIterator<Item = &'static str>) -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).build()
}

pub(super) fn run_state_schema() -> Object {
    one_of(RunState::ALL.map(RunState::as_str))
}

/// Run states, for a query parameter that takes several.
pub(super) fn run_states_schema() -> Array {
    ArrayBuilder::new().items(run_state_schema()).build()
}

pub(super) fn trigger_schema() -> Object {
    one_of(RunTrigger::ALL.map(RunTrigger::as_str))
}

fn shard_state_schema() -> Object {
    one_of(ShardState::ALL.map(ShardState::as_str))
}

fn mode_schema() -> Object {
    one_of([Mode::Full, Mode::Incremental, Mode::Range].map(Mode::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backfill(from: &str, to: &str, every: Option<&str>) -> Result<service::Backfill, ApiError> {
        service::Backfill::try_from(BackfillBody {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            every: every.map(str::to_string),
            concurrency: None,
        })
    }

    #[test]
    fn backfill_bodies_read_their_interval_and_default_to_one_run_at_a_time() {
        let read = backfill("2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z", Some("1d")).unwrap();
        assert_eq!(read.every, Some(Duration::from_secs(86_400)));
        assert_eq!(read.concurrency, 1);
        assert_eq!(backfill("2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z", None).unwrap().every, None);
    }

    #[test]
    fn backfill_bodies_with_a_bad_interval_or_an_empty_range_are_invalid() {
        let bad_every = backfill("2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z", Some("daily")).unwrap_err();
        assert!(bad_every.message().starts_with("`every`: invalid duration `daily`"), "{}", bad_every.message());
        let reversed = backfill("2026-01-04T00:00:00Z", "2026-01-01T00:00:00Z", None).unwrap_err();
        assert!(reversed.message().contains("must be before"), "{}", reversed.message());
    }

    #[test]
    fn a_run_flattens_its_request_and_round_trips_as_json() {
        let run = Run {
            id: "r1".into(),
            job: "orders".into(),
            state: RunState::Running,
            message: None,
            mode: Mode::Incremental,
            trigger: RunTrigger::Backfill,
            scheduled_for: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            priority: 3,
            pool: "default".into(),
            params: Some(serde_json::json!({"range": {"from": 1, "to": 2}})),
            attempt: 1,
            spec_hash: "h".into(),
            next_job_state: None,
            created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            updated_at: "2026-01-01T00:00:01Z".parse().unwrap(),
            started_at: None,
            finished_at: None,
        };
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["state"], "running");
        assert_eq!(json["trigger"], "backfill");
        assert_eq!(json["mode"], "incremental");
        assert_eq!(serde_json::from_value::<Run>(json).unwrap(), run);
    }

    #[test]
    fn shard_phases_keep_their_names() {
        let phases = [
            ShardPhase::Queued,
            ShardPhase::Running,
            ShardPhase::Retrying,
            ShardPhase::Done,
            ShardPhase::Stopped,
            ShardPhase::Failed,
        ];
        for phase in phases {
            let name = serde_json::to_value(phase).unwrap();
            assert_eq!(serde_json::to_value(Phase::from(phase)).unwrap(), name);
            assert_eq!(Phase::from(phase).as_str(), name);
        }
    }
}
