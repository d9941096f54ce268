//! `haul check JOB.toml`: validates the job file and tests the connections of
//! its source and sink, without moving data.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::job_loader;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The job file.
    pub job: PathBuf,
    /// Only validate the file; do not connect to the source or the sink.
    #[arg(long)]
    pub offline: bool,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let registry = job_loader::builtin_registry();
    let job = job_loader::load(&args.job, &registry)?;
    eprintln!(
        "{}: job {} is valid ({} source, {} processors, {} sink, {} mode)",
        args.job.display(),
        job.spec.name,
        job.spec.source.kind,
        job.spec.processors.len(),
        job.spec.sink.kind,
        job.spec.mode.as_str(),
    );
    if args.offline {
        return Ok(ExitCode::SUCCESS);
    }
    let mut healthy = true;
    for (role, kind, result) in [
        ("source", &job.spec.source.kind, job.pipeline.source.check().await),
        ("sink", &job.spec.sink.kind, job.pipeline.sink.check().await),
    ] {
        match result {
            Ok(()) => eprintln!("  {role} {kind}: ok"),
            Err(error) => {
                healthy = false;
                eprintln!("  {role} {kind}: {error:#}");
            }
        }
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
