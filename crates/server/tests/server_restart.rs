//! `haul server` is restart-safe: killed with SIGKILL in the middle of a run,
//! started again on the same state, it resumes the run from its checkpoints
//! and the idempotent file sink ends with every record exactly once.

mod common {
    pub mod server;
}

use std::time::{Duration, Instant};

use common::server::{Server, csv, files_job, output_ids};

#[tokio::test]
async fn a_server_killed_mid_run_resumes_from_the_checkpoints_without_duplicates() {
    let mut server = Server::start();
    for file in 0..4u64 {
        server.write(&format!("in/orders/part-{file}.csv"), &csv(file * 5_000, 5_000));
    }
    // About five seconds of work, checkpointed at every batch.
    let extra = "checkpoint_interval = \"0s\"\nrate_limit = { records_per_second = 4000 }";
    server.apply(&files_job(&server, "orders", extra)).await;
    let run = server.trigger("orders").await;

    let started = Instant::now();
    loop {
        let (_, detail) = server.get(&format!("/api/v1/runs/{run}")).await;
        let checkpointed: u64 = detail["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["counters"]["records_written"].as_u64().unwrap())
            .sum();
        if checkpointed >= 3_000 {
            assert!(checkpointed < 20_000, "the run ended before the crash: {detail}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint: {detail}\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.crash_and_restart();
    let detail = server.wait_for_run(&run, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}", server.logs());
    assert_eq!(output_ids(&server.path("out/orders")), (0..20_000).collect::<Vec<u64>>(), "records lost or doubled");
    assert_eq!(detail["totals"]["records_written"], 20_000, "{detail}");
    let resumed =
        detail["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "running" && e["shard_id"].is_string());
    assert!(resumed.count() > 4, "shards were claimed again after the restart: {detail}");
}
