//! The heart of haul: the data model ([`Batch`], [`Value`], [`Schema`]), the
//! plugin traits ([`Source`], [`Sink`], [`Processor`]) and their registry, the
//! job specification, and the pipeline runtime that moves batches from a
//! source's shards through processors into a sink, committing checkpoints
//! only after the sink has made the data durable.
//!
//! It depends only on `haul-common`. It knows no concrete plugin (they live in
//! `haul-collect`) and no storage backend: the runtime reports checkpoints
//! through the [`runtime::Ledger`] trait, which `haul-register` implements.

pub mod assemble;
pub mod batch;
pub mod deadletter;
pub mod error_limit;
pub mod flow;
pub mod job;
pub mod plugin;
pub mod progress;
pub mod registry;
pub mod runtime;
pub mod schema;
pub mod transient;
pub mod value;

#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use batch::{Batch, Rejected};
pub use plugin::{
    Checkpoint, Delivery, Plan, PlanContext, Processed, Processor, ShardReader, ShardSpec, ShardWriter, Sink, Source,
    SourceBatch,
};
pub use schema::{DataType, Field, Schema};
pub use value::Value;
