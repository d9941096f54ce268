//! The MySQL and MariaDB backend, for distributed deployments: every server
//! and worker shares one database.
//!
//! Sessions run at `READ COMMITTED`, as on PostgreSQL, so that an `UPDATE`
//! locks only the rows it changes and no gap locks serialize inserts; a
//! conditional `UPDATE` always reads the latest committed row, so of many
//! claims on a shard exactly one succeeds. Reads of a run before changing it
//! take `FOR UPDATE`; a claim holds `LOCK IN SHARE MODE` on its run (MariaDB
//! has no `FOR SHARE`), so it never races a pause. MariaDB has no `UPDATE …
//! RETURNING`: a claim reads its new epoch back inside its transaction. Times
//! come from `NOW(3)` in the session's UTC time zone.

use sqlx::Executor;

use super::Error;
use super::sql::{Dialect, SqlStore, embedded_migrations, server_pool_options};

/// MySQL's and MariaDB's SQL.
#[derive(Debug)]
pub struct MySqlDialect;

impl Dialect for MySqlDialect {
    type Db = sqlx::MySql;
    const NOW_MS: &'static str = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)";
    const NUMBERED_PLACEHOLDERS: bool = false;
    const IDENTIFIER_QUOTE: char = '`';
    const BEGIN: Option<&'static str> = None;
    const LOCK_FOR_UPDATE: &'static str = " FOR UPDATE";
    const LOCK_FOR_SHARE: &'static str = " LOCK IN SHARE MODE";
    const DATA_MODIFYING_WITH: bool = false;

    fn on_conflict_update(_key: &str) -> String {
        "ON DUPLICATE KEY UPDATE".to_string()
    }

    fn inserted(column: &str) -> String {
        format!("VALUES({column})")
    }

    fn migrator() -> sqlx::migrate::Migrator {
        embedded_migrations(&[
            ("init", include_str!("../../migrations/mysql/0001_init.sql")),
            ("platform", include_str!("../../migrations/mysql/0002_platform.sql")),
            ("split", include_str!("../../migrations/mysql/0003_split.sql")),
            ("follow", include_str!("../../migrations/mysql/0004_follow.sql")),
        ])
    }
}

/// A [`Store`](super::Store) in a MySQL or MariaDB database.
pub type MySqlStore = SqlStore<MySqlDialect>;

impl SqlStore<MySqlDialect> {
    /// Connects to the database at `url` (`mysql://user@host:port/database`,
    /// or `mariadb://…`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = server_pool_options::<sqlx::MySql>()
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        MySqlDialect::migrator().run(&pool).await?;
        tracing::debug!("opened mysql store");
        Ok(SqlStore::new(pool.clone(), pool))
    }
}
