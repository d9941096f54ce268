//! The `rename` processor: gives fields new names. Only the batch's schema
//! changes, once per batch; records pass untouched. Renaming onto a field
//! the batch already has (and keeps) is an error naming both; fields absent
//! from a batch are skipped.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::bail;
use async_trait::async_trait;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Field, Processed, Processor, Schema};
use serde::Deserialize;

use super::column_edit::ColumnEdit;

/// The `rename` processor's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameConfig {
    /// Old name = new name.
    pub fields: BTreeMap<String, String>,
}

/// Builds `rename` processors.
pub struct RenamePlugin;

impl Plugin for RenamePlugin {
    type Config = RenameConfig;
    type Output = dyn Processor;

    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: "rename",
            role: Role::Processor,
            description: "renames fields; renaming onto a field that exists is an error",
            options: vec![OptionInfo {
                name: "fields",
                kind: "table",
                default: None,
                description: "old = \"new\"; fields a batch lacks are skipped",
            }],
        }
    }

    fn build(&self, config: RenameConfig) -> anyhow::Result<Arc<dyn Processor>> {
        let mut targets = HashSet::new();
        if let Some((old, new)) = config.fields.iter().find(|(_, new)| !targets.insert(*new)) {
            let message = format!("`{old}` and another field are both renamed to `{new}`");
            return Err(OptionError { path: vec!["fields".to_string(), old.clone()], message }.into());
        }
        Ok(Arc::new(Rename { fields: config.fields }))
    }
}

/// A configured `rename` processor.
pub struct Rename {
    fields: BTreeMap<String, String>,
}

impl Rename {
    fn renamed_schema(&self, schema: &Schema) -> anyhow::Result<Option<Schema>> {
        if !schema.fields.iter().any(|field| self.fields.contains_key(&field.name)) {
            return Ok(None);
        }
        for field in &schema.fields {
            let Some(new) = self.fields.get(&field.name) else { continue };
            let kept = schema.index_of(new).is_some_and(|index| !self.fields.contains_key(&schema.fields[index].name));
            if kept && new != &field.name {
                bail!("cannot rename `{}` to `{new}`: the records already have a field `{new}`", field.name);
            }
        }
        let fields = schema
            .fields
            .iter()
            .map(|field| match self.fields.get(&field.name) {
                Some(new) => Field { name: new.clone(), ..field.clone() },
                None => field.clone(),
            })
            .collect();
        Ok(Some(Schema::new(fields)))
    }
}

#[async_trait]
impl Processor for Rename {
    async fn process(&self, _shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        Ok(Processed::pass(match self.renamed_schema(&batch.schema)? {
            Some(schema) => ColumnEdit::schema_only(Arc::new(schema)).apply(batch.rows),
            None => batch,
        }))
    }
}

#[cfg(test)]
mod tests {
    use haul_collect_core::DataType::{Int, String as Text};
    use serde_json::json;

    use super::super::test_table::table;
    use super::*;

    fn rename(fields: serde_json::Value) -> anyhow::Result<Arc<dyn Processor>> {
        RenamePlugin.build(serde_json::from_value(json!({ "fields": fields })).unwrap())
    }

    #[tokio::test]
    async fn golden_renames_keep_values_and_order_and_allow_swaps() {
        let processor = rename(json!({ "id": "order_id", "a": "b", "b": "a", "absent": "x" })).unwrap();
        let input = table(&[("id", Int), ("a", Text), ("b", Int)], json!([[1, "x", 2], [null, null, null]]));
        let processed = processor.process("shard-0", input).await.unwrap();
        let expected = table(&[("order_id", Int), ("b", Text), ("a", Int)], json!([[1, "x", 2], [null, null, null]]));
        assert_eq!(processed.batch, expected);
        assert!(processed.rejected.is_empty());
    }

    #[tokio::test]
    async fn untouched_batches_keep_their_schema() {
        let processor = rename(json!({ "absent": "x" })).unwrap();
        let input = table(&[("id", Int)], json!([]));
        let schema = Arc::clone(&input.schema);
        assert!(Arc::ptr_eq(&processor.process("shard-0", input).await.unwrap().batch.schema, &schema));
    }

    #[tokio::test]
    async fn renaming_onto_an_existing_field_names_both() {
        let processor = rename(json!({ "name": "id" })).unwrap();
        let error = processor.process("shard-0", table(&[("id", Int), ("name", Text)], json!([]))).await.unwrap_err();
        assert_eq!(error.to_string(), "cannot rename `name` to `id`: the records already have a field `id`");
    }

    #[test]
    fn two_fields_onto_one_name_are_refused_when_built() {
        let error = rename(json!({ "a": "c", "b": "c" })).err().unwrap();
        let option = error.downcast::<OptionError>().unwrap();
        assert_eq!(option.path, ["fields", "b"]);
        assert_eq!(option.message, "`b` and another field are both renamed to `c`");
    }
}
