//! The [`Dispatcher`]: shard assignments handed from the scheduler to the
//! workers of a pool, through an [`InProcessDispatcher`] or a
//! [`RabbitDispatcher`] (one quorum queue per pool and worker label).
//!
//! Placement: an assignment without a worker label goes to any worker of its
//! pool; one with a label (its job's `worker_label`) only to the workers of
//! its pool that carry that label. Each (pool, label) pair is a queue of its
//! own, and a worker consumes the queues of its pools, unlabelled and
//! labelled with each of its labels (see [`queues_of`]).
//!
//! Dispatch is at-least-once and carries no authority: a worker that takes an
//! assignment still claims the shard's lease in the store, whose fencing
//! epoch makes a duplicated or redelivered assignment harmless.
//!
//! The doorbell goes the other way: a worker rings it when a shard's outcome
//! is in the store, and the leading scheduler looks at that run at once
//! instead of at its next poll. A ring is a hint only; one lost, late or
//! repeated costs at most a poll interval, never a shard.
//!
//! A backend with a broker rides out the broker's restart: no published
//! assignment is lost (the queues are durable) and none stays stuck with a
//! consumer of the dead connection (it is delivered again).

mod in_process;
mod rabbit;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use in_process::InProcessDispatcher;
pub use rabbit::{RabbitDispatcher, RabbitOptions};

/// One shard of a run, offered to the workers of a pool (carrying its label, if any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardAssignment {
    pub run_id: String,
    pub shard_id: String,
    pub pool: String,
    /// The worker label the shard needs; `None`: any worker of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
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
    #[error("the broker did not confirm the assignment within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the dispatcher is closed")]
    Closed,
    /// The delivery's channel died before it was settled; the broker
    /// delivers the assignment again.
    #[error("the delivery's channel is gone; the assignment will be delivered again")]
    ChannelGone,
}

impl Error {
    /// Whether trying again, on a new connection if need be, may succeed: any
    /// broker error but a channel-level refusal (such as a queue declared
    /// with other arguments, or access refused), a refused publish, a timeout.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Amqp(error) => !error.is_amqp_soft_error(),
            Error::Refused { .. } | Error::Timeout(_) => true,
            Error::Decode(_) | Error::Closed | Error::ChannelGone => false,
        }
    }
}

/// Which workers may take a shard: those of `pool` that carry `label`, or
/// with no label, any worker of `pool`. Each placement is a queue of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Placement {
    pub pool: String,
    pub label: Option<String>,
}

impl Placement {
    /// The placements a worker of `pools` carrying `labels` takes
    /// assignments from: each pool unlabelled, then with each label.
    pub fn served_by(pools: &[String], labels: &[String]) -> Vec<Placement> {
        pools
            .iter()
            .flat_map(|pool| {
                let labelled = labels.iter().map(|label| Some(label.clone()));
                std::iter::once(None).chain(labelled).map(|label| Placement { pool: pool.clone(), label })
            })
            .collect()
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.label {
            None => write!(f, "pool {}", self.pool),
            Some(label) => write!(f, "pool {} label {label}", self.pool),
        }
    }
}

impl ShardAssignment {
    /// Which workers may take the shard.
    pub fn placement(&self) -> Placement {
        Placement { pool: self.pool.clone(), label: self.label.clone() }
    }
}

/// Shard assignments, queued per pool and worker label.
///
/// Lifecycle: the scheduler [`Dispatcher::publish`]es an assignment into the
/// queue of its [`Placement`]; a worker opens a [`Dispatcher::consume`] on
/// each placement it serves with as many unacknowledged
/// assignments as it has free slots, and [`Delivery::ack`]s each one once the
/// shard's outcome is in the store (or [`Delivery::requeue`]s it to give it
/// back).
///
/// The [`Dispatcher::doorbell`] is one queue of ended shards: workers
/// [`Dispatcher::ring`] it, the leading scheduler consumes it (and only it,
/// or rings would go to schedulers that ignore them) and acknowledges each
/// ring at once. Rings are best effort: the backend may drop them (it keeps
/// at most [`DOORBELL_LENGTH`] unread), and the store stays what tells a
/// shard's end.
///
/// Guarantees every backend keeps:
/// - `publish` returns only once the backend holds the assignment.
/// - A consumer never holds more than its prefetch of unacknowledged
///   assignments.
/// - An assignment that is neither acknowledged nor requeued when its
///   consumer goes away (the worker died) is delivered again, marked
///   `redelivered`.
/// - Connection losses are hidden: while the backend's broker restarts,
///   `publish` reconnects and retries for a bounded time (then fails with the
///   last error), and a consumer's [`AssignmentConsumer::next`] waits and
///   resumes once the broker is back. Assignments delivered on the lost
///   connection come again, `redelivered`; settling them fails with
///   [`Error::ChannelGone`].
#[async_trait]
pub trait Dispatcher: Send + Sync {
    async fn publish(&self, assignment: &ShardAssignment) -> Result<(), Error>;

    /// Starts taking the assignments of `placement`, at most `prefetch` (at
    /// least one) unacknowledged at a time.
    async fn consume(&self, placement: &Placement, prefetch: u16) -> Result<Box<dyn AssignmentConsumer>, Error>;

    /// Rings the doorbell for `ended`, a shard whose outcome is in the store.
    async fn ring(&self, ended: &ShardAssignment) -> Result<(), Error>;

    /// Starts taking the rings of the doorbell, [`DOORBELL_PREFETCH`] unacknowledged at a time.
    async fn doorbell(&self) -> Result<Box<dyn AssignmentConsumer>, Error>;
}

/// The most rings a doorbell keeps unread; older ones are dropped first.
pub const DOORBELL_LENGTH: usize = 1000;

/// How many rings a doorbell consumer holds unacknowledged.
pub const DOORBELL_PREFETCH: u16 = 64;

/// The assignments of one [`Placement`], as one worker takes them.
#[async_trait]
pub trait AssignmentConsumer: Send {
    /// The next assignment, waiting for one (across broker restarts); `None`
    /// once the consumer is closed. An error is a lasting one (an undecodable
    /// assignment, a queue the broker refuses); the consumer can still be
    /// asked for the next assignment after it.
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
    /// Settles the assignment: it will not be delivered again. Fails (with
    /// [`Error::ChannelGone`], or with the error that ended the channel) if
    /// the delivery's connection was lost meanwhile.
    pub async fn ack(self) -> Result<(), Error> {
        match self.acknowledgement {
            Acknowledgement::InProcess(unsettled) => unsettled.settle(),
            Acknowledgement::Rabbit(acker) => {
                settled(acker.ack(lapin::options::BasicAckOptions::default()).await?)?;
            }
        }
        Ok(())
    }

    /// Gives the assignment back to its queue. Fails like
    /// [`Delivery::ack`] if the delivery's connection was lost meanwhile (the
    /// assignment is back in the queue all the same).
    pub async fn requeue(self) -> Result<(), Error> {
        match self.acknowledgement {
            // an unsettled in-process delivery goes back to its queue when dropped
            Acknowledgement::InProcess(unsettled) => drop(unsettled),
            Acknowledgement::Rabbit(acker) => {
                let options = lapin::options::BasicNackOptions { requeue: true, ..Default::default() };
                settled(acker.nack(options).await?)?;
            }
        }
        Ok(())
    }
}

/// Whether lapin sent the settlement: it does not on a channel that died.
fn settled(sent: bool) -> Result<(), Error> {
    if sent { Ok(()) } else { Err(Error::ChannelGone) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn a_worker_takes_each_of_its_pools_unlabelled_and_with_each_of_its_labels() {
        let placement = |pool: &str, label: Option<&str>| Placement { pool: pool.into(), label: label.map(Into::into) };
        let served = Placement::served_by(&names(&["default", "etl"]), &names(&["gpu", "eu"]));
        assert_eq!(
            served,
            [
                placement("default", None),
                placement("default", Some("gpu")),
                placement("default", Some("eu")),
                placement("etl", None),
                placement("etl", Some("gpu")),
                placement("etl", Some("eu")),
            ]
        );
        assert_eq!(Placement::served_by(&names(&["default"]), &[]), [placement("default", None)]);
        assert_eq!(served[1].to_string(), "pool default label gpu");
    }

    #[test]
    fn an_unlabelled_assignment_reads_and_writes_as_before_labels() {
        let unlabelled = ShardAssignment {
            run_id: "r".into(),
            shard_id: "s".into(),
            pool: "default".into(),
            label: None,
            priority: 3,
        };
        let json = serde_json::to_string(&unlabelled).unwrap();
        assert_eq!(json, r#"{"run_id":"r","shard_id":"s","pool":"default","priority":3}"#);
        assert_eq!(serde_json::from_str::<ShardAssignment>(&json).unwrap(), unlabelled);
        let labelled = ShardAssignment { label: Some("gpu".into()), ..unlabelled };
        let json = serde_json::to_string(&labelled).unwrap();
        assert_eq!(serde_json::from_str::<ShardAssignment>(&json).unwrap(), labelled);
    }
}
