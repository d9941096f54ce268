//! Run-level retry of a job: after a failed run, when the next attempt of
//! the same schedule time starts. Exponential and deterministic (no jitter),
//! so that the time of every retry can be shown in advance and tested.
//!
//! Shard-level retries of transient errors, with jitter, are
//! `haul_common::retry`; this policy retries a whole run once those gave up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use haul_common::duration::HumanDuration;
use serde::{Deserialize, Serialize};

use crate::delta::to_delta;

/// How many more attempts a failed run of a job gets, and how long to wait
/// before each. In a job file:
///
/// ```toml
/// attempts = 3         # retries after the first attempt; 0 (default) never retries
/// backoff = "30s"      # before the first retry, doubled for each next one
/// max_backoff = "10m"  # upper bound on any wait
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunRetryPolicy {
    /// Attempts after the first one before the run stays failed.
    pub attempts: u32,
    /// The wait before the first retry; doubled before each next one.
    pub backoff: HumanDuration,
    /// The longest wait before any retry.
    pub max_backoff: HumanDuration,
}

impl Default for RunRetryPolicy {
    fn default() -> Self {
        RunRetryPolicy {
            attempts: 0,
            backoff: HumanDuration(Duration::from_secs(30)),
            max_backoff: HumanDuration(Duration::from_secs(600)),
        }
    }
}

impl RunRetryPolicy {
    /// The wait after attempt `attempt_just_failed` (1 is the first run):
    /// `backoff · 2^(attempt - 1)`, at most `max_backoff`; `None` once the
    /// retries are used up.
    pub fn delay_after(&self, attempt_just_failed: u32) -> Option<Duration> {
        let retry = attempt_just_failed.max(1);
        if retry > self.attempts {
            return None;
        }
        let doubling = 2u32.checked_pow(retry - 1);
        let delay = doubling.and_then(|factor| self.backoff.0.checked_mul(factor)).unwrap_or(Duration::MAX);
        Some(delay.min(self.max_backoff.0))
    }
}

/// When the next attempt of a run starts, after attempt `attempt_just_failed`
/// (1 is the first run; 0 is read as 1) failed at `failed_at`; `None` when
/// the policy has no attempt left.
pub fn next_attempt_at(
    policy: &RunRetryPolicy,
    attempt_just_failed: u32,
    failed_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let delay = policy.delay_after(attempt_just_failed)?;
    Some(failed_at.checked_add_signed(to_delta(delay)).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn failed_at() -> DateTime<Utc> {
        "2025-01-01T00:00:00Z".parse().unwrap()
    }

    fn policy(attempts: u32, backoff_secs: u64, max_backoff_secs: u64) -> RunRetryPolicy {
        RunRetryPolicy {
            attempts,
            backoff: HumanDuration(Duration::from_secs(backoff_secs)),
            max_backoff: HumanDuration(Duration::from_secs(max_backoff_secs)),
        }
    }

    #[test]
    fn doubles_up_to_the_cap_then_stops() {
        let policy = policy(6, 30, 300);
        let waits: Vec<Option<i64>> = (1..=7)
            .map(|attempt| next_attempt_at(&policy, attempt, failed_at()).map(|at| (at - failed_at()).num_seconds()))
            .collect();
        assert_eq!(waits, [Some(30), Some(60), Some(120), Some(240), Some(300), Some(300), None]);
    }

    #[test]
    fn the_default_never_retries() {
        assert_eq!(next_attempt_at(&RunRetryPolicy::default(), 1, failed_at()), None);
    }

    #[test]
    fn reads_a_job_file_table_with_defaults() {
        let policy: RunRetryPolicy = toml::from_str("attempts = 2\nbackoff = \"1m\"").unwrap();
        assert_eq!(
            policy,
            RunRetryPolicy {
                attempts: 2,
                backoff: HumanDuration(Duration::from_secs(60)),
                ..RunRetryPolicy::default()
            }
        );
        assert_eq!(toml::from_str::<RunRetryPolicy>("").unwrap(), RunRetryPolicy::default());
        let unknown = toml::from_str::<RunRetryPolicy>("retries = 2").unwrap_err();
        assert!(unknown.to_string().contains("unknown field `retries`"), "{unknown}");
        assert!(toml::from_str::<RunRetryPolicy>("backoff = \"soon\"").is_err());
    }

    proptest! {
        #[test]
        fn waits_grow_stay_capped_and_end(
            attempts in 0u32..40,
            backoff_millis in 0u64..100_000_000,
            max_backoff_millis in 0u64..1_000_000_000,
        ) {
            let policy = RunRetryPolicy {
                attempts,
                backoff: HumanDuration(Duration::from_millis(backoff_millis)),
                max_backoff: HumanDuration(Duration::from_millis(max_backoff_millis)),
            };
            let cap = TimeDelta::milliseconds(max_backoff_millis as i64);
            let mut previous = TimeDelta::zero();
            for attempt in 1..=attempts + 2 {
                let next = next_attempt_at(&policy, attempt, failed_at());
                prop_assert_eq!(next.is_some(), attempt <= attempts, "attempt {}", attempt);
                prop_assert_eq!(next, next_attempt_at(&policy, attempt, failed_at()), "deterministic");
                if let Some(next) = next {
                    let wait = next - failed_at();
                    prop_assert!(wait >= previous && wait <= cap, "attempt {}: {} after {}", attempt, wait, previous);
                    if attempt == 1 {
                        prop_assert_eq!(wait, TimeDelta::milliseconds(backoff_millis.min(max_backoff_millis) as i64));
                    }
                    previous = wait;
                }
            }
        }
    }
}
