//! The `cleanse` processor: trims and collapses whitespace, changes case,
//! turns empty strings into nulls, fills defaults, drops fields, drops empty
//! records and removes duplicates by key across the whole run.
//!
//! Steps run in that order on each text field: `trim`, `collapse_whitespace`,
//! `case`, `empty_to_null`, then `defaults` (for nulls, and for fields the
//! batch lacks, which are appended). Then whole records go: `drop_records`,
//! then `dedup`. Fields named in options but absent from a batch are skipped,
//! except the `dedup.key` fields. Removed records are not errors: they are
//! simply absent from the output.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::bail;
use async_trait::async_trait;
use haul_collect_core::registry::{OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, DataType, Field, Processed, Processor, Schema, Value};
use serde::Deserialize;

use super::cleanse_text::{self, Case};
use super::column_edit::{ColumnEdit, ColumnSource};
use super::dedup::{Dedup, DedupConfig};

/// `true`, `false`, or a list of the fields a step applies to.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FieldSelection {
    Every(bool),
    Fields(Vec<String>),
}

impl Default for FieldSelection {
    fn default() -> Self {
        FieldSelection::Every(false)
    }
}

impl FieldSelection {
    fn includes(&self, name: &str) -> bool {
        match self {
            FieldSelection::Every(every) => *every,
            FieldSelection::Fields(fields) => fields.iter().any(|field| field == name),
        }
    }
}

/// Which records `drop_records` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropRecords {
    /// Every field is null.
    Null,
    /// Every field is null or an empty string.
    Empty,
}

/// The `cleanse` processor's options in a job file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanseConfig {
    #[serde(default)]
    pub trim: FieldSelection,
    #[serde(default)]
    pub collapse_whitespace: FieldSelection,
    #[serde(default)]
    pub case: BTreeMap<String, Case>,
    #[serde(default)]
    pub empty_to_null: FieldSelection,
    #[serde(default)]
    pub defaults: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub drop_fields: Vec<String>,
    #[serde(default)]
    pub drop_records: Option<DropRecords>,
    #[serde(default)]
    pub dedup: Option<DedupConfig>,
}

/// Builds `cleanse` processors.
pub struct CleansePlugin;

impl Plugin for CleansePlugin {
    type Config = CleanseConfig;
    type Output = dyn Processor;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "cleanse",
            role: Role::Processor,
            description: "trims and collapses whitespace, changes case, fills defaults, drops fields, empty records and duplicates by key",
            options: vec![
                option(
                    "trim",
                    "bool or list",
                    Some("false"),
                    "remove leading and trailing Unicode whitespace of every text field, or of the listed ones",
                ),
                option(
                    "collapse_whitespace",
                    "bool or list",
                    Some("false"),
                    "replace each run of Unicode whitespace by one space, in every text field or the listed ones",
                ),
                option("case", "table", None, "field = \"upper\", \"lower\" or \"title\""),
                option(
                    "empty_to_null",
                    "bool or list",
                    Some("false"),
                    "turn empty strings (after trimming) into nulls, in every text field or the listed ones",
                ),
                option(
                    "defaults",
                    "table",
                    None,
                    "field = value, for nulls and for fields the records lack (then appended)",
                ),
                option("drop_fields", "list", Some("[]"), "fields removed from every record"),
                option(
                    "drop_records",
                    "string",
                    None,
                    "\"null\" drops records whose fields are all null; \"empty\" also counts empty strings as null",
                ),
                option(
                    "dedup.key",
                    "list",
                    None,
                    "fields identifying a record: later records with the same key in the run, across all shards, are removed",
                ),
                option(
                    "dedup.method",
                    "string",
                    Some("exact"),
                    "\"exact\" (128-bit key hashes, spilled to disk past memory_limit; collisions below 1e-20 for a billion keys) or \"approximate\" (a Bloom filter: a false positive drops a unique record, at most false_positive_rate of them while under `expected` keys)",
                ),
                option(
                    "dedup.memory_limit",
                    "size",
                    Some("64MB"),
                    "memory for key hashes before spilling to disk (exact), or the largest Bloom filter allowed (approximate)",
                ),
                option(
                    "dedup.expected",
                    "integer",
                    Some("10000000"),
                    "keys the approximate mode's Bloom filter is sized for; past it, the false-positive rate rises",
                ),
                option(
                    "dedup.false_positive_rate",
                    "float",
                    Some("0.001"),
                    "the approximate mode's rate of unique records dropped as duplicates",
                ),
            ],
        }
    }

    fn build(&self, config: CleanseConfig) -> anyhow::Result<Arc<dyn Processor>> {
        Ok(Arc::new(Cleanse::new(config)?))
    }
}

/// A configured `cleanse` processor.
pub struct Cleanse {
    trim: FieldSelection,
    collapse_whitespace: FieldSelection,
    case: BTreeMap<String, Case>,
    empty_to_null: FieldSelection,
    defaults: Vec<(String, Value)>,
    drop_fields: HashSet<String>,
    drop_records: Option<DropRecords>,
    dedup: Option<Dedup>,
}

impl Cleanse {
    pub fn new(config: CleanseConfig) -> anyhow::Result<Cleanse> {
        Ok(Cleanse {
            trim: config.trim,
            collapse_whitespace: config.collapse_whitespace,
            case: config.case,
            empty_to_null: config.empty_to_null,
            defaults: config.defaults.into_iter().map(|(field, json)| (field, Value::from_json(json))).collect(),
            drop_fields: config.drop_fields.into_iter().collect(),
            drop_records: config.drop_records,
            dedup: config.dedup.map(Dedup::new).transpose()?,
        })
    }

    /// What to do to the records of a batch with `schema`.
    fn plan(&self, schema: &Arc<Schema>) -> anyhow::Result<CleansePlan> {
        let kept: Vec<&Field> = schema.fields.iter().filter(|field| !self.drop_fields.contains(&field.name)).collect();
        let mut steps = Vec::new();
        for (index, field) in kept.iter().enumerate() {
            let name = field.name.as_str();
            let default = match self.defaults.iter().find(|(default_field, _)| default_field == name) {
                Some((_, value)) => Some(fit_default(name, value, field.data_type)?),
                None => None,
            };
            let field_steps = FieldSteps {
                trim: self.trim.includes(name),
                collapse_whitespace: self.collapse_whitespace.includes(name),
                case: self.case.get(name).copied(),
                empty_to_null: self.empty_to_null.includes(name),
                default,
            };
            if !field_steps.is_noop() {
                steps.push((index, field_steps));
            }
        }
        let appended: Vec<(Field, Value)> = self
            .defaults
            .iter()
            .filter(|(name, _)| schema.index_of(name).is_none() && !self.drop_fields.contains(name))
            .map(|(name, value)| (Field::new(name.clone(), data_type_of(value)), value.clone()))
            .collect();
        let output = if kept.len() < schema.fields.len() || !appended.is_empty() {
            let fields = kept.into_iter().cloned().chain(appended.iter().map(|(field, _)| field.clone())).collect();
            Arc::new(Schema::new(fields))
        } else {
            Arc::clone(schema)
        };
        let sources = (0..schema.fields.len())
            .filter(|&index| !self.drop_fields.contains(&schema.fields[index].name))
            .map(ColumnSource::Input)
            .chain(appended.into_iter().map(|(_, value)| ColumnSource::Fill(value)))
            .collect();
        Ok(CleansePlan { columns: ColumnEdit::new(output, sources, schema.fields.len()), steps })
    }
}

/// A default fits a field of the same type, or a wider numeric one.
fn fit_default(field: &str, value: &Value, data_type: DataType) -> anyhow::Result<Value> {
    Ok(match (value, data_type) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), DataType::Float) => Value::Float(*i as f64),
        (Value::Int(i), DataType::Decimal) => Value::Decimal(i.to_string()),
        (Value::Float(f), DataType::Decimal) if f.is_finite() => Value::Decimal(f.to_string()),
        (value, data_type) if data_type_of(value) == data_type => value.clone(),
        (value, data_type) => {
            bail!(
                "the default for `{field}` is {} but the field is {}",
                type_name(data_type_of(value)),
                type_name(data_type)
            )
        }
    })
}

/// A type as job files spell it, e.g. `timestamp_tz`.
pub(crate) fn type_name(data_type: DataType) -> String {
    serde_json::to_value(data_type).ok().and_then(|name| name.as_str().map(str::to_string)).unwrap_or_default()
}

/// The type of a value read from a job file (JSON-like); a null is typed as text.
fn data_type_of(value: &Value) -> DataType {
    value.data_type().unwrap_or(DataType::String)
}

/// The steps for one field of a batch.
struct FieldSteps {
    trim: bool,
    collapse_whitespace: bool,
    case: Option<Case>,
    empty_to_null: bool,
    default: Option<Value>,
}

impl FieldSteps {
    fn is_noop(&self) -> bool {
        !self.trim && !self.collapse_whitespace && self.case.is_none() && !self.empty_to_null && self.default.is_none()
    }

    fn apply(&self, value: &mut Value) {
        if let Value::String(text) = value {
            if self.trim {
                cleanse_text::trim(text);
            }
            if self.collapse_whitespace {
                cleanse_text::collapse_whitespace(text);
            }
            if let Some(case) = self.case {
                cleanse_text::change_case(text, case);
            }
            if self.empty_to_null && text.is_empty() {
                *value = Value::Null;
            }
        }
        if let (Value::Null, Some(default)) = (&value, &self.default) {
            *value = default.clone();
        }
    }
}

/// What `cleanse` does to the records of one batch.
struct CleansePlan {
    /// Dropped fields out, the defaults of fields the input lacks appended;
    /// the output schema is the input's own `Arc` when no field is dropped
    /// or added.
    columns: ColumnEdit,
    /// Steps by position in the output record.
    steps: Vec<(usize, FieldSteps)>,
}

impl DropRecords {
    fn drops(self, row: &[Value]) -> bool {
        match self {
            DropRecords::Null => row.iter().all(Value::is_null),
            DropRecords::Empty => row.iter().all(|value| match value {
                Value::Null => true,
                Value::String(text) => text.is_empty(),
                _ => false,
            }),
        }
    }
}

#[async_trait]
impl Processor for Cleanse {
    async fn process(&self, shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        let plan = self.plan(&batch.schema)?;
        let Batch { schema, mut rows } = plan.columns.apply(batch.rows);
        for row in &mut rows {
            for (index, steps) in &plan.steps {
                steps.apply(&mut row[*index]);
            }
        }
        if let Some(drop_records) = self.drop_records {
            rows.retain(|row| !drop_records.drops(row));
        }
        if let Some(dedup) = self.dedup.as_ref().filter(|_| !rows.is_empty()) {
            let key = dedup.key_indices(&schema)?;
            dedup.retain_first(shard, &mut rows, &key).await?;
        }
        Ok(Processed::pass(Batch::new(schema, rows)))
    }

    async fn committed(&self, shard: &str) -> anyhow::Result<()> {
        match &self.dedup {
            Some(dedup) => dedup.committed(shard).await,
            None => Ok(()),
        }
    }

    async fn rewound(&self, shard: &str) {
        if let Some(dedup) = &self.dedup {
            dedup.rewound(shard).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use haul_collect_core::DataType::{Int, String as Text};
    use serde_json::json;

    use super::super::test_table::table;
    use super::*;

    fn cleanse(options: serde_json::Value) -> Cleanse {
        Cleanse::new(serde_json::from_value(options).unwrap()).unwrap()
    }

    async fn run(cleanse: &Cleanse, batch: Batch) -> Batch {
        let processed = cleanse.process("shard-0", batch).await.unwrap();
        assert!(processed.rejected.is_empty() && processed.dropped == 0, "cleanse never rejects");
        processed.batch
    }

    #[tokio::test]
    async fn golden_text_steps_defaults_and_dropped_fields() {
        let processor = cleanse(json!({
            "trim": true,
            "collapse_whitespace": ["name"],
            "case": { "name": "title", "code": "upper" },
            "empty_to_null": ["code"],
            "defaults": { "code": "N/A", "country": "FR", "id": 0 },
            "drop_fields": ["internal", "absent"],
        }));
        let input = table(
            &[("id", Int), ("name", Text), ("code", Text), ("internal", Text)],
            json!([
                [1, "  élodie \u{a0}\u{3000} ÇELIK ", " ab1 ", "x"],
                [null, "\tjean-luc\n\npicard", "\u{2003}", "y"],
                [3, null, null, null],
                [4, "a  b", "ß", "z"],
            ]),
        );
        let expected = table(
            &[("id", Int), ("name", Text), ("code", Text), ("country", Text)],
            json!([
                [1, "Élodie Çelik", "AB1", "FR"],
                [0, "Jean-Luc Picard", "N/A", "FR"],
                [3, null, "N/A", "FR"],
                [4, "A B", "SS", "FR"],
            ]),
        );
        assert_eq!(run(&processor, input).await, expected);
    }

    #[tokio::test]
    async fn schema_is_shared_when_no_field_is_added_or_dropped() {
        let processor = cleanse(json!({ "trim": ["name", "missing"] }));
        let input = table(&[("id", Int), ("name", Text)], json!([[1, " a "], [2, "b"]]));
        let schema = Arc::clone(&input.schema);
        let output = run(&processor, input).await;
        assert!(Arc::ptr_eq(&schema, &output.schema));
        assert_eq!(output, table(&[("id", Int), ("name", Text)], json!([[1, "a"], [2, "b"]])));
    }

    #[tokio::test]
    async fn golden_drop_records_null_and_empty() {
        let input = || {
            table(&[("id", Int), ("name", Text)], json!([[null, null], [null, ""], [null, "  "], [1, ""], [null, "x"]]))
        };
        let null = cleanse(json!({ "drop_records": "null" }));
        assert_eq!(
            run(&null, input()).await,
            table(&[("id", Int), ("name", Text)], json!([[null, ""], [null, "  "], [1, ""], [null, "x"]]))
        );
        let empty = cleanse(json!({ "drop_records": "empty", "trim": true }));
        assert_eq!(run(&empty, input()).await, table(&[("id", Int), ("name", Text)], json!([[1, ""], [null, "x"]])));
    }

    #[tokio::test]
    async fn golden_dedup_keeps_first_record_of_each_key_across_batches() {
        let processor = cleanse(json!({ "trim": true, "dedup": { "key": ["id", "name"] } }));
        let fields = [("id", Int), ("name", Text)];
        let first = table(&fields, json!([[1, "a"], [1, " a "], [1, "b"], [null, "a"], [null, "a"]]));
        assert_eq!(run(&processor, first).await, table(&fields, json!([[1, "a"], [1, "b"], [null, "a"]])));
        let second = table(&fields, json!([[1, "b"], [2, "a"], [1, "a "]]));
        assert_eq!(run(&processor, second).await, table(&fields, json!([[2, "a"]])));
    }

    #[tokio::test]
    async fn empty_batch_passes_with_its_schema() {
        let processor = cleanse(json!({ "trim": true, "dedup": { "key": ["id"] }, "drop_fields": ["name"] }));
        let output = run(&processor, table(&[("id", Int), ("name", Text)], json!([]))).await;
        assert_eq!(output, table(&[("id", Int)], json!([])));
    }

    #[tokio::test]
    async fn missing_dedup_key_and_mistyped_default_are_errors() {
        let processor = cleanse(json!({ "dedup": { "key": ["id"] } }));
        let error = processor.process("shard-0", table(&[("name", Text)], json!([["a"]]))).await.unwrap_err();
        assert_eq!(error.to_string(), "dedup key field `id` is not in the batch");
        let processor = cleanse(json!({ "defaults": { "id": "none" } }));
        let error = processor.process("shard-0", table(&[("id", Int)], json!([[null]]))).await.unwrap_err();
        assert_eq!(error.to_string(), "the default for `id` is string but the field is int");
    }

    #[test]
    fn options_are_checked_when_built() {
        let parse_error = |options: serde_json::Value| {
            serde_json::from_value::<CleanseConfig>(options).err().map(|error| error.to_string())
        };
        assert!(parse_error(json!({ "trimm": true })).unwrap().contains("unknown field `trimm`"));
        assert!(parse_error(json!({ "case": { "a": "sideways" } })).is_some());
        assert!(parse_error(json!({ "dedup": { "key": ["id"], "method": "fuzzy" } })).is_some());
        let duplicate =
            CleansePlugin.build(serde_json::from_value(json!({ "dedup": { "key": ["id", "id"] } })).unwrap());
        assert!(duplicate.err().unwrap().to_string().contains("listed twice"));
    }
}
