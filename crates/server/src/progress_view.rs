//! Live progress of `haul run`: bars on a terminal (a total line with
//! records, bytes, rate and ETA, and one line per running shard), or plain
//! periodic lines when stderr is not a terminal. It only reads the runtime's
//! atomic counters.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haul_collect_core::progress::{RunProgress, ShardPhase};
use haul_common::shutdown::CancellationToken;
use indicatif::{HumanBytes, HumanCount, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    Bar,
    Plain,
    None,
}

/// A running display; [`ProgressDisplay::finish`] draws the last state and stops it.
pub struct ProgressDisplay {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressDisplay {
    pub async fn finish(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// Starts showing `progress` in `mode`.
pub fn start(mode: ProgressMode, progress: Arc<RunProgress>) -> ProgressDisplay {
    let stop = CancellationToken::new();
    let resolved = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::Plain,
        other => other,
    };
    let task = match resolved {
        ProgressMode::Bar => Some(tokio::spawn(bars(progress, stop.clone()))),
        ProgressMode::Plain => Some(tokio::spawn(lines(progress, stop.clone()))),
        ProgressMode::Auto | ProgressMode::None => None,
    };
    ProgressDisplay { stop, task }
}

const SHARD_LINES: usize = 8;

async fn bars(progress: Arc<RunProgress>, stop: CancellationToken) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
    let total = multi.add(ProgressBar::no_length());
    total.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let shard_style =
        ProgressStyle::with_template("  {prefix:>10} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
    let shard_bars: Vec<ProgressBar> = (0..SHARD_LINES.min(progress.shards.len()))
        .map(|_| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(shard_style.clone());
            bar
        })
        .collect();
    loop {
        let finished = stop.is_cancelled();
        let totals = progress.totals();
        match progress.estimated_records() {
            Some(estimate) => total.set_length(estimate.max(totals.records_read)),
            None => total.set_length(totals.records_read),
        }
        total.set_position(totals.records_read);
        total.set_message(format!(
            "| {} | {} written | {} rejected",
            HumanBytes(totals.bytes_read),
            HumanCount(totals.records_written),
            HumanCount(totals.records_rejected)
        ));
        let running =
            progress.shards.iter().filter(|s| matches!(s.phase(), ShardPhase::Running | ShardPhase::Retrying));
        let mut lines = running.map(Some).chain(std::iter::repeat(None));
        for bar in &shard_bars {
            match lines.next().flatten() {
                Some(shard) => {
                    let counters = shard.counters();
                    let retrying = if shard.phase() == ShardPhase::Retrying { " (retrying)" } else { "" };
                    bar.set_prefix(shard.id.clone());
                    bar.set_message(format!("{} records{retrying}", HumanCount(counters.records_read)));
                }
                None => {
                    bar.set_prefix("");
                    bar.set_message("");
                }
            }
        }
        if finished {
            for bar in &shard_bars {
                bar.finish_and_clear();
            }
            total.finish();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => {}
        }
    }
}

const LINE_INTERVAL: Duration = Duration::from_secs(5);

async fn lines(progress: Arc<RunProgress>, stop: CancellationToken) {
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LINE_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
        let totals = progress.totals();
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        let rate = totals.records_read as f64 / elapsed;
        let done = progress.shards.iter().filter(|s| s.phase() == ShardPhase::Done).count();
        let eta = progress
            .estimated_records()
            .filter(|_| rate > 0.0)
            .map(|estimate| format!(", eta {}s", (estimate.saturating_sub(totals.records_read) as f64 / rate).ceil()))
            .unwrap_or_default();
        eprintln!(
            "progress: {} records read, {} written, {} rejected, {}, {} records/s, {done}/{} shards done{eta}",
            HumanCount(totals.records_read),
            HumanCount(totals.records_written),
            HumanCount(totals.records_rejected),
            HumanBytes(totals.bytes_read),
            HumanCount(rate as u64),
            progress.shards.len(),
        );
    }
}
