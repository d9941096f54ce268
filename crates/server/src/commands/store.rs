//! `haul store migrate --from URL --to URL`: moves every record of a store —
//! jobs, job states, runs, shards with their checkpoints, epochs and
//! counters, events — into another, empty store, such as an embedded SQLite
//! deployment onto PostgreSQL or MySQL/MariaDB. The source is read in one
//! transaction and the target written in one, so a failed migration leaves
//! the target empty.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use haul_register::store::{self, redacted};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy every job, job state, run, shard and event into an empty store.
    Migrate {
        /// The store to copy, e.g. `sqlite://.haul/server.db`.
        #[arg(long)]
        from: String,
        /// The empty store to copy into, e.g. `postgres://haul@db.example.com/haul`.
        #[arg(long)]
        to: String,
    },
}

pub async fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        StoreCommand::Migrate { from, to } => migrate(&from, &to).await,
    }
}

async fn migrate(from: &str, to: &str) -> anyhow::Result<ExitCode> {
    // Opening a SQLite URL creates the file: a mistyped source would migrate nothing.
    if let Some(path) = from.strip_prefix("sqlite://")
        && !Path::new(path).exists()
    {
        bail!("no store file at {path}");
    }
    let source = store::open(from).await.with_context(|| format!("opening the store {}", redacted(from)))?;
    let target = store::open(to).await.with_context(|| format!("opening the store {}", redacted(to)))?;
    let snapshot = source.export().await.with_context(|| format!("reading the store {}", redacted(from)))?;
    target.import(&snapshot).await.with_context(|| format!("writing into the store {}", redacted(to)))?;
    println!("migrated {} to {}", redacted(from), redacted(to));
    for table in &snapshot.tables {
        println!("{:>10} {}", table.rows.len(), table.table);
    }
    Ok(ExitCode::SUCCESS)
}
