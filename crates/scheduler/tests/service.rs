//! The scheduler service on a clock the tests move by hand: cron fires once
//! per schedule time (and not after downtime unless asked), overlap
//! policies, dependencies between jobs, timeouts, retries of failed runs,
//! and pause/resume — with real plugins (files) and a real store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use haul_collect_core::flow::RateLimitSpec;
use haul_collect_core::registry::PluginRegistry;
use haul_common::clock::ManualClock;
use haul_common::shutdown::CancellationToken;
use haul_register::{RunFilter, RunRecord, RunState, RunTrigger, SqliteStore, Store};
use haul_scheduler::service::{Platform, PlatformError, RateLimitOverrides, ServiceConfig, SpecFormat, TriggerRequest};
use tokio::sync::watch;

struct Fixture {
    dir: tempfile::TempDir,
    start: DateTime<Utc>,
    clock: Arc<ManualClock>,
    platform: Platform,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The minute boundary before now: minute schedules then fire at round
/// times, and the store's clock (which stamps run ends) stays close.
fn start_time() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    Utc.timestamp_opt(now - now % 60, 0).unwrap()
}

async fn fixture() -> Fixture {
    fixture_with_rate_limits(watch::channel(RateLimitOverrides::new()).1).await
}

/// A fixture whose jobs' rate limits `rate_limits` overrides.
async fn fixture_with_rate_limits(rate_limits: watch::Receiver<RateLimitOverrides>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("server.db")).await.unwrap());
    let mut registry = PluginRegistry::default();
    haul_collect::register_builtin(&mut registry);
    let start = start_time();
    let clock = Arc::new(ManualClock::new(start));
    let config = ServiceConfig {
        slots: 4,
        state_dir: dir.path().join("state"),
        lease_ttl: Duration::from_secs(5),
        misfire_grace: Duration::from_secs(30),
        rate_limits,
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let platform =
        Platform::new(store.clone(), Arc::new(registry), clock.clone(), config, shutdown.clone()).await.unwrap();
    Fixture { dir, start, clock, platform, store, shutdown }
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `lines` records to `<name>.jsonl` and submits a job copying it to `<name>-out/`.
    async fn job(&self, name: &str, lines: usize, extra: &str) {
        let input = self.path(&format!("{name}.jsonl"));
        let records: String = (0..lines).map(|i| format!("{{\"id\":{i}}}\n")).collect();
        std::fs::write(&input, records).unwrap();
        let spec = format!(
            "name = \"{name}\"\n{extra}\n\n[source]\ntype = \"file\"\npath = \"{}\"\n\n[sink]\ntype = \"file\"\npath = \"{}\"\nformat = \"jsonl\"\n",
            input.display(),
            self.path(&format!("{name}-out")).display(),
        );
        self.platform.apply_job(&spec, SpecFormat::Toml).await.unwrap();
    }

    fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
    }

    /// The job's runs, oldest first.
    async fn runs(&self, job: &str) -> Vec<RunRecord> {
        let mut runs = self.store.runs(&RunFilter { job: Some(job.into()), ..Default::default() }).await.unwrap();
        runs.reverse();
        runs
    }

    /// Ticks until the run reaches a state that `done` accepts (runs execute on their own tasks).
    async fn wait_for(&self, run_id: &str, done: impl Fn(RunState) -> bool) -> RunRecord {
        for _ in 0..1_000 {
            self.platform.tick().await.unwrap();
            let run = self.store.run(run_id).await.unwrap();
            if done(run.state) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {run_id} did not get there: {:?}", self.store.run(run_id).await.unwrap());
    }
}

fn output_ids(dir: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            ids.push(serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_i64().unwrap());
        }
    }
    ids.sort();
    ids
}

const EVERY_MINUTE: &str = "[schedule]\ncron = \"0 * * * * *\"";

/// A job whose runs take minutes: one record per batch at 5 records/s.
const SLOW: &str = "batch_size = 1\nrate_limit = { records_per_second = 5 }";

#[tokio::test]
async fn a_cron_schedule_fires_once_per_schedule_time() {
    let f = fixture().await;
    f.job("orders", 10, EVERY_MINUTE).await;
    f.platform.tick().await.unwrap();
    assert!(f.runs("orders").await.is_empty(), "nothing is due before the first schedule time");

    f.advance(60);
    f.platform.tick().await.unwrap();
    f.platform.tick().await.unwrap();
    let runs = f.runs("orders").await;
    assert_eq!(runs.len(), 1, "two ticks at the same time fire once");
    assert_eq!(runs[0].request.trigger, RunTrigger::Schedule);
    assert_eq!(runs[0].request.scheduled_for, Some(f.start + chrono::Duration::seconds(60)));
    let done = f.wait_for(&runs[0].id, RunState::is_terminal).await;
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.message);
    assert_eq!(output_ids(&f.path("orders-out")), (0..10).collect::<Vec<_>>());

    f.advance(30);
    f.platform.tick().await.unwrap();
    assert_eq!(f.runs("orders").await.len(), 1);
    f.advance(30);
    f.platform.tick().await.unwrap();
    assert_eq!(f.runs("orders").await.len(), 2);
}

#[tokio::test]
async fn after_downtime_skip_fires_nothing_and_fire_once_fires_the_latest_time_once() {
    let f = fixture().await;
    f.job("skipping", 1, EVERY_MINUTE).await;
    f.job("catching-up", 1, "[schedule]\ncron = \"0 * * * * *\"\nmisfire = \"fire_once\"").await;
    f.advance(10 * 60 + 45);
    f.platform.tick().await.unwrap();
    assert!(f.runs("skipping").await.is_empty());
    let caught_up = f.runs("catching-up").await;
    assert_eq!(caught_up.len(), 1);
    assert_eq!(caught_up[0].request.scheduled_for, Some(f.start + chrono::Duration::minutes(10)));
    // Back to normal: the next schedule time fires for both.
    f.advance(15);
    f.platform.tick().await.unwrap();
    assert_eq!(f.runs("skipping").await.len(), 1);
    assert_eq!(f.runs("catching-up").await.len(), 2);
}

#[tokio::test]
async fn overlap_skip_drops_the_new_run_and_queue_waits_for_the_active_one() {
    let f = fixture().await;
    f.job("skip", 1_000, &format!("{SLOW}\n{EVERY_MINUTE}")).await;
    f.job("queue", 1_000, &format!("{SLOW}\n[schedule]\ncron = \"0 * * * * *\"\noverlap = \"queue\"")).await;
    f.advance(60);
    f.platform.tick().await.unwrap();
    let first_skip = f.runs("skip").await[0].clone();
    let first_queue = f.runs("queue").await[0].clone();
    assert_eq!(f.store.run(&first_skip.id).await.unwrap().state, RunState::Running);

    f.advance(60);
    f.platform.tick().await.unwrap();
    let skip = f.runs("skip").await;
    assert_eq!(skip.len(), 2);
    assert_eq!(skip[1].state, RunState::Cancelled);
    let reason = format!("skipped: run {} of the job is still active", first_skip.id);
    assert_eq!(skip[1].message.as_deref(), Some(reason.as_str()));
    let queue = f.runs("queue").await;
    assert_eq!(queue[1].state, RunState::Pending);

    f.platform.cancel(&first_queue.id).await.unwrap();
    let next = f.wait_for(&queue[1].id, |state| state == RunState::Running).await;
    f.platform.cancel(&first_skip.id).await.unwrap();
    f.platform.cancel(&next.id).await.unwrap();
}

#[tokio::test]
async fn a_downstream_job_runs_after_its_upstream_succeeded_for_the_same_time() {
    let f = fixture().await;
    f.job("extract", 5, EVERY_MINUTE).await;
    f.job("load", 5, "depends_on = [\"extract\"]\n[schedule]\non_upstream_failure = \"skip\"").await;
    f.advance(60);
    f.platform.tick().await.unwrap();
    let extract = f.runs("extract").await;
    let load = f.runs("load").await;
    assert_eq!((extract.len(), load.len()), (1, 1));
    assert_eq!(load[0].request.scheduled_for, extract[0].request.scheduled_for);
    let extract_done = f.wait_for(&extract[0].id, RunState::is_terminal).await;
    let load_done = f.wait_for(&load[0].id, RunState::is_terminal).await;
    assert_eq!((extract_done.state, load_done.state), (RunState::Succeeded, RunState::Succeeded));
    assert!(load_done.started_at.unwrap() >= extract_done.finished_at.unwrap(), "load started after extract ended");

    // A failed upstream skips the downstream run for that time.
    std::fs::remove_file(f.path("extract.jsonl")).unwrap();
    f.advance(60);
    f.platform.tick().await.unwrap();
    let extract = f.runs("extract").await;
    let failed = f.wait_for(&extract[1].id, RunState::is_terminal).await;
    assert_eq!(failed.state, RunState::Failed);
    let skipped = f.wait_for(&f.runs("load").await[1].id, RunState::is_terminal).await;
    assert_eq!(skipped.state, RunState::Cancelled);
    assert_eq!(skipped.message.as_deref(), Some("skipped: upstream extract did not succeed"));
}

#[tokio::test]
async fn a_cycle_and_an_unknown_upstream_are_rejected_on_submission() {
    let f = fixture().await;
    f.job("a", 1, "").await;
    f.job("b", 1, "depends_on = [\"a\"]").await;
    let input = f.path("a.jsonl").display().to_string();
    let cyclic = format!(
        "name = \"a\"\ndepends_on = [\"b\"]\n[source]\ntype = \"file\"\npath = \"{input}\"\n[sink]\ntype = \"stdout\"\n"
    );
    let error = f.platform.apply_job(&cyclic, SpecFormat::Toml).await.unwrap_err();
    assert!(matches!(error, PlatformError::Invalid(_)), "{error}");
    assert_eq!(error.to_string(), "dependency cycle: a -> b -> a (each job depends on the next)");
    let unknown = cyclic.replace("[\"b\"]", "[\"nope\"]");
    let error = f.platform.apply_job(&unknown, SpecFormat::Toml).await.unwrap_err();
    assert_eq!(error.to_string(), "job `a` depends on `nope`, which is not a known job");
}

#[tokio::test]
async fn a_run_past_its_timeout_is_cancelled() {
    let f = fixture().await;
    f.job("slow", 1_000, &format!("{SLOW}\ntimeout = \"10m\"")).await;
    let run = f.platform.trigger("slow", TriggerRequest::default()).await.unwrap();
    f.wait_for(&run.id, |state| state == RunState::Running).await;
    f.advance(9 * 60);
    f.platform.tick().await.unwrap();
    assert_eq!(f.store.run(&run.id).await.unwrap().state, RunState::Running);
    f.advance(60);
    let ended = f.wait_for(&run.id, RunState::is_terminal).await;
    assert_eq!((ended.state, ended.message.as_deref()), (RunState::Cancelled, Some("timed out")));
}

#[tokio::test]
async fn a_failed_run_is_retried_after_its_backoff() {
    let f = fixture().await;
    f.job("flaky", 3, "[run_retry]\nattempts = 1\nbackoff = \"5m\"").await;
    std::fs::remove_file(f.path("flaky.jsonl")).unwrap();
    let run = f.platform.trigger("flaky", TriggerRequest::default()).await.unwrap();
    let failed = f.wait_for(&run.id, RunState::is_terminal).await;
    assert_eq!(failed.state, RunState::Failed);
    std::fs::write(f.path("flaky.jsonl"), "{\"id\":1}\n{\"id\":2}\n").unwrap();
    f.platform.tick().await.unwrap();
    assert_eq!(f.store.run(&run.id).await.unwrap().state, RunState::Failed, "not before the backoff");
    f.advance(6 * 60);
    let retried = f.wait_for(&run.id, |state| state == RunState::Succeeded).await;
    assert_eq!(retried.request.attempt, 2);
    assert_eq!(output_ids(&f.path("flaky-out")), [1, 2]);
}

#[tokio::test]
async fn pause_then_resume_continues_from_the_checkpoints() {
    let f = fixture().await;
    // About four seconds of work after a first burst of 20 records.
    let settings = "batch_size = 1\ncheckpoint_interval = \"0s\"\nrate_limit = { records_per_second = 20 }";
    f.job("paused", 100, settings).await;
    let run = f.platform.trigger("paused", TriggerRequest::default()).await.unwrap();
    f.wait_for(&run.id, |state| state == RunState::Running).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.platform.pause(&run.id).await.unwrap();
    assert!(f.platform.drain(Duration::from_secs(10)).await, "the execution stops at a batch boundary");
    assert!(matches!(f.platform.pause(&run.id).await, Err(PlatformError::Conflict(_))));
    f.platform.resume(&run.id).await.unwrap();
    let done = f.wait_for(&run.id, RunState::is_terminal).await;
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(output_ids(&f.path("paused-out")), (0..100).collect::<Vec<_>>(), "nothing lost or doubled");
    let events = f.store.events(&run.id).await.unwrap();
    let kinds: Vec<&str> = events.iter().filter(|e| e.shard_id.is_none()).map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["pending", "running", "paused", "running", "succeeded"]);
}

#[tokio::test]
async fn a_running_run_takes_its_rate_limit_from_the_overrides_as_they_change() {
    let (overrides, rate_limits) = watch::channel(RateLimitOverrides::new());
    let f = fixture_with_rate_limits(rate_limits).await;
    // 100 records at 5 a second: 19 seconds after the first second's burst
    f.job("slow", 100, SLOW).await;
    let run = f.platform.trigger("slow", TriggerRequest::default()).await.unwrap();
    f.wait_for(&run.id, |state| state == RunState::Running).await;
    let fast = RateLimitSpec { records_per_second: std::num::NonZeroU32::new(1_000_000), bytes_per_second: None };
    overrides.send_replace(RateLimitOverrides::from([("slow".to_string(), fast)]));
    let ended = tokio::time::timeout(Duration::from_secs(5), f.wait_for(&run.id, RunState::is_terminal))
        .await
        .expect("the running run kept the job file's rate limit");
    assert_eq!(ended.state, RunState::Succeeded, "{:?}", ended.message);
    assert_eq!(output_ids(&f.path("slow-out")), (0..100).collect::<Vec<_>>());
}
