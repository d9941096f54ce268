//! The config tables a server and a worker share to join one deployment:
//! `[limiter]` (Redis), `[registry]` (ZooKeeper) and `[dispatch]`
//! (RabbitMQ), each naming its service by URL, plus what follows the
//! registry: the live workers' capacity, and a worker's registry entry.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use haul_common::duration::HumanDuration;
use haul_register::dispatch::{Dispatcher, RabbitDispatcher};
use haul_register::limiter::{Limiter, LimiterOptions};
use haul_register::redis_link::RedisOptions;
use haul_register::registry::{Membership, Registry, WorkerInfo};
use serde::Deserialize;
use tokio::sync::watch;

/// The `[limiter]` table: `url = "redis://HOST:PORT/DB"` shares the limits
/// between servers and workers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimiterFile {
    pub url: Option<String>,
    /// Prepended to the limiter's keys in Redis.
    pub prefix: String,
    /// The processes sharing the limits: while Redis is unreachable, each
    /// allows itself this fraction of every limit.
    pub expected_workers: NonZeroU32,
}

impl Default for LimiterFile {
    fn default() -> Self {
        let defaults = LimiterOptions::default();
        LimiterFile { url: None, prefix: defaults.redis.prefix, expected_workers: defaults.expected_workers }
    }
}

impl LimiterFile {
    pub fn open(&self) -> anyhow::Result<Arc<dyn Limiter>> {
        let options = LimiterOptions {
            redis: RedisOptions { prefix: self.prefix.clone(), ..RedisOptions::default() },
            expected_workers: self.expected_workers,
        };
        // the url may hold a password: it stays out of the message
        haul_register::limiter::open(self.url.as_deref(), &options).context("opening the rate limiter")
    }
}

/// The `[registry]` table: `url = "zk://HOST:PORT/CHROOT"` for a cluster's
/// membership, leader election and config centre; `memory://` (the
/// default) keeps them in process.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryFile {
    pub url: String,
}

impl Default for RegistryFile {
    fn default() -> Self {
        RegistryFile { url: "memory://".to_string() }
    }
}

impl RegistryFile {
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Registry>> {
        haul_register::registry::open(&self.url).await.context("opening the registry")
    }
}

/// The `[dispatch]` table: `url = "amqp://USER:PASSWORD@HOST:PORT/VHOST"`
/// puts a server in the distributed mode, where workers run the shards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchFile {
    pub url: Option<String>,
    /// Prepended to the queue names: `PREFIX.shards.POOL`.
    pub prefix: String,
    /// Shards offered per live worker slot: above 1, each worker has the
    /// next shards waiting in its queue as it finishes one.
    pub depth: NonZeroU32,
    /// How often the leading server looks at the shards of the runs the
    /// workers run, to see those that finished and offer the next ones in
    /// their slots (servers only).
    pub poll: HumanDuration,
}

impl Default for DispatchFile {
    fn default() -> Self {
        DispatchFile {
            url: None,
            prefix: "haul".to_string(),
            depth: NonZeroU32::new(2).expect("2 is not zero"),
            poll: HumanDuration(haul_scheduler::service::ServiceConfig::default().remote_poll),
        }
    }
}

impl DispatchFile {
    /// Connects to the broker, when there is one.
    pub async fn connect(&self) -> anyhow::Result<Option<Arc<dyn Dispatcher>>> {
        let Some(url) = &self.url else { return Ok(None) };
        // the url may hold a password: it stays out of the message
        let dispatcher = RabbitDispatcher::connect(url, &self.prefix).await.context("connecting to the broker")?;
        Ok(Some(Arc::new(dispatcher)))
    }
}

/// The shards the live workers may hold at once: their capacity times
/// `depth`, kept current as workers join, leave or die.
pub async fn watch_capacity(registry: &dyn Registry, depth: NonZeroU32) -> anyhow::Result<watch::Receiver<usize>> {
    let mut members = registry.members().await.context("watching the workers")?;
    let capacity_of = move |members: &[WorkerInfo]| {
        members.iter().map(|member| member.capacity as usize).sum::<usize>() * depth.get() as usize
    };
    let (capacity, receiver) = watch::channel(capacity_of(&members.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = capacity.closed() => return,
                changed = members.changed() => if changed.is_err() { return },
            }
            let workers = members.borrow_and_update().clone();
            let total = capacity_of(&workers);
            // Loads change often; only a change of capacity is news.
            if capacity.send_if_modified(|current| std::mem::replace(current, total) != total) {
                tracing::info!(workers = workers.len(), capacity = total, "the workers' capacity changed");
            }
        }
    });
    Ok(receiver)
}

/// The least time between two publications of a worker's load. A busy
/// worker's load changes with every shard it starts or ends, and each
/// publication is a registry write that every scheduler watching the members
/// hears of; the load shown is at most this old.
const LOAD_PUBLICATION_INTERVAL: Duration = Duration::from_millis(500);

/// Lists a worker in the registry, publishing its load as it changes (the
/// latest value, at most once per [`LOAD_PUBLICATION_INTERVAL`]), until the
/// returned membership is left or dropped.
pub async fn join(
    registry: &dyn Registry,
    worker: WorkerInfo,
    mut load: watch::Receiver<u32>,
) -> anyhow::Result<Arc<Membership>> {
    let id = worker.id.clone();
    let membership = Arc::new(registry.join(worker).await.with_context(|| format!("joining as worker {id}"))?);
    let publishing = Arc::downgrade(&membership);
    tokio::spawn(async move {
        while load.changed().await.is_ok() {
            let Some(membership) = publishing.upgrade() else { return };
            membership.update_load(*load.borrow_and_update());
            drop(membership);
            tokio::time::sleep(LOAD_PUBLICATION_INTERVAL).await;
        }
    });
    Ok(membership)
}
