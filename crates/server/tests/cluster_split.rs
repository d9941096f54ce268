//! Dynamic rebalancing with real processes: a run planned as one shard
//! over a large PostgreSQL table runs on one of two `haul worker`s; the
//! leader sees it straggle while the other worker idles and asks for a
//! split; the owner splits what is left at its checkpoint and the idle
//! worker runs the rest. Every row reaches the upsert sink, each read once.

mod common {
    pub mod cluster;
    pub mod server;
}

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{Cluster, eventually};
use haul_register::testing::Backend;
use serde_json::Value;
use sqlx::AssertSqlSafe;

const DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";
const ROWS: i64 = 6000;

/// Source and sink tables of one test, dropped at the end.
struct Tables {
    pool: sqlx::PgPool,
    source: String,
    sink: String,
}

impl Tables {
    async fn create() -> Tables {
        let pool = sqlx::PgPool::connect(DATABASE).await.unwrap();
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let tables =
            Tables { pool, source: format!("haul_split_in_{unique}"), sink: format!("haul_split_out_{unique}") };
        tables.exec(&format!("CREATE TABLE {} (id BIGINT PRIMARY KEY, name TEXT NOT NULL)", tables.source)).await;
        tables
            .exec(&format!(
                "INSERT INTO {} (id, name) SELECT n, 'row-' || n FROM generate_series(1, {ROWS}) AS n",
                tables.source
            ))
            .await;
        tables
    }

    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_string())).execute(&self.pool).await.unwrap();
    }

    async fn sink_rows(&self) -> Vec<(i64, String)> {
        let select = format!("SELECT id, name FROM {} ORDER BY id", self.sink);
        sqlx::query_as(AssertSqlSafe(select)).fetch_all(&self.pool).await.unwrap()
    }

    async fn drop_all(&self) {
        self.exec(&format!("DROP TABLE IF EXISTS {}, {}", self.source, self.sink)).await;
    }
}

/// A copy of the source table planned as one shard, slowed to 400 rows a
/// second, with room for two shards at once.
fn job(tables: &Tables) -> String {
    format!(
        "name = \"split\"\nparallelism = 2\nbatch_size = 50\ncheckpoint_interval = \"200ms\"\n\n\
         [rate_limit]\nrecords_per_second = 400\n\n\
         [source]\ntype = \"sql\"\nurl = \"{DATABASE}\"\ntable = \"{}\"\nshards = 1\n\n\
         [sink]\ntype = \"sql\"\nurl = \"{DATABASE}\"\ntable = \"{}\"\nmode = \"upsert\"\nkey = [\"id\"]\n",
        tables.source, tables.sink
    )
}

fn shards_of(detail: &Value) -> Vec<Value> {
    detail["shards"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_straggling_shard_is_split_and_an_idle_worker_runs_the_rest() {
    let cluster = Cluster::new(Backend::Postgres).await;
    let tables = Tables::create().await;
    let server = cluster.server_with("server", 0, "straggler_after = \"2s\"");
    let first = cluster.worker("first", 1, &["default"]);
    let second = cluster.worker("second", 1, &["default"]);
    server.apply(&job(&tables)).await;
    let run_id = server.trigger("split").await;

    eventually("the run is planned as one shard, running", Duration::from_secs(30), async || {
        let (_, detail) = server.get(&format!("/api/v1/runs/{run_id}")).await;
        let shards = shards_of(&detail);
        shards.len() == 1 && shards[0]["state"] == "running"
    })
    .await;
    eventually("the straggler was split", Duration::from_secs(30), async || {
        let (_, detail) = server.get(&format!("/api/v1/runs/{run_id}")).await;
        shards_of(&detail).len() >= 2
    })
    .await;

    let detail = server.wait_for_run(&run_id, &["succeeded", "failed"]).await;
    let logs = || format!("{}\n--- first\n{}\n--- second\n{}", server.logs(), first.logs(), second.logs());
    assert_eq!(detail["state"], "succeeded", "{detail}\n{}", logs());
    let shards = shards_of(&detail);
    assert!(shards.len() >= 2, "{detail}");
    assert!(shards.iter().all(|shard| shard["state"] == "succeeded"), "{detail}");
    let owners: HashSet<&str> = shards.iter().filter_map(|shard| shard["owner"].as_str()).collect();
    assert_eq!(owners, HashSet::from(["first", "second"]), "{detail}");
    assert!(shards[1]["id"].as_str().unwrap().starts_with(&format!("{}.s", shards[0]["id"].as_str().unwrap())));

    // Each row read once across the shards, and in the sink once.
    let read: u64 = shards.iter().map(|shard| shard["counters"]["records_read"].as_u64().unwrap()).sum();
    assert_eq!(read, ROWS as u64, "{detail}");
    let expected: Vec<(i64, String)> = (1..=ROWS).map(|id| (id, format!("row-{id}"))).collect();
    assert_eq!(tables.sink_rows().await, expected);

    let events = detail["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().filter_map(|event| event["kind"].as_str()).collect();
    assert!(kinds.contains(&"split_requested") && kinds.contains(&"split"), "{kinds:?}");
    let requested = events.iter().find(|event| event["kind"] == "split_requested").unwrap();
    assert!(requested["reason"].as_str().unwrap().starts_with("straggler: running for"), "{requested}");
    tables.drop_all().await;
}
