//! The [`Limiter`]: named rate limits shared by everything that asks for the
//! same key — every shard of a run in one process, or every worker of a
//! deployment when the backend is shared (Redis, in `haul-register`).
//!
//! The trait lives here, beside the runtime that paces batches with it, so
//! that the runtime needs no coordination crate; `haul-register` re-exports
//! it with its shared backends.

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;

/// The rate and burst of one named limit, as a generic cell rate: one permit
/// every `interval`, and at most `burst` permits at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    interval: Duration,
    burst: NonZeroU32,
}

impl Limit {
    /// `per_second` permits a second, with one second's worth of burst.
    pub fn per_second(per_second: NonZeroU32) -> Self {
        Limit { interval: Duration::from_secs(1) / per_second.get(), burst: per_second }
    }

    /// The same rate with another burst.
    pub fn with_burst(self, burst: NonZeroU32) -> Self {
        Limit { burst, ..self }
    }

    /// The share of this limit each of `workers` may take without asking the
    /// others: the rate divided by `workers`, and so the burst (at least one).
    pub fn shared_by(self, workers: NonZeroU32) -> Self {
        let burst = NonZeroU32::new(self.burst.get() / workers.get()).unwrap_or(NonZeroU32::MIN);
        Limit { interval: self.interval.saturating_mul(workers.get()), burst }
    }

    /// The time between two permits at the sustained rate (at least a nanosecond).
    pub fn interval(&self) -> Duration {
        self.interval.max(Duration::from_nanos(1))
    }

    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }
}

/// The answer to a [`Limiter::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The permits were taken.
    Granted,
    /// Nothing was taken; the permits may be available after this long.
    RetryAfter(Duration),
}

/// What a limiter call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{requested} permits exceed the burst of {burst}: they can never be granted at once")]
    ExceedsBurst { requested: u32, burst: u32 },
}

/// Named rate limits, checked as a generic cell rate algorithm (GCRA).
///
/// Keys name the level a limit applies to: `global`, `pool:NAME`, `job:NAME`
/// (with a suffix per measure, as `job:NAME:records`), `endpoint:HOST`. Every
/// call carries the key's [`Limit`]; callers sharing a key must pass the same
/// one (a backend may keep the state of a key per limit).
///
/// Lifecycle: build a backend once per process and share it (`Arc<dyn
/// Limiter>`); keys need no declaration and their state vanishes once they
/// have been idle long enough to refill.
///
/// Guarantees every backend keeps:
/// - A [`Limiter::try_acquire`] is atomic: it takes all `n` permits or none.
/// - Over any window of length `t`, the permits granted for a key never exceed
///   `burst + t / interval`, summed over every caller of the same backend.
/// - A call never fails because a shared service is unavailable: a shared
///   backend falls back to a conservative local share of the limit instead.
#[async_trait]
pub trait Limiter: Send + Sync + std::fmt::Debug {
    /// Takes `n` permits of `key` if they are available now; otherwise takes
    /// none and tells when to try again. `n` above the burst is an error that
    /// tells the burst the backend grants at once (a shared backend's local
    /// fallback grants only its share of the limit's).
    async fn try_acquire(&self, key: &str, limit: Limit, n: u32) -> Result<Admission, Error>;

    /// Waits until `n` permits of `key` have been taken, in chunks of at most
    /// the burst. Dropping the future stops waiting; chunks already taken stay taken.
    ///
    /// Each wait is the advised one plus a random part of one interval: callers
    /// that all slept exactly the advised wait would wake in the same order
    /// every time, and the one that lost a permit once would lose it forever.
    async fn acquire(&self, key: &str, limit: Limit, n: u64) {
        let mut remaining = n;
        let mut largest_chunk = limit.burst().get();
        while remaining > 0 {
            let chunk = remaining.min(u64::from(largest_chunk)) as u32;
            match self.try_acquire(key, limit, chunk).await {
                Ok(Admission::Granted) => remaining -= u64::from(chunk),
                Ok(Admission::RetryAfter(wait)) => tokio::time::sleep(wait + jitter(limit.interval())).await,
                Err(Error::ExceedsBurst { burst, .. }) if (1..chunk).contains(&burst) => largest_chunk = burst,
                // a backend refusing a chunk within its own burst: waiting would never end
                Err(Error::ExceedsBurst { .. }) => return,
            }
        }
    }
}

/// A uniformly random duration below `interval`.
fn jitter(interval: Duration) -> Duration {
    interval.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_rate_per_second_spaces_permits_and_bursts_one_second() {
        let limit = Limit::per_second(rate(4));
        assert_eq!(limit.interval(), Duration::from_millis(250));
        assert_eq!(limit.burst(), rate(4));
        assert_eq!(limit.with_burst(rate(1)).burst(), rate(1));
    }

    #[test]
    fn a_share_divides_the_rate_and_the_burst() {
        let share = Limit::per_second(rate(100)).shared_by(rate(4));
        assert_eq!(share.interval(), Duration::from_millis(40));
        assert_eq!(share.burst(), rate(25));
        let tiny = Limit::per_second(rate(2)).shared_by(rate(8));
        assert_eq!(tiny.interval(), Duration::from_secs(4));
        assert_eq!(tiny.burst(), NonZeroU32::MIN);
    }
}
