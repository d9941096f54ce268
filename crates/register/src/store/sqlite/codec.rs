//! Encoding and decoding of the SQLite store's rows: JSON columns, states,
//! modes, millisecond times and integer conversions, each checked so that a
//! corrupt row is an error and never a panic.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use haul_collect_core::job::Mode;
use haul_collect_core::plugin::ShardSpec;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::model::{JobRecord, Lease, RunRecord, RunRequest, ShardRecord};
use crate::store::Error;

pub(super) fn decode_run(row: &SqliteRow) -> Result<RunRecord, Error> {
    let next_state: Option<String> = row.try_get("next_state")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        job: row.try_get("job")?,
        spec_hash: row.try_get("spec_hash")?,
        mode: parse_mode(&row.try_get::<String, _>("mode")?)?,
        state: parse_state(&row.try_get::<String, _>("state")?)?,
        next_state: next_state.map(|text| from_json(&text, "next state")).transpose()?,
        created_at: time(row.try_get("created_at")?)?,
        updated_at: time(row.try_get("updated_at")?)?,
        message: row.try_get("message")?,
        request: RunRequest {
            trigger: parse_state(&row.try_get::<String, _>("trigger")?)?,
            scheduled_for: optional_time(row.try_get("scheduled_for")?)?,
            priority: row.try_get("priority")?,
            pool: row.try_get("pool")?,
            params: row
                .try_get::<Option<String>, _>("params")?
                .map(|text| from_json(&text, "run params"))
                .transpose()?,
            attempt: u32::try_from(row.try_get::<i64, _>("attempt")?)
                .map_err(|_| Error::Corrupt("run attempt out of range".into()))?,
        },
        started_at: optional_time(row.try_get("started_at")?)?,
        finished_at: optional_time(row.try_get("finished_at")?)?,
    })
}

/// A job row, as selected by `job_columns!()`.
pub(super) fn decode_job(row: &SqliteRow) -> Result<JobRecord, Error> {
    Ok(JobRecord {
        name: row.try_get("name")?,
        spec: row.try_get("spec")?,
        spec_hash: row.try_get("spec_hash")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        version: to_u64(row.try_get("version")?, "job version")?,
        planned_through: optional_time(row.try_get("planned_through")?)?,
        created_at: time(row.try_get("created_at")?)?,
        updated_at: time(row.try_get("updated_at")?)?,
    })
}

pub(super) fn decode_shard(row: &SqliteRow) -> Result<ShardRecord, Error> {
    let checkpoint: Option<String> = row.try_get("checkpoint")?;
    Ok(ShardRecord {
        run_id: row.try_get("run_id")?,
        spec: from_json::<ShardSpec>(&row.try_get::<String, _>("spec")?, "shard spec")?,
        state: parse_state(&row.try_get::<String, _>("state")?)?,
        sequence: to_u64(row.try_get("sequence")?, "sequence")?,
        checkpoint: checkpoint.map(|text| from_json(&text, "checkpoint")).transpose()?,
        counters: from_json(&row.try_get::<String, _>("counters")?, "counters")?,
        epoch: to_u64(row.try_get("epoch")?, "epoch")?,
        owner: row.try_get("owner")?,
        error: row.try_get("error")?,
    })
}

pub(super) fn parse_state<S: FromStr<Err = crate::model::UnknownState>>(text: &str) -> Result<S, Error> {
    text.parse().map_err(|error: crate::model::UnknownState| Error::Corrupt(error.to_string()))
}

pub(super) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Full => "full",
        Mode::Incremental => "incremental",
        Mode::Range => "range",
    }
}

pub(super) fn parse_mode(text: &str) -> Result<Mode, Error> {
    match text {
        "full" => Ok(Mode::Full),
        "incremental" => Ok(Mode::Incremental),
        "range" => Ok(Mode::Range),
        other => Err(Error::Corrupt(format!("unknown mode `{other}`"))),
    }
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|error| Error::Corrupt(format!("cannot encode json: {error}")))
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|error| Error::Corrupt(format!("{what}: {error}")))
}

pub(super) fn optional_time(millis: Option<i64>) -> Result<Option<DateTime<Utc>>, Error> {
    millis.map(time).transpose()
}

pub(super) fn time(millis: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| Error::Corrupt(format!("time {millis} out of range")))
}

/// A fenced update that changed no row means the lease is gone.
pub(super) fn lease_held(rows_affected: u64, lease: &Lease) -> Result<(), Error> {
    if rows_affected == 0 { Err(Error::lease_lost(lease)) } else { Ok(()) }
}

pub(super) fn to_i64(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Corrupt(format!("{what} {value} does not fit the store")))
}

pub(super) fn to_u64(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::Corrupt(format!("negative {what} {value}")))
}

/// A lease duration in milliseconds, at least 1.
pub(super) fn ttl_ms(ttl: Duration) -> i64 {
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
