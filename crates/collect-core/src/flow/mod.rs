//! Rate limits for a run, like DataX's speed settings: records per second and
//! bytes per second (one second of burst), at several scopes — the whole
//! deployment (`global`), a pool (`pool:NAME`), a job (`job:NAME`) and an
//! endpoint the source reads from (`endpoint:HOST:PORT`, shared by every job
//! reading that host). Each scope takes its permits from a [`Limiter`] under
//! the keys `SCOPE:records` and `SCOPE:bytes`, so a batch waits for the
//! tightest scope. With the [`InProcessLimiter`] the limits hold in this
//! process; with a shared limiter they hold across every worker. Limits may
//! change while a run goes on: each scope of a [`Throttle`] follows a watch
//! of the spec in force.

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

/// The rate limit in force at one scope (`global`, `pool:NAME`, `job:NAME`,
/// `endpoint:HOST:PORT`).
#[derive(Debug, Clone)]
pub struct ScopedRateLimit {
    pub scope: String,
    pub spec: watch::Receiver<RateLimitSpec>,
}

impl ScopedRateLimit {
    /// The scope of a job's own `[rate_limit]`.
    pub fn job_scope(job: &str) -> String {
        format!("job:{job}")
    }

    /// A job's own `[rate_limit]`, fixed.
    pub fn job(job: &str, spec: RateLimitSpec) -> Self {
        ScopedRateLimit { scope: Self::job_scope(job), spec: spec.fixed() }
    }
}

/// The limits of one run, as they stand at each acquisition.
pub struct Throttle {
    limiter: Arc<dyn Limiter>,
    scopes: Vec<ThrottledScope>,
}

struct ThrottledScope {
    spec: watch::Receiver<RateLimitSpec>,
    records_key: String,
    bytes_key: String,
}

impl Throttle {
    /// The limits the `scopes` set whenever a batch asks, taken from `limiter`.
    pub fn new(scopes: &[ScopedRateLimit], limiter: Arc<dyn Limiter>) -> Self {
        let scopes = scopes
            .iter()
            .map(|scoped| ThrottledScope {
                spec: scoped.spec.clone(),
                records_key: format!("{}:records", scoped.scope),
                bytes_key: format!("{}:bytes", scoped.scope),
            })
            .collect();
        Throttle { limiter, scopes }
    }

    /// Waits until `records` records of `bytes` bytes may pass under the
    /// limits in force at every scope.
    pub async fn acquire(&self, records: u64, bytes: u64) {
        for scope in &self.scopes {
            let spec = *scope.spec.borrow();
            if let Some(per_second) = spec.records_per_second {
                self.limiter.acquire(&scope.records_key, Limit::per_second(per_second), records).await;
            }
            if let Some(per_second) = spec.bytes_per_second {
                self.limiter.acquire(&scope.bytes_key, Limit::per_second(per_second), bytes).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn throttle(spec: RateLimitSpec) -> Throttle {
        Throttle::new(&[ScopedRateLimit::job("job", spec)], Arc::new(InProcessLimiter::new()))
    }

    fn per_second(records: u32) -> RateLimitSpec {
        RateLimitSpec { records_per_second: NonZeroU32::new(records), bytes_per_second: None }
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
        let first = Throttle::new(&[ScopedRateLimit::job("job", spec)], limiter.clone());
        let second = Throttle::new(&[ScopedRateLimit::job("job", spec)], limiter);
        let start = Instant::now();
        // one second of burst between them, then 500 more at 1,000 a second
        first.acquire(1_000, 0).await;
        second.acquire(500, 0).await;
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_changed_spec_applies_from_the_next_acquisition() {
        let (spec, receiver) = watch::channel(RateLimitSpec::default());
        let scope = ScopedRateLimit { scope: ScopedRateLimit::job_scope("job"), spec: receiver };
        let throttle = Throttle::new(&[scope], Arc::new(InProcessLimiter::new()));
        let start = Instant::now();
        throttle.acquire(1_500, 0).await;
        assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());

        spec.send_replace(RateLimitSpec { records_per_second: NonZeroU32::new(1_000), bytes_per_second: None });
        let start = Instant::now();
        throttle.acquire(1_500, 0).await;
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn the_tightest_scope_binds_and_a_shared_scope_is_shared_between_jobs() {
        let limiter: Arc<dyn Limiter> = Arc::new(InProcessLimiter::new());
        let pool = |spec| ScopedRateLimit { scope: "pool:warehouse".into(), spec: RateLimitSpec::fixed(spec) };
        // Two jobs, each allowed 100,000 a second, in a pool allowed 1,000.
        let first =
            Throttle::new(&[ScopedRateLimit::job("a", per_second(100_000)), pool(per_second(1_000))], limiter.clone());
        let second = Throttle::new(&[ScopedRateLimit::job("b", per_second(100_000)), pool(per_second(1_000))], limiter);
        let start = Instant::now();
        // one second of the pool's burst between them, then 500 more at 1,000 a second
        first.acquire(1_000, 0).await;
        second.acquire(500, 0).await;
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }
}
