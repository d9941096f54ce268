//! The `select` and `drop` processors: one projection of fields, built once
//! per batch. `select` keeps the listed fields in the listed order (a field
//! the batch lacks is an error naming it, or a null with `missing = "null"`);
//! `drop` removes the listed fields and skips those the batch lacks. Records
//! are edited in place (see [`super::column_edit`]).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::bail;
use async_trait::async_trait;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, DataType, Field, Processed, Processor, Schema, Value};
use serde::Deserialize;

use super::column_edit::{ColumnEdit, ColumnSource};

/// What `select` does with a listed field a batch lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingField {
    #[default]
    Error,
    /// Adds it as a nullable string field, null in every record.
    Null,
}

/// The `select` processor's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    pub fields: Vec<String>,
    #[serde(default)]
    pub missing: MissingField,
}

/// The `drop` processor's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    pub fields: Vec<String>,
}

/// Builds `select` processors.
pub struct SelectPlugin;

impl Plugin for SelectPlugin {
    type Config = SelectConfig;
    type Output = dyn Processor;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "select",
            role: Role::Processor,
            description: "keeps only the listed fields, in the listed order",
            options: vec![
                option("fields", "list", None, "the fields to keep, in output order"),
                option(
                    "missing",
                    "string",
                    Some("error"),
                    "a listed field a batch lacks: \"error\", or \"null\" to add it as nulls",
                ),
            ],
        }
    }

    fn build(&self, config: SelectConfig) -> anyhow::Result<Arc<dyn Processor>> {
        let mut listed = HashSet::new();
        if let Some(twice) = config.fields.iter().find(|name| !listed.insert(*name)) {
            let message = format!("field `{twice}` is listed twice");
            return Err(OptionError { path: vec!["fields".to_string()], message }.into());
        }
        Ok(Arc::new(Project::Select { fields: config.fields, missing: config.missing }))
    }
}

/// Builds `drop` processors.
pub struct DropPlugin;

impl Plugin for DropPlugin {
    type Config = DropConfig;
    type Output = dyn Processor;

    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: "drop",
            role: Role::Processor,
            description: "removes the listed fields",
            options: vec![OptionInfo {
                name: "fields",
                kind: "list",
                default: None,
                description: "the fields to remove; those a batch lacks are skipped",
            }],
        }
    }

    fn build(&self, config: DropConfig) -> anyhow::Result<Arc<dyn Processor>> {
        Ok(Arc::new(Project::Drop { fields: config.fields.into_iter().collect() }))
    }
}

/// A configured `select` or `drop` processor.
pub enum Project {
    Select { fields: Vec<String>, missing: MissingField },
    Drop { fields: HashSet<String> },
}

impl Project {
    /// The edit that projects records of `schema`.
    fn projection(&self, schema: &Schema) -> anyhow::Result<ColumnEdit> {
        let (fields, sources): (Vec<Field>, Vec<ColumnSource>) = match self {
            Project::Select { fields, missing } => {
                let absent: Vec<&str> =
                    fields.iter().filter(|name| schema.index_of(name).is_none()).map(String::as_str).collect();
                if !absent.is_empty() && *missing == MissingField::Error {
                    bail!("selected fields missing from the records: {}", absent.join(", "));
                }
                fields
                    .iter()
                    .map(|name| match schema.index_of(name) {
                        Some(index) => (schema.fields[index].clone(), ColumnSource::Input(index)),
                        None => (Field::new(name.clone(), DataType::String), ColumnSource::Fill(Value::Null)),
                    })
                    .unzip()
            }
            Project::Drop { fields } => schema
                .fields
                .iter()
                .enumerate()
                .filter(|(_, field)| !fields.contains(&field.name))
                .map(|(index, field)| (field.clone(), ColumnSource::Input(index)))
                .unzip(),
        };
        Ok(ColumnEdit::new(Arc::new(Schema::new(fields)), sources, schema.fields.len()))
    }
}

#[async_trait]
impl Processor for Project {
    async fn process(&self, _shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        let projection = self.projection(&batch.schema)?;
        if **projection.schema() == *batch.schema {
            return Ok(Processed::pass(batch));
        }
        Ok(Processed::pass(projection.apply(batch.rows)))
    }
}

#[cfg(test)]
mod tests {
    use haul_collect_core::DataType::{Float, Int, String as Text};
    use serde_json::json;

    use super::super::test_table::table;
    use super::*;

    fn select(options: serde_json::Value) -> Arc<dyn Processor> {
        SelectPlugin.build(serde_json::from_value(options).unwrap()).unwrap()
    }

    fn drop_fields(fields: serde_json::Value) -> Arc<dyn Processor> {
        DropPlugin.build(serde_json::from_value(json!({ "fields": fields })).unwrap()).unwrap()
    }

    fn input() -> Batch {
        table(&[("id", Int), ("name", Text), ("price", Float)], json!([[1, "a", 1.5], [2, null, null]]))
    }

    #[tokio::test]
    async fn golden_select_reorders_and_fills_missing_with_nulls() {
        let reorder = select(json!({ "fields": ["price", "id"] }));
        let expected = table(&[("price", Float), ("id", Int)], json!([[1.5, 1], [null, 2]]));
        assert_eq!(reorder.process("shard-0", input()).await.unwrap().batch, expected);

        let in_order = select(json!({ "fields": ["id", "price", "extra"], "missing": "null" }));
        let expected =
            table(&[("id", Int), ("price", Float), ("extra", Text)], json!([[1, 1.5, null], [2, null, null]]));
        assert_eq!(in_order.process("shard-0", input()).await.unwrap().batch, expected);

        let subset_in_order = select(json!({ "fields": ["id", "price"] }));
        let expected = table(&[("id", Int), ("price", Float)], json!([[1, 1.5], [2, null]]));
        assert_eq!(subset_in_order.process("shard-0", input()).await.unwrap().batch, expected);
    }

    #[tokio::test]
    async fn select_names_every_missing_field() {
        let processor = select(json!({ "fields": ["id", "x", "y"] }));
        let error = processor.process("shard-0", input()).await.unwrap_err();
        assert_eq!(error.to_string(), "selected fields missing from the records: x, y");
    }

    #[tokio::test]
    async fn golden_drop_removes_listed_fields_and_skips_absent_ones() {
        let processor = drop_fields(json!(["name", "absent"]));
        let expected = table(&[("id", Int), ("price", Float)], json!([[1, 1.5], [2, null]]));
        assert_eq!(processor.process("shard-0", input()).await.unwrap().batch, expected);
    }

    #[tokio::test]
    async fn unchanged_and_empty_batches() {
        let batch = input();
        let schema = Arc::clone(&batch.schema);
        let all = select(json!({ "fields": ["id", "name", "price"] }));
        assert!(Arc::ptr_eq(&all.process("shard-0", batch).await.unwrap().batch.schema, &schema));
        let empty = table(&[("id", Int), ("name", Text)], json!([]));
        assert_eq!(
            drop_fields(json!(["id"])).process("shard-0", empty).await.unwrap().batch,
            table(&[("name", Text)], json!([]))
        );
    }

    #[test]
    fn a_field_selected_twice_is_refused() {
        let error = SelectPlugin.build(serde_json::from_value(json!({ "fields": ["a", "a"] })).unwrap()).err().unwrap();
        assert_eq!(error.downcast::<OptionError>().unwrap().message, "field `a` is listed twice");
    }
}
