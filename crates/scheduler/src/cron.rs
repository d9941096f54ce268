//! Cron schedules in a time zone, and the decision each scheduler tick makes
//! for a scheduled job: which schedule time, if any, gets a run now.
//!
//! A [`CronSchedule`] is a croner pattern of 5 fields (minute precision) or 6
//! (a leading seconds field), read on the wall clock of an IANA time zone.
//! Daylight saving time follows croner's (OCPS) rules: a fixed-time job whose
//! local time does not exist on the day clocks spring forward runs at the first
//! instant after the gap, so a daily job still runs that day; when clocks fall
//! back, a fixed-time job runs once, on the first of the repeated times, while
//! an interval job (`*/15 * * * *`) keeps its real-time rhythm through both
//! passes. Every schedule time is a distinct instant, so the store's unique
//! key on (job, schedule time) never collides.
//!
//! [`due`] is pure: the caller passes the current time and the last schedule
//! time already planned, and stores the returned `planned_through`. A tick
//! fires at most one run per job, whatever the downtime before it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use crate::dag::UpstreamFailurePolicy;
use crate::delta::to_delta;
use crate::overlap::OverlapPolicy;

/// A cron schedule could not be built from a job's `[schedule]` table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is not a 5- or 6-field cron pattern.
    #[error("invalid cron expression `{expression}`: {reason}")]
    InvalidCron { expression: String, reason: String },
    /// The pattern is valid but matches no date at all (e.g. `0 0 30 2 *`).
    #[error("cron expression `{expression}` never fires: no date matches it")]
    NeverFires { expression: String },
    /// The time zone is not an IANA name.
    #[error("unknown time zone `{timezone}`: expected an IANA name such as \"Europe/Paris\" or \"UTC\"")]
    UnknownTimezone { timezone: String },
}

/// The `[schedule]` table of a job file.
///
/// ```toml
/// [schedule]
/// cron = "0 */15 * * * *"        # optional leading seconds field
/// timezone = "Europe/Paris"      # IANA name, default "UTC"
/// misfire = "fire_once"          # after downtime: "skip" (default) or "fire_once"
/// overlap = "queue"              # while a run is active: "skip" (default), "queue", "cancel_previous", "allow"
/// on_upstream_failure = "skip"   # an upstream run failed: "block" (default) or "skip"
/// ```
///
/// Without `cron`, a job runs only when triggered: by hand, by a backfill,
/// or after its upstream jobs for their schedule times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A 5-field (minute precision) or 6-field (leading seconds) cron pattern.
    #[serde(default)]
    pub cron: Option<String>,
    /// The IANA time zone whose wall clock the pattern reads.
    #[serde(default = "utc_name")]
    pub timezone: String,
    /// What a tick does with schedule times that passed during downtime.
    #[serde(default)]
    pub misfire: MisfirePolicy,
    /// What a due run does while an earlier run of the job is active.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// What a run does when an upstream run for its schedule time failed.
    #[serde(default)]
    pub on_upstream_failure: UpstreamFailurePolicy,
}

fn utc_name() -> String {
    "UTC".to_string()
}

impl ScheduleSpec {
    /// The parsed cron schedule, `None` without `cron`; the error says what
    /// is wrong with the pattern or the time zone.
    pub fn schedule(&self) -> Result<Option<CronSchedule>, ScheduleError> {
        self.cron.as_deref().map(|cron| CronSchedule::parse(cron, &self.timezone)).transpose()
    }
}

/// What a tick does when the latest schedule time passed more than the grace
/// period ago (the scheduler was down or stalled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Fire nothing; every missed schedule time is counted and dropped.
    #[default]
    Skip,
    /// Fire the latest missed schedule time, once; earlier ones are dropped.
    FireOnce,
}

/// A parsed cron pattern and the time zone it is read in.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    timezone: Tz,
    cron: Cron,
}

/// Any pattern that matches some date matches one within every 400 years
/// (the Gregorian calendar, weekdays included, repeats every 400 years), and
/// croner searches up to the year 5000: a pattern with no time after this
/// instant never fires.
const NEVER_FIRES_PROBE: &str = "2000-01-01T00:00:00Z";

impl CronSchedule {
    /// Parses a 5-field (seconds are 0) or 6-field (leading seconds) pattern,
    /// read in the IANA time zone `timezone`. Nicknames such as `@daily` are
    /// accepted; a year field is not. A pattern that can never match (such as
    /// the 30th of February) is rejected here rather than found at every tick.
    pub fn parse(expression: &str, timezone: &str) -> Result<CronSchedule, ScheduleError> {
        let timezone: Tz =
            timezone.parse().map_err(|_| ScheduleError::UnknownTimezone { timezone: timezone.to_string() })?;
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expression).map_err(|error| ScheduleError::InvalidCron {
            expression: expression.to_string(),
            reason: lowercase_reason(&error),
        })?;
        let schedule = CronSchedule { expression: expression.to_string(), timezone, cron };
        let probe = NEVER_FIRES_PROBE.parse().expect("the probe is a valid instant");
        if schedule.next_after(probe).is_none() {
            return Err(ScheduleError::NeverFires { expression: expression.to_string() });
        }
        Ok(schedule)
    }

    /// The pattern as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the time zone.
    pub fn timezone(&self) -> &str {
        self.timezone.name()
    }

    /// The first schedule time strictly after `time`, or `None` past the year
    /// 5000. Schedule times are whole seconds.
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = time.with_timezone(&self.timezone);
        self.cron.find_next_occurrence(&local, false).ok().map(|next| next.with_timezone(&Utc))
    }

    /// The schedule times strictly after `time`, in order.
    pub fn upcoming(&self, time: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(time), |previous| self.next_after(*previous))
    }

    /// The latest schedule time at or before `time`.
    fn latest_at_or_before(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = time.with_timezone(&self.timezone);
        self.cron.find_previous_occurrence(&local, true).ok().map(|previous| previous.with_timezone(&Utc))
    }
}

fn lowercase_reason(error: &CronError) -> String {
    let text = error.to_string();
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// What one tick decided for one scheduled job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The schedule time to create a run for now, if any.
    pub fire: Option<DateTime<Utc>>,
    /// How many schedule times this tick dropped without a run; exact up to
    /// [`MAX_COUNTED_MISSES`], where it saturates.
    pub missed: u32,
    /// The new `last_planned` to store: the latest schedule time this tick
    /// considered, fired or missed (unchanged when there was none).
    pub planned_through: DateTime<Utc>,
}

/// The count of missed schedule times saturates here, so that a tick after a
/// long outage of a very frequent schedule (every second for a week) costs a
/// bounded number of lookups.
pub const MAX_COUNTED_MISSES: u32 = 10_000;

/// Decides which schedule time, if any, a tick at `now` fires.
///
/// The candidates are the schedule times in `(last_planned, now]`, or
/// `(created, now]` before the first plan. The latest candidate fires when it
/// is at most `grace` old; otherwise the scheduler was down or stalled, and
/// `misfire` decides: [`MisfirePolicy::Skip`] fires nothing,
/// [`MisfirePolicy::FireOnce`] fires the latest candidate anyway. Earlier
/// candidates are always missed: a tick never fires a burst of catch-up runs
/// (a backfill is the way to run past intervals).
///
/// Calling again with the returned `planned_through` and the same `now` fires
/// nothing. Cost: one schedule lookup per candidate, and never more than
/// [`MAX_COUNTED_MISSES`] + 3 lookups.
pub fn due(
    schedule: &CronSchedule,
    misfire: MisfirePolicy,
    last_planned: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Due {
    let start = last_planned.unwrap_or(created);
    let mut candidates: u32 = 0;
    let mut latest = None;
    for time in schedule.upcoming(start).take_while(|time| *time <= now) {
        candidates += 1;
        latest = Some(time);
        if candidates > MAX_COUNTED_MISSES {
            // Stop counting: jump straight to the latest candidate.
            latest = schedule.latest_at_or_before(now).or(latest);
            break;
        }
    }
    let Some(latest) = latest else {
        return Due { fire: None, missed: 0, planned_through: start };
    };
    let on_time = now - latest <= to_delta(grace);
    let fire = (on_time || misfire == MisfirePolicy::FireOnce).then_some(latest);
    let missed = (candidates - u32::from(fire.is_some())).min(MAX_COUNTED_MISSES);
    Due { fire, missed, planned_through: latest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn schedule(expression: &str, timezone: &str) -> CronSchedule {
        CronSchedule::parse(expression, timezone).unwrap()
    }

    fn times(schedule: &CronSchedule, after: &str, count: usize) -> Vec<DateTime<Utc>> {
        schedule.upcoming(at(after)).take(count).collect()
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn five_fields_fire_on_the_minute_and_six_fields_on_the_second() {
        let minutes = schedule("*/15 * * * *", "UTC");
        assert_eq!(
            times(&minutes, "2025-01-01T10:07:30Z", 2),
            [at("2025-01-01T10:15:00Z"), at("2025-01-01T10:30:00Z")]
        );
        let seconds = schedule("*/20 * * * * *", "UTC");
        assert_eq!(
            times(&seconds, "2025-01-01T10:07:30Z", 2),
            [at("2025-01-01T10:07:40Z"), at("2025-01-01T10:08:00Z")]
        );
    }

    #[test]
    fn next_after_is_strictly_after() {
        let every_second = schedule("* * * * * *", "UTC");
        assert_eq!(every_second.next_after(at("2025-01-01T00:00:00Z")), Some(at("2025-01-01T00:00:01Z")));
        assert_eq!(every_second.next_after(at("2025-01-01T00:00:00.5Z")), Some(at("2025-01-01T00:00:01Z")));
        assert_eq!(every_second.next_after(at("2024-12-31T23:59:59.999Z")), Some(at("2025-01-01T00:00:00Z")));
    }

    #[test]
    fn reads_the_wall_clock_of_its_time_zone() {
        let nine_in_paris = schedule("0 9 * * *", "Europe/Paris");
        // CET is UTC+1 in winter, CEST is UTC+2 in summer.
        assert_eq!(times(&nine_in_paris, "2025-01-15T00:00:00Z", 1), [at("2025-01-15T08:00:00Z")]);
        assert_eq!(times(&nine_in_paris, "2025-07-15T00:00:00Z", 1), [at("2025-07-15T07:00:00Z")]);
        assert_eq!(nine_in_paris.timezone(), "Europe/Paris");
        assert_eq!(nine_in_paris.expression(), "0 9 * * *");
    }

    #[test]
    fn a_fixed_time_in_the_spring_gap_runs_right_after_it() {
        // Paris skips 02:00-03:00 local on 2025-03-30 (01:00Z).
        let half_past_two = schedule("30 2 * * *", "Europe/Paris");
        assert_eq!(
            times(&half_past_two, "2025-03-29T12:00:00Z", 2),
            [at("2025-03-30T01:00:00Z"), at("2025-03-31T00:30:00Z")]
        );
        // An interval job simply has no times inside the gap.
        let every_half_hour = schedule("*/30 * * * *", "Europe/Paris");
        assert_eq!(
            times(&every_half_hour, "2025-03-30T00:00:00Z", 3),
            [at("2025-03-30T00:30:00Z"), at("2025-03-30T01:00:00Z"), at("2025-03-30T01:30:00Z")]
        );
    }

    #[test]
    fn a_repeated_fixed_time_in_autumn_fires_once() {
        // Paris repeats 02:00-03:00 local on 2025-10-26 (00:00Z-01:00Z twice).
        let half_past_two = schedule("30 2 * * *", "Europe/Paris");
        assert_eq!(
            times(&half_past_two, "2025-10-25T12:00:00Z", 2),
            [at("2025-10-26T00:30:00Z"), at("2025-10-27T01:30:00Z")]
        );
        // An interval job keeps its real-time rhythm through both passes.
        let every_half_hour = schedule("*/30 * * * *", "Europe/Paris");
        assert_eq!(
            times(&every_half_hour, "2025-10-25T23:45:00Z", 4),
            [
                at("2025-10-26T00:00:00Z"),
                at("2025-10-26T00:30:00Z"),
                at("2025-10-26T01:00:00Z"),
                at("2025-10-26T01:30:00Z")
            ]
        );
    }

    #[test]
    fn rejects_bad_expressions_and_time_zones() {
        for expression in ["", "* * * *", "0 0 * * * * 2025", "61 * * * *", "a b c d e"] {
            let error = CronSchedule::parse(expression, "UTC").unwrap_err();
            assert!(matches!(error, ScheduleError::InvalidCron { .. }), "{expression}: {error}");
            let message = error.to_string();
            assert!(message.starts_with("invalid cron expression"), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
        assert_eq!(
            CronSchedule::parse("0 0 30 2 *", "UTC").unwrap_err(),
            ScheduleError::NeverFires { expression: "0 0 30 2 *".into() }
        );
        assert_eq!(
            CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::UnknownTimezone { timezone: "Mars/Olympus".into() }
        );
        // Rare but real dates are accepted: 29 February on a Monday.
        assert!(CronSchedule::parse("0 0 29 2 +MON", "UTC").is_ok());
        assert!(CronSchedule::parse("@daily", "Asia/Kolkata").is_ok());
    }

    #[test]
    fn schedule_spec_reads_a_job_file_table_with_defaults() {
        let spec: ScheduleSpec = toml::from_str(r#"cron = "0 * * * *""#).unwrap();
        assert_eq!(
            spec,
            ScheduleSpec {
                cron: Some("0 * * * *".into()),
                timezone: "UTC".into(),
                misfire: MisfirePolicy::Skip,
                overlap: OverlapPolicy::Skip,
                on_upstream_failure: UpstreamFailurePolicy::Block,
            }
        );
        let spec: ScheduleSpec = toml::from_str(
            r#"
            cron = "*/10 * * * * *"
            timezone = "America/New_York"
            misfire = "fire_once"
            overlap = "cancel_previous"
            on_upstream_failure = "skip"
            "#,
        )
        .unwrap();
        assert_eq!(spec.misfire, MisfirePolicy::FireOnce);
        assert_eq!(spec.overlap, OverlapPolicy::CancelPrevious);
        assert_eq!(spec.on_upstream_failure, UpstreamFailurePolicy::Skip);
        assert_eq!(spec.schedule().unwrap().unwrap().timezone(), "America/New_York");

        let downstream_only: ScheduleSpec = toml::from_str(r#"overlap = "queue""#).unwrap();
        assert_eq!(downstream_only.schedule().unwrap().map(|schedule| schedule.expression().to_string()), None);
        let bad_zone: ScheduleSpec = toml::from_str("cron = \"* * * * *\"\ntimezone = \"Paris\"").unwrap();
        assert_eq!(bad_zone.schedule().unwrap_err(), ScheduleError::UnknownTimezone { timezone: "Paris".into() });

        let unknown = toml::from_str::<ScheduleSpec>("cron = \"* * * * *\"\ntz = \"UTC\"").unwrap_err();
        assert!(unknown.to_string().contains("unknown field `tz`"), "{unknown}");
        let bad_policy = toml::from_str::<ScheduleSpec>("cron = \"* * * * *\"\nmisfire = \"burst\"").unwrap_err();
        assert!(bad_policy.to_string().contains("unknown variant `burst`"), "{bad_policy}");
    }

    #[test]
    fn an_on_time_tick_fires_the_latest_schedule_time() {
        let every_minute = schedule("* * * * *", "UTC");
        let created = at("2025-01-01T09:59:30Z");
        let due = due(&every_minute, MisfirePolicy::Skip, None, created, at("2025-01-01T10:00:02Z"), 5 * SECOND);
        let fired = at("2025-01-01T10:00:00Z");
        assert_eq!(due, Due { fire: Some(fired), missed: 0, planned_through: fired });
    }

    #[test]
    fn nothing_is_due_before_the_next_schedule_time() {
        let every_minute = schedule("* * * * *", "UTC");
        let last = at("2025-01-01T10:00:00Z");
        let due = due(&every_minute, MisfirePolicy::Skip, Some(last), last, at("2025-01-01T10:00:59Z"), SECOND);
        assert_eq!(due, Due { fire: None, missed: 0, planned_through: last });
    }

    #[test]
    fn after_downtime_skip_fires_nothing_and_fire_once_fires_the_latest() {
        let every_minute = schedule("* * * * *", "UTC");
        let last = Some(at("2025-01-01T10:00:00Z"));
        // Down from 10:00:00 to 10:05:30: 10:01 .. 10:05 passed, the latest 30 s ago.
        let now = at("2025-01-01T10:05:30Z");
        let latest = at("2025-01-01T10:05:00Z");
        let skip = due(&every_minute, MisfirePolicy::Skip, last, at("2025-01-01T00:00:00Z"), now, 10 * SECOND);
        assert_eq!(skip, Due { fire: None, missed: 5, planned_through: latest });
        let once = due(&every_minute, MisfirePolicy::FireOnce, last, at("2025-01-01T00:00:00Z"), now, 10 * SECOND);
        assert_eq!(once, Due { fire: Some(latest), missed: 4, planned_through: latest });
        // With a grace that covers the delay, the latest is on time under either policy.
        let late_but_graced =
            due(&every_minute, MisfirePolicy::Skip, last, at("2025-01-01T00:00:00Z"), now, 60 * SECOND);
        assert_eq!(late_but_graced, once);
    }

    #[test]
    fn a_long_outage_of_a_frequent_schedule_saturates_the_count() {
        let every_second = schedule("* * * * * *", "UTC");
        let created = at("2025-01-01T00:00:00Z");
        let now = at("2025-01-08T00:00:00.250Z");
        let skip = due(&every_second, MisfirePolicy::Skip, None, created, now, Duration::ZERO);
        assert_eq!(skip, Due { fire: None, missed: MAX_COUNTED_MISSES, planned_through: at("2025-01-08T00:00:00Z") });
        let again = due(&every_second, MisfirePolicy::Skip, Some(skip.planned_through), created, now, Duration::ZERO);
        assert_eq!(again, Due { fire: None, missed: 0, planned_through: skip.planned_through });
    }

    const EXPRESSIONS: &[&str] = &[
        "* * * * * *",
        "*/7 * * * * *",
        "10,40 * * * * *",
        "* * * * *",
        "*/5 * * * *",
        "30 2 * * *",
        "0 30 2 * * *",
        "15 1-3 * * *",
        "0 0 * * MON-FRI",
    ];

    /// Daylight saving changes in 2025 (Lord Howe's moves by 30 minutes), and
    /// an ordinary instant in two zones without daylight saving.
    const CLOCK_CHANGES: &[(&str, &str)] = &[
        ("Europe/Paris", "2025-03-30T01:00:00Z"),
        ("Europe/Paris", "2025-10-26T01:00:00Z"),
        ("America/New_York", "2025-03-09T07:00:00Z"),
        ("America/New_York", "2025-11-02T06:00:00Z"),
        ("Australia/Lord_Howe", "2025-04-05T15:00:00Z"),
        ("Australia/Lord_Howe", "2025-10-04T15:30:00Z"),
        ("UTC", "2025-06-01T00:00:00Z"),
        ("Asia/Kolkata", "2025-06-01T00:00:00Z"),
    ];

    /// A schedule in one of the zones above, and an instant `offset_millis`
    /// away from that zone's clock change.
    fn any_schedule_near_a_clock_change(
        offset_millis: std::ops::Range<i64>,
    ) -> impl Strategy<Value = (CronSchedule, DateTime<Utc>)> {
        (prop::sample::select(EXPRESSIONS), prop::sample::select(CLOCK_CHANGES), offset_millis).prop_map(
            |(expression, (timezone, change), offset)| {
                (schedule(expression, timezone), at(change) + chrono::TimeDelta::milliseconds(offset))
            },
        )
    }

    const THREE_HOURS_MILLIS: i64 = 3 * 3_600_000;

    /// The schedule times in `(start, end]`, found one by one.
    fn candidates(schedule: &CronSchedule, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        schedule.upcoming(start).take_while(|time| *time <= end).collect()
    }

    proptest! {
        #[test]
        fn next_after_and_latest_at_or_before_agree(
            (schedule, time) in any_schedule_near_a_clock_change(-THREE_HOURS_MILLIS..THREE_HOURS_MILLIS),
        ) {
            let next = schedule.next_after(time).unwrap();
            prop_assert!(next > time);
            let latest = schedule.latest_at_or_before(time).unwrap();
            prop_assert!(latest <= time);
            prop_assert_eq!(schedule.next_after(latest), Some(next), "no schedule time between {} and {}", latest, next);
            prop_assert_eq!(schedule.latest_at_or_before(next), Some(next));
        }

        #[test]
        fn due_fires_a_schedule_time_counts_the_rest_and_is_idempotent(
            (schedule, start) in any_schedule_near_a_clock_change(-THREE_HOURS_MILLIS..THREE_HOURS_MILLIS),
            misfire in prop::sample::select(&[MisfirePolicy::Skip, MisfirePolicy::FireOnce][..]),
            elapsed_millis in 0i64..2 * 3_600_000,
            grace_millis in 0u64..120_000,
            first_plan: bool,
        ) {
            let now = start + chrono::TimeDelta::milliseconds(elapsed_millis);
            let grace = Duration::from_millis(grace_millis);
            let (last_planned, created) = if first_plan { (None, start) } else { (Some(start), start - chrono::TimeDelta::days(30)) };
            let expected = candidates(&schedule, start, now);
            let due = due(&schedule, misfire, last_planned, created, now, grace);

            prop_assert_eq!(due.planned_through, expected.last().copied().unwrap_or(start));
            if let Some(fire) = due.fire {
                prop_assert_eq!(Some(&fire), expected.last(), "only the latest candidate fires");
            }
            prop_assert_eq!(due.missed as usize + usize::from(due.fire.is_some()), expected.len().min(MAX_COUNTED_MISSES as usize));
            let on_time = expected.last().is_some_and(|latest| now - *latest <= to_delta(grace));
            let fires = on_time || (misfire == MisfirePolicy::FireOnce && !expected.is_empty());
            prop_assert_eq!(due.fire.is_some(), fires);

            let again = crate::cron::due(&schedule, misfire, Some(due.planned_through), created, now, grace);
            prop_assert_eq!(again, Due { fire: None, missed: 0, planned_through: due.planned_through });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Ticks at most one second apart, as a live scheduler makes them,
        /// fire every schedule time exactly once and miss none, across
        /// daylight saving changes (the timelines start up to 12 minutes
        /// before one and last at least 12.5 minutes).
        #[test]
        fn a_live_timeline_fires_every_schedule_time_exactly_once(
            (schedule, created) in any_schedule_near_a_clock_change(-720_000..0),
            misfire in prop::sample::select(&[MisfirePolicy::Skip, MisfirePolicy::FireOnce][..]),
            tick_gaps in prop::collection::vec(500i64..=1_000, 1_500..3_000),
        ) {
            let mut now = created;
            let mut last_planned = None;
            let mut fired = Vec::new();
            for gap in tick_gaps {
                now += chrono::TimeDelta::milliseconds(gap);
                let due = due(&schedule, misfire, last_planned, created, now, SECOND);
                prop_assert_eq!(due.missed, 0, "at {}", now);
                fired.extend(due.fire);
                last_planned = Some(due.planned_through);
            }
            prop_assert_eq!(fired, candidates(&schedule, created, now));
        }
    }
}
