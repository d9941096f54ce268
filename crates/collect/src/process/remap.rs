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
//! The program is given only the fields it reads or writes; the others pass
//! from the input record to the output record without a trip through VRL
//! (see [`super::remap_output`]), which keeps a short program on a wide
//! record cheap.
//!
//! A runtime error (a failing `f!(...)` call, `abort`, or a program that
//! leaves `.` something other than an object) rejects the record with the
//! reason, or drops it, or fails the shard, as `drop_on_error` and `on_error`
//! say; errors the program handles itself (`f(...) ?? default`,
//! `value, err = f(...)`) are no errors.

use std::sync::Arc;

use anyhow::bail;
use async_trait::async_trait;
use haul_collect_core::plugin::Processed;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Processor, Rejected};
use serde::Deserialize;

use super::remap_output::RemapOutput;
use super::vrl_bridge::{Access, CompiledProgram, ProgramOutput, run_blocking};

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
        let Batch { schema, rows } = batch;
        let mut slots = self.program.given_fields(&schema, Access::ReadWrite);
        let mut runner = self.program.runner();
        let mut output = RemapOutput::new(Arc::clone(&schema), &slots, rows.len());
        let mut rejected = Vec::new();
        let mut dropped = 0;
        for row in rows {
            slots.load(&row);
            let reason = match runner.run(&mut slots) {
                Ok(ProgramOutput { not_an_object: None, .. }) => {
                    output.push(row, &mut slots);
                    continue;
                }
                Ok(ProgramOutput { not_an_object: Some(kind), .. }) => {
                    format!("the program left `.` as {kind}, expected an object")
                }
                Err(reason) => reason,
            };
            match self.policy {
                ErrorPolicy::DeadLetter => rejected.push(Rejected {
                    reason,
                    position: String::new(),
                    record: schema.row_to_json(&row),
                    stage: STAGE.to_string(),
                }),
                ErrorPolicy::Drop => dropped += 1,
                ErrorPolicy::Fail => bail!("remap failed on a record: {reason}"),
            }
        }
        Ok(Processed { batch: output.finish(), rejected, dropped })
    }
}
