//! Splitting a running key-range shard of the SQL source in two (dynamic
//! rebalancing of stragglers): the keys still to read — above the
//! checkpoint's last key, within the shard's range — are cut at the midpoint
//! of the smallest and the greatest of them, as the database holds them now.
//! The shard keeps the lower part and a new shard takes `[midpoint, upper)`.
//! Only integer keys are split; a `key IS NULL` shard, any other key type,
//! or fewer than two distinct keys left is declined.

use anyhow::Context;
use haul_collect_core::{Checkpoint, DataType, Value};

use super::catalog::Shape;
use super::connection::Database;
use super::descriptor::{Conditions, ShardDescriptor, Span};
use super::dialect::Ident;
use super::statement::Statement;

/// The span split at the midpoint of the keys left, `first` to `last`
/// (inclusive): the part the shard keeps and the part a new shard takes.
/// `None` when fewer than two keys are left or `span` is not a key range.
/// The caller passes `first` and `last` from inside the span and above the
/// checkpoint, so both parts hold at least one of the keys left.
pub fn split_span(span: &Span, first: i64, last: i64) -> Option<(Span, Span)> {
    let Span::KeyRange { key, lower, upper } = span else { return None };
    if last <= first {
        return None;
    }
    let middle = (i128::from(first) + (i128::from(last) - i128::from(first) + 1) / 2) as i64;
    let kept = Span::KeyRange { key: key.clone(), lower: lower.clone(), upper: Some(middle.into()) };
    let rest = Span::KeyRange { key: key.clone(), lower: Some(middle.into()), upper: upper.clone() };
    Some((kept, rest))
}

/// Splits the shard described by `descriptor` after `checkpoint`; see the
/// module documentation.
pub async fn split_shard(
    database: &Database,
    shape: &Shape,
    descriptor: &ShardDescriptor,
    checkpoint: Option<&Checkpoint>,
) -> anyhow::Result<Option<(ShardDescriptor, ShardDescriptor)>> {
    let Span::KeyRange { key, .. } = &descriptor.span else { return Ok(None) };
    let key = shape.column(key)?;
    if key.column_type.data_type != DataType::Int {
        return Ok(None);
    }
    let after = checkpoint.and_then(|checkpoint| checkpoint.0.get("after")).filter(|after| !after.is_null());
    let dialect = database.dialect();
    let quoted = dialect.quote(&Ident::column(&key.name)?);
    let expr = |aggregate: &str| dialect.select_expr(&format!("{aggregate}({quoted})"), &key.column_type);
    let mut statement = Statement::new(dialect);
    statement.push(&format!("SELECT {}, {} FROM {}", expr("MIN"), expr("MAX"), shape.relation.sql_from(dialect)));
    Conditions::new(&mut statement, dialect).shard(shape, descriptor, after)?;
    let rows = database
        .fetch_all(&statement, &[key.clone(), key.clone()])
        .await
        .context("reading the keys left in the shard")?;
    let Some([Value::Int(first), Value::Int(last)]) = rows.first().map(Vec::as_slice) else { return Ok(None) };
    let parts = split_span(&descriptor.span, *first, *last).map(|(kept, rest)| {
        let part = |span| ShardDescriptor { span, ..descriptor.clone() };
        (part(kept), part(rest))
    });
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn range(lower: Option<i64>, upper: Option<i64>) -> Span {
        Span::KeyRange { key: "id".into(), lower: lower.map(Into::into), upper: upper.map(Into::into) }
    }

    /// Whether the key range holds `key` above `after`.
    fn holds(span: &Span, after: Option<i64>, key: i64) -> bool {
        let Span::KeyRange { lower, upper, .. } = span else { return false };
        let bound = |value: &Option<serde_json::Value>| value.as_ref().map(|v| v.as_i64().unwrap());
        bound(lower).is_none_or(|lower| key >= lower)
            && bound(upper).is_none_or(|upper| key < upper)
            && after.is_none_or(|after| key > after)
    }

    #[test]
    fn the_keys_left_are_cut_at_their_midpoint() {
        let (kept, rest) = split_span(&range(Some(0), Some(100)), 41, 99).unwrap();
        assert_eq!(kept, range(Some(0), Some(70)));
        assert_eq!(rest, range(Some(70), Some(100)));
        let (kept, rest) = split_span(&range(None, None), 5, 6).unwrap();
        assert_eq!((kept, rest), (range(None, Some(6)), range(Some(6), None)));
        assert_eq!(split_span(&range(None, None), 7, 7), None);
        assert_eq!(split_span(&Span::KeyIsNull { key: "id".into() }, 1, 9), None);
        let (kept, _) = split_span(&range(None, None), i64::MIN, i64::MAX).unwrap();
        assert_eq!(kept, range(None, Some(0)));
        assert_eq!(serde_json::to_value(&kept).unwrap()["upper"], json!(0));
    }

    proptest! {
        /// Every key left is in exactly one part, each part holds one of
        /// them, and no key already read comes back.
        #[test]
        fn the_parts_cover_the_keys_left_once(
            lower in proptest::option::of(-1000i64..1000),
            width in proptest::option::of(0i64..2000),
            after in proptest::option::of(-1200i64..1200),
            mut left in proptest::collection::vec(-1200i64..3200, 0..40),
        ) {
            let upper = lower.zip(width).map(|(lower, width)| lower + width).or(width);
            let span = range(lower, upper);
            left.retain(|key| holds(&span, after, *key));
            left.sort();
            left.dedup();
            let (Some(first), Some(last)) = (left.first().copied(), left.last().copied()) else { return Ok(()) };
            match split_span(&span, first, last) {
                None => prop_assert_eq!(first, last),
                Some((kept, rest)) => {
                    for key in -1300i64..3300 {
                        let before = holds(&span, after, key);
                        let parts = usize::from(holds(&kept, after, key)) + usize::from(holds(&rest, None, key));
                        prop_assert_eq!(parts, usize::from(before), "key {}", key);
                    }
                    prop_assert!(holds(&kept, after, first));
                    prop_assert!(holds(&rest, None, last));
                }
            }
        }
    }
}
