//! Rate limits for a run, like DataX's speed settings: records per second and
//! bytes per second, shared by every shard of the run (token buckets from
//! `governor`, one second of burst).

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// The `[rate_limit]` table of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub records_per_second: Option<NonZeroU32>,
    pub bytes_per_second: Option<NonZeroU32>,
}

/// The limiters of one run.
pub struct Throttle {
    records: Option<Bucket>,
    bytes: Option<Bucket>,
}

struct Bucket {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl Bucket {
    fn new(per_second: NonZeroU32) -> Self {
        Bucket { limiter: RateLimiter::direct(Quota::per_second(per_second)), burst: per_second.get() }
    }

    async fn acquire(&self, mut amount: u64) {
        while amount > 0 {
            let chunk = amount.min(u64::from(self.burst)) as u32;
            if let Some(chunk) = NonZeroU32::new(chunk) {
                // cannot fail: chunk never exceeds the burst
                let _ = self.limiter.until_n_ready(chunk).await;
            }
            amount -= u64::from(chunk);
        }
    }
}

impl Throttle {
    pub fn new(spec: &RateLimitSpec) -> Self {
        Throttle { records: spec.records_per_second.map(Bucket::new), bytes: spec.bytes_per_second.map(Bucket::new) }
    }

    /// Waits until `records` records of `bytes` bytes may pass.
    pub async fn acquire(&self, records: u64, bytes: u64) {
        if let Some(bucket) = &self.records {
            bucket.acquire(records).await;
        }
        if let Some(bucket) = &self.bytes {
            bucket.acquire(bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn unlimited_never_waits() {
        let throttle = Throttle::new(&RateLimitSpec::default());
        let start = Instant::now();
        throttle.acquire(10_000_000, 10_000_000_000).await;
        assert!(start.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn records_are_paced() {
        let spec = RateLimitSpec { records_per_second: NonZeroU32::new(1_000), bytes_per_second: None };
        let throttle = Throttle::new(&spec);
        let start = Instant::now();
        // the first second's burst is free; the next 500 records take about half a second
        throttle.acquire(1_500, 0).await;
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }
}
