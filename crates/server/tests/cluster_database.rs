//! A cluster whose store database restarts mid-run: the workers and the
//! leader wait for it and go on, on a PostgreSQL server of the test's own.

mod common {
    pub mod cluster;
    pub mod server;
}

use std::time::Duration;

use common::cluster::{Cluster, Services, eventually, slow_files_job};
use common::server::{csv, output_ids};
use haul_register::testing::PrivatePostgres;

#[tokio::test]
async fn a_database_restart_mid_run_pauses_the_workers_which_then_go_on() {
    let mut database = PrivatePostgres::create();
    let cluster = Cluster::with_services(None, Services::shared(&database.url()));
    let server = cluster.server("server", 0);
    let one = cluster.worker("one", 2, &["default"]);
    let two = cluster.worker("two", 2, &["default"]);
    for file in 0..4u64 {
        cluster.write(&format!("in/copy/part-{file}.csv"), &csv(file * 300 + 1, 300));
    }
    server.apply(&slow_files_job(&cluster.path(""), "copy", 200)).await;
    let run_id = server.trigger("copy").await;
    eventually("a shard checkpointed", Duration::from_secs(30), async || {
        let (_, detail) = server.get(&format!("/api/v1/runs/{run_id}")).await;
        detail["shards"]
            .as_array()
            .is_some_and(|shards| shards.iter().any(|shard| shard["sequence"].as_u64() > Some(0)))
    })
    .await;

    // Down for a few seconds: whoever holds a shard when the store is back goes on.
    database.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    database.start();

    let detail = server.wait_for_run(&run_id, &["succeeded", "failed"]).await;
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}\n{}", one.logs(), two.logs());
    let logs = format!("{}{}", one.logs(), two.logs());
    assert!(logs.contains("store unreachable, retrying while the leases last"), "{logs}");
    assert!(logs.contains("store reachable again"), "{logs}");
    assert_eq!(output_ids(&cluster.path("out/copy")), (1..=1200).collect::<Vec<u64>>());
}
