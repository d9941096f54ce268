//! The `singer` source and the `singer` sink: any executable that speaks the
//! Singer protocol (`SCHEMA`, `RECORD` and `STATE` messages as JSON lines) is
//! a haul source (a tap) or sink (a target). The executable runs as a child
//! process with its config in a temporary file; it is killed when it writes
//! nothing for `idle_timeout`, and its failures are reported with its exit
//! status and the end of its standard error.

mod launch;
mod process;
mod protocol;
mod sink;
mod source;

pub use sink::{SingerSinkConfig, SingerSinkPlugin};
pub use source::{CatalogFlag, SingerSourceConfig, SingerSourcePlugin};
