//! `haul runs watch ID`: a run's progress, polled every second until the run
//! ends — a bar on a terminal, a line per change otherwise, and only the final
//! run with `--output json`. The command fails unless the run succeeds.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use haul_register::{RunState, ShardState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::http::ApiClient;
use super::output::OutputFormat;
use super::runs::counts;
use crate::api::model::RunDetail;

const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub async fn watch(client: &ApiClient, id: &str, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let mut view = View::new(output);
    let detail = loop {
        let detail: RunDetail = client.get(&["runs", id], &[]).await?;
        view.show(&detail)?;
        if detail.run.state.is_terminal() {
            break detail;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    view.finish();
    output.print(&detail, |detail| format!("run {id} of job {}: {}", detail.run.job, progress(detail)))?;
    match (detail.run.state, detail.run.message) {
        (RunState::Succeeded, _) => Ok(ExitCode::SUCCESS),
        (state, Some(message)) => bail!("run {id} {state}: {message}"),
        (state, None) => bail!("run {id} {state}"),
    }
}

/// How the progress is drawn while the run goes on.
enum View {
    Bar(ProgressBar),
    /// A line each time the progress changes, on stdout.
    Lines {
        last: String,
    },
    /// Nothing until the end.
    Quiet,
}

impl View {
    fn new(output: OutputFormat) -> View {
        match output {
            OutputFormat::Json => View::Quiet,
            OutputFormat::Table if std::io::stderr().is_terminal() => {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
                let style =
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} shards {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.enable_steady_tick(Duration::from_millis(200));
                View::Bar(bar)
            }
            OutputFormat::Table => View::Lines { last: String::new() },
        }
    }

    fn show(&mut self, detail: &RunDetail) -> anyhow::Result<()> {
        match self {
            View::Bar(bar) => {
                let done = detail.shards.iter().filter(|shard| shard.state.is_terminal()).count();
                bar.set_length(detail.shards.len() as u64);
                bar.set_position(done as u64);
                bar.set_message(format!("| {} | {}", detail.run.state, counts(&detail.totals)));
            }
            View::Lines { last } => {
                let line = progress(detail);
                if line != *last {
                    writeln!(std::io::stdout().lock(), "{line}")?;
                    *last = line;
                }
            }
            View::Quiet => {}
        }
        Ok(())
    }

    fn finish(self) {
        if let View::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// The run's state, its shards done and failed, and its counters.
fn progress(detail: &RunDetail) -> String {
    let count = |state: ShardState| detail.shards.iter().filter(|shard| shard.state == state).count();
    let failed = match count(ShardState::Failed) {
        0 => String::new(),
        failed => format!(", {failed} failed"),
    };
    format!(
        "{}, {}/{} shards done{failed}, {}",
        detail.run.state,
        count(ShardState::Succeeded),
        detail.shards.len(),
        counts(&detail.totals)
    )
}
