//! A subscription to a queue (a worker's to its pool's, the leader's to the
//! doorbell), renewed whenever its channel
//! or connection dies: on a channel of the live connection, the queue is
//! declared again, the prefetch applied again and the consumer started again,
//! after a backoff delay that grows while renewals fail and starts over once
//! an assignment arrives. Renewing takes as long as the broker stays away;
//! only [`super::RabbitDispatcher::close`] ends the consumer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use super::link::Link;
use super::{QueueKind, declare};
use crate::dispatch::{Acknowledgement, AssignmentConsumer, Delivery, Error};

pub(super) struct RabbitConsumer {
    link: Arc<Link>,
    queue: String,
    kind: QueueKind,
    prefetch: u16,
    /// The live subscription; `None` once it died, until it is renewed.
    subscription: Option<Subscription>,
    /// The delays before the next renewals; `None` until a subscription dies.
    delays: Option<Box<dyn Iterator<Item = Duration> + Send>>,
}

struct Subscription {
    consumer: Consumer,
    /// Kept open while the subscription lives; closing it gives back unacknowledged deliveries.
    _channel: Channel,
}

impl Subscription {
    /// Declares `queue` on a new channel, applies the prefetch, starts consuming.
    async fn start(link: &Link, queue: &str, kind: QueueKind, prefetch: u16) -> Result<Self, Error> {
        let channel = link.channel().await?;
        declare(&channel, queue, kind).await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok(Subscription { consumer, _channel: channel })
    }
}

impl RabbitConsumer {
    /// Subscribes to `queue`; fails on a lasting error only: while the
    /// broker is unreachable, the subscription is made by [`Self::next`].
    pub(super) async fn subscribe(
        link: Arc<Link>,
        queue: String,
        kind: QueueKind,
        prefetch: u16,
    ) -> Result<Self, Error> {
        let mut consumer = RabbitConsumer { link, queue, kind, prefetch, subscription: None, delays: None };
        match Subscription::start(&consumer.link, &consumer.queue, kind, consumer.prefetch).await {
            Ok(subscription) => consumer.subscription = Some(subscription),
            Err(error) if error.is_transient() => consumer.link.unreachable(&error),
            Err(error) => return Err(error),
        }
        Ok(consumer)
    }

    /// Waits before the next renewal.
    async fn back_off(&mut self) {
        let max = self.link.options().reconnect_max;
        let delays = self.delays.get_or_insert_with(|| Box::new(self.link.delays()));
        tokio::time::sleep(delays.next().unwrap_or(max)).await;
    }
}

#[async_trait]
impl AssignmentConsumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            if self.link.is_closed() {
                return None;
            }
            let Some(subscription) = self.subscription.as_mut() else {
                match Subscription::start(&self.link, &self.queue, self.kind, self.prefetch).await {
                    Ok(subscription) => self.subscription = Some(subscription),
                    Err(error) if error.is_transient() => {
                        self.link.unreachable(&error);
                        self.back_off().await;
                    }
                    Err(error) => {
                        // after a delay, so that a caller asking again at once does not spin
                        self.back_off().await;
                        return Some(Err(error));
                    }
                }
                continue;
            };
            let delivery = match subscription.consumer.next().await {
                Some(Ok(delivery)) => delivery,
                ended => {
                    // the channel or the connection died, or the broker cancelled the consumer
                    self.subscription = None;
                    if self.link.is_closed() {
                        return None;
                    }
                    if let Some(Err(error)) = ended {
                        self.link.unreachable(&error.into());
                    }
                    self.back_off().await;
                    continue;
                }
            };
            self.link.reachable();
            self.delays = None;
            return Some(match serde_json::from_slice(&delivery.data) {
                Ok(assignment) => Ok(Delivery {
                    assignment,
                    redelivered: delivery.redelivered,
                    acknowledgement: Acknowledgement::Rabbit(delivery.acker),
                }),
                Err(error) => {
                    // Dropped, as it could never be read: left unsettled, it would hold a prefetch slot.
                    let _ = delivery.acker.reject(BasicRejectOptions { requeue: false }).await;
                    Err(error.into())
                }
            });
        }
    }
}
