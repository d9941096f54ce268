//! SQLite's [`Dialect`], for the statements this store shares with the
//! server databases' (export and import of a [`Snapshot`](crate::store::Snapshot)).

use crate::store::sql::Dialect;

/// SQLite's SQL. Transactions begin with `BEGIN IMMEDIATE` so they never fail
/// on a lock upgrade, which also makes row lock clauses needless.
#[derive(Debug)]
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    type Db = sqlx::Sqlite;
    const NOW_MS: &'static str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";
    const NUMBERED_PLACEHOLDERS: bool = false;
    const IDENTIFIER_QUOTE: char = '"';
    const BEGIN: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const LOCK_FOR_UPDATE: &'static str = "";
    const LOCK_FOR_SHARE: &'static str = "";
    const DATA_MODIFYING_WITH: bool = false;

    fn on_conflict_update(key: &str) -> String {
        format!("ON CONFLICT ({key}) DO UPDATE SET")
    }

    fn inserted(column: &str) -> String {
        format!("excluded.{column}")
    }

    fn migrator() -> sqlx::migrate::Migrator {
        super::migrator()
    }
}
