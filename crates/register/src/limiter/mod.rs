//! Named rate limits: the [`Limiter`] trait and its in-process backend come
//! from `haul-collect-core` (the runtime paces batches with them); this module
//! adds the [`RedisLimiter`], shared by every worker, and [`open`] by URL.

mod redis_limiter;

use std::num::NonZeroU32;
use std::sync::Arc;

pub use haul_collect_core::flow::{Admission, Error, InProcessLimiter, Limit, Limiter};
pub use redis_limiter::RedisLimiter;

use crate::redis_link::{self, Backend, RedisOptions};

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
    Ok(match Backend::from_url(url)? {
        Backend::InProcess => Arc::new(InProcessLimiter::new()),
        Backend::Redis(client) => Arc::new(RedisLimiter::new(client, options)?),
    })
}
