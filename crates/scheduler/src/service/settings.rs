//! A stored job's scheduling settings, read from its spec text: the parsed
//! job file plus its `[schedule]` and `[run_retry]` tables. Submission
//! validates them with located errors; the scheduler re-reads stored specs
//! with the same function, caching them per spec hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use haul_collect_core::job::{JobFileError, JobSource, JobSpec};
use haul_register::JobRecord;

use crate::cron::{CronSchedule, ScheduleSpec};
use crate::retry::RunRetryPolicy;

/// What the scheduler needs to know of a job.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub spec: JobSpec,
    /// The `[schedule]` table, when there is one.
    pub schedule: Option<ScheduleSpec>,
    /// The parsed cron pattern, when the schedule has one.
    pub cron: Option<CronSchedule>,
    pub run_retry: RunRetryPolicy,
}

impl JobSettings {
    /// Parses a job's text and its scheduling tables, with errors located in `source`.
    pub fn parse(source: &JobSource, default_name: &str) -> Result<JobSettings, JobFileError> {
        let spec = source.parse(default_name)?;
        let schedule: Option<ScheduleSpec> =
            spec.platform.schedule.as_ref().map(|section| source.decode(section)).transpose()?;
        let cron = match (&schedule, &spec.platform.schedule) {
            (Some(schedule), Some(section)) => schedule
                .schedule()
                .map_err(|error| source.section_error(section, &["cron".to_string()], error.to_string()))?,
            _ => None,
        };
        let run_retry =
            spec.platform.run_retry.as_ref().map(|section| source.decode(section)).transpose()?.unwrap_or_default();
        Ok(JobSettings { spec, schedule, cron, run_retry })
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Parsed settings of stored jobs, re-parsed only when a spec changes.
#[derive(Default)]
pub struct SettingsCache {
    parsed: Mutex<HashMap<String, (String, Arc<JobSettings>)>>,
}

impl SettingsCache {
    /// The settings of `job`; an error if its stored spec no longer parses
    /// (it was validated on submission, so only a newer haul's spec can fail).
    pub fn get(&self, job: &JobRecord) -> Result<Arc<JobSettings>, JobFileError> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((hash, settings)) = parsed.get(&job.name)
            && *hash == job.spec_hash
        {
            return Ok(settings.clone());
        }
        let settings = Arc::new(JobSettings::parse(&stored_source(job), &job.name)?);
        parsed.insert(job.name.clone(), (job.spec_hash.clone(), settings.clone()));
        Ok(settings)
    }
}

/// A stored job's text, named for error messages.
pub fn stored_source(job: &JobRecord) -> JobSource {
    JobSource::new(format!("job {}", job.name), job.spec.clone())
}
