//! `haul runs list|show|watch|pause|resume|cancel|retry`: the runs of a server.

use std::process::ExitCode;

use haul_register::{RunState, RunTrigger};
use indicatif::{HumanBytes, HumanCount};

use super::ClientOptions;
use super::http::ApiClient;
use super::output::{OutputFormat, Table, or_dash, time};
use super::watch;
use crate::api::model::{Counters, Phase, Run, RunDetail};

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    options: ClientOptions,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only the runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// Only runs in these states (pending, running, paused, succeeded, failed, cancelled); repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        state: Vec<RunState>,
        /// Only runs created this way: manual, schedule, backfill or retry.
        #[arg(long)]
        trigger: Option<RunTrigger>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a run with its shards' progress and errors, and its events.
    Show { id: String },
    /// Follow a run's progress until it ends; fails unless the run succeeds.
    Watch { id: String },
    /// Pause a running run: its shards checkpoint and stop at their next batch boundary.
    Pause { id: String },
    /// Resume a paused run from its checkpoints.
    Resume { id: String },
    /// Cancel an unfinished run.
    Cancel { id: String },
    /// Try a failed run again: its failed shards, from their checkpoints.
    Retry {
        id: String,
        /// Run the whole request again as a new run instead.
        #[arg(long)]
        whole: bool,
    },
}

pub async fn run(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let client = args.options.client()?;
    let output = args.options.output;
    match args.command {
        RunsCommand::List { job, state, trigger, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(job.map(|job| ("job", job)));
            query.extend(state.iter().map(|state| ("state", state.to_string())));
            query.extend(trigger.map(|trigger| ("trigger", trigger.as_str().to_string())));
            let runs: Vec<Run> = client.get(&["runs"], &query).await?;
            output.print(&runs, |runs| runs_table(runs))?;
        }
        RunsCommand::Show { id } => {
            let detail: RunDetail = client.get(&["runs", &id], &[]).await?;
            output.print(&detail, show_run)?;
        }
        RunsCommand::Watch { id } => return watch::watch(&client, &id, output).await,
        RunsCommand::Pause { id } => transition(&client, output, &id, "pause").await?,
        RunsCommand::Resume { id } => transition(&client, output, &id, "resume").await?,
        RunsCommand::Cancel { id } => transition(&client, output, &id, "cancel").await?,
        RunsCommand::Retry { id, whole } => {
            let query = [("whole", whole.to_string())];
            let run: Run = client.post(&["runs", &id, "retry"], &query, None::<&()>).await?;
            output.print(&run, |run| {
                if run.id == id {
                    format!("retrying the failed shards of run {id}")
                } else {
                    format!("queued run {} to retry run {id} whole", run.id)
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `action` is `pause`, `resume` or `cancel`.
async fn transition(client: &ApiClient, output: OutputFormat, id: &str, action: &str) -> anyhow::Result<()> {
    let run: Run = client.post(&["runs", id, action], &[], None::<&()>).await?;
    output.print(&run, |run| format!("run {} is {}", run.id, run.state))
}

pub(super) fn runs_table(runs: &[Run]) -> String {
    let mut table = Table::new(&["ID", "JOB", "STATE", "TRIGGER", "FOR", "ATTEMPT", "CREATED"]);
    for run in runs {
        table.row([
            run.id.clone(),
            run.job.clone(),
            run.state.to_string(),
            run.trigger.as_str().to_string(),
            or_dash(run.scheduled_for.as_ref().map(time)),
            run.attempt.to_string(),
            time(&run.created_at),
        ]);
    }
    table.render()
}

/// Records read, written and rejected, and bytes read.
pub(super) fn counts(counters: &Counters) -> String {
    format!(
        "{} read, {} written, {} rejected, {}",
        HumanCount(counters.records_read),
        HumanCount(counters.records_written),
        HumanCount(counters.records_rejected),
        HumanBytes(counters.bytes_read)
    )
}

fn show_run(detail: &RunDetail) -> String {
    let run = &detail.run;
    let message = run.message.as_deref().map(|message| format!(" ({message})")).unwrap_or_default();
    let mut text = format!(
        "run {} of job {}\n  state: {}{message}\n  trigger: {}, attempt {}, priority {}, pool {}\n  for: {}\n  \
         created: {}, started: {}, finished: {}\n  records: {}\n",
        run.id,
        run.job,
        run.state,
        run.trigger.as_str(),
        run.attempt,
        run.priority,
        run.pool,
        or_dash(run.scheduled_for.as_ref().map(time)),
        time(&run.created_at),
        or_dash(run.started_at.as_ref().map(time)),
        or_dash(run.finished_at.as_ref().map(time)),
        counts(&detail.totals),
    );
    if let Some(params) = &run.params {
        text.push_str(&format!("  params: {params}\n"));
    }
    let mut shards = Table::new(&["SHARD", "STATE", "PHASE", "READ", "WRITTEN", "REJECTED", "ERROR"]);
    for shard in &detail.shards {
        let counters = shard.latest_counters();
        shards.row([
            shard.id.clone(),
            shard.state.to_string(),
            or_dash(shard.phase.map(Phase::as_str)),
            HumanCount(counters.records_read).to_string(),
            HumanCount(counters.records_written).to_string(),
            HumanCount(counters.records_rejected).to_string(),
            or_dash(shard.error.clone()),
        ]);
    }
    let mut events = Table::new(&["AT", "SHARD", "STATE", "REASON"]);
    for event in &detail.events {
        events.row([time(&event.at), or_dash(event.shard_id.clone()), event.kind.clone(), event.reason.clone()]);
    }
    format!("{text}\n{}\n{}", shards.render(), events.render())
}
