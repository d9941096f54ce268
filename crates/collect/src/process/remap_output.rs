//! The output batch of the `remap` processor, assembled record by record in
//! the input records' own rows from the fields the program left in its slots.
//!
//! The columns are the input fields in input order, then the new fields in
//! the order first seen, those first seen in the same record by name (the
//! order of a VRL object's keys). A field the program was not given keeps its
//! input value, as it would come out of VRL ([`as_through_vrl`]); a field it
//! was given takes the value the program left, or null where the program
//! deleted it. A field absent from every output record leaves the schema.
//! Each column's type is merged from its values as they come: mixed types
//! make it `json`; a column null throughout keeps its input type, or is
//! `string` when new.

use std::sync::Arc;

use haul_collect_core::{Batch, DataType, Field, Schema, Value};

use super::column_edit::{ColumnEdit, ColumnSource};
use super::vrl_bridge::{as_through_vrl, vrl_to_value};
use super::vrl_record::RecordSlots;

/// One output column and what its values showed so far.
struct Column {
    name: String,
    /// The merged type of its values (`None`: only nulls so far).
    data_type: Option<DataType>,
    has_null: bool,
    /// Whether some output record has the field.
    present: bool,
}

/// Collects the records a program leaves into one batch.
pub(super) struct RemapOutput {
    input: Arc<Schema>,
    /// For each input field, whether the program was given it.
    given: Vec<bool>,
    columns: Vec<Column>,
    /// The column of each slot, once it has one.
    slot_columns: Vec<Option<usize>>,
    rows: Vec<Vec<Value>>,
}

impl RemapOutput {
    /// An empty output for records of `input`, whose fields in `slots` the
    /// program is given (the others pass on).
    pub fn new(input: Arc<Schema>, slots: &RecordSlots, capacity: usize) -> RemapOutput {
        let columns = input
            .fields
            .iter()
            .map(|field| Column { name: field.name.clone(), data_type: None, has_null: false, present: false })
            .collect();
        let mut given = vec![false; input.fields.len()];
        let slot_columns = (0..slots.len()).map(|slot| slots.input(slot)).collect::<Vec<_>>();
        slot_columns.iter().flatten().for_each(|&index| given[index] = true);
        RemapOutput { input, given, columns, slot_columns, rows: Vec::with_capacity(capacity) }
    }

    /// Adds the record the program left in `slots` (emptying them); `row` is
    /// the input record, whose other fields pass on.
    pub fn push(&mut self, mut row: Vec<Value>, slots: &mut RecordSlots) {
        self.place_new_fields(slots);
        for (value, given) in row.iter_mut().zip(&self.given) {
            let input = std::mem::replace(value, Value::Null);
            if !given {
                *value = as_through_vrl(input);
            }
        }
        row.reserve_exact(self.columns.len() - row.len());
        row.resize(self.columns.len(), Value::Null);
        for (slot, column) in self.slot_columns.iter().enumerate() {
            if let (Some(value), Some(column)) = (slots.take(slot), column) {
                row[*column] = vrl_to_value(value);
                self.columns[*column].present = true;
            }
        }
        for (column, value) in self.columns.iter_mut().zip(&row) {
            column.data_type = DataType::merged(column.data_type, value);
            column.has_null |= value.is_null();
        }
        self.rows.push(row);
    }

    /// Gives a column to each field the program added that holds a value for
    /// the first time, in the order of their names.
    fn place_new_fields(&mut self, slots: &RecordSlots) {
        self.slot_columns.resize(slots.len(), None);
        let mut new: Vec<usize> =
            (0..slots.len()).filter(|&slot| self.slot_columns[slot].is_none() && slots.holds(slot)).collect();
        if new.is_empty() {
            return;
        }
        new.sort_by(|&a, &b| slots.name(a).cmp(slots.name(b)));
        for slot in new {
            let name = slots.name(slot);
            // A program cannot write a field it is not given, but should an
            // input field's name come back, it is that field.
            let column = self.input.index_of(name).unwrap_or_else(|| {
                // Records before this one lack the field: null there.
                let has_null = !self.rows.is_empty();
                self.columns.push(Column { name: name.to_string(), data_type: None, has_null, present: true });
                self.columns.len() - 1
            });
            self.slot_columns[slot] = Some(column);
        }
    }

    /// The output batch; the input schema when no record came out.
    pub fn finish(self) -> Batch {
        let RemapOutput { input, given, mut columns, mut rows, .. } = self;
        if rows.is_empty() {
            return Batch::empty(input);
        }
        for (column, given) in columns.iter_mut().zip(given) {
            column.present |= !given;
        }
        let width = columns.len();
        let mixed: Vec<usize> = (0..width)
            .filter(|&index| columns[index].present && columns[index].data_type == Some(DataType::Json))
            .collect();
        for row in &mut rows {
            row.resize(width, Value::Null);
            for &index in &mixed {
                if !matches!(row[index], Value::Null | Value::Json(_)) {
                    row[index] = Value::Json(row[index].to_json());
                }
            }
        }
        let (fields, sources) = columns
            .into_iter()
            .enumerate()
            .filter(|(_, column)| column.present)
            .map(|(index, column)| {
                let known = input.fields.get(index);
                let data_type = match column.data_type {
                    Some(data_type) => data_type,
                    None => known.map_or(DataType::String, |field| field.data_type),
                };
                let nullable = known.is_none_or(|field| field.nullable) || column.has_null;
                (Field { name: column.name, data_type, nullable }, ColumnSource::Input(index))
            })
            .unzip();
        ColumnEdit::new(Arc::new(Schema::new(fields)), sources, width).apply(rows)
    }
}
