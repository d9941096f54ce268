//! Encoding and decoding of the SQL stores' rows: JSON columns, states,
//! modes, millisecond times and integer conversions, each checked so that a
//! corrupt row is an error and never a panic. Rows are read through
//! [`Columns`], the four column kinds the schema uses, so that decoding is
//! written once for every backend.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use haul_collect_core::job::Mode;
use haul_collect_core::plugin::ShardSpec;
use haul_collect_core::runtime::ResumePoint;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Database, Decode, Row, Type};

use crate::model::{Event, JobRecord, Lease, RunRecord, RunRequest, RunStatus, ShardRecord};
use crate::store::Error;

/// The column reads the store needs, by column name, from any backend's row.
pub trait Columns {
    fn text(&self, column: &str) -> Result<String, Error>;
    fn optional_text(&self, column: &str) -> Result<Option<String>, Error>;
    fn integer(&self, column: &str) -> Result<i64, Error>;
    fn optional_integer(&self, column: &str) -> Result<Option<i64>, Error>;
    fn flag(&self, column: &str) -> Result<bool, Error>;
}

impl<R: Row> Columns for R
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    bool: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    fn text(&self, column: &str) -> Result<String, Error> {
        Ok(self.try_get(column)?)
    }

    fn optional_text(&self, column: &str) -> Result<Option<String>, Error> {
        Ok(self.try_get(column)?)
    }

    fn integer(&self, column: &str) -> Result<i64, Error> {
        Ok(self.try_get(column)?)
    }

    fn optional_integer(&self, column: &str) -> Result<Option<i64>, Error> {
        Ok(self.try_get(column)?)
    }

    fn flag(&self, column: &str) -> Result<bool, Error> {
        Ok(self.try_get(column)?)
    }
}

pub(in crate::store) fn decode_run(row: &impl Columns) -> Result<RunRecord, Error> {
    Ok(RunRecord {
        id: row.text("id")?,
        job: row.text("job")?,
        spec_hash: row.text("spec_hash")?,
        mode: parse_mode(&row.text("mode")?)?,
        state: parse_state(&row.text("state")?)?,
        next_state: row.optional_text("next_state")?.map(|text| from_json(&text, "next state")).transpose()?,
        created_at: time(row.integer("created_at")?)?,
        updated_at: time(row.integer("updated_at")?)?,
        message: row.optional_text("message")?,
        request: RunRequest {
            trigger: parse_state(&row.text("trigger")?)?,
            scheduled_for: optional_time(row.optional_integer("scheduled_for")?)?,
            priority: i32::try_from(row.integer("priority")?)
                .map_err(|_| Error::Corrupt("run priority out of range".into()))?,
            pool: row.text("pool")?,
            params: row.optional_text("params")?.map(|text| from_json(&text, "run params")).transpose()?,
            attempt: u32::try_from(row.integer("attempt")?)
                .map_err(|_| Error::Corrupt("run attempt out of range".into()))?,
        },
        started_at: optional_time(row.optional_integer("started_at")?)?,
        finished_at: optional_time(row.optional_integer("finished_at")?)?,
    })
}

/// A run's status, as selected with `id, job, spec_hash, state, pool`.
pub(in crate::store) fn decode_run_status(row: &impl Columns) -> Result<RunStatus, Error> {
    Ok(RunStatus {
        id: row.text("id")?,
        job: row.text("job")?,
        spec_hash: row.text("spec_hash")?,
        state: parse_state(&row.text("state")?)?,
        pool: row.text("pool")?,
    })
}

/// A job row, as selected with `JOB_COLUMNS`.
pub(in crate::store) fn decode_job(row: &impl Columns) -> Result<JobRecord, Error> {
    Ok(JobRecord {
        name: row.text("name")?,
        spec: row.text("spec")?,
        spec_hash: row.text("spec_hash")?,
        enabled: row.flag("enabled")?,
        version: to_u64(row.integer("version")?, "job version")?,
        planned_through: optional_time(row.optional_integer("planned_through")?)?,
        created_at: time(row.integer("created_at")?)?,
        updated_at: time(row.integer("updated_at")?)?,
    })
}

pub(in crate::store) fn decode_shard(row: &impl Columns) -> Result<ShardRecord, Error> {
    Ok(ShardRecord {
        run_id: row.text("run_id")?,
        spec: from_json::<ShardSpec>(&row.text("spec")?, "shard spec")?,
        state: parse_state(&row.text("state")?)?,
        sequence: to_u64(row.integer("sequence")?, "sequence")?,
        checkpoint: row.optional_text("checkpoint")?.map(|text| from_json(&text, "checkpoint")).transpose()?,
        counters: from_json(&row.text("counters")?, "counters")?,
        epoch: to_u64(row.integer("epoch")?, "epoch")?,
        owner: row.optional_text("owner")?,
        lease_expires_at: optional_time(row.optional_integer("lease_expires_at")?)?,
        error: row.optional_text("error")?,
        split_requested: row.flag("split_requested")?,
    })
}

/// Where a shard resumes, from its `sequence`, `checkpoint` and `counters`.
pub(in crate::store) fn decode_resume_point(row: &impl Columns) -> Result<ResumePoint, Error> {
    Ok(ResumePoint {
        sequence: to_u64(row.integer("sequence")?, "sequence")?,
        checkpoint: row.optional_text("checkpoint")?.map(|text| from_json(&text, "checkpoint")).transpose()?,
        counters: from_json(&row.text("counters")?, "counters")?,
    })
}

pub(in crate::store) fn decode_event(row: &impl Columns) -> Result<Event, Error> {
    Ok(Event {
        at: time(row.integer("at")?)?,
        shard_id: row.optional_text("shard_id")?,
        kind: row.text("kind")?,
        reason: row.text("reason")?,
    })
}

pub(in crate::store) fn parse_state<S: FromStr<Err = crate::model::UnknownState>>(text: &str) -> Result<S, Error> {
    text.parse().map_err(|error: crate::model::UnknownState| Error::Corrupt(error.to_string()))
}

pub(in crate::store) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Full => "full",
        Mode::Incremental => "incremental",
        Mode::Range => "range",
    }
}

pub(in crate::store) fn parse_mode(text: &str) -> Result<Mode, Error> {
    match text {
        "full" => Ok(Mode::Full),
        "incremental" => Ok(Mode::Incremental),
        "range" => Ok(Mode::Range),
        other => Err(Error::Corrupt(format!("unknown mode `{other}`"))),
    }
}

pub(in crate::store) fn to_json<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|error| Error::Corrupt(format!("cannot encode json: {error}")))
}

pub(in crate::store) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|error| Error::Corrupt(format!("{what}: {error}")))
}

pub(in crate::store) fn optional_time(millis: Option<i64>) -> Result<Option<DateTime<Utc>>, Error> {
    millis.map(time).transpose()
}

pub(in crate::store) fn time(millis: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| Error::Corrupt(format!("time {millis} out of range")))
}

/// A fenced update that changed no row means the lease is gone.
pub(in crate::store) fn lease_held(rows_affected: u64, lease: &Lease) -> Result<(), Error> {
    if rows_affected == 0 { Err(Error::lease_lost(lease)) } else { Ok(()) }
}

pub(in crate::store) fn to_i64(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Corrupt(format!("{what} {value} does not fit the store")))
}

pub(in crate::store) fn to_u64(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::Corrupt(format!("negative {what} {value}")))
}

/// A lease duration in milliseconds, at least 1.
pub(in crate::store) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_match_serde() {
        for mode in [Mode::Full, Mode::Incremental, Mode::Range] {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode_name(mode));
            assert_eq!(parse_mode(mode_name(mode)).unwrap(), mode);
        }
        assert!(matches!(parse_mode("Full"), Err(Error::Corrupt(_))));
    }

    #[test]
    fn ttl_is_whole_positive_milliseconds() {
        assert_eq!(ttl_ms(Duration::from_millis(50)), 50);
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::MAX), i64::MAX / 2);
    }
}
