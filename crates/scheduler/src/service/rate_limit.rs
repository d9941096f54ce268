//! The rate limits a run executes under, at every scope (see
//! [`haul_collect_core::flow`]): `global`, `pool:NAME`, `job:NAME` and, when
//! the source reads from one host, `endpoint:HOST:PORT`. A scope's limit is
//! the service's override for it (a job's also under its bare name, as the
//! config centre's `rate_limits` document names jobs), or else its default:
//! the job file's `[rate_limit]` for the job, none for the others. Each scope
//! follows the overrides as they change for as long as the run holds it, so a
//! running run's throttle applies new limits from its next batch.

use std::collections::BTreeMap;

use haul_collect_core::flow::{RateLimitSpec, ScopedRateLimit};
use tokio::sync::watch;

/// Rate limits by scope (`global`, `pool:NAME`, `job:NAME` or the bare job
/// name, `endpoint:HOST:PORT`) that replace the defaults.
pub type RateLimitOverrides = BTreeMap<String, RateLimitSpec>;

/// The rate limit in force at `scope`: its override, or else `default`.
fn rate_limit_in_force(overrides: &RateLimitOverrides, scope: &str, default: RateLimitSpec) -> RateLimitSpec {
    let bare_job = scope.strip_prefix("job:");
    overrides.get(scope).or_else(|| bare_job.and_then(|job| overrides.get(job))).copied().unwrap_or(default)
}

/// The scopes a run of `job` in `pool`, reading from `endpoint`, executes
/// under, each following `overrides`.
pub(crate) fn run_rate_limits(
    overrides: &watch::Receiver<RateLimitOverrides>,
    job: &str,
    pool: &str,
    endpoint: Option<String>,
    job_file: RateLimitSpec,
) -> Vec<ScopedRateLimit> {
    let none = RateLimitSpec::default();
    let mut scopes =
        vec![("global".to_string(), none), (format!("pool:{pool}"), none), (ScopedRateLimit::job_scope(job), job_file)];
    scopes.extend(endpoint.map(|endpoint| (format!("endpoint:{endpoint}"), none)));
    scopes
        .into_iter()
        .map(|(scope, default)| ScopedRateLimit {
            spec: follow_scope(overrides.clone(), scope.clone(), default),
            scope,
        })
        .collect()
}

/// A watch of the rate limit in force at `scope`, following `overrides`
/// until every receiver is dropped or `overrides` stops changing for good.
fn follow_scope(
    mut overrides: watch::Receiver<RateLimitOverrides>,
    scope: String,
    default: RateLimitSpec,
) -> watch::Receiver<RateLimitSpec> {
    let (in_force, receiver) = watch::channel(rate_limit_in_force(&overrides.borrow_and_update(), &scope, default));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = in_force.closed() => return,
                changed = overrides.changed() => if changed.is_err() { return },
            }
            let spec = rate_limit_in_force(&overrides.borrow_and_update(), &scope, default);
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
    fn an_override_replaces_the_default_of_the_scope_it_names() {
        let overrides = BTreeMap::from([
            ("orders".to_string(), records_per_second(5)),
            ("job:logs".to_string(), records_per_second(7)),
            ("pool:api".to_string(), records_per_second(9)),
        ]);
        let in_force = |scope| rate_limit_in_force(&overrides, scope, records_per_second(100));
        assert_eq!(in_force("job:orders"), records_per_second(5));
        assert_eq!(in_force("job:logs"), records_per_second(7));
        assert_eq!(in_force("job:other"), records_per_second(100));
        assert_eq!(in_force("pool:api"), records_per_second(9));
        assert_eq!(in_force("pool:orders"), records_per_second(100));
        assert_eq!(
            rate_limit_in_force(&BTreeMap::new(), "job:orders", records_per_second(100)),
            records_per_second(100)
        );
    }

    #[test]
    fn a_run_passes_under_the_global_pool_job_and_endpoint_scopes() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = runtime.enter();
        let overrides = watch::channel(BTreeMap::from([
            ("global".to_string(), records_per_second(1_000)),
            ("endpoint:db:5432".to_string(), records_per_second(50)),
        ]))
        .1;
        let scopes = run_rate_limits(&overrides, "orders", "default", Some("db:5432".into()), records_per_second(100));
        let in_force: Vec<(String, RateLimitSpec)> =
            scopes.iter().map(|scoped| (scoped.scope.clone(), *scoped.spec.borrow())).collect();
        assert_eq!(
            in_force,
            vec![
                ("global".to_string(), records_per_second(1_000)),
                ("pool:default".to_string(), RateLimitSpec::default()),
                ("job:orders".to_string(), records_per_second(100)),
                ("endpoint:db:5432".to_string(), records_per_second(50)),
            ]
        );
    }

    #[tokio::test]
    async fn a_runs_rate_limit_follows_the_overrides() {
        let (overrides, overrides_receiver) = watch::channel(RateLimitOverrides::new());
        let mut rate_limit = follow_scope(overrides_receiver, "job:orders".into(), records_per_second(100));
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
