//! The config centre drives a running `haul server`: with
//! `[registry] url = "zk://…"`, the registry's `pools` document overrides the
//! server config's `[pools]` limits live. Each test uses its own chroot on
//! the ZooKeeper of 127.0.0.1:2181, removed after.

mod common {
    pub mod server;
}

use common::server::{Server, csv, files_job, output_ids};
use haul_register::registry::{Registry, ZkConfig, ZkRegistry};
use haul_register::testing::{ZOOKEEPER, remove_zookeeper_tree};
use serde_json::json;

#[tokio::test]
async fn raising_a_pool_limit_in_the_config_centre_starts_the_waiting_shards() {
    let chroot = format!("/haul-test-{}", uuid::Uuid::now_v7().simple());
    let outcome = tokio::spawn(raise_the_limit(chroot.clone())).await;
    remove_zookeeper_tree(&chroot).await;
    outcome.unwrap();
}

async fn raise_the_limit(chroot: String) {
    // The pool `held` runs nothing until the config centre raises its limit.
    let config = format!("[pools]\nheld = 0\n\n[registry]\nurl = \"zk://{ZOOKEEPER}{chroot}\"\n");
    let server = Server::start_with_config(&config);
    server.write("in/held/a.csv", &csv(1, 10));
    server.write("in/held/b.csv", &csv(11, 10));
    server.apply(&files_job(&server, "held", "pool = \"held\"")).await;
    let id = server.trigger("held").await;

    let detail = server.wait_for_run(&id, &["running"]).await;
    let shards = detail["shards"].as_array().unwrap();
    assert!(shards.iter().all(|shard| shard["state"] == "pending"), "{detail}");
    assert!(!server.path("out/held").exists() || output_ids(&server.path("out/held")).is_empty());

    let registry = ZkRegistry::connect(ZkConfig { chroot, ..ZkConfig::new(ZOOKEEPER) }).await.unwrap();
    registry.put_config("pools", &json!({"held": 2})).await.unwrap();
    server.wait_for_run(&id, &["succeeded"]).await;
    assert_eq!(output_ids(&server.path("out/held")), (1..=20).collect::<Vec<u64>>());
    registry.close().await;
}
