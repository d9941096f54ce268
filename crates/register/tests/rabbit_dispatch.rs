//! The RabbitMQ dispatcher against a real broker: confirmed publishes into a
//! quorum queue per pool and worker label, prefetch, manual acks,
//! redelivery after a consumer dies, and the doorbell. Each test uses its own queues and
//! deletes them.

use std::time::Duration;

use haul_register::dispatch::{
    AssignmentConsumer, DOORBELL_LENGTH, Delivery, Dispatcher, Placement, RabbitDispatcher, ShardAssignment,
};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A dispatcher whose queues are this test's alone; they are deleted when it drops.
struct Isolated {
    prefix: String,
    placements: Vec<Placement>,
}

impl Isolated {
    /// Queues for `placements`, as (pool, label) pairs.
    fn new(placements: &[(&str, Option<&str>)]) -> Self {
        let placements = placements.iter().map(|&(pool, label)| placement(pool, label)).collect();
        Isolated { prefix: format!("haul-test-{}", uuid::Uuid::now_v7()), placements }
    }

    async fn dispatcher(&self) -> RabbitDispatcher {
        RabbitDispatcher::connect(BROKER, &self.prefix).await.unwrap()
    }

    async fn delete_queues(&self) {
        let connection = Connection::connect(BROKER, ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        for placement in &self.placements {
            let queue = RabbitDispatcher::queue_name_under(&self.prefix, placement);
            channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
        }
        connection.close(200, "done".into()).await.unwrap();
    }

    /// How many messages the doorbell's queue holds, once it holds `expected`
    /// (or whatever it holds after a few seconds); then the queue is deleted.
    async fn doorbell_length_then_delete(&self, expected: u32) -> u32 {
        let connection = Connection::connect(BROKER, ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = RabbitDispatcher::doorbell_queue_under(&self.prefix);
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let mut count = 0;
        for _ in 0..100 {
            let declared = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await.unwrap();
            count = declared.message_count();
            if count == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
        connection.close(200, "done".into()).await.unwrap();
        count
    }
}

fn placement(pool: &str, label: Option<&str>) -> Placement {
    Placement { pool: pool.into(), label: label.map(Into::into) }
}

fn assignment(shard_id: &str, pool: &str, priority: u8) -> ShardAssignment {
    ShardAssignment { run_id: "run-1".into(), shard_id: shard_id.into(), pool: pool.into(), label: None, priority }
}

async fn next(consumer: &mut Box<dyn AssignmentConsumer>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.expect("a delivery in time").unwrap().unwrap()
}

#[tokio::test]
async fn a_published_assignment_reaches_a_consumer_of_its_pool_through_a_quorum_queue() {
    let isolated = Isolated::new(&[("etl", None), ("web", None)]);
    let dispatcher = isolated.dispatcher().await;
    dispatcher.publish(&assignment("s1", "etl", 7)).await.unwrap();
    dispatcher.publish(&assignment("s2", "web", 0)).await.unwrap();
    let mut consumer = dispatcher.consume(&placement("etl", None), 4).await.unwrap();
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.assignment, assignment("s1", "etl", 7));
    assert!(!delivery.redelivered);
    delivery.ack().await.unwrap();

    // the queue is a quorum queue: declaring it classic is refused
    let connection = Connection::connect(BROKER, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut classic = FieldTable::default();
    classic.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    let queue = dispatcher.queue_name(&placement("etl", None));
    assert!(channel.queue_declare(queue.as_str().into(), options, classic).await.is_err());
    dispatcher.close().await.unwrap();
    isolated.delete_queues().await;
}

#[tokio::test]
async fn a_consumer_holds_at_most_its_prefetch_unacknowledged() {
    let isolated = Isolated::new(&[("etl", None)]);
    let dispatcher = isolated.dispatcher().await;
    for shard in ["s1", "s2", "s3"] {
        dispatcher.publish(&assignment(shard, "etl", 0)).await.unwrap();
    }
    let mut consumer = dispatcher.consume(&placement("etl", None), 2).await.unwrap();
    let first = next(&mut consumer).await;
    let second = next(&mut consumer).await;
    assert_eq!([&first.assignment.shard_id, &second.assignment.shard_id], ["s1", "s2"]);
    assert!(tokio::time::timeout(Duration::from_millis(300), consumer.next()).await.is_err());
    first.ack().await.unwrap();
    assert_eq!(next(&mut consumer).await.assignment.shard_id, "s3");
    dispatcher.close().await.unwrap();
    isolated.delete_queues().await;
}

#[tokio::test]
async fn what_a_dead_worker_held_is_redelivered_to_another() {
    let isolated = Isolated::new(&[("etl", None)]);
    let (dying, survivor) = (isolated.dispatcher().await, isolated.dispatcher().await);
    dying.publish(&assignment("s1", "etl", 0)).await.unwrap();
    let mut held = dying.consume(&placement("etl", None), 1).await.unwrap();
    let taken = next(&mut held).await;
    assert!(!taken.redelivered);
    dying.close().await.unwrap();

    let mut consumer = survivor.consume(&placement("etl", None), 1).await.unwrap();
    let again = next(&mut consumer).await;
    assert_eq!(again.assignment.shard_id, "s1");
    assert!(again.redelivered);
    // a requeued assignment comes back too
    again.requeue().await.unwrap();
    let last = next(&mut consumer).await;
    assert_eq!(last.assignment.shard_id, "s1");
    last.ack().await.unwrap();
    survivor.close().await.unwrap();
    isolated.delete_queues().await;
}

#[tokio::test]
async fn a_labelled_assignment_goes_only_to_the_workers_carrying_its_label() {
    let isolated = Isolated::new(&[("etl", None), ("etl", Some("gpu")), ("etl", Some("eu"))]);
    let dispatcher = isolated.dispatcher().await;
    let labelled = ShardAssignment { label: Some("gpu".into()), ..assignment("gpu-shard", "etl", 0) };
    dispatcher.publish(&labelled).await.unwrap();
    dispatcher.publish(&assignment("any-shard", "etl", 0)).await.unwrap();
    assert_eq!(dispatcher.queue_name(&labelled.placement()), format!("{}.shards.etl.label.gpu", isolated.prefix));

    // a worker without the label, and one with another label, see only the unlabelled shard
    let mut unlabelled = dispatcher.consume(&placement("etl", None), 4).await.unwrap();
    let mut other_label = dispatcher.consume(&placement("etl", Some("eu")), 4).await.unwrap();
    let delivery = next(&mut unlabelled).await;
    assert_eq!(delivery.assignment.shard_id, "any-shard");
    delivery.ack().await.unwrap();
    let nothing = Duration::from_millis(300);
    assert!(tokio::time::timeout(nothing, unlabelled.next()).await.is_err());
    assert!(tokio::time::timeout(nothing, other_label.next()).await.is_err());

    // a worker carrying the label takes the labelled shard, label and all
    let mut gpu = dispatcher.consume(&placement("etl", Some("gpu")), 4).await.unwrap();
    let delivery = next(&mut gpu).await;
    assert_eq!(delivery.assignment, labelled);
    delivery.ack().await.unwrap();
    assert!(tokio::time::timeout(nothing, gpu.next()).await.is_err());
    dispatcher.close().await.unwrap();
    isolated.delete_queues().await;
}

#[tokio::test]
async fn rings_reach_the_doorbell_never_a_worker_and_only_the_newest_are_kept() {
    let isolated = Isolated::new(&[("etl", None)]);
    let dispatcher = isolated.dispatcher().await;
    let mut assignments = dispatcher.consume(&placement("etl", None), 4).await.unwrap();
    let mut doorbell = dispatcher.doorbell().await.unwrap();
    dispatcher.ring(&assignment("s1", "etl", 0)).await.unwrap();
    let ring = next(&mut doorbell).await;
    assert_eq!(ring.assignment, assignment("s1", "etl", 0));
    ring.ack().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), assignments.next()).await.is_err(),
        "a ring is no assignment"
    );

    // Unread rings pile up to the doorbell's length, no further.
    drop(doorbell);
    for shard in 0..DOORBELL_LENGTH + 5 {
        dispatcher.ring(&assignment(&format!("s{shard}"), "etl", 0)).await.unwrap();
    }
    let kept = isolated.doorbell_length_then_delete(DOORBELL_LENGTH as u32).await;
    assert_eq!(kept, DOORBELL_LENGTH as u32);
    dispatcher.close().await.unwrap();
    isolated.delete_queues().await;
}
