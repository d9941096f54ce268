//! `haul jobs apply|list|show|delete|enable|disable|run`: the jobs of a server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::Value;

use super::ClientOptions;
use super::http::ApiClient;
use super::output::{OutputFormat, Table, or_dash, time};
use crate::api::model::{Job, JobDetail, RangeBody, Run, TriggerBody};

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    options: ClientOptions,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum JobsCommand {
    /// Create or update a job from its file: TOML, or JSON for a `.json` file.
    Apply {
        /// The job file.
        #[arg(short, long)]
        file: PathBuf,
    },
    /// List the jobs.
    List,
    /// Show a job with its spec.
    Show { name: String },
    /// Delete a job that no other job depends on; its queued runs are cancelled.
    Delete { name: String },
    /// Schedule a job again.
    Enable { name: String },
    /// Stop scheduling a job; it can still be run by hand.
    Disable { name: String },
    /// Queue a run of a job now.
    Run {
        name: String,
        /// Collect only from this value of the job's range field or cursor (a number, a time, a string).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Collect only up to this value, excluded.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Overrides the job's priority for this run.
        #[arg(long)]
        priority: Option<i32>,
    },
}

pub async fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let client = args.options.client()?;
    let output = args.options.output;
    match args.command {
        JobsCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let (status, job): (StatusCode, JobDetail) = client.put_text(&["jobs"], text, content_type(&file)).await?;
            let verb = if status == StatusCode::CREATED { "created" } else { "updated" };
            output.print(&job, |job| format!("job {} {verb} (version {})", job.job.name, job.job.version))?;
        }
        JobsCommand::List => {
            let jobs: Vec<Job> = client.get(&["jobs"], &[]).await?;
            output.print(&jobs, |jobs| jobs_table(jobs))?;
        }
        JobsCommand::Show { name } => {
            let job: JobDetail = client.get(&["jobs", &name], &[]).await?;
            output.print(&job, show_job)?;
        }
        JobsCommand::Delete { name } => {
            client.delete(&["jobs", &name]).await?;
            output.print(&serde_json::json!({ "deleted": name }), |_| format!("job {name} deleted"))?;
        }
        JobsCommand::Enable { name } => set_enabled(&client, output, &name, "enable").await?,
        JobsCommand::Disable { name } => set_enabled(&client, output, &name, "disable").await?,
        JobsCommand::Run { name, from, to, priority } => {
            let range = from.zip(to).map(|(from, to)| RangeBody { from: bound(&from), to: bound(&to) });
            let body = TriggerBody { range, priority };
            let run: Run = client.post(&["jobs", &name, "runs"], &[], Some(&body)).await?;
            output.print(&run, |run| format!("queued run {} of job {}", run.id, run.job))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `action` is `enable` or `disable`.
async fn set_enabled(client: &ApiClient, output: OutputFormat, name: &str, action: &str) -> anyhow::Result<()> {
    let job: Job = client.post(&["jobs", name, action], &[], None::<&()>).await?;
    output.print(&job, |job| format!("job {} {action}d", job.name))
}

/// JSON for a `.json` file, TOML otherwise.
fn content_type(file: &Path) -> &'static str {
    let json = file.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("json"));
    if json { "application/json" } else { "application/toml" }
}

/// A range bound as typed: a number or boolean when it reads as one, a string otherwise.
fn bound(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ (Value::Number(_) | Value::Bool(_))) => value,
        _ => Value::String(text.to_string()),
    }
}

fn jobs_table(jobs: &[Job]) -> String {
    let mut table = Table::new(&["NAME", "ENABLED", "VERSION", "PLANNED THROUGH", "UPDATED"]);
    for job in jobs {
        table.row([
            job.name.clone(),
            job.enabled.to_string(),
            job.version.to_string(),
            or_dash(job.planned_through.as_ref().map(time)),
            time(&job.updated_at),
        ]);
    }
    table.render()
}

fn show_job(detail: &JobDetail) -> String {
    let job = &detail.job;
    format!(
        "job {}\n  enabled: {}\n  version: {}\n  planned through: {}\n  created: {}\n  updated: {}\n\n{}",
        job.name,
        job.enabled,
        job.version,
        or_dash(job.planned_through.as_ref().map(time)),
        time(&job.created_at),
        time(&job.updated_at),
        detail.spec.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_bounds_keep_numbers_and_read_the_rest_as_text() {
        assert_eq!(bound("42"), Value::from(42));
        assert_eq!(bound("2.5"), Value::from(2.5));
        assert_eq!(bound("2026-01-01"), Value::from("2026-01-01"));
        assert_eq!(bound("\"quoted\""), Value::from("\"quoted\""));
        assert_eq!(bound("[1]"), Value::from("[1]"));
    }

    #[test]
    fn json_files_are_sent_as_json() {
        assert_eq!(content_type(Path::new("job.JSON")), "application/json");
        assert_eq!(content_type(Path::new("job.toml")), "application/toml");
        assert_eq!(content_type(Path::new("job")), "application/toml");
    }
}
