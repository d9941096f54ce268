//! Rate limits for a run, like DataX's speed settings: records per second and
//! bytes per second (one second of burst), taken from a [`Limiter`] under the
//! keys `job:NAME:records` and `job:NAME:bytes`. With the [`InProcessLimiter`]
//! the limits hold in this process; with a shared limiter they hold across
//! every worker running the job.

mod in_process;
mod limiter;

use std::num::NonZeroU32;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use in_process::InProcessLimiter;
pub use limiter::{Admission, Error, Limit, Limiter};

/// The `[rate_limit]` table of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub records_per_second: Option<NonZeroU32>,
    pub bytes_per_second: Option<NonZeroU32>,
}

/// The limits of one run.
pub struct Throttle {
    limiter: Arc<dyn Limiter>,
    records: Option<(String, Limit)>,
    bytes: Option<(String, Limit)>,
}

impl Throttle {
    /// The limits `spec` sets on `job`, taken from `limiter`.
    pub fn new(job: &str, spec: &RateLimitSpec, limiter: Arc<dyn Limiter>) -> Self {
        let keyed =
            |measure: &str, per_second: NonZeroU32| (format!("job:{job}:{measure}"), Limit::per_second(per_second));
        Throttle {
            limiter,
            records: spec.records_per_second.map(|rate| keyed("records", rate)),
            bytes: spec.bytes_per_second.map(|rate| keyed("bytes", rate)),
        }
    }

    /// Waits until `records` records of `bytes` bytes may pass.
    pub async fn acquire(&self, records: u64, bytes: u64) {
        if let Some((key, limit)) = &self.records {
            self.limiter.acquire(key, *limit, records).await;
        }
        if let Some((key, limit)) = &self.bytes {
            self.limiter.acquire(key, *limit, bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn throttle(spec: RateLimitSpec) -> Throttle {
        Throttle::new("job", &spec, Arc::new(InProcessLimiter::new()))
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let throttle = throttle(RateLimitSpec::default());
        let start = Instant::now();
        throttle.acquire(10_000_000, 10_000_000_000).await;
        assert!(start.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn records_are_paced() {
        let throttle = throttle(RateLimitSpec { records_per_second: NonZeroU32::new(1_000), bytes_per_second: None });
        let start = Instant::now();
        // the first second's burst is free; the next 500 records take about half a second
        throttle.acquire(1_500, 0).await;
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn runs_of_one_job_sharing_a_limiter_share_its_limit() {
        let limiter: Arc<dyn Limiter> = Arc::new(InProcessLimiter::new());
        let spec = RateLimitSpec { records_per_second: NonZeroU32::new(1_000), bytes_per_second: None };
        let first = Throttle::new("job", &spec, limiter.clone());
        let second = Throttle::new("job", &spec, limiter);
        let start = Instant::now();
        // one second of burst between them, then 500 more at 1,000 a second
        first.acquire(1_000, 0).await;
        second.acquire(500, 0).await;
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }
}
