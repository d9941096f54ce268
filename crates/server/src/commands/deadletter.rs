//! `haul deadletter list|show|replay JOB.toml`: inspects a job's rejected
//! records and re-drives fixed ones through the rest of its pipeline.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use haul_collect_core::deadletter::replay::replay;
use haul_collect_core::plugin::WriterContext;

use crate::commands::plugins::Output;
use crate::job_loader;

#[derive(Debug, clap::Args)]
pub struct DeadLetterArgs {
    #[command(subcommand)]
    pub command: DeadLetterCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// List the job's dead letters that were not replayed yet.
    List {
        #[command(flatten)]
        job: JobArgs,
        /// Include replayed dead letters.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show one dead letter in full.
    Show {
        #[command(flatten)]
        job: JobArgs,
        id: String,
    },
    /// Send dead letters (after fixing them) through the rest of the pipeline into the sink.
    Replay {
        #[command(flatten)]
        job: JobArgs,
        /// Only these dead letters (default: every one not replayed yet).
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job file.
    pub job: PathBuf,
    /// Where haul keeps run state; dead letters default to `<state-dir>/deadletter/<job>.jsonl`.
    #[arg(long, env = "HAUL_STATE_DIR", default_value = ".haul")]
    pub state_dir: PathBuf,
}

pub async fn run(args: DeadLetterArgs) -> anyhow::Result<ExitCode> {
    let registry = job_loader::builtin_registry();
    let job_args = match &args.command {
        DeadLetterCommand::List { job, .. }
        | DeadLetterCommand::Show { job, .. }
        | DeadLetterCommand::Replay { job, .. } => job,
    };
    let job = job_loader::load(&job_args.job, &registry)?;
    let dead_letters = job_loader::dead_letters(&job, &registry, &job_args.state_dir)?;
    let name = job.spec.name.clone();
    let mut out = std::io::stdout().lock();
    match args.command {
        DeadLetterCommand::List { all, output, .. } => {
            let letters = dead_letters.list(&name, all).await?;
            match output {
                Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&letters)?)?,
                Output::Text => {
                    writeln!(out, "{:<36}  {:<24}  {:<10}  {:<24}  reason", "id", "at", "stage", "position")?;
                    for letter in &letters {
                        let replayed = if letter.replayed_at.is_some() { " (replayed)" } else { "" };
                        writeln!(
                            out,
                            "{:<36}  {:<24}  {:<10}  {:<24}  {}{replayed}",
                            letter.id,
                            letter.at,
                            letter.rejected.stage,
                            letter.rejected.position,
                            letter.rejected.reason
                        )?;
                    }
                    eprintln!("{} dead letters in {}", letters.len(), dead_letters.describe());
                }
            }
        }
        DeadLetterCommand::Show { id, .. } => {
            let letters = dead_letters.list(&name, true).await?;
            let Some(letter) = letters.into_iter().find(|l| l.id == id) else {
                bail!("no dead letter `{id}` for job {name} in {}", dead_letters.describe());
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&letter)?)?;
        }
        DeadLetterCommand::Replay { ids, .. } => {
            let letters: Vec<_> = dead_letters
                .list(&name, false)
                .await?
                .into_iter()
                .filter(|l| ids.is_empty() || ids.contains(&l.id))
                .collect();
            if letters.is_empty() {
                eprintln!("nothing to replay for job {name}");
                return Ok(ExitCode::SUCCESS);
            }
            let kinds: Vec<String> = job.spec.processors.iter().map(|p| p.kind.clone()).collect();
            let context = WriterContext { job: name.clone(), run_id: replay_run_id(), shard_id: "deadletter".into() };
            let report = replay(&job.pipeline, &kinds, letters, dead_letters.as_ref(), &context).await?;
            eprintln!(
                "replayed {} dead letters of job {name}: {} written to {}, {} rejected again",
                report.replayed,
                report.written,
                job.pipeline.sink.describe_output(),
                report.rejected_again
            );
            for (id, why) in &report.skipped {
                eprintln!("  skipped {id}: {why}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A time-ordered run id for a replay, so its output parts never collide with a run's.
fn replay_run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("replay-{:x}", now.as_micros())
}
