//! The [`RedisSeenSet`]: one Redis set per namespace, under
//! `PREFIX:seen:NAMESPACE`. A batch is one pipeline of `SADD`s (each tells
//! whether its key was new, atomically among all workers) and a `PEXPIRE`
//! that keeps the namespace for its time to live after the last insert.
//! While Redis is unreachable (see [`crate::redis_link`]) an in-process set
//! answers instead.

use std::time::Duration;

use async_trait::async_trait;
use redis::Client;

use super::{InProcessSeenSet, SeenSet, SeenSetOptions};
use crate::redis_link::{self, RedisLink};

/// Sets of keys shared through Redis.
pub struct RedisSeenSet {
    link: RedisLink,
    ttl: Duration,
    fallback: InProcessSeenSet,
}

impl std::fmt::Debug for RedisSeenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSeenSet").field("degraded", &self.is_degraded()).finish_non_exhaustive()
    }
}

impl RedisSeenSet {
    /// A seen set on the Redis `client` reaches; it connects on first use.
    pub fn new(client: Client, options: &SeenSetOptions) -> Result<Self, redis_link::Error> {
        Ok(RedisSeenSet {
            link: RedisLink::new(client, options.redis.clone(), "dedup")?,
            ttl: options.ttl,
            fallback: InProcessSeenSet::new(),
        })
    }

    /// Whether Redis is unreachable and answers are local.
    pub fn is_degraded(&self) -> bool {
        self.link.is_degraded()
    }
}

#[async_trait]
impl SeenSet for RedisSeenSet {
    async fn insert_new(&self, namespace: &str, keys: &[&str]) -> Vec<bool> {
        if keys.is_empty() {
            return Vec::new();
        }
        let set = self.link.key("seen", namespace);
        let ttl_millis = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let answer = self
            .link
            .call(|mut connection| {
                let mut pipeline = redis::pipe();
                for key in keys {
                    pipeline.sadd(&set, *key);
                }
                pipeline.pexpire(&set, ttl_millis as i64).ignore();
                async move { pipeline.query_async::<Vec<bool>>(&mut connection).await }
            })
            .await;
        match answer {
            Some(new) => new,
            None => self.fallback.insert_new(namespace, keys).await,
        }
    }

    async fn forget(&self, namespace: &str) {
        let set = self.link.key("seen", namespace);
        self.link
            .call(|mut connection| async move { redis::cmd("DEL").arg(&set).query_async::<()>(&mut connection).await })
            .await;
        self.fallback.forget(namespace).await;
    }
}
