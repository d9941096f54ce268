//! The built-in processors, one file each: each turns a batch into the
//! records passed on, the records rejected with a reason and the count of
//! records dropped on purpose.

pub mod cast;
mod cast_value;
pub mod cleanse;
mod cleanse_text;
mod column_edit;
pub mod dedup;
mod dedup_runs;
pub mod detect;
pub mod filter;
pub mod mask;
pub mod remap;
mod remap_output;
pub mod rename;
pub mod select;
#[cfg(test)]
mod test_table;
pub mod validate;
mod validate_rules;
mod vrl_bridge;
mod vrl_functions;
mod vrl_record;
