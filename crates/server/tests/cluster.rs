//! The distributed mode with real processes on the services of 127.0.0.1:
//! `haul server`s electing a leader in ZooKeeper, `haul worker`s taking
//! shards from RabbitMQ under leases in MariaDB, rate limits in Redis — and
//! what becomes of a run when a worker or the leader is killed or frozen, a
//! worker is stopped (SIGTERM), or RabbitMQ or Redis (private instances of
//! the test's own) go away mid-run.

mod common {
    pub mod cluster;
    pub mod server;
}

use std::time::Duration;

use common::cluster::{
    Cluster, EXPECTED_WORKERS, LEASE_TTL, SESSION_TIMEOUT, SHUTDOWN_GRACE, Services, eventually, slow_files_job,
};
use common::server::{Server, csv, output_ids};
use haul_register::testing::{Backend, PrivateRabbitMq, PrivateRedis, TestDatabase};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The rate limit of the jobs, in records per second, shared by every worker.
const RECORDS_PER_SECOND: u32 = 200;

/// `files` files of `records` records each (ids from 1 on), to be copied at
/// [`RECORDS_PER_SECOND`]; returns the job.
fn input_files(cluster: &Cluster, name: &str, files: u64, records: u64) -> String {
    for file in 0..files {
        cluster.write(&format!("in/{name}/part-{file:02}.csv"), &csv(file * records + 1, records));
    }
    slow_files_job(&cluster.path(""), name, RECORDS_PER_SECOND)
}

/// Four files of 300 records each.
fn four_files(cluster: &Cluster, name: &str) -> String {
    input_files(cluster, name, 4, 300)
}

async fn shards(server: &Server, run_id: &str) -> Vec<Value> {
    let (_, detail) = server.get(&format!("/api/v1/runs/{run_id}")).await;
    detail["shards"].as_array().cloned().unwrap_or_default()
}

/// A shard of the run that `owner` runs and has checkpointed in.
async fn checkpointed_shard_of(server: &Server, run_id: &str, owner: &str) -> Option<Value> {
    shards(server, run_id).await.into_iter().find(|shard| {
        shard["state"] == "running" && shard["owner"] == owner && shard["sequence"].as_u64().unwrap_or(0) > 0
    })
}

#[tokio::test]
async fn a_worker_killed_mid_shard_leaves_its_shard_to_another_worker_which_resumes_it_exactly() {
    kill_a_worker(&Cluster::new(Backend::MariaDb).await).await;
}

async fn kill_a_worker(cluster: &Cluster) {
    let server = cluster.server("server", 0);
    let mut doomed = cluster.worker("doomed", 2, &["default"]);
    let survivor = cluster.worker("survivor", 2, &["default"]);
    server.apply(&four_files(cluster, "copy")).await;
    let run_id = server.trigger("copy").await;

    let mut victim = None;
    eventually("a shard checkpointed on the doomed worker", Duration::from_secs(30), async || {
        victim = checkpointed_shard_of(&server, &run_id, "doomed").await;
        victim.is_some()
    })
    .await;
    doomed.signal(Signal::SIGKILL);
    doomed.wait_exit(Duration::from_secs(5));
    let victim = victim.unwrap();

    let detail = server.wait_for_run(&run_id, &["succeeded", "failed"]).await;
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}", survivor.logs());
    let resumed = detail["shards"].as_array().unwrap().iter().find(|shard| shard["id"] == victim["id"]).unwrap();
    assert_eq!(resumed["owner"], "survivor", "{resumed}");
    assert!(resumed["epoch"].as_u64() > victim["epoch"].as_u64(), "{resumed} after {victim}");
    // Every record once: no torn part, no part written twice.
    assert_eq!(output_ids(&cluster.path("out/copy")), (1..=1200).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_worker_frozen_past_its_lease_is_fenced_off_when_it_thaws() {
    freeze_a_worker(&Cluster::new(Backend::MariaDb).await).await;
}

async fn freeze_a_worker(cluster: &Cluster) {
    let server = cluster.server("server", 0);
    let frozen = cluster.worker("frozen", 2, &["default"]);
    let _other = cluster.worker("other", 2, &["default"]);
    server.apply(&four_files(cluster, "copy")).await;
    let run_id = server.trigger("copy").await;

    let mut victim = None;
    eventually("a shard checkpointed on the worker to freeze", Duration::from_secs(30), async || {
        victim = checkpointed_shard_of(&server, &run_id, "frozen").await;
        victim.is_some()
    })
    .await;
    frozen.signal(Signal::SIGSTOP);
    let victim = victim.unwrap();
    // Its lease runs out and the other worker takes the shard over.
    eventually("the other worker took the frozen worker's shard", LEASE_TTL * 5, async || {
        shards(&server, &run_id).await.iter().any(|shard| shard["id"] == victim["id"] && shard["owner"] == "other")
    })
    .await;
    frozen.signal(Signal::SIGCONT);

    let detail = server.wait_for_run(&run_id, &["succeeded", "failed"]).await;
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}", frozen.logs());
    let taken = detail["shards"].as_array().unwrap().iter().find(|shard| shard["id"] == victim["id"]).unwrap();
    assert_eq!(taken["owner"], "other", "{taken}");
    // The thawed worker's commits and checkpoints were refused by the epoch.
    let refused = format!("lease lost on shard {}", victim["id"].as_str().unwrap());
    eventually("the thawed worker saw its lease lost", Duration::from_secs(10), async || {
        frozen.logs().contains(&refused)
    })
    .await;
    assert_eq!(output_ids(&cluster.path("out/copy")), (1..=1200).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_session_timeout_and_no_schedule_fires_twice() {
    kill_the_leader(&Cluster::new(Backend::MariaDb).await).await;
}

async fn kill_the_leader(cluster: &Cluster) {
    let mut first = cluster.server("first", 0);
    // The first server leads before the second one enters the election.
    eventually("the first server leads", Duration::from_secs(10), async || {
        first.get_text("/metrics").await.1.contains("haul_scheduler_leader 1")
    })
    .await;
    let second = cluster.server("second", 0);
    let _worker = cluster.worker("worker", 4, &["default"]);
    for file in 0..2u64 {
        cluster.write(&format!("in/tick/part-{file}.csv"), &csv(file * 10 + 1, 10));
    }
    // A schedule every second: a run per second, each copying 20 records.
    let job = format!("{}\n[schedule]\ncron = \"* * * * * *\"\n", slow_files_job(&cluster.path(""), "tick", 100_000));
    second.apply(&job).await;
    eventually("scheduled runs succeed", Duration::from_secs(30), async || succeeded_runs(&second, "tick").await >= 2)
        .await;

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let killed = std::time::Instant::now();
    eventually("the second server leads", SESSION_TIMEOUT + Duration::from_secs(1), async || {
        second.get_text("/metrics").await.1.contains("haul_scheduler_leader 1")
    })
    .await;
    let took_over = killed.elapsed();
    assert!(took_over <= SESSION_TIMEOUT + Duration::from_secs(1), "took over after {took_over:?}");
    let before = succeeded_runs(&second, "tick").await;
    eventually("the new leader's scheduled runs succeed", Duration::from_secs(30), async || {
        succeeded_runs(&second, "tick").await >= before + 2
    })
    .await;

    // One run per schedule time, across both leaders.
    let (_, runs) = second.get("/api/v1/runs?job=tick&limit=1000").await;
    let mut times: Vec<&str> =
        runs.as_array().unwrap().iter().map(|run| run["scheduled_for"].as_str().unwrap()).collect();
    let count = times.len();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), count, "a schedule time fired twice: {runs}");
}

async fn succeeded_runs(server: &Server, job: &str) -> usize {
    let (_, runs) = server.get(&format!("/api/v1/runs?job={job}&state=succeeded&limit=1000")).await;
    runs.as_array().map_or(0, Vec::len)
}

/// A run's records in its sink as of the shards' last checkpoints.
async fn committed_records(server: &Server, run_id: &str) -> u64 {
    shards(server, run_id).await.iter().map(|shard| shard["counters"]["records_written"].as_u64().unwrap()).sum()
}

/// A cluster whose RabbitMQ is a node of the test's own, to restart or empty.
async fn cluster_on_a_private_broker() -> (Cluster, PrivateRabbitMq) {
    let broker = PrivateRabbitMq::start().await;
    let database = TestDatabase::create(Backend::MariaDb).await;
    let services = Services { amqp: broker.url(), ..Services::shared(database.url()) };
    (Cluster::with_services(Some(database), services), broker)
}

#[tokio::test]
async fn a_broker_restart_mid_run_loses_no_shard_and_leaves_none_stuck() {
    let (cluster, mut broker) = cluster_on_a_private_broker().await;
    broker_trouble_mid_run(&cluster, async || broker.restart().await).await;
}

#[tokio::test]
async fn a_broker_that_loses_its_queue_mid_run_gets_every_unfinished_shard_offered_again() {
    let (cluster, broker) = cluster_on_a_private_broker().await;
    let queue = format!("{}.shards.default", cluster.prefix);
    broker_trouble_mid_run(&cluster, async || broker.delete_queue(&queue).await).await;
}

/// Runs twelve shards on two workers of two slots, with `trouble` at the
/// broker once a shard has checkpointed; the run must end exact.
async fn broker_trouble_mid_run(cluster: &Cluster, trouble: impl AsyncFnOnce()) {
    let server = cluster.server("server", 0);
    let one = cluster.worker("one", 2, &["default"]);
    let two = cluster.worker("two", 2, &["default"]);
    // Twelve shards for four slots: the leader offers eight at first (the
    // slots times the dispatch depth) and the rest as shards finish, across
    // the trouble.
    server.apply(&input_files(cluster, "copy", 12, 100)).await;
    let run_id = server.trigger("copy").await;
    eventually("a shard checkpointed", Duration::from_secs(30), async || committed_records(&server, &run_id).await > 0)
        .await;

    trouble().await;
    // Shards that never ran are left: they can only come through the broker as it is now.
    let never_ran = shards(&server, &run_id).await.iter().filter(|shard| shard["epoch"] == 0).count();
    assert!(never_ran > 0, "every shard was claimed before the broker trouble ended");

    let detail = server.wait_for_run(&run_id, &["succeeded", "failed"]).await;
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}\n{}", one.logs(), two.logs());
    assert_eq!(output_ids(&cluster.path("out/copy")), (1..=1200).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_redis_outage_mid_run_leaves_the_run_going_under_local_limits() {
    let mut redis = PrivateRedis::start();
    let database = TestDatabase::create(Backend::MariaDb).await;
    let services = Services { redis: redis.url(), ..Services::shared(database.url()) };
    stop_redis(&Cluster::with_services(Some(database), services), &mut redis).await;
}

async fn stop_redis(cluster: &Cluster, redis: &mut PrivateRedis) {
    let server = cluster.server("server", 0);
    let workers = [cluster.worker("one", 2, &["default"]), cluster.worker("two", 2, &["default"])];
    server.apply(&four_files(cluster, "copy")).await;
    let run_id = server.trigger("copy").await;
    eventually("both workers checkpointed a shard", Duration::from_secs(30), async || {
        checkpointed_shard_of(&server, &run_id, "one").await.is_some()
            && checkpointed_shard_of(&server, &run_id, "two").await.is_some()
    })
    .await;

    redis.stop();
    let stopped = std::time::Instant::now();
    let before = committed_records(&server, &run_id).await;
    let detail = server.wait_for_run(&run_id, &["succeeded", "failed"]).await;
    let elapsed = stopped.elapsed().as_secs_f64();
    assert_eq!(detail["state"], "succeeded", "{detail}");
    assert_eq!(output_ids(&cluster.path("out/copy")), (1..=1200).collect::<Vec<u64>>());
    for worker in &workers {
        let logs = worker.logs();
        assert!(
            logs.contains("redis unreachable, falling back to local state until it answers"),
            "worker {} did not fall back:\n{logs}",
            worker.name
        );
    }
    // Each worker took at most its share of the limit (and of its burst):
    // the run was paced, though by local limits.
    let share = f64::from(RECORDS_PER_SECOND) / f64::from(EXPECTED_WORKERS);
    let workers = workers.len() as f64;
    // What each of the four shards wrote before the stop but committed after:
    // a batch, and a checkpoint interval (100 ms) at the shared rate.
    let in_flight = 4.0 * (10.0 + 0.1 * f64::from(RECORDS_PER_SECOND));
    let ceiling = workers * share * (elapsed + 1.0) + in_flight;
    let after = (1200 - before) as f64;
    assert!(
        after <= ceiling,
        "{after} records in the {elapsed:.1}s after redis stopped; local limits allow {ceiling:.0}"
    );
}

#[tokio::test]
async fn a_worker_sent_sigterm_mid_shard_drains_and_another_worker_resumes_its_shard() {
    drain_a_worker(&Cluster::new(Backend::MariaDb).await).await;
}

async fn drain_a_worker(cluster: &Cluster) {
    let server = cluster.server("server", 0);
    let mut draining = cluster.worker("draining", 2, &["default"]);
    server.apply(&four_files(cluster, "copy")).await;
    let run_id = server.trigger("copy").await;
    let mut victim = None;
    eventually("a shard checkpointed on the worker to stop", Duration::from_secs(30), async || {
        victim = checkpointed_shard_of(&server, &run_id, "draining").await;
        victim.is_some()
    })
    .await;
    let victim = victim.unwrap();
    let victim_id = victim["id"].as_str().unwrap();

    draining.signal(Signal::SIGTERM);
    let status = draining.wait_exit(SHUTDOWN_GRACE);
    assert!(status.success(), "{status}:\n{}", draining.logs());
    assert!(!draining.logs().contains("did not stop within"), "{}", draining.logs());
    // Released, not left to expire: pending again at once, at or past the
    // checkpoint seen before the signal; no shard still runs.
    let left = shards(&server, &run_id).await;
    assert!(left.iter().all(|shard| shard["state"] != "running"), "{left:?}");
    let released = left.iter().find(|shard| shard["id"] == victim_id).unwrap();
    assert_eq!(released["state"], "pending", "{released}");
    assert!(released["sequence"].as_u64() >= victim["sequence"].as_u64(), "{released} after {victim}");

    // The leader offers it again, and the next worker resumes it.
    let successor = cluster.worker("successor", 4, &["default"]);
    let detail = server.wait_for_run(&run_id, &["succeeded", "failed"]).await;
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}", successor.logs());
    let resumed = detail["shards"].as_array().unwrap().iter().find(|shard| shard["id"] == victim_id).unwrap();
    assert_eq!(resumed["owner"], "successor", "{resumed}");
    assert!(resumed["epoch"].as_u64() > released["epoch"].as_u64(), "{resumed} after {released}");
    // From the checkpoint: the counters carried over add up to the file once
    // (a shard read again from its start would count its first records twice).
    assert_eq!(resumed["counters"]["records_read"], 300, "{resumed}");
    assert_eq!(output_ids(&cluster.path("out/copy")), (1..=1200).collect::<Vec<u64>>());
}
