//! The crawl's crash guarantee: SIGKILL `haul run` in the middle of a crawl
//! of a local site, run it again, and the upsert SQLite sink holds every
//! page exactly once, while no page the last saved checkpoint had finished
//! is fetched again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{AssertSqlSafe, Row};

/// Pages `/page/0.html` to `/page/{PAGES - 1}.html`, all reachable from page 0.
const PAGES: usize = 300;

type Hits = Arc<Mutex<BTreeMap<String, usize>>>;

async fn page(State(hits): State<Hits>, UrlPath(name): UrlPath<String>) -> Response {
    *hits.lock().unwrap().entry(format!("/page/{name}")).or_default() += 1;
    let Some(number) = name.strip_suffix(".html").and_then(|n| n.parse::<usize>().ok()).filter(|n| *n < PAGES) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let links: String =
        [1, 2, 7].iter().map(|step| format!("<a href=\"{}.html\">more</a>", (number + step) % PAGES)).collect();
    let body = format!("<html><head><title>Page {number}</title></head><body><h1>{number}</h1>{links}</body></html>");
    ([(CONTENT_TYPE, "text/html")], body).into_response()
}

async fn serve_site() -> (String, Hits) {
    let hits = Hits::default();
    let app = Router::new().route("/page/{name}", get(page)).with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), hits)
}

fn job(origin: &str) -> String {
    format!(
        r#"
parallelism = 1
batch_size = 10
checkpoint_interval = "100ms"

[source]
type = "crawl"
seeds = ["{origin}/page/0.html"]
robots = false
concurrency = 4
metadata = ["url", "status"]
fields = [{{ name = "title", selector = "title", required = true }}]

[source.politeness]
min_delay = "10ms"

[sink]
type = "sql"
url = "sqlite://pages.db"
table = "pages"
mode = "upsert"
key = ["url"]
"#
    )
}

fn spawn(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_haul"))
        .args(["run", "--progress", "none", "job.toml"])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn query_count(url: &str, sql: &str) -> i64 {
    let Ok(pool) = SqlitePoolOptions::new().max_connections(1).connect(url).await else { return 0 };
    let count = sqlx::query(AssertSqlSafe(sql.to_string())).fetch_one(&pool).await.map(|row| row.get(0)).unwrap_or(0);
    pool.close().await;
    count
}

/// The URLs the saved checkpoints list as finished.
async fn finished_in_checkpoints(state_dir: &Path) -> BTreeSet<String> {
    let url = format!("sqlite://{}", state_dir.join("state.db").display());
    let pool = SqlitePoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let rows = sqlx::query(AssertSqlSafe("select checkpoint from shards where checkpoint is not null".to_string()))
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    let mut finished = BTreeSet::new();
    for row in rows {
        let checkpoint: serde_json::Value = serde_json::from_str(&row.get::<String, _>(0)).unwrap();
        for page in checkpoint["done"].as_array().unwrap() {
            finished.insert(page[0].as_str().unwrap().to_string());
        }
    }
    finished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_crawl_resumes_without_fetching_finished_pages_again() {
    let (origin, hits) = serve_site().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), job(&origin)).unwrap();
    let output = format!("sqlite://{}", dir.path().join("pages.db").display());

    let mut child = spawn(dir.path());
    let start = Instant::now();
    loop {
        let written = query_count(&output, "select count(*) from pages").await;
        if written > 40 {
            assert!(written < PAGES as i64, "the crawl finished before it could be killed; slow it down");
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

    let finished = finished_in_checkpoints(&dir.path().join(".haul")).await;
    assert!(!finished.is_empty(), "no checkpoint was saved before the kill");
    let fetched_before: BTreeMap<String, usize> = hits.lock().unwrap().clone();

    let rerun = spawn(dir.path()).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{text}");
    assert!(text.contains("resuming run"), "{text}");

    // Every page exactly once, with its own title.
    let rows = query_count(&output, "select count(*) from pages").await;
    let distinct = query_count(&output, "select count(distinct url) from pages").await;
    let right = query_count(
        &output,
        "select count(*) from pages where title = 'Page ' || \
         replace(substr(url, instr(url, '/page/') + 6), '.html', '') and status = 200",
    )
    .await;
    assert_eq!((rows, distinct, right), (PAGES as i64, PAGES as i64, PAGES as i64));

    // No page the checkpoint had finished was asked for again; every other page was fetched.
    let hits = hits.lock().unwrap().clone();
    for url in &finished {
        let path = url.strip_prefix(&origin).unwrap();
        assert_eq!(hits[path], 1, "{path} was fetched again after the checkpoint that finished it");
    }
    assert_eq!(hits.len(), PAGES);
    let fetched_again: Vec<&String> = hits.iter().filter(|(_, count)| **count > 1).map(|(path, _)| path).collect();
    assert!(fetched_again.iter().all(|path| fetched_before.contains_key(*path)), "{fetched_again:?}");
}
