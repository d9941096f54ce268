//! Mapping a batch's fields onto the columns a part file fixed with its first
//! batch: by name, a missing field is null. A batch with a field the part
//! lacks, or of a type the column cannot hold, does not fit: it starts a new
//! part.

use haul_collect_core::{DataType, Schema};

/// Whether every field of `batch` has a column in `columns` whose type
/// `holds` the field's.
pub(crate) fn fits(columns: &Schema, batch: &Schema, holds: impl Fn(DataType, DataType) -> bool) -> bool {
    batch.fields.iter().all(|field| {
        columns.index_of(&field.name).is_some_and(|index| holds(columns.fields[index].data_type, field.data_type))
    })
}

/// For each column of the part, the position of its field in a batch.
pub(crate) fn map_columns(columns: &Schema, batch: &Schema) -> Vec<Option<usize>> {
    columns.names().map(|name| batch.index_of(name)).collect()
}

#[cfg(test)]
mod tests {
    use haul_collect_core::Field;

    use super::*;

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(fields.iter().map(|(name, data_type)| Field::new(*name, *data_type)).collect())
    }

    #[test]
    fn maps_by_name_and_tells_what_fits() {
        let columns = schema(&[("a", DataType::String), ("b", DataType::Float), ("c", DataType::Int)]);
        let batch = schema(&[("c", DataType::Int), ("a", DataType::String)]);
        assert_eq!(map_columns(&columns, &batch), vec![Some(1), None, Some(0)]);
        let same = |column: DataType, field: DataType| column == field;
        assert!(fits(&columns, &batch, same));
        assert!(!fits(&columns, &schema(&[("a", DataType::String), ("x", DataType::Int)]), same));
        assert!(!fits(&columns, &schema(&[("b", DataType::Int)]), same));
        assert!(fits(&columns, &schema(&[("b", DataType::Int)]), |column, field| {
            column == field || (column == DataType::Float && field == DataType::Int)
        }));
    }
}
