//! The SQLite store against the `Store` contract: run lifecycle and job state,
//! leases and fencing by the store's clock, concurrent checkpoints, reopening
//! a file, and the persisted format.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use haul_collect_core::job::Mode;
use haul_collect_core::plugin::{Checkpoint, Plan, ShardSpec};
use haul_collect_core::progress::ShardCounters;
use haul_collect_core::runtime::ResumePoint;
use haul_register::model::{NewRun, QueuedRun, RunFilter, RunRequest, RunState, RunTrigger, ShardState};
use haul_register::store::{Error, SCHEMA_VERSION, SqliteStore, Store};
use serde_json::json;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnectOptions;

const LONG: Duration = Duration::from_secs(60);

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: SqliteStore,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("haul.db");
    let store = SqliteStore::open(&path).await.unwrap();
    Fixture { _dir: dir, path, store }
}

fn plan(shards: usize) -> Plan {
    Plan {
        shards: (0..shards)
            .map(|i| ShardSpec {
                // Ids that sort differently from the plan order.
                id: format!("s{}", shards - i),
                descriptor: json!({ "from": i * 10, "to": i * 10 + 10 }),
            })
            .collect(),
        next_state: Some(json!({ "cursor": "2026-01-01" })),
    }
}

fn new_run(job: &str, shards: usize) -> NewRun {
    NewRun {
        job: job.into(),
        spec_hash: "abc123".into(),
        mode: Mode::Incremental,
        plan: plan(shards),
        request: Default::default(),
    }
}

fn at(millis: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(millis).unwrap()
}

fn counters(n: u64) -> ShardCounters {
    ShardCounters { records_read: n, records_written: n, records_rejected: 0, bytes_read: n * 10 }
}

/// Where a shard stands after `sequence` commits of `n` records each time,
/// at offset `n`.
fn reached(sequence: u64, n: u64) -> ResumePoint {
    ResumePoint { sequence, checkpoint: Some(Checkpoint(json!({ "offset": n }))), counters: counters(n) }
}

fn is_lease_lost<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
    matches!(result, Err(Error::LeaseLost { .. }))
}

#[tokio::test]
async fn create_run_stores_pending_shards_in_plan_order() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 3)).await.unwrap();
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.mode, Mode::Incremental);
    assert_eq!(run.next_state, Some(json!({ "cursor": "2026-01-01" })));
    assert_eq!(uuid::Uuid::parse_str(&run.id).unwrap().get_version_num(), 7);
    assert_eq!(f.store.run(&run.id).await.unwrap(), run);

    let shards = f.store.shards(&run.id).await.unwrap();
    let ids: Vec<&str> = shards.iter().map(|s| s.spec.id.as_str()).collect();
    assert_eq!(ids, ["s3", "s2", "s1"]);
    for (shard, spec) in shards.iter().zip(plan(3).shards) {
        assert_eq!(shard.spec, spec);
        assert_eq!(shard.state, ShardState::Pending);
        assert_eq!((shard.epoch, shard.sequence), (0, 0));
        assert_eq!(shard.checkpoint, None);
        assert_eq!(shard.counters, ShardCounters::default());
        assert_eq!(shard.owner, None);
    }
    assert_eq!(f.store.unfinished_run("orders").await.unwrap(), Some(run));
    assert_eq!(f.store.unfinished_run("other").await.unwrap(), None);
}

#[tokio::test]
async fn missing_runs_are_not_found() {
    let f = fixture().await;
    assert!(matches!(f.store.run("nope").await, Err(Error::NotFound { .. })));
    assert!(matches!(f.store.shards("nope").await, Err(Error::NotFound { .. })));
    let error = f.store.set_run_state("nope", RunState::Paused, "x").await.unwrap_err();
    assert_eq!(error.to_string(), "run nope not found");
    assert!(matches!(f.store.retry_run("nope", "x").await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn success_makes_next_state_the_job_state() {
    let f = fixture().await;
    assert_eq!(f.store.job_state("orders").await.unwrap(), None);
    let run = f.store.create_run(new_run("orders", 2)).await.unwrap();
    f.store.set_run_state(&run.id, RunState::Paused, "interrupted").await.unwrap();
    assert_eq!(f.store.job_state("orders").await.unwrap(), None);
    assert_eq!(f.store.unfinished_run("orders").await.unwrap().map(|r| r.state), Some(RunState::Paused));
    f.store.set_run_state(&run.id, RunState::Running, "resumed").await.unwrap();
    f.store.set_run_state(&run.id, RunState::Succeeded, "all shards done").await.unwrap();

    assert_eq!(f.store.job_state("orders").await.unwrap(), Some(json!({ "cursor": "2026-01-01" })));
    assert_eq!(f.store.unfinished_run("orders").await.unwrap(), None);
    let stored = f.store.run(&run.id).await.unwrap();
    assert_eq!(stored.state, RunState::Succeeded);
    assert_eq!(stored.message.as_deref(), Some("all shards done"));

    // A later run without a next state leaves the job state alone.
    let mut second = new_run("orders", 1);
    second.plan.next_state = None;
    let second = f.store.create_run(second).await.unwrap();
    f.store.set_run_state(&second.id, RunState::Succeeded, "done").await.unwrap();
    assert_eq!(f.store.job_state("orders").await.unwrap(), Some(json!({ "cursor": "2026-01-01" })));

    let kinds: Vec<String> = f.store.events(&run.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["running", "paused", "running", "succeeded"]);
}

#[tokio::test]
async fn a_revised_next_state_becomes_the_job_state() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("tap", 1)).await.unwrap();
    f.store.set_next_state(&run.id, &json!({ "bookmark": 42 })).await.unwrap();
    f.store.set_run_state(&run.id, RunState::Succeeded, "done").await.unwrap();
    assert_eq!(f.store.job_state("tap").await.unwrap(), Some(json!({ "bookmark": 42 })));
    let refused = f.store.set_next_state(&run.id, &json!({ "bookmark": 43 })).await;
    assert!(matches!(refused, Err(Error::RunNotRunning { .. })), "{refused:?}");
}

#[tokio::test]
async fn cancelled_runs_are_finished_without_job_state() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 1)).await.unwrap();
    f.store.set_run_state(&run.id, RunState::Failed, "source unreachable").await.unwrap();
    assert_eq!(f.store.unfinished_run("orders").await.unwrap().map(|r| r.id), Some(run.id.clone()));
    f.store.set_run_state(&run.id, RunState::Cancelled, "by user").await.unwrap();
    assert_eq!(f.store.unfinished_run("orders").await.unwrap(), None);
    assert_eq!(f.store.job_state("orders").await.unwrap(), None);
}

#[tokio::test]
async fn unfinished_run_is_the_latest_run_only() {
    let f = fixture().await;
    let old = f.store.create_run(new_run("orders", 1)).await.unwrap();
    f.store.set_run_state(&old.id, RunState::Failed, "boom").await.unwrap();
    let newer = f.store.create_run(new_run("orders", 1)).await.unwrap();
    assert_eq!(f.store.unfinished_run("orders").await.unwrap().map(|r| r.id), Some(newer.id.clone()));
    f.store.set_run_state(&newer.id, RunState::Succeeded, "done").await.unwrap();
    assert_eq!(f.store.unfinished_run("orders").await.unwrap(), None);
}

#[tokio::test]
async fn set_run_state_follows_the_transition_table_for_every_pair() {
    let f = fixture().await;
    // Paths from a new (running) run to each state.
    let path_to = |state: RunState| -> Vec<RunState> {
        use RunState::*;
        match state {
            Running => vec![],
            Paused => vec![Paused],
            Succeeded => vec![Succeeded],
            Failed => vec![Failed],
            Cancelled => vec![Cancelled],
            Pending => unreachable!("runs are created running"),
        }
    };
    for from in RunState::ALL.into_iter().filter(|s| *s != RunState::Pending) {
        for to in RunState::ALL {
            let run = f.store.create_run(new_run("t", 0)).await.unwrap();
            for step in path_to(from) {
                f.store.set_run_state(&run.id, step, "setup").await.unwrap();
            }
            let result = f.store.set_run_state(&run.id, to, "test").await;
            let state = f.store.run(&run.id).await.unwrap().state;
            if from.can_transition_to(to) {
                assert!(result.is_ok(), "{from} -> {to}: {result:?}");
                assert_eq!(state, to);
            } else {
                match result {
                    Err(Error::IllegalTransition { from: f, to: t }) => {
                        assert_eq!((f.as_str(), t.as_str()), (from.as_str(), to.as_str()));
                    }
                    other => panic!("{from} -> {to} should be illegal: {other:?}"),
                }
                assert_eq!(state, from, "an illegal transition changed nothing");
            }
        }
    }
}

#[tokio::test]
async fn leases_fence_out_a_stale_owner() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 2)).await.unwrap();
    let ttl = Duration::from_millis(50);

    let (first, resume) =
        f.store.claim_shard(&run.id, "s2", "worker-a", ttl).await.unwrap().expect("a pending shard is claimable");
    assert_eq!(first.epoch, 1);
    assert_eq!(resume, ResumePoint::default(), "a fresh shard starts at the beginning");
    assert_eq!(first.owner, "worker-a");
    assert_eq!(
        f.store.claim_shard(&run.id, "s2", "worker-b", LONG).await.unwrap(),
        None,
        "a live lease cannot be claimed"
    );
    f.store.save_checkpoint(&first, 1, &Checkpoint(json!({ "offset": 5 })), &counters(5)).await.unwrap();

    tokio::time::sleep(Duration::from_millis(100)).await;
    let (second, resume) =
        f.store.claim_shard(&run.id, "s2", "worker-b", LONG).await.unwrap().expect("an expired lease is claimable");
    assert_eq!(second.epoch, 2);
    assert_eq!(resume, reached(1, 5), "the new owner resumes at the last checkpoint");

    let checkpoint = Checkpoint(json!({ "offset": 9 }));
    assert!(is_lease_lost(f.store.save_checkpoint(&first, 2, &checkpoint, &counters(9)).await));
    assert!(is_lease_lost(f.store.finish_shard(&first, ShardState::Succeeded, &reached(2, 9), None).await));
    assert!(is_lease_lost(f.store.renew_lease(&first, LONG).await));
    assert!(is_lease_lost(f.store.release_shard(&first, &reached(2, 9)).await));
    let error = f.store.renew_lease(&first, LONG).await.unwrap_err();
    assert_eq!(error.to_string(), format!("lease lost on shard s2 of run {} at epoch 1", run.id));

    let shard = &f.store.shards(&run.id).await.unwrap()[0];
    assert_eq!(shard.epoch, 2);
    assert_eq!(shard.owner.as_deref(), Some("worker-b"));
    assert_eq!(shard.sequence, 1, "the stale owner's checkpoint was refused");
    assert_eq!(shard.checkpoint, Some(Checkpoint(json!({ "offset": 5 }))));

    f.store.renew_lease(&second, LONG).await.unwrap();
    f.store.save_checkpoint(&second, 2, &checkpoint, &counters(9)).await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_cannot_be_renewed_or_used() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 1)).await.unwrap();
    let (lease, _) = f.store.claim_shard(&run.id, "s1", "worker-a", Duration::from_millis(50)).await.unwrap().unwrap();
    f.store.renew_lease(&lease, Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(is_lease_lost(f.store.renew_lease(&lease, LONG).await));
    assert!(is_lease_lost(f.store.save_checkpoint(&lease, 1, &Checkpoint(json!(1)), &counters(1)).await));
}

#[tokio::test]
async fn finished_shards_cannot_be_claimed() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 2)).await.unwrap();
    let (done, _) = f.store.claim_shard(&run.id, "s2", "a", LONG).await.unwrap().unwrap();
    f.store.finish_shard(&done, ShardState::Succeeded, &reached(1, 7), None).await.unwrap();
    let (failed, _) = f.store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap().unwrap();
    f.store.save_checkpoint(&failed, 1, &Checkpoint(json!({ "offset": 1 })), &counters(1)).await.unwrap();
    let no_commit_since = ResumePoint { checkpoint: None, ..reached(1, 1) };
    f.store.finish_shard(&failed, ShardState::Failed, &no_commit_since, Some("bad row")).await.unwrap();

    assert_eq!(f.store.claim_shard(&run.id, "s2", "b", LONG).await.unwrap(), None);
    assert_eq!(f.store.claim_shard(&run.id, "s1", "b", LONG).await.unwrap(), None);
    assert_eq!(f.store.claim_shard(&run.id, "missing", "b", LONG).await.unwrap(), None);
    assert!(is_lease_lost(f.store.finish_shard(&done, ShardState::Failed, &reached(1, 7), None).await));

    let shards = f.store.shards(&run.id).await.unwrap();
    assert_eq!(shards[0].state, ShardState::Succeeded);
    assert_eq!(shards[0].counters, counters(7));
    assert_eq!((shards[0].sequence, shards[0].checkpoint.clone()), (1, reached(1, 7).checkpoint), "saved at the end");
    assert_eq!(shards[1].state, ShardState::Failed);
    assert_eq!(shards[1].error.as_deref(), Some("bad row"));
    assert_eq!(shards[1].checkpoint, reached(1, 1).checkpoint, "no new checkpoint keeps the saved one");

    // Resuming the failed run retries its failed shard.
    f.store.set_run_state(&run.id, RunState::Failed, "a shard failed").await.unwrap();
    assert_eq!(f.store.retry_run(&run.id, "retried").await.unwrap(), 1);
    let retried = f.store.run(&run.id).await.unwrap();
    assert_eq!((retried.state, retried.request.attempt, retried.finished_at), (RunState::Running, 2, None));
    assert!(matches!(f.store.retry_run(&run.id, "again").await, Err(Error::IllegalTransition { .. })));
    let (retry, resume) =
        f.store.claim_shard(&run.id, "s1", "b", LONG).await.unwrap().expect("a reset shard is claimable");
    assert_eq!(retry.epoch, 2);
    assert_eq!(resume, reached(1, 1), "the retry resumes at the failed shard's checkpoint");
    let shard = &f.store.shards(&run.id).await.unwrap()[1];
    assert_eq!(shard.error, None);
    assert_eq!(shard.counters, counters(1), "counters are kept for the retry");

    let events = f.store.events(&run.id).await.unwrap();
    let s1: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.shard_id.as_deref() == Some("s1"))
        .map(|e| (e.kind.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        s1,
        [
            ("running", "claimed by a at epoch 1"),
            ("failed", "bad row"),
            ("pending", "reset for retry"),
            ("running", "claimed by b at epoch 2"),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn finish_shard_accepts_only_end_states() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 1)).await.unwrap();
    let (lease, _) = f.store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap().unwrap();
    for state in [ShardState::Pending, ShardState::Running] {
        let result = f.store.finish_shard(&lease, state, &reached(0, 0), None).await;
        assert!(matches!(result, Err(Error::IllegalTransition { .. })), "{state}");
    }
    assert_eq!(f.store.shards(&run.id).await.unwrap()[0].state, ShardState::Running);
}

#[tokio::test]
async fn released_shards_keep_their_checkpoint_and_are_claimable_again() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 1)).await.unwrap();
    let (lease, _) = f.store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap().unwrap();
    let checkpoint = Checkpoint(json!({ "key": [3, "x"] }));
    f.store.save_checkpoint(&lease, 4, &checkpoint, &counters(40)).await.unwrap();
    // The last commit's checkpoint is saved by the release itself.
    let last =
        ResumePoint { sequence: 5, checkpoint: Some(Checkpoint(json!({ "key": [4, "y"] }))), counters: counters(50) };
    f.store.release_shard(&lease, &last).await.unwrap();

    let shard = &f.store.shards(&run.id).await.unwrap()[0];
    assert_eq!(shard.state, ShardState::Pending);
    assert_eq!(shard.owner, None);
    assert_eq!(shard.sequence, 5);
    assert_eq!(shard.checkpoint, last.checkpoint);
    assert_eq!(shard.counters, counters(50));
    assert!(is_lease_lost(f.store.renew_lease(&lease, LONG).await));

    let (again, resume) =
        f.store.claim_shard(&run.id, "s1", "b", LONG).await.unwrap().expect("a released shard is claimable");
    assert_eq!(again.epoch, 2);
    assert_eq!(resume, last);
    let kinds: Vec<String> =
        f.store.events(&run.id).await.unwrap().into_iter().filter(|e| e.shard_id.is_some()).map(|e| e.kind).collect();
    assert_eq!(kinds, ["running", "pending", "running"]);
}

#[tokio::test]
async fn shards_of_a_run_that_is_not_running_cannot_be_claimed_and_say_why() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 1)).await.unwrap();
    f.store.set_run_state(&run.id, RunState::Paused, "paused").await.unwrap();
    let error = f.store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap_err();
    assert!(matches!(error, Error::RunNotRunning { state: RunState::Paused, .. }), "{error}");
    assert_eq!(error.to_string(), format!("run {} is paused, not running", run.id));
    assert!(matches!(f.store.claim_shard("nope", "s1", "a", LONG).await, Err(Error::NotFound { .. })));
    f.store.set_run_state(&run.id, RunState::Running, "resumed").await.unwrap();
    assert!(f.store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap().is_some());
}

/// Each shard of a fresh 16-shard run checkpoints 50 times, all at once,
/// through `stores` in turn; returns the run id.
async fn checkpoint_concurrently(stores: &[Arc<dyn Store>]) -> String {
    let run = stores[0].create_run(new_run("orders", 16)).await.unwrap();
    let mut tasks = Vec::new();
    let shards = stores[0].shards(&run.id).await.unwrap();
    for (i, shard) in shards.into_iter().enumerate() {
        let store = stores[i % stores.len()].clone();
        let run_id = run.id.clone();
        tasks.push(tokio::spawn(async move {
            let (lease, _) = store.claim_shard(&run_id, &shard.spec.id, "worker", LONG).await?.expect("claimable");
            for sequence in 1..=50u64 {
                let checkpoint = Checkpoint(json!({ "offset": sequence }));
                store.save_checkpoint(&lease, sequence, &checkpoint, &counters(sequence)).await?;
                if sequence % 10 == 0 {
                    store.renew_lease(&lease, LONG).await?;
                }
            }
            store.finish_shard(&lease, ShardState::Succeeded, &reached(50, 50), None).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    run.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checkpoints_on_many_shards_all_succeed() {
    let f = fixture().await;
    let store: Arc<dyn Store> = Arc::new(f.store.clone());
    let run_id = checkpoint_concurrently(&[store.clone()]).await;
    for shard in store.shards(&run_id).await.unwrap() {
        assert_eq!(shard.state, ShardState::Succeeded);
        assert_eq!(shard.sequence, 50);
        assert_eq!(shard.checkpoint, Some(Checkpoint(json!({ "offset": 50 }))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_checkpoint_concurrently() {
    let f = fixture().await;
    let other = SqliteStore::open(&f.path).await.unwrap();
    let stores: [Arc<dyn Store>; 2] = [Arc::new(f.store.clone()), Arc::new(other)];
    let run_id = checkpoint_concurrently(&stores).await;
    for shard in stores[1].shards(&run_id).await.unwrap() {
        assert_eq!((shard.state, shard.sequence), (ShardState::Succeeded, 50));
    }
}

#[tokio::test]
async fn reopening_the_file_keeps_everything() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("orders", 2)).await.unwrap();
    let (lease, _) = f.store.claim_shard(&run.id, "s2", "a", LONG).await.unwrap().unwrap();
    f.store.save_checkpoint(&lease, 3, &Checkpoint(json!({ "page": 3 })), &counters(30)).await.unwrap();
    let shards_before = f.store.shards(&run.id).await.unwrap();
    let events_before = f.store.events(&run.id).await.unwrap();
    f.store.close().await;
    drop(f.store);

    let store = SqliteStore::open(&f.path).await.unwrap();
    assert_eq!(store.unfinished_run("orders").await.unwrap(), Some(run.clone()));
    assert_eq!(store.shards(&run.id).await.unwrap(), shards_before);
    assert_eq!(store.events(&run.id).await.unwrap(), events_before);
    // The lease survives the reopen: the same holder may keep writing.
    store.save_checkpoint(&lease, 4, &Checkpoint(json!({ "page": 4 })), &counters(40)).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
}

/// Reads raw columns of the store file, bypassing the store.
async fn raw_row(path: &Path, sql: &'static str) -> Vec<Option<String>> {
    let mut connection =
        sqlx::SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path)).await.unwrap();
    let row: (Option<String>, Option<String>, Option<String>, Option<String>) =
        sqlx::query_as(sql).fetch_one(&mut connection).await.unwrap();
    connection.close().await.unwrap();
    vec![row.0, row.1, row.2, row.3]
}

#[tokio::test]
async fn persisted_format_is_stable() {
    let f = fixture().await;
    assert_eq!(SCHEMA_VERSION, 2);
    assert_eq!(f.store.schema_version().await.unwrap(), SCHEMA_VERSION);

    let new = NewRun {
        job: "orders".into(),
        spec_hash: "h".into(),
        mode: Mode::Range,
        plan: Plan {
            shards: vec![ShardSpec {
                id: "orders-0".into(),
                // Keys in sorted order, so the text is the same with or without
                // serde_json's `preserve_order`.
                descriptor: json!({ "from": 0, "table": "orders", "to": 1000 }),
            }],
            next_state: Some(json!({ "max_id": 999 })),
        },
        request: RunRequest {
            trigger: RunTrigger::Backfill,
            scheduled_for: Some(at(1_700_000_000_000)),
            priority: 3,
            pool: "api".into(),
            params: Some(json!({ "range": { "from": 0, "to": 1000 } })),
            attempt: 2,
        },
    };
    let run = f.store.create_run(new).await.unwrap();
    let (lease, _) = f.store.claim_shard(&run.id, "orders-0", "a", LONG).await.unwrap().unwrap();
    let checkpoint = Checkpoint(json!({ "last_id": 41 }));
    let written = ShardCounters { records_read: 42, records_written: 41, records_rejected: 1, bytes_read: 4096 };
    f.store.save_checkpoint(&lease, 2, &checkpoint, &written).await.unwrap();

    let shard = raw_row(&f.path, "SELECT spec, checkpoint, counters, state FROM shards").await;
    assert_eq!(
        shard,
        [
            Some(r#"{"id":"orders-0","descriptor":{"from":0,"table":"orders","to":1000}}"#.into()),
            Some(r#"{"last_id":41}"#.into()),
            Some(r#"{"records_read":42,"records_written":41,"records_rejected":1,"bytes_read":4096}"#.into()),
            Some("running".into()),
        ]
    );
    let run_row = raw_row(&f.path, "SELECT mode, state, next_state, message FROM runs").await;
    assert_eq!(run_row, [Some("range".into()), Some("running".into()), Some(r#"{"max_id":999}"#.into()), None]);
    let queue_row =
        raw_row(&f.path, "SELECT trigger, CAST(scheduled_for AS TEXT), CAST(priority AS TEXT), pool FROM runs").await;
    assert_eq!(
        queue_row,
        [Some("backfill".into()), Some("1700000000000".into()), Some("3".into()), Some("api".into())]
    );
    let params_row = raw_row(&f.path, "SELECT params, CAST(attempt AS TEXT), NULL, NULL FROM runs").await;
    assert_eq!(params_row, [Some(r#"{"range":{"from":0,"to":1000}}"#.into()), Some("2".into()), None, None]);

    let stored = &f.store.shards(&run.id).await.unwrap()[0];
    assert_eq!(stored.checkpoint, Some(checkpoint));
    assert_eq!(stored.counters, written);
    assert_eq!(stored.sequence, 2);
}

fn scheduled(job: &str, millis: i64) -> QueuedRun {
    QueuedRun {
        job: job.into(),
        spec_hash: "h".into(),
        mode: Mode::Full,
        request: RunRequest { trigger: RunTrigger::Schedule, scheduled_for: Some(at(millis)), ..Default::default() },
    }
}

#[tokio::test]
async fn a_scheduled_run_is_created_once_per_job_and_time() {
    let f = fixture().await;
    let (first, created) = f.store.enqueue_run(scheduled("a", 60_000)).await.unwrap();
    assert!(created);
    assert_eq!((first.state, first.started_at), (RunState::Pending, None));
    let (again, created) = f.store.enqueue_run(scheduled("a", 60_000)).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    // Another time, another job, or a manual run are new runs.
    assert!(f.store.enqueue_run(scheduled("a", 120_000)).await.unwrap().1);
    assert!(f.store.enqueue_run(scheduled("b", 60_000)).await.unwrap().1);
    let manual = QueuedRun { request: RunRequest::default(), ..scheduled("a", 0) };
    assert!(f.store.enqueue_run(manual.clone()).await.unwrap().1);
    assert!(f.store.enqueue_run(manual).await.unwrap().1);

    let for_time = RunFilter { job: Some("a".into()), scheduled_for: Some(at(60_000)), ..Default::default() };
    let found = f.store.runs(&for_time).await.unwrap();
    assert_eq!(found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);
    let all_a = f.store.runs(&RunFilter { job: Some("a".into()), ..Default::default() }).await.unwrap();
    assert_eq!(all_a.len(), 4);
    let limited = RunFilter { states: vec![RunState::Pending], limit: Some(2), ..Default::default() };
    assert_eq!(f.store.runs(&limited).await.unwrap().len(), 2);
    let running = RunFilter { states: vec![RunState::Running], ..Default::default() };
    assert!(f.store.runs(&running).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_queued_run_is_planned_when_it_starts() {
    let f = fixture().await;
    let (run, _) = f.store.enqueue_run(scheduled("a", 60_000)).await.unwrap();
    assert!(f.store.shards(&run.id).await.unwrap().is_empty());
    let started = f.store.start_run(&run.id, "h2", &plan(3)).await.unwrap();
    assert_eq!((started.state, started.spec_hash.as_str()), (RunState::Running, "h2"));
    assert!(started.started_at.is_some());
    assert_eq!(started.next_state, Some(json!({ "cursor": "2026-01-01" })));
    assert_eq!(f.store.shards(&run.id).await.unwrap().len(), 3);
    assert_eq!(f.store.shard(&run.id, "s2").await.unwrap().state, ShardState::Pending);
    assert!(matches!(f.store.shard(&run.id, "nope").await, Err(Error::NotFound { .. })));
    // Only a pending run can be planned.
    assert!(matches!(f.store.start_run(&run.id, "h2", &plan(1)).await, Err(Error::IllegalTransition { .. })));

    f.store.set_run_state(&run.id, RunState::Cancelled, "by hand").await.unwrap();
    let ended = f.store.run(&run.id).await.unwrap();
    assert!(ended.finished_at.is_some());
    let kinds: Vec<String> = f.store.events(&run.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["pending", "running", "cancelled"]);
}

#[tokio::test]
async fn a_restarted_owner_gets_its_shards_back_at_once_and_stays_fenced() {
    let f = fixture().await;
    let run = f.store.create_run(new_run("a", 2)).await.unwrap();
    let (old, _) = f.store.claim_shard(&run.id, "s1", "server-1", LONG).await.unwrap().unwrap();
    let (other, _) = f.store.claim_shard(&run.id, "s2", "server-2", LONG).await.unwrap().unwrap();
    assert_eq!(f.store.expire_leases_of("server-1").await.unwrap(), 1);
    let (new, _) = f.store.claim_shard(&run.id, "s1", "server-1", LONG).await.unwrap().unwrap();
    assert_eq!(new.epoch, old.epoch + 1);
    assert!(is_lease_lost(f.store.save_checkpoint(&old, 1, &Checkpoint(json!(1)), &counters(1)).await));
    f.store.save_checkpoint(&new, 1, &Checkpoint(json!(1)), &counters(1)).await.unwrap();
    f.store.renew_lease(&other, LONG).await.unwrap();
}

#[tokio::test]
async fn jobs_are_created_updated_enabled_and_deleted() {
    let f = fixture().await;
    let job = f.store.put_job("orders", "name = 'orders'", "h1").await.unwrap();
    assert_eq!((job.version, job.enabled, job.planned_through), (1, true, None));
    f.store.set_job_enabled("orders", false).await.unwrap();
    let same = f.store.put_job("orders", "name = 'orders'", "h1").await.unwrap();
    assert_eq!((same.version, same.enabled), (1, false));
    let changed = f.store.put_job("orders", "name = 'orders' # v2", "h2").await.unwrap();
    assert_eq!((changed.version, changed.spec.as_str()), (2, "name = 'orders' # v2"));
    f.store.set_planned_through("orders", at(60_000)).await.unwrap();
    assert_eq!(f.store.job("orders").await.unwrap().planned_through, Some(at(60_000)));
    f.store.put_job("accounts", "name = 'accounts'", "h").await.unwrap();
    let names: Vec<String> = f.store.jobs().await.unwrap().into_iter().map(|j| j.name).collect();
    assert_eq!(names, ["accounts", "orders"]);
    f.store.delete_job("orders").await.unwrap();
    assert!(matches!(f.store.job("orders").await, Err(Error::NotFound { .. })));
    assert!(matches!(f.store.delete_job("orders").await, Err(Error::NotFound { .. })));
    assert!(matches!(f.store.set_job_enabled("orders", true).await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn a_run_that_failed_before_planning_is_queued_again_on_retry() {
    let f = fixture().await;
    let (run, _) = f.store.enqueue_run(scheduled("a", 60_000)).await.unwrap();
    f.store.set_run_state(&run.id, RunState::Failed, "cannot start: no such file").await.unwrap();
    assert_eq!(f.store.retry_run(&run.id, "retry 1 of 2").await.unwrap(), 0);
    let retried = f.store.run(&run.id).await.unwrap();
    assert_eq!((retried.state, retried.request.attempt), (RunState::Pending, 2));
    f.store.start_run(&run.id, "h", &plan(1)).await.unwrap();
}
