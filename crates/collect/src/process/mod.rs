//! The built-in processors, one file each: each turns a batch into the
//! records passed on, the records rejected with a reason and the count of
//! records dropped on purpose.

pub mod filter;
pub mod remap;
mod vrl_bridge;
