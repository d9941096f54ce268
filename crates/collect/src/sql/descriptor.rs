//! A shard of the SQL source as stored in the plan: the key range it covers,
//! and the incremental window or range bounds of its run, so that a resumed
//! run reads exactly what was planned. Also the WHERE clauses these make.

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};

use super::catalog::Shape;
use super::convert::value_from_json;
use super::decode::Column;
use super::dialect::Dialect;
use super::statement::Statement;

/// What one shard reads, as JSON in its [`haul_collect_core::ShardSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardDescriptor {
    pub span: Span,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeFilter>,
}

/// The rows of a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Span {
    /// `lower <= key < upper`, ordered by key, resumed after the last key read.
    KeyRange { key: String, lower: Option<serde_json::Value>, upper: Option<serde_json::Value> },
    /// The rows whose split key is NULL, ordered by the table's primary key
    /// and resumed by position.
    KeyIsNull { key: String },
}

/// The incremental window `after < cursor <= upto`. Without `upto` the table
/// had no rows at planning and the window is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub cursor: String,
    pub after: Option<serde_json::Value>,
    pub upto: Option<serde_json::Value>,
}

/// The `range` mode bounds `from <= field < to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeFilter {
    pub field: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

impl ShardDescriptor {
    pub fn parse(json: &serde_json::Value) -> anyhow::Result<Self> {
        serde_json::from_value(json.clone()).context("invalid sql shard descriptor")
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("descriptors serialise")
    }
}

/// Appends `WHERE … AND …` conditions to a statement, one at a time.
pub struct Conditions<'a> {
    statement: &'a mut Statement,
    dialect: Dialect,
    started: bool,
}

impl<'a> Conditions<'a> {
    pub fn new(statement: &'a mut Statement, dialect: Dialect) -> Self {
        Conditions { statement, dialect, started: false }
    }

    /// Starts the next condition and gives the statement to write it.
    pub fn and(&mut self) -> &mut Statement {
        self.statement.push(if self.started { " AND " } else { " WHERE " });
        self.started = true;
        self.statement
    }

    /// `column <op> value`, the value read from JSON as the column's type.
    pub fn compare(&mut self, column: &Column, op: &str, json: &serde_json::Value) -> anyhow::Result<()> {
        let value = value_from_json(json, column.column_type.data_type)
            .with_context(|| format!("a bound of column `{}`", column.name))?;
        let type_name = &column.column_type.type_name;
        // Only PostgreSQL writes the type name into the SQL (as a cast).
        ensure!(
            self.dialect != Dialect::Postgres
                || type_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' '),
            "column `{}` of type {type_name} cannot be compared",
            column.name
        );
        let quoted = self.dialect.quote(&super::dialect::Ident::column(&column.name)?);
        let compared = self.dialect.comparable(&quoted, &column.column_type);
        self.and().push(&compared).push(" ").push(op).push(" ").push_compared(value, &column.column_type);
        Ok(())
    }

    /// `column IS NULL` / `IS NOT NULL`.
    pub fn null_check(&mut self, column: &Column, is_null: bool) -> anyhow::Result<()> {
        let quoted = self.dialect.quote(&super::dialect::Ident::column(&column.name)?);
        let check = if is_null { " IS NULL" } else { " IS NOT NULL" };
        self.and().push(&quoted).push(check);
        Ok(())
    }

    /// The user filter, the incremental window and the range bounds: the rows
    /// a run covers, before splitting.
    pub fn run_filters(
        &mut self,
        shape: &Shape,
        window: Option<&Window>,
        range: Option<&RangeFilter>,
    ) -> anyhow::Result<()> {
        if let Some(filter) = &shape.filter {
            self.and().push("(").push(filter).push(")");
        }
        if let Some(window) = window {
            let cursor = shape.column(&window.cursor)?;
            match &window.upto {
                None => {
                    self.and().push("1 = 0");
                }
                Some(upto) => {
                    if let Some(after) = &window.after {
                        self.compare(cursor, ">", after)?;
                    }
                    self.compare(cursor, "<=", upto)?;
                }
            }
        }
        if let Some(range) = range {
            let field = shape.column(&range.field)?;
            self.compare(field, ">=", &range.from)?;
            self.compare(field, "<", &range.to)?;
        }
        Ok(())
    }

    /// The rows of one shard: the run's filters, then its span of the split
    /// key, after the key value `after` when resuming.
    pub fn shard(
        &mut self,
        shape: &Shape,
        descriptor: &ShardDescriptor,
        after: Option<&serde_json::Value>,
    ) -> anyhow::Result<()> {
        self.run_filters(shape, descriptor.window.as_ref(), descriptor.range.as_ref())?;
        match &descriptor.span {
            Span::KeyRange { key, lower, upper } => {
                let key = shape.column(key)?;
                self.null_check(key, false)?;
                for (op, bound) in [(">=", lower.as_ref()), ("<", upper.as_ref()), (">", after)] {
                    if let Some(bound) = bound {
                        self.compare(key, op, bound)?;
                    }
                }
            }
            Span::KeyIsNull { key } => self.null_check(shape.column(key)?, true)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descriptors_round_trip_as_json() {
        let descriptor = ShardDescriptor {
            span: Span::KeyRange { key: "id".into(), lower: Some(json!(10)), upper: None },
            window: Some(Window { cursor: "updated_at".into(), after: None, upto: Some(json!("2024-01-01T00:00:00")) }),
            range: None,
        };
        let text = descriptor.to_json();
        assert_eq!(text["span"], json!({"kind": "key_range", "key": "id", "lower": 10, "upper": null}));
        assert_eq!(ShardDescriptor::parse(&text).unwrap(), descriptor);
        assert!(ShardDescriptor::parse(&json!({"span": {"kind": "other"}})).is_err());
    }
}
