//! The `remap` processor: runs a VRL (Vector Remap Language) program on each
//! record, which it sees as the object `.`; the object the program leaves is
//! the output record. The program is compiled once when the job is built and
//! shared by every shard.
//!
//! The output schema of a batch is the union of the output records' fields:
//! input fields keep their input order, new fields follow in the order they
//! are first seen (VRL objects list their keys alphabetically). A field's type
//! is inferred from its values; values of mixed types make it `json`; a field
//! that is null throughout keeps its input type, or is `string` when new.
//!
//! A runtime error (a failing `f!(...)` call, `abort`, or a program that
//! leaves `.` something other than an object) rejects the record with the
//! reason, or drops it, or fails the shard, as `drop_on_error` and `on_error`
//! say; errors the program handles itself (`f(...) ?? default`,
//! `value, err = f(...)`) are no errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::bail;
use async_trait::async_trait;
use haul_collect_core::plugin::Processed;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, DataType, Field, Processor, Rejected, Schema, Value};
use serde::Deserialize;
use vrl::value::{ObjectMap, Value as VrlValue};

use super::vrl_bridge::{CompiledProgram, kind_name, record_to_vrl, run_blocking, vrl_to_value};

const STAGE: &str = "remap";

/// What happens to a record whose program run fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The record goes to the dead letters with VRL's error message.
    #[default]
    DeadLetter,
    /// The shard fails.
    Fail,
}

/// Options of the `remap` processor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemapConfig {
    /// The VRL program.
    pub source: String,
    /// Drop failing records (counted against the error limit) instead of dead-lettering them.
    #[serde(default)]
    pub drop_on_error: bool,
    #[serde(default)]
    pub on_error: OnError,
    /// The time zone of times without one (`parse_timestamp`, `format_timestamp`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

pub(crate) fn default_timezone() -> String {
    "UTC".to_string()
}

/// Builds `remap` processors.
pub struct RemapPlugin;

impl Plugin for RemapPlugin {
    type Config = RemapConfig;
    type Output = dyn Processor;

    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: STAGE,
            role: Role::Processor,
            description: "transforms each record with a VRL (Vector Remap Language) program",
            options: vec![
                OptionInfo {
                    name: "source",
                    kind: "string",
                    default: None,
                    description: "the VRL program; `.` is the record",
                },
                OptionInfo {
                    name: "drop_on_error",
                    kind: "boolean",
                    default: Some("false"),
                    description: "drop records whose program fails (counted as rejected) instead of dead-lettering them",
                },
                OptionInfo {
                    name: "on_error",
                    kind: "string",
                    default: Some("dead_letter"),
                    description: "`dead_letter` rejects a failing record with VRL's message; `fail` fails the shard",
                },
                OptionInfo {
                    name: "timezone",
                    kind: "string",
                    default: Some("UTC"),
                    description: "time zone of times without one: `local` or a name like `Europe/Paris`",
                },
            ],
        }
    }

    fn build(&self, config: RemapConfig) -> anyhow::Result<Arc<dyn Processor>> {
        let policy = match (config.drop_on_error, config.on_error) {
            (false, OnError::DeadLetter) => ErrorPolicy::DeadLetter,
            (false, OnError::Fail) => ErrorPolicy::Fail,
            (true, OnError::DeadLetter) => ErrorPolicy::Drop,
            (true, OnError::Fail) => {
                return Err(OptionError {
                    path: vec!["on_error".into()],
                    message: "`on_error = \"fail\"` contradicts `drop_on_error = true`".into(),
                }
                .into());
            }
        };
        let program = CompiledProgram::compile("source", &config.source, &config.timezone)?;
        Ok(Arc::new(RemapProcessor { remap: Arc::new(Remap { program, policy }) }))
    }
}

/// What to do with a record the program fails on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorPolicy {
    DeadLetter,
    Drop,
    Fail,
}

/// Runs a compiled VRL program over each batch, on the blocking pool.
pub struct RemapProcessor {
    remap: Arc<Remap>,
}

#[async_trait]
impl Processor for RemapProcessor {
    async fn process(&self, _shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        let remap = Arc::clone(&self.remap);
        run_blocking(move || remap.process(batch)).await?
    }
}

struct Remap {
    program: CompiledProgram,
    policy: ErrorPolicy,
}

impl Remap {
    fn process(&self, batch: Batch) -> anyhow::Result<Processed> {
        let mut runner = self.program.runner();
        let mut outputs = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        let mut dropped = 0;
        for row in &batch.rows {
            let reason = match runner.run(record_to_vrl(&batch.schema, row, |_| true)) {
                Ok(output) => match output.record {
                    VrlValue::Object(object) => {
                        outputs.push(object);
                        continue;
                    }
                    other => format!("the program left `.` as {}, expected an object", kind_name(&other)),
                },
                Err(reason) => reason,
            };
            match self.policy {
                ErrorPolicy::DeadLetter => rejected.push(Rejected {
                    reason,
                    position: String::new(),
                    record: batch.row_to_json(row),
                    stage: STAGE.to_string(),
                }),
                ErrorPolicy::Drop => dropped += 1,
                ErrorPolicy::Fail => bail!("remap failed on a record: {reason}"),
            }
        }
        let batch = if outputs.is_empty() { Batch::empty(batch.schema) } else { union_batch(&batch.schema, outputs) };
        Ok(Processed { batch, rejected, dropped })
    }
}

/// The output records as one batch whose schema is the union of their fields.
fn union_batch(input: &Schema, outputs: Vec<ObjectMap>) -> Batch {
    let names = output_field_names(input, &outputs);
    let column_of: HashMap<&str, usize> =
        names.iter().enumerate().map(|(index, name)| (name.as_str(), index)).collect();
    let mut types = vec![None; names.len()];
    let mut nulls = vec![false; names.len()];
    let mut rows = Vec::with_capacity(outputs.len());
    for object in outputs {
        let mut row = vec![Value::Null; names.len()];
        for (key, value) in object {
            let index = column_of[key.as_str()];
            let value = vrl_to_value(value);
            types[index] = DataType::merged(types[index], &value);
            row[index] = value;
        }
        for (index, value) in row.iter().enumerate() {
            nulls[index] |= value.is_null();
        }
        rows.push(row);
    }
    for (index, _) in types.iter().enumerate().filter(|(_, column)| **column == Some(DataType::Json)) {
        for row in &mut rows {
            if !matches!(row[index], Value::Null | Value::Json(_)) {
                row[index] = Value::Json(row[index].to_json());
            }
        }
    }
    let fields = names
        .into_iter()
        .zip(types)
        .zip(nulls)
        .map(|((name, column), has_null)| {
            let known = input.index_of(&name).map(|index| &input.fields[index]);
            let data_type = match column {
                Some(data_type) => data_type,
                None => known.map_or(DataType::String, |field| field.data_type),
            };
            let nullable = known.is_none_or(|field| field.nullable) || has_null;
            Field { name, data_type, nullable }
        })
        .collect();
    Batch::new(Arc::new(Schema::new(fields)), rows)
}

/// The input fields still present in some output, in input order, then the
/// new fields in the order first seen.
fn output_field_names(input: &Schema, outputs: &[ObjectMap]) -> Vec<String> {
    let input_index: HashMap<&str, usize> = input.names().enumerate().map(|(index, name)| (name, index)).collect();
    let mut kept = vec![false; input.fields.len()];
    let mut added: Vec<String> = Vec::new();
    let mut added_names: HashSet<&str> = HashSet::new();
    for key in outputs.iter().flat_map(|object| object.keys()) {
        match input_index.get(key.as_str()) {
            Some(&index) => kept[index] = true,
            None => {
                if added_names.insert(key.as_str()) {
                    added.push(key.to_string());
                }
            }
        }
    }
    input.names().zip(kept).filter(|(_, kept)| *kept).map(|(name, _)| name.to_string()).chain(added).collect()
}
