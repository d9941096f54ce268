//! The crash guarantee for the `http` source: SIGKILL `haul run` while it
//! pages through a local API in range mode (several shards, several pages
//! each), run it again, and the SQLite upsert table holds every record once,
//! with the second run resuming from the checkpoints instead of starting over.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Row, SqlitePool};

const RECORDS: usize = 20_000;
const PAGE: usize = 100;

/// `GET /items?from=F&to=T&page=N&per_page=S`: the records with `F <= id < T`, a page at a time.
async fn items(
    State(requests): State<Arc<AtomicUsize>>,
    Query(params): Query<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    requests.fetch_add(1, Ordering::SeqCst);
    let number = |name: &str| params[name].parse::<usize>().unwrap();
    let (from, to, page, size) = (number("from"), number("to").min(RECORDS), number("page"), number("per_page"));
    let start = from + (page - 1) * size;
    let items: Vec<_> = (start..(start + size).min(to))
        .map(|id| json!({"id": id, "name": format!("n{id}"), "amount": id as f64 / 4.0, "tags": {"even": id % 2 == 0}}))
        .collect();
    Json(json!({"items": items, "total_pages": to.saturating_sub(from).div_ceil(size)}))
}

async fn serve() -> (String, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route("/items", get(items)).with_state(requests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), requests)
}

fn job(base: &str, database: &str) -> String {
    format!(
        r#"
mode = "range"
parallelism = 2
batch_size = 50
checkpoint_interval = "100ms"

[range]
from = 0
to = {RECORDS}

[rate_limit]
records_per_second = 2000

[source]
type = "http"
url = "{base}/items"
query = {{ from = "{{from}}", to = "{{to}}" }}
records = "items"
range_step = 5000

[source.pagination]
type = "page_number"
size_param = "per_page"
size = {PAGE}
total_pages = "total_pages"

[sink]
type = "sql"
url = "{database}"
table = "items"
mode = "upsert"
key = ["id"]
"#
    )
}

fn spawn(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_haul"))
        .args(["run", "--progress", "none", "job.toml"])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn count(pool: &SqlitePool) -> i64 {
    sqlx::query("select count(*) from items").fetch_one(pool).await.map(|row| row.get::<i64, _>(0)).unwrap_or(0)
}

// The API runs in this process: waiting for haul must not block its runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_http_run_resumes_into_an_upsert_table_exactly() {
    let (base, requests) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("out.db").display());
    std::fs::write(dir.path().join("job.toml"), job(&base, &database)).unwrap();
    let pool = SqlitePoolOptions::new().max_connections(1).connect(&database).await.unwrap();

    let mut child = spawn(dir.path());
    let start = Instant::now();
    let written_before_kill = loop {
        let written = count(&pool).await;
        if written > 6_000 {
            assert!(written < RECORDS as i64, "the run finished before it could be killed; slow it down");
            break written;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            panic!("haul exited early with {status}: {}", String::from_utf8_lossy(&output.stderr));
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no progress within a minute");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let requests_before = requests.load(Ordering::SeqCst);
    let second = spawn(dir.path());
    let output = tokio::task::spawn_blocking(move || second.wait_with_output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("resuming run"), "{text}");

    let row = sqlx::query(
        "select count(*), count(distinct id), sum(id), \
         sum(name = 'n' || id and amount = id / 4.0 and json_extract(tags, '$.even') = (id % 2 = 0)) from items",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (rows, distinct, sum, exact): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let total = RECORDS as i64;
    assert_eq!((rows, distinct, sum), (total, total, total * (total - 1) / 2));
    assert_eq!(exact, total, "records whose values differ from the api's");

    // The second run read only what was not committed, give or take the
    // pages in flight of each shard (4 shards, up to 4 pages ahead, one page
    // per checkpoint interval).
    let pages_left = (RECORDS - written_before_kill as usize).div_ceil(PAGE);
    let requests_after = requests.load(Ordering::SeqCst) - requests_before;
    assert!(requests_after <= pages_left + 4 * 8, "{requests_after} requests to finish {pages_left} pages");
}
