//! The [`Store`]: haul's source of truth for jobs' incremental state, runs and
//! the shard ledger (checkpoints and leases). Every other coordination service
//! may lose its state; the store may not.
//!
//! Lifecycle, as the runtime drives it:
//! 1. [`Store::unfinished_run`] finds a run to resume; otherwise
//!    [`Store::create_run`] stores a new run with its whole plan. The server
//!    instead queues a run with [`Store::enqueue_run`] and plans it when it may
//!    start, with [`Store::start_run`].
//! 2. Each shard is executed under a [`Lease`] from [`Store::claim_shard`],
//!    kept alive with [`Store::renew_lease`]. Every [`Store::save_checkpoint`]
//!    follows a sink commit. The shard ends with [`Store::finish_shard`], or is
//!    given back with [`Store::release_shard`] on pause or shutdown; both save
//!    the checkpoint of the last commit in the same write.
//!    A straggling running shard may be split: the leader asks with
//!    [`Store::request_split`], and its owner, at a checkpoint, narrows it
//!    and adds a pending shard for the rest with [`Store::split_shard`].
//! 3. [`Store::set_run_state`] moves the run along its lifecycle; reaching
//!    `succeeded` makes the run's `next_state` the job's state.
//!
//! Guarantees every backend keeps:
//! - Shard ownership is fenced: each claim increments the shard's epoch, and
//!   every write under a lease is one conditional update on
//!   `(run, shard, epoch)` with an unexpired lease. A holder whose lease moved
//!   on gets [`Error::LeaseLost`] and must stop writing; two live owners of a
//!   shard are impossible.
//! - Lease expiry uses the store's own clock, never the caller's.
//! - Run and shard states change only along the transition tables of
//!   [`crate::model`]; a succeeded run and its job state change together.
//! - A write that returned `Ok` survives a crash of the process.
//!
//! The server databases — PostgreSQL, MySQL/MariaDB — are one implementation,
//! [`SqlStore`], over a small [`Dialect`] each; SQLite has its own, tuned for
//! one file (grouped writes through one connection), and shares its dialect's
//! export and import. [`open`] picks a backend by URL.

mod mysql;
mod open;
mod postgres;
mod split;
mod sql;
mod sqlite;
mod transient;

use std::time::Duration;

use async_trait::async_trait;
use haul_collect_core::plugin::Checkpoint;
use haul_collect_core::progress::ShardCounters;
use haul_collect_core::runtime::ResumePoint;

pub use mysql::{MySqlDialect, MySqlStore};
pub use open::{open, redacted};
pub use postgres::{PostgresDialect, PostgresStore};
pub use sql::{Cell, Columns, Dialect, Snapshot, SqlStore, TableRows};
pub use sqlite::{SCHEMA_VERSION, SqliteDialect, SqliteStore};

use crate::model::{
    ClaimedShard, Event, JobRecord, Lease, NewRun, QueuedRun, RunFilter, RunRecord, RunState, RunStatus, ShardRecord,
    ShardState,
};

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("illegal transition from {from} to {to}")]
    IllegalTransition { from: String, to: String },
    #[error("lease lost on shard {shard_id} of run {run_id} at epoch {epoch}")]
    LeaseLost { run_id: String, shard_id: String, epoch: u64 },
    /// A shard claim on a run that is not running (paused, finished, …).
    #[error("run {run_id} is {state}, not running")]
    RunNotRunning { run_id: String, state: RunState },
    #[error("store database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row that does not decode.
    #[error("corrupt store row: {0}")]
    Corrupt(String),
    #[error("cannot create the store folder {path}: {source}")]
    CreateFolder { path: String, source: std::io::Error },
    /// A store URL this build cannot open.
    #[error("unsupported store url: {0}")]
    Unsupported(String),
    /// An import into a store that holds data already.
    #[error("the store is not empty: table {table} has rows")]
    NotEmpty { table: String },
}

impl Error {
    pub(crate) fn lease_lost(lease: &Lease) -> Self {
        Error::LeaseLost { run_id: lease.run_id.clone(), shard_id: lease.shard_id.clone(), epoch: lease.epoch }
    }
}

/// Jobs' state, runs and the shard ledger. See the module documentation for
/// the lifecycle and the guarantees.
#[async_trait]
pub trait Store: Send + Sync {
    /// The job state left by the job's last successful run.
    async fn job_state(&self, job: &str) -> Result<Option<serde_json::Value>, Error>;

    /// The job's most recent run, if it is not succeeded or cancelled (pending,
    /// running, paused or failed). An older unfinished run that a newer run has
    /// superseded is never returned.
    async fn unfinished_run(&self, job: &str) -> Result<Option<RunRecord>, Error>;

    /// A run; [`Error::NotFound`] if missing.
    async fn run(&self, run_id: &str) -> Result<RunRecord, Error>;

    /// A run's [`RunStatus`], without reading its next job state;
    /// [`Error::NotFound`] if missing.
    async fn run_status(&self, run_id: &str) -> Result<RunStatus, Error>;

    /// Creates a run in state `running` with all its shards `pending`, in one
    /// transaction. The run id is a UUIDv7 string.
    async fn create_run(&self, new: NewRun) -> Result<RunRecord, Error>;

    /// The shards of a run in the plan's order; [`Error::NotFound`] if the run is missing.
    async fn shards(&self, run_id: &str) -> Result<Vec<ShardRecord>, Error>;

    /// Moves a run to `state` if the transition table allows it
    /// ([`Error::IllegalTransition`] otherwise), recording an event with
    /// `reason`, which also becomes the run's message. When `state` is
    /// `succeeded`, the run's `next_state` (if any) becomes the job state in
    /// the same transaction.
    async fn set_run_state(&self, run_id: &str, state: RunState, reason: &str) -> Result<(), Error>;

    /// Claims a shard for `owner` for `ttl`: succeeds only if the shard is
    /// pending, or running with an expired lease; increments its epoch (the
    /// fencing token), sets it running, records an event and returns the
    /// lease with where the shard resumes (its last saved checkpoint, commit
    /// sequence and counters, as of the claim) and the shard itself, read in
    /// the claim's transaction. `Ok(None)` if someone else
    /// holds it, it is finished (succeeded or failed) or it is not in the run.
    /// Expiry uses the store's clock. The run must be running:
    /// [`Error::RunNotRunning`] otherwise, [`Error::NotFound`] if it is missing.
    async fn claim_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<ClaimedShard>, Error>;

    /// Extends a lease to `ttl` from now; [`Error::LeaseLost`] if the epoch
    /// moved on or the lease expired.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<(), Error>;

    /// Saves a checkpoint, its commit sequence and counters, conditional on the
    /// lease being current and unexpired; [`Error::LeaseLost`] otherwise (the
    /// caller must stop writing).
    async fn save_checkpoint(
        &self,
        lease: &Lease,
        sequence: u64,
        checkpoint: &Checkpoint,
        counters: &ShardCounters,
    ) -> Result<(), Error>;

    /// Ends a shard as `succeeded` or `failed` (with `error`), conditional on
    /// the lease like [`Store::save_checkpoint`]; records an event. `reached`
    /// is saved with the end, as [`Store::save_checkpoint`] would: the
    /// checkpoint of the sink's last commit (the stored one is kept when it is
    /// `None`), its sequence and the counters. Any other `state` is an
    /// [`Error::IllegalTransition`].
    async fn finish_shard(
        &self,
        lease: &Lease,
        state: ShardState,
        reached: &ResumePoint,
        error: Option<&str>,
    ) -> Result<(), Error>;

    /// Gives a shard back (state pending, lease cleared) on pause or
    /// shutdown, saving `reached` like [`Store::finish_shard`], conditional
    /// on the lease; records an event.
    async fn release_shard(&self, lease: &Lease, reached: &ResumePoint) -> Result<(), Error>;

    /// Asks the owner of a running shard to split it (dynamic rebalancing
    /// of a straggler): sets the shard's `split_requested` and records an
    /// event with `reason`. Returns whether it was set: a shard that is not
    /// running (or not in the run) is left as it is. The owner splits at
    /// its next checkpoint with [`Store::split_shard`], or declines.
    async fn request_split(&self, run_id: &str, shard_id: &str, reason: &str) -> Result<bool, Error>;

    /// Splits the leased shard, in one transaction conditional on the lease
    /// like [`Store::save_checkpoint`] ([`Error::LeaseLost`] otherwise): its
    /// descriptor becomes `kept` (its checkpoint, sequence and counters stay),
    /// its `split_requested` is cleared, and `new_shard` joins the run as a
    /// pending shard after the others; events record the split. The owner
    /// goes on with `kept` from its checkpoint, so that no record is read by
    /// both shards. A `new_shard` id already in the run is a database error.
    async fn split_shard(
        &self,
        lease: &Lease,
        kept: &serde_json::Value,
        new_shard: &haul_collect_core::ShardSpec,
    ) -> Result<(), Error>;

    /// Replaces the job state a running run leaves when it succeeds, for
    /// sources that learn it only by reading (see `Source::final_state`).
    async fn set_next_state(&self, run_id: &str, next_state: &serde_json::Value) -> Result<(), Error>;

    /// Tries a failed run again, with its attempt counted up and events: its
    /// failed shards back to pending (keeping their checkpoints) and the run
    /// `running`; or, for a run that failed before it was planned, the run
    /// back to `pending`, to be planned again. Returns how many shards were
    /// reset. [`Error::IllegalTransition`] unless the run is failed.
    async fn retry_run(&self, run_id: &str, reason: &str) -> Result<u64, Error>;

    /// The events of a run, oldest first.
    async fn events(&self, run_id: &str) -> Result<Vec<Event>, Error>;

    /// One shard of a run; [`Error::NotFound`] if missing.
    async fn shard(&self, run_id: &str, shard_id: &str) -> Result<ShardRecord, Error>;

    /// What a follower of a running run reads each time it looks: every
    /// running shard of the run and the shards named in `also` (whatever
    /// their state), each once, then the run's first `pending` pending shards
    /// in the plan's order that are not named. Costs the shards in flight,
    /// not the whole run. A missing run has no shards.
    async fn shards_to_follow(&self, run_id: &str, pending: u32, also: &[String]) -> Result<Vec<ShardRecord>, Error>;

    /// Queues a `pending` run without a plan. Idempotent on job, trigger and
    /// `scheduled_for` (when set): returns the existing run and `false` when
    /// that run exists already, the new run and `true` otherwise.
    async fn enqueue_run(&self, new: QueuedRun) -> Result<(RunRecord, bool), Error>;

    /// Stores the plan of a `pending` run, made from the job spec with hash
    /// `spec_hash`, and moves the run to `running`, in one transaction;
    /// [`Error::IllegalTransition`] if the run is not pending.
    async fn start_run(
        &self,
        run_id: &str,
        spec_hash: &str,
        plan: &haul_collect_core::Plan,
    ) -> Result<RunRecord, Error>;

    /// Runs matching `filter`, newest first.
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, Error>;

    /// Expires at once the leases `owner` holds, so that a restarted process
    /// (same owner name) can claim its shards again without waiting for the
    /// TTL. Claims still increment the epoch, so a stale holder stays fenced.
    /// Returns how many leases were expired.
    async fn expire_leases_of(&self, owner: &str) -> Result<u64, Error>;

    /// Creates a job, or replaces its spec (the version counts up); a new job is enabled.
    async fn put_job(&self, name: &str, spec: &str, spec_hash: &str) -> Result<JobRecord, Error>;

    /// A job; [`Error::NotFound`] if missing.
    async fn job(&self, name: &str) -> Result<JobRecord, Error>;

    /// Every job, by name.
    async fn jobs(&self) -> Result<Vec<JobRecord>, Error>;

    /// Enables or disables a job's schedule; [`Error::NotFound`] if missing.
    async fn set_job_enabled(&self, name: &str, enabled: bool) -> Result<(), Error>;

    /// Deletes a job (its runs stay, as history); [`Error::NotFound`] if missing.
    async fn delete_job(&self, name: &str) -> Result<(), Error>;

    /// Records the latest schedule time the scheduler has dealt with.
    async fn set_planned_through(&self, name: &str, at: chrono::DateTime<chrono::Utc>) -> Result<(), Error>;

    /// Every stored row — jobs, job states, runs, shards with their
    /// checkpoints, epochs and leases, events — read in one transaction.
    async fn export(&self) -> Result<Snapshot, Error>;

    /// Writes an [`Store::export`] of another store into this one, in one
    /// transaction, so that it reads back identical records;
    /// [`Error::NotEmpty`] if this store holds any row already.
    async fn import(&self, snapshot: &Snapshot) -> Result<(), Error>;
}
