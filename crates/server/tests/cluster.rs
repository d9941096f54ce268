//! The distributed mode with real processes on the services of 127.0.0.1:
//! `haul server`s electing a leader in ZooKeeper, `haul worker`s taking
//! shards from RabbitMQ under leases in MariaDB, rate limits in Redis — and
//! what becomes of a run when a worker or the leader is killed or frozen.

mod common {
    pub mod cluster;
    pub mod server;
}

use std::time::Duration;

use common::cluster::{Cluster, LEASE_TTL, SESSION_TIMEOUT, eventually, slow_files_job};
use common::server::{Server, csv, output_ids};
use haul_register::testing::Backend;
use nix::sys::signal::Signal;
use serde_json::Value;

/// Four files of 300 records each, to be copied at 200 records per second.
fn four_files(cluster: &Cluster, name: &str) -> String {
    for file in 0..4u64 {
        cluster.write(&format!("in/{name}/part-{file}.csv"), &csv(file * 300 + 1, 300));
    }
    slow_files_job(&cluster.path(""), name, 200)
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
