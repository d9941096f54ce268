//! Riding out a short store outage: a ledger operation that fails
//! transiently ([`Error::is_transient`]: the database restarting, a refused
//! or reset connection) is tried again with backoff until it gets an answer
//! or its deadline passes — for an operation under a lease, the moment the
//! lease may have run out, after which another owner may hold the shard.
//!
//! One [`Reachability`] per ledger tells the outage once: a warning when the
//! first operation finds the store unreachable, a note when one gets through
//! again, and the `haul_store_outages_total` and `haul_store_retries_total`
//! counters.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use haul_common::duration::HumanDuration;
use haul_common::retry::RetryPolicy;
use tokio::time::Instant;

use crate::Error;

/// The backoff between attempts during an outage: short, so that work goes
/// on within a second of the store's return, and never exhausted (the
/// deadline ends the retries).
const BACKOFF: RetryPolicy = RetryPolicy {
    attempts: usize::MAX,
    initial_backoff: HumanDuration(Duration::from_millis(50)),
    max_backoff: HumanDuration(Duration::from_millis(500)),
};

/// How an operation retried across an outage ended without success.
#[derive(Debug)]
pub(super) enum Failure {
    /// The store answered with an error that trying again would repeat.
    /// `retried`: an earlier attempt failed transiently, and may have been
    /// applied before the connection broke.
    Definite { error: Error, retried: bool },
    /// The store was still unreachable when the deadline came.
    Outlasted(Outlasted),
}

/// A ledger operation on the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    Claim,
    /// Reading the shard's record.
    Read,
    Renew,
    Checkpoint,
    Finish,
    Release,
}

impl Operation {
    /// The operation's name in logs and metrics.
    fn label(self) -> &'static str {
        match self {
            Operation::Claim => "claim",
            Operation::Read => "read",
            Operation::Renew => "renew",
            Operation::Checkpoint => "checkpoint",
            Operation::Finish => "finish",
            Operation::Release => "release",
        }
    }
}

impl std::fmt::Display for Operation {
    /// What the operation does to a shard, before the words "shard ID".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Claim => "claiming",
            Operation::Read => "reading",
            Operation::Renew => "renewing the lease on",
            Operation::Checkpoint => "saving the checkpoint of",
            Operation::Finish => "finishing",
            Operation::Release => "releasing",
        })
    }
}

/// A store that stayed unreachable past an operation's deadline.
#[derive(Debug, thiserror::Error)]
#[error("the store stayed unreachable while {operation} shard {shard_id} until {deadline}")]
pub(super) struct Outlasted {
    operation: Operation,
    shard_id: String,
    deadline: Deadline,
    /// The last transient error, unless the last attempt was still waiting.
    #[source]
    last: Option<Error>,
}

/// What bounds the retries of an operation.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deadline {
    /// The held lease's estimated expiry.
    Lease,
    /// A wait of this long, for an operation without a lease.
    Wait(Duration),
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deadline::Lease => write!(f, "its lease may have run out"),
            Deadline::Wait(wait) => write!(f, "{} had passed", HumanDuration(*wait)),
        }
    }
}

impl Failure {
    /// The error for the runtime: the store's own on a definite answer.
    pub(super) fn into_anyhow(self) -> anyhow::Error {
        match self {
            Failure::Definite { error, .. } => error.into(),
            Failure::Outlasted(outlasted) => outlasted.into(),
        }
    }
}

/// Whether the store is reachable, as one ledger's operations last found it;
/// see the module documentation.
pub(super) struct Reachability {
    run_id: String,
    /// When the current outage was first seen.
    down_since: Mutex<Option<Instant>>,
}

impl Reachability {
    pub(super) fn new(run_id: &str) -> Self {
        Reachability { run_id: run_id.to_string(), down_since: Mutex::new(None) }
    }

    /// Runs `operation` until the store answers it, retrying transient
    /// errors with backoff while `deadline_at()` (asked again before each
    /// attempt, as a renewal may push it back) has not passed; an attempt
    /// still waiting at the deadline is abandoned. The first attempt is made
    /// even past the deadline, unbounded: the estimate is conservative, and
    /// the store judges the lease (a process that was frozen past it learns
    /// it lost the lease, [`Error::LeaseLost`]).
    pub(super) async fn retry<T, Attempts, Attempt>(
        &self,
        operation: Operation,
        shard_id: &str,
        deadline: Deadline,
        deadline_at: impl Fn() -> Instant,
        mut attempt: Attempts,
    ) -> Result<T, Failure>
    where
        Attempts: FnMut() -> Attempt,
        Attempt: Future<Output = Result<T, Error>>,
    {
        let mut delays = BACKOFF.delays();
        let mut retried = false;
        loop {
            let until = deadline_at();
            let answer = if Instant::now() < until {
                tokio::time::timeout_at(until, attempt()).await.ok()
            } else {
                Some(attempt().await)
            };
            let error = match answer {
                Some(Ok(value)) => {
                    self.answered();
                    return Ok(value);
                }
                Some(Err(error)) if error.is_transient() => error,
                Some(Err(error)) => {
                    self.answered();
                    return Err(Failure::Definite { error, retried });
                }
                None => return Err(self.outlasted(operation, shard_id, deadline, None)),
            };
            self.unreachable(operation, shard_id, &error);
            let wake = Instant::now() + delays.next().unwrap_or(BACKOFF.max_backoff.0);
            if wake >= deadline_at() {
                return Err(self.outlasted(operation, shard_id, deadline, Some(error)));
            }
            metrics::counter!("haul_store_retries_total", "operation" => operation.label()).increment(1);
            retried = true;
            tokio::time::sleep_until(wake).await;
        }
    }

    fn unreachable(&self, operation: Operation, shard_id: &str, error: &Error) {
        let mut down_since = self.down_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if down_since.is_none() {
            *down_since = Some(Instant::now());
            metrics::counter!("haul_store_outages_total").increment(1);
            tracing::warn!(run_id = %self.run_id, shard = %shard_id, operation = operation.label(), error = %error, "store unreachable, retrying while the leases last");
        }
    }

    fn answered(&self) {
        let since = self.down_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(since) = since {
            tracing::info!(run_id = %self.run_id, outage_ms = since.elapsed().as_millis() as u64, "store reachable again");
        }
    }

    fn outlasted(&self, operation: Operation, shard_id: &str, deadline: Deadline, last: Option<Error>) -> Failure {
        let outlasted = Outlasted { operation, shard_id: shard_id.to_string(), deadline, last };
        tracing::warn!(run_id = %self.run_id, error = %outlasted, "giving up on the store");
        Failure::Outlasted(outlasted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn refused() -> Error {
        Error::Database(sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()))
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_an_answer() {
        let reachability = Reachability::new("r");
        let attempts = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = reachability
            .retry(
                Operation::Checkpoint,
                "s0",
                Deadline::Lease,
                || deadline,
                || async {
                    match attempts.fetch_add(1, Ordering::SeqCst) {
                        0..3 => Err(refused()),
                        n => Ok(n),
                    }
                },
            )
            .await;
        assert_eq!(answer.unwrap(), 3);
        assert!(reachability.down_since.lock().unwrap().is_none(), "the outage is over");
    }

    #[tokio::test]
    async fn a_definite_answer_ends_the_retries_and_says_whether_it_followed_an_outage() {
        let reachability = Reachability::new("r");
        let attempts = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = reachability
            .retry(
                Operation::Checkpoint,
                "s0",
                Deadline::Lease,
                || deadline,
                || async {
                    match attempts.fetch_add(1, Ordering::SeqCst) {
                        0 => Err(refused()),
                        _ => Err::<(), _>(Error::NotFound { what: "shard s0".into() }),
                    }
                },
            )
            .await;
        assert!(
            matches!(answer, Err(Failure::Definite { error: Error::NotFound { .. }, retried: true })),
            "{answer:?}"
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_outage_past_the_deadline_is_a_clear_error() {
        let reachability = Reachability::new("r");
        let deadline = Instant::now() + Duration::from_millis(1500);
        let answer = reachability
            .retry(Operation::Checkpoint, "s0", Deadline::Lease, || deadline, || async { Err::<(), _>(refused()) })
            .await;
        let gave_up = Instant::now();
        assert!(gave_up <= deadline, "retried past the deadline");
        // The longest delay, with jitter, is twice the maximum backoff.
        assert!(gave_up + BACKOFF.max_backoff.0 * 2 >= deadline, "gave up {:?} early", deadline - gave_up);
        let message = format!("{:#}", answer.unwrap_err().into_anyhow());
        assert!(
            message.starts_with(
                "the store stayed unreachable while saving the checkpoint of shard s0 until its lease may have run out: "
            ),
            "{message}"
        );
        assert!(message.contains("error communicating with database"), "{message}");
    }

    #[tokio::test]
    async fn an_attempt_still_waiting_at_the_deadline_is_abandoned() {
        let reachability = Reachability::new("r");
        let wait = Duration::from_millis(300);
        let deadline = Instant::now() + wait;
        let answer = reachability
            .retry(Operation::Claim, "s0", Deadline::Wait(wait), || deadline, std::future::pending::<Result<(), Error>>)
            .await;
        assert!(Instant::now() >= deadline);
        let message = format!("{:#}", answer.unwrap_err().into_anyhow());
        assert_eq!(message, "the store stayed unreachable while claiming shard s0 until 300ms had passed");
    }

    #[tokio::test]
    async fn a_deadline_already_passed_still_lets_the_store_judge_once() {
        let reachability = Reachability::new("r");
        let passed = Instant::now() - Duration::from_secs(1);
        let attempts = AtomicUsize::new(0);
        let answer = reachability
            .retry(
                Operation::Renew,
                "s0",
                Deadline::Lease,
                || passed,
                || async {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<(), _>(Error::LeaseLost { run_id: "r".into(), shard_id: "s0".into(), epoch: 1 })
                },
            )
            .await;
        assert!(
            matches!(answer, Err(Failure::Definite { error: Error::LeaseLost { .. }, retried: false })),
            "{answer:?}"
        );

        let answer = reachability
            .retry(Operation::Renew, "s0", Deadline::Lease, || passed, || async { Err::<(), _>(refused()) })
            .await;
        assert!(matches!(answer, Err(Failure::Outlasted(_))), "{answer:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
