//! `haul server`: the platform on one machine — the scheduler, the REST API
//! under `/api/v1` (with `/metrics`, `/healthz` and `/readyz`) and embedded
//! worker slots, with its state in one SQLite file by default.
//!
//! Restart-safe: runs live in the store with their checkpoints; a restarted
//! server takes back its own leases at once and resumes its running runs.
//! SIGINT or SIGTERM drains: shards commit, checkpoint and release at their
//! next batch boundary, and the runs resume at the next start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use haul_common::clock::SystemClock;
use haul_common::duration::HumanDuration;
use haul_common::shutdown;
use haul_register::limiter::{Limiter, LimiterOptions};
use haul_register::redis_link::RedisOptions;
use haul_scheduler::service::{Platform, ServiceConfig};
use serde::Deserialize;

use crate::commands::config_centre;
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
    /// Where the jobs' `[rate_limit]`s are kept: in process by default.
    #[serde(default)]
    limiter: LimiterFile,
    /// The config centre: its `pools` document overrides `[pools]` live.
    #[serde(default)]
    registry: RegistryFile,
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
}

impl Default for SchedulerFile {
    fn default() -> Self {
        let defaults = ServiceConfig::default();
        SchedulerFile {
            tick: HumanDuration(defaults.tick),
            misfire_grace: HumanDuration(defaults.misfire_grace),
            aging_step: HumanDuration(defaults.aging_step),
            lease_ttl: HumanDuration(defaults.lease_ttl),
        }
    }
}

/// The `[limiter]` table: `url = "redis://HOST:PORT/DB"` shares the limits
/// between servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimiterFile {
    url: Option<String>,
    /// Prepended to the limiter's keys in Redis.
    prefix: String,
    /// The servers sharing the limits: while Redis is unreachable, each
    /// allows itself this fraction of every limit.
    expected_workers: NonZeroU32,
}

impl Default for LimiterFile {
    fn default() -> Self {
        let defaults = LimiterOptions::default();
        LimiterFile { url: None, prefix: defaults.redis.prefix, expected_workers: defaults.expected_workers }
    }
}

impl LimiterFile {
    fn open(&self) -> anyhow::Result<Arc<dyn Limiter>> {
        let options = LimiterOptions {
            redis: RedisOptions { prefix: self.prefix.clone(), ..RedisOptions::default() },
            expected_workers: self.expected_workers,
        };
        // the url may hold a password: it stays out of the message
        haul_register::limiter::open(self.url.as_deref(), &options).context("opening the rate limiter")
    }
}

/// The `[registry]` table: `url = "zk://HOST:PORT/CHROOT"` shares the config
/// centre between servers; `memory://` (the default) keeps it in process.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RegistryFile {
    url: String,
}

impl Default for RegistryFile {
    fn default() -> Self {
        RegistryFile { url: "memory://".to_string() }
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

impl ServerFile {
    fn read(path: Option<&Path>) -> anyhow::Result<ServerFile> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the server config {}", path.display()))?,
            None => String::new(),
        };
        let origin = path.map_or_else(|| "server config".to_string(), |p| p.display().to_string());
        toml::from_str(&text).map_err(|error| {
            let location = error.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                format!(":{}", before.matches('\n').count() + 1)
            });
            anyhow::anyhow!("{origin}{}: {}", location.unwrap_or_default(), error.message().trim_end())
        })
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let mut file = ServerFile::read(args.config.as_deref())?;
    file.listen = args.listen.unwrap_or(file.listen);
    file.state_dir = args.state_dir.unwrap_or(file.state_dir);
    file.slots = args.slots.unwrap_or(file.slots).max(1);
    let store_url =
        file.store.clone().unwrap_or_else(|| format!("sqlite://{}", file.state_dir.join("server.db").display()));
    let store = haul_register::store::open(&store_url)
        .await
        .with_context(|| format!("opening the store {}", haul_register::store::redacted(&store_url)))?;

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into());
    let config_registry =
        haul_register::registry::open(&file.registry.url).await.context("opening the registry (config centre)")?;
    let rate_limits = config_centre::watch_rate_limits(config_registry.as_ref())
        .await
        .context("watching the config centre's rate_limits document")?;
    let config = ServiceConfig {
        slots: file.slots,
        pools: file.pools.clone(),
        tick: file.scheduler.tick.0,
        misfire_grace: file.scheduler.misfire_grace.0,
        aging_step: file.scheduler.aging_step.0,
        lease_ttl: file.scheduler.lease_ttl.0,
        state_dir: file.state_dir.clone(),
        owner: format!("server@{host}:{}", file.listen.port()),
        limiter: file.limiter.open()?,
        rate_limits,
    };
    let stop = shutdown::on_signal();
    let registry = Arc::new(job_loader::builtin_registry());
    let platform = Platform::new(store, registry, Arc::new(SystemClock), config, stop.clone()).await?;
    let scheduler = platform.spawn_loop();
    let pool_limits = config_centre::watch_pool_limits(config_registry.as_ref(), file.pools)
        .await
        .context("watching the config centre's pools document")?;
    platform.follow_pool_limits(pool_limits);

    let listener = tokio::net::TcpListener::bind(file.listen)
        .await
        .with_context(|| format!("cannot listen on {}", file.listen))?;
    let address = listener.local_addr()?;
    eprintln!("haul server listening on http://{address} (state in {})", file.state_dir.display());
    let app = api::router(platform.clone(), metrics);
    let serving = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    serving.await.context("serving the API")?;

    eprintln!("stopping: shards checkpoint and release at their next batch boundary");
    if !platform.drain(file.shutdown_grace.0).await {
        eprintln!("some shards did not stop within {}; their leases will expire", file.shutdown_grace);
    }
    scheduler.abort();
    config_registry.close().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter_of(config: &str) -> anyhow::Result<String> {
        let file: ServerFile = toml::from_str(config)?;
        Ok(format!("{:?}", file.limiter.open()?))
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
