//! The [`Store`] contract over any [`Dialect`]: runs, the shard ledger with
//! its fenced leases, events and job state, and the server's jobs.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use haul_collect_core::plugin::{Checkpoint, Plan, ShardSpec};
use haul_collect_core::progress::ShardCounters;
use haul_collect_core::runtime::ResumePoint;
use sqlx::Database;

use super::codec::{
    decode_event, decode_job, decode_resume_point, decode_run, decode_run_status, decode_shard, from_json, lease_held,
    parse_state, to_i64, to_json, to_u64, ttl_ms,
};
use super::{
    Columns, Dialect, HELD_LEASE, RUN_COLUMNS, RUN_STATUS_COLUMNS, RowsAffected, SHARD_COLUMNS, Snapshot, SqlStore,
};
use crate::model::{
    ClaimedShard, Event, JobRecord, Lease, NewRun, QueuedRun, RunFilter, RunRecord, RunState, RunStatus, ShardRecord,
    ShardState,
};
use crate::store::split::{SPLIT, SPLIT_REQUESTED, split_reasons};
use crate::store::{Error, Store};

const JOB_COLUMNS: &str = "name, spec, spec_hash, enabled, version, planned_through, created_at, updated_at";

fn job_not_found(name: &str) -> Error {
    Error::NotFound { what: format!("job {name}") }
}

fn is_unique_violation(error: &Error) -> bool {
    matches!(error, Error::Database(sqlx::Error::Database(database)) if database.is_unique_violation())
}

#[async_trait]
impl<D: Dialect> Store for SqlStore<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: sqlx::Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: sqlx::IntoArguments<D::Db>,
    for<'q> &'q str: sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, D::Db>,
    i64: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    Option<i64>: for<'q> sqlx::Encode<'q, D::Db>,
    bool: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
{
    async fn job_state(&self, job: &str) -> Result<Option<serde_json::Value>, Error> {
        let row = sqlx::query(D::sql("SELECT state FROM job_state WHERE job = ?"))
            .bind(job)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|row| from_json(&row.text("state")?, "job state")).transpose()
    }

    async fn unfinished_run(&self, job: &str) -> Result<Option<RunRecord>, Error> {
        let row = sqlx::query(D::sql(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE job = ? ORDER BY created_at DESC, id DESC LIMIT 1"
        )))
        .bind(job)
        .fetch_optional(&self.reader)
        .await?;
        let run = row.as_ref().map(decode_run).transpose()?;
        Ok(run.filter(|run| !matches!(run.state, RunState::Succeeded | RunState::Cancelled)))
    }

    async fn run(&self, run_id: &str) -> Result<RunRecord, Error> {
        let row = sqlx::query(D::sql(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?")))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        match row {
            Some(row) => decode_run(&row),
            None => Err(Error::NotFound { what: format!("run {run_id}") }),
        }
    }

    async fn run_status(&self, run_id: &str) -> Result<RunStatus, Error> {
        let row = sqlx::query(D::sql(&format!("SELECT {RUN_STATUS_COLUMNS} FROM runs WHERE id = ?")))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        match row {
            Some(row) => decode_run_status(&row),
            None => Err(Error::NotFound { what: format!("run {run_id}") }),
        }
    }

    async fn create_run(&self, new: NewRun) -> Result<RunRecord, Error> {
        let queued = QueuedRun { job: new.job, spec_hash: new.spec_hash, mode: new.mode, request: new.request };
        let mut tx = self.begin().await?;
        let id = Self::insert_run(&mut tx, &queued, RunState::Running, new.plan.next_state.as_ref()).await?;
        Self::insert_shards(&mut tx, &id, 0, &new.plan.shards).await?;
        let reason = format!("created with {} shards", new.plan.shards.len());
        Self::insert_event(&mut tx, &id, None, RunState::Running.as_str(), &reason).await?;
        let run = Self::select_run(&mut tx, &id, "").await?;
        tx.commit().await?;
        tracing::debug!(run_id = %id, job = %run.job, shards = new.plan.shards.len(), "created run");
        Ok(run)
    }

    async fn shards(&self, run_id: &str) -> Result<Vec<ShardRecord>, Error> {
        let rows =
            sqlx::query(D::sql(&format!("SELECT {SHARD_COLUMNS} FROM shards WHERE run_id = ? ORDER BY position")))
                .bind(run_id)
                .fetch_all(&self.reader)
                .await?;
        if rows.is_empty() && !self.run_exists(run_id).await? {
            return Err(Error::NotFound { what: format!("run {run_id}") });
        }
        rows.iter().map(decode_shard).collect()
    }

    async fn set_run_state(&self, run_id: &str, state: RunState, reason: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let run =
            sqlx::query(D::sql(&format!("SELECT job, state, next_state FROM runs WHERE id = ?{}", D::LOCK_FOR_UPDATE)))
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::NotFound { what: format!("run {run_id}") })?;
        let from: RunState = parse_state(&run.text("state")?)?;
        if !from.can_transition_to(state) {
            return Err(Error::IllegalTransition { from: from.to_string(), to: state.to_string() });
        }
        sqlx::query(D::sql(concat!(
            "UPDATE runs SET state = ?, message = ?, updated_at = {now}, ",
            "started_at = CASE WHEN ? THEN COALESCE(started_at, {now}) ELSE started_at END, ",
            "finished_at = CASE WHEN ? THEN {now} ELSE NULL END ",
            "WHERE id = ?"
        )))
        .bind(state.as_str())
        .bind(reason)
        .bind(state == RunState::Running)
        .bind(state.is_terminal())
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        Self::insert_event(&mut tx, run_id, None, state.as_str(), reason).await?;
        if let (RunState::Succeeded, Some(next_state)) = (state, run.optional_text("next_state")?) {
            let upsert = format!(
                "INSERT INTO job_state (job, state, updated_at) VALUES (?, ?, {{now}}) {} state = {}, updated_at = {}",
                D::on_conflict_update("job"),
                D::inserted("state"),
                D::inserted("updated_at"),
            );
            sqlx::query(D::sql(&upsert))
                .bind(run.text("job")?.as_str())
                .bind(next_state.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::debug!(run_id, from = %from, to = %state, reason, "run state changed");
        Ok(())
    }

    async fn claim_shard(
        &self,
        run_id: &str,
        shard_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<ClaimedShard>, Error> {
        // The shared lock on the run keeps it running until the claim commits.
        let update = format!(
            concat!(
                "UPDATE shards SET state = 'running', epoch = epoch + 1, owner = ?, error = NULL, ",
                "lease_expires_at = {{now}} + ?, updated_at = {{now}} ",
                "WHERE run_id = ? AND shard_id = ? ",
                "AND (state = 'pending' OR (state = 'running' AND lease_expires_at <= {{now}})) ",
                "AND EXISTS (SELECT 1 FROM runs WHERE id = ? AND state = 'running'{})"
            ),
            D::LOCK_FOR_SHARE
        );
        let claimed_columns = "run_id, shard_id, owner, epoch, sequence, checkpoint, counters, spec";
        // The event, from the claimed row.
        let record = |claimed: &str| {
            format!(
                "INSERT INTO events (run_id, shard_id, at, kind, reason) SELECT run_id, shard_id, {{now}}, 'running', \
                 CONCAT('claimed by ', owner, ' at epoch ', epoch) FROM {claimed}"
            )
        };
        let query = |statement: &str| {
            sqlx::query(D::sql(statement)).bind(owner).bind(ttl_ms(ttl)).bind(run_id).bind(shard_id).bind(run_id)
        };
        let claimed = if D::DATA_MODIFYING_WITH {
            let statement = format!(
                "WITH claimed AS ({update} RETURNING {claimed_columns}), recorded AS ({}) SELECT {claimed_columns} FROM claimed",
                record("claimed")
            );
            let Some(row) = query(&statement).fetch_optional(&self.writer).await? else {
                super::claimable_run::<D>(&self.reader, run_id).await?;
                return Ok(None);
            };
            match decode_claim(&row, owner) {
                Ok(claimed) => claimed,
                Err(error) => return Err(self.fail_corrupt_claim(run_id, shard_id, owner, error).await),
            }
        } else {
            let mut tx = self.begin().await?;
            if query(&update).execute(&mut *tx).await?.rows_affected() == 0 {
                drop(tx);
                super::claimable_run::<D>(&self.reader, run_id).await?;
                return Ok(None);
            }
            // No RETURNING (MariaDB lacks it): the claim's own row, read back in
            // its transaction, which a row that cannot be decoded rolls back.
            let this_shard = "shards WHERE run_id = ? AND shard_id = ?";
            let row = sqlx::query(D::sql(&format!("SELECT {claimed_columns} FROM {this_shard}")))
                .bind(run_id)
                .bind(shard_id)
                .fetch_one(&mut *tx)
                .await?;
            let claimed = decode_claim(&row, owner)?;
            sqlx::query(D::sql(&record(this_shard))).bind(run_id).bind(shard_id).execute(&mut *tx).await?;
            tx.commit().await?;
            claimed
        };
        tracing::debug!(run_id, shard_id, owner, epoch = claimed.lease.epoch, "claimed shard");
        Ok(Some(claimed))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<(), Error> {
        let renewed = sqlx::query(D::sql(&format!(
            "UPDATE shards SET lease_expires_at = {{now}} + ?, updated_at = {{now}}{HELD_LEASE}"
        )))
        .bind(ttl_ms(ttl))
        .bind(lease.run_id.as_str())
        .bind(lease.shard_id.as_str())
        .bind(to_i64(lease.epoch, "epoch")?)
        .execute(&self.writer)
        .await?
        .rows_affected();
        lease_held(renewed, lease)
    }

    async fn save_checkpoint(
        &self,
        lease: &Lease,
        sequence: u64,
        checkpoint: &Checkpoint,
        counters: &ShardCounters,
    ) -> Result<(), Error> {
        let saved = sqlx::query(D::sql(&format!(
            "UPDATE shards SET sequence = ?, checkpoint = ?, counters = ?, updated_at = {{now}}{HELD_LEASE}"
        )))
        .bind(to_i64(sequence, "sequence")?)
        .bind(to_json(checkpoint)?.as_str())
        .bind(to_json(counters)?.as_str())
        .bind(lease.run_id.as_str())
        .bind(lease.shard_id.as_str())
        .bind(to_i64(lease.epoch, "epoch")?)
        .execute(&self.writer)
        .await?
        .rows_affected();
        lease_held(saved, lease)
    }

    async fn finish_shard(
        &self,
        lease: &Lease,
        state: ShardState,
        reached: &ResumePoint,
        error: Option<&str>,
    ) -> Result<(), Error> {
        if !matches!(state, ShardState::Succeeded | ShardState::Failed) {
            return Err(Error::IllegalTransition { from: ShardState::Running.to_string(), to: state.to_string() });
        }
        let reason = error.map_or_else(|| format!("finished by {}", lease.owner), str::to_string);
        self.end_lease(lease, state, reached, error, &reason).await?;
        tracing::debug!(run_id = %lease.run_id, shard_id = %lease.shard_id, state = %state, "finished shard");
        Ok(())
    }

    async fn release_shard(&self, lease: &Lease, reached: &ResumePoint) -> Result<(), Error> {
        let reason = format!("released by {}", lease.owner);
        self.end_lease(lease, ShardState::Pending, reached, None, &reason).await
    }

    async fn request_split(&self, run_id: &str, shard_id: &str, reason: &str) -> Result<bool, Error> {
        let mut tx = self.begin().await?;
        let requested = sqlx::query(D::sql(concat!(
            "UPDATE shards SET split_requested = TRUE, updated_at = {now} ",
            "WHERE run_id = ? AND shard_id = ? AND state = 'running'"
        )))
        .bind(run_id)
        .bind(shard_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if requested == 0 {
            return Ok(false);
        }
        Self::insert_event(&mut tx, run_id, Some(shard_id), SPLIT_REQUESTED, reason).await?;
        tx.commit().await?;
        tracing::debug!(run_id, shard_id, reason, "split requested");
        Ok(true)
    }

    async fn split_shard(&self, lease: &Lease, kept: &serde_json::Value, new_shard: &ShardSpec) -> Result<(), Error> {
        let kept = ShardSpec { id: lease.shard_id.clone(), descriptor: kept.clone() };
        let mut tx = self.begin().await?;
        // The run's row lock orders the splits of a run, so that new positions stay distinct.
        Self::select_run(&mut tx, &lease.run_id, D::LOCK_FOR_UPDATE).await?;
        let updated = sqlx::query(D::sql(&format!(
            "UPDATE shards SET spec = ?, split_requested = FALSE, updated_at = {{now}}{HELD_LEASE}"
        )))
        .bind(to_json(&kept)?.as_str())
        .bind(lease.run_id.as_str())
        .bind(lease.shard_id.as_str())
        .bind(to_i64(lease.epoch, "epoch")?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        lease_held(updated, lease)?;
        let last = sqlx::query(D::sql("SELECT MAX(position) AS max_position FROM shards WHERE run_id = ?"))
            .bind(lease.run_id.as_str())
            .fetch_one(&mut *tx)
            .await?
            .optional_integer("max_position")?;
        let position = last.map_or(Ok(0), |last| to_u64(last, "shard position").map(|last| last + 1))?;
        Self::insert_shards(&mut tx, &lease.run_id, position, std::slice::from_ref(new_shard)).await?;
        let (split, parted) = split_reasons(lease, new_shard);
        Self::insert_event(&mut tx, &lease.run_id, Some(&lease.shard_id), SPLIT, &split).await?;
        Self::insert_event(&mut tx, &lease.run_id, Some(&new_shard.id), ShardState::Pending.as_str(), &parted).await?;
        tx.commit().await?;
        tracing::debug!(run_id = %lease.run_id, shard_id = %lease.shard_id, new_shard = %new_shard.id, "split shard");
        Ok(())
    }

    async fn set_next_state(&self, run_id: &str, next_state: &serde_json::Value) -> Result<(), Error> {
        let updated = sqlx::query(D::sql(
            "UPDATE runs SET next_state = ?, updated_at = {now} WHERE id = ? AND state = 'running'",
        ))
        .bind(to_json(next_state)?.as_str())
        .bind(run_id)
        .execute(&self.writer)
        .await?;
        if updated.rows_affected() == 0 {
            let run = self.run(run_id).await?;
            return Err(Error::RunNotRunning { run_id: run_id.to_string(), state: run.state });
        }
        Ok(())
    }

    async fn retry_run(&self, run_id: &str, reason: &str) -> Result<u64, Error> {
        let mut tx = self.begin().await?;
        let run = Self::select_run(&mut tx, run_id, D::LOCK_FOR_UPDATE).await?;
        if run.state != RunState::Failed {
            return Err(Error::IllegalTransition { from: run.state.to_string(), to: "running (retried)".into() });
        }
        sqlx::query(D::sql(concat!(
            "INSERT INTO events (run_id, shard_id, at, kind, reason) ",
            "SELECT run_id, shard_id, {now}, 'pending', 'reset for retry' FROM shards ",
            "WHERE run_id = ? AND state = 'failed' ORDER BY position"
        )))
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        let reset = sqlx::query(D::sql(concat!(
            "UPDATE shards SET state = 'pending', owner = NULL, lease_expires_at = NULL, error = NULL, ",
            "updated_at = {now} WHERE run_id = ? AND state = 'failed'"
        )))
        .bind(run_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let planned = sqlx::query(D::sql("SELECT shard_id FROM shards WHERE run_id = ? LIMIT 1"))
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
        let state = if planned.is_some() { RunState::Running } else { RunState::Pending };
        sqlx::query(D::sql(
            "UPDATE runs SET state = ?, attempt = attempt + 1, message = ?, finished_at = NULL, updated_at = {now} \
             WHERE id = ?",
        ))
        .bind(state.as_str())
        .bind(reason)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        Self::insert_event(&mut tx, run_id, None, state.as_str(), reason).await?;
        tx.commit().await?;
        Ok(reset)
    }

    async fn events(&self, run_id: &str) -> Result<Vec<Event>, Error> {
        let rows = sqlx::query(D::sql("SELECT at, shard_id, kind, reason FROM events WHERE run_id = ? ORDER BY id"))
            .bind(run_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(decode_event).collect()
    }

    async fn shards_to_follow(&self, run_id: &str, pending: u32, also: &[String]) -> Result<Vec<ShardRecord>, Error> {
        super::follow::shards_to_follow::<D>(&self.reader, run_id, pending, also).await
    }

    async fn shard(&self, run_id: &str, shard_id: &str) -> Result<ShardRecord, Error> {
        let row = sqlx::query(D::sql(&format!("SELECT {SHARD_COLUMNS} FROM shards WHERE run_id = ? AND shard_id = ?")))
            .bind(run_id)
            .bind(shard_id)
            .fetch_optional(&self.reader)
            .await?;
        match row {
            Some(row) => decode_shard(&row),
            None => Err(Error::NotFound { what: format!("shard {shard_id} of run {run_id}") }),
        }
    }

    async fn enqueue_run(&self, new: QueuedRun) -> Result<(RunRecord, bool), Error> {
        if let Some(existing) = self.queued_run(&new).await? {
            return Ok((existing, false));
        }
        let mut tx = self.begin().await?;
        let id = match Self::insert_run(&mut tx, &new, RunState::Pending, None).await {
            // Another writer queued the same run since the lookup.
            Err(error) if is_unique_violation(&error) => {
                tx.rollback().await?;
                let existing = self.queued_run(&new).await?.ok_or(error)?;
                return Ok((existing, false));
            }
            inserted => inserted?,
        };
        let reason = match new.request.scheduled_for {
            Some(at) => format!("queued by {} for {}", new.request.trigger.as_str(), at.to_rfc3339()),
            None => format!("queued by {}", new.request.trigger.as_str()),
        };
        Self::insert_event(&mut tx, &id, None, RunState::Pending.as_str(), &reason).await?;
        let run = Self::select_run(&mut tx, &id, "").await?;
        tx.commit().await?;
        Ok((run, true))
    }

    async fn start_run(&self, run_id: &str, spec_hash: &str, plan: &Plan) -> Result<RunRecord, Error> {
        let mut tx = self.begin().await?;
        let run = Self::select_run(&mut tx, run_id, D::LOCK_FOR_UPDATE).await?;
        if run.state != RunState::Pending {
            return Err(Error::IllegalTransition { from: run.state.to_string(), to: "running (planned)".into() });
        }
        let next_state = plan.next_state.as_ref().map(to_json).transpose()?;
        sqlx::query(D::sql(
            "UPDATE runs SET state = 'running', spec_hash = ?, next_state = ?, started_at = {now}, \
             updated_at = {now} WHERE id = ?",
        ))
        .bind(spec_hash)
        .bind(next_state.as_deref())
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        Self::insert_shards(&mut tx, run_id, 0, &plan.shards).await?;
        let reason = format!("planned {} shards", plan.shards.len());
        Self::insert_event(&mut tx, run_id, None, RunState::Running.as_str(), &reason).await?;
        let run = Self::select_run(&mut tx, run_id, "").await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, Error> {
        let mut template = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        if filter.job.is_some() {
            template.push_str(" AND job = ?");
        }
        if !filter.states.is_empty() {
            let placeholders = vec!["?"; filter.states.len()].join(", ");
            template.push_str(&format!(" AND state IN ({placeholders})"));
        }
        if filter.trigger.is_some() {
            template.push_str(" AND \"trigger\" = ?");
        }
        if filter.scheduled_for.is_some() {
            template.push_str(" AND scheduled_for = ?");
        }
        template.push_str(" ORDER BY created_at DESC, id DESC");
        if filter.limit.is_some() {
            template.push_str(" LIMIT ?");
        }
        let mut query = sqlx::query(D::sql(&template));
        if let Some(job) = &filter.job {
            query = query.bind(job.as_str());
        }
        for state in &filter.states {
            query = query.bind(state.as_str());
        }
        if let Some(trigger) = filter.trigger {
            query = query.bind(trigger.as_str());
        }
        if let Some(at) = filter.scheduled_for {
            query = query.bind(at.timestamp_millis());
        }
        if let Some(limit) = filter.limit {
            query = query.bind(i64::from(limit));
        }
        let rows = query.fetch_all(&self.reader).await?;
        rows.iter().map(decode_run).collect()
    }

    async fn expire_leases_of(&self, owner: &str) -> Result<u64, Error> {
        let expired = sqlx::query(D::sql(
            "UPDATE shards SET lease_expires_at = {now} WHERE owner = ? AND state = 'running' AND lease_expires_at > {now}",
        ))
        .bind(owner)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(expired)
    }

    async fn put_job(&self, name: &str, spec: &str, spec_hash: &str) -> Result<JobRecord, Error> {
        // The version is assigned first: MySQL applies the assignments in order.
        let upsert = format!(
            "INSERT INTO jobs (name, spec, spec_hash, enabled, version, planned_through, created_at, updated_at) \
             VALUES (?, ?, ?, TRUE, 1, NULL, {{now}}, {{now}}) {on_conflict} \
             version = CASE WHEN jobs.spec_hash = {new_hash} THEN jobs.version ELSE jobs.version + 1 END, \
             spec = {new_spec}, spec_hash = {new_hash}, updated_at = {new_updated_at}",
            on_conflict = D::on_conflict_update("name"),
            new_hash = D::inserted("spec_hash"),
            new_spec = D::inserted("spec"),
            new_updated_at = D::inserted("updated_at"),
        );
        sqlx::query(D::sql(&upsert)).bind(name).bind(spec).bind(spec_hash).execute(&self.writer).await?;
        let row = sqlx::query(D::sql(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?")))
            .bind(name)
            .fetch_one(&self.writer)
            .await?;
        decode_job(&row)
    }

    async fn job(&self, name: &str) -> Result<JobRecord, Error> {
        let row = sqlx::query(D::sql(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?")))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| job_not_found(name))?;
        decode_job(&row)
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>, Error> {
        let rows = sqlx::query(D::sql(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY name")))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(decode_job).collect()
    }

    async fn set_job_enabled(&self, name: &str, enabled: bool) -> Result<(), Error> {
        let updated = sqlx::query(D::sql("UPDATE jobs SET enabled = ?, updated_at = {now} WHERE name = ?"))
            .bind(enabled)
            .bind(name)
            .execute(&self.writer)
            .await?
            .rows_affected();
        if updated == 0 { Err(job_not_found(name)) } else { Ok(()) }
    }

    async fn delete_job(&self, name: &str) -> Result<(), Error> {
        let deleted = sqlx::query(D::sql("DELETE FROM jobs WHERE name = ?"))
            .bind(name)
            .execute(&self.writer)
            .await?
            .rows_affected();
        if deleted == 0 { Err(job_not_found(name)) } else { Ok(()) }
    }

    async fn set_planned_through(&self, name: &str, at: DateTime<Utc>) -> Result<(), Error> {
        let updated = sqlx::query(D::sql("UPDATE jobs SET planned_through = ? WHERE name = ?"))
            .bind(at.timestamp_millis())
            .bind(name)
            .execute(&self.writer)
            .await?
            .rows_affected();
        if updated == 0 { Err(job_not_found(name)) } else { Ok(()) }
    }

    async fn export(&self) -> Result<Snapshot, Error> {
        super::export::<D>(&self.writer).await
    }

    async fn import(&self, snapshot: &Snapshot) -> Result<(), Error> {
        super::import::<D>(&self.writer, snapshot).await
    }
}

/// A claimed shard from the claim's row (the columns of a claim's `RETURNING`).
fn decode_claim(row: &impl Columns, owner: &str) -> Result<ClaimedShard, Error> {
    let shard = from_json::<ShardSpec>(&row.text("spec")?, "shard spec")?;
    let lease = Lease {
        run_id: row.text("run_id")?,
        shard_id: row.text("shard_id")?,
        owner: owner.to_string(),
        epoch: to_u64(row.integer("epoch")?, "epoch")?,
    };
    Ok(ClaimedShard { lease, resume: decode_resume_point(row)?, shard })
}
