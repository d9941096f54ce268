//! The server's jobs in the SQLite store: spec text, enabled flag, version
//! and the schedule time the scheduler has dealt with.

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use crate::model::JobRecord;
use crate::store::Error;
use crate::store::sql::codec::decode_job;

macro_rules! job_columns {
    () => {
        "name, spec, spec_hash, enabled, version, planned_through, created_at, updated_at"
    };
}

fn not_found(name: &str) -> Error {
    Error::NotFound { what: format!("job {name}") }
}

pub(super) async fn put(writer: &SqlitePool, name: &str, spec: &str, spec_hash: &str) -> Result<JobRecord, Error> {
    sqlx::query(concat!(
        "INSERT INTO jobs (name, spec, spec_hash, enabled, version, planned_through, created_at, updated_at) ",
        "VALUES (?, ?, ?, 1, 1, NULL, ",
        now_ms!(),
        ", ",
        now_ms!(),
        ") ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, spec_hash = excluded.spec_hash, ",
        "version = CASE WHEN jobs.spec_hash = excluded.spec_hash THEN jobs.version ELSE jobs.version + 1 END, ",
        "updated_at = excluded.updated_at"
    ))
    .bind(name)
    .bind(spec)
    .bind(spec_hash)
    .execute(writer)
    .await?;
    get(writer, name).await
}

pub(super) async fn get(pool: &SqlitePool, name: &str) -> Result<JobRecord, Error> {
    let row = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE name = ?"))
        .bind(name)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| not_found(name))?;
    decode_job(&row)
}

pub(super) async fn list(reader: &SqlitePool) -> Result<Vec<JobRecord>, Error> {
    let rows = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs ORDER BY name")).fetch_all(reader).await?;
    rows.iter().map(decode_job).collect()
}

pub(super) async fn set_enabled(writer: &SqlitePool, name: &str, enabled: bool) -> Result<(), Error> {
    let updated = sqlx::query(concat!("UPDATE jobs SET enabled = ?, updated_at = ", now_ms!(), " WHERE name = ?"))
        .bind(enabled)
        .bind(name)
        .execute(writer)
        .await?
        .rows_affected();
    if updated == 0 { Err(not_found(name)) } else { Ok(()) }
}

pub(super) async fn delete(writer: &SqlitePool, name: &str) -> Result<(), Error> {
    let deleted = sqlx::query("DELETE FROM jobs WHERE name = ?").bind(name).execute(writer).await?.rows_affected();
    if deleted == 0 { Err(not_found(name)) } else { Ok(()) }
}

pub(super) async fn set_planned_through(writer: &SqlitePool, name: &str, at: DateTime<Utc>) -> Result<(), Error> {
    let updated = sqlx::query("UPDATE jobs SET planned_through = ? WHERE name = ?")
        .bind(at.timestamp_millis())
        .bind(name)
        .execute(writer)
        .await?
        .rows_affected();
    if updated == 0 { Err(not_found(name)) } else { Ok(()) }
}
