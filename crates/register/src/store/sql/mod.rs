//! The [`Store`](super::Store) contract written once in SQL for the server
//! databases — PostgreSQL and MySQL/MariaDB — as [`SqlStore`] over a
//! [`Dialect`]. SQLite keeps its own store, tuned for one file, and uses its
//! dialect for the statements all backends share: export and import of a
//! [`Snapshot`].
//!
//! Statements are written once, in standard SQL with `?` placeholders, the
//! `{now}` token for the database's clock in milliseconds since the Unix
//! epoch, and `"double quoted"` identifiers; [`Dialect::sql`] turns them into
//! the backend's text (`$1` placeholders, backquotes, its clock expression).
//! Everything else a backend differs in — how a transaction begins, row lock
//! clauses, the upsert clause, its migrations and connection settings — is
//! one item of its [`Dialect`].
//!
//! Concurrency rests on the database, never on reading then writing: every
//! lease-conditional write is one `UPDATE … WHERE epoch = ? AND
//! lease_expires_at > now` whose affected-row count decides; statements that
//! read a run before changing it lock its row (`FOR UPDATE`, or the shared
//! lock a claim takes inside its `UPDATE`, so that claims never race a
//! pause); `enqueue_run` leans on the unique index of job, trigger and
//! schedule time. Only where the dialect has a data-modifying `WITH`
//! ([`Dialect::DATA_MODIFYING_WITH`], PostgreSQL) does a claim or the end of
//! a lease take `RETURNING`, to write its event in the same statement (the
//! count that decides is then that of the events written); MariaDB lacks it
//! and runs a short transaction instead.

pub(super) mod codec;
mod contract;
mod follow;
mod snapshot;

use std::fmt::Write as _;
use std::marker::PhantomData;

use haul_collect_core::plugin::ShardSpec;
use haul_collect_core::progress::ShardCounters;
use haul_collect_core::runtime::ResumePoint;
use sqlx::pool::PoolOptions;
use sqlx::{AssertSqlSafe, Database, Pool};

pub use codec::Columns;
pub(crate) use follow::shards_to_follow;
pub use snapshot::{Cell, Snapshot, TableRows};
pub(crate) use snapshot::{export, import};

use super::Error;
use crate::model::{Lease, QueuedRun, RunRecord, RunState, ShardState};
use codec::{decode_run, lease_held, mode_name, to_i64, to_json};

/// What one SQL backend does differently; see the module documentation.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Database<QueryResult: RowsAffected, Row: Columns>;

    /// The current time in milliseconds since the Unix epoch by the
    /// database's clock, as an integer expression.
    const NOW_MS: &'static str;

    /// Whether placeholders are numbered (`$1`) rather than `?`.
    const NUMBERED_PLACEHOLDERS: bool;

    /// The character that quotes identifiers.
    const IDENTIFIER_QUOTE: char;

    /// The statement that begins a write transaction, when not the driver's.
    const BEGIN: Option<&'static str>;

    /// Appended to a `SELECT` of the row a transaction is about to change.
    const LOCK_FOR_UPDATE: &'static str;

    /// Appended to a `SELECT` of a row that must not change until commit.
    const LOCK_FOR_SHARE: &'static str;

    /// Whether an `UPDATE` can return the rows it changed to an `INSERT` in
    /// the same statement (a data-modifying `WITH`): then claiming a shard
    /// and ending a lease, each with its event, are one statement apiece
    /// instead of a transaction of several.
    const DATA_MODIFYING_WITH: bool;

    /// The clause after an `INSERT` that turns a conflict on `key` into an
    /// update, up to and including `SET`.
    fn on_conflict_update(key: &str) -> String;

    /// The value an upsert tried to insert into `column`.
    fn inserted(column: &str) -> String;

    /// The backend's migrations, embedded in the binary.
    fn migrator() -> sqlx::migrate::Migrator;

    /// A statement template in this backend's SQL.
    fn sql(template: &str) -> AssertSqlSafe<String> {
        let mut text = String::with_capacity(template.len() + 64);
        let mut placeholders = 0;
        for (i, part) in template.split("{now}").enumerate() {
            if i > 0 {
                text.push_str(Self::NOW_MS);
            }
            for character in part.chars() {
                match character {
                    '?' if Self::NUMBERED_PLACEHOLDERS => {
                        placeholders += 1;
                        let _ = write!(text, "${placeholders}");
                    }
                    '"' => text.push(Self::IDENTIFIER_QUOTE),
                    other => text.push(other),
                }
            }
        }
        AssertSqlSafe(text)
    }
}

/// How many rows a statement changed (or matched, on MySQL, whose
/// connections report found rows).
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

macro_rules! rows_affected {
    ($($result:ty),+) => {
        $(impl RowsAffected for $result {
            fn rows_affected(&self) -> u64 {
                <$result>::rows_affected(self)
            }
        })+
    };
}

rows_affected!(sqlx::sqlite::SqliteQueryResult, sqlx::postgres::PgQueryResult, sqlx::mysql::MySqlQueryResult);

/// A [`Store`](super::Store) in a SQL database. Writes go through `writer`,
/// reads through `reader`: the same pool on a server database; one writer
/// connection and a few readers on a SQLite file.
#[derive(Debug)]
pub struct SqlStore<D: Dialect> {
    writer: Pool<D::Db>,
    reader: Pool<D::Db>,
    dialect: PhantomData<D>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore { writer: self.writer.clone(), reader: self.reader.clone(), dialect: PhantomData }
    }
}

/// The connection pool of a server database, made to ride out a restart of
/// the server: each connection is checked before it is handed out (one that
/// the restart closed is replaced), and a caller waits at most
/// [`ACQUIRE_TIMEOUT`] for a connection. While the server is down the pool
/// keeps trying to connect for that long, ever more slowly but never more
/// than a fifth of it apart, so it reconnects within half a second of the
/// server's return; a caller still waiting then gets a transient error
/// ([`Error::is_transient`]) to retry, and log, on its own terms — the shard
/// ledger does — rather than hanging unseen.
pub(super) fn server_pool_options<DB: Database>() -> PoolOptions<DB> {
    PoolOptions::new().max_connections(SERVER_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).test_before_acquire(true)
}

/// Connections of a server database's pool.
const SERVER_CONNECTIONS: u32 = 10;

/// How long a store operation waits for a pooled connection: ample for a
/// busy pool (statements take milliseconds), short beside a lease's ttl.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The migrations of a backend from its SQL files, numbered from 1.
pub(super) fn embedded_migrations(files: &[(&'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let migrations = files
        .iter()
        .zip(1..)
        .map(|((name, sql), version)| {
            Migration::new(version, (*name).into(), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: sqlx::Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: sqlx::IntoArguments<D::Db>,
    for<'q> &'q str: sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, D::Db>,
    i64: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    Option<i64>: for<'q> sqlx::Encode<'q, D::Db>,
    bool: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
{
    /// A store over pools whose database is migrated already.
    pub(super) fn new(writer: Pool<D::Db>, reader: Pool<D::Db>) -> Self {
        SqlStore { writer, reader, dialect: PhantomData }
    }

    /// The version of the newest migration applied to the database.
    pub async fn schema_version(&self) -> Result<i64, Error> {
        let row = sqlx::query(D::sql("SELECT MAX(version) AS version FROM _sqlx_migrations WHERE success"))
            .fetch_one(&self.reader)
            .await?;
        Ok(row.optional_integer("version")?.unwrap_or(0))
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, D::Db>, Error> {
        Ok(match D::BEGIN {
            Some(statement) => self.writer.begin_with(statement).await?,
            None => self.writer.begin().await?,
        })
    }

    async fn run_exists(&self, run_id: &str) -> Result<bool, Error> {
        let found =
            sqlx::query(D::sql("SELECT id FROM runs WHERE id = ?")).bind(run_id).fetch_optional(&self.reader).await?;
        Ok(found.is_some())
    }

    /// Fails a claimed shard whose row cannot be decoded, so that it is not
    /// claimed over and over (on PostgreSQL the claim commits with its one
    /// statement, before the row is decoded); returns the decoding error.
    async fn fail_corrupt_claim(&self, run_id: &str, shard_id: &str, owner: &str, error: Error) -> Error {
        let reason = format!("the shard's stored row cannot be read: {error}");
        let failed = sqlx::query(D::sql(
            "UPDATE shards SET state = 'failed', error = ?, lease_expires_at = NULL, updated_at = {now} \
             WHERE run_id = ? AND shard_id = ? AND owner = ? AND state = 'running'",
        ))
        .bind(reason.as_str())
        .bind(run_id)
        .bind(shard_id)
        .bind(owner)
        .execute(&self.writer)
        .await;
        if let Err(failing) = failed {
            tracing::warn!(run_id, shard_id, error = %failing, "failing a shard whose row cannot be read failed");
        }
        error
    }

    async fn insert_event(
        connection: &mut <D::Db as Database>::Connection,
        run_id: &str,
        shard_id: Option<&str>,
        kind: &str,
        reason: &str,
    ) -> Result<(), Error> {
        sqlx::query(D::sql("INSERT INTO events (run_id, shard_id, at, kind, reason) VALUES (?, ?, {now}, ?, ?)"))
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
        connection: &mut <D::Db as Database>::Connection,
        run: &QueuedRun,
        state: RunState,
        next_state: Option<&serde_json::Value>,
    ) -> Result<String, Error> {
        let id = uuid::Uuid::now_v7().to_string();
        let request = &run.request;
        let next_state = next_state.map(to_json).transpose()?;
        let params = request.params.as_ref().map(to_json).transpose()?;
        sqlx::query(D::sql(concat!(
            "INSERT INTO runs (id, job, spec_hash, mode, state, next_state, message, created_at, updated_at, ",
            "\"trigger\", scheduled_for, priority, pool, params, attempt, started_at) ",
            "VALUES (?, ?, ?, ?, ?, ?, NULL, {now}, {now}, ?, ?, ?, ?, ?, ?, CASE WHEN ? THEN {now} END)"
        )))
        .bind(id.as_str())
        .bind(run.job.as_str())
        .bind(run.spec_hash.as_str())
        .bind(mode_name(run.mode))
        .bind(state.as_str())
        .bind(next_state.as_deref())
        .bind(request.trigger.as_str())
        .bind(request.scheduled_for.map(|at| at.timestamp_millis()))
        .bind(i64::from(request.priority))
        .bind(request.pool.as_str())
        .bind(params.as_deref())
        .bind(i64::from(request.attempt))
        .bind(state == RunState::Running)
        .execute(connection)
        .await?;
        Ok(id)
    }

    /// Inserts `shards`, pending, in order from position `first`.
    async fn insert_shards(
        connection: &mut <D::Db as Database>::Connection,
        run_id: &str,
        first: u64,
        shards: &[ShardSpec],
    ) -> Result<(), Error> {
        let counters = to_json(&ShardCounters::default())?;
        let specs = shards.iter().map(to_json).collect::<Result<Vec<String>, Error>>()?;
        let rows = (first..).zip(shards.iter().zip(&specs)).collect::<Vec<_>>();
        for chunk in insert_chunks(&rows, |(_, (_, spec))| spec.len()) {
            let row = "(?, ?, ?, ?, 'pending', 0, NULL, ?, 0, NULL, NULL, NULL, {now})";
            let statement = format!(
                "INSERT INTO shards (run_id, shard_id, position, spec, state, sequence, checkpoint, counters, \
                 epoch, owner, lease_expires_at, error, updated_at) VALUES {}",
                vec![row; chunk.len()].join(", ")
            );
            let mut insert = sqlx::query(D::sql(&statement));
            for (position, (shard, spec)) in chunk {
                insert = insert
                    .bind(run_id)
                    .bind(shard.id.as_str())
                    .bind(to_i64(*position, "shard position")?)
                    .bind(spec.as_str())
                    .bind(counters.as_str());
            }
            insert.execute(&mut *connection).await?;
        }
        Ok(())
    }

    /// Ends a lease: the shard moves to `state` (pending for a release, which
    /// clears the owner) with `reached` saved — its checkpoint only when set —
    /// and an event recorded, in one transaction conditional on the lease.
    async fn end_lease(
        &self,
        lease: &Lease,
        state: ShardState,
        reached: &ResumePoint,
        error: Option<&str>,
        reason: &str,
    ) -> Result<(), Error> {
        let checkpoint = reached.checkpoint.as_ref().map(to_json).transpose()?;
        let update = format!(
            "UPDATE shards SET state = ?, sequence = ?, checkpoint = COALESCE(?, checkpoint), counters = ?, \
             error = ?, owner = CASE WHEN ? THEN NULL ELSE owner END, lease_expires_at = NULL, \
             updated_at = {{now}}{HELD_LEASE}"
        );
        let statement = match D::DATA_MODIFYING_WITH {
            true => format!(
                "WITH ended AS ({update} RETURNING run_id, shard_id) INSERT INTO events (run_id, shard_id, at, kind, reason) \
                 SELECT run_id, shard_id, {{now}}, ?, ? FROM ended"
            ),
            false => update,
        };
        let query = sqlx::query(D::sql(&statement))
            .bind(state.as_str())
            .bind(to_i64(reached.sequence, "sequence")?)
            .bind(checkpoint.as_deref())
            .bind(to_json(&reached.counters)?.as_str())
            .bind(error)
            .bind(state == ShardState::Pending)
            .bind(lease.run_id.as_str())
            .bind(lease.shard_id.as_str())
            .bind(to_i64(lease.epoch, "epoch")?);
        if D::DATA_MODIFYING_WITH {
            let recorded = query.bind(state.as_str()).bind(reason).execute(&self.writer).await?.rows_affected();
            return lease_held(recorded, lease);
        }
        let mut tx = self.begin().await?;
        let ended = query.execute(&mut *tx).await?.rows_affected();
        lease_held(ended, lease)?;
        Self::insert_event(&mut tx, &lease.run_id, Some(&lease.shard_id), state.as_str(), reason).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The run queued already for the job, trigger and schedule time of `run`, if any.
    async fn queued_run(&self, run: &QueuedRun) -> Result<Option<RunRecord>, Error> {
        let Some(at) = run.request.scheduled_for else {
            return Ok(None);
        };
        let row = sqlx::query(D::sql(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE job = ? AND \"trigger\" = ? AND scheduled_for = ?"
        )))
        .bind(run.job.as_str())
        .bind(run.request.trigger.as_str())
        .bind(at.timestamp_millis())
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(decode_run).transpose()
    }

    /// A run, read under `lock` (one of the dialect's lock clauses, or "").
    async fn select_run(
        connection: &mut <D::Db as Database>::Connection,
        run_id: &str,
        lock: &str,
    ) -> Result<RunRecord, Error> {
        let row = sqlx::query(D::sql(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?{lock}")))
            .bind(run_id)
            .fetch_optional(connection)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
        decode_run(&row)
    }
}

/// The columns of a run's [`RunStatus`](crate::model::RunStatus).
const RUN_STATUS_COLUMNS: &str = "id, job, spec_hash, state, pool";

const RUN_COLUMNS: &str = "id, job, spec_hash, mode, state, next_state, message, created_at, updated_at, \
     \"trigger\", scheduled_for, priority, pool, params, attempt, started_at, finished_at";

const SHARD_COLUMNS: &str =
    "run_id, spec, state, sequence, checkpoint, counters, epoch, owner, lease_expires_at, error, split_requested";

/// Why a claim changed nothing, read from `pool`: `Ok` when the run is
/// running (the shard is not free), [`Error::RunNotRunning`] or
/// [`Error::NotFound`] otherwise. Every backend's store asks it.
pub(in crate::store) async fn claimable_run<D: Dialect>(pool: &Pool<D::Db>, run_id: &str) -> Result<(), Error>
where
    for<'c> &'c Pool<D::Db>: sqlx::Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: sqlx::IntoArguments<D::Db>,
    for<'q> &'q str: sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    <D::Db as Database>::Row: Columns,
{
    let run = sqlx::query(D::sql("SELECT state FROM runs WHERE id = ?"))
        .bind(run_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
    match codec::parse_state(&run.text("state")?)? {
        RunState::Running => Ok(()),
        state => Err(Error::RunNotRunning { run_id: run_id.to_string(), state }),
    }
}

/// At most how many shards one `INSERT` of a plan carries: 5 parameters
/// each, well under every backend's limit of 65,535 per statement.
const SHARDS_PER_INSERT: usize = 1000;

/// At most how many bytes of shard specs one `INSERT` of a plan carries, well
/// under MySQL's default `max_allowed_packet` of 16 MiB (a single larger
/// spec goes alone).
const SPEC_BYTES_PER_INSERT: usize = 4 << 20;

/// `rows` in runs of at most [`SHARDS_PER_INSERT`] rows and
/// [`SPEC_BYTES_PER_INSERT`] bytes (by `bytes`), each holding at least one row.
fn insert_chunks<T>(rows: &[T], bytes: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (index, row) in rows.iter().enumerate() {
        let row_bytes = bytes(row);
        if index > start && (index - start == SHARDS_PER_INSERT || size + row_bytes > SPEC_BYTES_PER_INSERT) {
            chunks.push(&rows[start..index]);
            (start, size) = (index, 0);
        }
        size += row_bytes;
    }
    if start < rows.len() {
        chunks.push(&rows[start..]);
    }
    chunks
}

/// The condition that lets an update through only for the holder of a live
/// lease: the shard's current epoch, still running, and the lease unexpired
/// by the store's clock. Binds run id, shard id and epoch, in that order.
const HELD_LEASE: &str =
    " WHERE run_id = ? AND shard_id = ? AND epoch = ? AND state = 'running' AND lease_expires_at > {now}";

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn insert_chunks_keep_every_row_in_order_within_both_limits(
            sizes in prop_oneof![Just(5_000usize), Just(3 << 20)]
                .prop_flat_map(|largest| proptest::collection::vec(0..largest, 0..2_500)),
        ) {
            let chunks = insert_chunks(&sizes, |size| *size);
            prop_assert_eq!(chunks.concat(), sizes.clone());
            for chunk in &chunks {
                prop_assert!(!chunk.is_empty() && chunk.len() <= SHARDS_PER_INSERT);
                let bytes: usize = chunk.iter().sum();
                prop_assert!(chunk.len() == 1 || bytes <= SPEC_BYTES_PER_INSERT, "{} bytes in {} rows", bytes, chunk.len());
            }
        }
    }
}
