//! What a follower of a run reads each time it looks (see
//! [`Store::shards_to_follow`](crate::store::Store::shards_to_follow)), in
//! statements every backend shares. Each one is an index range of the
//! shards in flight — by run and state, or by run and shard id — so a look
//! costs what runs and waits, not the whole run.

use std::collections::HashSet;

use sqlx::{Database, Pool};

use super::codec::decode_shard;
use super::{Dialect, SHARD_COLUMNS};
use crate::model::ShardRecord;
use crate::store::Error;

/// The running shards of `run_id` and those named in `also`, each once,
/// then its first `pending` pending shards (in the plan's order) not named.
pub(crate) async fn shards_to_follow<D: Dialect>(
    pool: &Pool<D::Db>,
    run_id: &str,
    pending: u32,
    also: &[String],
) -> Result<Vec<ShardRecord>, Error>
where
    for<'c> &'c mut <D::Db as Database>::Connection: sqlx::Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: sqlx::IntoArguments<D::Db>,
    for<'q> &'q str: sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    i64: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
{
    let mut connection = pool.acquire().await?;
    let running = format!("SELECT {SHARD_COLUMNS} FROM shards WHERE run_id = ? AND state = 'running'");
    let mut rows = sqlx::query(D::sql(&running)).bind(run_id).fetch_all(&mut *connection).await?;
    if !also.is_empty() {
        let placeholders = vec!["?"; also.len()].join(", ");
        let named = format!("SELECT {SHARD_COLUMNS} FROM shards WHERE run_id = ? AND shard_id IN ({placeholders})");
        let mut query = sqlx::query(D::sql(&named)).bind(run_id);
        for shard_id in also {
            query = query.bind(shard_id.as_str());
        }
        rows.extend(query.fetch_all(&mut *connection).await?);
    }
    let named: HashSet<&str> = also.iter().map(String::as_str).collect();
    let queued =
        format!("SELECT {SHARD_COLUMNS} FROM shards WHERE run_id = ? AND state = 'pending' ORDER BY position LIMIT ?");
    let limit = i64::from(pending).saturating_add(i64::try_from(named.len()).unwrap_or(i64::MAX));
    let queued_rows = sqlx::query(D::sql(&queued)).bind(run_id).bind(limit).fetch_all(&mut *connection).await?;

    let mut seen = HashSet::new();
    let mut shards = Vec::with_capacity(rows.len() + queued_rows.len());
    for row in &rows {
        let shard = decode_shard(row)?;
        if seen.insert(shard.spec.id.clone()) {
            shards.push(shard);
        }
    }
    let mut queued = 0;
    for row in &queued_rows {
        let shard = decode_shard(row)?;
        if queued < pending && !named.contains(shard.spec.id.as_str()) && seen.insert(shard.spec.id.clone()) {
            shards.push(shard);
            queued += 1;
        }
    }
    Ok(shards)
}
