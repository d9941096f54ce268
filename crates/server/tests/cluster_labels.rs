//! Worker labels with real processes: a job naming a `worker_label` runs
//! only on the `haul worker` carrying that label, through a RabbitMQ queue of
//! its own, while a job without one spreads over every worker of its pool,
//! labelled or not.

mod common {
    pub mod cluster;
    pub mod server;
}

use std::collections::BTreeSet;

use common::cluster::{Cluster, slow_files_job};
use common::server::{csv, output_ids};
use haul_register::testing::Backend;
use serde_json::Value;

/// `files` files of 100 records each (ids from 1 on) for the job `name`,
/// copied at `records_per_second`; returns the job, with `extra` lines on top.
fn job(cluster: &Cluster, name: &str, files: u64, records_per_second: u32, extra: &str) -> String {
    for file in 0..files {
        cluster.write(&format!("in/{name}/part-{file:02}.csv"), &csv(file * 100 + 1, 100));
    }
    format!("{extra}\n{}", slow_files_job(&cluster.path(""), name, records_per_second))
}

/// The workers that ran the shards of a finished run.
fn owners(detail: &Value) -> BTreeSet<String> {
    let shards = detail["shards"].as_array().unwrap();
    shards.iter().map(|shard| shard["owner"].as_str().unwrap_or("nobody").to_string()).collect()
}

#[tokio::test]
async fn a_labelled_job_runs_only_on_the_labelled_worker_while_an_unlabelled_one_spreads_over_both() {
    let cluster = Cluster::new(Backend::MariaDb).await;
    let server = cluster.server("server", 0);
    let plain = cluster.worker("plain", 2, &["default"]);
    let gpu = cluster.labelled_worker("gpu", 4, &["default"], &["gpu"]);
    // Two labelled shards of about two seconds each leave the labelled
    // worker two slots for the unlabelled job's six shorter ones.
    server.apply(&job(&cluster, "labelled", 2, 100, "worker_label = \"gpu\"")).await;
    server.apply(&job(&cluster, "spread", 6, 300, "")).await;
    let labelled = server.trigger("labelled").await;
    let spread = server.trigger("spread").await;

    let logs = || format!("{}\n--- plain\n{}\n--- gpu\n{}", server.logs(), plain.logs(), gpu.logs());
    let labelled = server.wait_for_run(&labelled, &["succeeded", "failed"]).await;
    let spread = server.wait_for_run(&spread, &["succeeded", "failed"]).await;
    assert_eq!(labelled["state"], "succeeded", "{labelled}\n{}", logs());
    assert_eq!(spread["state"], "succeeded", "{spread}\n{}", logs());
    assert_eq!(owners(&labelled), BTreeSet::from(["gpu".to_string()]), "{labelled}");
    assert_eq!(owners(&spread), BTreeSet::from(["gpu".to_string(), "plain".to_string()]), "{spread}");
    assert_eq!(output_ids(&cluster.path("out/labelled")), (1..=200).collect::<Vec<u64>>());
    assert_eq!(output_ids(&cluster.path("out/spread")), (1..=600).collect::<Vec<u64>>());
}
