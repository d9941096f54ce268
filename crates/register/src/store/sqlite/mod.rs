//! The SQLite [`Store`]: one file, in WAL mode, for `haul run` and the
//! embedded server.
//!
//! Writes go through a pool of one connection, so the writers of one process
//! queue in the pool instead of fighting over SQLite's lock; reads use a
//! separate small pool and never wait for writers (WAL). Other processes on
//! the same file are handled by the busy timeout. Every lease-conditional
//! write is a single `UPDATE … WHERE epoch = ? AND lease_expires_at > now`
//! whose affected-row count decides, and multi-statement transactions begin
//! with `BEGIN IMMEDIATE` so they never fail on a lock upgrade. Times are
//! integer milliseconds since the Unix epoch from SQLite's own clock.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use haul_collect_core::job::Mode;
use haul_collect_core::plugin::{Checkpoint, ShardSpec};
use haul_collect_core::progress::ShardCounters;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use super::{Error, Store};
use crate::model::{Event, Lease, NewRun, RunRecord, RunState, ShardRecord, ShardState};

/// The version of the newest migration in `migrations/sqlite`; a store file
/// migrated by a newer haul is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of the read pool.
const READERS: u32 = 4;

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
        "id, job, spec_hash, mode, state, next_state, message, created_at, updated_at"
    };
}

macro_rules! shard_columns {
    () => {
        "run_id, spec, state, sequence, checkpoint, counters, epoch, owner, error"
    };
}

/// A [`Store`] in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
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
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        migrator().run(&writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(READERS).connect_with(options).await?;
        tracing::debug!(path = %path.display(), "opened sqlite store");
        Ok(SqliteStore { writer, reader })
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

    async fn run_exists(&self, run_id: &str) -> Result<bool, Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = ?").bind(run_id).fetch_optional(&self.reader).await?;
        Ok(found.is_some())
    }
}

/// The migrations, embedded in the binary.
fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(vec![Migration::new(
        1,
        "init".into(),
        MigrationType::Simple,
        include_str!("../../migrations/sqlite/0001_init.sql").into_sql_str(),
        false,
    )])
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

    async fn create_run(&self, new: NewRun) -> Result<RunRecord, Error> {
        let id = uuid::Uuid::now_v7().to_string();
        let next_state = new.plan.next_state.as_ref().map(to_json).transpose()?;
        let counters = to_json(&ShardCounters::default())?;
        let mut tx = self.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO runs (id, job, spec_hash, mode, state, next_state, message, created_at, updated_at) ",
            "VALUES (?, ?, ?, ?, ?, ?, NULL, ",
            now_ms!(),
            ", ",
            now_ms!(),
            ")"
        ))
        .bind(&id)
        .bind(&new.job)
        .bind(&new.spec_hash)
        .bind(mode_name(new.mode))
        .bind(RunState::Running.as_str())
        .bind(next_state)
        .execute(&mut *tx)
        .await?;
        for (position, spec) in new.plan.shards.iter().enumerate() {
            sqlx::query(concat!(
                "INSERT INTO shards (run_id, shard_id, position, spec, state, sequence, checkpoint, counters, ",
                "epoch, owner, lease_expires_at, error, updated_at) ",
                "VALUES (?, ?, ?, ?, ?, 0, NULL, ?, 0, NULL, NULL, NULL, ",
                now_ms!(),
                ")"
            ))
            .bind(&id)
            .bind(&spec.id)
            .bind(to_i64(position as u64, "shard position")?)
            .bind(to_json(spec)?)
            .bind(ShardState::Pending.as_str())
            .bind(&counters)
            .execute(&mut *tx)
            .await?;
        }
        let reason = format!("created with {} shards", new.plan.shards.len());
        insert_event(&mut tx, &id, None, RunState::Running.as_str(), &reason).await?;
        let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM runs WHERE id = ?"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let run = decode_run(&row)?;
        tx.commit().await?;
        tracing::debug!(run_id = %id, job = %new.job, shards = new.plan.shards.len(), "created run");
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
            " WHERE id = ? AND state = ?"
        ))
        .bind(state.as_str())
        .bind(reason)
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
    ) -> Result<Option<Lease>, Error> {
        let mut tx = self.begin().await?;
        let run_state: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
        let run_state: RunState = parse_state(&run_state)?;
        if run_state != RunState::Running {
            return Err(Error::RunNotRunning { run_id: run_id.to_string(), state: run_state });
        }
        let claimed = sqlx::query(concat!(
            "UPDATE shards SET state = 'running', epoch = epoch + 1, owner = ?, error = NULL, ",
            "lease_expires_at = ",
            now_ms!(),
            " + ?, updated_at = ",
            now_ms!(),
            " WHERE run_id = ? AND shard_id = ? ",
            "AND (state = 'pending' OR (state = 'running' AND lease_expires_at <= ",
            now_ms!(),
            "))"
        ))
        .bind(owner)
        .bind(ttl_ms(ttl))
        .bind(run_id)
        .bind(shard_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(None);
        }
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM shards WHERE run_id = ? AND shard_id = ?")
            .bind(run_id)
            .bind(shard_id)
            .fetch_one(&mut *tx)
            .await?;
        let epoch = to_u64(epoch, "epoch")?;
        let reason = format!("claimed by {owner} at epoch {epoch}");
        insert_event(&mut tx, run_id, Some(shard_id), ShardState::Running.as_str(), &reason).await?;
        tx.commit().await?;
        tracing::debug!(run_id, shard_id, owner, epoch, "claimed shard");
        Ok(Some(Lease { run_id: run_id.to_string(), shard_id: shard_id.to_string(), owner: owner.to_string(), epoch }))
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
        counters: &ShardCounters,
        error: Option<&str>,
    ) -> Result<(), Error> {
        if !matches!(state, ShardState::Succeeded | ShardState::Failed) {
            return Err(Error::IllegalTransition { from: ShardState::Running.to_string(), to: state.to_string() });
        }
        let mut tx = self.begin().await?;
        let finished = sqlx::query(concat!(
            "UPDATE shards SET state = ?, counters = ?, error = ?, lease_expires_at = NULL, updated_at = ",
            now_ms!(),
            held_lease!()
        ))
        .bind(state.as_str())
        .bind(to_json(counters)?)
        .bind(error)
        .bind(&lease.run_id)
        .bind(&lease.shard_id)
        .bind(to_i64(lease.epoch, "epoch")?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        lease_held(finished, lease)?;
        let reason = error.map_or_else(|| format!("finished by {}", lease.owner), str::to_string);
        insert_event(&mut tx, &lease.run_id, Some(&lease.shard_id), state.as_str(), &reason).await?;
        tx.commit().await?;
        tracing::debug!(run_id = %lease.run_id, shard_id = %lease.shard_id, state = %state, "finished shard");
        Ok(())
    }

    async fn release_shard(&self, lease: &Lease) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let released = sqlx::query(concat!(
            "UPDATE shards SET state = 'pending', owner = NULL, lease_expires_at = NULL, updated_at = ",
            now_ms!(),
            held_lease!()
        ))
        .bind(&lease.run_id)
        .bind(&lease.shard_id)
        .bind(to_i64(lease.epoch, "epoch")?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        lease_held(released, lease)?;
        let reason = format!("released by {}", lease.owner);
        insert_event(&mut tx, &lease.run_id, Some(&lease.shard_id), ShardState::Pending.as_str(), &reason).await?;
        tx.commit().await?;
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

    async fn reset_failed_shards(&self, run_id: &str) -> Result<u64, Error> {
        let mut tx = self.begin().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = ?").bind(run_id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Err(Error::NotFound { what: format!("run {run_id}") });
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
}

fn decode_run(row: &SqliteRow) -> Result<RunRecord, Error> {
    let next_state: Option<String> = row.try_get("next_state")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        job: row.try_get("job")?,
        spec_hash: row.try_get("spec_hash")?,
        mode: parse_mode(&row.try_get::<String, _>("mode")?)?,
        state: parse_state(&row.try_get::<String, _>("state")?)?,
        next_state: next_state.map(|text| from_json(&text, "next state")).transpose()?,
        created_at: time(row.try_get("created_at")?)?,
        updated_at: time(row.try_get("updated_at")?)?,
        message: row.try_get("message")?,
    })
}

fn decode_shard(row: &SqliteRow) -> Result<ShardRecord, Error> {
    let checkpoint: Option<String> = row.try_get("checkpoint")?;
    Ok(ShardRecord {
        run_id: row.try_get("run_id")?,
        spec: from_json::<ShardSpec>(&row.try_get::<String, _>("spec")?, "shard spec")?,
        state: parse_state(&row.try_get::<String, _>("state")?)?,
        sequence: to_u64(row.try_get("sequence")?, "sequence")?,
        checkpoint: checkpoint.map(|text| from_json(&text, "checkpoint")).transpose()?,
        counters: from_json(&row.try_get::<String, _>("counters")?, "counters")?,
        epoch: to_u64(row.try_get("epoch")?, "epoch")?,
        owner: row.try_get("owner")?,
        error: row.try_get("error")?,
    })
}

fn parse_state<S: FromStr<Err = crate::model::UnknownState>>(text: &str) -> Result<S, Error> {
    text.parse().map_err(|error: crate::model::UnknownState| Error::Corrupt(error.to_string()))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Full => "full",
        Mode::Incremental => "incremental",
        Mode::Range => "range",
    }
}

fn parse_mode(text: &str) -> Result<Mode, Error> {
    match text {
        "full" => Ok(Mode::Full),
        "incremental" => Ok(Mode::Incremental),
        "range" => Ok(Mode::Range),
        other => Err(Error::Corrupt(format!("unknown mode `{other}`"))),
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|error| Error::Corrupt(format!("cannot encode json: {error}")))
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|error| Error::Corrupt(format!("{what}: {error}")))
}

fn time(millis: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| Error::Corrupt(format!("time {millis} out of range")))
}

/// A fenced update that changed no row means the lease is gone.
fn lease_held(rows_affected: u64, lease: &Lease) -> Result<(), Error> {
    if rows_affected == 0 { Err(Error::lease_lost(lease)) } else { Ok(()) }
}

fn to_i64(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Corrupt(format!("{what} {value} does not fit the store")))
}

fn to_u64(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::Corrupt(format!("negative {what} {value}")))
}

/// A lease duration in milliseconds, at least 1.
fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_match_serde() {
        for mode in [Mode::Full, Mode::Incremental, Mode::Range] {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode_name(mode));
            assert_eq!(parse_mode(mode_name(mode)).unwrap(), mode);
        }
        assert!(matches!(parse_mode("Full"), Err(Error::Corrupt(_))));
    }

    #[test]
    fn ttl_is_whole_positive_milliseconds() {
        assert_eq!(ttl_ms(Duration::from_millis(50)), 50);
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::MAX), i64::MAX / 2);
    }

    #[test]
    fn schema_version_matches_the_migrations() {
        let newest = migrator().migrations.iter().map(|m| m.version).max();
        assert_eq!(newest, Some(SCHEMA_VERSION));
    }
}
