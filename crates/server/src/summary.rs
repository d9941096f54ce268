//! The lines `haul run` prints when it ends: what happened, how much, how
//! fast, where the output went, and what to do next.

use std::path::Path;

use haul_collect_core::Delivery;
use haul_collect_core::runtime::{RunOutcome, RunReport};
use std::time::Duration;

use indicatif::{HumanBytes, HumanCount, HumanDuration};

pub struct Summary<'a> {
    pub job: &'a str,
    pub run_id: &'a str,
    pub job_file: &'a Path,
    pub report: &'a RunReport,
    pub output: &'a str,
    pub delivery: Delivery,
    pub dead_letters: String,
}

pub fn print(summary: &Summary<'_>) {
    eprintln!("{}", render(summary));
}

fn render(summary: &Summary<'_>) -> String {
    let report = summary.report;
    let totals = report.totals;
    let seconds = report.elapsed.as_secs_f64().max(0.001);
    let state = match &report.outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Stopped => "paused",
        RunOutcome::Failed(_) => "failed",
    };
    let mut text = format!(
        "job {} run {}: {state} in {}\n  records: {} read, {} written, {} rejected\n  throughput: {} records/s, {}/s\n  output: {} ({})",
        summary.job,
        summary.run_id,
        elapsed(report.elapsed),
        HumanCount(totals.records_read),
        HumanCount(totals.records_written),
        HumanCount(totals.records_rejected),
        HumanCount((totals.records_read as f64 / seconds) as u64),
        HumanBytes((totals.bytes_read as f64 / seconds) as u64),
        summary.output,
        match summary.delivery {
            Delivery::Idempotent => "idempotent: exactly-once in effect",
            Delivery::AppendOnly => "append-only: at-least-once",
        },
    );
    if totals.records_rejected > 0 {
        text.push_str(&format!("\n  dead letters: {}", summary.dead_letters));
    }
    let file = summary.job_file.display();
    match &report.outcome {
        RunOutcome::Succeeded => {}
        RunOutcome::Stopped => text.push_str(&format!(
            "\npaused at the last checkpoints: run `haul run {file}` again to resume, or add --restart to start over"
        )),
        RunOutcome::Failed(reasons) => {
            for reason in reasons {
                text.push_str(&format!("\n  error: {reason}"));
            }
            text.push_str(&format!(
                "\nfix the cause and run `haul run {file}` again to resume from the checkpoints, or add --restart to start over"
            ));
        }
    }
    text
}

/// Seconds with two decimals under a minute, then minutes and hours.
fn elapsed(duration: Duration) -> String {
    if duration < Duration::from_secs(60) {
        format!("{:.2}s", duration.as_secs_f64())
    } else {
        HumanDuration(duration).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_collect_core::progress::ShardCounters;

    fn summary_of(outcome: RunOutcome, rejected: u64) -> String {
        let report = RunReport {
            outcome,
            totals: ShardCounters {
                records_read: 1000,
                records_written: 1000 - rejected,
                records_rejected: rejected,
                bytes_read: 2048,
            },
            elapsed: Duration::from_secs(2),
        };
        render(&Summary {
            job: "orders",
            run_id: "r1",
            job_file: Path::new("orders.toml"),
            report: &report,
            output: "out/",
            delivery: Delivery::Idempotent,
            dead_letters: ".haul/deadletter/orders.jsonl".into(),
        })
    }

    #[test]
    fn success_names_counts_rate_and_output() {
        let text = summary_of(RunOutcome::Succeeded, 0);
        assert!(text.contains("succeeded in 2.00s"), "{text}");
        assert!(text.contains("1,000 read"), "{text}");
        assert!(text.contains("500 records/s"), "{text}");
        assert!(text.contains("out/ (idempotent"), "{text}");
        assert!(!text.contains("dead letters"), "{text}");
    }

    #[test]
    fn pause_says_how_to_resume() {
        let text = summary_of(RunOutcome::Stopped, 3);
        assert!(text.contains("run `haul run orders.toml` again to resume"), "{text}");
        assert!(text.contains("dead letters: .haul/deadletter/orders.jsonl"), "{text}");
    }

    #[test]
    fn failure_lists_reasons() {
        let text = summary_of(RunOutcome::Failed(vec!["shard k1: connection refused".into()]), 0);
        assert!(text.contains("error: shard k1: connection refused"), "{text}");
    }
}
