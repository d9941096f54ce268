//! The RabbitMQ [`Dispatcher`]: one durable quorum queue per [`Placement`],
//! named `PREFIX.shards.POOL` for the shards any worker of the pool takes and
//! `PREFIX.shards.POOL.label.LABEL` for those that need a worker label,
//! declared on first use. Publishing waits for the
//! broker's confirm; consumers acknowledge by hand, with a prefetch (QoS) of
//! their free slots, each on its own channel so that a consumer that goes
//! away gives back what it held, redelivered.
//!
//! The dispatcher rides out a broker restart (see [`link`]): a publish
//! reconnects and retries, with backoff, for up to
//! [`RabbitOptions::publish_timeout`]; a consumer resubscribes, as long as it
//! takes, and keeps yielding assignments once the broker is back.
//!
//! The doorbell is the queue `PREFIX.doorbell`: a durable classic queue
//! holding at most [`DOORBELL_LENGTH`] rings (the oldest go first), their
//! messages transient (a broker restart loses a ring or two). Rings go
//! through the same confirmed channel as assignments; the worker waits for
//! the confirm in the background.
//!
//! Priority: quorum queues order by arrival. RabbitMQ 3.x ignores message
//! priority on them; 4.x knows two levels only (above 4 is high). The
//! assignment carries its priority in the message properties and the body;
//! the scheduler's own admission order (`planner::select`) stays what ranks
//! shards.

mod consumer;
mod link;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tokio::time::Instant;

use super::{AssignmentConsumer, DOORBELL_LENGTH, DOORBELL_PREFETCH, Dispatcher, Error, Placement, ShardAssignment};
use consumer::RabbitConsumer;
use link::Link;

/// How a [`RabbitDispatcher`] rides out a broker outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RabbitOptions {
    /// Longest a publish keeps reconnecting and retrying before it fails.
    pub publish_timeout: Duration,
    /// Delay before the second attempt to reach the broker; doubled after each
    /// failed attempt (with jitter).
    pub reconnect_initial: Duration,
    /// Longest delay between two attempts to reach the broker.
    pub reconnect_max: Duration,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        RabbitOptions {
            publish_timeout: Duration::from_secs(60),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

/// Shard assignments queued in RabbitMQ.
///
/// Lifecycle: [`RabbitDispatcher::connect`] opens the connection (and fails
/// if the broker is unreachable then); publishes and consumers share it, and
/// it is replaced whenever it dies, until [`RabbitDispatcher::close`].
pub struct RabbitDispatcher {
    link: Arc<Link>,
    prefix: String,
}

impl RabbitDispatcher {
    /// Connects to the broker at `url` (`amqp://USER:PASSWORD@HOST:PORT/VHOST`)
    /// with the default [`RabbitOptions`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        Self::connect_with(url, prefix, RabbitOptions::default()).await
    }

    /// Connects to the broker at `url`, riding out outages as `options` say.
    pub async fn connect_with(url: &str, prefix: &str, options: RabbitOptions) -> Result<Self, Error> {
        let link = Link::open(url, options).await?;
        Ok(RabbitDispatcher { link: Arc::new(link), prefix: prefix.to_string() })
    }

    /// Closes the connection for good: publishes fail with [`Error::Closed`],
    /// consumers end, and what they held unacknowledged is delivered again.
    pub async fn close(&self) -> Result<(), Error> {
        self.link.close().await
    }

    /// The queue of `placement`.
    pub fn queue_name(&self, placement: &Placement) -> String {
        Self::queue_name_under(&self.prefix, placement)
    }

    /// The queue of `placement` for the dispatchers under `prefix`. The
    /// unlabelled queue keeps the name it had before worker labels, so queued
    /// assignments survive an upgrade; a label is a token without `.` (see
    /// [`haul_collect_core::job::check_worker_label`]).
    pub fn queue_name_under(prefix: &str, placement: &Placement) -> String {
        match &placement.label {
            None => format!("{prefix}.shards.{}", placement.pool),
            Some(label) => format!("{prefix}.shards.{}.label.{label}", placement.pool),
        }
    }

    /// The doorbell's queue for the dispatchers under `prefix`.
    pub fn doorbell_queue_under(prefix: &str) -> String {
        format!("{prefix}.doorbell")
    }

    /// One attempt at publishing `body` into `queue`, waiting for the confirm.
    async fn publish_once(&self, assignment: &ShardAssignment, queue: &str, body: &[u8]) -> Result<(), Error> {
        let channel = self.link.publishing_channel(queue, QueueKind::Assignments).await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_priority(assignment.priority)
            .with_content_type("application/json".into());
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirm = channel.basic_publish("".into(), queue.into(), options, body, properties).await?.await?;
        let acked = confirm.is_ack();
        if confirm.take_message().is_some() {
            // unroutable: the queue is gone; declare it again before the next attempt
            self.link.forget(queue).await;
        } else if acked {
            return Ok(());
        }
        Err(Error::Refused { run_id: assignment.run_id.clone(), shard_id: assignment.shard_id.clone() })
    }
}

#[async_trait]
impl Dispatcher for RabbitDispatcher {
    async fn publish(&self, assignment: &ShardAssignment) -> Result<(), Error> {
        let queue = self.queue_name(&assignment.placement());
        let body = serde_json::to_vec(assignment)?;
        let timeout = self.link.options().publish_timeout;
        let started = Instant::now();
        let mut delays = self.link.delays();
        loop {
            let remaining = timeout.saturating_sub(started.elapsed());
            let error = match tokio::time::timeout(remaining, self.publish_once(assignment, &queue, &body)).await {
                Ok(Ok(())) => {
                    self.link.reachable();
                    return Ok(());
                }
                Ok(Err(error)) if !error.is_transient() => return Err(error),
                Ok(Err(error)) => error,
                Err(_) => return Err(Error::Timeout(timeout)),
            };
            self.link.unreachable(&error);
            let delay = delays.next().unwrap_or(self.link.options().reconnect_max);
            if started.elapsed() + delay >= timeout {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn consume(&self, placement: &Placement, prefetch: u16) -> Result<Box<dyn AssignmentConsumer>, Error> {
        let queue = self.queue_name(placement);
        let consumer =
            RabbitConsumer::subscribe(self.link.clone(), queue, QueueKind::Assignments, prefetch.max(1)).await?;
        Ok(Box::new(consumer))
    }

    async fn ring(&self, ended: &ShardAssignment) -> Result<(), Error> {
        let queue = Self::doorbell_queue_under(&self.prefix);
        let body = serde_json::to_vec(ended)?;
        let channel = self.link.publishing_channel(&queue, QueueKind::Doorbell).await?;
        let properties = BasicProperties::default().with_content_type("application/json".into());
        channel
            .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &body, properties)
            .await?
            .await?;
        Ok(())
    }

    async fn doorbell(&self) -> Result<Box<dyn AssignmentConsumer>, Error> {
        let queue = Self::doorbell_queue_under(&self.prefix);
        Ok(Box::new(RabbitConsumer::subscribe(self.link.clone(), queue, QueueKind::Doorbell, DOORBELL_PREFETCH).await?))
    }
}

/// What a queue holds, which decides how it is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueKind {
    /// Shard assignments: a durable quorum queue.
    Assignments,
    /// Rings: a durable classic queue of at most [`DOORBELL_LENGTH`] messages.
    Doorbell,
}

/// Declares `queue` as `kind` needs (declaring it again is harmless).
async fn declare(channel: &Channel, queue: &str, kind: QueueKind) -> Result<(), Error> {
    let mut arguments = FieldTable::default();
    let options = match kind {
        QueueKind::Assignments => {
            arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
            QueueDeclareOptions { durable: true, ..Default::default() }
        }
        QueueKind::Doorbell => {
            let length = i64::try_from(DOORBELL_LENGTH).unwrap_or(i64::MAX);
            arguments.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
            arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(length));
            QueueDeclareOptions { durable: true, ..Default::default() }
        }
    };
    channel.queue_declare(queue.into(), options, arguments).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_shards_keep_the_pools_queue_and_labelled_ones_get_a_queue_per_label() {
        let placement = |pool: &str, label: Option<&str>| Placement { pool: pool.into(), label: label.map(Into::into) };
        let name = RabbitDispatcher::queue_name_under;
        assert_eq!(name("haul", &placement("default", None)), "haul.shards.default");
        assert_eq!(name("haul", &placement("default", Some("gpu"))), "haul.shards.default.label.gpu");
        assert_eq!(name("t-1", &placement("etl", Some("eu-west"))), "t-1.shards.etl.label.eu-west");
    }
}
