//! Planning a SQL source run: the incremental window or range bounds, then
//! the split key's boundaries over the rows they cover (even ranges between
//! MIN and MAX for integer keys, quantiles otherwise), turned into half-open
//! key-range shards plus, for a nullable key, one `key IS NULL` shard (read in
//! primary key order, so a table without a primary key cannot have one).
//!
//! An incremental run reads `previous mark - lookback < cursor <= current
//! max`. A row committed late with a cursor at or below the previous mark
//! (a long transaction, a clock behind) is only collected when the lookback
//! reaches back to it, and then again with its neighbours: use an upsert
//! sink. A row whose cursor is NULL is never collected incrementally; the
//! planner warns with their count.

use anyhow::{Context, bail, ensure};
use haul_collect_core::job::Mode;
use haul_collect_core::{DataType, Plan, PlanContext, ShardSpec, Value};
use haul_common::duration::HumanDuration;
use serde::Deserialize;

use super::catalog::{Shape, SplitKey};
use super::connection::Database;
use super::convert::value_from_json;
use super::decode::Column;
use super::descriptor::{Conditions, RangeFilter, ShardDescriptor, Span, Window};
use super::dialect::{Dialect, Ident};
use super::plan::{even_boundaries, quantile_step, ranges, shard_id};
use super::statement::Statement;

/// How key ranges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    /// `even` for integer keys, `quantile` for any other key.
    #[default]
    Auto,
    /// Equal-width ranges between MIN and MAX of an integer key.
    Even,
    /// Ranges holding equal numbers of rows.
    Quantile,
}

/// The id of the shard of rows whose split key is NULL.
const NULL_SHARD_ID: &str = "knull";

/// Plans a run over `shape` in about `target_shards` shards.
pub async fn plan(
    database: &Database,
    shape: &Shape,
    split: SplitMethod,
    target_shards: usize,
    context: &PlanContext,
) -> anyhow::Result<Plan> {
    let (window, next_state) = match context.mode {
        Mode::Incremental => incremental_window(database, shape, context).await?,
        Mode::Full | Mode::Range => (None, None),
    };
    let range = match (context.mode, &context.range) {
        (Mode::Range, Some(bounds)) => {
            let field = match (&bounds.field, &shape.split_key) {
                (Some(field), _) => field.clone(),
                (None, SplitKey::Column(key)) => key.name.clone(),
                (None, SplitKey::Missing(_)) => bail!("range mode needs `range.field` (there is no split key)"),
            };
            shape.column(&field)?;
            Some(RangeFilter { field, from: bounds.from.clone(), to: bounds.to.clone() })
        }
        (Mode::Range, None) => bail!("range mode needs a [range] table with `from` and `to`"),
        _ => None,
    };
    let descriptor = |span| ShardDescriptor { span, window: window.clone(), range: range.clone() };
    let mut shards = Vec::new();
    match &shape.split_key {
        SplitKey::Missing(reason) => {
            bail!(
                "{reason}: set `split_key` to a unique, non-null column so the {} can be split into shards and resumed",
                shape.relation.describe()
            );
        }
        SplitKey::Column(key) => {
            let runs = Runs { database, shape, window: window.as_ref(), range: range.as_ref() };
            let boundaries = runs.boundaries(key, split, target_shards).await?;
            for (index, (lower, upper)) in ranges(&boundaries).into_iter().enumerate() {
                let span = Span::KeyRange { key: key.name.clone(), lower, upper };
                shards.push(ShardSpec { id: shard_id(index), descriptor: descriptor(span).to_json() });
            }
            if shape.split_key_given && runs.key_has_nulls(key).await? {
                if shape.primary_key.is_empty() {
                    bail!(
                        "split key `{}` holds NULLs, and the {} has no primary key to read them in a stable order: \
                         choose a non-null split key or leave the NULLs out with `where`",
                        key.name,
                        shape.relation.describe()
                    );
                }
                let span = Span::KeyIsNull { key: key.name.clone() };
                shards.push(ShardSpec { id: NULL_SHARD_ID.into(), descriptor: descriptor(span).to_json() });
            }
        }
    }
    Ok(Plan { shards, next_state })
}

/// Reads the incremental high-water mark: the window this run reads and the
/// job state it leaves.
async fn incremental_window(
    database: &Database,
    shape: &Shape,
    context: &PlanContext,
) -> anyhow::Result<(Option<Window>, Option<serde_json::Value>)> {
    let cursor_name = context.incremental.cursor.as_deref().context("incremental mode needs `incremental.cursor`")?;
    let cursor = shape.column(cursor_name)?;
    let previous = context.previous_state.as_ref().and_then(|state| state.get("cursor")).filter(|v| !v.is_null());
    let after = match previous {
        Some(previous) => {
            let previous = value_from_json(previous, cursor.column_type.data_type)
                .with_context(|| format!("the previous state of cursor `{cursor_name}`"))?;
            Some(subtract_lookback(previous, context.incremental.lookback.as_ref())?.to_json())
        }
        None => None,
    };
    warn_of_null_cursors(database, shape, cursor).await?;
    // The greatest cursor, in the order the window compares cursors in.
    let dialect = database.dialect();
    let quoted = dialect.quote(&Ident::column(&cursor.name)?);
    let mut statement = Statement::new(dialect);
    let select = dialect.select_expr(&quoted, &cursor.column_type);
    statement.push(&format!("SELECT {select} FROM {}", shape.relation.sql_from(dialect)));
    let mut conditions = Conditions::new(&mut statement, dialect);
    conditions.run_filters(shape, None, None)?;
    conditions.null_check(cursor, false)?;
    if let Some(after) = &after {
        conditions.compare(cursor, ">", after)?;
    }
    statement.push(&format!(" ORDER BY {} DESC LIMIT 1", dialect.comparable(&quoted, &cursor.column_type)));
    let upto = single_value(database, &statement, cursor).await.context("reading the incremental cursor's maximum")?;
    let upto = (!upto.is_null()).then(|| upto.to_json());
    let next_state = match &upto {
        Some(upto) => Some(serde_json::json!({ "cursor": upto })),
        None => context.previous_state.clone(),
    };
    Ok((Some(Window { cursor: cursor.name.clone(), after, upto }), next_state))
}

/// Warns when rows have a NULL cursor: incremental runs never read them.
async fn warn_of_null_cursors(database: &Database, shape: &Shape, cursor: &Column) -> anyhow::Result<()> {
    let mut statement = Statement::new(database.dialect());
    statement.push(&format!("SELECT COUNT(*) FROM {}", shape.relation.sql_from(database.dialect())));
    let mut conditions = Conditions::new(&mut statement, database.dialect());
    conditions.run_filters(shape, None, None)?;
    conditions.null_check(cursor, true)?;
    let count = single_value(database, &statement, &Column::bigint(database.dialect(), "count")).await?;
    if let Value::Int(rows) = count
        && rows > 0
    {
        tracing::warn!(cursor = %cursor.name, rows, "rows with a NULL cursor are never read in incremental mode");
    }
    Ok(())
}

/// The previous high-water mark lowered by the lookback margin: a
/// non-negative number for numeric cursors, a duration ("10m") for time
/// cursors.
fn subtract_lookback(previous: Value, lookback: Option<&serde_json::Value>) -> anyhow::Result<Value> {
    let Some(lookback) = lookback else { return Ok(previous) };
    let duration = || -> anyhow::Result<chrono::Duration> {
        let text = lookback.as_str().context("a time cursor needs a duration lookback such as \"10m\"")?;
        let duration: HumanDuration = text.parse()?;
        chrono::Duration::from_std(duration.0).context("the lookback is too long")
    };
    let too_far = || anyhow::anyhow!("the lookback reaches before the earliest time haul can represent");
    Ok(match previous {
        Value::Int(int) => {
            let margin = lookback.as_i64().context("an integer cursor needs an integer lookback")?;
            ensure!(margin >= 0, "the lookback must not be negative, got {margin}");
            Value::Int(int.saturating_sub(margin))
        }
        Value::Float(float) => {
            let margin = lookback.as_f64().context("a numeric cursor needs a numeric lookback")?;
            ensure!(margin >= 0.0 && margin.is_finite(), "the lookback must be a non-negative number, got {margin}");
            Value::Float(float - margin)
        }
        Value::Timestamp(time) => Value::Timestamp(time.checked_sub_signed(duration()?).ok_or_else(too_far)?),
        Value::TimestampTz(time) => Value::TimestampTz(time.checked_sub_signed(duration()?).ok_or_else(too_far)?),
        Value::Date(date) => {
            let midnight = date.and_hms_opt(0, 0, 0).context("midnight")?;
            Value::Date(midnight.checked_sub_signed(duration()?).ok_or_else(too_far)?.date())
        }
        other => bail!("lookback is not supported for a cursor holding {other:?}"),
    })
}

/// The planning queries of one run: they all see the same filtered rows.
struct Runs<'a> {
    database: &'a Database,
    shape: &'a Shape,
    window: Option<&'a Window>,
    range: Option<&'a RangeFilter>,
}

impl Runs<'_> {
    fn dialect(&self) -> Dialect {
        self.database.dialect()
    }

    /// `SELECT <select> FROM <relation> WHERE <run filters>`, then `key IS
    /// NULL` or `key IS NOT NULL` when `key_is_null` says so.
    fn select_into(&self, statement: &mut Statement, select: &str, key: Option<(&Column, bool)>) -> anyhow::Result<()> {
        statement.push(&format!("SELECT {select} FROM {}", self.shape.relation.sql_from(self.dialect())));
        let mut conditions = Conditions::new(statement, self.dialect());
        conditions.run_filters(self.shape, self.window, self.range)?;
        if let Some((key, is_null)) = key {
            conditions.null_check(key, is_null)?;
        }
        Ok(())
    }

    fn select(&self, select: &str, key: Option<(&Column, bool)>) -> anyhow::Result<Statement> {
        let mut statement = Statement::new(self.dialect());
        self.select_into(&mut statement, select, key)?;
        Ok(statement)
    }

    async fn boundaries(
        &self,
        key: &Column,
        split: SplitMethod,
        shards: usize,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let integer_key = key.column_type.data_type == DataType::Int;
        match split {
            SplitMethod::Even if !integer_key => {
                bail!("`split = \"even\"` needs an integer split key; `{}` is {}", key.name, key.column_type.type_name)
            }
            SplitMethod::Even | SplitMethod::Auto if integer_key => {
                if let Some(boundaries) = self.even(key, shards).await? {
                    return Ok(boundaries);
                }
                self.quantiles(key, shards).await
            }
            _ => self.quantiles(key, shards).await,
        }
    }

    /// Even boundaries, or `None` when MIN/MAX do not fit in 64-bit integers.
    async fn even(&self, key: &Column, shards: usize) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
        let quoted = self.dialect().quote(&Ident::column(&key.name)?);
        let expr = |aggregate: &str| self.dialect().select_expr(&format!("{aggregate}({quoted})"), &key.column_type);
        let statement = self.select(&format!("{}, {}", expr("MIN"), expr("MAX")), None)?;
        let columns = [key.clone(), key.clone()];
        let rows = self.database.fetch_all(&statement, &columns).await.context("reading the split key's bounds")?;
        match rows.first().map(Vec::as_slice) {
            Some([Value::Int(min), Value::Int(max)]) => {
                Ok(Some(even_boundaries(*min, *max, shards).into_iter().map(serde_json::Value::from).collect()))
            }
            Some([Value::Null, Value::Null]) | None => Ok(Some(Vec::new())),
            _ => Ok(None),
        }
    }

    async fn quantiles(&self, key: &Column, shards: usize) -> anyhow::Result<Vec<serde_json::Value>> {
        let counter = Column::bigint(self.dialect(), "count");
        let count = single_value(self.database, &self.select("COUNT(*)", Some((key, false)))?, &counter).await?;
        let Value::Int(count) = count else { bail!("COUNT(*) returned {count:?}") };
        let step = quantile_step(count.max(0) as u64, shards);
        if count as u64 <= step {
            return Ok(Vec::new());
        }
        let quoted = self.dialect().quote(&Ident::column(&key.name)?);
        let order = self.dialect().comparable(&quoted, &key.column_type);
        let inner = format!("{quoted} AS haul_key, ROW_NUMBER() OVER (ORDER BY {order}) AS haul_rn");
        let mut statement = Statement::new(self.dialect());
        statement.push(&format!("SELECT {} FROM (", self.dialect().select_expr("haul_key", &key.column_type)));
        self.select_into(&mut statement, &inner, Some((key, false)))?;
        statement.push(") haul_ranked WHERE haul_rn > 1 AND (haul_rn - 1) % ");
        statement.push_bind(Value::Int(step as i64), self.dialect().bigint_type_name());
        statement.push(" = 0 ORDER BY haul_rn");
        let rows = self.database.fetch_all(&statement, std::slice::from_ref(key)).await.context("reading quantiles")?;
        Ok(rows.into_iter().filter_map(|mut row| row.pop()).map(|value| value.to_json()).collect())
    }

    async fn key_has_nulls(&self, key: &Column) -> anyhow::Result<bool> {
        let quoted = self.dialect().quote(&Ident::column(&key.name)?);
        let mut statement = self.select(&quoted, Some((key, true)))?;
        statement.push(" LIMIT 1");
        let found = self.database.fetch_all(&statement, std::slice::from_ref(key)).await?;
        Ok(!found.is_empty())
    }
}

/// The single value of a one-row, one-column query.
pub async fn single_value(database: &Database, statement: &Statement, column: &Column) -> anyhow::Result<Value> {
    let rows = database.fetch_all(statement, std::slice::from_ref(column)).await?;
    Ok(rows.into_iter().next().and_then(|mut row| row.pop()).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookback_lowers_the_previous_mark() {
        assert_eq!(subtract_lookback(Value::Int(100), Some(&json!(10))).unwrap(), Value::Int(90));
        assert_eq!(subtract_lookback(Value::Int(100), None).unwrap(), Value::Int(100));
        let time = super::super::convert::parse_timestamp("2024-01-02 00:10:00").unwrap();
        let earlier = super::super::convert::parse_timestamp("2024-01-02 00:00:00").unwrap();
        assert_eq!(subtract_lookback(Value::Timestamp(time), Some(&json!("10m"))).unwrap(), Value::Timestamp(earlier));
        assert!(subtract_lookback(Value::Timestamp(time), Some(&json!(10))).is_err());
        assert!(subtract_lookback(Value::Int(1), Some(&json!("10m"))).is_err());
    }

    #[test]
    fn negative_and_huge_lookbacks_are_errors() {
        let error = subtract_lookback(Value::Int(100), Some(&json!(-5))).unwrap_err().to_string();
        assert!(error.contains("must not be negative"), "{error}");
        assert!(subtract_lookback(Value::Float(1.0), Some(&json!(-0.5))).is_err());
        let time = super::super::convert::parse_timestamp("0001-01-01 00:00:00").unwrap();
        let huge = json!("100000000000d");
        let error = subtract_lookback(Value::Timestamp(time), Some(&huge)).unwrap_err().to_string();
        assert!(error.contains("earliest time"), "{error}");
        assert!(subtract_lookback(Value::TimestampTz(time.and_utc()), Some(&huge)).is_err());
        assert!(subtract_lookback(Value::Date(time.date()), Some(&huge)).is_err());
    }
}
