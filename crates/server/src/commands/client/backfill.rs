//! `haul backfill JOB --from … --to …`: one run of a job per past interval —
//! its schedule's intervals, or `--every` — run at most `--concurrency` at once.

use std::process::ExitCode;

use anyhow::bail;
use chrono::{DateTime, NaiveDate, Utc};

use super::ClientOptions;
use super::runs::runs_table;
use crate::api::model::{BackfillBody, Run};

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    options: ClientOptions,
    /// The job to backfill.
    job: String,
    /// The start of the range: an RFC 3339 time or a date (midnight UTC).
    #[arg(long, value_parser = parse_time)]
    from: DateTime<Utc>,
    /// The end of the range, excluded.
    #[arg(long, value_parser = parse_time)]
    to: DateTime<Utc>,
    /// The interval length (e.g. 1d, 6h); required when the job has no cron schedule.
    #[arg(long)]
    every: Option<String>,
    /// How many of the runs may run at once.
    #[arg(long)]
    concurrency: Option<usize>,
}

pub async fn run(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let client = args.options.client()?;
    let body = BackfillBody { from: args.from, to: args.to, every: args.every, concurrency: args.concurrency };
    let runs: Vec<Run> = client.post(&["jobs", &args.job, "backfill"], &[], Some(&body)).await?;
    let job = &args.job;
    args.options
        .output
        .print(&runs, |runs| format!("{}\nqueued {} runs of job {job}", runs_table(runs), runs.len()))?;
    Ok(ExitCode::SUCCESS)
}

fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    match NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|date| date.and_hms_opt(0, 0, 0)) {
        Some(midnight) => Ok(midnight.and_utc()),
        None => bail!("expected an RFC 3339 time (2026-01-01T00:00:00Z) or a date (2026-01-01)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_are_rfc_3339_or_dates_at_midnight_utc() {
        let midnight: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
        assert_eq!(parse_time("2026-03-01").unwrap(), midnight);
        assert_eq!(parse_time("2026-03-01T00:00:00Z").unwrap(), midnight);
        assert_eq!(parse_time("2026-03-01T08:00:00+08:00").unwrap(), midnight);
        for bad in ["", "yesterday", "2026-13-01", "2026-03-01 00:00"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_time_reads_back_from_its_rfc_3339_text(seconds in 0i64..4_102_444_800) {
            let time = DateTime::from_timestamp(seconds, 0).unwrap();
            prop_assert_eq!(parse_time(&time.to_rfc3339()).unwrap(), time);
        }
    }
}
