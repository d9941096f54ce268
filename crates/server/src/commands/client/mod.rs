//! `haul jobs`, `haul runs` and `haul backfill`: the command-line client of a
//! running `haul server`, over its REST API. Every command takes `--server`
//! (or `HAUL_SERVER`) and `--output table|json`; an error answer of the API
//! fails the command with the answer's message.

pub mod backfill;
mod http;
pub mod jobs;
mod output;
pub mod runs;
mod watch;

use http::ApiClient;
use output::OutputFormat;

/// Where the server is and how to print its answers.
#[derive(Debug, clap::Args)]
pub struct ClientOptions {
    /// The address of the haul server.
    #[arg(long, env = "HAUL_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// How results are printed.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table, global = true)]
    output: OutputFormat,
}

impl ClientOptions {
    fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(&self.server)
    }
}
