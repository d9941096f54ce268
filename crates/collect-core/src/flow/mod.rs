//! Rate limits for a run, like DataX's speed settings: records per second and
//! bytes per second (one second of burst), taken from a [`Limiter`] under the
//! keys `job:NAME:records` and `job:NAME:bytes`. With the [`InProcessLimiter`]
//! the limits hold in this process; with a shared limiter they hold across
//! every worker running the job. A run's limits may change while it runs: its
//! [`Throttle`] follows a watch of the spec in force.

mod in_process;
mod limiter;

use std::num::NonZeroU32;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use in_process::InProcessLimiter;
pub use limiter::{Admission, Error, Limit, Limiter};

/// The `[rate_limit]` table of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub records_per_second: Option<NonZeroU32>,
    pub bytes_per_second: Option<NonZeroU32>,
}

impl RateLimitSpec {
    /// A watch of this spec that never changes.
    pub fn fixed(self) -> watch::Receiver<RateLimitSpec> {
        watch::channel(self).1
    }
}

/// The limits of one run, as they stand at each acquisition.
pub struct Throttle {
    limiter: Arc<dyn Limiter>,
    spec: watch::Receiver<RateLimitSpec>,
    records_key: String,
    bytes_key: String,
}

impl Throttle {
    /// The limits `spec` sets on `job` whenever a batch asks, taken from `limiter`.
    pub fn new(job: &str, spec: watch::Receiver<RateLimitSpec>, limiter: Arc<dyn Limiter>) -> Self {
        Throttle { limiter, spec, records_key: format!("job:{job}:records"), bytes_key: format!("job:{job}:bytes") }
    }

    /// Waits until `records` records of `bytes` bytes may pass under the limits in force.
    pub async fn acquire(&self, records: u64, bytes: u64) {
        let spec = *self.spec.borrow();
        if let Some(per_second) = spec.records_per_second {
            self.limiter.acquire(&self.records_key, Limit::per_second(per_second), records).await;
        }
        if let Some(per_second) = spec.bytes_per_second {
            self.limiter.acquire(&self.bytes_key, Limit::per_second(per_second), bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn throttle(spec: RateLimitSpec) -> Throttle {
        Throttle::new("job", spec.fixed(), Arc::new(InProcessLimiter::new()))
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
        let first = Throttle::new("job", spec.fixed(), limiter.clone());
        let second = Throttle::new("job", spec.fixed(), limiter);
        let start = Instant::now();
        // one second of burst between them, then 500 more at 1,000 a second
        first.acquire(1_000, 0).await;
        second.acquire(500, 0).await;
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_changed_spec_applies_from_the_next_acquisition() {
        let (spec, receiver) = watch::channel(RateLimitSpec::default());
        let throttle = Throttle::new("job", receiver, Arc::new(InProcessLimiter::new()));
        let start = Instant::now();
        throttle.acquire(1_500, 0).await;
        assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());

        spec.send_replace(RateLimitSpec { records_per_second: NonZeroU32::new(1_000), bytes_per_second: None });
        let start = Instant::now();
        throttle.acquire(1_500, 0).await;
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }
}
