//! `haul run JOB.toml`: runs one job in this process, with its state in a
//! local SQLite store so that the next run resumes (after Ctrl-C or a crash)
//! or continues incrementally (after success).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use haul_collect_core::PlanContext;
use haul_collect_core::runtime::{RunOutcome, RunSettings, execute};
use haul_common::shutdown;
use haul_register::ledger::StoreLedger;
use haul_register::{NewRun, RunRecord, RunState, Store};
use haul_scheduler::lifecycle;

use crate::job_loader::{self, LoadedJob};
use crate::progress_view::{self, ProgressMode};
use crate::summary;

/// How long a local shard lease lives without renewal: a killed run's shards
/// can be resumed this long after it died.
const LOCAL_LEASE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job file.
    pub job: PathBuf,
    /// Where haul keeps run state (checkpoints, incremental cursors, dead letters).
    #[arg(long, env = "HAUL_STATE_DIR", default_value = ".haul")]
    pub state_dir: PathBuf,
    /// Discard an interrupted run of this job and start over.
    #[arg(long)]
    pub restart: bool,
    /// How to show progress: `auto` (bars on a terminal, lines otherwise), `bar`, `plain`, `none`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// Exit code of a run stopped by Ctrl-C or SIGTERM, like a shell's for SIGINT.
const EXIT_PAUSED: u8 = 130;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let registry = job_loader::builtin_registry();
    let job = job_loader::load(&args.job, &registry)?;
    let store = open_store(&args.state_dir).await?;
    let run = prepare_run(store.as_ref(), &job, args.restart).await?;
    let job_name = job.spec.name.clone();

    let (shards, progress) = lifecycle::progress_of(&store.shards(&run.id).await?);

    let dead_letters = job_loader::dead_letters(&job, &registry, &args.state_dir)?;
    let owner = format!("local-{}", std::process::id());
    let ledger = Arc::new(StoreLedger::new(store.clone(), &run.id, owner, LOCAL_LEASE_TTL));
    let settings = RunSettings::for_job(&job.spec, &run.id);
    let source = job.pipeline.source.clone();
    let output = job.pipeline.sink.describe_output();
    let delivery = job.pipeline.sink.delivery();

    let stop = shutdown::on_signal();
    let display = progress_view::start(args.progress, progress.clone());
    let report = execute(job.pipeline, settings, shards, ledger, dead_letters.clone(), progress, stop).await;
    display.finish().await;

    if report.outcome == RunOutcome::Stopped {
        store.set_run_state(&run.id, RunState::Paused, "interrupted").await?;
    } else {
        lifecycle::finish_run(store.as_ref(), source.as_ref(), &run, &report.outcome).await?;
    }
    summary::print(&summary::Summary {
        job: &job_name,
        run_id: &run.id,
        job_file: &args.job,
        report: &report,
        output: &output,
        delivery,
        dead_letters: dead_letters.describe(),
    });
    Ok(match report.outcome {
        RunOutcome::Succeeded => ExitCode::SUCCESS,
        RunOutcome::Stopped => ExitCode::from(EXIT_PAUSED),
        RunOutcome::Failed(_) => ExitCode::FAILURE,
    })
}

async fn open_store(state_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let url = format!("sqlite://{}", state_dir.join("state.db").display());
    haul_register::store::open(&url)
        .await
        .with_context(|| format!("opening the state store in {}", state_dir.display()))
}

/// Resumes the job's interrupted run, or plans a new one.
async fn prepare_run(store: &dyn Store, job: &LoadedJob, restart: bool) -> anyhow::Result<RunRecord> {
    let name = &job.spec.name;
    let fingerprint = job.source_text.fingerprint();
    if let Some(unfinished) = store.unfinished_run(name).await? {
        if restart {
            store.set_run_state(&unfinished.id, RunState::Cancelled, "restarted with --restart").await?;
            eprintln!("discarded interrupted run {} of job {name}", unfinished.id);
        } else if unfinished.spec_hash != fingerprint {
            bail!(
                "run {} of job {name} was interrupted, but the job file has changed since; \
                 run again with --restart to discard it and start over",
                unfinished.id
            );
        } else {
            match unfinished.state {
                RunState::Failed => {
                    store.retry_run(&unfinished.id, "resumed after failure").await?;
                }
                RunState::Paused | RunState::Pending => {
                    store.set_run_state(&unfinished.id, RunState::Running, "resumed").await?;
                }
                _ => {}
            }
            eprintln!("resuming run {} of job {name} from its checkpoints", unfinished.id);
            return Ok(unfinished);
        }
    }
    let context = PlanContext {
        mode: job.spec.mode,
        incremental: job.spec.incremental.clone(),
        previous_state: store.job_state(name).await?,
        range: job.spec.range.clone(),
        parallelism: job.spec.parallelism,
    };
    let plan = job.pipeline.source.plan(&context).await.context("planning the run")?;
    let new =
        NewRun { job: name.clone(), spec_hash: fingerprint, mode: job.spec.mode, plan, request: Default::default() };
    let run = store.create_run(new).await?;
    Ok(run)
}
