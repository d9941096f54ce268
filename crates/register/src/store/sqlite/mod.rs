//! The SQLite [`Store`]: one file, in WAL mode, for `haul run` and the
//! embedded server.
//!
//! Writes go through a pool of one connection, so the writers of one process
//! queue in the pool instead of fighting over SQLite's lock; reads use a
//! separate small pool and never wait for writers (WAL). Other processes on
//! the same file are handled by the busy timeout. Every lease-conditional
//! write is a single `UPDATE … WHERE epoch = ? AND lease_expires_at > now`
//! whose affected (or returned) rows decide, and multi-statement transactions
//! begin with `BEGIN IMMEDIATE` so they never fail on a lock upgrade. Times
//! are integer milliseconds since the Unix epoch from SQLite's own clock.
//!
//! The writes every shard makes (claim, finish, release) are scripts run by
//! [`group_commit`]: many shards' writes share one transaction.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use haul_collect_core::plugin::{Checkpoint, Plan, ShardSpec};
use haul_collect_core::progress::ShardCounters;
use haul_collect_core::runtime::ResumePoint;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};

use super::split::{SPLIT, SPLIT_REQUESTED, split_reasons};
use super::sql::codec::{
    decode_run, decode_run_status, decode_shard, from_json, lease_held, mode_name, parse_state, time, to_i64, to_json,
    to_u64, ttl_ms,
};
use super::{Error, Snapshot, Store};
use crate::model::{
    ClaimedShard, Event, JobRecord, Lease, NewRun, QueuedRun, RunFilter, RunRecord, RunState, RunStatus, ShardRecord,
    ShardState,
};
use group_commit::{GroupCommit, grouped_write};

/// The version of the newest migration in `migrations/sqlite`; a store file
/// migrated by a newer haul is refused.
pub const SCHEMA_VERSION: i64 = 4;

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of the read pool.
const READERS: u32 = 4;

/// Shards inserted by one statement: 13 bound values each, well under
/// SQLite's limit of 32,766 per statement.
const SHARDS_PER_INSERT: usize = 500;

/// The current time in milliseconds since the Unix epoch, by SQLite's clock.
macro_rules! now_ms {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

/// The condition that lets an update through only for the holder of a live
/// lease: the shard's current epoch, still running, and the lease unexpired
/// by the store's clock. Binds run id, shard id and epoch, in that order.
macro_rules! held_lease {
    () => {
        concat!(
            " WHERE run_id = ? AND shard_id = ? AND epoch = ? AND state = 'running' AND lease_expires_at > ",
            now_ms!()
        )
    };
}

macro_rules! run_columns {
    () => {
        "id, job, spec_hash, mode, state, next_state, message, created_at, updated_at, \
         trigger, scheduled_for, priority, pool, params, attempt, started_at, finished_at"
    };
}

macro_rules! shard_columns {
    () => {
        "run_id, spec, state, sequence, checkpoint, counters, epoch, owner, lease_expires_at, error, split_requested"
    };
}

mod dialect;
mod group_commit;
mod jobs;

pub use dialect::SqliteDialect;

/// A [`Store`] in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    group_commit: GroupCommit,
}

impl SqliteStore {
    /// Opens the store file at `path`, creating it and its parent folder if
    /// missing, and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| Error::CreateFolder { path: parent.display().to_string(), source })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // A connection to a local file needs no health check before each use
        // (the check is a round trip to the connection's thread).
        let pool = || SqlitePoolOptions::new().test_before_acquire(false);
        let writer = pool().max_connections(1).connect_with(options.clone()).await?;
        migrator().run(&writer).await?;
        let reader = pool().max_connections(READERS).connect_with(options).await?;
        tracing::debug!(path = %path.display(), "opened sqlite store");
        Ok(SqliteStore { group_commit: GroupCommit::spawn(writer.clone()), writer, reader })
    }

    /// The version of the newest migration applied to the file.
    pub async fn schema_version(&self) -> Result<i64, Error> {
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.reader)
            .await?;
        Ok(version.unwrap_or(0))
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, Error> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Ends a lease: the shard moves to `state` (pending for a release, which
    /// clears the owner) with `reached` saved and an event recorded, in one
    /// script conditional on the lease.
    async fn end_lease(
        &self,
        lease: &Lease,
        state: ShardState,
        reached: &ResumePoint,
        error: Option<&str>,
        reason: &str,
    ) -> Result<(), Error> {
        let script = sqlx::query(grouped_write!(
            concat!(
                "UPDATE shards SET state = ?, sequence = ?, checkpoint = COALESCE(?, checkpoint), counters = ?, ",
                "error = ?, owner = CASE WHEN ? THEN NULL ELSE owner END, lease_expires_at = NULL, updated_at = ",
                now_ms!(),
                held_lease!(),
                " RETURNING epoch;"
            ),
            concat!(
                "INSERT INTO events (run_id, shard_id, at, kind, reason) SELECT ?, ?, ",
                now_ms!(),
                ", ?, ? WHERE changes() = 1;"
            ),
        ))
        .bind(state.as_str())
        .bind(to_i64(reached.sequence, "sequence")?)
        .bind(reached.checkpoint.as_ref().map(to_json).transpose()?)
        .bind(to_json(&reached.counters)?)
        .bind(error)
        .bind(state == ShardState::Pending)
        .bind(&lease.run_id)
        .bind(&lease.shard_id)
        .bind(to_i64(lease.epoch, "epoch")?)
        .bind(&lease.run_id)
        .bind(&lease.shard_id)
        .bind(state.as_str())
        .bind(reason);
        let ended = self.group_commit.write(script).await?;
        lease_held(ended.len() as u64, lease)
    }

    async fn run_exists(&self, run_id: &str) -> Result<bool, Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = ?").bind(run_id).fetch_optional(&self.reader).await?;
        Ok(found.is_some())
    }
}

/// The migrations, embedded in the binary.
fn migrator() -> sqlx::migrate::Migrator {
    super::sql::embedded_migrations(&[
        ("init", include_str!("../../../migrations/sqlite/0001_init.sql")),
        ("platform", include_str!("../../../migrations/sqlite/0002_platform.sql")),
        ("split", include_str!("../../../migrations/sqlite/0003_split.sql")),
        ("follow", include_str!("../../../migrations/sqlite/0004_follow.sql")),
    ])
}

async fn insert_event(
    connection: &mut SqliteConnection,
    run_id: &str,
    shard_id: Option<&str>,
    kind: &str,
    reason: &str,
) -> Result<(), Error> {
    sqlx::query(concat!(
        "INSERT INTO events (run_id, shard_id, at, kind, reason) VALUES (?, ?, ",
        now_ms!(),
        ", ?, ?)"
    ))
    .bind(run_id)
    .bind(shard_id)
    .bind(kind)
    .bind(reason)
    .execute(connection)
    .await?;
    Ok(())
}

/// Inserts a run row in `state` and returns its new id (a UUIDv7).
async fn insert_run(
    connection: &mut SqliteConnection,
    run: &QueuedRun,
    state: RunState,
    next_state: Option<&serde_json::Value>,
) -> Result<String, Error> {
    let id = uuid::Uuid::now_v7().to_string();
    let request = &run.request;
    sqlx::query(concat!(
        "INSERT INTO runs (id, job, spec_hash, mode, state, next_state, message, created_at, updated_at, ",
        "trigger, scheduled_for, priority, pool, params, attempt, started_at) ",
        "VALUES (?, ?, ?, ?, ?, ?, NULL, ",
        now_ms!(),
        ", ",
        now_ms!(),
        ", ?, ?, ?, ?, ?, ?, CASE WHEN ? THEN ",
        now_ms!(),
        " END)"
    ))
    .bind(&id)
    .bind(&run.job)
    .bind(&run.spec_hash)
    .bind(mode_name(run.mode))
    .bind(state.as_str())
    .bind(next_state.map(to_json).transpose()?)
    .bind(request.trigger.as_str())
    .bind(request.scheduled_for.map(|at| at.timestamp_millis()))
    .bind(request.priority)
    .bind(&request.pool)
    .bind(request.params.as_ref().map(to_json).transpose()?)
    .bind(i64::from(request.attempt))
    .bind(state == RunState::Running)
    .execute(connection)
    .await?;
    Ok(id)
}

/// Inserts `shards`, pending, in order from position `first`, many rows per statement.
async fn insert_shards(
    connection: &mut SqliteConnection,
    run_id: &str,
    first: u64,
    shards: &[ShardSpec],
) -> Result<(), Error> {
    let counters = to_json(&ShardCounters::default())?;
    for (chunk_index, chunk) in shards.chunks(SHARDS_PER_INSERT).enumerate() {
        let mut rows = Vec::with_capacity(chunk.len());
        for (offset, spec) in chunk.iter().enumerate() {
            let position = to_i64(first + (chunk_index * SHARDS_PER_INSERT + offset) as u64, "shard position")?;
            rows.push((position, &spec.id, to_json(spec)?));
        }
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO shards (run_id, shard_id, position, spec, state, sequence, checkpoint, counters, \
             epoch, owner, lease_expires_at, error, updated_at) ",
        );
        insert.push_values(rows, |mut row, (position, shard_id, spec)| {
            row.push_bind(run_id)
                .push_bind(shard_id.clone())
                .push_bind(position)
                .push_bind(spec)
                .push("'pending', 0, NULL")
                .push_bind(counters.clone())
                .push("0, NULL, NULL, NULL")
                .push(now_ms!());
        });
        insert.build().persistent(false).execute(&mut *connection).await?;
    }
    Ok(())
}

async fn select_run(connection: &mut SqliteConnection, run_id: &str) -> Result<RunRecord, Error> {
    let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM runs WHERE id = ?"))
        .bind(run_id)
        .fetch_optional(connection)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
    decode_run(&row)
}

#[async_trait]
impl Store for SqliteStore {
    async fn job_state(&self, job: &str) -> Result<Option<serde_json::Value>, Error> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM job_state WHERE job = ?")
            .bind(job)
            .fetch_optional(&self.reader)
            .await?;
        state.map(|text| from_json(&text, "job state")).transpose()
    }

    async fn unfinished_run(&self, job: &str) -> Result<Option<RunRecord>, Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE job = ? ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(job)
        .fetch_optional(&self.reader)
        .await?;
        let run = row.as_ref().map(decode_run).transpose()?;
        Ok(run.filter(|run| !matches!(run.state, RunState::Succeeded | RunState::Cancelled)))
    }

    async fn run(&self, run_id: &str) -> Result<RunRecord, Error> {
        let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM runs WHERE id = ?"))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        match row {
            Some(row) => decode_run(&row),
            None => Err(Error::NotFound { what: format!("run {run_id}") }),
        }
    }

    async fn run_status(&self, run_id: &str) -> Result<RunStatus, Error> {
        let row = sqlx::query("SELECT id, job, spec_hash, state, pool FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        match row {
            Some(row) => decode_run_status(&row),
            None => Err(Error::NotFound { what: format!("run {run_id}") }),
        }
    }

    async fn create_run(&self, new: NewRun) -> Result<RunRecord, Error> {
        let queued = QueuedRun { job: new.job, spec_hash: new.spec_hash, mode: new.mode, request: new.request };
        let mut tx = self.begin().await?;
        let id = insert_run(&mut tx, &queued, RunState::Running, new.plan.next_state.as_ref()).await?;
        insert_shards(&mut tx, &id, 0, &new.plan.shards).await?;
        let reason = format!("created with {} shards", new.plan.shards.len());
        insert_event(&mut tx, &id, None, RunState::Running.as_str(), &reason).await?;
        let run = select_run(&mut tx, &id).await?;
        tx.commit().await?;
        tracing::debug!(run_id = %id, job = %run.job, shards = new.plan.shards.len(), "created run");
        Ok(run)
    }

    async fn shards(&self, run_id: &str) -> Result<Vec<ShardRecord>, Error> {
        let rows = sqlx::query(concat!("SELECT ", shard_columns!(), " FROM shards WHERE run_id = ? ORDER BY position"))
            .bind(run_id)
            .fetch_all(&self.reader)
            .await?;
        if rows.is_empty() && !self.run_exists(run_id).await? {
            return Err(Error::NotFound { what: format!("run {run_id}") });
        }
        rows.iter().map(decode_shard).collect()
    }

    async fn set_run_state(&self, run_id: &str, state: RunState, reason: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT job, state, next_state FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
        let job: String = row.try_get("job")?;
        let from: RunState = parse_state(&row.try_get::<String, _>("state")?)?;
        let next_state: Option<String> = row.try_get("next_state")?;
        if !from.can_transition_to(state) {
            return Err(Error::IllegalTransition { from: from.to_string(), to: state.to_string() });
        }
        sqlx::query(concat!(
            "UPDATE runs SET state = ?, message = ?, updated_at = ",
            now_ms!(),
            ", started_at = CASE WHEN ? THEN COALESCE(started_at, ",
            now_ms!(),
            ") ELSE started_at END",
            ", finished_at = CASE WHEN ? THEN ",
            now_ms!(),
            " ELSE NULL END",
            " WHERE id = ? AND state = ?"
        ))
        .bind(state.as_str())
        .bind(reason)
        .bind(state == RunState::Running)
        .bind(state.is_terminal())
        .bind(run_id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        insert_event(&mut tx, run_id, None, state.as_str(), reason).await?;
        if let (RunState::Succeeded, Some(next_state)) = (state, next_state) {
            sqlx::query(concat!(
                "INSERT INTO job_state (job, state, updated_at) VALUES (?, ?, ",
                now_ms!(),
                ") ON CONFLICT (job) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
            ))
            .bind(&job)
            .bind(next_state)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::debug!(run_id, from = %from, to = %state, reason, "run state changed");
        Ok(())
    }

    async fn claim_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<ClaimedShard>, Error> {
        let script = sqlx::query(grouped_write!(
            concat!(
                "UPDATE shards SET state = 'running', epoch = epoch + 1, owner = ?, error = NULL, ",
                "lease_expires_at = ",
                now_ms!(),
                " + ?, updated_at = ",
                now_ms!(),
                " WHERE run_id = ? AND shard_id = ? ",
                "AND (state = 'pending' OR (state = 'running' AND lease_expires_at <= ",
                now_ms!(),
                ")) AND (SELECT state FROM runs WHERE id = shards.run_id) = 'running' ",
                "RETURNING epoch, sequence, checkpoint, counters, spec;"
            ),
            concat!(
                "INSERT INTO events (run_id, shard_id, at, kind, reason) SELECT run_id, shard_id, ",
                now_ms!(),
                ", 'running', 'claimed by ' || owner || ' at epoch ' || epoch ",
                "FROM shards WHERE changes() = 1 AND run_id = ? AND shard_id = ?;"
            ),
        ))
        .bind(owner)
        .bind(ttl_ms(ttl))
        .bind(run_id)
        .bind(shard_id)
        .bind(run_id)
        .bind(shard_id);
        let Some(row) = self.group_commit.write(script).await?.pop() else {
            super::sql::claimable_run::<SqliteDialect>(&self.reader, run_id).await?;
            return Ok(None);
        };
        let epoch = to_u64(row.try_get("epoch")?, "epoch")?;
        let checkpoint: Option<String> = row.try_get("checkpoint")?;
        let resume = ResumePoint {
            sequence: to_u64(row.try_get("sequence")?, "sequence")?,
            checkpoint: checkpoint.map(|text| from_json(&text, "checkpoint")).transpose()?,
            counters: from_json(&row.try_get::<String, _>("counters")?, "counters")?,
        };
        let shard = from_json::<ShardSpec>(&row.try_get::<String, _>("spec")?, "shard spec")?;
        tracing::debug!(run_id, shard_id, owner, epoch, "claimed shard");
        let lease =
            Lease { run_id: run_id.to_string(), shard_id: shard_id.to_string(), owner: owner.to_string(), epoch };
        Ok(Some(ClaimedShard { lease, resume, shard }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<(), Error> {
        let renewed = sqlx::query(concat!(
            "UPDATE shards SET lease_expires_at = ",
            now_ms!(),
            " + ?, updated_at = ",
            now_ms!(),
            held_lease!()
        ))
        .bind(ttl_ms(ttl))
        .bind(&lease.run_id)
        .bind(&lease.shard_id)
        .bind(to_i64(lease.epoch, "epoch")?)
        .execute(&self.writer)
        .await?
        .rows_affected();
        lease_held(renewed, lease)
    }

    async fn save_checkpoint(
        &self,
        lease: &Lease,
        sequence: u64,
        checkpoint: &Checkpoint,
        counters: &ShardCounters,
    ) -> Result<(), Error> {
        let saved = sqlx::query(concat!(
            "UPDATE shards SET sequence = ?, checkpoint = ?, counters = ?, updated_at = ",
            now_ms!(),
            held_lease!()
        ))
        .bind(to_i64(sequence, "sequence")?)
        .bind(to_json(checkpoint)?)
        .bind(to_json(counters)?)
        .bind(&lease.run_id)
        .bind(&lease.shard_id)
        .bind(to_i64(lease.epoch, "epoch")?)
        .execute(&self.writer)
        .await?
        .rows_affected();
        lease_held(saved, lease)
    }

    async fn finish_shard(
        &self,
        lease: &Lease,
        state: ShardState,
        reached: &ResumePoint,
        error: Option<&str>,
    ) -> Result<(), Error> {
        if !matches!(state, ShardState::Succeeded | ShardState::Failed) {
            return Err(Error::IllegalTransition { from: ShardState::Running.to_string(), to: state.to_string() });
        }
        let reason = error.map_or_else(|| format!("finished by {}", lease.owner), str::to_string);
        self.end_lease(lease, state, reached, error, &reason).await?;
        tracing::debug!(run_id = %lease.run_id, shard_id = %lease.shard_id, state = %state, "finished shard");
        Ok(())
    }

    async fn release_shard(&self, lease: &Lease, reached: &ResumePoint) -> Result<(), Error> {
        let reason = format!("released by {}", lease.owner);
        self.end_lease(lease, ShardState::Pending, reached, None, &reason).await
    }

    async fn request_split(&self, run_id: &str, shard_id: &str, reason: &str) -> Result<bool, Error> {
        let mut tx = self.begin().await?;
        let requested = sqlx::query(concat!(
            "UPDATE shards SET split_requested = 1, updated_at = ",
            now_ms!(),
            " WHERE run_id = ? AND shard_id = ? AND state = 'running'"
        ))
        .bind(run_id)
        .bind(shard_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if requested == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, run_id, Some(shard_id), SPLIT_REQUESTED, reason).await?;
        tx.commit().await?;
        tracing::debug!(run_id, shard_id, reason, "split requested");
        Ok(true)
    }

    async fn split_shard(&self, lease: &Lease, kept: &serde_json::Value, new_shard: &ShardSpec) -> Result<(), Error> {
        let kept = ShardSpec { id: lease.shard_id.clone(), descriptor: kept.clone() };
        // One writer connection: the transaction orders the splits of a run.
        let mut tx = self.begin().await?;
        let updated = sqlx::query(concat!(
            "UPDATE shards SET spec = ?, split_requested = 0, updated_at = ",
            now_ms!(),
            held_lease!()
        ))
        .bind(to_json(&kept)?)
        .bind(&lease.run_id)
        .bind(&lease.shard_id)
        .bind(to_i64(lease.epoch, "epoch")?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        lease_held(updated, lease)?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM shards WHERE run_id = ?")
            .bind(&lease.run_id)
            .fetch_one(&mut *tx)
            .await?;
        let position = last.map_or(Ok(0), |last| to_u64(last, "shard position").map(|last| last + 1))?;
        insert_shards(&mut tx, &lease.run_id, position, std::slice::from_ref(new_shard)).await?;
        let (split, parted) = split_reasons(lease, new_shard);
        insert_event(&mut tx, &lease.run_id, Some(&lease.shard_id), SPLIT, &split).await?;
        insert_event(&mut tx, &lease.run_id, Some(&new_shard.id), ShardState::Pending.as_str(), &parted).await?;
        tx.commit().await?;
        tracing::debug!(run_id = %lease.run_id, shard_id = %lease.shard_id, new_shard = %new_shard.id, "split shard");
        Ok(())
    }

    async fn set_next_state(&self, run_id: &str, next_state: &serde_json::Value) -> Result<(), Error> {
        let updated = sqlx::query(concat!(
            "UPDATE runs SET next_state = ?, updated_at = ",
            now_ms!(),
            " WHERE id = ? AND state = 'running'"
        ))
        .bind(next_state.to_string())
        .bind(run_id)
        .execute(&self.writer)
        .await?;
        if updated.rows_affected() == 0 {
            let run = self.run(run_id).await?;
            return Err(Error::RunNotRunning { run_id: run_id.to_string(), state: run.state });
        }
        Ok(())
    }

    async fn retry_run(&self, run_id: &str, reason: &str) -> Result<u64, Error> {
        let mut tx = self.begin().await?;
        let run = select_run(&mut tx, run_id).await?;
        if run.state != RunState::Failed {
            return Err(Error::IllegalTransition { from: run.state.to_string(), to: "running (retried)".into() });
        }
        sqlx::query(concat!(
            "INSERT INTO events (run_id, shard_id, at, kind, reason) SELECT run_id, shard_id, ",
            now_ms!(),
            ", 'pending', 'reset for retry' FROM shards WHERE run_id = ? AND state = 'failed' ORDER BY position"
        ))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        let reset = sqlx::query(concat!(
            "UPDATE shards SET state = 'pending', owner = NULL, lease_expires_at = NULL, error = NULL, updated_at = ",
            now_ms!(),
            " WHERE run_id = ? AND state = 'failed'"
        ))
        .bind(run_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let planned: Option<i64> = sqlx::query_scalar("SELECT 1 FROM shards WHERE run_id = ? LIMIT 1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
        let state = if planned.is_some() { RunState::Running } else { RunState::Pending };
        sqlx::query(concat!(
            "UPDATE runs SET state = ?, attempt = attempt + 1, message = ?, finished_at = NULL, updated_at = ",
            now_ms!(),
            " WHERE id = ?"
        ))
        .bind(state.as_str())
        .bind(reason)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut tx, run_id, None, state.as_str(), reason).await?;
        tx.commit().await?;
        Ok(reset)
    }

    async fn events(&self, run_id: &str) -> Result<Vec<Event>, Error> {
        let rows = sqlx::query("SELECT at, shard_id, kind, reason FROM events WHERE run_id = ? ORDER BY id")
            .bind(run_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Event {
                    at: time(row.try_get("at")?)?,
                    shard_id: row.try_get("shard_id")?,
                    kind: row.try_get("kind")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    async fn shards_to_follow(&self, run_id: &str, pending: u32, also: &[String]) -> Result<Vec<ShardRecord>, Error> {
        super::sql::shards_to_follow::<SqliteDialect>(&self.reader, run_id, pending, also).await
    }

    async fn shard(&self, run_id: &str, shard_id: &str) -> Result<ShardRecord, Error> {
        let row = sqlx::query(concat!("SELECT ", shard_columns!(), " FROM shards WHERE run_id = ? AND shard_id = ?"))
            .bind(run_id)
            .bind(shard_id)
            .fetch_optional(&self.reader)
            .await?;
        match row {
            Some(row) => decode_shard(&row),
            None => Err(Error::NotFound { what: format!("shard {shard_id} of run {run_id}") }),
        }
    }

    async fn enqueue_run(&self, new: QueuedRun) -> Result<(RunRecord, bool), Error> {
        let mut tx = self.begin().await?;
        if let Some(at) = new.request.scheduled_for {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT id FROM runs WHERE job = ? AND trigger = ? AND scheduled_for = ?")
                    .bind(&new.job)
                    .bind(new.request.trigger.as_str())
                    .bind(at.timestamp_millis())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(id) = existing {
                return Ok((select_run(&mut tx, &id).await?, false));
            }
        }
        let id = insert_run(&mut tx, &new, RunState::Pending, None).await?;
        let reason = match new.request.scheduled_for {
            Some(at) => format!("queued by {} for {}", new.request.trigger.as_str(), at.to_rfc3339()),
            None => format!("queued by {}", new.request.trigger.as_str()),
        };
        insert_event(&mut tx, &id, None, RunState::Pending.as_str(), &reason).await?;
        let run = select_run(&mut tx, &id).await?;
        tx.commit().await?;
        Ok((run, true))
    }

    async fn start_run(&self, run_id: &str, spec_hash: &str, plan: &Plan) -> Result<RunRecord, Error> {
        let mut tx = self.begin().await?;
        let run = select_run(&mut tx, run_id).await?;
        if run.state != RunState::Pending {
            return Err(Error::IllegalTransition { from: run.state.to_string(), to: "running (planned)".into() });
        }
        sqlx::query(concat!(
            "UPDATE runs SET state = 'running', spec_hash = ?, next_state = ?, started_at = ",
            now_ms!(),
            ", updated_at = ",
            now_ms!(),
            " WHERE id = ?"
        ))
        .bind(spec_hash)
        .bind(plan.next_state.as_ref().map(to_json).transpose()?)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        insert_shards(&mut tx, run_id, 0, &plan.shards).await?;
        let reason = format!("planned {} shards", plan.shards.len());
        insert_event(&mut tx, run_id, None, RunState::Running.as_str(), &reason).await?;
        let run = select_run(&mut tx, run_id).await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, Error> {
        let mut query = sqlx::QueryBuilder::new(concat!("SELECT ", run_columns!(), " FROM runs WHERE 1 = 1"));
        if let Some(job) = &filter.job {
            query.push(" AND job = ").push_bind(job.clone());
        }
        if !filter.states.is_empty() {
            query.push(" AND state IN (");
            let mut states = query.separated(", ");
            for state in &filter.states {
                states.push_bind(state.as_str());
            }
            query.push(")");
        }
        if let Some(trigger) = filter.trigger {
            query.push(" AND trigger = ").push_bind(trigger.as_str());
        }
        if let Some(at) = filter.scheduled_for {
            query.push(" AND scheduled_for = ").push_bind(at.timestamp_millis());
        }
        query.push(" ORDER BY created_at DESC, id DESC");
        if let Some(limit) = filter.limit {
            query.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter().map(decode_run).collect()
    }

    async fn expire_leases_of(&self, owner: &str) -> Result<u64, Error> {
        let expired = sqlx::query(concat!(
            "UPDATE shards SET lease_expires_at = ",
            now_ms!(),
            " WHERE owner = ? AND state = 'running' AND lease_expires_at > ",
            now_ms!()
        ))
        .bind(owner)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(expired)
    }

    async fn put_job(&self, name: &str, spec: &str, spec_hash: &str) -> Result<JobRecord, Error> {
        jobs::put(&self.writer, name, spec, spec_hash).await
    }

    async fn job(&self, name: &str) -> Result<JobRecord, Error> {
        jobs::get(&self.reader, name).await
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>, Error> {
        jobs::list(&self.reader).await
    }

    async fn set_job_enabled(&self, name: &str, enabled: bool) -> Result<(), Error> {
        jobs::set_enabled(&self.writer, name, enabled).await
    }

    async fn delete_job(&self, name: &str) -> Result<(), Error> {
        jobs::delete(&self.writer, name).await
    }

    async fn set_planned_through(&self, name: &str, at: DateTime<Utc>) -> Result<(), Error> {
        jobs::set_planned_through(&self.writer, name, at).await
    }

    async fn export(&self) -> Result<Snapshot, Error> {
        super::sql::export::<SqliteDialect>(&self.writer).await
    }

    async fn import(&self, snapshot: &Snapshot) -> Result<(), Error> {
        super::sql::import::<SqliteDialect>(&self.writer, snapshot).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_version_matches_the_migrations() {
        let newest = migrator().migrations.iter().map(|m| m.version).max();
        assert_eq!(newest, Some(SCHEMA_VERSION));
    }
}
