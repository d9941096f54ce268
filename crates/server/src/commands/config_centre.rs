//! The server's side of the config centre: per-name documents in the registry
//! that override the config files live, for the names they list.
//! - `pools` (`{"POOL": max_concurrent_shards, …}`) overrides the server
//!   config's `[pools]` limits.
//! - `rate_limits` (`{"SCOPE": {"records_per_second": N, "bytes_per_second":
//!   M}, …}`) sets the rate limit of each scope it names, over the config
//!   file's `[rate_limits]`, down to a running run's next batch: `global`,
//!   `pool:NAME`, `endpoint:HOST:PORT`, or a job (`job:NAME` or its bare
//!   name), whose limit replaces the job file's `[rate_limit]`.
//!
//! A missing or deleted document leaves the files' values; a malformed one is
//! logged and ignored, keeping the last good values.

use std::collections::{BTreeMap, HashMap};

use haul_collect_core::flow::RateLimitSpec;
use haul_register::registry::Registry;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// The config document holding the pool limits.
pub const POOLS_DOCUMENT: &str = "pools";

/// The config document holding the jobs' rate limits.
pub const RATE_LIMITS_DOCUMENT: &str = "rate_limits";

/// The values a per-name document sets; none when there is no document.
pub fn overrides<T: DeserializeOwned>(
    document: Option<&serde_json::Value>,
) -> Result<BTreeMap<String, T>, serde_json::Error> {
    document.map_or_else(|| Ok(BTreeMap::new()), |document| serde_json::from_value(document.clone()))
}

/// The pool limits in force: the file's, overridden by `overrides`.
pub fn pool_limits(
    file_pools: &BTreeMap<String, usize>,
    overrides: &BTreeMap<String, usize>,
) -> HashMap<String, usize> {
    file_pools.iter().chain(overrides).map(|(pool, limit)| (pool.clone(), *limit)).collect()
}

/// The values `document` sets, or `None` (with a warning) if it is malformed.
fn valid_overrides<T: DeserializeOwned>(
    name: &str,
    document: Option<&serde_json::Value>,
) -> Option<BTreeMap<String, T>> {
    overrides(document)
        .inspect_err(|error| tracing::warn!(%error, "ignoring the malformed `{name}` config document"))
        .ok()
}

/// Watches the document `name` in `registry`: the receiver holds what
/// `in_force` makes of its overrides and changes with the document, until
/// every receiver is dropped or the registry's watch ends.
async fn watch_overrides<T, InForce>(
    registry: &dyn Registry,
    name: &'static str,
    in_force: impl Fn(BTreeMap<String, T>) -> InForce + Send + 'static,
) -> Result<watch::Receiver<InForce>, haul_register::registry::Error>
where
    T: DeserializeOwned,
    InForce: std::fmt::Debug + Send + Sync + 'static,
{
    let mut documents = registry.watch_config(name).await?;
    let overrides = valid_overrides(name, documents.borrow_and_update().as_ref()).unwrap_or_default();
    let (values, receiver) = watch::channel(in_force(overrides));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = values.closed() => return,
                changed = documents.changed() => if changed.is_err() { return },
            }
            if let Some(overrides) = valid_overrides(name, documents.borrow_and_update().as_ref()) {
                let new_values = in_force(overrides);
                tracing::info!(values = ?new_values, "the `{name}` config document changed");
                values.send_replace(new_values);
            }
        }
    });
    Ok(receiver)
}

/// Watches the `pools` document: the receiver holds the pool limits in force.
pub async fn watch_pool_limits(
    registry: &dyn Registry,
    file_pools: BTreeMap<String, usize>,
) -> Result<watch::Receiver<HashMap<String, usize>>, haul_register::registry::Error> {
    watch_overrides(registry, POOLS_DOCUMENT, move |overrides| pool_limits(&file_pools, &overrides)).await
}

/// Watches the `rate_limits` document: the receiver holds the rate limits
/// by scope, the document's over the config file's `file_limits`.
pub async fn watch_rate_limits(
    registry: &dyn Registry,
    file_limits: BTreeMap<String, RateLimitSpec>,
) -> Result<watch::Receiver<BTreeMap<String, RateLimitSpec>>, haul_register::registry::Error> {
    watch_overrides(registry, RATE_LIMITS_DOCUMENT, move |overrides| {
        file_limits.iter().chain(&overrides).map(|(scope, spec)| (scope.clone(), *spec)).collect()
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use haul_register::registry::{ZkConfig, ZkRegistry};
    use haul_register::testing::{ZOOKEEPER, remove_zookeeper_tree};
    use serde_json::json;

    use super::*;

    /// Bounds every wait for a change that should arrive at once.
    const PROMPTLY: Duration = Duration::from_secs(5);

    fn file_pools() -> BTreeMap<String, usize> {
        BTreeMap::from([("api".to_string(), 1), ("db".to_string(), 4)])
    }

    fn limits(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
        pairs.iter().map(|(pool, limit)| (pool.to_string(), *limit)).collect()
    }

    fn limits_of(document: Option<serde_json::Value>) -> Result<HashMap<String, usize>, serde_json::Error> {
        Ok(pool_limits(&file_pools(), &overrides(document.as_ref())?))
    }

    #[test]
    fn the_document_overrides_the_file_for_the_pools_it_names() {
        assert_eq!(limits_of(None).unwrap(), limits(&[("api", 1), ("db", 4)]));
        let document = json!({"api": 3, "crawl": 2});
        assert_eq!(limits_of(Some(document)).unwrap(), limits(&[("api", 3), ("db", 4), ("crawl", 2)]));
        assert_eq!(limits_of(Some(json!({}))).unwrap(), limits(&[("api", 1), ("db", 4)]));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for document in [json!([1, 2]), json!({"api": -1}), json!({"api": "many"}), json!(7), json!(null)] {
            assert!(overrides::<usize>(Some(&document)).is_err(), "{document}");
        }
    }

    fn rate_limit(records_per_second: Option<u32>, bytes_per_second: Option<u32>) -> RateLimitSpec {
        RateLimitSpec {
            records_per_second: records_per_second.and_then(NonZeroU32::new),
            bytes_per_second: bytes_per_second.and_then(NonZeroU32::new),
        }
    }

    #[test]
    fn rate_limits_read_like_a_jobs_rate_limit() {
        let document = json!({
            "orders": {"records_per_second": 500},
            "logs": {"records_per_second": 10, "bytes_per_second": 4096},
            "free": {},
        });
        let expected = BTreeMap::from([
            ("free".to_string(), rate_limit(None, None)),
            ("logs".to_string(), rate_limit(Some(10), Some(4096))),
            ("orders".to_string(), rate_limit(Some(500), None)),
        ]);
        assert_eq!(overrides::<RateLimitSpec>(Some(&document)).unwrap(), expected);
        assert_eq!(overrides::<RateLimitSpec>(None).unwrap(), BTreeMap::new());
        for document in [
            json!({"orders": {"records_per_second": 0}}),
            json!({"orders": {"rows_per_second": 5}}),
            json!({"orders": {"bytes_per_second": -1}}),
            json!({"orders": 500}),
            json!([{"records_per_second": 5}]),
        ] {
            assert!(overrides::<RateLimitSpec>(Some(&document)).is_err(), "{document}");
        }
    }

    async fn next_limits<T: Clone>(receiver: &mut watch::Receiver<T>) -> T {
        tokio::time::timeout(PROMPTLY, receiver.changed()).await.expect("the limits did not change").unwrap();
        receiver.borrow_and_update().clone()
    }

    /// Runs `test` against a registry in a chroot of its own, removed after.
    async fn in_fresh_chroot<Test: Future<Output = ()> + Send + 'static>(test: impl FnOnce(String) -> Test) {
        let chroot = format!("/haul-test-{}", uuid::Uuid::now_v7().simple());
        let outcome = tokio::spawn(test(chroot.clone())).await;
        remove_zookeeper_tree(&chroot).await;
        outcome.unwrap();
    }

    #[tokio::test]
    async fn pool_limits_follow_the_document_in_zookeeper() {
        in_fresh_chroot(follow_the_pools_document).await;
    }

    #[tokio::test]
    async fn rate_limits_follow_the_document_in_zookeeper() {
        in_fresh_chroot(follow_the_rate_limits_document).await;
    }

    async fn follow_the_rate_limits_document(chroot: String) {
        let config = ZkConfig { chroot: chroot.clone(), ..ZkConfig::new(ZOOKEEPER) };
        let registry = ZkRegistry::connect(config).await.unwrap();
        let mut receiver = watch_rate_limits(&registry, BTreeMap::new()).await.unwrap();
        assert_eq!(*receiver.borrow_and_update(), BTreeMap::new());

        registry.put_config(RATE_LIMITS_DOCUMENT, &json!({"orders": {"records_per_second": 50}})).await.unwrap();
        let orders = |spec| BTreeMap::from([("orders".to_string(), spec)]);
        assert_eq!(next_limits(&mut receiver).await, orders(rate_limit(Some(50), None)));

        // a malformed document changes nothing; the next good one applies
        registry.put_config(RATE_LIMITS_DOCUMENT, &json!({"orders": {"records_per_second": 0}})).await.unwrap();
        let document = json!({"orders": {"records_per_second": 5, "bytes_per_second": 100}});
        registry.put_config(RATE_LIMITS_DOCUMENT, &document).await.unwrap();
        assert_eq!(next_limits(&mut receiver).await, orders(rate_limit(Some(5), Some(100))));

        // deleting the document leaves the job files' limits
        let client = zookeeper_client::Client::connect(ZOOKEEPER).await.unwrap();
        client.delete(&format!("{chroot}/config/{RATE_LIMITS_DOCUMENT}"), None).await.unwrap();
        assert_eq!(next_limits(&mut receiver).await, BTreeMap::new());
        registry.close().await;
    }

    async fn follow_the_pools_document(chroot: String) {
        let config = ZkConfig { chroot: chroot.clone(), ..ZkConfig::new(ZOOKEEPER) };
        let registry = ZkRegistry::connect(config).await.unwrap();
        registry.put_config(POOLS_DOCUMENT, &json!({"api": 2})).await.unwrap();

        let mut receiver = watch_pool_limits(&registry, file_pools()).await.unwrap();
        assert_eq!(*receiver.borrow_and_update(), limits(&[("api", 2), ("db", 4)]));

        registry.put_config(POOLS_DOCUMENT, &json!({"api": 5, "crawl": 1})).await.unwrap();
        assert_eq!(next_limits(&mut receiver).await, limits(&[("api", 5), ("db", 4), ("crawl", 1)]));

        // a malformed document changes nothing; the next good one applies
        registry.put_config(POOLS_DOCUMENT, &json!({"api": "lots"})).await.unwrap();
        registry.put_config(POOLS_DOCUMENT, &json!({"db": 8})).await.unwrap();
        assert_eq!(next_limits(&mut receiver).await, limits(&[("api", 1), ("db", 8)]));

        // deleting the document brings back the file's limits
        let client = zookeeper_client::Client::connect(ZOOKEEPER).await.unwrap();
        client.delete(&format!("{chroot}/config/{POOLS_DOCUMENT}"), None).await.unwrap();
        assert_eq!(next_limits(&mut receiver).await, limits(&[("api", 1), ("db", 4)]));
        registry.close().await;
    }
}
