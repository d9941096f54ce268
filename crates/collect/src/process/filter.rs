//! The `filter` processor: keeps the records for which a VRL (Vector Remap
//! Language) condition is true. Records where it is false are removed by
//! design, not counted as errors; a record for which the condition fails at
//! runtime, aborts or returns something other than a boolean is rejected with
//! the reason. The records passed on are the input records, unchanged, in the
//! batch's own schema.
//!
//! Only the fields the condition reads are converted to VRL, unless it reads
//! the whole record (`.` itself, or `get`), so a narrow condition on a wide
//! record stays cheap.

use std::sync::Arc;

use async_trait::async_trait;
use haul_collect_core::plugin::Processed;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Processor, Rejected, Schema};
use serde::Deserialize;
use vrl::path::{OwnedSegment, PathPrefix};
use vrl::value::Value as VrlValue;

use super::remap::default_timezone;
use super::vrl_bridge::{CompiledProgram, kind_name, record_to_vrl, run_blocking};

const STAGE: &str = "filter";

/// Options of the `filter` processor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// A VRL expression that is true for the records to keep.
    pub condition: String,
    /// The time zone of times without one.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

/// Builds `filter` processors.
pub struct FilterPlugin;

impl Plugin for FilterPlugin {
    type Config = FilterConfig;
    type Output = dyn Processor;

    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: STAGE,
            role: Role::Processor,
            description: "keeps the records for which a VRL (Vector Remap Language) condition is true",
            options: vec![
                OptionInfo {
                    name: "condition",
                    kind: "string",
                    default: None,
                    description: "a VRL boolean expression over the record `.`, e.g. `.amount > 0`",
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

    fn build(&self, config: FilterConfig) -> anyhow::Result<Arc<dyn Processor>> {
        let condition = CompiledProgram::compile("condition", &config.condition, &config.timezone)?;
        let result = condition.program().final_type_info().result;
        if !result.kind().contains_boolean() {
            return Err(OptionError {
                path: vec!["condition".into()],
                message: format!("the condition returns {}, never a boolean", result.kind()),
            }
            .into());
        }
        Ok(Arc::new(FilterProcessor { filter: Arc::new(Filter { condition }) }))
    }
}

/// Evaluates a compiled VRL condition over each batch, on the blocking pool.
pub struct FilterProcessor {
    filter: Arc<Filter>,
}

#[async_trait]
impl Processor for FilterProcessor {
    async fn process(&self, _shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        let filter = Arc::clone(&self.filter);
        run_blocking(move || filter.process(batch)).await
    }
}

struct Filter {
    condition: CompiledProgram,
}

impl Filter {
    fn process(&self, batch: Batch) -> Processed {
        let read = self.fields_read(&batch.schema);
        let mut runner = self.condition.runner();
        let mut rejected = Vec::new();
        let Batch { schema, rows } = batch;
        let shape = Batch::empty(schema);
        let kept = rows
            .into_iter()
            .filter(|row| {
                let reason = match runner.run(record_to_vrl(&shape.schema, row, |index| read[index])) {
                    Ok(output) => match output.result {
                        VrlValue::Boolean(keep) => return keep,
                        other => format!("the condition returned {}, expected a boolean", kind_name(&other)),
                    },
                    Err(reason) => reason,
                };
                let record = shape.row_to_json(row);
                rejected.push(Rejected { reason, position: String::new(), record, stage: STAGE.to_string() });
                false
            })
            .collect();
        Processed { batch: Batch::new(shape.schema, kept), rejected, dropped: 0 }
    }

    /// For each field of `schema`, whether the condition may read it.
    fn fields_read(&self, schema: &Schema) -> Vec<bool> {
        let queries = &self.condition.program().info().target_queries;
        let event_queries = queries.iter().filter(|query| query.prefix == PathPrefix::Event);
        let mut read = vec![false; schema.fields.len()];
        for query in event_queries {
            match query.path.segments.first() {
                Some(OwnedSegment::Field(name)) => {
                    if let Some(index) = schema.index_of(name.as_str()) {
                        read[index] = true;
                    }
                }
                _ => return vec![true; schema.fields.len()],
            }
        }
        read
    }
}
