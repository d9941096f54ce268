//! `haul store migrate`: a `haul run` state store moved from SQLite onto
//! PostgreSQL and MariaDB reads back identical records, a non-empty target is
//! refused, and a store migrated there and back lets the next `haul run`
//! continue incrementally from the migrated job state.

mod common {
    pub mod server;
    pub mod workspace;
}

use std::process::Output;

use common::server::csv;
use common::workspace::Workspace;
use haul_register::testing::{Backend, TestDatabase};

const JOB: &str = r#"
mode = "incremental"
parallelism = 2
batch_size = 100

[source]
type = "file"
path = "in/*.csv"

[sink]
type = "file"
path = "out"
format = "jsonl"
"#;

fn sqlite_url(ws: &Workspace, state_dir: &str) -> String {
    format!("sqlite://{}", ws.path(state_dir).join("state.db").display())
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn there_and_back(backend: Backend) {
    let ws = Workspace::new();
    ws.write("job.toml", JOB);
    ws.write("in/a.csv", &csv(1, 300));
    let first = ws.run(&["run", "job.toml"]);
    assert!(first.status.success(), "{}", text(&first));

    let server = TestDatabase::create(backend).await;
    let local = sqlite_url(&ws, ".haul");
    let moved = ws.run(&["store", "migrate", "--from", &local, "--to", server.url()]);
    assert!(moved.status.success(), "{}", text(&moved));
    let report = String::from_utf8_lossy(&moved.stdout).to_string();
    assert!(report.contains(&format!("migrated {local} to {}", server.url())), "{report}");
    for line in ["1 runs", "1 job_state", "0 jobs"] {
        assert!(report.lines().any(|l| l.trim() == line), "{line} in {report}");
    }

    let source = haul_register::store::open(&local).await.unwrap();
    let target = server.open().await;
    let snapshot = source.export().await.unwrap();
    assert_eq!(target.export().await.unwrap(), snapshot, "the target reads back identical rows");
    assert!(target.job_state("job").await.unwrap().is_some());

    let again = ws.run(&["store", "migrate", "--from", &local, "--to", server.url()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("the store is not empty: table job_state has rows"), "{}", text(&again));

    let back = ws.run(&["store", "migrate", "--from", server.url(), "--to", &sqlite_url(&ws, ".haul2")]);
    assert!(back.status.success(), "{}", text(&back));
    ws.write("in/b.csv", &csv(301, 50));
    let next = ws.run(&["run", "--state-dir", ".haul2", "job.toml"]);
    assert!(next.status.success(), "{}", text(&next));
    assert!(text(&next).contains("50 written"), "the migrated job state made the run incremental: {}", text(&next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_sqlite_to_postgres_and_back() {
    there_and_back(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_sqlite_to_mariadb_and_back() {
    there_and_back(Backend::MariaDb).await;
}

#[test]
fn store_migrate_from_a_missing_file_is_a_clear_error() {
    let ws = Workspace::new();
    let output = ws.run(&["store", "migrate", "--from", "sqlite://nope.db", "--to", &sqlite_url(&ws, "target")]);
    assert!(!output.status.success());
    assert!(text(&output).contains("error: no store file at nope.db"), "{}", text(&output));
}
