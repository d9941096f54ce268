//! SQL text with bound parameters, and running it on a [`Database`]. Values
//! are always bound, never formatted into the SQL: PostgreSQL receives them in
//! their text form cast to the compared column's type (exact for NUMERIC,
//! UUID and times alike); MySQL and SQLite receive typed values.

use std::sync::Arc;

use anyhow::Context;
use futures::TryStreamExt;
use haul_collect_core::Value;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column as _, Executor, IntoArguments, Pool, SqlSafeStr, TypeInfo};
use tokio::sync::mpsc;

use super::connection::Database;
use super::convert::postgres_text;
use super::decode::{Column, DecodeRow, DecodedRow};
use super::dialect::{ColumnType, Dialect};
use super::errors::classify;

/// Decoded rows of a streaming query, one batch at a time, read ahead by a
/// task that is stopped when the stream is dropped. A row that cannot be
/// decoded is in the batch as a [`BadRow`], in its place.
pub struct BatchStream {
    receiver: mpsc::Receiver<anyhow::Result<Vec<DecodedRow>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BatchStream {
    /// The next batch, or `None` at the end of the result.
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<DecodedRow>>> {
        match self.receiver.recv().await {
            Some(batch) => batch.map(Some),
            None => {
                // The task ended without an error: make sure it did not panic.
                (&mut self.task).await.context("the query task failed")?;
                Ok(None)
            }
        }
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A SQL statement being built, with its parameters.
#[derive(Debug, Clone)]
pub struct Statement {
    dialect: Dialect,
    sql: String,
    params: Vec<Value>,
}

impl Statement {
    pub fn new(dialect: Dialect) -> Self {
        Statement { dialect, sql: String::new(), params: Vec::new() }
    }

    /// Appends SQL text: identifiers already quoted, or trusted user SQL.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder bound to `value`; `type_name` is the database type
    /// the value is compared with (used by PostgreSQL's cast).
    pub fn push_bind(&mut self, value: Value, type_name: &str) -> &mut Self {
        let operand = self.bind_operand(value, type_name);
        self.sql.push_str(&operand);
        self
    }

    /// Appends a placeholder bound to `value`, in the form that compares with
    /// a column of type `column` (see [`Dialect::comparable`]).
    pub fn push_compared(&mut self, value: Value, column: &ColumnType) -> &mut Self {
        let operand = self.bind_operand(value, &column.type_name);
        self.sql.push_str(&self.dialect.comparable(&operand, column));
        self
    }

    /// The placeholder of a new parameter: cast to `type_name` on PostgreSQL,
    /// which receives text; cast to an exact DECIMAL on MySQL for decimals,
    /// which it would otherwise compare as floating-point numbers.
    fn bind_operand(&mut self, value: Value, type_name: &str) -> String {
        let decimal = matches!(value, Value::Decimal(_));
        self.params.push(value);
        let placeholder = self.dialect.placeholder(self.params.len());
        match self.dialect {
            Dialect::Postgres => format!("CAST({placeholder} AS {type_name})"),
            Dialect::MySql if decimal => format!("CAST({placeholder} AS DECIMAL(65,30))"),
            Dialect::MySql | Dialect::Sqlite => placeholder,
        }
    }

    /// A statement whose SQL already holds its placeholders, one per parameter.
    pub fn with_params(dialect: Dialect, sql: &str, params: Vec<Value>) -> Self {
        Statement { dialect, sql: sql.to_string(), params }
    }
}

/// A backend that receives values with their natural Rust type (MySQL and
/// SQLite), bound by reference wherever the driver encodes from one.
pub trait BindTyped: sqlx::Database {
    fn bind_value<'q>(query: Query<'q, Self, Self::Arguments>, value: &Value) -> Query<'q, Self, Self::Arguments>;
}

macro_rules! bind_typed {
    ($database:ty) => {
        impl BindTyped for $database {
            fn bind_value<'q>(
                query: Query<'q, Self, Self::Arguments>,
                value: &Value,
            ) -> Query<'q, Self, Self::Arguments> {
                match value {
                    Value::Null => query.bind(None::<&str>),
                    Value::Bool(b) => query.bind(*b),
                    Value::Int(int) => query.bind(*int),
                    Value::Float(float) => query.bind(*float),
                    Value::Decimal(text) | Value::String(text) => query.bind(text.as_str()),
                    Value::Bytes(bytes) => query.bind(bytes.as_slice()),
                    Value::Date(date) => query.bind(*date),
                    Value::Timestamp(time) => query.bind(*time),
                    Value::TimestampTz(time) => query.bind(*time),
                    Value::Json(json) => query.bind(sqlx::types::Json(json)),
                }
            }
        }
    };
}

bind_typed!(sqlx::MySql);
bind_typed!(sqlx::Sqlite);

fn postgres_query(statement: &Statement) -> Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let query = sqlx::query(AssertSqlSafe(statement.sql.as_str()));
    statement.params.iter().fold(query, |query, value| query.bind(postgres_text(value)))
}

fn typed_query<DB: BindTyped>(statement: &Statement) -> Query<'_, DB, DB::Arguments> {
    let query = sqlx::query(AssertSqlSafe(statement.sql.as_str()));
    statement.params.iter().fold(query, DB::bind_value)
}

impl Database {
    /// Runs a query and decodes every row; for small results (bounds, catalog
    /// lookups), where a row that cannot be decoded is an error.
    pub async fn fetch_all(&self, statement: &Statement, columns: &[Column]) -> anyhow::Result<Vec<Vec<Value>>> {
        let rows = match self {
            Database::Postgres(pool) => fetch_decoded(pool, postgres_query(statement), columns).await,
            Database::MySql(pool) => fetch_decoded(pool, typed_query(statement), columns).await,
            Database::Sqlite(pool) => fetch_decoded(pool, typed_query(statement), columns).await,
        };
        let rows =
            rows.and_then(|rows| rows.into_iter().map(|row| row.map_err(|bad| anyhow::anyhow!(bad.reason))).collect());
        rows.with_context(|| format!("running `{}`", statement.sql))
    }

    /// Runs a statement that returns no rows; the number of rows it affected.
    pub async fn execute(&self, statement: &Statement) -> anyhow::Result<u64> {
        let affected = match self {
            Database::Postgres(pool) => postgres_query(statement).execute(pool).await.map(|r| r.rows_affected()),
            Database::MySql(pool) => typed_query(statement).execute(pool).await.map(|r| r.rows_affected()),
            Database::Sqlite(pool) => typed_query(statement).execute(pool).await.map(|r| r.rows_affected()),
        };
        affected.map_err(classify).with_context(|| format!("running `{}`", statement.sql))
    }

    /// The result columns of `sql` (names and driver type names), without running it.
    pub async fn describe(&self, sql: &str) -> anyhow::Result<Vec<(String, String)>> {
        fn names<S: sqlx::Statement>(statement: S) -> Vec<(String, String)> {
            let columns = statement.columns().iter();
            columns.map(|c| (c.name().to_string(), c.type_info().name().to_string())).collect()
        }
        let sql = AssertSqlSafe(sql.to_string()).into_sql_str();
        let described = match self {
            Database::Postgres(pool) => pool.prepare(sql).await.map(names),
            Database::MySql(pool) => pool.prepare(sql).await.map(names),
            Database::Sqlite(pool) => pool.prepare(sql).await.map(names),
        };
        described.map_err(classify)
    }

    /// Streams a query's rows, decoded into batches of `batch_size`, from a
    /// task that stops when the receiver is dropped. At most two batches wait
    /// in memory; the result is never held whole.
    pub fn stream_batches(&self, statement: Statement, columns: Arc<[Column]>, batch_size: usize) -> BatchStream {
        let (sender, receiver) = mpsc::channel(2);
        let batch_size = batch_size.max(1);
        let task = match self.clone() {
            Database::Postgres(pool) => tokio::spawn(async move {
                pump(pool, postgres_query(&statement), columns, batch_size, sender).await;
            }),
            Database::MySql(pool) => tokio::spawn(async move {
                pump(pool, typed_query(&statement), columns, batch_size, sender).await;
            }),
            Database::Sqlite(pool) => tokio::spawn(async move {
                pump(pool, typed_query(&statement), columns, batch_size, sender).await;
            }),
        };
        BatchStream { receiver, task }
    }
}

async fn fetch_decoded<DB>(
    pool: &Pool<DB>,
    query: Query<'_, DB, DB::Arguments>,
    columns: &[Column],
) -> anyhow::Result<Vec<DecodedRow>>
where
    DB: sqlx::Database,
    DB::Row: DecodeRow,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let rows = query.fetch_all(pool).await.map_err(classify)?;
    Ok(rows.iter().map(|row| row.decode(columns)).collect())
}

async fn pump<DB>(
    pool: Pool<DB>,
    query: Query<'_, DB, DB::Arguments>,
    columns: Arc<[Column]>,
    batch_size: usize,
    sender: mpsc::Sender<anyhow::Result<Vec<DecodedRow>>>,
) where
    DB: sqlx::Database,
    DB::Row: DecodeRow,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut rows = query.fetch(&pool);
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        let row = match rows.try_next().await {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(error) => {
                let _ = sender.send(Err(classify(error))).await;
                return;
            }
        };
        batch.push(row.decode(&columns));
        if batch.len() == batch_size {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            if sender.send(Ok(full)).await.is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = sender.send(Ok(batch)).await;
    }
}
