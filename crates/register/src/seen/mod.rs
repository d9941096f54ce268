//! The [`SeenSet`]: which keys a namespace has already met, such as the URLs
//! a crawl has queued. Backends: [`InProcessSeenSet`] for one process and
//! [`RedisSeenSet`] shared by every worker; [`open`] chooses by URL.
//!
//! A seen set saves work; it is never the truth. A crawl's checkpointed
//! frontier decides what is fetched, so a key reported new twice (after an
//! outage of Redis, or after its namespace expired) costs a repeated fetch,
//! never a lost or wrong record.

mod in_process;
mod redis_seen_set;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use in_process::InProcessSeenSet;
pub use redis_seen_set::RedisSeenSet;

use crate::redis_link::{self, RedisOptions};

/// Sets of keys already met, one per namespace.
///
/// Lifecycle: build a backend once per process and share it; a namespace
/// (say `crawl:RUN_ID`) is created by its first insert and dropped with
/// [`SeenSet::forget`] when its work ends; a shared backend also drops a
/// namespace left idle for its time to live.
///
/// Guarantees every backend keeps:
/// - Among the callers of one backend, each key of a namespace is reported
///   new exactly once while the backend keeps the namespace, including
///   repeats within one batch.
/// - A call never fails because a shared service is unavailable: a shared
///   backend answers from a local set meanwhile, which may report again as
///   new a key met before the outage or by another worker.
#[async_trait]
pub trait SeenSet: Send + Sync + std::fmt::Debug {
    /// Records `keys` in `namespace` and tells, for each in order, whether it
    /// was new.
    async fn insert_new(&self, namespace: &str, keys: &[&str]) -> Vec<bool>;

    /// Records `key` in `namespace` and tells whether it was new.
    async fn insert_if_new(&self, namespace: &str, key: &str) -> bool {
        self.insert_new(namespace, &[key]).await.first().copied().unwrap_or(false)
    }

    /// Drops `namespace` and every key in it.
    async fn forget(&self, namespace: &str);
}

/// How [`open`] builds a seen set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenSetOptions {
    pub redis: RedisOptions,
    /// How long a namespace nobody inserts into stays in Redis.
    pub ttl: Duration,
}

impl Default for SeenSetOptions {
    fn default() -> Self {
        SeenSetOptions { redis: RedisOptions::default(), ttl: Duration::from_secs(24 * 3600) }
    }
}

/// Opens the seen set `url` names: none or `memory://` for this process
/// alone, `redis://HOST:PORT/DB` (or `rediss://`) for one shared through
/// Redis. Redis is reached lazily: opening succeeds while it is down.
pub fn open(url: Option<&str>, options: &SeenSetOptions) -> Result<Arc<dyn SeenSet>, redis_link::Error> {
    Ok(match redis_link::redis_client(url)? {
        None => Arc::new(InProcessSeenSet::new()),
        Some(client) => Arc::new(RedisSeenSet::new(client, options)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_open_their_backend() {
        let options = SeenSetOptions::default();
        let described = |url| format!("{:?}", open(url, &options).unwrap());
        assert!(described(None).starts_with("InProcessSeenSet"));
        assert!(described(Some("memory://")).starts_with("InProcessSeenSet"));
        assert!(described(Some("redis://127.0.0.1:6379/0")).starts_with("RedisSeenSet"));
        assert!(matches!(open(Some("amqp://127.0.0.1"), &options), Err(redis_link::Error::Scheme(_))));
    }
}
