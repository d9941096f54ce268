//! A run that workers execute (the distributed mode), in one process: the
//! scheduler offers the shards through the in-process dispatcher and worker
//! agents on the same store run them. The run holds no more slots, and keeps
//! no more shards waiting for one, than its job's parallelism; the next
//! shards are offered as the previous ones finish, which the workers' rings
//! of the doorbell tell the leader long before its poll would. A job's
//! worker label keeps its shards off the workers that do not carry it.

use std::sync::Arc;
use std::time::Duration;

use haul_collect_core::registry::PluginRegistry;
use haul_common::clock::SystemClock;
use haul_common::shutdown::CancellationToken;
use haul_register::dispatch::{Dispatcher, InProcessDispatcher};
use haul_register::limiter::InProcessLimiter;
use haul_register::{RunState, SqliteStore, Store};
use haul_scheduler::service::{Platform, RateLimitOverrides, ServiceConfig, SpecFormat, TriggerRequest};
use haul_scheduler::worker::{Worker, WorkerConfig};
use tokio::sync::watch;

const FILES: usize = 40;
const PARALLELISM: usize = 3;
/// A leader poll that keeps the tests quick without the doorbell.
const QUICK_POLL: Duration = Duration::from_millis(20);

/// A leader on an SQLite store in a folder of its own, offering the shards
/// of runs through an in-process dispatcher to workers of the test's.
struct Deployment {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    plugins: Arc<PluginRegistry>,
    dispatcher: Arc<dyn Dispatcher>,
    platform: Platform,
    shutdown: CancellationToken,
}

impl Deployment {
    /// A deployment whose `files` input files hold one record each, whose
    /// leader looks at a run's shards at least every `poll`.
    async fn start(files: usize, poll: Duration) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        for file in 0..files {
            std::fs::write(dir.path().join(format!("in/{file:03}.jsonl")), format!("{{\"id\":{file}}}\n")).unwrap();
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("server.db")).await.unwrap());
        let mut plugins = PluginRegistry::default();
        haul_collect::register_builtin(&mut plugins);
        let plugins = Arc::new(plugins);
        let dispatcher: Arc<dyn Dispatcher> = Arc::new(InProcessDispatcher::new());
        let shutdown = CancellationToken::new();
        let config = ServiceConfig {
            // The workers' capacity: far more than the job may use.
            slots: 50,
            state_dir: dir.path().join("state"),
            remote_workers: Some(dispatcher.clone()),
            remote_poll: poll,
            ..Default::default()
        };
        let platform = Platform::new(store.clone(), plugins.clone(), Arc::new(SystemClock), config, shutdown.clone())
            .await
            .unwrap();
        drop(platform.spawn_loop());
        drop(platform.follow_doorbell(dispatcher.clone()));
        Deployment { dir, store, plugins, dispatcher, platform, shutdown }
    }

    /// Applies the job copying the input files, with the `extra` top-level
    /// lines, and triggers a run of it.
    async fn trigger(&self, extra: &str) -> String {
        let dir = self.dir.path().display();
        let spec = format!(
            "name = \"files\"\nparallelism = {PARALLELISM}\n{extra}\n\n[source]\ntype = \"file\"\npath = \"{dir}/in/*.jsonl\"\n\n\
             [sink]\ntype = \"file\"\npath = \"{dir}/out\"\nformat = \"jsonl\"\n"
        );
        self.platform.apply_job(&spec, SpecFormat::Toml).await.unwrap();
        self.platform.trigger("files", TriggerRequest::default()).await.unwrap().id
    }

    /// Starts a worker of the default pool carrying `labels`, until the deployment's shutdown.
    fn worker(&self, id: &str, labels: &[&str]) -> tokio::task::JoinHandle<anyhow::Result<bool>> {
        let worker = Worker::new(
            self.store.clone(),
            self.plugins.clone(),
            self.dispatcher.clone(),
            WorkerConfig {
                id: id.into(),
                pools: vec!["default".into()],
                labels: labels.iter().map(|label| label.to_string()).collect(),
                slots: 2,
                lease_ttl: Duration::from_secs(15),
                state_dir: self.dir.path().join(id),
                limiter: Arc::new(InProcessLimiter::new()),
                rate_limits: watch::channel(RateLimitOverrides::new()).1,
            },
        );
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move { worker.run(shutdown, Duration::from_secs(5)).await })
    }

    /// Waits for the run to start and end; returns its state.
    async fn finish(&self, run_id: &str) -> RunState {
        let mut state = RunState::Running;
        for _ in 0..500 {
            state = self.store.run_status(run_id).await.unwrap().state;
            if !matches!(state, RunState::Pending | RunState::Running) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        state
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_run_holds_no_more_than_its_parallelism_and_finishes_on_a_worker() {
    let deployment = Deployment::start(FILES, QUICK_POLL).await;
    let run_id = deployment.trigger("").await;
    let platform = &deployment.platform;

    // No worker yet: the run offers as many shards as its parallelism and
    // keeps no other shard waiting for a slot.
    wait_until("the first offers", || platform.dispatch_load().busy == PARALLELISM).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let load = platform.dispatch_load();
    assert_eq!((load.busy, load.waiting), (PARALLELISM, 0), "{load:?}");

    let working = deployment.worker("worker-1", &[]);
    assert_eq!(deployment.finish(&run_id).await, RunState::Succeeded);
    let shards = deployment.store.shards(&run_id).await.unwrap();
    assert_eq!(shards.len(), FILES);
    assert!(shards.iter().all(|shard| shard.owner.as_deref() == Some("worker-1")), "{shards:?}");
    assert_eq!(output_lines(&deployment.dir.path().join("out")), FILES);
    deployment.shutdown.cancel();
    assert!(working.await.unwrap().unwrap(), "the worker drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_shards_ring_the_leader_to_offer_the_next_ones_long_before_its_poll() {
    // Two rounds of shards. By polling alone, the second round would be
    // offered at the look a poll after the first offers; the eighth of a
    // poll the leader waits between looks once shards finish is the least.
    let poll = Duration::from_secs(8);
    let deployment = Deployment::start(2 * PARALLELISM, poll).await;
    let working = deployment.worker("worker-1", &[]);
    let started = tokio::time::Instant::now();
    let run_id = deployment.trigger("").await;
    assert_eq!(deployment.finish(&run_id).await, RunState::Succeeded);
    let took = started.elapsed();
    assert!(took < poll / 2, "the run took {took:?}, as if the leader had waited for its poll of {poll:?}");
    assert_eq!(output_lines(&deployment.dir.path().join("out")), 2 * PARALLELISM);
    deployment.shutdown.cancel();
    assert!(working.await.unwrap().unwrap(), "the worker drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shards_of_a_job_with_a_worker_label_run_only_on_workers_carrying_it() {
    let deployment = Deployment::start(8, QUICK_POLL).await;
    let plain = deployment.worker("plain", &["eu"]);
    let run_id = deployment.trigger("worker_label = \"gpu\"").await;

    // Offered, but to no worker of the deployment: nothing is claimed.
    let platform = &deployment.platform;
    wait_until("the first offers", || platform.dispatch_load().busy == PARALLELISM).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shards = deployment.store.shards(&run_id).await.unwrap();
    assert!(shards.iter().all(|shard| shard.owner.is_none() && shard.epoch == 0), "{shards:?}");

    let gpu = deployment.worker("gpu", &["gpu"]);
    assert_eq!(deployment.finish(&run_id).await, RunState::Succeeded);
    let shards = deployment.store.shards(&run_id).await.unwrap();
    assert!(shards.iter().all(|shard| shard.owner.as_deref() == Some("gpu")), "{shards:?}");
    assert_eq!(output_lines(&deployment.dir.path().join("out")), 8);
    deployment.shutdown.cancel();
    assert!(plain.await.unwrap().unwrap() && gpu.await.unwrap().unwrap(), "the workers drained");
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..250 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not after 5 s");
}

fn output_lines(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap().lines().count())
        .sum()
}
