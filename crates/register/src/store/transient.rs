//! Which store errors are worth trying again ([`Error::is_transient`]): the
//! database could not be reached or is restarting, or it gave up a
//! transaction on a conflict. Callers that can wait — the shard ledger —
//! retry these; every other error is a definite answer.

use sqlx::error::DatabaseError;

use super::Error;

/// PostgreSQL SQLSTATEs that a retry can get past, besides class `08`.
const POSTGRES_STATES: [&str; 6] = [
    "40001", // serialization failure
    "40P01", // deadlock detected
    "53300", // too many connections
    "57P01", // admin shutdown: the server is stopping and ended the session
    "57P02", // crash shutdown: another server process crashed
    "57P03", // cannot connect now: the database system is starting up or shutting down
];

/// SQLSTATE class `08`: connection exceptions.
const CONNECTION_CLASS: &str = "08";

/// MySQL and MariaDB error numbers that a retry can get past, besides
/// SQLSTATE class `08`.
const MYSQL_NUMBERS: [u16; 7] = [
    1040, // too many connections
    1053, // server shutdown in progress
    1205, // lock wait timeout
    1213, // deadlock
    1927, // MariaDB: connection killed
    2006, // server has gone away
    2013, // lost connection during query
];

/// SQLite primary result codes: SQLITE_BUSY, SQLITE_LOCKED.
const SQLITE_CODES: [i64; 2] = [5, 6];

impl Error {
    /// Whether the same operation may succeed if tried again, unchanged: the
    /// database could not be reached or is restarting (connection refused or
    /// reset, a pool that waited in vain for a connection, "the database
    /// system is shutting down" or "starting up", a session ended by the
    /// administrator), or it gave up the transaction on a conflict (deadlock,
    /// serialization failure, a busy SQLite file). Every other error is a
    /// definite answer — [`Error::LeaseLost`], [`Error::NotFound`],
    /// [`Error::IllegalTransition`], a constraint violation, a corrupt row —
    /// that trying again would repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) => true,
            Error::Database(sqlx::Error::Database(error)) => transient_database_error(error.as_ref()),
            _ => false,
        }
    }
}

fn transient_database_error(error: &dyn DatabaseError) -> bool {
    if let Some(mysql) = error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return MYSQL_NUMBERS.contains(&mysql.number())
            || mysql.code().is_some_and(|state| state.starts_with(CONNECTION_CLASS));
    }
    let Some(code) = error.code() else { return false };
    if error.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Extended result codes carry the primary code in their low byte.
        return code.parse::<i64>().is_ok_and(|extended| SQLITE_CODES.contains(&(extended & 0xff)));
    }
    transient_postgres_state(&code)
}

fn transient_postgres_state(code: &str) -> bool {
    code.starts_with(CONNECTION_CLASS) || POSTGRES_STATES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection, Executor};

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let refused = sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{port}/haul")).await;
        let error = Error::from(refused.expect_err("nothing listens on the port"));
        let is_refused = matches!(&error, Error::Database(sqlx::Error::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused);
        assert!(is_refused, "{error}");
        assert!(error.is_transient(), "{error}");
        assert!(Error::Database(sqlx::Error::PoolTimedOut).is_transient());
    }

    #[test]
    fn definite_answers_are_not_transient() {
        let lost = Error::LeaseLost { run_id: "r".into(), shard_id: "s0".into(), epoch: 3 };
        assert!(!lost.is_transient(), "{lost}");
        assert!(!Error::NotFound { what: "run r".into() }.is_transient());
        assert!(!Error::IllegalTransition { from: "succeeded".into(), to: "running".into() }.is_transient());
        assert!(!Error::Database(sqlx::Error::RowNotFound).is_transient());
    }

    #[tokio::test]
    async fn a_busy_sqlite_file_is_transient_and_a_syntax_error_is_not() {
        let folder = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(folder.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = options.connect().await.unwrap();
        holder.execute("CREATE TABLE t (x INTEGER)").await.unwrap();
        holder.execute("BEGIN EXCLUSIVE").await.unwrap();
        let mut other = options.connect().await.unwrap();
        let busy = Error::from(other.execute("INSERT INTO t VALUES (1)").await.unwrap_err());
        assert!(busy.is_transient(), "{busy}");
        let syntax = Error::from(other.execute("SELEC 1").await.unwrap_err());
        assert!(matches!(syntax, Error::Database(sqlx::Error::Database(_))), "{syntax}");
        assert!(!syntax.is_transient(), "{syntax}");
    }

    #[test]
    fn restarting_servers_and_conflicts_are_transient_by_sqlstate() {
        for code in ["08006", "08001", "57P01", "57P03", "40001", "40P01"] {
            assert!(transient_postgres_state(code), "{code}");
        }
        for code in ["23505", "42601", "42P01", "P0001"] {
            assert!(!transient_postgres_state(code), "{code}");
        }
    }
}
