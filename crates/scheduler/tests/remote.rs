//! A run that workers execute (the distributed mode), in one process: the
//! scheduler offers the shards through the in-process dispatcher and a
//! worker agent on the same store runs them. The run holds no more slots,
//! and keeps no more shards waiting for one, than its job's parallelism;
//! the next shards are offered as the previous ones finish.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_run_holds_no_more_than_its_parallelism_and_finishes_on_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    for file in 0..FILES {
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
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
        remote_poll: Duration::from_millis(20),
        ..Default::default()
    };
    let platform =
        Platform::new(store.clone(), plugins.clone(), Arc::new(SystemClock), config, shutdown.clone()).await.unwrap();
    let _scheduler = platform.spawn_loop();
    let spec = format!(
        "name = \"files\"\nparallelism = {PARALLELISM}\n\n[source]\ntype = \"file\"\npath = \"{}/in/*.jsonl\"\n\n\
         [sink]\ntype = \"file\"\npath = \"{}/out\"\nformat = \"jsonl\"\n",
        dir.path().display(),
        dir.path().display()
    );
    platform.apply_job(&spec, SpecFormat::Toml).await.unwrap();
    let run = platform.trigger("files", TriggerRequest::default()).await.unwrap();

    // No worker yet: the run offers as many shards as its parallelism and
    // keeps no other shard waiting for a slot.
    wait_until("the first offers", || platform.dispatch_load().busy == PARALLELISM).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let load = platform.dispatch_load();
    assert_eq!((load.busy, load.waiting), (PARALLELISM, 0), "{load:?}");

    let worker = Worker::new(
        store.clone(),
        plugins,
        dispatcher,
        WorkerConfig {
            id: "worker-1".into(),
            pools: vec!["default".into()],
            slots: 2,
            lease_ttl: Duration::from_secs(15),
            state_dir: dir.path().join("worker"),
            limiter: Arc::new(InProcessLimiter::new()),
            rate_limits: watch::channel(RateLimitOverrides::new()).1,
        },
    );
    let working = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown, Duration::from_secs(5)).await }
    });
    let mut state = RunState::Running;
    for _ in 0..500 {
        state = store.run_status(&run.id).await.unwrap().state;
        if state != RunState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, RunState::Succeeded);
    let shards = store.shards(&run.id).await.unwrap();
    assert_eq!(shards.len(), FILES);
    assert!(shards.iter().all(|shard| shard.owner.as_deref() == Some("worker-1")), "{shards:?}");
    assert_eq!(output_lines(&dir.path().join("out")), FILES);
    shutdown.cancel();
    assert!(working.await.unwrap().unwrap(), "the worker drained");
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
