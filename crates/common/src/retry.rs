//! Bounded exponential backoff with jitter for transient failures, built on
//! `backon`. The policy is plain data so it can sit in a job file.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// How many times, and how patiently, a transient failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts after the first failure before giving up.
    pub attempts: usize,
    /// Delay before the first retry; doubled each time, with jitter.
    pub initial_backoff: HumanDuration,
    /// Upper bound on any single delay.
    pub max_backoff: HumanDuration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: HumanDuration(Duration::from_millis(200)),
            max_backoff: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl RetryPolicy {
    /// The successive delays of this policy, with jitter; as many as `attempts`.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff.0)
            .with_max_delay(self.max_backoff.0)
            .with_max_times(self.attempts)
            .with_jitter()
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded_and_counted() {
        let policy = RetryPolicy {
            attempts: 8,
            initial_backoff: HumanDuration(Duration::from_millis(10)),
            max_backoff: HumanDuration(Duration::from_millis(100)),
        };
        let delays: Vec<_> = policy.delays().collect();
        assert_eq!(delays.len(), 8);
        // jitter adds at most one extra delay's worth
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(200)), "{delays:?}");
    }
}
