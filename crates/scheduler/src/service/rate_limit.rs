//! The `[rate_limit]` a run executes under: the job file's, unless the
//! service's rate limit overrides name the job. It follows the overrides as
//! they change for as long as the run holds it, so a running run's throttle
//! applies new limits from its next batch.

use std::collections::BTreeMap;

use haul_collect_core::flow::RateLimitSpec;
use tokio::sync::watch;

/// Rate limits that replace the job files' `[rate_limit]`, by job name.
pub type RateLimitOverrides = BTreeMap<String, RateLimitSpec>;

/// The rate limit in force for `job`: its override, or else `file`'s.
fn rate_limit_in_force(overrides: &RateLimitOverrides, job: &str, file: RateLimitSpec) -> RateLimitSpec {
    overrides.get(job).copied().unwrap_or(file)
}

/// A watch of `job`'s rate limit in force, following `overrides` until every
/// receiver is dropped or `overrides` stops changing for good.
pub(crate) fn follow_rate_limit(
    mut overrides: watch::Receiver<RateLimitOverrides>,
    job: String,
    file: RateLimitSpec,
) -> watch::Receiver<RateLimitSpec> {
    let (in_force, receiver) = watch::channel(rate_limit_in_force(&overrides.borrow_and_update(), &job, file));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = in_force.closed() => return,
                changed = overrides.changed() => if changed.is_err() { return },
            }
            let spec = rate_limit_in_force(&overrides.borrow_and_update(), &job, file);
            in_force.send_if_modified(|current| std::mem::replace(current, spec) != spec);
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn records_per_second(rate: u32) -> RateLimitSpec {
        RateLimitSpec { records_per_second: NonZeroU32::new(rate), bytes_per_second: None }
    }

    #[test]
    fn an_override_replaces_the_files_rate_limit_of_the_job_it_names() {
        let overrides = BTreeMap::from([("orders".to_string(), records_per_second(5))]);
        assert_eq!(rate_limit_in_force(&overrides, "orders", records_per_second(100)), records_per_second(5));
        assert_eq!(rate_limit_in_force(&overrides, "logs", records_per_second(100)), records_per_second(100));
        assert_eq!(rate_limit_in_force(&BTreeMap::new(), "orders", records_per_second(100)), records_per_second(100));
    }

    #[tokio::test]
    async fn a_runs_rate_limit_follows_the_overrides() {
        let (overrides, overrides_receiver) = watch::channel(RateLimitOverrides::new());
        let mut rate_limit = follow_rate_limit(overrides_receiver, "orders".into(), records_per_second(100));
        assert_eq!(*rate_limit.borrow_and_update(), records_per_second(100));

        overrides.send_replace(BTreeMap::from([("orders".to_string(), records_per_second(5))]));
        rate_limit.changed().await.unwrap();
        assert_eq!(*rate_limit.borrow_and_update(), records_per_second(5));

        // another job's override changes nothing; dropping the override brings the file's back
        overrides.send_replace(BTreeMap::from([("logs".to_string(), records_per_second(1))]));
        rate_limit.changed().await.unwrap();
        assert_eq!(*rate_limit.borrow_and_update(), records_per_second(100));
    }
}
