//! How often a worker rings the doorbell for a run: at once when a shard of
//! the run ends, unless it rang for that run less than [`RING_INTERVAL`]
//! ago; then once more when the interval is over, which tells every shard
//! of the run that ended meanwhile. A ring matters after a quiet spell,
//! when the leader's looks have slowed down to its poll; while shards of a
//! run end often, the leader looks every eighth of a poll anyway (see
//! `LookBeat`), and a ring per shard would only cost the broker a message
//! each (a quarter of the tiny-shard throughput here).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The least time between two rings of a worker for one run.
pub(super) const RING_INTERVAL: Duration = Duration::from_millis(100);

/// What to do about a shard that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ring {
    /// Ring now.
    Now,
    /// Ring at this instant, then call [`RingPace::rung_later`].
    At(Instant),
    /// A ring is due already and will tell this end too.
    Due,
}

/// The rings of one worker, by run.
#[derive(Default)]
pub(super) struct RingPace {
    runs: HashMap<String, RunRings>,
}

struct RunRings {
    last: Instant,
    /// Whether a ring is due at `last + RING_INTERVAL`.
    due: bool,
}

impl RingPace {
    /// A shard of `run_id` ended at `now`: whether and when to ring.
    pub fn ended(&mut self, run_id: &str, now: Instant) -> Ring {
        // Runs not rung for an interval need no entry: their next ring is at once.
        self.runs.retain(|_, rings| rings.due || now.duration_since(rings.last) < RING_INTERVAL);
        match self.runs.get_mut(run_id) {
            None => {
                self.runs.insert(run_id.to_string(), RunRings { last: now, due: false });
                Ring::Now
            }
            Some(rings) if rings.due => Ring::Due,
            Some(rings) => {
                rings.due = true;
                Ring::At(rings.last + RING_INTERVAL)
            }
        }
    }

    /// The ring due for `run_id` went at `now`.
    pub fn rung_later(&mut self, run_id: &str, now: Instant) {
        self.runs.insert(run_id.to_string(), RunRings { last: now, due: false });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_rings_at_once_then_once_per_interval_for_all_that_ended_meanwhile() {
        let mut pace = RingPace::default();
        let start = Instant::now();
        // Instants in tenths of the interval.
        let at = |tenths: u32| start + RING_INTERVAL * tenths / 10;
        assert_eq!(pace.ended("a", start), Ring::Now);
        assert_eq!(pace.ended("b", at(1)), Ring::Now, "another run rings apart");
        assert_eq!(pace.ended("a", at(2)), Ring::At(at(10)));
        assert_eq!(pace.ended("a", at(5)), Ring::Due);
        assert_eq!(pace.ended("a", at(9)), Ring::Due);
        pace.rung_later("a", at(10));
        assert_eq!(pace.ended("a", at(12)), Ring::At(at(20)));
        pace.rung_later("a", at(20));
        // A quiet interval later, the next end rings at once again.
        assert_eq!(pace.ended("a", at(31)), Ring::Now);
        assert_eq!(pace.runs.len(), 1, "run b's entry went once its interval was over");
    }
}
