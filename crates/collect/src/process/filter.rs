//! The `filter` processor: keeps the records for which a VRL (Vector Remap
//! Language) condition is true. Records where it is false are removed by
//! design, not counted as errors; a record for which the condition fails at
//! runtime, aborts or returns something other than a boolean is rejected with
//! the reason. The records passed on are the input records, unchanged, in the
//! batch's own schema.
//!
//! Only the fields the condition reads are converted to VRL, unless it uses
//! the whole record (`.` itself, `get`, `unnest`), so a narrow condition on a
//! wide record stays cheap.

use std::sync::Arc;

use async_trait::async_trait;
use haul_collect_core::plugin::Processed;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Processor, Rejected};
use serde::Deserialize;
use vrl::value::Value as VrlValue;

use super::remap::default_timezone;
use super::vrl_bridge::{Access, CompiledProgram, kind_name, run_blocking};

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
        let Batch { schema, mut rows } = batch;
        let mut slots = self.condition.given_fields(&schema, Access::Read);
        let mut runner = self.condition.runner();
        let mut rejected = Vec::new();
        rows.retain(|row| {
            slots.load(row);
            let reason = match runner.run(&mut slots) {
                Ok(output) => match output.result {
                    VrlValue::Boolean(keep) => return keep,
                    other => format!("the condition returned {}, expected a boolean", kind_name(&other)),
                },
                Err(reason) => reason,
            };
            let record = schema.row_to_json(row);
            rejected.push(Rejected { reason, position: String::new(), record, stage: STAGE.to_string() });
            false
        });
        Processed { batch: Batch::new(schema, rows), rejected, dropped: 0 }
    }
}
