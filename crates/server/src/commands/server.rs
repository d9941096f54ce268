//! `haul server`: the platform on one machine — the scheduler, the REST API
//! under `/api/v1` (with `/metrics`, `/healthz` and `/readyz`) and embedded
//! worker slots, with its state in one SQLite file by default.
//!
//! With `[dispatch] url` (RabbitMQ) and `[registry] url` (ZooKeeper) on a
//! shared MySQL or PostgreSQL store, servers form a cluster: they elect one
//! leader, which alone schedules and offers shards to the workers (`haul
//! worker`, and each server's own slots, if any); the others serve the API
//! and take over if the leader goes.
//!
//! Restart-safe: runs live in the store with their checkpoints; a restarted
//! server takes back its own leases at once and resumes its running runs.
//! SIGINT or SIGTERM drains: shards commit, checkpoint and release at their
//! next batch boundary, and the runs resume at the next start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use haul_collect_core::flow::RateLimitSpec;
use haul_common::clock::SystemClock;
use haul_common::duration::HumanDuration;
use haul_common::shutdown;
use haul_register::registry::WorkerInfo;
use haul_scheduler::service::{Platform, ServiceConfig};
use haul_scheduler::worker::{Worker, WorkerConfig};
use serde::Deserialize;

use crate::commands::deployment::{self, DispatchFile, LimiterFile, RegistryFile};
use crate::commands::{config_centre, config_file};
use crate::{api, job_loader};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// A server config file (TOML); flags override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the API listens; port 0 picks a free port.
    #[arg(long, env = "HAUL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the server keeps its state (`server.db`, dead letters).
    #[arg(long, env = "HAUL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Shards that run at once in this process.
    #[arg(long)]
    pub slots: Option<usize>,
}

/// The server config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    /// The store URL; `sqlite://<state_dir>/server.db` by default.
    store: Option<String>,
    #[serde(default = "default_slots")]
    slots: usize,
    /// The most shards each pool runs at once: `[pools] api = 2`.
    #[serde(default)]
    pools: BTreeMap<String, usize>,
    #[serde(default)]
    scheduler: SchedulerFile,
    /// Rate limits by scope (`global`, `pool:NAME`, `job:NAME`,
    /// `endpoint:HOST:PORT`); the config centre's `rate_limits` document
    /// overrides them live.
    #[serde(default)]
    rate_limits: BTreeMap<String, RateLimitSpec>,
    /// Where the jobs' `[rate_limit]`s are kept: in process by default.
    #[serde(default)]
    limiter: LimiterFile,
    /// The registry: the config centre (its `pools` document overrides
    /// `[pools]` live) and, in the distributed mode, the workers and the
    /// scheduler's leader election.
    #[serde(default)]
    registry: RegistryFile,
    /// The broker: with a `url`, the distributed mode (see the module docs).
    #[serde(default)]
    dispatch: DispatchFile,
    /// How long a stopping server waits for its shards to checkpoint.
    #[serde(default = "default_grace")]
    shutdown_grace: HumanDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SchedulerFile {
    tick: HumanDuration,
    misfire_grace: HumanDuration,
    aging_step: HumanDuration,
    lease_ttl: HumanDuration,
    /// Distributed mode: how long a shard runs at least before it may be split as a straggler.
    straggler_after: HumanDuration,
}

impl Default for SchedulerFile {
    fn default() -> Self {
        let defaults = ServiceConfig::default();
        SchedulerFile {
            tick: HumanDuration(defaults.tick),
            misfire_grace: HumanDuration(defaults.misfire_grace),
            aging_step: HumanDuration(defaults.aging_step),
            lease_ttl: HumanDuration(defaults.lease_ttl),
            straggler_after: HumanDuration(defaults.straggler_after),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".haul")
}

fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 2)
}

fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let mut file: ServerFile = config_file::read(args.config.as_deref())?;
    file.listen = args.listen.unwrap_or(file.listen);
    file.state_dir = args.state_dir.unwrap_or(file.state_dir);
    let distributed = file.dispatch.url.is_some();
    anyhow::ensure!(!file.dispatch.poll.0.is_zero(), "`[dispatch] poll` must be above zero");
    for pool in file.pools.keys() {
        haul_collect_core::job::check_pool(pool).map_err(|message| anyhow::anyhow!("`[pools]`: {message}"))?;
    }
    // A server of a cluster may leave the shards to the workers.
    file.slots = args.slots.unwrap_or(file.slots).max(usize::from(!distributed));
    let store_url =
        file.store.clone().unwrap_or_else(|| format!("sqlite://{}", file.state_dir.join("server.db").display()));
    let store = haul_register::store::open(&store_url)
        .await
        .with_context(|| format!("opening the store {}", haul_register::store::redacted(&store_url)))?;

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(file.listen)
        .await
        .with_context(|| format!("cannot listen on {}", file.listen))?;
    let address = listener.local_addr()?;
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into());
    let owner = format!("server@{host}:{}", address.port());
    let registry = file.registry.open().await?;
    let rate_limits = config_centre::watch_rate_limits(registry.as_ref(), file.rate_limits.clone())
        .await
        .context("watching the config centre's rate_limits document")?;
    let remote_workers = file.dispatch.connect().await?;
    let leadership = match &remote_workers {
        Some(_) => Some(registry.campaign(&owner).await.context("entering the scheduler election")?),
        None => None,
    };
    let config = ServiceConfig {
        slots: file.slots,
        pools: file.pools.clone(),
        tick: file.scheduler.tick.0,
        misfire_grace: file.scheduler.misfire_grace.0,
        aging_step: file.scheduler.aging_step.0,
        lease_ttl: file.scheduler.lease_ttl.0,
        straggler_after: file.scheduler.straggler_after.0,
        state_dir: file.state_dir.clone(),
        owner: owner.clone(),
        limiter: file.limiter.open()?,
        rate_limits: rate_limits.clone(),
        remote_workers: remote_workers.clone(),
        remote_poll: file.dispatch.poll.0,
        leading: leadership.as_ref().map_or_else(|| tokio::sync::watch::channel(true).1, |l| l.watch()),
    };
    let stop = shutdown::on_signal();
    let plugins = Arc::new(job_loader::builtin_registry());
    let platform =
        Platform::new(store.clone(), plugins.clone(), Arc::new(SystemClock), config.clone(), stop.clone()).await?;
    let scheduler = platform.spawn_loop();
    let pool_limits = config_centre::watch_pool_limits(registry.as_ref(), file.pools.clone())
        .await
        .context("watching the config centre's pools document")?;
    platform.follow_pool_limits(pool_limits);
    let mut embedded_worker = None;
    if let Some(dispatcher) = remote_workers {
        platform.follow_capacity(deployment::watch_capacity(registry.as_ref(), file.dispatch.depth).await?);
        platform.step_down_on_lost_leadership();
        platform.follow_doorbell(dispatcher.clone());
        if file.slots > 0 {
            let worker = Worker::new(store, plugins, dispatcher, worker_config(&file, &config));
            let membership = deployment::join(registry.as_ref(), worker_info(&file, &owner), worker.load()).await?;
            let (grace, stop) = (file.shutdown_grace.0, stop.clone());
            let running = tokio::spawn(async move { worker.run(stop, grace).await });
            embedded_worker = Some((running, membership));
        }
    }

    eprintln!(
        "haul server listening on http://{address} (state in {}{})",
        file.state_dir.display(),
        if distributed { ", distributed" } else { "" }
    );
    let app = api::router(platform.clone(), metrics);
    let serving = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    serving.await.context("serving the API")?;

    eprintln!("stopping: shards checkpoint and release at their next batch boundary");
    let drained = match embedded_worker {
        Some((running, _membership)) => matches!(running.await, Ok(Ok(true))),
        None => platform.drain(file.shutdown_grace.0).await,
    };
    if !drained {
        eprintln!("some shards did not stop within {}; their leases will expire", file.shutdown_grace);
    }
    scheduler.abort();
    drop(leadership);
    registry.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The embedded worker of a server in the distributed mode: its slots, on
/// the default pool and every pool of `[pools]`, carrying no worker label.
fn worker_config(file: &ServerFile, service: &ServiceConfig) -> WorkerConfig {
    let mut pools = vec![haul_collect_core::job::DEFAULT_POOL.to_string()];
    pools.extend(file.pools.keys().filter(|pool| *pool != haul_collect_core::job::DEFAULT_POOL).cloned());
    WorkerConfig {
        id: service.owner.clone(),
        pools,
        labels: Vec::new(),
        slots: file.slots,
        lease_ttl: service.lease_ttl,
        state_dir: file.state_dir.clone(),
        limiter: service.limiter.clone(),
        rate_limits: service.rate_limits.clone(),
    }
}

fn worker_info(file: &ServerFile, owner: &str) -> WorkerInfo {
    WorkerInfo { id: owner.to_string(), capacity: file.slots as u32, labels: BTreeMap::new(), load: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter_of(config: &str) -> anyhow::Result<String> {
        let file: ServerFile = toml::from_str(config)?;
        Ok(format!("{:?}", file.limiter.open()?))
    }

    #[test]
    fn the_dispatch_table_sets_how_often_the_leader_looks_at_remote_runs() {
        let file: ServerFile = toml::from_str("[dispatch]\npoll = \"50ms\"").unwrap();
        assert_eq!(file.dispatch.poll.0, Duration::from_millis(50));
        let file: ServerFile = toml::from_str("").unwrap();
        assert_eq!(file.dispatch.poll.0, ServiceConfig::default().remote_poll);
    }

    #[tokio::test]
    async fn the_limiter_table_chooses_the_backend() {
        assert!(limiter_of("").unwrap().starts_with("InProcessLimiter"));
        let redis = "[limiter]\nurl = \"redis://127.0.0.1:6379/0\"\nprefix = \"site\"\nexpected_workers = 8";
        assert!(limiter_of(redis).unwrap().starts_with("RedisLimiter"));
        let error = limiter_of("[limiter]\nurl = \"zk://:secret@127.0.0.1\"").unwrap_err();
        assert!(!format!("{error:#}").contains("secret"), "{error:#}");
        assert!(limiter_of("[limiter]\nexpected_workers = 0").is_err());
    }
}
