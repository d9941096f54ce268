//! `haul`: the command line. `haul run JOB.toml` runs a job in this process
//! with resumable local state; `haul check` validates a job and tests its
//! connections; `haul plugins` lists what jobs can use; `haul server` starts
//! the platform (scheduler, REST API, embedded workers); `haul jobs`, `haul
//! runs` and `haul backfill` drive a running server through its API; `haul
//! store migrate` moves a store to another backend.

mod api;
mod commands;
mod job_loader;
mod progress_view;
mod summary;

use std::process::ExitCode;

/// mimalloc returns memory freed by other threads promptly: batches are
/// decoded on one thread and freed on another, which makes the system
/// allocator's per-thread arenas hold on to far more memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use haul_common::telemetry::{self, LogFormat};

/// Collect data from databases, APIs, sites, files and brokers into anything: sharded, resumable, rate-limited.
#[derive(Debug, Parser)]
#[command(name = "haul", version, propagate_version = true)]
struct Cli {
    /// More logs: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text, global = true)]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job here and now; Ctrl-C pauses, running again resumes.
    Run(commands::run::RunArgs),
    /// Validate a job file and test its connections without moving data.
    Check(commands::check::CheckArgs),
    /// List the plugins and their options.
    Plugins(commands::plugins::PluginsArgs),
    /// Inspect and replay a job's rejected records.
    Deadletter(commands::deadletter::DeadLetterArgs),
    /// Start the platform: scheduler, REST API and embedded workers.
    Server(commands::server::ServerArgs),
    /// Join a distributed deployment as a worker that runs shards.
    Worker(commands::worker::WorkerArgs),
    /// Submit and manage the jobs of a server.
    Jobs(commands::client::jobs::JobsArgs),
    /// Follow and steer the runs of a server.
    Runs(commands::client::runs::RunsArgs),
    /// Queue one run of a job per past interval on a server.
    Backfill(commands::client::backfill::BackfillArgs),
    /// Move a store's records to another backend.
    Store(commands::store::StoreArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        telemetry::init(cli.verbose, format);
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Check(args) => commands::check::run(args).await,
            Command::Plugins(args) => commands::plugins::run(args),
            Command::Deadletter(args) => commands::deadletter::run(args).await,
            Command::Server(args) => commands::server::run(args).await,
            Command::Worker(args) => commands::worker::run(args).await,
            Command::Jobs(args) => commands::client::jobs::run(args).await,
            Command::Runs(args) => commands::client::runs::run(args).await,
            Command::Backfill(args) => commands::client::backfill::run(args).await,
            Command::Store(args) => commands::store::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        // A reader that stopped reading (`haul plugins | head`) is not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
