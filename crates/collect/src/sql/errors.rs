//! Which database errors are worth retrying. A transient error (lost
//! connection, pool timeout, deadlock, serialization failure, a server
//! restarting or out of connections, a busy SQLite file) is marked with
//! [`transient`] so the runtime reopens the shard at its last checkpoint; any
//! other error is permanent.

use haul_collect_core::transient::transient;
use sqlx::error::DatabaseError;

/// PostgreSQL SQLSTATEs that a retry can cure: serialization failure,
/// deadlock, admin/crash shutdown, cannot connect now.
const POSTGRES_TRANSIENT_STATES: [&str; 5] = ["40001", "40P01", "57P01", "57P02", "57P03"];
/// PostgreSQL SQLSTATE class `08`: connection exceptions.
const POSTGRES_CONNECTION_CLASS: &str = "08";
/// MySQL error numbers: deadlock, lock wait timeout, server gone away, lost
/// connection, too many connections.
const MYSQL_TRANSIENT_NUMBERS: [u16; 5] = [1213, 1205, 2006, 2013, 1040];
/// SQLite primary result codes: SQLITE_BUSY, SQLITE_LOCKED.
const SQLITE_TRANSIENT_CODES: [i64; 2] = [5, 6];

/// Converts a driver error into an `anyhow` error, marked transient when a retry may succeed.
pub fn classify(error: sqlx::Error) -> anyhow::Error {
    if is_transient(&error) { transient(error) } else { anyhow::Error::new(error) }
}

fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(database) => is_transient_database_error(database.as_ref()),
        _ => false,
    }
}

fn is_transient_database_error(error: &dyn DatabaseError) -> bool {
    if let Some(mysql) = error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return MYSQL_TRANSIENT_NUMBERS.contains(&mysql.number());
    }
    let Some(code) = error.code() else { return false };
    if error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        return POSTGRES_TRANSIENT_STATES.contains(&code.as_ref()) || code.starts_with(POSTGRES_CONNECTION_CLASS);
    }
    if error.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Extended result codes carry the primary code in their low byte.
        return code.parse::<i64>().is_ok_and(|extended| SQLITE_TRANSIENT_CODES.contains(&(extended & 0xff)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_collect_core::transient::is_transient as marked_transient;

    #[test]
    fn io_and_pool_errors_are_transient() {
        let reset = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert!(marked_transient(&classify(reset)));
        assert!(marked_transient(&classify(sqlx::Error::PoolTimedOut)));
        assert!(!marked_transient(&classify(sqlx::Error::RowNotFound)));
        assert!(!marked_transient(&classify(sqlx::Error::Protocol("bad".into()))));
    }
}
