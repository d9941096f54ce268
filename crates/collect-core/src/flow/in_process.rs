//! The in-process [`Limiter`]: `governor` keyed token buckets, one keyed
//! limiter per distinct [`Limit`]. It is the embedded default, and the local
//! fallback of the shared backends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::limiter::{Admission, Error, Limit, Limiter};

/// Calls between two sweeps of the keys that have refilled.
const SWEEP_EVERY: u64 = 4096;

/// Rate limits kept in this process's memory. Callers in other processes do
/// not see them.
#[derive(Default)]
pub struct InProcessLimiter {
    buckets: Mutex<HashMap<Limit, Arc<DefaultKeyedRateLimiter<String>>>>,
    calls: AtomicU64,
}

impl std::fmt::Debug for InProcessLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessLimiter").finish_non_exhaustive()
    }
}

impl InProcessLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    fn buckets_for(&self, limit: Limit) -> Arc<DefaultKeyedRateLimiter<String>> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // keys whose bucket is full again hold no information: forget them
            buckets.retain(|_, keyed| {
                keyed.retain_recent();
                !keyed.is_empty()
            });
        }
        buckets
            .entry(limit)
            .or_insert_with(|| {
                let quota = Quota::with_period(limit.interval())
                    .expect("a limit's interval is never zero")
                    .allow_burst(limit.burst());
                Arc::new(RateLimiter::keyed(quota))
            })
            .clone()
    }
}

#[async_trait]
impl Limiter for InProcessLimiter {
    async fn try_acquire(&self, key: &str, limit: Limit, n: u32) -> Result<Admission, Error> {
        let Some(n) = std::num::NonZeroU32::new(n) else {
            return Ok(Admission::Granted);
        };
        let buckets = self.buckets_for(limit);
        match buckets.check_key_n(&key.to_string(), n) {
            Ok(Ok(())) => Ok(Admission::Granted),
            Ok(Err(not_until)) => Ok(Admission::RetryAfter(not_until.wait_time_from(buckets.clock().now()))),
            Err(_) => Err(Error::ExceedsBurst { requested: n.get(), burst: limit.burst().get() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::{Duration, Instant};

    use super::*;

    fn limit(per_second: u32, burst: u32) -> Limit {
        Limit::per_second(NonZeroU32::new(per_second).unwrap()).with_burst(NonZeroU32::new(burst).unwrap())
    }

    #[tokio::test]
    async fn the_burst_is_granted_then_the_next_permit_waits_one_interval() {
        let limiter = InProcessLimiter::new();
        let limit = limit(10, 3);
        assert_eq!(limiter.try_acquire("job:a", limit, 3).await, Ok(Admission::Granted));
        let Ok(Admission::RetryAfter(wait)) = limiter.try_acquire("job:a", limit, 1).await else {
            panic!("a fourth permit must wait");
        };
        assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100), "{wait:?}");
    }

    #[tokio::test]
    async fn keys_and_limits_are_separate_buckets() {
        let limiter = InProcessLimiter::new();
        assert_eq!(limiter.try_acquire("job:a", limit(1, 1), 1).await, Ok(Admission::Granted));
        assert_eq!(limiter.try_acquire("job:b", limit(1, 1), 1).await, Ok(Admission::Granted));
        assert_eq!(limiter.try_acquire("job:a", limit(1, 2), 1).await, Ok(Admission::Granted));
        assert!(matches!(limiter.try_acquire("job:a", limit(1, 1), 1).await, Ok(Admission::RetryAfter(_))));
    }

    #[tokio::test]
    async fn more_than_the_burst_at_once_is_an_error() {
        let limiter = InProcessLimiter::new();
        let error = limiter.try_acquire("job:a", limit(10, 5), 6).await.unwrap_err();
        assert_eq!(error, Error::ExceedsBurst { requested: 6, burst: 5 });
    }

    #[tokio::test]
    async fn acquire_waits_for_what_exceeds_the_burst() {
        let limiter = InProcessLimiter::new();
        let start = Instant::now();
        // 20 permits at 100 a second with a burst of 10: the last 10 take about 100 ms
        limiter.acquire("job:a", limit(100, 10), 20).await;
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(80), "{elapsed:?}");
    }
}
