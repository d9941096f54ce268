//! Named rate limits: the [`Limiter`] trait and its in-process backend come
//! from `haul-collect-core` (the runtime paces batches with them); this module
//! adds the [`RedisLimiter`], shared by every worker, and [`open`] by URL.

mod redis_limiter;

use std::num::NonZeroU32;
use std::sync::Arc;

pub use haul_collect_core::flow::{Admission, Error, InProcessLimiter, Limit, Limiter};
pub use redis_limiter::RedisLimiter;

use crate::redis_link::{self, RedisOptions};

/// How [`open`] builds a limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterOptions {
    pub redis: RedisOptions,
    /// How many workers share each limit: while Redis is unreachable, each
    /// worker allows itself this fraction of every limit.
    pub expected_workers: NonZeroU32,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        LimiterOptions {
            redis: RedisOptions::default(),
            expected_workers: NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// Opens the limiter `url` names: none or `memory://` for this process alone,
/// `redis://HOST:PORT/DB` (or `rediss://`) for one shared through Redis.
/// Redis is reached lazily: opening succeeds while it is down.
pub fn open(url: Option<&str>, options: &LimiterOptions) -> Result<Arc<dyn Limiter>, redis_link::Error> {
    Ok(match redis_link::redis_client(url)? {
        None => Arc::new(InProcessLimiter::new()),
        Some(client) => Arc::new(RedisLimiter::new(client, options)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_open_their_backend() {
        let options = LimiterOptions::default();
        let described = |url| format!("{:?}", open(url, &options).unwrap());
        assert!(described(None).starts_with("InProcessLimiter"));
        assert!(described(Some("memory://")).starts_with("InProcessLimiter"));
        assert!(described(Some("redis://127.0.0.1:6379/0")).starts_with("RedisLimiter"));
        assert!(matches!(open(Some("zk://127.0.0.1:2181"), &options), Err(redis_link::Error::Scheme(_))));
    }
}
