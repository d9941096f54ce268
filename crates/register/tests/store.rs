//! The `Store` contract, one suite run against every backend — SQLite,
//! PostgreSQL and MariaDB, each test on a fresh database of its own: run
//! lifecycle and job state, leases and fencing by the store's clock, claims
//! racing from many connections, concurrent checkpoints, the run queue, jobs,
//! and export/import between backends. Then what only SQLite has: reopening a
//! file, and its persisted format.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use haul_collect_core::job::Mode;
use haul_collect_core::plugin::{Checkpoint, Plan, ShardSpec};
use haul_collect_core::progress::ShardCounters;
use haul_collect_core::runtime::ResumePoint;
use haul_register::model::{
    ClaimedShard, NewRun, QueuedRun, RunFilter, RunRequest, RunState, RunStatus, RunTrigger, ShardRecord, ShardState,
};
use haul_register::store::{Error, SCHEMA_VERSION, SqliteStore, Store};
use haul_register::testing::{Backend, TestDatabase};
use serde_json::json;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnectOptions;

const LONG: Duration = Duration::from_secs(60);

/// A lease that expires before the test sleeps [`PAST_SHORT`]: the store's
/// clock is the database's, which a test cannot move.
const SHORT: Duration = Duration::from_millis(50);
const PAST_SHORT: Duration = Duration::from_millis(120);

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

async fn create_run_stores_pending_shards_in_plan_order(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 3)).await.unwrap();
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.mode, Mode::Incremental);
    assert_eq!(run.next_state, Some(json!({ "cursor": "2026-01-01" })));
    assert_eq!(uuid::Uuid::parse_str(&run.id).unwrap().get_version_num(), 7);
    assert_eq!(store.run(&run.id).await.unwrap(), run);
    assert_eq!(store.run_status(&run.id).await.unwrap(), RunStatus::from(&run));

    let shards = store.shards(&run.id).await.unwrap();
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
    assert_eq!(store.unfinished_run("orders").await.unwrap(), Some(run));
    assert_eq!(store.unfinished_run("other").await.unwrap(), None);

    // A plan larger than one insert carries keeps its order too.
    let large = store.create_run(new_run("large", 2_345)).await.unwrap();
    let shards = store.shards(&large.id).await.unwrap();
    let specs: Vec<ShardSpec> = shards.into_iter().map(|shard| shard.spec).collect();
    assert_eq!(specs, plan(2_345).shards);
}

async fn missing_runs_are_not_found(db: &TestDatabase) {
    let store = db.open().await;
    assert!(matches!(store.run("nope").await, Err(Error::NotFound { .. })));
    assert!(matches!(store.run_status("nope").await, Err(Error::NotFound { .. })));
    assert!(matches!(store.shards("nope").await, Err(Error::NotFound { .. })));
    let error = store.set_run_state("nope", RunState::Paused, "x").await.unwrap_err();
    assert_eq!(error.to_string(), "run nope not found");
    assert!(matches!(store.retry_run("nope", "x").await, Err(Error::NotFound { .. })));
}

async fn success_makes_next_state_the_job_state(db: &TestDatabase) {
    let store = db.open().await;
    assert_eq!(store.job_state("orders").await.unwrap(), None);
    let run = store.create_run(new_run("orders", 2)).await.unwrap();
    store.set_run_state(&run.id, RunState::Paused, "interrupted").await.unwrap();
    assert_eq!(store.job_state("orders").await.unwrap(), None);
    assert_eq!(store.unfinished_run("orders").await.unwrap().map(|r| r.state), Some(RunState::Paused));
    store.set_run_state(&run.id, RunState::Running, "resumed").await.unwrap();
    store.set_run_state(&run.id, RunState::Succeeded, "all shards done").await.unwrap();

    assert_eq!(store.job_state("orders").await.unwrap(), Some(json!({ "cursor": "2026-01-01" })));
    assert_eq!(store.unfinished_run("orders").await.unwrap(), None);
    let stored = store.run(&run.id).await.unwrap();
    assert_eq!(stored.state, RunState::Succeeded);
    assert_eq!(store.run_status(&run.id).await.unwrap().state, RunState::Succeeded);
    assert_eq!(stored.message.as_deref(), Some("all shards done"));

    // A later run without a next state leaves the job state alone.
    let mut second = new_run("orders", 1);
    second.plan.next_state = None;
    let second = store.create_run(second).await.unwrap();
    store.set_run_state(&second.id, RunState::Succeeded, "done").await.unwrap();
    assert_eq!(store.job_state("orders").await.unwrap(), Some(json!({ "cursor": "2026-01-01" })));

    let kinds: Vec<String> = store.events(&run.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["running", "paused", "running", "succeeded"]);
}

async fn a_revised_next_state_becomes_the_job_state(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("tap", 1)).await.unwrap();
    store.set_next_state(&run.id, &json!({ "bookmark": 42 })).await.unwrap();
    store.set_run_state(&run.id, RunState::Succeeded, "done").await.unwrap();
    assert_eq!(store.job_state("tap").await.unwrap(), Some(json!({ "bookmark": 42 })));
    let refused = store.set_next_state(&run.id, &json!({ "bookmark": 43 })).await;
    assert!(matches!(refused, Err(Error::RunNotRunning { .. })), "{refused:?}");
}

async fn cancelled_runs_are_finished_without_job_state(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 1)).await.unwrap();
    store.set_run_state(&run.id, RunState::Failed, "source unreachable").await.unwrap();
    assert_eq!(store.unfinished_run("orders").await.unwrap().map(|r| r.id), Some(run.id.clone()));
    store.set_run_state(&run.id, RunState::Cancelled, "by user").await.unwrap();
    assert_eq!(store.unfinished_run("orders").await.unwrap(), None);
    assert_eq!(store.job_state("orders").await.unwrap(), None);
}

async fn unfinished_run_is_the_latest_run_only(db: &TestDatabase) {
    let store = db.open().await;
    let old = store.create_run(new_run("orders", 1)).await.unwrap();
    store.set_run_state(&old.id, RunState::Failed, "boom").await.unwrap();
    let newer = store.create_run(new_run("orders", 1)).await.unwrap();
    assert_eq!(store.unfinished_run("orders").await.unwrap().map(|r| r.id), Some(newer.id.clone()));
    store.set_run_state(&newer.id, RunState::Succeeded, "done").await.unwrap();
    assert_eq!(store.unfinished_run("orders").await.unwrap(), None);
}

async fn set_run_state_follows_the_transition_table_for_every_pair(db: &TestDatabase) {
    let store = db.open().await;
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
            let run = store.create_run(new_run("t", 0)).await.unwrap();
            for step in path_to(from) {
                store.set_run_state(&run.id, step, "setup").await.unwrap();
            }
            let result = store.set_run_state(&run.id, to, "test").await;
            let state = store.run(&run.id).await.unwrap().state;
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

async fn a_follower_reads_the_shards_in_flight_the_named_ones_and_the_next_pending(db: &TestDatabase) {
    let store = db.open().await;
    // plan order: s6, s5, s4, s3, s2, s1
    let run = store.create_run(new_run("orders", 6)).await.unwrap();
    let ClaimedShard { lease: done, .. } = store.claim_shard(&run.id, "s6", "worker-a", LONG).await.unwrap().unwrap();
    store.finish_shard(&done, ShardState::Succeeded, &reached(1, 1), None).await.unwrap();
    store.claim_shard(&run.id, "s3", "worker-a", LONG).await.unwrap().unwrap();
    store.claim_shard(&run.id, "s5", "worker-b", LONG).await.unwrap().unwrap();

    let ids = |shards: &[ShardRecord]| shards.iter().map(|shard| shard.spec.id.clone()).collect::<Vec<_>>();
    let named = ["s6".to_string(), "s5".to_string(), "s4".to_string()];
    let followed = store.shards_to_follow(&run.id, 2, &named).await.unwrap();
    let followed_ids = ids(&followed);
    let (in_flight, queued) = followed_ids.split_at(4);
    let mut in_flight = in_flight.to_vec();
    in_flight.sort();
    assert_eq!(in_flight, ["s3", "s4", "s5", "s6"], "running and named, each once");
    assert_eq!(queued, ["s2", "s1"], "the next pending ones in plan order, not the named s4");
    let s6 = followed.iter().find(|shard| shard.spec.id == "s6").unwrap();
    assert_eq!(s6.state, ShardState::Succeeded);

    let running = ids(&store.shards_to_follow(&run.id, 0, &[]).await.unwrap());
    assert_eq!(running.len(), 2);
    assert!(running.contains(&"s3".to_string()) && running.contains(&"s5".to_string()), "{running:?}");
    let first_pending = store.shards_to_follow(&run.id, 1, &[]).await.unwrap();
    assert_eq!(ids(&first_pending)[2..], ["s4"]);
    assert!(store.shards_to_follow("missing", 5, &named).await.unwrap().is_empty());
}

async fn leases_fence_out_a_stale_owner(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 2)).await.unwrap();
    let ClaimedShard { lease: first, resume, .. } =
        store.claim_shard(&run.id, "s2", "worker-a", LONG).await.unwrap().expect("a pending shard is claimable");
    assert_eq!(first.epoch, 1);
    assert_eq!(resume, ResumePoint::default(), "a fresh shard starts at the beginning");
    assert_eq!(first.owner, "worker-a");
    assert_eq!(
        store.claim_shard(&run.id, "s2", "worker-b", LONG).await.unwrap(),
        None,
        "a live lease cannot be claimed"
    );
    store.save_checkpoint(&first, 1, &Checkpoint(json!({ "offset": 5 })), &counters(5)).await.unwrap();
    // The holder's last renewal is short; then it stops renewing.
    store.renew_lease(&first, SHORT).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    let ClaimedShard { lease: second, resume, .. } =
        store.claim_shard(&run.id, "s2", "worker-b", LONG).await.unwrap().expect("an expired lease is claimable");
    assert_eq!(second.epoch, 2);
    assert_eq!(resume, reached(1, 5), "the new owner resumes at the last checkpoint");

    let checkpoint = Checkpoint(json!({ "offset": 9 }));
    assert!(is_lease_lost(store.save_checkpoint(&first, 2, &checkpoint, &counters(9)).await));
    assert!(is_lease_lost(store.finish_shard(&first, ShardState::Succeeded, &reached(2, 9), None).await));
    assert!(is_lease_lost(store.renew_lease(&first, LONG).await));
    assert!(is_lease_lost(store.release_shard(&first, &reached(2, 9)).await));
    let error = store.renew_lease(&first, LONG).await.unwrap_err();
    assert_eq!(error.to_string(), format!("lease lost on shard s2 of run {} at epoch 1", run.id));

    let shard = &store.shards(&run.id).await.unwrap()[0];
    assert_eq!(shard.epoch, 2);
    assert_eq!(shard.owner.as_deref(), Some("worker-b"));
    assert_eq!(shard.sequence, 1, "the stale owner's checkpoint was refused");
    assert_eq!(shard.checkpoint, Some(Checkpoint(json!({ "offset": 5 }))));

    store.renew_lease(&second, LONG).await.unwrap();
    store.save_checkpoint(&second, 2, &checkpoint, &counters(9)).await.unwrap();
}

async fn an_expired_lease_cannot_be_renewed_or_used(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 1)).await.unwrap();
    let ClaimedShard { lease, .. } = store.claim_shard(&run.id, "s1", "worker-a", LONG).await.unwrap().unwrap();
    store.renew_lease(&lease, SHORT).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    assert!(is_lease_lost(store.renew_lease(&lease, LONG).await));
    assert!(is_lease_lost(store.save_checkpoint(&lease, 1, &Checkpoint(json!(1)), &counters(1)).await));
}

async fn finished_shards_cannot_be_claimed(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 2)).await.unwrap();
    let ClaimedShard { lease: done, .. } = store.claim_shard(&run.id, "s2", "a", LONG).await.unwrap().unwrap();
    store.finish_shard(&done, ShardState::Succeeded, &reached(1, 7), None).await.unwrap();
    let ClaimedShard { lease: failed, .. } = store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap().unwrap();
    store.save_checkpoint(&failed, 1, &Checkpoint(json!({ "offset": 1 })), &counters(1)).await.unwrap();
    let no_commit_since = ResumePoint { checkpoint: None, ..reached(1, 1) };
    store.finish_shard(&failed, ShardState::Failed, &no_commit_since, Some("bad row")).await.unwrap();

    assert_eq!(store.claim_shard(&run.id, "s2", "b", LONG).await.unwrap(), None);
    assert_eq!(store.claim_shard(&run.id, "s1", "b", LONG).await.unwrap(), None);
    assert_eq!(store.claim_shard(&run.id, "missing", "b", LONG).await.unwrap(), None);
    assert!(is_lease_lost(store.finish_shard(&done, ShardState::Failed, &reached(1, 7), None).await));

    let shards = store.shards(&run.id).await.unwrap();
    assert_eq!(shards[0].state, ShardState::Succeeded);
    assert_eq!(shards[0].counters, counters(7));
    assert_eq!((shards[0].sequence, shards[0].checkpoint.clone()), (1, reached(1, 7).checkpoint), "saved at the end");
    assert_eq!(shards[1].state, ShardState::Failed);
    assert_eq!(shards[1].error.as_deref(), Some("bad row"));
    assert_eq!(shards[1].checkpoint, reached(1, 1).checkpoint, "no new checkpoint keeps the saved one");

    // Resuming the failed run retries its failed shard.
    store.set_run_state(&run.id, RunState::Failed, "a shard failed").await.unwrap();
    assert_eq!(store.retry_run(&run.id, "retried").await.unwrap(), 1);
    let retried = store.run(&run.id).await.unwrap();
    assert_eq!((retried.state, retried.request.attempt, retried.finished_at), (RunState::Running, 2, None));
    assert!(matches!(store.retry_run(&run.id, "again").await, Err(Error::IllegalTransition { .. })));
    let ClaimedShard { lease: retry, resume, .. } =
        store.claim_shard(&run.id, "s1", "b", LONG).await.unwrap().expect("a reset shard is claimable");
    assert_eq!(retry.epoch, 2);
    assert_eq!(resume, reached(1, 1), "the retry resumes at the failed shard's checkpoint");
    let shard = &store.shards(&run.id).await.unwrap()[1];
    assert_eq!(shard.error, None);
    assert_eq!(shard.counters, counters(1), "counters are kept for the retry");

    let events = store.events(&run.id).await.unwrap();
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

async fn finish_shard_accepts_only_end_states(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 1)).await.unwrap();
    let ClaimedShard { lease, .. } = store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap().unwrap();
    for state in [ShardState::Pending, ShardState::Running] {
        let result = store.finish_shard(&lease, state, &reached(0, 0), None).await;
        assert!(matches!(result, Err(Error::IllegalTransition { .. })), "{state}");
    }
    assert_eq!(store.shards(&run.id).await.unwrap()[0].state, ShardState::Running);
}

async fn released_shards_keep_their_checkpoint_and_are_claimable_again(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 1)).await.unwrap();
    let ClaimedShard { lease, .. } = store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap().unwrap();
    let checkpoint = Checkpoint(json!({ "key": [3, "x"] }));
    store.save_checkpoint(&lease, 4, &checkpoint, &counters(40)).await.unwrap();
    // The last commit's checkpoint is saved by the release itself.
    let last =
        ResumePoint { sequence: 5, checkpoint: Some(Checkpoint(json!({ "key": [4, "y"] }))), counters: counters(50) };
    store.release_shard(&lease, &last).await.unwrap();

    let shard = &store.shards(&run.id).await.unwrap()[0];
    assert_eq!(shard.state, ShardState::Pending);
    assert_eq!(shard.owner, None);
    assert_eq!(shard.sequence, 5);
    assert_eq!(shard.checkpoint, last.checkpoint);
    assert_eq!(shard.counters, counters(50));
    assert!(is_lease_lost(store.renew_lease(&lease, LONG).await));

    let ClaimedShard { lease: again, resume, .. } =
        store.claim_shard(&run.id, "s1", "b", LONG).await.unwrap().expect("a released shard is claimable");
    assert_eq!(again.epoch, 2);
    assert_eq!(resume, last);
    let kinds: Vec<String> =
        store.events(&run.id).await.unwrap().into_iter().filter(|e| e.shard_id.is_some()).map(|e| e.kind).collect();
    assert_eq!(kinds, ["running", "pending", "running"]);
}

async fn shards_of_a_run_that_is_not_running_cannot_be_claimed_and_say_why(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 1)).await.unwrap();
    store.set_run_state(&run.id, RunState::Paused, "paused").await.unwrap();
    let error = store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap_err();
    assert!(matches!(error, Error::RunNotRunning { state: RunState::Paused, .. }), "{error}");
    assert_eq!(error.to_string(), format!("run {} is paused, not running", run.id));
    assert!(matches!(store.claim_shard("nope", "s1", "a", LONG).await, Err(Error::NotFound { .. })));
    store.set_run_state(&run.id, RunState::Running, "resumed").await.unwrap();
    assert!(store.claim_shard(&run.id, "s1", "a", LONG).await.unwrap().is_some());
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
            let ClaimedShard { lease, .. } =
                store.claim_shard(&run_id, &shard.spec.id, "worker", LONG).await?.expect("claimable");
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

async fn concurrent_checkpoints_on_many_shards_all_succeed(db: &TestDatabase) {
    let store = db.open().await;
    let run_id = checkpoint_concurrently(std::slice::from_ref(&store)).await;
    for shard in store.shards(&run_id).await.unwrap() {
        assert_eq!(shard.state, ShardState::Succeeded);
        assert_eq!(shard.sequence, 50);
        assert_eq!(shard.checkpoint, Some(Checkpoint(json!({ "offset": 50 }))));
    }
}

async fn two_stores_on_one_database_checkpoint_concurrently(db: &TestDatabase) {
    let stores = [db.open().await, db.open().await];
    let run_id = checkpoint_concurrently(&stores).await;
    for shard in stores[1].shards(&run_id).await.unwrap() {
        assert_eq!((shard.state, shard.sequence), (ShardState::Succeeded, 50));
    }
}

fn scheduled(job: &str, millis: i64) -> QueuedRun {
    QueuedRun {
        job: job.into(),
        spec_hash: "h".into(),
        mode: Mode::Full,
        request: RunRequest { trigger: RunTrigger::Schedule, scheduled_for: Some(at(millis)), ..Default::default() },
    }
}

async fn a_scheduled_run_is_created_once_per_job_and_time(db: &TestDatabase) {
    let store = db.open().await;
    let (first, created) = store.enqueue_run(scheduled("a", 60_000)).await.unwrap();
    assert!(created);
    assert_eq!((first.state, first.started_at), (RunState::Pending, None));
    let (again, created) = store.enqueue_run(scheduled("a", 60_000)).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    // Another time, another job, or a manual run are new runs.
    assert!(store.enqueue_run(scheduled("a", 120_000)).await.unwrap().1);
    assert!(store.enqueue_run(scheduled("b", 60_000)).await.unwrap().1);
    let manual = QueuedRun { request: RunRequest::default(), ..scheduled("a", 0) };
    assert!(store.enqueue_run(manual.clone()).await.unwrap().1);
    assert!(store.enqueue_run(manual).await.unwrap().1);

    let for_time = RunFilter { job: Some("a".into()), scheduled_for: Some(at(60_000)), ..Default::default() };
    let found = store.runs(&for_time).await.unwrap();
    assert_eq!(found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);
    let all_a = store.runs(&RunFilter { job: Some("a".into()), ..Default::default() }).await.unwrap();
    assert_eq!(all_a.len(), 4);
    let limited = RunFilter { states: vec![RunState::Pending], limit: Some(2), ..Default::default() };
    assert_eq!(store.runs(&limited).await.unwrap().len(), 2);
    let running = RunFilter { states: vec![RunState::Running], ..Default::default() };
    assert!(store.runs(&running).await.unwrap().is_empty());
}

async fn a_queued_run_is_planned_when_it_starts(db: &TestDatabase) {
    let store = db.open().await;
    let (run, _) = store.enqueue_run(scheduled("a", 60_000)).await.unwrap();
    assert!(store.shards(&run.id).await.unwrap().is_empty());
    let started = store.start_run(&run.id, "h2", &plan(3)).await.unwrap();
    assert_eq!((started.state, started.spec_hash.as_str()), (RunState::Running, "h2"));
    assert!(started.started_at.is_some());
    assert_eq!(started.next_state, Some(json!({ "cursor": "2026-01-01" })));
    assert_eq!(store.shards(&run.id).await.unwrap().len(), 3);
    assert_eq!(store.shard(&run.id, "s2").await.unwrap().state, ShardState::Pending);
    assert!(matches!(store.shard(&run.id, "nope").await, Err(Error::NotFound { .. })));
    // Only a pending run can be planned.
    assert!(matches!(store.start_run(&run.id, "h2", &plan(1)).await, Err(Error::IllegalTransition { .. })));

    store.set_run_state(&run.id, RunState::Cancelled, "by hand").await.unwrap();
    let ended = store.run(&run.id).await.unwrap();
    assert!(ended.finished_at.is_some());
    let kinds: Vec<String> = store.events(&run.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["pending", "running", "cancelled"]);
}

async fn a_restarted_owner_gets_its_shards_back_at_once_and_stays_fenced(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("a", 2)).await.unwrap();
    let ClaimedShard { lease: old, .. } = store.claim_shard(&run.id, "s1", "server-1", LONG).await.unwrap().unwrap();
    let ClaimedShard { lease: other, .. } = store.claim_shard(&run.id, "s2", "server-2", LONG).await.unwrap().unwrap();
    assert_eq!(store.expire_leases_of("server-1").await.unwrap(), 1);
    let ClaimedShard { lease: new, .. } = store.claim_shard(&run.id, "s1", "server-1", LONG).await.unwrap().unwrap();
    assert_eq!(new.epoch, old.epoch + 1);
    assert!(is_lease_lost(store.save_checkpoint(&old, 1, &Checkpoint(json!(1)), &counters(1)).await));
    store.save_checkpoint(&new, 1, &Checkpoint(json!(1)), &counters(1)).await.unwrap();
    store.renew_lease(&other, LONG).await.unwrap();
}

async fn jobs_are_created_updated_enabled_and_deleted(db: &TestDatabase) {
    let store = db.open().await;
    let job = store.put_job("orders", "name = 'orders'", "h1").await.unwrap();
    assert_eq!((job.version, job.enabled, job.planned_through), (1, true, None));
    store.set_job_enabled("orders", false).await.unwrap();
    let same = store.put_job("orders", "name = 'orders'", "h1").await.unwrap();
    assert_eq!((same.version, same.enabled), (1, false));
    let changed = store.put_job("orders", "name = 'orders' # v2", "h2").await.unwrap();
    assert_eq!((changed.version, changed.spec.as_str()), (2, "name = 'orders' # v2"));
    store.set_planned_through("orders", at(60_000)).await.unwrap();
    assert_eq!(store.job("orders").await.unwrap().planned_through, Some(at(60_000)));
    store.put_job("accounts", "name = 'accounts'", "h").await.unwrap();
    let names: Vec<String> = store.jobs().await.unwrap().into_iter().map(|j| j.name).collect();
    assert_eq!(names, ["accounts", "orders"]);
    store.delete_job("orders").await.unwrap();
    assert!(matches!(store.job("orders").await, Err(Error::NotFound { .. })));
    assert!(matches!(store.delete_job("orders").await, Err(Error::NotFound { .. })));
    assert!(matches!(store.set_job_enabled("orders", true).await, Err(Error::NotFound { .. })));
}

async fn a_run_that_failed_before_planning_is_queued_again_on_retry(db: &TestDatabase) {
    let store = db.open().await;
    let (run, _) = store.enqueue_run(scheduled("a", 60_000)).await.unwrap();
    store.set_run_state(&run.id, RunState::Failed, "cannot start: no such file").await.unwrap();
    assert_eq!(store.retry_run(&run.id, "retry 1 of 2").await.unwrap(), 0);
    let retried = store.run(&run.id).await.unwrap();
    assert_eq!((retried.state, retried.request.attempt), (RunState::Pending, 2));
    store.start_run(&run.id, "h", &plan(1)).await.unwrap();
}

/// Claims race for every shard of a run from many connections of several
/// stores: each round, exactly one claim per shard wins, at the next epoch;
/// between rounds the winners' leases are expired.
async fn claims_racing_from_many_connections_have_one_winner_per_shard_and_epoch(db: &TestDatabase) {
    const SHARDS: usize = 6;
    const CLAIMERS: usize = 12;
    let stores = [db.open().await, db.open().await, db.open().await];
    let run = stores[0].create_run(new_run("race", SHARDS)).await.unwrap();
    let shard_ids: Vec<String> = plan(SHARDS).shards.into_iter().map(|spec| spec.id).collect();
    for epoch in 1..=3u64 {
        let start = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
        let mut tasks = Vec::new();
        for claimer in 0..CLAIMERS {
            let store = stores[claimer % stores.len()].clone();
            let (run_id, shard_ids, start) = (run.id.clone(), shard_ids.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut won = Vec::new();
                for shard_id in &shard_ids {
                    let owner = format!("claimer-{claimer}");
                    if let Some(ClaimedShard { lease, .. }) =
                        store.claim_shard(&run_id, shard_id, &owner, LONG).await.unwrap()
                    {
                        won.push(lease);
                    }
                }
                won
            }));
        }
        let mut leases = Vec::new();
        for task in tasks {
            leases.extend(task.await.unwrap());
        }
        let mut won: Vec<&str> = leases.iter().map(|lease| lease.shard_id.as_str()).collect();
        won.sort();
        let mut expected: Vec<&str> = shard_ids.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(won, expected, "round {epoch}: one winner per shard");
        assert!(leases.iter().all(|lease| lease.epoch == epoch), "round {epoch}: {leases:?}");
        for lease in &leases {
            let shard = stores[1].shard(&run.id, &lease.shard_id).await.unwrap();
            assert_eq!((shard.epoch, shard.owner.as_deref()), (epoch, Some(lease.owner.as_str())));
            stores[2].expire_leases_of(&lease.owner).await.unwrap();
        }
    }
    let claims = stores[0].events(&run.id).await.unwrap().into_iter().filter(|event| event.kind == "running").count();
    assert_eq!(claims, 1 + SHARDS * 3, "the run's start and one claim per shard and round");
}

/// Many schedulers queueing the same scheduled run at once create it once.
async fn a_scheduled_run_queued_from_many_connections_is_created_once(db: &TestDatabase) {
    let stores = [db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move { store.enqueue_run(scheduled("a", 60_000)).await.unwrap() }));
    }
    let mut ids = Vec::new();
    let mut created = 0;
    for task in tasks {
        let (run, new) = task.await.unwrap();
        ids.push(run.id);
        created += usize::from(new);
    }
    assert_eq!(created, 1);
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// The leader asks a running shard to split; its owner splits it under its
/// lease: the shard keeps its checkpoint with a narrower descriptor, and a
/// new pending shard takes the rest, after the others.
async fn a_running_shard_splits_under_its_lease(db: &TestDatabase) {
    let store = db.open().await;
    let run = store.create_run(new_run("orders", 2)).await.unwrap();
    assert!(!store.request_split(&run.id, "s2", "straggler").await.unwrap(), "a pending shard is not asked");
    assert!(!store.request_split(&run.id, "nope", "straggler").await.unwrap());
    let ClaimedShard { lease, .. } = store.claim_shard(&run.id, "s2", "worker-a", LONG).await.unwrap().unwrap();
    store.save_checkpoint(&lease, 3, &Checkpoint(json!({ "offset": 4 })), &counters(4)).await.unwrap();
    assert!(!store.shard(&run.id, "s2").await.unwrap().split_requested);
    assert!(store.request_split(&run.id, "s2", "running for 40s, 2x the median").await.unwrap());
    assert!(store.shard(&run.id, "s2").await.unwrap().split_requested);

    let kept = json!({ "from": 0, "to": 6 });
    let rest = ShardSpec { id: "s2.s3".into(), descriptor: json!({ "from": 6, "to": 10 }) };
    let stale = haul_register::model::Lease { epoch: lease.epoch + 1, ..lease.clone() };
    assert!(is_lease_lost(store.split_shard(&stale, &kept, &rest).await));
    assert_eq!(store.shards(&run.id).await.unwrap().len(), 2, "a refused split adds no shard");
    store.split_shard(&lease, &kept, &rest).await.unwrap();

    let shards = store.shards(&run.id).await.unwrap();
    let ids: Vec<&str> = shards.iter().map(|shard| shard.spec.id.as_str()).collect();
    assert_eq!(ids, ["s2", "s1", "s2.s3"]);
    let split = &shards[0];
    assert_eq!(split.spec.descriptor, kept);
    assert!(!split.split_requested);
    assert_eq!((split.state, split.epoch, split.sequence), (ShardState::Running, lease.epoch, 3));
    assert_eq!(split.checkpoint, Some(Checkpoint(json!({ "offset": 4 }))));
    let new = &shards[2];
    assert_eq!(new.spec, rest);
    assert_eq!((new.state, new.epoch, new.sequence, new.checkpoint.clone()), (ShardState::Pending, 0, 0, None));
    assert_eq!(new.counters, ShardCounters::default());
    assert!(!new.split_requested && new.owner.is_none());
    let events = store.events(&run.id).await.unwrap();
    let kinds: Vec<(Option<&str>, &str)> =
        events.iter().map(|event| (event.shard_id.as_deref(), event.kind.as_str())).collect();
    assert_eq!(
        kinds[kinds.len() - 3..],
        [(Some("s2"), "split_requested"), (Some("s2"), "split"), (Some("s2.s3"), "pending")]
    );
    assert_eq!(events[events.len() - 3].reason, "running for 40s, 2x the median");
    assert_eq!(events[events.len() - 2].reason, "split by worker-a at epoch 1: shard s2.s3 takes the rest");

    // The same new shard twice is refused, and changes nothing.
    let again = store.split_shard(&lease, &json!({ "from": 0, "to": 3 }), &rest).await;
    assert!(matches!(again, Err(Error::Database(_))), "{again:?}");
    assert_eq!(store.shard(&run.id, "s2").await.unwrap().spec.descriptor, kept);
    // The owner goes on; another owner takes the new shard from its start.
    store.save_checkpoint(&lease, 4, &Checkpoint(json!({ "offset": 5 })), &counters(5)).await.unwrap();
    let ClaimedShard { lease: other, resume, shard } =
        store.claim_shard(&run.id, "s2.s3", "worker-b", LONG).await.unwrap().unwrap();
    assert_eq!((other.epoch, resume), (1, ResumePoint::default()));
    assert_eq!(shard, rest, "a claim hands back the shard as the split made it");
    store.finish_shard(&lease, ShardState::Succeeded, &reached(5, 6), None).await.unwrap();
    assert!(!store.request_split(&run.id, "s2", "late").await.unwrap(), "a finished shard is not asked");
    assert!(is_lease_lost(store.split_shard(&lease, &kept, &ShardSpec { id: "s2.s9".into(), ..rest }).await));
}

/// A store exported and imported into an empty one (of any backend) reads
/// back the same records, and a store that holds data refuses an import.
async fn an_export_imports_into_an_empty_store_of_every_backend(db: &TestDatabase) {
    let source = db.open().await;
    source.put_job("orders", "name = 'orders'", "h1").await.unwrap();
    source.set_planned_through("orders", at(60_000)).await.unwrap();
    source.set_job_enabled("orders", false).await.unwrap();
    let done = source.create_run(new_run("orders", 1)).await.unwrap();
    source.set_run_state(&done.id, RunState::Succeeded, "done").await.unwrap();
    let run = source.create_run(new_run("orders", 3)).await.unwrap();
    let ClaimedShard { lease, .. } = source.claim_shard(&run.id, "s2", "worker", LONG).await.unwrap().unwrap();
    source.save_checkpoint(&lease, 7, &Checkpoint(json!({ "page": 7, "cursor": "b" })), &counters(70)).await.unwrap();
    assert!(source.request_split(&run.id, "s2", "straggler").await.unwrap());
    let (queued, _) = source.enqueue_run(scheduled("orders", 120_000)).await.unwrap();
    let snapshot = source.export().await.unwrap();
    let counts: Vec<(&str, usize)> = snapshot.tables.iter().map(|t| (t.table, t.rows.len())).collect();
    assert_eq!(counts, [("jobs", 1), ("job_state", 1), ("runs", 3), ("shards", 4), ("events", 6)]);
    assert!(source.shard(&run.id, "s2").await.unwrap().split_requested);

    for backend in Backend::ALL {
        let target_database = TestDatabase::create(backend).await;
        let target = target_database.open().await;
        target.import(&snapshot).await.unwrap();
        assert_eq!(target.export().await.unwrap(), snapshot, "{backend:?}");
        assert_eq!(target.job("orders").await.unwrap(), source.job("orders").await.unwrap());
        assert_eq!(target.job_state("orders").await.unwrap(), source.job_state("orders").await.unwrap());
        for id in [&done.id, &run.id, &queued.id] {
            assert_eq!(target.run(id).await.unwrap(), source.run(id).await.unwrap());
            assert_eq!(target.shards(id).await.unwrap(), source.shards(id).await.unwrap());
            assert_eq!(target.events(id).await.unwrap(), source.events(id).await.unwrap());
        }
        // The lease moved with its epoch: its holder may go on writing.
        target.save_checkpoint(&lease, 8, &Checkpoint(json!({ "page": 8 })), &counters(80)).await.unwrap();
        let ClaimedShard { lease: claimed, .. } =
            target.claim_shard(&run.id, "s1", "worker", LONG).await.unwrap().unwrap();
        assert_eq!(claimed.epoch, 1);

        let refused = target.import(&snapshot).await.unwrap_err();
        assert!(matches!(refused, Error::NotEmpty { .. }), "{refused}");
        assert_eq!(refused.to_string(), "the store is not empty: table jobs has rows");
    }
}

macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        conformance!(@backend sqlite, Backend::Sqlite, $($case),+);
        conformance!(@backend postgres, Backend::Postgres, $($case),+);
        conformance!(@backend mariadb, Backend::MariaDb, $($case),+);
    };
    (@backend $module:ident, $backend:expr, $($case:ident),+) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let database = TestDatabase::create($backend).await;
                    super::$case(&database).await;
                }
            )+
        }
    };
}

conformance!(
    create_run_stores_pending_shards_in_plan_order,
    missing_runs_are_not_found,
    success_makes_next_state_the_job_state,
    a_revised_next_state_becomes_the_job_state,
    cancelled_runs_are_finished_without_job_state,
    unfinished_run_is_the_latest_run_only,
    set_run_state_follows_the_transition_table_for_every_pair,
    leases_fence_out_a_stale_owner,
    an_expired_lease_cannot_be_renewed_or_used,
    finished_shards_cannot_be_claimed,
    finish_shard_accepts_only_end_states,
    released_shards_keep_their_checkpoint_and_are_claimable_again,
    shards_of_a_run_that_is_not_running_cannot_be_claimed_and_say_why,
    concurrent_checkpoints_on_many_shards_all_succeed,
    two_stores_on_one_database_checkpoint_concurrently,
    a_scheduled_run_is_created_once_per_job_and_time,
    a_queued_run_is_planned_when_it_starts,
    a_restarted_owner_gets_its_shards_back_at_once_and_stays_fenced,
    jobs_are_created_updated_enabled_and_deleted,
    a_run_that_failed_before_planning_is_queued_again_on_retry,
    claims_racing_from_many_connections_have_one_winner_per_shard_and_epoch,
    a_scheduled_run_queued_from_many_connections_is_created_once,
    an_export_imports_into_an_empty_store_of_every_backend,
    a_running_shard_splits_under_its_lease,
    a_follower_reads_the_shards_in_flight_the_named_ones_and_the_next_pending,
);

/// What only a SQLite file has: reopening it, and its persisted format.
mod sqlite_file {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        store: SqliteStore,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("haul.db");
        let store = SqliteStore::open(&path).await.unwrap();
        Fixture { _dir: dir, path, store }
    }

    #[tokio::test]
    async fn reopening_the_file_keeps_everything() {
        let f = fixture().await;
        let run = f.store.create_run(new_run("orders", 2)).await.unwrap();
        let ClaimedShard { lease, .. } = f.store.claim_shard(&run.id, "s2", "a", LONG).await.unwrap().unwrap();
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
        assert_eq!(SCHEMA_VERSION, 4);
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
        let ClaimedShard { lease, .. } = f.store.claim_shard(&run.id, "orders-0", "a", LONG).await.unwrap().unwrap();
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
            raw_row(&f.path, "SELECT trigger, CAST(scheduled_for AS TEXT), CAST(priority AS TEXT), pool FROM runs")
                .await;
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
}
