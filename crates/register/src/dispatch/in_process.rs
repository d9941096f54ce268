//! The in-process [`Dispatcher`]: a priority queue per [`Placement`] (pool
//! and worker label; highest priority first, then first published), and a
//! semaphore per consumer for its
//! prefetch. A delivery dropped without [`super::Delivery::ack`] goes back to
//! its queue, marked redelivered, as RabbitMQ does when a consumer dies.
//! The doorbell is one more such queue, cut to its newest
//! [`DOORBELL_LENGTH`] rings.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{
    Acknowledgement, AssignmentConsumer, DOORBELL_LENGTH, DOORBELL_PREFETCH, Delivery, Dispatcher, Error, Placement,
    ShardAssignment,
};

/// Assignments queued in this process's memory.
#[derive(Default)]
pub struct InProcessDispatcher {
    queues: Mutex<HashMap<Placement, Arc<PlacementQueue>>>,
    doorbell: Arc<PlacementQueue>,
}

impl InProcessDispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    fn queue(&self, placement: &Placement) -> Arc<PlacementQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.entry(placement.clone()).or_default().clone()
    }
}

#[derive(Default)]
struct PlacementQueue {
    waiting: Mutex<Waiting>,
    arrived: Notify,
}

/// The queued assignments by (priority, highest first; publication, earliest
/// first), each with whether it was delivered before.
#[derive(Default)]
struct Waiting {
    queue: BTreeMap<(Reverse<u8>, u64), (ShardAssignment, bool)>,
    published: u64,
}

impl PlacementQueue {
    fn push(&self, assignment: ShardAssignment, redelivered: bool) {
        self.push_within(assignment, redelivered, usize::MAX);
    }

    /// Queues `assignment`, dropping the first queued ones beyond `length`.
    fn push_within(&self, assignment: ShardAssignment, redelivered: bool, length: usize) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while waiting.queue.len() >= length {
            waiting.queue.pop_first();
        }
        waiting.published += 1;
        let key = (Reverse(assignment.priority), waiting.published);
        waiting.queue.insert(key, (assignment, redelivered));
        drop(waiting);
        self.arrived.notify_one();
    }

    async fn pop(&self) -> (ShardAssignment, bool) {
        loop {
            let arrived = self.arrived.notified();
            if let Some((_, queued)) =
                self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).queue.pop_first()
            {
                return queued;
            }
            arrived.await;
        }
    }
}

#[async_trait]
impl Dispatcher for InProcessDispatcher {
    async fn publish(&self, assignment: &ShardAssignment) -> Result<(), Error> {
        self.queue(&assignment.placement()).push(assignment.clone(), false);
        Ok(())
    }

    async fn consume(&self, placement: &Placement, prefetch: u16) -> Result<Box<dyn AssignmentConsumer>, Error> {
        Ok(InProcessConsumer::boxed(self.queue(placement), prefetch))
    }

    async fn ring(&self, ended: &ShardAssignment) -> Result<(), Error> {
        // Without its priority, the ring's place is its age: the oldest go first.
        let ring = ShardAssignment { priority: 0, ..ended.clone() };
        self.doorbell.push_within(ring, false, DOORBELL_LENGTH);
        Ok(())
    }

    async fn doorbell(&self) -> Result<Box<dyn AssignmentConsumer>, Error> {
        Ok(InProcessConsumer::boxed(self.doorbell.clone(), DOORBELL_PREFETCH))
    }
}

struct InProcessConsumer {
    queue: Arc<PlacementQueue>,
    slots: Arc<Semaphore>,
}

impl InProcessConsumer {
    fn boxed(queue: Arc<PlacementQueue>, prefetch: u16) -> Box<dyn AssignmentConsumer> {
        Box::new(InProcessConsumer { queue, slots: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))) })
    }
}

#[async_trait]
impl AssignmentConsumer for InProcessConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        let (assignment, redelivered) = self.queue.pop().await;
        let unsettled = Unsettled { assignment: Some(assignment.clone()), queue: self.queue.clone(), _slot: slot };
        Some(Ok(Delivery { assignment, redelivered, acknowledgement: Acknowledgement::InProcess(unsettled) }))
    }
}

/// A delivered assignment not yet acknowledged: it holds a prefetch slot, and
/// goes back to its queue if dropped unsettled.
pub(super) struct Unsettled {
    assignment: Option<ShardAssignment>,
    queue: Arc<PlacementQueue>,
    _slot: OwnedSemaphorePermit,
}

impl Unsettled {
    pub(super) fn settle(mut self) {
        self.assignment = None;
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some(assignment) = self.assignment.take() {
            self.queue.push(assignment, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn assignment(shard_id: &str, priority: u8) -> ShardAssignment {
        ShardAssignment {
            run_id: "run".into(),
            shard_id: shard_id.into(),
            pool: "default".into(),
            label: None,
            priority,
        }
    }

    fn placement(label: Option<&str>) -> Placement {
        Placement { pool: "default".into(), label: label.map(Into::into) }
    }

    async fn next(consumer: &mut Box<dyn AssignmentConsumer>) -> Delivery {
        consumer.next().await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn higher_priorities_go_first_then_publication_order() {
        let dispatcher = InProcessDispatcher::new();
        for (shard, priority) in [("a", 1), ("b", 5), ("c", 1), ("d", 5)] {
            dispatcher.publish(&assignment(shard, priority)).await.unwrap();
        }
        let mut consumer = dispatcher.consume(&placement(None), 10).await.unwrap();
        let mut order = Vec::new();
        for _ in 0..4 {
            let delivery = next(&mut consumer).await;
            order.push(delivery.assignment.shard_id.clone());
            delivery.ack().await.unwrap();
        }
        assert_eq!(order, ["b", "d", "a", "c"]);
    }

    #[tokio::test]
    async fn prefetch_bounds_unacknowledged_deliveries() {
        let dispatcher = InProcessDispatcher::new();
        for shard in ["a", "b", "c"] {
            dispatcher.publish(&assignment(shard, 0)).await.unwrap();
        }
        let mut consumer = dispatcher.consume(&placement(None), 2).await.unwrap();
        let first = next(&mut consumer).await;
        let _second = next(&mut consumer).await;
        assert!(tokio::time::timeout(Duration::from_millis(50), consumer.next()).await.is_err());
        first.ack().await.unwrap();
        assert_eq!(next(&mut consumer).await.assignment.shard_id, "c");
    }

    #[tokio::test]
    async fn what_a_dead_consumer_held_is_delivered_again() {
        let dispatcher = InProcessDispatcher::new();
        dispatcher.publish(&assignment("a", 0)).await.unwrap();
        let mut dying = dispatcher.consume(&placement(None), 1).await.unwrap();
        let taken = next(&mut dying).await;
        assert!(!taken.redelivered);
        drop((taken, dying));
        let mut survivor = dispatcher.consume(&placement(None), 1).await.unwrap();
        let again = next(&mut survivor).await;
        assert_eq!(again.assignment.shard_id, "a");
        assert!(again.redelivered);
        again.requeue().await.unwrap();
        assert_eq!(next(&mut survivor).await.assignment.shard_id, "a");
    }

    #[tokio::test]
    async fn the_doorbell_keeps_its_newest_rings_apart_from_the_assignments() {
        let dispatcher = InProcessDispatcher::new();
        for shard in 0..DOORBELL_LENGTH + 2 {
            // priorities play no part among rings
            dispatcher.ring(&assignment(&shard.to_string(), u8::from(shard == 5))).await.unwrap();
        }
        let mut assignments = dispatcher.consume(&placement(None), 10).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), assignments.next()).await.is_err());
        let mut doorbell = dispatcher.doorbell().await.unwrap();
        let first = next(&mut doorbell).await;
        assert_eq!(first.assignment.shard_id, "2", "the two oldest rings were dropped");
        first.ack().await.unwrap();
    }

    #[tokio::test]
    async fn a_labelled_assignment_reaches_only_the_consumers_of_its_label() {
        let dispatcher = InProcessDispatcher::new();
        let labelled = ShardAssignment { label: Some("gpu".into()), ..assignment("gpu-shard", 0) };
        dispatcher.publish(&labelled).await.unwrap();
        dispatcher.publish(&assignment("any-shard", 0)).await.unwrap();
        let mut unlabelled = dispatcher.consume(&placement(None), 10).await.unwrap();
        let mut other_label = dispatcher.consume(&placement(Some("eu")), 10).await.unwrap();
        let mut gpu = dispatcher.consume(&placement(Some("gpu")), 10).await.unwrap();
        // settled, so that nothing is delivered again
        let taken = next(&mut gpu).await;
        assert_eq!(taken.assignment, labelled);
        taken.ack().await.unwrap();
        let taken = next(&mut unlabelled).await;
        assert_eq!(taken.assignment.shard_id, "any-shard");
        taken.ack().await.unwrap();
        let nothing = Duration::from_millis(50);
        assert!(tokio::time::timeout(nothing, unlabelled.next()).await.is_err());
        assert!(tokio::time::timeout(nothing, other_label.next()).await.is_err());
        assert!(tokio::time::timeout(nothing, gpu.next()).await.is_err());
    }
}
