//! The server's side of the config centre: the registry's `pools` document
//! (`{"POOL": max_concurrent_shards, …}`) overrides the server config's
//! `[pools]` limits for the pools it names, live. A missing or deleted
//! document leaves the file's limits; a malformed one is logged and ignored,
//! keeping the last good limits.

use std::collections::{BTreeMap, HashMap};

use haul_register::registry::Registry;
use tokio::sync::watch;

/// The config document holding the pool limits.
pub const POOLS_DOCUMENT: &str = "pools";

/// The limits a `pools` document sets; none when there is no document.
pub fn pool_overrides(document: Option<&serde_json::Value>) -> Result<BTreeMap<String, usize>, serde_json::Error> {
    document.map_or_else(|| Ok(BTreeMap::new()), |document| serde_json::from_value(document.clone()))
}

/// The pool limits in force: the file's, overridden by `overrides`.
pub fn pool_limits(
    file_pools: &BTreeMap<String, usize>,
    overrides: &BTreeMap<String, usize>,
) -> HashMap<String, usize> {
    file_pools.iter().chain(overrides).map(|(pool, limit)| (pool.clone(), *limit)).collect()
}

/// The limits `document` sets, or `None` (with a warning) if it is malformed.
fn valid_overrides(document: Option<&serde_json::Value>) -> Option<BTreeMap<String, usize>> {
    pool_overrides(document)
        .inspect_err(|error| tracing::warn!(%error, "ignoring the malformed `{POOLS_DOCUMENT}` config document"))
        .ok()
}

/// Watches the `pools` document in `registry`: the receiver holds the pool
/// limits in force and changes with the document, until every receiver is
/// dropped or the registry's watch ends.
pub async fn watch_pool_limits(
    registry: &dyn Registry,
    file_pools: BTreeMap<String, usize>,
) -> Result<watch::Receiver<HashMap<String, usize>>, haul_register::registry::Error> {
    let mut documents = registry.watch_config(POOLS_DOCUMENT).await?;
    let overrides = valid_overrides(documents.borrow_and_update().as_ref()).unwrap_or_default();
    let (limits, receiver) = watch::channel(pool_limits(&file_pools, &overrides));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = limits.closed() => return,
                changed = documents.changed() => if changed.is_err() { return },
            }
            if let Some(overrides) = valid_overrides(documents.borrow_and_update().as_ref()) {
                let new_limits = pool_limits(&file_pools, &overrides);
                tracing::info!(limits = ?new_limits, "pool limits changed in the config centre");
                limits.send_replace(new_limits);
            }
        }
    });
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use haul_register::registry::{ZkConfig, ZkRegistry};
    use serde_json::json;

    use super::*;

    const ZOOKEEPER: &str = "127.0.0.1:2181";
    /// Bounds every wait for a change that should arrive at once.
    const PROMPTLY: Duration = Duration::from_secs(5);

    fn file_pools() -> BTreeMap<String, usize> {
        BTreeMap::from([("api".to_string(), 1), ("db".to_string(), 4)])
    }

    fn limits(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
        pairs.iter().map(|(pool, limit)| (pool.to_string(), *limit)).collect()
    }

    fn limits_of(document: Option<serde_json::Value>) -> Result<HashMap<String, usize>, serde_json::Error> {
        Ok(pool_limits(&file_pools(), &pool_overrides(document.as_ref())?))
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
            assert!(pool_overrides(Some(&document)).is_err(), "{document}");
        }
    }

    async fn next_limits(receiver: &mut watch::Receiver<HashMap<String, usize>>) -> HashMap<String, usize> {
        tokio::time::timeout(PROMPTLY, receiver.changed()).await.expect("the limits did not change").unwrap();
        receiver.borrow_and_update().clone()
    }

    /// Deletes `chroot` and everything under it.
    async fn remove_chroot(chroot: &str) {
        let client = zookeeper_client::Client::connect(ZOOKEEPER).await.unwrap();
        let mut nodes = vec![chroot.to_string()];
        let mut index = 0;
        while index < nodes.len() {
            let children = client.list_children(&nodes[index]).await.unwrap_or_default();
            let parent = nodes[index].clone();
            nodes.extend(children.into_iter().map(|child| format!("{parent}/{child}")));
            index += 1;
        }
        for node in nodes.iter().rev() {
            let _ = client.delete(node, None).await;
        }
    }

    #[tokio::test]
    async fn pool_limits_follow_the_document_in_zookeeper() {
        let chroot = format!("/haul-test-{}", uuid::Uuid::now_v7().simple());
        let outcome = tokio::spawn(follow_the_document(chroot.clone())).await;
        remove_chroot(&chroot).await;
        outcome.unwrap();
    }

    async fn follow_the_document(chroot: String) {
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
