//! One module per `haul` command.

pub mod check;
pub mod client;
pub mod config_centre;
pub mod config_file;
pub mod deadletter;
pub mod deployment;
pub mod plugins;
pub mod run;
pub mod server;
pub mod store;
pub mod worker;
