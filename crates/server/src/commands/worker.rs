//! `haul worker --config worker.toml`: a worker process of a distributed
//! deployment. It joins the registry with its capacity, labels and load,
//! takes the shards of its pools from the broker — those of jobs without a
//! `worker_label`, and those of jobs whose `worker_label` is one of its
//! `labels` — runs them under leases in
//! the shared store, and follows the config centre's rate limits. SIGINT or
//! SIGTERM drains it: it takes nothing new, and its running shards commit,
//! checkpoint and release their leases at their next batch boundary, within
//! `shutdown_grace`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use haul_collect_core::flow::RateLimitSpec;
use haul_common::duration::HumanDuration;
use haul_common::shutdown;
use haul_register::registry::WorkerInfo;
use haul_scheduler::worker::{Worker, WorkerConfig};
use serde::Deserialize;

use crate::commands::config_centre;
use crate::commands::deployment::{self, DispatchFile, LimiterFile, RegistryFile};
use crate::job_loader;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The worker config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// The worker config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerFile {
    /// Unique among the live workers; `worker@HOST:PID` by default.
    id: Option<String>,
    /// The store URL, shared with the servers (`mysql://…`, `postgres://…`).
    store: String,
    /// Shards that run at once.
    #[serde(default = "default_slots")]
    slots: usize,
    /// The pools (worker groups) whose shards this worker takes.
    #[serde(default = "default_pools")]
    pools: Vec<String>,
    /// The worker labels it carries (`["gpu", "eu"]`): it also takes the
    /// shards of its pools' jobs whose `worker_label` is one of them.
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default = "default_lease_ttl")]
    lease_ttl: HumanDuration,
    /// Where default dead-letter files go.
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    /// How long a stopping worker waits for its shards to checkpoint.
    #[serde(default = "default_grace")]
    shutdown_grace: HumanDuration,
    /// Rate limits by scope, as in the server config; the config centre's
    /// `rate_limits` document overrides them live.
    #[serde(default)]
    rate_limits: BTreeMap<String, RateLimitSpec>,
    dispatch: DispatchFile,
    registry: RegistryFile,
    #[serde(default)]
    limiter: LimiterFile,
}

impl WorkerFile {
    /// Checks what serde cannot: at least one pool, and pools and labels fit for queue names.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.pools.is_empty(), "`pools` must name at least one pool");
        for pool in &self.pools {
            haul_collect_core::job::check_pool(pool).map_err(|message| anyhow::anyhow!("`pools`: {message}"))?;
        }
        for label in &self.labels {
            haul_collect_core::job::check_worker_label(label)
                .map_err(|message| anyhow::anyhow!("`labels`: {message}"))?;
        }
        Ok(())
    }

    /// What the registry shows of the worker besides its capacity and load:
    /// its `pools` and, if any, its `labels`, each comma-separated.
    fn registry_labels(&self) -> BTreeMap<String, String> {
        let mut shown = BTreeMap::from([("pools".to_string(), self.pools.join(","))]);
        if !self.labels.is_empty() {
            shown.insert("labels".to_string(), self.labels.join(","));
        }
        shown
    }
}

fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 2)
}

fn default_pools() -> Vec<String> {
    vec![haul_collect_core::job::DEFAULT_POOL.to_string()]
}

fn default_lease_ttl() -> HumanDuration {
    HumanDuration(haul_scheduler::service::ServiceConfig::default().lease_ttl)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".haul-worker")
}

fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let file: WorkerFile = super::config_file::read(Some(&args.config))?;
    file.check()?;
    let id = file.id.clone().unwrap_or_else(default_id);
    let store = haul_register::store::open(&file.store)
        .await
        .with_context(|| format!("opening the store {}", haul_register::store::redacted(&file.store)))?;
    let dispatcher = file.dispatch.connect().await?.context("a worker needs `[dispatch] url`")?;
    let registry = file.registry.open().await?;
    let rate_limits = config_centre::watch_rate_limits(registry.as_ref(), file.rate_limits.clone())
        .await
        .context("watching the config centre's rate_limits document")?;
    let config = WorkerConfig {
        id: id.clone(),
        pools: file.pools.clone(),
        labels: file.labels.clone(),
        slots: file.slots.max(1),
        lease_ttl: file.lease_ttl.0,
        state_dir: file.state_dir.clone(),
        limiter: file.limiter.open()?,
        rate_limits,
    };
    let worker = Worker::new(store, Arc::new(job_loader::builtin_registry()), dispatcher, config);
    let info =
        WorkerInfo { id: id.clone(), capacity: file.slots.max(1) as u32, labels: file.registry_labels(), load: 0 };
    let membership = deployment::join(registry.as_ref(), info, worker.load()).await?;

    let stop = shutdown::on_signal();
    let labels = if file.labels.is_empty() { String::new() } else { format!(", labels {}", file.labels.join(", ")) };
    eprintln!(
        "haul worker {id} taking the shards of pools {}{labels} ({} slots)",
        file.pools.join(", "),
        file.slots.max(1)
    );
    let drained = worker.run(stop, file.shutdown_grace.0).await?;
    if !drained {
        eprintln!("some shards did not stop within {}; their leases will expire", file.shutdown_grace);
    }
    drop(membership);
    registry.close().await;
    Ok(ExitCode::SUCCESS)
}

fn default_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into());
    format!("worker@{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_file(extra: &str) -> WorkerFile {
        let text = format!("store = \"mysql://db/haul\"\n{extra}\n[dispatch]\n[registry]\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn a_worker_carries_the_labels_it_lists_and_shows_them_in_the_registry() {
        let file = worker_file("pools = [\"default\", \"etl\"]\nlabels = [\"gpu\", \"eu\"]");
        file.check().unwrap();
        assert_eq!(file.labels, ["gpu", "eu"]);
        let shown = file.registry_labels();
        assert_eq!((shown["pools"].as_str(), shown["labels"].as_str()), ("default,etl", "gpu,eu"));

        let unlabelled = worker_file("");
        unlabelled.check().unwrap();
        assert!(unlabelled.labels.is_empty());
        assert_eq!(unlabelled.registry_labels(), BTreeMap::from([("pools".to_string(), "default".to_string())]));
    }

    #[test]
    fn a_worker_label_must_fit_a_queue_name_and_a_worker_needs_a_pool() {
        let error = worker_file("labels = [\"gpu.big\"]").check().unwrap_err().to_string();
        assert!(error.starts_with("`labels`: "), "{error}");
        assert!(worker_file("labels = [\"\"]").check().is_err());
        assert!(worker_file("pools = []").check().is_err());
    }
}
