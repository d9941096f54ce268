//! The records the store keeps — runs, shards, leases, events — and the two
//! state machines that govern them. Each machine is one explicit table of
//! allowed `(from, to)` pairs; every backend checks transitions against it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use haul_collect_core::job::Mode;
use haul_collect_core::plugin::{Checkpoint, Plan, ShardSpec};
use haul_collect_core::progress::ShardCounters;
use haul_collect_core::runtime::ResumePoint;
use serde::{Deserialize, Serialize};

/// Lifecycle of a run: pending → running → (paused ⇄ running) → succeeded |
/// failed | cancelled; a pending run that cannot be planned fails; a paused or
/// failed run may be resumed (→ running), and a failed run that was never
/// planned is queued again (→ pending); any unfinished run (pending, running,
/// paused, failed) may be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

/// Every allowed run transition; anything else is illegal.
const RUN_TRANSITIONS: &[(RunState, RunState)] = {
    use RunState::*;
    &[
        (Pending, Running),
        (Pending, Failed),
        (Pending, Cancelled),
        (Running, Paused),
        (Running, Succeeded),
        (Running, Failed),
        (Running, Cancelled),
        (Paused, Running),
        (Paused, Cancelled),
        (Failed, Pending),
        (Failed, Running),
        (Failed, Cancelled),
    ]
};

impl RunState {
    pub const ALL: [RunState; 6] = [
        RunState::Pending,
        RunState::Running,
        RunState::Paused,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// Whether the transition table allows moving from `self` to `next`.
    pub fn can_transition_to(self, next: RunState) -> bool {
        RUN_TRANSITIONS.contains(&(self, next))
    }

    /// The end states of the lifecycle: nothing executes the run any more. A
    /// failed run is terminal but may still be resumed.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

/// Lifecycle of a shard: pending → running → (pending again when released or
/// when its lease expires) → succeeded | failed; failed → pending on retry.
/// A running shard whose lease has expired is claimable like a pending one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// Every allowed shard transition; anything else is illegal.
const SHARD_TRANSITIONS: &[(ShardState, ShardState)] = {
    use ShardState::*;
    &[(Pending, Running), (Running, Pending), (Running, Succeeded), (Running, Failed), (Failed, Pending)]
};

impl ShardState {
    pub const ALL: [ShardState; 4] =
        [ShardState::Pending, ShardState::Running, ShardState::Succeeded, ShardState::Failed];

    /// Whether the transition table allows moving from `self` to `next`.
    pub fn can_transition_to(self, next: ShardState) -> bool {
        SHARD_TRANSITIONS.contains(&(self, next))
    }

    /// The end states of the lifecycle: no worker executes the shard any more.
    /// A failed shard is terminal but may still be retried.
    pub fn is_terminal(self) -> bool {
        matches!(self, ShardState::Succeeded | ShardState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Pending => "pending",
            ShardState::Running => "running",
            ShardState::Succeeded => "succeeded",
            ShardState::Failed => "failed",
        }
    }
}

/// A state name that is not one of the lowercase names of its machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {machine} state `{value}`")]
pub struct UnknownState {
    pub machine: &'static str,
    pub value: String,
}

impl FromStr for RunState {
    type Err = UnknownState;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| UnknownState { machine: "run", value: value.to_string() })
    }
}

impl FromStr for ShardState {
    type Err = UnknownState;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ShardState::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| UnknownState { machine: "shard", value: value.to_string() })
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ShardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One execution of a job, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// A UUIDv7 string.
    pub id: String,
    pub job: String,
    /// Hash of the job spec the run was planned from; a changed spec should not
    /// resume an old plan.
    pub spec_hash: String,
    pub mode: Mode,
    pub state: RunState,
    /// The job state this run reaches; it becomes the job's state when the run succeeds.
    pub next_state: Option<serde_json::Value>,
    /// Times from the store's clock.
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The reason given for the latest state change.
    pub message: Option<String>,
    /// Why and for when the run exists, and how it queues.
    pub request: RunRequest,
    /// When the run first entered `running`, and when it ended (store clock).
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a run is and where it stands, without its next job state (which a
/// file source's run fills with the size of every file): cheap to read as
/// often as a worker does before each shard, or the leader at each look at
/// a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatus {
    pub id: String,
    pub job: String,
    /// Hash of the job spec the run was planned from.
    pub spec_hash: String,
    pub state: RunState,
    /// The pool (worker group) the run's shards go to.
    pub pool: String,
}

impl From<&RunRecord> for RunStatus {
    fn from(run: &RunRecord) -> Self {
        RunStatus {
            id: run.id.clone(),
            job: run.job.clone(),
            spec_hash: run.spec_hash.clone(),
            state: run.state,
            pool: run.request.pool.clone(),
        }
    }
}

/// What created a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunTrigger {
    /// Asked for through `haul run`, the API or the CLI.
    #[default]
    Manual,
    /// A cron schedule fired, or an upstream job's scheduled run for the same time.
    Schedule,
    /// One interval of a backfill.
    Backfill,
    /// An automatic retry of a failed run (the job's `run_retry`).
    Retry,
}

impl RunTrigger {
    pub const ALL: [RunTrigger; 4] =
        [RunTrigger::Manual, RunTrigger::Schedule, RunTrigger::Backfill, RunTrigger::Retry];

    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Manual => "manual",
            RunTrigger::Schedule => "schedule",
            RunTrigger::Backfill => "backfill",
            RunTrigger::Retry => "retry",
        }
    }
}

impl FromStr for RunTrigger {
    type Err = UnknownState;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        RunTrigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == value)
            .ok_or_else(|| UnknownState { machine: "trigger", value: value.to_string() })
    }
}

/// Why a run exists and how it waits for its turn.
///
/// A run is unique per job, trigger and `scheduled_for`: creating it again
/// (a scheduler restarted mid-tick, a backfill submitted twice) returns the
/// existing run. Runs without a `scheduled_for` are never merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub trigger: RunTrigger,
    /// The schedule time (or interval start) the run is for.
    pub scheduled_for: Option<DateTime<Utc>>,
    pub priority: i32,
    pub pool: String,
    /// Overrides given when the run was asked for, e.g. `{"range": {"from": …, "to": …}}`.
    pub params: Option<serde_json::Value>,
    /// 1 for the first try; a retry of a failed run counts up.
    pub attempt: u32,
}

impl Default for RunRequest {
    fn default() -> Self {
        RunRequest {
            trigger: RunTrigger::Manual,
            scheduled_for: None,
            priority: 0,
            pool: haul_collect_core::job::DEFAULT_POOL.to_string(),
            params: None,
            attempt: 1,
        }
    }
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub job: Option<String>,
    /// Any of these states; all states when empty.
    pub states: Vec<RunState>,
    pub trigger: Option<RunTrigger>,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// At most this many; all when `None`.
    pub limit: Option<u32>,
}

/// A job as the server keeps it: its spec text and whether it is scheduled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub name: String,
    /// The job file's TOML text, as submitted (JSON submissions are stored as TOML).
    pub spec: String,
    pub spec_hash: String,
    /// Disabled jobs are not scheduled; they can still be run by hand.
    pub enabled: bool,
    /// Counts the updates of the spec, from 1.
    pub version: u64,
    /// The latest schedule time the scheduler has dealt with (fired or skipped).
    pub planned_through: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One shard of a run, as stored: its plan entry and its ledger line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub run_id: String,
    pub spec: ShardSpec,
    pub state: ShardState,
    /// The commit sequence of the last saved checkpoint (0 before the first).
    pub sequence: u64,
    pub checkpoint: Option<Checkpoint>,
    pub counters: ShardCounters,
    /// The fencing token: incremented by every claim, 0 before the first.
    pub epoch: u64,
    /// The holder of the current or last lease; cleared when released.
    pub owner: Option<String>,
    /// When the current lease runs out, by the store's clock; `None` when no
    /// lease is held (pending, released or finished).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Why the shard failed, when it did.
    pub error: Option<String>,
    /// Whether the leader asked the shard's owner to split it (see
    /// [`crate::Store::request_split`]); cleared by the split.
    pub split_requested: bool,
}

/// Proof of ownership of a shard: valid while `epoch` is the shard's current
/// epoch and the lease has not expired by the store's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: String,
    pub shard_id: String,
    pub owner: String,
    pub epoch: u64,
}

/// What a successful [`crate::Store::claim_shard`] hands back: the lease,
/// where the shard resumes, and the shard as the store has it at the claim
/// (a split since it was planned or offered changes its descriptor).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedShard {
    pub lease: Lease,
    pub resume: ResumePoint,
    pub shard: ShardSpec,
}

/// What a new run needs: its job, the spec it was planned from, and the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub job: String,
    pub spec_hash: String,
    pub mode: Mode,
    pub plan: Plan,
    pub request: RunRequest,
}

/// A run to queue before it is planned: planning waits until the run may start
/// (its upstream jobs succeeded, its turn came), so that an incremental run
/// plans from the state its predecessor left.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedRun {
    pub job: String,
    pub spec_hash: String,
    pub mode: Mode,
    pub request: RunRequest,
}

/// One line of a run's history: a run or shard entering a state, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// From the store's clock.
    pub at: DateTime<Utc>,
    /// The shard concerned, or `None` for the run itself.
    pub shard_id: Option<String>,
    /// The state entered (`running`, `paused`, `succeeded`, …), or a shard
    /// split asked for (`split_requested`) or made (`split`).
    pub kind: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The intended run machine, written independently of the table.
    fn run_allowed(from: RunState, to: RunState) -> bool {
        use RunState::*;
        match from {
            Pending => matches!(to, Running | Failed | Cancelled),
            Running => matches!(to, Paused | Succeeded | Failed | Cancelled),
            Paused => matches!(to, Running | Cancelled),
            Failed => matches!(to, Pending | Running | Cancelled),
            Succeeded | Cancelled => false,
        }
    }

    /// The intended shard machine, written independently of the table.
    fn shard_allowed(from: ShardState, to: ShardState) -> bool {
        use ShardState::*;
        match from {
            Pending => to == Running,
            Running => matches!(to, Pending | Succeeded | Failed),
            Failed => to == Pending,
            Succeeded => false,
        }
    }

    #[test]
    fn run_transitions_match_the_lifecycle_for_every_pair() {
        for from in RunState::ALL {
            for to in RunState::ALL {
                assert_eq!(from.can_transition_to(to), run_allowed(from, to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn shard_transitions_match_the_lifecycle_for_every_pair() {
        for from in ShardState::ALL {
            for to in ShardState::ALL {
                assert_eq!(from.can_transition_to(to), shard_allowed(from, to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn tables_have_no_duplicates_or_self_loops() {
        for (i, pair) in RUN_TRANSITIONS.iter().enumerate() {
            assert_ne!(pair.0, pair.1);
            assert!(!RUN_TRANSITIONS[i + 1..].contains(pair), "{pair:?}");
        }
        for (i, pair) in SHARD_TRANSITIONS.iter().enumerate() {
            assert_ne!(pair.0, pair.1);
            assert!(!SHARD_TRANSITIONS[i + 1..].contains(pair), "{pair:?}");
        }
    }

    #[test]
    fn terminal_states_are_the_ends_of_the_lifecycle() {
        use RunState::*;
        let terminal: Vec<RunState> = RunState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Succeeded, Failed, Cancelled]);
        // Only failed leaves the end states, and only to be retried or cancelled.
        for from in terminal {
            for to in RunState::ALL {
                if from.can_transition_to(to) {
                    assert_eq!(from, Failed);
                    assert!(matches!(to, Pending | Running | Cancelled));
                }
            }
        }
        let shard_terminal: Vec<ShardState> = ShardState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(shard_terminal, [ShardState::Succeeded, ShardState::Failed]);
    }

    #[test]
    fn names_round_trip_and_match_serde() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
            assert_eq!(state.to_string(), state.as_str());
        }
        for state in ShardState::ALL {
            assert_eq!(state.as_str().parse::<ShardState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        let error = "Running".parse::<RunState>().unwrap_err();
        assert_eq!(error.to_string(), "unknown run state `Running`");
        assert!("done".parse::<ShardState>().is_err());
    }
}
