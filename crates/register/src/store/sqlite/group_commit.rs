//! Group commit for the SQLite store's shard writes: claims, finishes and
//! releases from every shard running in the process are queued to one task
//! that runs all those waiting in one transaction, each inside a savepoint of
//! its own, and answers them once the transaction has committed.
//!
//! A write therefore still returns `Ok` only when it is durable and applies
//! all or nothing, but the process pays one commit (and one write of each
//! touched page to the WAL) per group instead of per write, and one hand-off
//! to SQLite's connection thread per write instead of one per statement. A
//! queue holds no more than the shards in flight, so groups stay small and
//! nobody waits for a group to fill: a write arriving while a group runs goes
//! into the next one.

use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteRow};
use sqlx::{Executor, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::store::Error;

/// The most writes one transaction takes, to bound how long it holds SQLite's lock.
const MAX_GROUP: usize = 128;

/// A write script: its statements between `SAVEPOINT grouped_write;` and
/// `RELEASE grouped_write;`, each ending with `;`. A statement that depends on
/// an earlier one's effect checks `changes()`, the rows the previous
/// statement changed.
macro_rules! grouped_write {
    ($($statement:expr),+ $(,)?) => {
        concat!("SAVEPOINT grouped_write; ", $($statement, " ",)+ "RELEASE grouped_write;")
    };
}
pub(super) use grouped_write;

/// A script built with [`grouped_write!`], with its arguments bound.
pub(super) type Script = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

struct Write {
    script: Script,
    answer: oneshot::Sender<Result<Vec<SqliteRow>, Error>>,
}

/// The handle of the group-commit task; the task ends when every handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Write>,
}

impl GroupCommit {
    /// Starts the task, writing through `writer` (the store's pool of one connection).
    pub(super) fn spawn(writer: SqlitePool) -> Self {
        let (queue, writes) = mpsc::unbounded_channel();
        tokio::spawn(run(writer, writes));
        GroupCommit { queue }
    }

    /// Runs `script` in the next group and returns the rows its statements
    /// return, once committed. A caller that stops waiting does not stop the write.
    pub(super) async fn write(&self, script: Script) -> Result<Vec<SqliteRow>, Error> {
        let (answer, answered) = oneshot::channel();
        self.queue.send(Write { script, answer }).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Database(sqlx::Error::WorkerCrashed)
}

async fn run(writer: SqlitePool, mut writes: mpsc::UnboundedReceiver<Write>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while writes.recv_many(&mut group, MAX_GROUP).await > 0 {
        let answers = match writer.acquire().await {
            Ok(mut connection) => commit_group(&mut connection, &mut group).await,
            Err(error) => group.drain(..).map(|write| (write.answer, Err(error_for_all(&error)))).collect(),
        };
        for (answer, result) in answers {
            let _gone = answer.send(result);
        }
    }
}

type Answers = Vec<(oneshot::Sender<Result<Vec<SqliteRow>, Error>>, Result<Vec<SqliteRow>, Error>)>;

/// Runs the group in one transaction; a failed script is rolled back to its
/// savepoint alone. If the transaction itself fails, every write fails.
async fn commit_group(connection: &mut SqliteConnection, group: &mut Vec<Write>) -> Answers {
    if let Err(error) = connection.execute("BEGIN IMMEDIATE").await {
        return group.drain(..).map(|write| (write.answer, Err(error_for_all(&error)))).collect();
    }
    let mut answers: Answers = Vec::with_capacity(group.len());
    for write in group.drain(..) {
        let result = write.script.fetch_all(&mut *connection).await;
        if result.is_err() {
            let _undone = connection.execute("ROLLBACK TO grouped_write; RELEASE grouped_write").await;
        }
        answers.push((write.answer, result.map_err(Error::from)));
    }
    if let Err(error) = connection.execute("COMMIT").await {
        let _no_transaction = connection.execute("ROLLBACK").await;
        for (_, result) in &mut answers {
            *result = Err(error_for_all(&error));
        }
    }
    answers
}

/// A copy of a group's common error for each of its writes.
fn error_for_all(error: &sqlx::Error) -> Error {
    Error::Database(sqlx::Error::Protocol(format!("the group's transaction failed: {error}")))
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    use super::*;

    #[tokio::test]
    async fn a_failed_write_is_undone_alone_and_the_others_of_its_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("group.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        sqlx::query("CREATE TABLE numbers (n INTEGER NOT NULL CHECK (n < 10))").execute(&pool).await.unwrap();
        let group = GroupCommit::spawn(pool.clone());
        let insert_twice = |n: i64| {
            sqlx::query(grouped_write!(
                "INSERT INTO numbers (n) VALUES (?);",
                "INSERT INTO numbers (n) VALUES (? + 5) RETURNING n;"
            ))
            .bind(n)
            .bind(n)
        };

        // Queued together, so they share a group; 7 + 5 breaks the CHECK.
        let (first, failed, last) =
            tokio::join!(group.write(insert_twice(1)), group.write(insert_twice(7)), group.write(insert_twice(2)));
        let returned =
            |rows: Vec<SqliteRow>| rows.iter().map(|row| sqlx::Row::get::<i64, _>(row, "n")).collect::<Vec<_>>();
        assert_eq!(returned(first.unwrap()), [6]);
        assert!(matches!(failed, Err(Error::Database(_))), "{failed:?}");
        assert_eq!(returned(last.unwrap()), [7]);

        let stored: Vec<i64> = sqlx::query_scalar("SELECT n FROM numbers ORDER BY n").fetch_all(&pool).await.unwrap();
        assert_eq!(stored, [1, 2, 6, 7], "the failed write left nothing, not even its first row");
        assert_eq!(returned(group.write(insert_twice(3)).await.unwrap()), [8], "the next group works");
    }
}
