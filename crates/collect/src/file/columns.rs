//! Mapping a batch's fields onto the columns a part file fixed with its first
//! batch: by name, a missing field is null, a field the part lacks is an error.

use anyhow::bail;
use haul_collect_core::Schema;

/// For each column of the part, the position of its field in a batch.
pub(crate) fn map_columns(columns: &Schema, batch: &Schema) -> anyhow::Result<Vec<Option<usize>>> {
    if let Some(unknown) = batch.names().find(|name| columns.index_of(name).is_none()) {
        bail!("field `{unknown}` is not a column of the part file, whose columns come from its first batch");
    }
    Ok(columns.names().map(|name| batch.index_of(name)).collect())
}

#[cfg(test)]
mod tests {
    use haul_collect_core::{DataType, Field};

    use super::*;

    fn schema(names: &[&str]) -> Schema {
        Schema::new(names.iter().map(|name| Field::new(*name, DataType::String)).collect())
    }

    #[test]
    fn maps_by_name_and_rejects_unknown_fields() {
        let columns = schema(&["a", "b", "c"]);
        assert_eq!(map_columns(&columns, &schema(&["c", "a"])).unwrap(), vec![Some(1), None, Some(0)]);
        let error = map_columns(&columns, &schema(&["a", "x"])).unwrap_err();
        assert!(error.to_string().contains("`x`"), "{error}");
    }
}
