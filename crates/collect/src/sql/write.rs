//! Bulk writes inside one transaction per commit: PostgreSQL `COPY … FROM
//! STDIN`, one COPY per commit streamed by a [`PgCopyWriter`] task (through a
//! temporary staging table for upserts, created once per connection and
//! emptied after each merge), MySQL and SQLite multi-row
//! `INSERT`s chunked under each backend's bound-parameter limit.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use anyhow::{Context, bail};
use haul_collect_core::{Batch, Value};
use sqlx::{AssertSqlSafe, Executor, IntoArguments, MySql, Sqlite, Transaction};

use super::connection::Database;
use super::copy::{NulInField, push_copy_row};
use super::copy_in::{CopyTarget, PgCopyWriter};
use super::dialect::{Dialect, Ident};
use super::errors::classify;
use super::statement::BindTyped;

/// Bytes of COPY data sent per message.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// Approximate payload of one multi-row INSERT, below MySQL's default `max_allowed_packet`.
const INSERT_CHUNK_BYTES: u64 = 4 << 20;

/// Runs an [`InsertSql`] chunk by chunk with typed bound values.
async fn insert_chunks<DB>(
    transaction: &mut Transaction<'static, DB>,
    insert: &InsertSql,
    batch: &Batch,
) -> anyhow::Result<()>
where
    DB: BindTyped,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    for rows in insert.chunks(batch) {
        let query = sqlx::query(AssertSqlSafe(insert.sql(rows.len())));
        let query = rows.iter().flatten().fold(query, DB::bind_value);
        query.execute(&mut **transaction).await.map_err(classify)?;
    }
    Ok(())
}

/// An open transaction on the sink's database.
pub enum SinkTransaction {
    Postgres(PgCopyWriter),
    MySql(Transaction<'static, MySql>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// What a write does with rows whose key already exists.
#[derive(Debug, Clone, Copy)]
pub enum OnConflict<'a> {
    /// Plain insert: a duplicate key is an error.
    Fail,
    /// Replace the non-key columns of the existing row.
    Update { key: &'a [Ident] },
}

impl SinkTransaction {
    pub async fn begin(database: &Database) -> anyhow::Result<Self> {
        let transaction = match database {
            Database::Postgres(pool) => {
                pool.begin().await.map(|transaction| SinkTransaction::Postgres(PgCopyWriter::start(transaction)))
            }
            Database::MySql(pool) => pool.begin().await.map(SinkTransaction::MySql),
            Database::Sqlite(pool) => pool.begin().await.map(SinkTransaction::Sqlite),
        };
        transaction.map_err(classify).context("beginning a transaction")
    }

    pub async fn commit(self) -> anyhow::Result<()> {
        let result = match self {
            SinkTransaction::Postgres(writer) => return writer.commit().await,
            SinkTransaction::MySql(transaction) => transaction.commit().await,
            SinkTransaction::Sqlite(transaction) => transaction.commit().await,
        };
        result.map_err(classify).context("committing")
    }

    pub async fn rollback(self) -> anyhow::Result<()> {
        let result = match self {
            SinkTransaction::Postgres(writer) => return writer.rollback().await,
            SinkTransaction::MySql(transaction) => transaction.rollback().await,
            SinkTransaction::Sqlite(transaction) => transaction.rollback().await,
        };
        result.map_err(classify).context("rolling back")
    }

    fn dialect(&self) -> Dialect {
        match self {
            SinkTransaction::Postgres(_) => Dialect::Postgres,
            SinkTransaction::MySql(_) => Dialect::MySql,
            SinkTransaction::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Writes every row of `batch` into `table`.
    pub async fn write(&mut self, table: &Ident, batch: &Batch, on_conflict: OnConflict<'_>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let dialect = self.dialect();
        let columns: Vec<Ident> = batch.schema.names().map(Ident::column).collect::<anyhow::Result<_>>()?;
        let column_list = columns.iter().map(|c| dialect.quote(c)).collect::<Vec<_>>().join(", ");
        match self {
            SinkTransaction::Postgres(writer) => {
                postgres_copy(writer, &dialect.quote(table), &column_list, &columns, batch, on_conflict).await
            }
            SinkTransaction::MySql(transaction) => {
                let insert = InsertSql::new(dialect, table, &column_list, &columns, on_conflict);
                insert_chunks(transaction, &insert, batch).await
            }
            SinkTransaction::Sqlite(transaction) => {
                let insert = InsertSql::new(dialect, table, &column_list, &columns, on_conflict);
                insert_chunks(transaction, &insert, batch).await
            }
        }
    }
}

/// The staging table of upserts into `table` with `column_list`: a
/// temporary table of the session, emptied at every commit, named after what
/// it stages so that a connection reused for another table or column set
/// gets its own.
fn stage_table(table: &str, column_list: &str) -> String {
    let mut hasher = DefaultHasher::new();
    (table, column_list).hash(&mut hasher);
    format!("haul_stage_{:016x}", hasher.finish())
}

/// COPY into the table, or for upserts into a staging table merged with
/// `INSERT … SELECT … ON CONFLICT DO UPDATE` (the last row of a key wins) when
/// the COPY ends. The rows are encoded here and streamed to the open COPY.
async fn postgres_copy(
    writer: &mut PgCopyWriter,
    table: &str,
    column_list: &str,
    columns: &[Ident],
    batch: &Batch,
    on_conflict: OnConflict<'_>,
) -> anyhow::Result<()> {
    let target = Arc::new(match on_conflict {
        OnConflict::Fail => CopyTarget {
            prepare: None,
            statement: format!("COPY {table} ({column_list}) FROM STDIN"),
            merge: Vec::new(),
        },
        OnConflict::Update { key } => {
            let stage = stage_table(table, column_list);
            let key_list = key.iter().map(|k| Dialect::Postgres.quote(k)).collect::<Vec<_>>().join(", ");
            CopyTarget {
                prepare: Some(format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS SELECT {column_list} FROM \
                     {table} WITH NO DATA"
                )),
                statement: format!("COPY {stage} ({column_list}) FROM STDIN"),
                merge: vec![
                    format!(
                        "INSERT INTO {table} ({column_list}) SELECT DISTINCT ON ({key_list}) {column_list} FROM \
                         {stage} ORDER BY {key_list}, ctid DESC ON CONFLICT ({key_list}) {}",
                        update_clause(Dialect::Postgres, columns, key)
                    ),
                    format!("TRUNCATE {stage}"),
                ],
            }
        }
    });
    let mut buffer = Vec::with_capacity(COPY_CHUNK_BYTES + 4096);
    for (index, row) in batch.rows.iter().enumerate() {
        if let Err(NulInField { field }) = push_copy_row(&mut buffer, row) {
            writer.set_broken();
            let column = batch.schema.fields.get(field).map_or("?", |field| field.name.as_str());
            bail!(
                "row {} of the batch cannot be written: column `{column}` holds a NUL character, which PostgreSQL \
                 text cannot store",
                index + 1
            );
        }
        if buffer.len() >= COPY_CHUNK_BYTES {
            let chunk = std::mem::replace(&mut buffer, Vec::with_capacity(COPY_CHUNK_BYTES + 4096));
            writer.send(&target, chunk, false).await?;
        }
    }
    writer.send(&target, buffer, true).await
}

/// The conflict clause after `ON CONFLICT (key)` (PostgreSQL, SQLite) or the
/// `ON DUPLICATE KEY UPDATE` list (MySQL).
fn update_clause(dialect: Dialect, columns: &[Ident], key: &[Ident]) -> String {
    let updated: Vec<&Ident> = columns.iter().filter(|c| !key.contains(c)).collect();
    match dialect {
        Dialect::MySql => {
            let first = dialect.quote(updated.first().copied().unwrap_or(&key[0]));
            let sets: Vec<String> = if updated.is_empty() {
                vec![format!("{first} = {first}")]
            } else {
                updated.iter().map(|c| format!("{0} = VALUES({0})", dialect.quote(c))).collect()
            };
            sets.join(", ")
        }
        Dialect::Postgres | Dialect::Sqlite if updated.is_empty() => "DO NOTHING".to_string(),
        Dialect::Postgres | Dialect::Sqlite => {
            let excluded = if dialect == Dialect::Postgres { "EXCLUDED" } else { "excluded" };
            let sets: Vec<String> = updated.iter().map(|c| format!("{0} = {excluded}.{0}", dialect.quote(c))).collect();
            format!("DO UPDATE SET {}", sets.join(", "))
        }
    }
}

/// A multi-row `INSERT` for MySQL or SQLite.
struct InsertSql {
    prefix: String,
    row_placeholders: String,
    suffix: String,
    max_rows: usize,
}

impl InsertSql {
    fn new(dialect: Dialect, table: &Ident, column_list: &str, columns: &[Ident], on_conflict: OnConflict<'_>) -> Self {
        let prefix = format!("INSERT INTO {} ({column_list}) VALUES ", dialect.quote(table));
        let row_placeholders = format!("({})", vec!["?"; columns.len()].join(", "));
        let suffix = match (on_conflict, dialect) {
            (OnConflict::Fail, _) => String::new(),
            (OnConflict::Update { key }, Dialect::MySql) => {
                format!(" ON DUPLICATE KEY UPDATE {}", update_clause(dialect, columns, key))
            }
            (OnConflict::Update { key }, _) => {
                let key_list = key.iter().map(|k| dialect.quote(k)).collect::<Vec<_>>().join(", ");
                format!(" ON CONFLICT ({key_list}) {}", update_clause(dialect, columns, key))
            }
        };
        let max_rows = (dialect.max_bind_params() / columns.len().max(1)).max(1);
        InsertSql { prefix, row_placeholders, suffix, max_rows }
    }

    fn sql(&self, rows: usize) -> String {
        let mut sql =
            String::with_capacity(self.prefix.len() + rows * (self.row_placeholders.len() + 1) + self.suffix.len());
        sql.push_str(&self.prefix);
        for index in 0..rows {
            if index > 0 {
                sql.push(',');
            }
            sql.push_str(&self.row_placeholders);
        }
        sql.push_str(&self.suffix);
        sql
    }

    /// Consecutive slices of rows under the parameter and payload limits.
    fn chunks<'b>(&self, batch: &'b Batch) -> Vec<&'b [Vec<Value>]> {
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut bytes = 0u64;
        for (index, row) in batch.rows.iter().enumerate() {
            let row_bytes: u64 = row.iter().map(|v| v.approximate_size() as u64).sum();
            if index > start && (index - start >= self.max_rows || bytes + row_bytes > INSERT_CHUNK_BYTES) {
                chunks.push(&batch.rows[start..index]);
                start = index;
                bytes = 0;
            }
            bytes += row_bytes;
        }
        if start < batch.rows.len() {
            chunks.push(&batch.rows[start..]);
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_collect_core::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn chunks_stay_under_the_parameter_limit() {
        let columns = [Ident::column("id").unwrap(), Ident::column("name").unwrap()];
        let table = Ident::table("t").unwrap();
        let insert = InsertSql::new(Dialect::Sqlite, &table, "\"id\", \"name\"", &columns, OnConflict::Fail);
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("name", DataType::String)]));
        let rows = (0..40_000).map(|i| vec![Value::Int(i), Value::String(format!("n{i}"))]).collect();
        let batch = Batch::new(schema, rows);
        let chunks = insert.chunks(&batch);
        assert!(chunks.iter().all(|chunk| chunk.len() * 2 <= 32_766));
        assert_eq!(chunks.iter().map(|chunk| chunk.len()).sum::<usize>(), 40_000);
        assert_eq!(insert.sql(2), "INSERT INTO \"t\" (\"id\", \"name\") VALUES (?, ?),(?, ?)");
    }

    #[test]
    fn stage_tables_are_named_after_what_they_stage() {
        assert_eq!(stage_table("\"t\"", "\"id\""), stage_table("\"t\"", "\"id\""));
        assert_ne!(stage_table("\"t\"", "\"id\""), stage_table("\"t\"", "\"id\", \"name\""));
        assert_ne!(stage_table("\"t\"", "\"id\""), stage_table("\"u\"", "\"id\""));
    }

    #[test]
    fn upsert_clauses() {
        let columns = [Ident::column("id").unwrap(), Ident::column("name").unwrap()];
        let key = [Ident::column("id").unwrap()];
        assert_eq!(update_clause(Dialect::MySql, &columns, &key), "`name` = VALUES(`name`)");
        assert_eq!(update_clause(Dialect::Sqlite, &columns, &key), "DO UPDATE SET \"name\" = excluded.\"name\"");
        assert_eq!(update_clause(Dialect::Postgres, &key, &key), "DO NOTHING");
        assert_eq!(update_clause(Dialect::MySql, &key, &key), "`id` = `id`");
    }
}
