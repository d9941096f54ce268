//! The [`RedisLimiter`]: GCRA in one Lua script, atomic per call and timed by
//! Redis's clock, so every worker shares each limit whatever its own clock
//! says. The script is sent once per Redis (`EVALSHA`, loaded again after a
//! `NOSCRIPT`). Keys live under `PREFIX:limit:` and expire once idle long
//! enough to refill. While Redis is unreachable (see [`crate::redis_link`]),
//! the limiter grants from a local bucket at `1 / expected_workers` of each
//! limit.

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Client, Script};

use super::{Admission, Error, InProcessLimiter, Limit, Limiter, LimiterOptions};
use crate::redis_link::{self, RedisLink};

/// Rate limits shared through Redis.
pub struct RedisLimiter {
    link: RedisLink,
    gcra: Script,
    fallback: InProcessLimiter,
    expected_workers: NonZeroU32,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("degraded", &self.is_degraded()).finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter on the Redis `client` reaches; it connects on first use.
    pub fn new(client: Client, options: &LimiterOptions) -> Result<Self, redis_link::Error> {
        Ok(RedisLimiter {
            link: RedisLink::new(client, options.redis.clone(), "rate_limit")?,
            gcra: Script::new(include_str!("gcra.lua")),
            fallback: InProcessLimiter::new(),
            expected_workers: options.expected_workers,
        })
    }

    /// Whether Redis is unreachable and limits are local.
    pub fn is_degraded(&self) -> bool {
        self.link.is_degraded()
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn try_acquire(&self, key: &str, limit: Limit, n: u32) -> Result<Admission, Error> {
        if n > limit.burst().get() {
            return Err(Error::ExceedsBurst { requested: n, burst: limit.burst().get() });
        }
        if n == 0 {
            return Ok(Admission::Granted);
        }
        let redis_key = self.link.key("limit", key);
        let interval_micros = limit.interval().as_nanos() as f64 / 1_000.0;
        let answer: Option<(i64, u64)> = self
            .link
            .call(|mut connection| async move {
                let mut invocation = self.gcra.key(&redis_key);
                invocation.arg(interval_micros).arg(limit.burst().get()).arg(n);
                invocation.invoke_async(&mut connection).await
            })
            .await;
        match answer {
            Some((1, _)) => Ok(Admission::Granted),
            Some((_, wait_micros)) => Ok(Admission::RetryAfter(Duration::from_micros(wait_micros))),
            None => self.fallback.try_acquire(key, limit.shared_by(self.expected_workers), n).await,
        }
    }
}
