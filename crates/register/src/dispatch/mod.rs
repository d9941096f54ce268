//! The [`Dispatcher`]: shard assignments handed from the scheduler to the
//! workers of a pool, through an [`InProcessDispatcher`] or a
//! [`RabbitDispatcher`] (one quorum queue per pool).
//!
//! Dispatch is at-least-once and carries no authority: a worker that takes an
//! assignment still claims the shard's lease in the store, whose fencing
//! epoch makes a duplicated or redelivered assignment harmless.

mod in_process;
mod rabbit;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use in_process::InProcessDispatcher;
pub use rabbit::RabbitDispatcher;

/// One shard of a run, offered to the workers of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardAssignment {
    pub run_id: String,
    pub shard_id: String,
    pub pool: String,
    /// Higher goes first where the backend orders by priority (see each backend).
    pub priority: u8,
}

/// What a dispatcher call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the assignment of shard {shard_id} of run {run_id}")]
    Refused { run_id: String, shard_id: String },
    #[error("undecodable shard assignment: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Shard assignments, queued per pool.
///
/// Lifecycle: the scheduler [`Dispatcher::publish`]es an assignment; a worker
/// opens a [`Dispatcher::consume`] on its pool with as many unacknowledged
/// assignments as it has free slots, and [`Delivery::ack`]s each one once the
/// shard's outcome is in the store (or [`Delivery::requeue`]s it to give it
/// back).
///
/// Guarantees every backend keeps:
/// - `publish` returns only once the backend holds the assignment.
/// - A consumer never holds more than its prefetch of unacknowledged
///   assignments.
/// - An assignment that is neither acknowledged nor requeued when its
///   consumer goes away (the worker died) is delivered again, marked
///   `redelivered`.
#[async_trait]
pub trait Dispatcher: Send + Sync {
    async fn publish(&self, assignment: &ShardAssignment) -> Result<(), Error>;

    /// Starts taking the assignments of `pool`, at most `prefetch` (at least
    /// one) unacknowledged at a time.
    async fn consume(&self, pool: &str, prefetch: u16) -> Result<Box<dyn AssignmentConsumer>, Error>;
}

/// The assignments of one pool, as one worker takes them.
#[async_trait]
pub trait AssignmentConsumer: Send {
    /// The next assignment, waiting for one; `None` once the consumer is closed.
    async fn next(&mut self) -> Option<Result<Delivery, Error>>;
}

/// An assignment taken by a consumer, to acknowledge or requeue.
pub struct Delivery {
    pub assignment: ShardAssignment,
    /// Whether an earlier consumer took it and went away without acknowledging it.
    pub redelivered: bool,
    acknowledgement: Acknowledgement,
}

/// How a delivery is settled with its backend.
enum Acknowledgement {
    InProcess(in_process::Unsettled),
    Rabbit(lapin::Acker),
}

impl Delivery {
    /// Settles the assignment: it will not be delivered again.
    pub async fn ack(self) -> Result<(), Error> {
        match self.acknowledgement {
            Acknowledgement::InProcess(unsettled) => unsettled.settle(),
            Acknowledgement::Rabbit(acker) => {
                acker.ack(lapin::options::BasicAckOptions::default()).await?;
            }
        }
        Ok(())
    }

    /// Gives the assignment back to the pool's queue.
    pub async fn requeue(self) -> Result<(), Error> {
        match self.acknowledgement {
            // an unsettled in-process delivery goes back to its queue when dropped
            Acknowledgement::InProcess(unsettled) => drop(unsettled),
            Acknowledgement::Rabbit(acker) => {
                let options = lapin::options::BasicNackOptions { requeue: true, ..Default::default() };
                acker.nack(options).await?;
            }
        }
        Ok(())
    }
}
