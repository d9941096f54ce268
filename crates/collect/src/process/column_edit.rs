//! Column edits, the one mechanism of every processor that reshapes records
//! (`rename`, `select`, `drop`, `cleanse`'s dropped fields and defaults,
//! `remap`'s output columns): a new schema, computed once per batch, and for
//! each output column the input column it takes its values from or a value
//! it is filled with.
//!
//! Rows are edited in their own vectors: a rename touches no row at all, and
//! an edit that keeps the input columns it takes in their order (dropping
//! some, appending others) moves values within each row without allocating.
//! Only a reordering goes through a second vector, one per batch, swapped
//! with each row in turn.

use std::sync::Arc;

use haul_collect_core::{Batch, Schema, Value};

/// Where an output column's values come from.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ColumnSource {
    /// The input column at this position.
    Input(usize),
    /// This value in every record.
    Fill(Value),
}

/// How the records of one input schema become those of an output schema.
#[derive(Debug)]
pub(super) struct ColumnEdit {
    schema: Arc<Schema>,
    /// One per output column.
    sources: Vec<ColumnSource>,
    rows: RowWork,
}

/// What an edit does to each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowWork {
    /// The rows stay as they are: only names or types change.
    None,
    /// Each value moves only towards the front of its row.
    InPlace,
    /// Values change order: rows are rebuilt.
    Reorder,
}

impl ColumnEdit {
    /// An edit from rows of `input_width` values to rows of `schema`, whose
    /// fields take their values as `sources` say (one per field, each input
    /// column taken at most once).
    pub fn new(schema: Arc<Schema>, sources: Vec<ColumnSource>, input_width: usize) -> ColumnEdit {
        debug_assert_eq!(schema.fields.len(), sources.len());
        let identity = sources.len() == input_width
            && sources.iter().enumerate().all(|(target, source)| *source == ColumnSource::Input(target));
        let mut previous = None;
        // Each input position taken at or after its target, and after the
        // one taken before: the values a target overwrites are never needed.
        let forward = sources.iter().enumerate().all(|(target, source)| match source {
            ColumnSource::Input(index) if *index >= target && previous.is_none_or(|previous| *index > previous) => {
                previous = Some(*index);
                true
            }
            ColumnSource::Input(_) => false,
            ColumnSource::Fill(_) => true,
        });
        let rows = match (identity, forward) {
            (true, _) => RowWork::None,
            (false, true) => RowWork::InPlace,
            (false, false) => RowWork::Reorder,
        };
        ColumnEdit { schema, sources, rows }
    }

    /// An edit that keeps every value where it is and changes only the schema.
    pub fn schema_only(schema: Arc<Schema>) -> ColumnEdit {
        let sources = (0..schema.fields.len()).map(ColumnSource::Input).collect();
        ColumnEdit { schema, sources, rows: RowWork::None }
    }

    /// The output schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Applies the edit to every row of `rows`.
    pub fn apply(&self, mut rows: Vec<Vec<Value>>) -> Batch {
        match self.rows {
            RowWork::None => {}
            RowWork::InPlace => rows.iter_mut().for_each(|row| self.move_forward(row)),
            RowWork::Reorder => {
                let mut spare = Vec::with_capacity(self.sources.len());
                for row in &mut rows {
                    self.rebuild(row, &mut spare);
                }
            }
        }
        Batch::new(Arc::clone(&self.schema), rows)
    }

    fn move_forward(&self, row: &mut Vec<Value>) {
        for (target, source) in self.sources.iter().enumerate() {
            match source {
                ColumnSource::Input(index) => row.swap(target, *index),
                ColumnSource::Fill(value) if target < row.len() => row[target] = value.clone(),
                ColumnSource::Fill(value) => row.push(value.clone()),
            }
        }
        row.truncate(self.sources.len());
    }

    /// Rebuilds `row` in `spare`, then swaps the two: `spare` is left with
    /// the row's old vector, emptied, for the next row.
    fn rebuild(&self, row: &mut Vec<Value>, spare: &mut Vec<Value>) {
        spare.clear();
        spare.extend(self.sources.iter().map(|source| match source {
            ColumnSource::Input(index) => std::mem::replace(&mut row[*index], Value::Null),
            ColumnSource::Fill(value) => value.clone(),
        }));
        std::mem::swap(row, spare);
        spare.clear();
    }
}

#[cfg(test)]
mod tests {
    use haul_collect_core::{DataType, Field};

    use super::ColumnSource::{Fill, Input};
    use super::*;

    fn schema(width: usize) -> Arc<Schema> {
        Arc::new(Schema::new((0..width).map(|index| Field::new(format!("f{index}"), DataType::Json)).collect()))
    }

    fn rows() -> Vec<Vec<Value>> {
        let nested = Value::Json(serde_json::json!({"a": [1, {"b": null}]}));
        vec![
            vec![Value::Int(0), "one".into(), Value::Null, nested.clone()],
            vec![Value::Null, Value::Null, "two".into(), Value::Null],
        ]
    }

    fn edit(sources: Vec<ColumnSource>) -> ColumnEdit {
        ColumnEdit::new(schema(sources.len()), sources, 4)
    }

    /// The rows an edit should give, built value by value from the input.
    fn expected(sources: &[ColumnSource]) -> Vec<Vec<Value>> {
        rows()
            .into_iter()
            .map(|row| {
                sources
                    .iter()
                    .map(|source| match source {
                        Input(index) => row[*index].clone(),
                        Fill(value) => value.clone(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_kind_of_edit_gives_the_values_of_its_sources() {
        let cases = [
            vec![Input(0), Input(1), Input(2), Input(3)],
            vec![Input(1), Input(3)],
            vec![Input(0), Input(2), Fill(Value::Int(7)), Fill(Value::Null)],
            vec![Input(0), Input(1), Input(2), Input(3), Fill("x".into())],
            vec![Fill("x".into()), Input(1), Input(3)],
            vec![Input(3), Input(0)],
            vec![Fill("x".into()), Input(0)],
            vec![],
        ];
        for sources in cases {
            let batch = edit(sources.clone()).apply(rows());
            assert_eq!(batch.rows, expected(&sources), "rows for {sources:?}");
            assert_eq!(batch.schema.fields.len(), sources.len());
        }
    }

    #[test]
    fn rows_keep_their_vectors_unless_reordered() {
        let input = rows();
        let vectors: Vec<*const Value> = input.iter().map(|row| row.as_ptr()).collect();
        let kept = edit(vec![Input(1), Input(3), Fill(Value::Null)]).apply(input);
        assert_eq!(kept.rows.iter().map(|row| row.as_ptr()).collect::<Vec<_>>(), vectors);

        let renamed = ColumnEdit::schema_only(schema(4));
        let input = rows();
        let strings: Vec<*const u8> = input.iter().flatten().filter_map(text_buffer).collect();
        let output = renamed.apply(input);
        assert_eq!(output.rows, rows());
        assert_eq!(output.rows.iter().flatten().filter_map(text_buffer).collect::<Vec<_>>(), strings);
    }

    fn text_buffer(value: &Value) -> Option<*const u8> {
        match value {
            Value::String(text) => Some(text.as_ptr()),
            _ => None,
        }
    }
}
