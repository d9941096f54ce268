//! The `sql` source and sink against real servers on 127.0.0.1: PostgreSQL
//! (`postgres://postgres@127.0.0.1:5432/test`), MariaDB
//! (`mysql://root@127.0.0.1:3306/test`) and SQLite files in temporary
//! directories. Every test works on its own uniquely named tables and drops them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use haul_collect::sql::{SqlSinkPlugin, SqlSourcePlugin};
use haul_collect_core::job::{IncrementalSpec, Mode, RangeBounds};
use haul_collect_core::registry::{Plugin, PluginRegistry};
use haul_collect_core::testsuite::{
    assert_resume_yields_rest, assert_sink_commits, assert_split_covers_rest, full_context, numbered_batch, read_all,
};
use haul_collect_core::{Batch, PlanContext, Sink, Source};
use serde_json::{Value as Json, json};
use sqlx::AssertSqlSafe;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Postgres,
    MariaDb,
    Sqlite,
}

/// A database for one test: its URL and a pool to prepare data with.
struct TestDb {
    url: String,
    tables: Vec<String>,
    pool: Pool,
    _dir: Option<tempfile::TempDir>,
}

enum Pool {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let (url, dir) = match backend {
            Backend::Postgres => ("postgres://postgres@127.0.0.1:5432/test".to_string(), None),
            Backend::MariaDb => ("mysql://root@127.0.0.1:3306/test".to_string(), None),
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                (format!("sqlite://{}/test.db?mode=rwc", dir.path().display()), Some(dir))
            }
        };
        let pool = match backend {
            Backend::Postgres => Pool::Postgres(sqlx::PgPool::connect(&url).await.unwrap()),
            Backend::MariaDb => Pool::MySql(sqlx::MySqlPool::connect(&url).await.unwrap()),
            Backend::Sqlite => Pool::Sqlite(sqlx::SqlitePool::connect(&url).await.unwrap()),
        };
        TestDb { url, tables: Vec::new(), pool, _dir: dir }
    }

    /// A table name unique to this test process and call.
    fn table(&mut self, name: &str) -> String {
        let unique = format!("haul_{name}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        self.tables.push(unique.clone());
        unique
    }

    async fn exec(&self, sql: &str) {
        let text = AssertSqlSafe(sql.to_string());
        match &self.pool {
            Pool::Postgres(pool) => sqlx::raw_sql(text).execute(pool).await.map(drop),
            Pool::MySql(pool) => sqlx::raw_sql(text).execute(pool).await.map(drop),
            Pool::Sqlite(pool) => sqlx::raw_sql(text).execute(pool).await.map(drop),
        }
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    /// Creates `table (id BIGINT PRIMARY KEY, name VARCHAR(64), extra)` and inserts `ids`.
    async fn numbered(&mut self, name: &str, ids: impl IntoIterator<Item = i64>) -> String {
        let table = self.table(name);
        self.exec(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(64))")).await;
        self.insert_numbered(&table, ids).await;
        table
    }

    async fn insert_numbered(&self, table: &str, ids: impl IntoIterator<Item = i64>) {
        let ids: Vec<i64> = ids.into_iter().collect();
        for chunk in ids.chunks(500) {
            let values: Vec<String> = chunk.iter().map(|id| format!("({id}, 'name-{id}')")).collect();
            self.exec(&format!("INSERT INTO {table} (id, name) VALUES {}", values.join(", "))).await;
        }
    }

    fn source(&self, options: Json) -> Arc<dyn Source> {
        let mut config = json!({ "url": self.url });
        config.as_object_mut().unwrap().extend(options.as_object().unwrap().clone());
        SqlSourcePlugin.build(serde_json::from_value(config).unwrap()).unwrap()
    }

    fn sink(&self, options: Json) -> Arc<dyn Sink> {
        let mut config = json!({ "url": self.url });
        config.as_object_mut().unwrap().extend(options.as_object().unwrap().clone());
        SqlSinkPlugin.build(serde_json::from_value(config).unwrap()).unwrap()
    }

    async fn drop_tables(&self) {
        for table in &self.tables {
            self.exec(&format!("DROP TABLE IF EXISTS {table}")).await;
        }
    }
}

fn ids_of(records: &[Json]) -> Vec<i64> {
    let mut ids: Vec<i64> = records.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids
}

fn context(mode: Mode, parallelism: usize) -> PlanContext {
    PlanContext { mode, ..full_context(parallelism) }
}

/// Generates one test per backend from an async function taking a [`Backend`].
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod per_backend {
            $(
                mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn postgres() {
                        super::super::$name(super::super::Backend::Postgres).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn mariadb() {
                        super::super::$name(super::super::Backend::MariaDb).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn sqlite() {
                        super::super::$name(super::super::Backend::Sqlite).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    even_split_resumes,
    quantile_split_of_skewed_keys,
    string_keys_split_by_quantiles,
    where_filter_and_columns,
    edge_sizes,
    incremental_reads_only_new_rows,
    incremental_time_cursor_with_lookback,
    range_mode_bounds,
    nullable_split_key_gets_a_null_shard,
    query_sources,
    malformed_setups_fail_clearly,
    sink_insert_commits,
    sink_upsert_commits,
    running_shards_split_into_parts_that_cover_the_rest,
);

async fn even_split_resumes(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.numbered("even", 1..=1000).await;
    let source = db.source(json!({ "table": table }));
    let plan = source.plan(&full_context(2)).await.unwrap();
    assert_eq!(plan.shards.len(), 8, "{:?}", plan.shards);
    assert_eq!(plan.shards[3].id, "k0003");
    assert_eq!(source.estimate(&plan.shards[0]).await, Some(125));
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(2), 37).await.unwrap();
    assert_eq!(ids_of(&records), (1..=1000).collect::<Vec<_>>());
    assert_eq!(records[0], json!({"id": 1, "name": "name-1"}));
    db.drop_tables().await;
}

/// A shard split at any checkpoint: its kept part from the checkpoint and
/// the new part read every row left once; a shard with one key left, or of
/// a string key, is not split.
async fn running_shards_split_into_parts_that_cover_the_rest(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let sparse: Vec<i64> = (1..=200).chain([5_000, 90_000]).collect();
    let table = db.numbered("split", sparse.clone()).await;
    let source = db.source(json!({ "table": table, "shards": 2 }));
    let plan = source.plan(&full_context(1)).await.unwrap();
    let mut splits = 0;
    for shard in &plan.shards {
        splits += assert_split_covers_rest(source.as_ref(), shard, 23).await.unwrap();
    }
    assert!(splits >= 9, "{splits} splits");

    // Split twice, the parts still read every row once.
    let whole = db.source(json!({ "table": table, "shards": 1 }));
    let shard = whole.plan(&full_context(1)).await.unwrap().shards.remove(0);
    let (kept, rest) = whole.split(&shard, None).await.unwrap().unwrap();
    // The midpoint of the keys 1 to 90000: the rest holds 90000 alone.
    assert_eq!(rest["span"]["lower"], json!(45_001));
    let rest_spec = haul_collect_core::ShardSpec { id: "rest".into(), descriptor: rest.clone() };
    assert_eq!(whole.split(&rest_spec, None).await.unwrap(), None, "one key left");
    let kept = haul_collect_core::ShardSpec { id: shard.id.clone(), descriptor: kept };
    let (kept_kept, kept_rest) = whole.split(&kept, None).await.unwrap().unwrap();
    let mut ids = Vec::new();
    for descriptor in [kept_kept, kept_rest, rest] {
        let part = haul_collect_core::ShardSpec { id: "part".into(), descriptor };
        let read = haul_collect_core::testsuite::read_shard(whole.as_ref(), &part, None, 50).await.unwrap();
        assert!(!read.records.is_empty());
        ids.extend(ids_of(&read.records));
    }
    ids.sort();
    assert_eq!(ids, sparse);

    // The last key left cannot be split.
    let last = haul_collect_core::Checkpoint(json!({ "after": 5_000 }));
    assert_eq!(whole.split(&shard, Some(&last)).await.unwrap(), None);
    let strings = db.table("split_text");
    db.exec(&format!("CREATE TABLE {strings} (code VARCHAR(16) PRIMARY KEY)")).await;
    db.exec(&format!("INSERT INTO {strings} (code) VALUES ('a'), ('b'), ('c')")).await;
    let text = db.source(json!({ "table": strings, "shards": 1 }));
    let shard = text.plan(&full_context(1)).await.unwrap().shards.remove(0);
    assert_eq!(text.split(&shard, None).await.unwrap(), None);
    db.drop_tables().await;
}

async fn quantile_split_of_skewed_keys(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let skewed: Vec<i64> = (1..=300).chain([1_000_000, 2_000_000_000_000]).collect();
    let table = db.numbered("skew", skewed.clone()).await;
    let source = db.source(json!({ "table": table, "split": "quantile", "shards": 4 }));
    let plan = source.plan(&full_context(1)).await.unwrap();
    assert_eq!(plan.shards.len(), 4);
    let mut sizes = Vec::new();
    for shard in &plan.shards {
        sizes.push(
            haul_collect_core::testsuite::read_shard(source.as_ref(), shard, None, 1000).await.unwrap().records.len(),
        );
    }
    assert!(sizes.iter().all(|size| (74..=77).contains(size)), "{sizes:?}");
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 50).await.unwrap();
    assert_eq!(ids_of(&records), skewed);
    // An even split of the same keys puts nearly everything in the first shard.
    let even = db.source(json!({ "table": table, "split": "even", "shards": 4 }));
    let first = &even.plan(&full_context(1)).await.unwrap().shards[0];
    assert_eq!(even.estimate(first).await, Some(301));
    db.drop_tables().await;
}

async fn string_keys_split_by_quantiles(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.table("strkey");
    db.exec(&format!("CREATE TABLE {table} (code VARCHAR(40) PRIMARY KEY, n INT)")).await;
    let values: Vec<String> =
        (0..200).map(|i| format!("('{:08x}-{i}', {i})", (i as u32).wrapping_mul(2654435761))).collect();
    db.exec(&format!("INSERT INTO {table} (code, n) VALUES {}", values.join(", "))).await;
    let source = db.source(json!({ "table": table, "shards": 5 }));
    let plan = source.plan(&full_context(1)).await.unwrap();
    assert_eq!(plan.shards.len(), 5);
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 13).await.unwrap();
    let mut ns: Vec<i64> = records.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, (0..200).collect::<Vec<_>>());
    db.drop_tables().await;
}

async fn where_filter_and_columns(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.numbered("filter", 1..=100).await;
    let source = db.source(json!({ "table": table, "where": "id % 3 = 0 AND name IS NOT NULL", "columns": ["name"] }));
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 4).await.unwrap();
    assert_eq!(records.len(), 33);
    assert_eq!(records[0], json!({"name": "name-3"}));
    db.drop_tables().await;
}

async fn edge_sizes(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let batch_size = 10;
    for (count, name) in [(0, "empty"), (1, "one"), (batch_size, "full"), (batch_size + 1, "over")] {
        let table = db.numbered(name, 1..=count as i64).await;
        let source = db.source(json!({ "table": table }));
        let plan = source.plan(&full_context(4)).await.unwrap();
        assert!(!plan.shards.is_empty());
        if count == 0 {
            assert_eq!(plan.shards.len(), 1);
        }
        let records = assert_resume_yields_rest(source.as_ref(), &full_context(4), batch_size).await.unwrap();
        assert_eq!(ids_of(&records), (1..=count as i64).collect::<Vec<_>>(), "{name}");
        let single = db.source(json!({ "table": table, "shards": 1 }));
        let plan = single.plan(&full_context(1)).await.unwrap();
        let read =
            haul_collect_core::testsuite::read_shard(single.as_ref(), &plan.shards[0], None, batch_size).await.unwrap();
        assert_eq!(read.checkpoints.len(), count.div_ceil(batch_size), "{name}");
    }
    db.drop_tables().await;
}

async fn incremental_reads_only_new_rows(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.table("incr");
    db.exec(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, version BIGINT)")).await;
    db.exec(&format!("INSERT INTO {table} VALUES (1, 10), (2, 20), (3, 30)")).await;
    let source = db.source(json!({ "table": table }));
    let incremental = |previous_state: Option<Json>, lookback: Option<Json>| PlanContext {
        mode: Mode::Incremental,
        incremental: IncrementalSpec { cursor: Some("version".into()), lookback },
        previous_state,
        ..full_context(2)
    };
    let first = source.plan(&incremental(None, None)).await.unwrap();
    assert_eq!(first.next_state, Some(json!({"cursor": 30})));
    let read = read_all(source.as_ref(), &incremental(None, None), 2).await.unwrap();
    assert_eq!(ids_of(&read.records), vec![1, 2, 3]);

    // Rows arriving after planning are left to the next run.
    db.exec(&format!("INSERT INTO {table} VALUES (4, 40)")).await;
    let mut late = Vec::new();
    for shard in &first.shards {
        late.extend(haul_collect_core::testsuite::read_shard(source.as_ref(), shard, None, 2).await.unwrap().records);
    }
    assert_eq!(ids_of(&late), vec![1, 2, 3]);
    // A late row below the high-water mark is only found again by a lookback.
    db.exec(&format!("INSERT INTO {table} VALUES (5, 25)")).await;

    let second = incremental(first.next_state.clone(), None);
    assert_eq!(source.plan(&second).await.unwrap().next_state, Some(json!({"cursor": 40})));
    let records = assert_resume_yields_rest(source.as_ref(), &second, 1).await.unwrap();
    assert_eq!(ids_of(&records), vec![4]);

    let with_lookback = incremental(first.next_state.clone(), Some(json!(10)));
    let records = assert_resume_yields_rest(source.as_ref(), &with_lookback, 1).await.unwrap();
    assert_eq!(ids_of(&records), vec![3, 4, 5]);

    // Nothing new: the state is kept and nothing is read.
    let idle = incremental(Some(json!({"cursor": 40})), None);
    let plan = source.plan(&idle).await.unwrap();
    assert_eq!(plan.next_state, Some(json!({"cursor": 40})));
    assert!(read_all(source.as_ref(), &idle, 5).await.unwrap().records.is_empty());
    db.drop_tables().await;
}

async fn incremental_time_cursor_with_lookback(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.table("incr_time");
    let time_type = if backend == Backend::MariaDb { "DATETIME" } else { "TIMESTAMP" };
    db.exec(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, changed {time_type})")).await;
    db.exec(&format!("INSERT INTO {table} VALUES (1, '2024-01-01 10:00:00'), (2, '2024-01-01 11:00:00')")).await;
    let source = db.source(json!({ "table": table }));
    let incremental = |previous_state: Option<Json>| PlanContext {
        mode: Mode::Incremental,
        incremental: IncrementalSpec { cursor: Some("changed".into()), lookback: Some(json!("10m")) },
        previous_state,
        ..full_context(1)
    };
    let first = source.plan(&incremental(None)).await.unwrap();
    assert_eq!(first.next_state, Some(json!({"cursor": "2024-01-01T11:00:00"})));
    db.exec(&format!("INSERT INTO {table} VALUES (3, '2024-01-01 10:55:00'), (4, '2024-01-01 12:00:00')")).await;
    let second = incremental(first.next_state.clone());
    let records = assert_resume_yields_rest(source.as_ref(), &second, 1).await.unwrap();
    assert_eq!(ids_of(&records), vec![2, 3, 4]);
    assert_eq!(source.plan(&second).await.unwrap().next_state, Some(json!({"cursor": "2024-01-01T12:00:00"})));
    db.drop_tables().await;
}

async fn range_mode_bounds(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.numbered("range", 1..=50).await;
    let source = db.source(json!({ "table": table }));
    let range = |field: Option<&str>| PlanContext {
        range: Some(RangeBounds { field: field.map(Into::into), from: json!(10), to: json!(20) }),
        ..context(Mode::Range, 2)
    };
    let records = assert_resume_yields_rest(source.as_ref(), &range(None), 3).await.unwrap();
    assert_eq!(ids_of(&records), (10..20).collect::<Vec<_>>());
    let records = assert_resume_yields_rest(source.as_ref(), &range(Some("id")), 3).await.unwrap();
    assert_eq!(records.len(), 10);
    db.drop_tables().await;
}

async fn nullable_split_key_gets_a_null_shard(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.table("nullkey");
    db.exec(&format!("CREATE TABLE {table} (id INT PRIMARY KEY, seq INT, label VARCHAR(10))")).await;
    let rows = "(1, 1, 'a'), (2, 2, 'b'), (3, NULL, 'c'), (4, 3, 'd'), (5, NULL, 'e'), (6, NULL, 'c')";
    db.exec(&format!("INSERT INTO {table} VALUES {rows}")).await;
    let source = db.source(json!({ "table": table, "split_key": "seq" }));
    let plan = source.plan(&full_context(1)).await.unwrap();
    assert_eq!(plan.shards.last().unwrap().id, "knull");
    // The NULL rows are read in primary key order, whatever their other values.
    let nulls = haul_collect_core::testsuite::read_shard(source.as_ref(), plan.shards.last().unwrap(), None, 1);
    let ids: Vec<i64> = nulls.await.unwrap().records.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![3, 5, 6]);
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 1).await.unwrap();
    assert_eq!(ids_of(&records), (1..=6).collect::<Vec<_>>());

    // Without a primary key the NULL rows have no stable order to resume in.
    let heap = db.table("nullkey_heap");
    db.exec(&format!("CREATE TABLE {heap} (seq INT, label VARCHAR(10))")).await;
    db.exec(&format!("INSERT INTO {heap} VALUES (1, 'a'), (NULL, 'c'), (NULL, 'c')")).await;
    let without_key = db.source(json!({ "table": heap }));
    let error = format!("{:#}", without_key.plan(&full_context(1)).await.unwrap_err());
    assert!(error.contains("no primary key") && error.contains("split_key"), "{error}");
    let nullable = db.source(json!({ "table": heap, "split_key": "seq" }));
    let error = format!("{:#}", nullable.plan(&full_context(1)).await.unwrap_err());
    assert!(error.contains("holds NULLs") && error.contains("no primary key"), "{error}");
    db.drop_tables().await;
}

async fn query_sources(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.numbered("query", 1..=30).await;
    // Without a split key a query's rows have no order to resume in.
    let config = json!({ "url": db.url, "query": format!("SELECT id, name FROM {table}") });
    let error = SqlSourcePlugin.build(serde_json::from_value(config).unwrap()).err().unwrap();
    let option = error.downcast::<haul_collect_core::registry::OptionError>().unwrap();
    assert!(option.message.contains("needs `split_key`"), "{}", option.message);
    // A trailing line comment does not swallow the wrapper.
    let commented = format!("SELECT id, name FROM {table} WHERE id <= 20 -- the first twenty");
    let whole = db.source(json!({ "query": commented, "split_key": "id", "shards": 1 }));
    let plan = whole.plan(&full_context(4)).await.unwrap();
    assert_eq!(plan.shards.len(), 1);
    let records = assert_resume_yields_rest(whole.as_ref(), &full_context(4), 3).await.unwrap();
    assert_eq!(ids_of(&records), (1..=20).collect::<Vec<_>>());
    let split = db.source(
        json!({ "query": format!("SELECT id, name FROM {table} WHERE id <= 20"), "split_key": "id", "shards": 3 }),
    );
    assert_eq!(split.plan(&full_context(1)).await.unwrap().shards.len(), 3);
    let records = assert_resume_yields_rest(split.as_ref(), &full_context(1), 4).await.unwrap();
    assert_eq!(ids_of(&records), (1..=20).collect::<Vec<_>>());
    db.drop_tables().await;
}

async fn malformed_setups_fail_clearly(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.numbered("bad", 1..=3).await;
    let missing = db.source(json!({ "table": format!("{table}_missing") }));
    let error = format!("{:#}", missing.check().await.unwrap_err());
    assert!(error.contains("does not exist or cannot be read"), "{error}");
    let unknown_column = db.source(json!({ "table": table, "columns": ["nope"] }));
    let error = format!("{:#}", unknown_column.plan(&full_context(1)).await.unwrap_err());
    assert!(error.contains("column `nope` not found"), "{error}");
    let build = |options: Json| {
        let mut config = json!({ "url": db.url });
        config.as_object_mut().unwrap().extend(options.as_object().unwrap().clone());
        SqlSourcePlugin.build(serde_json::from_value(config).unwrap()).err().map(|e| format!("{e:#}"))
    };
    let error = build(json!({ "table": "users; drop table x" })).unwrap();
    assert!(error.contains("invalid table name") && error.contains("`;`"), "{error}");
    let error = build(json!({ "table": table, "query": "SELECT 1" })).unwrap();
    assert!(error.contains("either `table` or `query`"), "{error}");
    let error = build(json!({ "table": table, "split_key": "id)--" })).unwrap();
    assert!(error.contains("invalid column name"), "{error}");
    let error = build(json!({ "table": table, "shards": 100_001 })).unwrap();
    assert!(error.contains("between 1 and 100000"), "{error}");
    assert!(build(json!({ "table": table, "shards": 0 })).is_some());
    let bad_query = db.source(json!({ "query": "SELEC nonsense", "split_key": "id" }));
    assert!(bad_query.check().await.is_err());
    let bad_split = db.source(json!({ "table": table, "split": "even", "split_key": "name" }));
    let error = format!("{:#}", bad_split.plan(&full_context(1)).await.unwrap_err());
    assert!(error.contains("needs an integer split key"), "{error}");
    db.drop_tables().await;
}

/// Reads a sink's table back through the source, as JSON objects.
async fn read_back(db: &TestDb, table: &str) -> anyhow::Result<Vec<Json>> {
    let source = db.source(json!({ "table": table, "split_key": "id" }));
    Ok(read_all(source.as_ref(), &full_context(1), 1000).await?.records)
}

async fn sink_insert_commits(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.table("sink_insert");
    let sink = db.sink(json!({ "table": table }));
    assert_eq!(sink.delivery(), haul_collect_core::Delivery::AppendOnly);
    assert!(!sink.describe_output().contains('@'));
    sink.check().await.unwrap();
    let batches = [numbered_batch(1, 3), numbered_batch(4, 1), numbered_batch(5, 2000)];
    assert_sink_commits(sink.as_ref(), &batches, || read_back(&db, &table)).await.unwrap();
    db.drop_tables().await;
}

async fn sink_upsert_commits(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    let table = db.table("sink_upsert");
    let sink = db.sink(json!({ "table": table, "mode": "upsert", "key": ["id"] }));
    assert_eq!(sink.delivery(), haul_collect_core::Delivery::Idempotent);
    let batches = [numbered_batch(1, 5), numbered_batch(6, 3)];
    assert_sink_commits(sink.as_ref(), &batches, || read_back(&db, &table)).await.unwrap();
    // Rows with existing keys are replaced; the key comes from the table now.
    let by_primary_key = db.sink(json!({ "table": table, "mode": "upsert" }));
    let mut writer = by_primary_key
        .open(&haul_collect_core::plugin::WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() })
        .await
        .unwrap();
    let mut changed = numbered_batch(2, 2);
    for row in &mut changed.rows {
        row[1] = haul_collect_core::Value::String("changed".into());
    }
    let duplicated = Batch::new(changed.schema.clone(), [changed.rows.clone(), changed.rows.clone()].concat());
    writer.write(&duplicated).await.unwrap();
    writer.commit(1).await.unwrap();
    let records = read_back(&db, &table).await.unwrap();
    assert_eq!(records.len(), 8);
    assert_eq!(records[1], json!({"id": 2, "name": "changed"}));
    assert_eq!(records[3], json!({"id": 4, "name": "name-4"}));
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_uuid_keys_split_and_resume() {
    let mut db = TestDb::new(Backend::Postgres).await;
    let table = db.table("uuid_key");
    db.exec(&format!("CREATE TABLE {table} (id UUID PRIMARY KEY, n INT NOT NULL)")).await;
    db.exec(&format!("INSERT INTO {table} SELECT gen_random_uuid(), g FROM generate_series(1, 500) g")).await;
    let source = db.source(json!({ "table": table, "shards": 6 }));
    let plan = source.plan(&full_context(1)).await.unwrap();
    assert_eq!(plan.shards.len(), 6);
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 40).await.unwrap();
    let mut ns: Vec<i64> = records.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, (1..=500).collect::<Vec<_>>());
    db.drop_tables().await;
}

#[tokio::test]
async fn plugins_are_registered() {
    let mut registry = PluginRegistry::default();
    haul_collect::register_builtin(&mut registry);
    let infos = registry.infos();
    let sql: Vec<_> = infos.iter().filter(|info| info.kind == "sql").collect();
    assert_eq!(sql.len(), 2);
    assert!(sql.iter().all(|info| info.options.iter().any(|option| option.name == "url")));
}

/// Reads every batch of every shard, for writing them elsewhere.
async fn read_batches(source: &dyn Source) -> Vec<Batch> {
    let plan = source.plan(&full_context(2)).await.unwrap();
    let mut batches = Vec::new();
    for shard in &plan.shards {
        let mut reader = source.open(shard, None, 2).await.unwrap();
        while let Some(batch) = reader.next_batch().await.unwrap() {
            batches.push(batch.batch);
        }
    }
    batches
}

const TYPED_COLUMNS: &str =
    "id, small, ratio, label, body, created, active, price, maybe_int, maybe_text, seen, doc, raw, day, uid";

fn typed_rows() -> Vec<Json> {
    vec![
        json!({"id": 1, "small": 7, "ratio": 1.5, "label": "a\tb", "body": "line1\nline2 \\ back",
               "created": "2024-01-02T03:04:05.123456", "active": true, "price": "1234567890.12",
               "maybe_int": null, "maybe_text": null, "seen": "2024-01-02T01:04:05Z", "doc": {"a": [1, "x"]},
               "raw": "00ff10", "day": "2024-02-29", "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}),
        json!({"id": 2, "small": -1, "ratio": -0.25, "label": "", "body": "é",
               "created": "1999-12-31T23:59:59", "active": false, "price": "-0.50",
               "maybe_int": 42, "maybe_text": "x", "seen": "1970-01-01T00:00:00Z", "doc": [],
               "raw": "", "day": "0001-01-01", "uid": "00000000-0000-0000-0000-000000000000"}),
        json!({"id": 3, "small": null, "ratio": null, "label": null, "body": null, "created": null, "active": null,
               "price": null, "maybe_int": null, "maybe_text": null, "seen": null, "doc": null, "raw": null,
               "day": null, "uid": null}),
    ]
}

async fn assert_typed_table(db: &TestDb, table: &str, expected_types: &[haul_collect_core::DataType]) {
    let source = db.source(json!({ "table": table }));
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 1).await.unwrap();
    assert_eq!(records, typed_rows());
    let batches = read_batches(source.as_ref()).await;
    let types: Vec<_> = batches[0].schema.fields.iter().map(|field| field.data_type).collect();
    assert_eq!(types, expected_types);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_types_round_trip_and_copy() {
    use haul_collect_core::DataType as T;
    let mut db = TestDb::new(Backend::Postgres).await;
    let table = db.table("types");
    db.exec(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, small INT, ratio DOUBLE PRECISION, label VARCHAR(20), body TEXT, \
         created TIMESTAMP, active BOOLEAN, price NUMERIC(12,2), maybe_int INT, maybe_text VARCHAR(10), \
         seen TIMESTAMPTZ, doc JSONB, raw BYTEA, day DATE, uid UUID)"
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO {table} ({TYPED_COLUMNS}) VALUES \
         (1, 7, 1.5, E'a\\tb', E'line1\\nline2 \\\\ back', '2024-01-02 03:04:05.123456', true, 1234567890.12, NULL, NULL, \
          '2024-01-02 03:04:05+02', '{{\"a\": [1, \"x\"]}}', '\\x00ff10', '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), \
         (2, -1, -0.25, '', 'é', '1999-12-31 23:59:59', false, -0.50, 42, 'x', '1970-01-01 00:00:00+00', '[]', '\\x', \
          '0001-01-01', '00000000-0000-0000-0000-000000000000'), \
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
    ))
    .await;
    let expected = [
        T::Int,
        T::Int,
        T::Float,
        T::String,
        T::String,
        T::Timestamp,
        T::Bool,
        T::Decimal,
        T::Int,
        T::String,
        T::TimestampTz,
        T::Json,
        T::Bytes,
        T::Date,
        T::String,
    ];
    assert_typed_table(&db, &table, &expected).await;

    // PostgreSQL to PostgreSQL: the copy reads back equal to the source.
    let source = db.source(json!({ "table": table }));
    for mode in ["insert", "upsert"] {
        let copy = db.table(&format!("types_{mode}"));
        let sink = db.sink(json!({ "table": copy, "mode": mode, "key": ["id"] }));
        let context =
            haul_collect_core::plugin::WriterContext { job: "j".into(), run_id: mode.into(), shard_id: "s".into() };
        let mut writer = sink.open(&context).await.unwrap();
        for (sequence, batch) in read_batches(source.as_ref()).await.iter().enumerate() {
            writer.write(batch).await.unwrap();
            writer.commit(sequence as u64 + 1).await.unwrap();
        }
        let copied = db.source(json!({ "table": copy }));
        let records = assert_resume_yields_rest(copied.as_ref(), &full_context(1), 2).await.unwrap();
        assert_eq!(records, typed_rows(), "{mode}");
    }
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_types_round_trip() {
    use haul_collect_core::DataType as T;
    let mut db = TestDb::new(Backend::MariaDb).await;
    let table = db.table("types");
    db.exec(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, small INT, ratio DOUBLE, label VARCHAR(20), body TEXT, \
         created DATETIME(6), active BOOLEAN, price DECIMAL(12,2), maybe_int INT NULL, maybe_text VARCHAR(10) NULL, \
         seen TIMESTAMP(0) NULL, doc JSON, raw BLOB, day DATE, uid CHAR(36))"
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO {table} ({TYPED_COLUMNS}) VALUES \
         (1, 7, 1.5, 'a\\tb', 'line1\\nline2 \\\\ back', '2024-01-02 03:04:05.123456', true, 1234567890.12, NULL, NULL, \
          '2024-01-02 01:04:05', '{{\"a\": [1, \"x\"]}}', X'00ff10', '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), \
         (2, -1, -0.25, '', 'é', '1999-12-31 23:59:59', false, -0.50, 42, 'x', '1970-01-01 00:00:01', '[]', X'', \
          '0001-01-01', '00000000-0000-0000-0000-000000000000'), \
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
    ))
    .await;
    // TIMESTAMP cannot hold the epoch itself on MariaDB: the test row uses one second after it.
    let expected = [
        T::Int,
        T::Int,
        T::Float,
        T::String,
        T::String,
        T::Timestamp,
        T::Bool,
        T::Decimal,
        T::Int,
        T::String,
        T::TimestampTz,
        T::Json,
        T::Bytes,
        T::Date,
        T::String,
    ];
    let source = db.source(json!({ "table": table }));
    let mut records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 1).await.unwrap();
    assert_eq!(records[1]["seen"], json!("1970-01-01T00:00:01Z"));
    records[1]["seen"] = json!("1970-01-01T00:00:00Z");
    assert_eq!(records, typed_rows());
    let batches = read_batches(source.as_ref()).await;
    let types: Vec<_> = batches[0].schema.fields.iter().map(|field| field.data_type).collect();
    assert_eq!(types, expected);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_times_in_mixed_text_forms_order_by_time() {
    let mut db = TestDb::new(Backend::Sqlite).await;
    let table = db.table("mixed_times");
    db.exec(&format!("CREATE TABLE {table} (at DATETIME PRIMARY KEY, n INT NOT NULL, changed DATETIME)")).await;
    // In time order; as text, ' ' sorts before 'T' and the forms interleave wrongly.
    let times = [
        "2024-01-02 09:00:00",
        "2024-01-02T09:30:00",
        "2024-01-02 10:00:00",
        "2024-01-02T10:00:00.250",
        "2024-01-02 10:00:00.5",
        "2024-01-02T11:00:00",
        "2024-01-02 12:00:00",
    ];
    let values: Vec<String> = times.iter().enumerate().map(|(n, at)| format!("('{at}', {n}, '{at}')")).collect();
    db.exec(&format!("INSERT INTO {table} VALUES {}", values.join(", "))).await;
    let source = db.source(json!({ "table": table, "split": "quantile", "shards": 3 }));
    let plan = source.plan(&full_context(1)).await.unwrap();
    assert_eq!(plan.shards.len(), 3);
    let mut ns = Vec::new();
    for shard in &plan.shards {
        let read = haul_collect_core::testsuite::read_shard(source.as_ref(), shard, None, 1).await.unwrap();
        let shard_ns: Vec<i64> = read.records.iter().map(|r| r["n"].as_i64().unwrap()).collect();
        assert!(shard_ns.windows(2).all(|pair| pair[0] < pair[1]), "{shard_ns:?}");
        ns.extend(shard_ns);
    }
    assert_eq!(ns, (0..7).collect::<Vec<_>>());
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 1).await.unwrap();
    assert_eq!(records.len(), 7);

    // An incremental cursor in mixed forms: the mark is the latest time, not the greatest text.
    let incremental = |previous_state: Option<Json>| PlanContext {
        mode: Mode::Incremental,
        incremental: IncrementalSpec { cursor: Some("changed".into()), lookback: None },
        previous_state,
        ..full_context(1)
    };
    let first = source.plan(&incremental(None)).await.unwrap();
    assert_eq!(first.next_state, Some(json!({"cursor": "2024-01-02T12:00:00"})));
    db.exec(&format!("INSERT INTO {table} VALUES ('2024-01-02T12:30:00', 7, '2024-01-02T12:30:00')")).await;
    let second = incremental(first.next_state.clone());
    let records = assert_resume_yields_rest(source.as_ref(), &second, 1).await.unwrap();
    assert_eq!(records.iter().map(|r| r["n"].as_i64().unwrap()).collect::<Vec<_>>(), vec![7]);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_values_that_do_not_fit_their_column_are_rejected() {
    let mut db = TestDb::new(Backend::Sqlite).await;
    let table = db.table("bad_values");
    db.exec(&format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, qty INT, ok BOOLEAN)")).await;
    db.exec(&format!("INSERT INTO {table} VALUES (1, 5, 'yes'), (2, 'five', 'no'), (3, 7, 'maybe'), (4, 8, 'T')"))
        .await;
    let source = db.source(json!({ "table": table }));
    let read = read_all(source.as_ref(), &full_context(1), 10).await.unwrap();
    assert_eq!(read.records, vec![json!({"id": 1, "qty": 5, "ok": true}), json!({"id": 4, "qty": 8, "ok": true})]);
    assert_eq!(read.rejected.len(), 2);
    assert!(read.rejected[0].reason.contains("column `qty`"), "{}", read.rejected[0].reason);
    assert!(read.rejected[0].position.ends_with("id = 2"), "{}", read.rejected[0].position);
    assert_eq!(read.rejected[0].record, json!({"id": 2, "qty": null, "ok": false}));
    assert!(read.rejected[1].reason.contains("column `ok`"), "{}", read.rejected[1].reason);
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 1).await.unwrap();
    assert_eq!(ids_of(&records), vec![1, 4]);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sources_leave_the_database_as_it_is() {
    let mut db = TestDb::new(Backend::Sqlite).await;
    let table = db.numbered("journal", 1..=5).await;
    let journal_mode = || async {
        let Pool::Sqlite(pool) = &db.pool else { unreachable!() };
        sqlx::query_scalar::<_, String>("PRAGMA journal_mode").fetch_one(pool).await.unwrap()
    };
    assert_eq!(journal_mode().await, "delete");
    let source = db.source(json!({ "table": table }));
    assert_eq!(read_all(source.as_ref(), &full_context(1), 2).await.unwrap().records.len(), 5);
    assert_eq!(journal_mode().await, "delete");
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_unsigned_and_decimal_keys_resume_exactly() {
    let mut db = TestDb::new(Backend::MariaDb).await;
    let unsigned = db.table("unsigned_key");
    db.exec(&format!("CREATE TABLE {unsigned} (id BIGINT UNSIGNED PRIMARY KEY, n INT)")).await;
    let big = [1u64, 9_223_372_036_854_775_807, 9_223_372_036_854_775_808, 18_446_744_073_709_551_614, u64::MAX];
    let values: Vec<String> = big.iter().enumerate().map(|(n, id)| format!("({id}, {n})")).collect();
    db.exec(&format!("INSERT INTO {unsigned} VALUES {}", values.join(", "))).await;
    let source = db.source(json!({ "table": unsigned, "shards": 2 }));
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 1).await.unwrap();
    let mut ns: Vec<i64> = records.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, vec![0, 1, 2, 3, 4]);
    assert!(records.contains(&json!({"id": u64::MAX.to_string(), "n": 4})), "{records:?}");

    // As doubles these keys are equal: they must compare as decimals.
    let decimal = db.table("decimal_key");
    db.exec(&format!("CREATE TABLE {decimal} (price DECIMAL(30,2) PRIMARY KEY, n INT)")).await;
    db.exec(&format!(
        "INSERT INTO {decimal} VALUES (10000000000000000.01, 1), (10000000000000000.02, 2), (10000000000000000.03, 3)"
    ))
    .await;
    let source = db.source(json!({ "table": decimal }));
    let records = assert_resume_yields_rest(source.as_ref(), &full_context(1), 1).await.unwrap();
    let mut ns: Vec<i64> = records.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, vec![1, 2, 3]);
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_upsert_key_must_be_the_primary_key() {
    let mut db = TestDb::new(Backend::MariaDb).await;
    let table = db.table("upsert_key");
    db.exec(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(64) UNIQUE)")).await;
    let sink = db.sink(json!({ "table": table, "mode": "upsert", "key": ["name"] }));
    let context =
        haul_collect_core::plugin::WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
    let mut writer = sink.open(&context).await.unwrap();
    let error = format!("{:#}", writer.write(&numbered_batch(1, 2)).await.unwrap_err());
    assert!(error.contains("is not its primary key (id)"), "{error}");
    let by_id = db.sink(json!({ "table": table, "mode": "upsert", "key": ["id"] }));
    let mut writer = by_id.open(&context).await.unwrap();
    writer.write(&numbered_batch(1, 2)).await.unwrap();
    writer.commit(1).await.unwrap();
    db.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_copy_names_a_value_it_cannot_send() {
    let mut db = TestDb::new(Backend::Postgres).await;
    let table = db.table("nul");
    let sink = db.sink(json!({ "table": table, "key": ["id"] }));
    let context =
        haul_collect_core::plugin::WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
    let mut writer = sink.open(&context).await.unwrap();
    let mut batch = numbered_batch(1, 3);
    batch.rows[1][1] = haul_collect_core::Value::String("a\0b".into());
    let error = format!("{:#}", writer.write(&batch).await.unwrap_err());
    assert!(error.contains("row 2") && error.contains("column `name`") && error.contains("NUL"), "{error}");
    assert!(!error.contains("a\0b"));
    writer.abort().await.unwrap();
    db.drop_tables().await;
}
