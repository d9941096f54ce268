//! The crash guarantee: SIGKILL `haul run` in the middle of a large copy from
//! PostgreSQL, run it again, and the sinks hold exactly the source rows —
//! none duplicated, none missing — for the upsert SQL sink and the file sink.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool, Row};

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const ROWS: i64 = 200_000;

async fn pool() -> PgPool {
    PgPoolOptions::new().max_connections(2).connect(POSTGRES).await.expect("PostgreSQL on 127.0.0.1:5432")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), Instant::now().elapsed().as_nanos() % 1_000_000)
}

async fn create_source(pool: &PgPool, table: &str) {
    sqlx::query(AssertSqlSafe(format!("drop table if exists {table}"))).execute(pool).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "create table {table} (id bigint primary key, name varchar(64), amount numeric(12,2), at timestamptz)"
    )))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "insert into {table} select g, 'name ' || g, g * 1.25, timestamptz '2024-01-01' + g * interval '1 second' \
         from generate_series(1, {ROWS}) g"
    )))
    .execute(pool)
    .await
    .unwrap();
}

fn spawn(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_haul"))
        .args(["run", "--progress", "none", "job.toml"])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `job` until `progressed` says enough was written, SIGKILLs it, runs it
/// again to the end, and returns the second run's output.
async fn kill_midway_then_rerun(dir: &std::path::Path, progressed: impl AsyncFn() -> i64) {
    let mut child = spawn(dir);
    let start = Instant::now();
    loop {
        let written = progressed().await;
        if written > 20_000 {
            assert!(written < ROWS, "the copy finished before it could be killed; slow it down");
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            panic!("haul exited early with {status}: {}", String::from_utf8_lossy(&output.stderr));
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no progress within a minute");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let output = spawn(dir).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("resuming run"), "{text}");
}

fn job(source_table: &str, sink: &str) -> String {
    format!(
        r#"
parallelism = 4
batch_size = 1000
checkpoint_interval = "100ms"

[rate_limit]
records_per_second = 40000

[source]
type = "sql"
url = "{POSTGRES}"
table = "{source_table}"

[sink]
{sink}
"#
    )
}

#[tokio::test]
async fn killed_copy_into_an_upsert_table_is_exact() {
    let pool = pool().await;
    let source = unique("crash_src_sql");
    let target = unique("crash_dst_sql");
    create_source(&pool, &source).await;
    sqlx::query(AssertSqlSafe(format!("drop table if exists {target}"))).execute(&pool).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sink = format!("type = \"sql\"\nurl = \"{POSTGRES}\"\ntable = \"{target}\"\nmode = \"upsert\"\nkey = [\"id\"]");
    std::fs::write(dir.path().join("job.toml"), job(&source, &sink)).unwrap();

    let count = async || -> i64 {
        sqlx::query(AssertSqlSafe(format!("select count(*) from {target}")))
            .fetch_one(&pool)
            .await
            .map(|row| row.get::<i64, _>(0))
            .unwrap_or(0)
    };
    kill_midway_then_rerun(dir.path(), count).await;

    let row = sqlx::query(AssertSqlSafe(format!(
        "select count(*), count(distinct id), coalesce(sum(id), 0)::bigint, \
         count(*) filter (where (s.name, s.amount, s.at) is distinct from (t.name, t.amount, t.at)) \
         from {target} t join {source} s using (id)"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    let (rows, distinct, sum, differing): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let total: i64 =
        sqlx::query(AssertSqlSafe(format!("select count(*) from {target}"))).fetch_one(&pool).await.unwrap().get(0);
    assert_eq!(total, ROWS, "rows in the target");
    assert_eq!((rows, distinct, sum), (ROWS, ROWS, ROWS * (ROWS + 1) / 2));
    assert_eq!(differing, 0, "rows whose values differ from the source");

    for table in [&source, &target] {
        sqlx::query(AssertSqlSafe(format!("drop table if exists {table}"))).execute(&pool).await.unwrap();
    }
}

#[tokio::test]
async fn killed_copy_into_files_is_exact() {
    let pool = pool().await;
    let source = unique("crash_src_file");
    create_source(&pool, &source).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sink = "type = \"file\"\npath = \"out\"\nformat = \"jsonl\"";
    std::fs::write(dir.path().join("job.toml"), job(&source, sink)).unwrap();

    let committed_ids = || -> Vec<i64> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&out).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            ids.extend(text.lines().map(|line| {
                let record: serde_json::Value = serde_json::from_str(line).expect("a torn line in a committed part");
                record["id"].as_i64().unwrap()
            }));
        }
        ids
    };
    kill_midway_then_rerun(dir.path(), async || committed_ids().len() as i64).await;

    let mut ids = committed_ids();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(total, ids.len(), "duplicated records in the committed parts");
    assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>(), "missing records");

    sqlx::query(AssertSqlSafe(format!("drop table if exists {source}"))).execute(&pool).await.unwrap();
}
