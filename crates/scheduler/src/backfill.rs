//! The intervals of a backfill: a past range cut into one run per interval,
//! along a job's schedule or, for a job without one, in fixed steps.
//!
//! A backfill is bounded by [`MAX_BACKFILL_INTERVALS`] so that a typo in a
//! range (a year instead of a day on a per-second schedule) is an error, not
//! millions of runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cron::CronSchedule;
use crate::delta::to_delta;

/// The most intervals one backfill may make.
pub const MAX_BACKFILL_INTERVALS: usize = 10_000;

/// The half-open time range `[start, end)` one backfill run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Why a backfill range cannot be cut into intervals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillError {
    #[error("backfill range is empty: `from` ({from}) must be before `to` ({to})")]
    EmptyRange { from: DateTime<Utc>, to: DateTime<Utc> },
    #[error("backfill step must be longer than zero")]
    ZeroStep,
    #[error("backfill from {from} to {to} makes more than {limit} intervals: split the range or use a coarser step")]
    TooManyIntervals { from: DateTime<Utc>, to: DateTime<Utc>, limit: usize },
}

/// One interval per schedule time in `[from, to)`, from that time to the next
/// schedule time (which may lie at or past `to`: the last run covers a whole
/// interval). Empty when no schedule time falls in the range.
pub fn intervals(
    schedule: &CronSchedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Interval>, BackfillError> {
    check_range(from, to)?;
    let first = schedule.next_after(from - chrono::TimeDelta::nanoseconds(1));
    let starts = std::iter::successors(first, |start| schedule.next_after(*start)).take_while(|start| *start < to);
    let mut intervals = Vec::new();
    for start in starts {
        if intervals.len() == MAX_BACKFILL_INTERVALS {
            return Err(BackfillError::TooManyIntervals { from, to, limit: MAX_BACKFILL_INTERVALS });
        }
        // Past the last schedule time croner knows (year 5000), the interval ends at `to`.
        let end = schedule.next_after(start).unwrap_or(to);
        intervals.push(Interval { start, end });
    }
    Ok(intervals)
}

/// `[from, to)` cut into intervals of `step`, the last one clipped at `to`.
pub fn fixed_intervals(step: Duration, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Interval>, BackfillError> {
    check_range(from, to)?;
    if step.is_zero() {
        return Err(BackfillError::ZeroStep);
    }
    let span = (to - from).to_std().expect("`to` is after `from`");
    if span.as_nanos().div_ceil(step.as_nanos()) > MAX_BACKFILL_INTERVALS as u128 {
        return Err(BackfillError::TooManyIntervals { from, to, limit: MAX_BACKFILL_INTERVALS });
    }
    let step = to_delta(step);
    let mut intervals = Vec::new();
    let mut start = from;
    while start < to {
        let end = start.checked_add_signed(step).map_or(to, |end| end.min(to));
        intervals.push(Interval { start, end });
        start = end;
    }
    Ok(intervals)
}

fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), BackfillError> {
    if from >= to {
        return Err(BackfillError::EmptyRange { from, to });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn interval(start: &str, end: &str) -> Interval {
        Interval { start: at(start), end: at(end) }
    }

    #[test]
    fn schedule_intervals_start_in_the_range_and_end_at_the_next_time() {
        let daily = CronSchedule::parse("0 2 * * *", "UTC").unwrap();
        let got = intervals(&daily, at("2025-01-01T02:00:00Z"), at("2025-01-03T12:00:00Z")).unwrap();
        assert_eq!(
            got,
            [
                interval("2025-01-01T02:00:00Z", "2025-01-02T02:00:00Z"),
                interval("2025-01-02T02:00:00Z", "2025-01-03T02:00:00Z"),
                interval("2025-01-03T02:00:00Z", "2025-01-04T02:00:00Z"),
            ]
        );
        // `to` is excluded, and a range between two schedule times has no interval.
        assert_eq!(intervals(&daily, at("2025-01-01T00:00:00Z"), at("2025-01-01T02:00:00Z")).unwrap(), []);
    }

    #[test]
    fn fixed_intervals_clip_the_last_one() {
        let got = fixed_intervals(Duration::from_secs(3_600), at("2025-01-01T00:00:00Z"), at("2025-01-01T02:30:00Z"));
        assert_eq!(
            got.unwrap(),
            [
                interval("2025-01-01T00:00:00Z", "2025-01-01T01:00:00Z"),
                interval("2025-01-01T01:00:00Z", "2025-01-01T02:00:00Z"),
                interval("2025-01-01T02:00:00Z", "2025-01-01T02:30:00Z"),
            ]
        );
    }

    #[test]
    fn rejects_empty_ranges_zero_steps_and_huge_backfills() {
        let (from, to) = (at("2025-01-02T00:00:00Z"), at("2025-01-01T00:00:00Z"));
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(intervals(&every_second, from, to).unwrap_err(), BackfillError::EmptyRange { from, to });
        assert_eq!(intervals(&every_second, from, from).unwrap_err(), BackfillError::EmptyRange { from, to: from });
        assert_eq!(fixed_intervals(Duration::ZERO, to, from).unwrap_err(), BackfillError::ZeroStep);

        let too_many = BackfillError::TooManyIntervals { from: to, to: from, limit: MAX_BACKFILL_INTERVALS };
        assert_eq!(intervals(&every_second, to, from).unwrap_err(), too_many);
        assert_eq!(fixed_intervals(Duration::from_secs(1), to, from).unwrap_err(), too_many);
        assert_eq!(
            too_many.to_string(),
            "backfill from 2025-01-01 00:00:00 UTC to 2025-01-02 00:00:00 UTC makes more than 10000 intervals: \
             split the range or use a coarser step"
        );
        // Exactly at the limit is fine.
        let limit_seconds = to + TimeDelta::seconds(MAX_BACKFILL_INTERVALS as i64);
        assert_eq!(intervals(&every_second, to, limit_seconds).unwrap().len(), MAX_BACKFILL_INTERVALS);
        assert_eq!(fixed_intervals(Duration::from_secs(1), to, limit_seconds).unwrap().len(), MAX_BACKFILL_INTERVALS);
    }

    /// Each interval ends where the next one starts.
    fn contiguous(intervals: &[Interval]) -> bool {
        intervals.windows(2).all(|pair| pair[0].end == pair[1].start)
    }

    proptest! {
        #[test]
        fn fixed_intervals_tile_the_range(
            from_millis in 0i64..10_000_000_000,
            span_millis in 1i64..100_000_000,
            step_millis in 1u64..100_000_000,
        ) {
            let from = DateTime::from_timestamp_millis(from_millis).unwrap();
            let to = from + TimeDelta::milliseconds(span_millis);
            match fixed_intervals(Duration::from_millis(step_millis), from, to) {
                Ok(intervals) => {
                    prop_assert_eq!(intervals.first().map(|first| first.start), Some(from));
                    prop_assert_eq!(intervals.last().map(|last| last.end), Some(to));
                    prop_assert!(contiguous(&intervals));
                    prop_assert!(intervals.iter().all(|interval| interval.start < interval.end));
                    let step = TimeDelta::milliseconds(step_millis as i64);
                    prop_assert!(intervals.iter().all(|interval| interval.end - interval.start <= step));
                    prop_assert!(intervals.len() <= MAX_BACKFILL_INTERVALS);
                }
                Err(error) => {
                    prop_assert!(matches!(error, BackfillError::TooManyIntervals { .. }), "{}", error);
                    prop_assert!(span_millis as u64 > step_millis * MAX_BACKFILL_INTERVALS as u64);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn schedule_intervals_are_contiguous_schedule_times_in_the_range(
            expression in prop::sample::select(&["*/13 * * * *", "*/5 * * * *", "30 2 * * *", "0 0 * * MON"][..]),
            timezone in prop::sample::select(&["UTC", "Europe/Paris", "America/New_York"][..]),
            from_secs in 1_735_689_600i64..1_767_225_600,
            span_secs in 1i64..1_000_000,
        ) {
            let schedule = CronSchedule::parse(expression, timezone).unwrap();
            let from = DateTime::from_timestamp(from_secs, 0).unwrap();
            let to = from + TimeDelta::seconds(span_secs);
            let intervals = intervals(&schedule, from, to).unwrap();
            prop_assert!(contiguous(&intervals));
            for interval in &intervals {
                prop_assert!(from <= interval.start && interval.start < to && interval.start < interval.end);
                prop_assert_eq!(schedule.next_after(interval.start), Some(interval.end));
            }
            let first_in_range = schedule.next_after(from - TimeDelta::seconds(1)).filter(|first| *first < to);
            prop_assert_eq!(intervals.first().map(|first| first.start), first_in_range);
            prop_assert!(intervals.last().is_none_or(|last| last.end >= to), "a schedule time in the range is left out");
        }
    }
}
