//! The in-process [`SeenSet`]: hash sets in memory, the embedded default and
//! the local fallback of [`super::RedisSeenSet`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::SeenSet;

/// Keys met by this process. Namespaces stay until forgotten.
#[derive(Debug, Default)]
pub struct InProcessSeenSet {
    namespaces: Mutex<HashMap<String, HashSet<String>>>,
}

impl InProcessSeenSet {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SeenSet for InProcessSeenSet {
    async fn insert_new(&self, namespace: &str, keys: &[&str]) -> Vec<bool> {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seen = namespaces.entry(namespace.to_string()).or_default();
        keys.iter().map(|key| seen.insert(key.to_string())).collect()
    }

    async fn forget(&self, namespace: &str) {
        self.namespaces.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_key_is_new_once_per_namespace_until_forgotten() {
        let seen = InProcessSeenSet::new();
        assert_eq!(seen.insert_new("crawl:a", &["x", "y", "x"]).await, [true, true, false]);
        assert!(!seen.insert_if_new("crawl:a", "y").await);
        assert!(seen.insert_if_new("crawl:b", "y").await);
        seen.forget("crawl:a").await;
        assert!(seen.insert_if_new("crawl:a", "x").await);
        assert!(!seen.insert_if_new("crawl:b", "y").await);
    }
}
