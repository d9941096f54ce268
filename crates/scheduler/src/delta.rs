//! The one conversion between the durations of configuration
//! (`std::time::Duration`, as in `HumanDuration`) and the signed deltas that
//! `chrono` adds to instants.

use std::time::Duration;

use chrono::TimeDelta;

/// `duration` as a chrono delta, saturating at [`TimeDelta::MAX`] for
/// durations chrono cannot hold (beyond about 292 million years).
pub(crate) fn to_delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_saturates() {
        assert_eq!(to_delta(Duration::from_millis(1_500)), TimeDelta::milliseconds(1_500));
        assert_eq!(to_delta(Duration::MAX), TimeDelta::MAX);
    }
}
