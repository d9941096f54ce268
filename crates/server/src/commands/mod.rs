//! One module per `haul` command.

pub mod check;
pub mod client;
pub mod config_centre;
pub mod deadletter;
pub mod plugins;
pub mod run;
pub mod server;
pub mod store;
