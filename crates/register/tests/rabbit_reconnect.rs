//! The RabbitMQ dispatcher across broker restarts, against a private node of
//! each test's own: no published assignment is lost, what a consumer held
//! unacknowledged comes again, publishes wait for the broker (for a bounded
//! time), and a waiting consumer resumes.

use std::collections::BTreeSet;
use std::time::Duration;

use haul_register::dispatch::{
    AssignmentConsumer, Delivery, Dispatcher, Error, Placement, RabbitDispatcher, RabbitOptions, ShardAssignment,
};
use haul_register::testing::PrivateRabbitMq;
use tokio::time::{Instant, timeout};

/// Reconnection quick enough for tests.
const OPTIONS: RabbitOptions = RabbitOptions {
    publish_timeout: Duration::from_secs(60),
    reconnect_initial: Duration::from_millis(50),
    reconnect_max: Duration::from_millis(250),
};

async fn dispatcher(broker: &PrivateRabbitMq, options: RabbitOptions) -> RabbitDispatcher {
    RabbitDispatcher::connect_with(&broker.url(), "haul-test", options).await.unwrap()
}

fn assignment(shard_id: &str) -> ShardAssignment {
    ShardAssignment { run_id: "run-1".into(), shard_id: shard_id.into(), pool: "etl".into(), label: None, priority: 0 }
}

fn etl() -> Placement {
    Placement { pool: "etl".into(), label: None }
}

async fn next(consumer: &mut Box<dyn AssignmentConsumer>) -> Delivery {
    timeout(Duration::from_secs(30), consumer.next()).await.expect("a delivery in time").unwrap().unwrap()
}

#[tokio::test]
async fn no_assignment_is_lost_across_a_broker_restart() {
    const N: usize = 20;
    let mut broker = PrivateRabbitMq::start().await;
    let dispatcher = dispatcher(&broker, OPTIONS).await;
    let shards: Vec<String> = (0..2 * N).map(|index| format!("s{index:02}")).collect();
    for shard in &shards[..N] {
        dispatcher.publish(&assignment(shard)).await.unwrap();
    }
    let mut consumer = dispatcher.consume(&etl(), 3).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut consumer).await);
    }
    let held_ids: BTreeSet<String> = held.iter().map(|delivery| delivery.assignment.shard_id.clone()).collect();
    assert_eq!(held_ids, shards[..3].iter().cloned().collect());

    broker.restart().await;
    // what was delivered on the lost connection cannot be settled any more
    for delivery in held {
        assert!(matches!(delivery.ack().await, Err(Error::ChannelGone)));
    }
    for shard in &shards[N..] {
        dispatcher.publish(&assignment(shard)).await.unwrap();
    }

    let mut received = BTreeSet::new();
    while received.len() < 2 * N {
        let delivery = next(&mut consumer).await;
        let shard_id = delivery.assignment.shard_id.clone();
        assert_eq!(delivery.redelivered, held_ids.contains(&shard_id), "{shard_id} redelivered");
        received.insert(shard_id);
        delivery.ack().await.unwrap();
    }
    assert_eq!(received, shards.iter().cloned().collect());
    assert!(timeout(Duration::from_millis(300), consumer.next()).await.is_err(), "nothing more is queued");

    dispatcher.close().await.unwrap();
    assert!(timeout(Duration::from_secs(5), consumer.next()).await.unwrap().is_none(), "a closed consumer ends");
    assert!(matches!(dispatcher.publish(&assignment("late")).await, Err(Error::Closed)));
}

#[tokio::test]
async fn publishes_wait_for_the_broker_and_a_waiting_consumer_resumes() {
    let mut broker = PrivateRabbitMq::start().await;
    let (publisher, worker) = (dispatcher(&broker, OPTIONS).await, dispatcher(&broker, OPTIONS).await);
    let impatient = RabbitOptions { publish_timeout: Duration::from_millis(700), ..OPTIONS };
    let impatient = dispatcher(&broker, impatient).await;
    let mut consumer = worker.consume(&etl(), 1).await.unwrap();
    let waiting = tokio::spawn(async move {
        let delivery = next(&mut consumer).await;
        (delivery.assignment.shard_id.clone(), delivery.redelivered, delivery.ack().await.is_ok())
    });

    broker.stop().await;
    // a publish gives up once its timeout has passed without a broker
    let started = Instant::now();
    let error = impatient.publish(&assignment("never")).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "gave up after {:?}", started.elapsed());
    // another keeps trying until the broker is back
    let publishing = tokio::spawn(async move {
        publisher.publish(&assignment("s1")).await.unwrap();
        publisher
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!publishing.is_finished(), "no broker, no confirm");
    broker.restart().await;

    let publisher = timeout(Duration::from_secs(30), publishing).await.expect("a publish in time").unwrap();
    let (shard_id, redelivered, acked) =
        timeout(Duration::from_secs(30), waiting).await.expect("the consumer resumes").unwrap();
    assert_eq!((shard_id.as_str(), redelivered, acked), ("s1", false, true));
    publisher.close().await.unwrap();
    worker.close().await.unwrap();
}
