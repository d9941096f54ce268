//! A haul cluster of real processes for tests: `haul server`s and `haul
//! worker`s on a store database of their own (MariaDB or PostgreSQL), a
//! ZooKeeper chroot of their own, RabbitMQ queues under a prefix of their
//! own and Redis keys under a prefix of their own — all on the services of
//! 127.0.0.1 unless a test gives private ones. Jobs read and write files
//! under the cluster's folder, which every process shares. When the cluster
//! drops, its ZooKeeper chroot goes, and so do the queues of the placements
//! its workers served.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haul_register::dispatch::{Placement, RabbitDispatcher};
use haul_register::testing::{Backend, TestDatabase, ZOOKEEPER, delete_rabbit_queues, remove_zookeeper_tree};

use super::server::{Server, spawn_haul};

const WORKER_READY: &str = "haul worker ";
/// The ZooKeeper session timeout of every process: how soon a dead leader's
/// successor takes over.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// The lease ttl of every process: how soon a dead worker's shard is offered again.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How long a stopping worker waits for its shards to checkpoint and release.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The processes sharing the rate limits: while Redis is unreachable, each
/// allows itself this fraction of every limit.
pub const EXPECTED_WORKERS: u32 = 3;

/// The services a cluster runs on.
pub struct Services {
    pub store: String,
    pub amqp: String,
    pub redis: String,
}

impl Services {
    /// The store at `store`, and the RabbitMQ and Redis of 127.0.0.1; a test
    /// replaces those it runs privately.
    pub fn shared(store: &str) -> Services {
        Services {
            store: store.to_string(),
            amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            redis: "redis://127.0.0.1:6379/0".to_string(),
        }
    }
}

/// A cluster's shared services and folder; its processes are started by the test.
pub struct Cluster {
    /// The store's database, dropped with the cluster; none when the test
    /// runs the store's server itself.
    database: Option<TestDatabase>,
    pub services: Services,
    pub chroot: String,
    pub prefix: String,
    /// The RabbitMQ queues the cluster's workers took shards from, deleted on drop.
    queues: Mutex<Vec<String>>,
    dir: tempfile::TempDir,
}

/// A `haul worker` process; dropping it kills the process.
pub struct WorkerProcess {
    pub child: Child,
    pub name: String,
    logs: Arc<Mutex<String>>,
}

impl Cluster {
    /// A cluster on the shared services, its store on `backend`.
    pub async fn new(backend: Backend) -> Cluster {
        let database = TestDatabase::create(backend).await;
        let services = Services::shared(database.url());
        Cluster::with_services(Some(database), services)
    }

    /// A cluster on `services`, keeping `database` (if any) for as long as it lives.
    pub fn with_services(database: Option<TestDatabase>, services: Services) -> Cluster {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let prefix = format!("haul-test-{id}");
        Cluster {
            database,
            services,
            chroot: format!("/haul-test-{id}"),
            // the default pool's, which the leader publishes into
            queues: Mutex::new(vec![RabbitDispatcher::queue_name_under(
                &prefix,
                &Placement { pool: haul_collect_core::job::DEFAULT_POOL.to_string(), label: None },
            )]),
            prefix,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The cluster's folder, shared by every process, for jobs' files.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// The tables every process shares.
    fn shared_tables(&self) -> String {
        let Services { amqp, redis, .. } = &self.services;
        let session = SESSION_TIMEOUT.as_millis();
        format!(
            "[dispatch]\nurl = \"{amqp}\"\nprefix = \"{prefix}\"\n\n\
             [registry]\nurl = \"zk://{ZOOKEEPER}{chroot}?session_timeout={session}ms\"\n\n\
             [limiter]\nurl = \"{redis}\"\nprefix = \"{prefix}\"\nexpected_workers = {EXPECTED_WORKERS}\n",
            prefix = self.prefix,
            chroot = self.chroot,
        )
    }

    /// Starts a server named `name` with `slots` embedded worker slots (0: none).
    pub fn server(&self, name: &str, slots: usize) -> Server {
        self.server_with(name, slots, "")
    }

    /// Starts a server like [`Cluster::server`], with the `scheduler` lines
    /// added to its `[scheduler]` table.
    pub fn server_with(&self, name: &str, slots: usize, scheduler: &str) -> Server {
        let dir = self.path(name);
        let ttl = LEASE_TTL.as_millis();
        let grace = SHUTDOWN_GRACE.as_millis();
        let config = format!(
            "store = \"{}\"\nshutdown_grace = \"{grace}ms\"\n\n[scheduler]\ntick = \"200ms\"\nlease_ttl = \"{ttl}ms\"\n{scheduler}\n\n{}",
            self.services.store,
            self.shared_tables()
        );
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.toml"), config).unwrap();
        Server::start_in(&dir, slots)
    }

    /// Starts a worker named `name` with `slots` slots on `pools`.
    pub fn worker(&self, name: &str, slots: usize, pools: &[&str]) -> WorkerProcess {
        self.labelled_worker(name, slots, pools, &[])
    }

    /// Starts a worker like [`Cluster::worker`], carrying the worker `labels`.
    pub fn labelled_worker(&self, name: &str, slots: usize, pools: &[&str], labels: &[&str]) -> WorkerProcess {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let owned = |names: &[&str]| names.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        self.queues.lock().unwrap().extend(
            Placement::served_by(&owned(pools), &owned(labels))
                .iter()
                .map(|placement| RabbitDispatcher::queue_name_under(&self.prefix, placement)),
        );
        let (ttl, grace) = (LEASE_TTL.as_millis(), SHUTDOWN_GRACE.as_millis());
        let list = |names: &[&str]| names.iter().map(|name| format!("\"{name}\"")).collect::<Vec<_>>().join(", ");
        let (pools, labels) = (list(pools), list(labels));
        let config = format!(
            "id = \"{name}\"\nstore = \"{}\"\nslots = {slots}\npools = [{pools}]\nlabels = [{labels}]\n\
             lease_ttl = \"{ttl}ms\"\nstate_dir = \"{}\"\nshutdown_grace = \"{grace}ms\"\n\n{}",
            self.services.store,
            dir.join("state").display(),
            self.shared_tables()
        );
        std::fs::write(dir.join("worker.toml"), config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_haul"));
        command.args(["-v", "worker", "--config"]).arg(dir.join("worker.toml"));
        let (child, _, logs) = spawn_haul(command, &dir, WORKER_READY);
        WorkerProcess { child, name: name.to_string(), logs }
    }
}

impl Drop for Cluster {
    /// Removes the cluster's ZooKeeper chroot and its workers' queues (the
    /// database goes with its own drop).
    fn drop(&mut self) {
        let chroot = self.chroot.clone();
        let amqp = self.services.amqp.clone();
        let queues = std::mem::take(&mut *self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        // Drop may run inside a runtime: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                remove_zookeeper_tree(&chroot).await;
                delete_rabbit_queues(&amqp, &queues).await;
            });
        })
        .join();
    }
}

impl WorkerProcess {
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends `signal` to the worker (SIGKILL, SIGSTOP, SIGCONT, SIGTERM).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for the process to exit after a signal.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "worker {} still running after {limit:?}:\n{}", self.name, self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `condition` holds, polling; panics with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A job that copies the CSV files under `in/<name>/` of `dir` to JSON Lines
/// parts in `out/<name>/`, one shard per file, slowed down to
/// `records_per_second` overall.
pub fn slow_files_job(dir: &Path, name: &str, records_per_second: u32) -> String {
    format!(
        "name = \"{name}\"\nparallelism = 8\nbatch_size = 10\ncheckpoint_interval = \"100ms\"\n\n\
         [rate_limit]\nrecords_per_second = {records_per_second}\n\n\
         [source]\ntype = \"file\"\npath = \"{}/in/{name}/*.csv\"\n\n\
         [sink]\ntype = \"file\"\npath = \"{}/out/{name}\"\nformat = \"jsonl\"\n",
        dir.display(),
        dir.display()
    )
}
