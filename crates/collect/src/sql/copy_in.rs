//! One PostgreSQL `COPY … FROM STDIN` per commit rather than per batch: every
//! COPY ends with a small CopyDone message that waits for the server's delayed
//! ACK (sqlx does not set TCP_NODELAY), about 20 ms per COPY.
//!
//! A COPY borrows its connection, so it cannot sit next to its transaction in
//! the writer. A task owns the transaction instead and keeps one COPY open
//! across the batches sent to it for the same COPY statement; the writer
//! encodes the rows and sends them as messages. A batch with another COPY
//! statement (another column list) finishes the open COPY and starts a new one;
//! a commit finishes it, merges upserts and commits; an abort, or the writer
//! going away, rolls back.

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use haul_collect_core::transient::{is_transient, transient};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::errors::classify;

/// Messages waiting for the task: a few chunks of COPY data.
const CHANNEL_CAPACITY: usize = 2;

/// Where COPY data goes.
#[derive(Debug, PartialEq, Eq)]
pub struct CopyTarget {
    /// Run before the COPY starts: creating the staging table of an upsert.
    pub prepare: Option<String>,
    /// The `COPY … FROM STDIN` statement.
    pub statement: String,
    /// Run once the COPY is finished: merging and emptying the staging table.
    pub merge: Vec<String>,
}

type Reply = oneshot::Sender<anyhow::Result<()>>;

enum Message {
    /// COPY-encoded rows; the reply, if any, reports every error so far.
    Data {
        target: Arc<CopyTarget>,
        bytes: Vec<u8>,
        reply: Option<Reply>,
    },
    Commit {
        reply: Reply,
    },
    Abort {
        reply: Reply,
    },
}

/// The writer's side of a PostgreSQL transaction run by a COPY task.
pub struct PgCopyWriter {
    sender: mpsc::Sender<Message>,
    /// A write failed part way through its batch: the transaction must not commit.
    broken: bool,
}

impl PgCopyWriter {
    /// Starts the task that owns `transaction`.
    pub fn start(transaction: Transaction<'static, Postgres>) -> Self {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(run(transaction, receiver));
        PgCopyWriter { sender, broken: false }
    }

    /// Sends COPY data into `target`. With `wait`, returns once it is sent,
    /// with the first error of any data sent since the transaction began.
    pub async fn send(&mut self, target: &Arc<CopyTarget>, bytes: Vec<u8>, wait: bool) -> anyhow::Result<()> {
        if !wait {
            let message = Message::Data { target: target.clone(), bytes, reply: None };
            return self.sender.send(message).await.map_err(|_| stopped());
        }
        self.request(|reply| Message::Data { target: target.clone(), bytes, reply: Some(reply) }).await
    }

    /// Marks the transaction as holding part of a failed write, as a failed COPY would.
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    pub async fn commit(mut self) -> anyhow::Result<()> {
        if self.broken {
            self.request(|reply| Message::Abort { reply }).await?;
            bail!("not committing: a failed write left part of its batch in the transaction");
        }
        self.request(|reply| Message::Commit { reply }).await
    }

    pub async fn rollback(mut self) -> anyhow::Result<()> {
        self.request(|reply| Message::Abort { reply }).await
    }

    async fn request(&mut self, message: impl FnOnce(Reply) -> Message) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(message(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> anyhow::Error {
    transient(anyhow!("the PostgreSQL writer task stopped"))
}

/// The first error of a transaction, reported to every later request.
struct Failure {
    error: Option<anyhow::Error>,
    message: String,
    transient: bool,
}

impl Failure {
    fn report(&mut self) -> anyhow::Error {
        self.error.take().unwrap_or_else(|| {
            let error = anyhow!("an earlier write failed: {}", self.message);
            if self.transient { transient(error) } else { error }
        })
    }
}

/// Records `error` as the transaction's failure (unless one is recorded) and
/// reports it to `reply`.
fn fail(failure: &mut Option<Failure>, error: anyhow::Error, reply: Option<Reply>) {
    let failure = failure.get_or_insert_with(|| Failure {
        message: format!("{error:#}"),
        transient: is_transient(&error),
        error: Some(error),
    });
    if let Some(reply) = reply {
        let _ = reply.send(Err(failure.report()));
    }
}

async fn run(mut transaction: Transaction<'static, Postgres>, mut receiver: mpsc::Receiver<Message>) {
    let mut failure: Option<Failure> = None;
    let mut next = receiver.recv().await;
    loop {
        next = match next {
            Some(Message::Data { target, bytes, reply }) => match &mut failure {
                Some(failure) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(failure.report()));
                    }
                    receiver.recv().await
                }
                None => copy(&mut transaction, target, bytes, reply, &mut receiver, &mut failure).await,
            },
            Some(Message::Commit { reply }) => {
                let result = match &mut failure {
                    None => transaction.commit().await.map_err(classify).context("committing"),
                    Some(failure) => {
                        let _ = transaction.rollback().await;
                        Err(failure.report())
                    }
                };
                let _ = reply.send(result);
                return;
            }
            Some(Message::Abort { reply }) => {
                let _ = reply.send(transaction.rollback().await.map_err(classify).context("rolling back"));
                return;
            }
            None => {
                let _ = transaction.rollback().await;
                return;
            }
        };
    }
}

/// Runs one COPY into `target`, starting with `bytes`, for as long as data
/// for the same target follows; returns the message that ended it.
async fn copy(
    connection: &mut PgConnection,
    target: Arc<CopyTarget>,
    bytes: Vec<u8>,
    reply: Option<Reply>,
    receiver: &mut mpsc::Receiver<Message>,
    failure: &mut Option<Failure>,
) -> Option<Message> {
    if let Some(prepare) = &target.prepare
        && let Err(error) = sqlx::query(AssertSqlSafe(prepare.as_str())).execute(&mut *connection).await
    {
        fail(failure, classify(error), reply);
        return receiver.recv().await;
    }
    let mut copy = match connection.copy_in_raw(&target.statement).await {
        Ok(copy) => copy,
        Err(error) => {
            fail(failure, classify(error), reply);
            return receiver.recv().await;
        }
    };
    let (mut bytes, mut reply) = (bytes, reply);
    let next = loop {
        if let Err(error) = copy.send(bytes).await {
            let _ = copy.abort("haul write failed").await;
            fail(failure, classify(error), reply);
            return receiver.recv().await;
        }
        if let Some(reply) = reply.take() {
            let _ = reply.send(Ok(()));
        }
        match receiver.recv().await {
            Some(Message::Data { target: next, bytes: more, reply: more_reply }) if next == target => {
                bytes = more;
                reply = more_reply;
            }
            other => break other,
        }
    };
    if matches!(next, None | Some(Message::Abort { .. })) {
        let _ = copy.abort("haul write aborted").await;
        return next;
    }
    if let Err(error) = copy.finish().await {
        fail(failure, classify(error), None);
        return next;
    }
    for statement in &target.merge {
        if let Err(error) = sqlx::query(AssertSqlSafe(statement.as_str())).execute(&mut *connection).await {
            fail(failure, classify(error), None);
            return next;
        }
    }
    next
}
