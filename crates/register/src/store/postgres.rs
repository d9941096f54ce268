//! The PostgreSQL backend, for distributed deployments: every server and
//! worker shares one database.
//!
//! Transactions run at PostgreSQL's default `READ COMMITTED`: a conditional
//! `UPDATE` that waited for a concurrent one re-checks its condition on the
//! row that one left, so of many claims on a shard exactly one succeeds.
//! Reads of a run before changing it take `FOR NO KEY UPDATE`, which does not
//! block the foreign-key checks of concurrent event inserts; a claim holds
//! `FOR SHARE` on its run, so it never races a pause. Times come from
//! `clock_timestamp()`, the server's clock as the statement runs.

use super::Error;
use super::sql::{Dialect, SqlStore, embedded_migrations, server_pool_options};

/// PostgreSQL's SQL.
#[derive(Debug)]
pub struct PostgresDialect;

impl Dialect for PostgresDialect {
    type Db = sqlx::Postgres;
    const NOW_MS: &'static str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
    const NUMBERED_PLACEHOLDERS: bool = true;
    const IDENTIFIER_QUOTE: char = '"';
    const BEGIN: Option<&'static str> = None;
    const LOCK_FOR_UPDATE: &'static str = " FOR NO KEY UPDATE";
    const LOCK_FOR_SHARE: &'static str = " FOR SHARE";
    const DATA_MODIFYING_WITH: bool = true;

    fn on_conflict_update(key: &str) -> String {
        format!("ON CONFLICT ({key}) DO UPDATE SET")
    }

    fn inserted(column: &str) -> String {
        format!("excluded.{column}")
    }

    fn migrator() -> sqlx::migrate::Migrator {
        embedded_migrations(&[
            ("init", include_str!("../../migrations/postgres/0001_init.sql")),
            ("platform", include_str!("../../migrations/postgres/0002_platform.sql")),
            ("split", include_str!("../../migrations/postgres/0003_split.sql")),
            ("follow", include_str!("../../migrations/postgres/0004_follow.sql")),
        ])
    }
}

/// A [`Store`](super::Store) in a PostgreSQL database.
pub type PostgresStore = SqlStore<PostgresDialect>;

impl SqlStore<PostgresDialect> {
    /// Connects to the database at `url` (`postgres://user@host:port/database`)
    /// and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = server_pool_options::<sqlx::Postgres>().connect(url).await?;
        PostgresDialect::migrator().run(&pool).await?;
        tracing::debug!("opened postgres store");
        Ok(SqlStore::new(pool.clone(), pool))
    }
}
