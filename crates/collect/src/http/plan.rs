//! Planning the `http` source's shards: one per partition (`partitions`)
//! and, in range mode, one per window of the range (`range_step` wide, e.g.
//! one day of a backfill). A shard's descriptor holds the values of the
//! `{partition}`, `{from}`, `{to}` and `{since}` placeholders its requests use.

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat};
use haul_collect_core::job::{Mode, RangeBounds};
use haul_collect_core::{Plan, PlanContext, ShardSpec};
use haul_common::duration::HumanDuration;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::mark;
use super::template::Vars;

/// The most shards a run may have.
pub(crate) const MAX_SHARDS: usize = 100_000;

/// Windows planned per unit of parallelism for a numeric range without `range_step`.
const WINDOWS_PER_SLOT: i64 = 4;

/// The width of one range shard: a number for numeric bounds, a duration for dates and times.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RangeStep {
    Number(i64),
    Duration(HumanDuration),
}

/// What one shard reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ShardDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Incremental runs: the record field whose greatest value is the next mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl ShardDescriptor {
    pub(crate) fn vars(&self) -> Vars {
        Vars {
            from: self.from.clone(),
            to: self.to.clone(),
            since: self.since.clone(),
            partition: self.partition.clone(),
        }
    }
}

/// Plans a run's shards; the planned job state is the previous one (a run
/// that reads nothing keeps it; `Source::final_state` raises it).
pub(crate) fn plan(partitions: &[String], step: Option<RangeStep>, context: &PlanContext) -> anyhow::Result<Plan> {
    let (windows, since) = match context.mode {
        Mode::Full => (vec![None], None),
        Mode::Incremental => {
            ensure!(
                context.incremental.cursor.is_some(),
                "incremental mode needs `[incremental] cursor`: the record field whose greatest value is the \
                 high-water mark sent as `{{since}}` next time"
            );
            let previous =
                context.previous_state.as_ref().and_then(|state| state.get("cursor")).filter(|v| !v.is_null());
            let since = previous
                .map(|mark| mark::minus_lookback(mark, context.incremental.lookback.as_ref()))
                .transpose()
                .context("applying the incremental lookback")?;
            (vec![None], since.as_ref().map(mark::as_text))
        }
        Mode::Range => {
            let bounds = context.range.as_ref().context("range mode needs a `[range]` table with `from` and `to`")?;
            (windows(bounds, step, context.parallelism)?.into_iter().map(Some).collect(), None)
        }
    };
    let partitions: Vec<Option<&String>> =
        if partitions.is_empty() { vec![None] } else { partitions.iter().map(Some).collect() };
    ensure!(
        partitions.len().saturating_mul(windows.len()) <= MAX_SHARDS,
        "{} partitions times {} windows make more than {MAX_SHARDS} shards; widen `range_step`",
        partitions.len(),
        windows.len()
    );
    let mut shards = Vec::with_capacity(partitions.len() * windows.len());
    for partition in &partitions {
        for window in &windows {
            let id = match (partition, window) {
                (None, None) => "all".to_string(),
                (Some(partition), None) => partition.to_string(),
                (None, Some((from, _))) => from.clone(),
                (Some(partition), Some((from, _))) => format!("{partition}/{from}"),
            };
            let descriptor = ShardDescriptor {
                partition: partition.cloned(),
                from: window.as_ref().map(|(from, _)| from.clone()),
                to: window.as_ref().map(|(_, to)| to.clone()),
                since: since.clone(),
                cursor: None,
            };
            shards.push(ShardSpec { id, descriptor: serde_json::to_value(descriptor)? });
        }
    }
    let next_state = match context.mode {
        Mode::Incremental => context.previous_state.clone(),
        _ => None,
    };
    Ok(Plan { shards, next_state })
}

/// One bound of a range, of the kind both bounds share.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    Int(i64),
    Date(NaiveDate),
    /// An RFC 3339 time; `zulu` keeps the `Z` spelling when formatted.
    Instant(DateTime<FixedOffset>, bool),
    Naive(NaiveDateTime),
}

impl Bound {
    fn read(value: &Json) -> anyhow::Result<Bound> {
        if let Some(number) = value.as_i64() {
            return Ok(Bound::Int(number));
        }
        let text = value
            .as_str()
            .with_context(|| format!("a range bound must be an integer, a date or a time, not {value}"))?;
        if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Ok(Bound::Date(date));
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(text) {
            return Ok(Bound::Instant(time, text.ends_with('Z')));
        }
        if let Ok(time) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
            return Ok(Bound::Naive(time));
        }
        bail!("the range bound `{text}` is not an integer, a date (2024-01-31) or a time (2024-01-31T12:00:00Z)")
    }

    fn text(&self) -> String {
        match self {
            Bound::Int(number) => number.to_string(),
            Bound::Date(date) => date.format("%Y-%m-%d").to_string(),
            Bound::Instant(time, zulu) => time.to_rfc3339_opts(SecondsFormat::AutoSi, *zulu),
            Bound::Naive(time) => time.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
        }
    }

    /// This bound moved `step` forward, capped at `end`.
    fn advanced(&self, step: &Step, end: &Bound) -> Bound {
        let next = match (self, step) {
            (Bound::Int(value), Step::Int(step)) => Some(Bound::Int(value.saturating_add(*step))),
            (Bound::Date(date), Step::Time(step)) => date.checked_add_signed(*step).map(Bound::Date),
            (Bound::Instant(time, zulu), Step::Time(step)) => {
                time.checked_add_signed(*step).map(|t| Bound::Instant(t, *zulu))
            }
            (Bound::Naive(time), Step::Time(step)) => time.checked_add_signed(*step).map(Bound::Naive),
            _ => None,
        };
        match next {
            Some(next) if next.before(end) => next,
            _ => *end,
        }
    }

    fn before(&self, other: &Bound) -> bool {
        match (self, other) {
            (Bound::Int(a), Bound::Int(b)) => a < b,
            (Bound::Date(a), Bound::Date(b)) => a < b,
            (Bound::Instant(a, _), Bound::Instant(b, _)) => a < b,
            (Bound::Naive(a), Bound::Naive(b)) => a < b,
            _ => false,
        }
    }
}

enum Step {
    Int(i64),
    Time(chrono::Duration),
}

/// `[from, to)` cut into half-open windows `step` wide (the last may be narrower).
fn windows(bounds: &RangeBounds, step: Option<RangeStep>, parallelism: usize) -> anyhow::Result<Vec<(String, String)>> {
    let from = Bound::read(&bounds.from).context("in `range.from`")?;
    let to = Bound::read(&bounds.to).context("in `range.to`")?;
    ensure!(
        std::mem::discriminant(&from) == std::mem::discriminant(&to),
        "`range.from` and `range.to` must be of the same kind"
    );
    ensure!(from.before(&to), "`range.to` ({}) must be after `range.from` ({})", to.text(), from.text());
    let step = match (from, to, step) {
        (Bound::Int(_), _, Some(RangeStep::Number(step))) => {
            ensure!(step > 0, "`range_step` must be at least 1");
            Step::Int(step)
        }
        (Bound::Int(low), Bound::Int(high), None) => {
            let slots = WINDOWS_PER_SLOT.saturating_mul(parallelism.max(1) as i64);
            Step::Int((high.saturating_sub(low) / slots + i64::from(high.saturating_sub(low) % slots != 0)).max(1))
        }
        (Bound::Int(_), _, Some(RangeStep::Duration(_))) => bail!("a numeric range needs a numeric `range_step`"),
        (_, _, Some(RangeStep::Number(_))) => {
            bail!("a date or time range needs a duration `range_step` such as \"1d\"")
        }
        (bound, _, step) => {
            let width = match step {
                Some(RangeStep::Duration(width)) => width.0,
                _ => std::time::Duration::from_secs(86_400),
            };
            ensure!(!width.is_zero(), "`range_step` must be more than zero");
            ensure!(
                !matches!(bound, Bound::Date(_)) || width.as_secs() % 86_400 == 0 && width.subsec_nanos() == 0,
                "a date range needs a `range_step` in whole days, such as \"1d\""
            );
            Step::Time(chrono::Duration::from_std(width).context("`range_step` is too long")?)
        }
    };
    let mut windows = Vec::new();
    let mut start = from;
    while start.before(&to) {
        ensure!(windows.len() < MAX_SHARDS, "the range makes more than {MAX_SHARDS} windows; widen `range_step`");
        let end = start.advanced(&step, &to);
        windows.push((start.text(), end.text()));
        start = end;
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_collect_core::testsuite::full_context;
    use proptest::prelude::*;
    use serde_json::json;

    fn range(from: Json, to: Json) -> PlanContext {
        PlanContext { mode: Mode::Range, range: Some(RangeBounds { field: None, from, to }), ..full_context(2) }
    }

    fn descriptors(plan: &Plan) -> Vec<(String, ShardDescriptor)> {
        plan.shards.iter().map(|shard| (shard.id.clone(), shard.read_descriptor().unwrap())).collect()
    }

    #[test]
    fn one_shard_per_day_of_a_backfill() {
        let plan = plan(&[], None, &range(json!("2024-02-27"), json!("2024-03-02"))).unwrap();
        let windows: Vec<_> =
            descriptors(&plan).into_iter().map(|(id, d)| (id, d.from.unwrap(), d.to.unwrap())).collect();
        assert_eq!(
            windows,
            [
                ("2024-02-27".into(), "2024-02-27".into(), "2024-02-28".into()),
                ("2024-02-28".into(), "2024-02-28".into(), "2024-02-29".into()),
                ("2024-02-29".into(), "2024-02-29".into(), "2024-03-01".into()),
                ("2024-03-01".into(), "2024-03-01".into(), "2024-03-02".into()),
            ]
        );
    }

    #[test]
    fn times_numbers_and_partitions() {
        let step = Some(RangeStep::Duration("6h".parse().unwrap()));
        let times = plan(&[], step, &range(json!("2024-01-01T00:00:00Z"), json!("2024-01-01T15:00:00Z"))).unwrap();
        let tos: Vec<_> = descriptors(&times).into_iter().map(|(_, d)| d.to.unwrap()).collect();
        assert_eq!(tos, ["2024-01-01T06:00:00Z", "2024-01-01T12:00:00Z", "2024-01-01T15:00:00Z"]);

        let partitions = ["eu".to_string(), "us".to_string()];
        let partitioned = plan(&partitions, Some(RangeStep::Number(50)), &range(json!(0), json!(100))).unwrap();
        let ids: Vec<_> = partitioned.shards.iter().map(|shard| shard.id.as_str()).collect();
        assert_eq!(ids, ["eu/0", "eu/50", "us/0", "us/50"]);
        assert_eq!(
            partitioned.shards[3].read_descriptor::<ShardDescriptor>().unwrap().vars().partition.as_deref(),
            Some("us")
        );

        // Without a step, a numeric range is cut into 4 windows per slot.
        assert_eq!(plan_len(None, range(json!(0), json!(1000))), 8);
        assert_eq!(plan_len(None, range(json!(0), json!(3))), 3);
    }

    fn plan_len(step: Option<RangeStep>, context: PlanContext) -> usize {
        plan(&[], step, &context).unwrap().shards.len()
    }

    #[test]
    fn bad_ranges_are_explained() {
        let error = |context: PlanContext, step| format!("{:#}", plan(&[], step, &context).unwrap_err());
        assert!(error(range(json!("2024-01-02"), json!("2024-01-01")), None).contains("must be after"));
        assert!(error(range(json!("2024-01-01"), json!(5)), None).contains("same kind"));
        assert!(
            error(range(json!("2024-01-01"), json!("2024-01-03")), Some(RangeStep::Duration("12h".parse().unwrap())))
                .contains("whole days")
        );
        assert!(
            error(range(json!(0), json!(10)), Some(RangeStep::Duration("1d".parse().unwrap())))
                .contains("numeric `range_step`")
        );
        assert!(error(range(json!("soon"), json!("later")), None).contains("range.from"));
        let no_bounds = PlanContext { mode: Mode::Range, ..full_context(1) };
        assert!(error(no_bounds, None).contains("[range]"));
    }

    #[test]
    fn incremental_plans_send_the_mark_less_the_lookback() {
        let mut context = PlanContext { mode: Mode::Incremental, ..full_context(1) };
        assert!(plan(&[], None, &context).unwrap_err().to_string().contains("[incremental] cursor"));
        context.incremental.cursor = Some("updated_at".into());
        let first = plan(&[], None, &context).unwrap();
        assert_eq!(descriptors(&first)[0].1.since, None);
        context.previous_state = Some(json!({"cursor": "2024-05-01T10:00:00Z"}));
        context.incremental.lookback = Some(json!("1h"));
        let next = plan(&[], None, &context).unwrap();
        assert_eq!(descriptors(&next)[0].1.since.as_deref(), Some("2024-05-01T09:00:00Z"));
        assert_eq!(next.next_state, context.previous_state);
    }

    proptest! {
        #[test]
        fn numeric_windows_tile_the_range(from in -1_000i64..1_000, width in 1i64..5_000, step in proptest::option::of(1i64..700), parallelism in 1usize..8) {
            let to = from + width;
            let windows = windows(&RangeBounds { field: None, from: json!(from), to: json!(to) }, step.map(RangeStep::Number), parallelism).unwrap();
            let bounds: Vec<(i64, i64)> = windows.iter().map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())).collect();
            prop_assert_eq!(bounds.first().unwrap().0, from);
            prop_assert_eq!(bounds.last().unwrap().1, to);
            for pair in bounds.windows(2) {
                prop_assert_eq!(pair[0].1, pair[1].0);
            }
            for (start, end) in &bounds {
                prop_assert!(start < end);
                if let Some(step) = step {
                    prop_assert!(end - start <= step);
                }
            }
        }

        #[test]
        fn day_windows_tile_the_range(start in 0i64..20_000, days in 1i64..400) {
            let from = NaiveDate::from_num_days_from_ce_opt(700_000 + start as i32).unwrap();
            let to = from + chrono::Duration::days(days);
            let windows = windows(&RangeBounds { field: None, from: json!(from.to_string()), to: json!(to.to_string()) }, None, 1).unwrap();
            prop_assert_eq!(windows.len() as i64, days);
            prop_assert_eq!(windows.first().unwrap().0.clone(), from.to_string());
            prop_assert_eq!(windows.last().unwrap().1.clone(), to.to_string());
        }
    }
}
