//! The RabbitMQ [`Dispatcher`]: one durable quorum queue per pool, named
//! `PREFIX.shards.POOL`, declared on first use. Publishing waits for the
//! broker's confirm; consumers acknowledge by hand, with a prefetch (QoS) of
//! their free slots, each on its own channel so that a consumer that goes
//! away gives back what it held, redelivered.
//!
//! Priority: quorum queues order by arrival. RabbitMQ 3.x ignores message
//! priority on them; 4.x knows two levels only (above 4 is high). The
//! assignment carries its priority in the message properties and the body;
//! the scheduler's own admission order (`planner::select`) stays what ranks
//! shards.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{Acknowledgement, AssignmentConsumer, Delivery, Dispatcher, Error, ShardAssignment};

/// Shard assignments queued in RabbitMQ.
pub struct RabbitDispatcher {
    connection: Connection,
    /// The channel publishes go through, in confirm mode.
    publishing: Channel,
    prefix: String,
    declared: Mutex<HashSet<String>>,
}

impl RabbitDispatcher {
    /// Connects to the broker at `url` (`amqp://USER:PASSWORD@HOST:PORT/VHOST`).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let publishing = connection.create_channel().await?;
        publishing.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(RabbitDispatcher { connection, publishing, prefix: prefix.to_string(), declared: Mutex::default() })
    }

    /// Closes the connection; what its consumers held unacknowledged is delivered again.
    pub async fn close(&self) -> Result<(), Error> {
        self.connection.close(200, "closing".into()).await?;
        Ok(())
    }

    /// The queue of `pool`.
    pub fn queue_name(&self, pool: &str) -> String {
        format!("{}.shards.{pool}", self.prefix)
    }

    /// Declares the quorum queue of `pool` once per dispatcher (redeclaring is harmless).
    async fn declare(&self, channel: &Channel, pool: &str) -> Result<String, Error> {
        let queue = self.queue_name(pool);
        if self.declared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(&queue) {
            return Ok(queue);
        }
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        let options = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(queue.as_str().into(), options, arguments).await?;
        self.declared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(queue.clone());
        Ok(queue)
    }
}

#[async_trait]
impl Dispatcher for RabbitDispatcher {
    async fn publish(&self, assignment: &ShardAssignment) -> Result<(), Error> {
        let queue = self.declare(&self.publishing, &assignment.pool).await?;
        let body = serde_json::to_vec(assignment)?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_priority(assignment.priority)
            .with_content_type("application/json".into());
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirm =
            self.publishing.basic_publish("".into(), queue.as_str().into(), options, &body, properties).await?.await?;
        if !confirm.is_ack() || confirm.take_message().is_some() {
            return Err(Error::Refused { run_id: assignment.run_id.clone(), shard_id: assignment.shard_id.clone() });
        }
        Ok(())
    }

    async fn consume(&self, pool: &str, prefetch: u16) -> Result<Box<dyn AssignmentConsumer>, Error> {
        let channel = self.connection.create_channel().await?;
        let queue = self.declare(&channel, pool).await?;
        channel.basic_qos(prefetch.max(1), BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok(Box::new(RabbitConsumer { consumer, _channel: channel }))
    }
}

struct RabbitConsumer {
    consumer: lapin::Consumer,
    /// Kept open while the consumer lives; closing it gives back unacknowledged deliveries.
    _channel: Channel,
}

#[async_trait]
impl AssignmentConsumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        let delivery = match self.consumer.next().await? {
            Ok(delivery) => delivery,
            Err(error) => return Some(Err(error.into())),
        };
        Some(match serde_json::from_slice(&delivery.data) {
            Ok(assignment) => Ok(Delivery {
                assignment,
                redelivered: delivery.redelivered,
                acknowledgement: Acknowledgement::Rabbit(delivery.acker),
            }),
            Err(error) => Err(error.into()),
        })
    }
}
