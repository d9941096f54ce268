//! When the leader asks a straggling shard to split (dynamic rebalancing):
//! only while a worker slot would otherwise stay idle — no shard of the run
//! is pending or waiting for a slot, no shard of any run waits for one, a
//! slot is free and the job's parallelism leaves room for one more shard —
//! and only a shard running for longer than the straggler
//! threshold: twice the median time the run's finished shards took, and at
//! least the configured minimum. The longest-running such shard is chosen.
//! A pure decision; the remote run follows it (see `remote.rs`).

use std::time::Duration;

use super::dispatch::DispatchLoad;

/// The default of `ServiceConfig::straggler_after`: splitting a shard
/// costs a query of the source and a new shard's start, worth it only for
/// shards that run a while.
pub const DEFAULT_STRAGGLER_AFTER: Duration = Duration::from_secs(30);

/// How much longer than the median finished shard a straggler has run.
const MEDIAN_FACTOR: u32 = 2;

/// What the decision looks at, for one run.
#[derive(Debug, Clone)]
pub struct RunView<'a> {
    /// Shards of the run that are pending or waiting for a slot.
    pub queued: usize,
    /// Shards of the run holding a slot, and the most its job may hold.
    pub holding: usize,
    pub job_limit: usize,
    /// The dispatcher's slots, across every run.
    pub load: DispatchLoad,
    /// How long each finished shard of the run ran.
    pub finished: &'a [Duration],
    /// The running shards that may be asked (not asked already for what
    /// they run now), with how long they have been running.
    pub running: &'a [(String, Duration)],
    /// A shard running for less than this is never a straggler.
    pub minimum: Duration,
}

/// A shard to ask to split, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitDecision {
    pub shard_id: String,
    pub reason: String,
}

/// The median of `durations`, the lower one of an even count; `None` when empty.
fn median(durations: &[Duration]) -> Option<Duration> {
    let mut sorted = durations.to_vec();
    sorted.sort();
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// The shard to ask to split now, if any; see the module documentation.
pub fn straggler(view: &RunView<'_>) -> Option<SplitDecision> {
    let free = view.load.slots.saturating_sub(view.load.busy);
    if view.queued > 0 || view.load.waiting > 0 || free == 0 || view.holding >= view.job_limit {
        return None;
    }
    let median = median(view.finished);
    let threshold = median.map_or(view.minimum, |median| (median * MEDIAN_FACTOR).max(view.minimum));
    let (shard_id, running_for) = view
        .running
        .iter()
        .filter(|(_, running_for)| *running_for > threshold)
        .max_by_key(|(_, running_for)| *running_for)?;
    let basis = match median {
        Some(median) => format!(
            "{MEDIAN_FACTOR}x the median {} of {} finished shards, at least {}",
            seconds(median),
            view.finished.len(),
            seconds(view.minimum)
        ),
        None => "no shard has finished yet".to_string(),
    };
    let reason = format!(
        "straggler: running for {}, longer than {} ({basis}), while {free} worker slot{} idle and no shard waits",
        seconds(*running_for),
        seconds(threshold),
        if free == 1 { " is" } else { "s are" },
    );
    Some(SplitDecision { shard_id: shard_id.clone(), reason })
}

/// `duration` in seconds to a tenth, for a readable reason.
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn load(slots: usize, busy: usize, waiting: usize) -> DispatchLoad {
        DispatchLoad { slots, busy, waiting }
    }

    fn view<'a>(finished: &'a [Duration], running: &'a [(String, Duration)]) -> RunView<'a> {
        RunView { queued: 0, holding: 1, job_limit: 4, load: load(2, 1, 0), finished, running, minimum: 5 * SECOND }
    }

    fn running(shards: &[(&str, u64)]) -> Vec<(String, Duration)> {
        shards.iter().map(|(id, secs)| (id.to_string(), Duration::from_secs(*secs))).collect()
    }

    #[test]
    fn the_longest_shard_past_twice_the_median_is_split() {
        let finished = [10 * SECOND, 12 * SECOND, 40 * SECOND];
        let shards = running(&[("a", 20), ("b", 30), ("c", 25)]);
        let decision = straggler(&view(&finished, &shards)).unwrap();
        assert_eq!(decision.shard_id, "b");
        assert_eq!(
            decision.reason,
            "straggler: running for 30.0s, longer than 24.0s (2x the median 12.0s of 3 finished shards, at least \
             5.0s), while 1 worker slot is idle and no shard waits"
        );
        let shards = running(&[("a", 20), ("c", 24)]);
        assert_eq!(straggler(&view(&finished, &shards)), None, "not past twice the median");
    }

    #[test]
    fn without_finished_shards_the_minimum_decides() {
        let shards = running(&[("k0000", 6)]);
        let decision = straggler(&view(&[], &shards)).unwrap();
        assert_eq!(decision.shard_id, "k0000");
        assert!(decision.reason.contains("longer than 5.0s (no shard has finished yet)"), "{}", decision.reason);
        assert_eq!(straggler(&view(&[], &running(&[("k0000", 5)]))), None);
        // A fast run's median does not bring the threshold under the minimum.
        assert_eq!(straggler(&view(&[SECOND, SECOND], &running(&[("k0000", 4)]))), None);
    }

    #[test]
    fn no_split_while_work_waits_or_no_slot_is_free() {
        let shards = running(&[("a", 60)]);
        let base = view(&[], &shards);
        assert!(straggler(&base).is_some());
        assert_eq!(straggler(&RunView { queued: 1, ..base.clone() }), None);
        assert_eq!(straggler(&RunView { load: load(2, 2, 0), ..base.clone() }), None);
        assert_eq!(straggler(&RunView { load: load(3, 1, 1), ..base.clone() }), None);
        assert_eq!(straggler(&RunView { load: load(1, 3, 0), ..base.clone() }), None, "capacity shrank");
        assert_eq!(straggler(&RunView { holding: 4, ..base.clone() }), None, "the job is at its parallelism");
        assert_eq!(median(&[3 * SECOND, SECOND, 2 * SECOND, 4 * SECOND]), Some(2 * SECOND));
    }

    proptest! {
        /// A decision names a running shard past the threshold and no shorter
        /// than any other candidate, and comes only when a slot would idle.
        #[test]
        fn decisions_pick_the_longest_straggler_only_when_a_slot_idles(
            finished in proptest::collection::vec(0u64..100, 0..8),
            running in proptest::collection::vec(0u64..300, 0..8),
            queued in 0usize..3,
            slots in 0usize..4,
            busy in 0usize..4,
            waiting in 0usize..2,
            holding in 0usize..4,
            job_limit in 1usize..4,
            minimum in 0u64..50,
        ) {
            let finished: Vec<Duration> = finished.into_iter().map(Duration::from_secs).collect();
            let running: Vec<(String, Duration)> =
                running.into_iter().enumerate().map(|(i, secs)| (format!("s{i}"), Duration::from_secs(secs))).collect();
            let minimum = Duration::from_secs(minimum);
            let load = load(slots, busy, waiting);
            let view = RunView { queued, holding, job_limit, load, finished: &finished, running: &running, minimum };
            let idle = queued == 0 && waiting == 0 && slots > busy && holding < job_limit;
            let threshold = median(&finished).map_or(minimum, |m| (m * 2).max(minimum));
            match straggler(&view) {
                None => prop_assert!(!idle || running.iter().all(|(_, d)| *d <= threshold)),
                Some(decision) => {
                    prop_assert!(idle);
                    let chosen = running.iter().find(|(id, _)| *id == decision.shard_id).unwrap().1;
                    prop_assert!(chosen > minimum);
                    prop_assert!(median(&finished).is_none_or(|m| chosen > m * 2));
                    prop_assert!(running.iter().all(|(_, d)| *d <= chosen));
                }
            }
        }
    }
}
