//! The incremental high-water mark: the greatest value of the cursor field
//! (`[incremental] cursor`) among the records read, kept as the job state
//! `{"cursor": …}`. The next run sends it, less the lookback, as `{since}`.
//!
//! Marks compare as numbers when both are numbers, as instants when both are
//! RFC 3339 times, and as text otherwise (ISO dates and naive times compare
//! correctly as text).

use std::cmp::Ordering;

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat};
use haul_collect_core::{Batch, Value};
use haul_common::duration::HumanDuration;
use serde_json::Value as Json;

/// The greater of two marks.
pub(crate) fn max_mark(known: Option<Json>, candidate: Option<&Json>) -> Option<Json> {
    match (known, candidate) {
        (None, candidate) => candidate.filter(|value| !value.is_null()).cloned(),
        (Some(known), Some(candidate)) if !candidate.is_null() && compare(candidate, &known) == Ordering::Greater => {
            Some(candidate.clone())
        }
        (known, _) => known,
    }
}

fn compare(a: &Json, b: &Json) -> Ordering {
    match (a, b) {
        (Json::Number(a), Json::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => a.as_f64().unwrap_or(f64::NAN).total_cmp(&b.as_f64().unwrap_or(f64::NAN)),
        },
        (Json::String(a), Json::String(b)) => {
            match (DateTime::parse_from_rfc3339(a), DateTime::parse_from_rfc3339(b)) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => a.cmp(b),
            }
        }
        (a, b) => a.to_string().cmp(&b.to_string()),
    }
}

/// The greatest value of the cursor field `path` (a field name, or dotted
/// into a nested field) in `batch`.
pub(crate) fn batch_mark(batch: &Batch, path: &[String], known: Option<Json>) -> Option<Json> {
    let Some((field, nested)) = path.split_first() else { return known };
    let Some(index) = batch.schema.index_of(field) else { return known };
    batch.rows.iter().fold(known, |mark, row| {
        let value = match &row[index] {
            Value::Null => return mark,
            Value::Json(json) if !nested.is_empty() => {
                match nested.iter().try_fold(json, |node, key| node.get(key.as_str())) {
                    Some(found) => found.clone(),
                    None => return mark,
                }
            }
            _ if !nested.is_empty() => return mark,
            value => value.to_json(),
        };
        max_mark(mark, Some(&value))
    })
}

/// `mark` lowered by the lookback margin: a number for numeric marks, a
/// duration (`"10m"`) for times and dates.
pub(crate) fn minus_lookback(mark: &Json, lookback: Option<&Json>) -> anyhow::Result<Json> {
    let Some(lookback) = lookback else { return Ok(mark.clone()) };
    match mark {
        Json::Number(number) => {
            if let (Some(value), Some(margin)) = (number.as_i64(), lookback.as_i64()) {
                ensure!(margin >= 0, "the lookback must not be negative, got {margin}");
                return Ok(Json::from(value.saturating_sub(margin)));
            }
            let margin = lookback.as_f64().context("a numeric cursor needs a numeric lookback")?;
            ensure!(margin >= 0.0 && margin.is_finite(), "the lookback must be a non-negative number, got {margin}");
            Ok(Json::from(number.as_f64().unwrap_or(0.0) - margin))
        }
        Json::String(text) => {
            let margin = lookback.as_str().context("a time cursor needs a duration lookback such as \"10m\"")?;
            let margin: HumanDuration = margin.parse()?;
            let margin = chrono::Duration::from_std(margin.0).context("the lookback is too long")?;
            let too_far = || anyhow::anyhow!("the lookback reaches before the earliest time haul can represent");
            if let Ok(time) = DateTime::parse_from_rfc3339(text) {
                let earlier = time.checked_sub_signed(margin).ok_or_else(too_far)?;
                return Ok(Json::from(earlier.to_rfc3339_opts(SecondsFormat::AutoSi, text.ends_with('Z'))));
            }
            if let Ok(time) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
                let earlier = time.checked_sub_signed(margin).ok_or_else(too_far)?;
                return Ok(Json::from(earlier.format("%Y-%m-%dT%H:%M:%S%.f").to_string()));
            }
            if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                ensure!(
                    margin.num_seconds() % 86_400 == 0,
                    "a date cursor needs a lookback in whole days, such as \"1d\""
                );
                let earlier = date.checked_sub_signed(margin).ok_or_else(too_far)?;
                return Ok(Json::from(earlier.format("%Y-%m-%d").to_string()));
            }
            bail!("a lookback needs a number or a time cursor, and `{text}` is neither")
        }
        other => bail!("a lookback needs a number or a time cursor, not {other}"),
    }
}

/// A mark as the text of `{since}`.
pub(crate) fn as_text(mark: &Json) -> String {
    match mark {
        Json::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_collect_core::{DataType, Field, Schema};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn marks_compare_by_kind() {
        assert_eq!(max_mark(Some(json!(9)), Some(&json!(10))), Some(json!(10)));
        assert_eq!(max_mark(Some(json!(10)), Some(&json!(9.5))), Some(json!(10)));
        // Later instant despite a smaller text: offsets are taken into account.
        let later = json!("2024-01-01T10:00:00+02:00");
        assert_eq!(max_mark(Some(json!("2024-01-01T07:30:00Z")), Some(&later)), Some(later));
        assert_eq!(max_mark(Some(json!("2024-01-02")), Some(&json!("2024-01-10"))), Some(json!("2024-01-10")));
        assert_eq!(max_mark(None, Some(&Json::Null)), None);
        assert_eq!(max_mark(Some(json!(1)), None), Some(json!(1)));
    }

    #[test]
    fn the_mark_of_a_batch_reads_nested_fields() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("meta", DataType::Json)]));
        let batch = Batch::new(
            schema,
            vec![
                vec![Value::Int(3), Value::Json(json!({"updated": "2024-02-01T00:00:00Z"}))],
                vec![Value::Int(1), Value::Json(json!({"updated": "2024-03-01T00:00:00Z"}))],
                vec![Value::Null, Value::Null],
            ],
        );
        assert_eq!(batch_mark(&batch, &["id".into()], None), Some(json!(3)));
        assert_eq!(batch_mark(&batch, &["id".into()], Some(json!(5))), Some(json!(5)));
        let nested = ["meta".to_string(), "updated".to_string()];
        assert_eq!(batch_mark(&batch, &nested, None), Some(json!("2024-03-01T00:00:00Z")));
        assert_eq!(batch_mark(&batch, &["missing".into()], None), None);
    }

    #[test]
    fn lookbacks_lower_marks_in_their_own_format() {
        assert_eq!(minus_lookback(&json!(100), Some(&json!(10))).unwrap(), json!(90));
        assert_eq!(minus_lookback(&json!(100), None).unwrap(), json!(100));
        assert_eq!(
            minus_lookback(&json!("2024-01-01T00:10:00Z"), Some(&json!("15m"))).unwrap(),
            json!("2023-12-31T23:55:00Z")
        );
        assert_eq!(
            minus_lookback(&json!("2024-01-01T00:10:00+01:00"), Some(&json!("10m"))).unwrap(),
            json!("2024-01-01T00:00:00+01:00")
        );
        assert_eq!(
            minus_lookback(&json!("2024-01-01T00:10:00"), Some(&json!("1h"))).unwrap(),
            json!("2023-12-31T23:10:00")
        );
        assert_eq!(minus_lookback(&json!("2024-03-01"), Some(&json!("2d"))).unwrap(), json!("2024-02-28"));
        assert!(minus_lookback(&json!("2024-03-01"), Some(&json!("2h"))).is_err());
        assert!(minus_lookback(&json!(5), Some(&json!(-1))).is_err());
        assert!(minus_lookback(&json!("abc"), Some(&json!("1m"))).is_err());
        assert_eq!(as_text(&json!("x")), "x");
        assert_eq!(as_text(&json!(12)), "12");
    }
}
