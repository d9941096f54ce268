//! A [`Snapshot`] of every stored row, so that a store moves to another
//! backend as it is (`haul store migrate`): jobs, job states, runs, shards
//! with their checkpoints, epochs, leases and counters, and events in their
//! order. Values are copied as stored — JSON text, millisecond times — so
//! that the target reads back identical records.

use sqlx::{Database, Pool};

use super::{Columns, Dialect};
use crate::store::Error;

/// How a column is stored and copied.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Flag,
}

/// A table, its columns in copy order and the order its rows are read in.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    order_by: &'static str,
}

/// Every table, parents before children. An event's id is not copied: the
/// target numbers the events again, in the same order.
const TABLES: &[Table] = {
    use Kind::*;
    &[
        Table {
            name: "jobs",
            columns: &[
                ("name", Text),
                ("spec", Text),
                ("spec_hash", Text),
                ("enabled", Flag),
                ("version", Integer),
                ("planned_through", Integer),
                ("created_at", Integer),
                ("updated_at", Integer),
            ],
            order_by: "name",
        },
        Table {
            name: "job_state",
            columns: &[("job", Text), ("state", Text), ("updated_at", Integer)],
            order_by: "job",
        },
        Table {
            name: "runs",
            columns: &[
                ("id", Text),
                ("job", Text),
                ("spec_hash", Text),
                ("mode", Text),
                ("state", Text),
                ("next_state", Text),
                ("message", Text),
                ("created_at", Integer),
                ("updated_at", Integer),
                ("trigger", Text),
                ("scheduled_for", Integer),
                ("priority", Integer),
                ("pool", Text),
                ("params", Text),
                ("attempt", Integer),
                ("started_at", Integer),
                ("finished_at", Integer),
            ],
            order_by: "created_at, id",
        },
        Table {
            name: "shards",
            columns: &[
                ("run_id", Text),
                ("shard_id", Text),
                ("position", Integer),
                ("spec", Text),
                ("state", Text),
                ("sequence", Integer),
                ("checkpoint", Text),
                ("counters", Text),
                ("epoch", Integer),
                ("owner", Text),
                ("lease_expires_at", Integer),
                ("error", Text),
                ("updated_at", Integer),
                ("split_requested", Flag),
            ],
            order_by: "run_id, position",
        },
        Table {
            name: "events",
            columns: &[("run_id", Text), ("shard_id", Text), ("at", Integer), ("kind", Text), ("reason", Text)],
            order_by: "id",
        },
    ]
};

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Text(Option<String>),
    Integer(Option<i64>),
    Flag(bool),
}

/// The rows of one table, each with its cells in the table's column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    pub table: &'static str,
    pub rows: Vec<Vec<Cell>>,
}

/// Every row of a store, table by table, parents before children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub tables: Vec<TableRows>,
}

fn column_list(table: &Table) -> String {
    table.columns.iter().map(|(column, _)| format!("\"{column}\"")).collect::<Vec<_>>().join(", ")
}

fn read_cell(row: &impl Columns, column: &str, kind: Kind) -> Result<Cell, Error> {
    Ok(match kind {
        Kind::Text => Cell::Text(row.optional_text(column)?),
        Kind::Integer => Cell::Integer(row.optional_integer(column)?),
        Kind::Flag => Cell::Flag(row.flag(column)?),
    })
}

async fn begin<D: Dialect>(pool: &Pool<D::Db>) -> Result<sqlx::Transaction<'static, D::Db>, Error> {
    Ok(match D::BEGIN {
        Some(statement) => pool.begin_with(statement).await?,
        None => pool.begin().await?,
    })
}

/// Reads every table of the store behind `pool` in one transaction, so that the rows agree.
pub(crate) async fn export<D: Dialect>(pool: &Pool<D::Db>) -> Result<Snapshot, Error>
where
    for<'c> &'c mut <D::Db as Database>::Connection: sqlx::Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: sqlx::IntoArguments<D::Db>,
    for<'q> &'q str: sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, D::Db>,
    i64: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    Option<i64>: for<'q> sqlx::Encode<'q, D::Db>,
    bool: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
{
    let mut tx = begin::<D>(pool).await?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let select = format!("SELECT {} FROM {} ORDER BY {}", column_list(table), table.name, table.order_by);
        let rows = sqlx::query(D::sql(&select)).fetch_all(&mut *tx).await?;
        let rows = rows
            .iter()
            .map(|row| {
                table.columns.iter().map(|(column, kind)| read_cell(row, column, *kind)).collect::<Result<_, _>>()
            })
            .collect::<Result<Vec<Vec<Cell>>, Error>>()?;
        tables.push(TableRows { table: table.name, rows });
    }
    tx.commit().await?;
    Ok(Snapshot { tables })
}

/// Writes `snapshot` into the store behind `pool` in one transaction, if it is empty.
pub(crate) async fn import<D: Dialect>(pool: &Pool<D::Db>, snapshot: &Snapshot) -> Result<(), Error>
where
    for<'c> &'c mut <D::Db as Database>::Connection: sqlx::Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: sqlx::IntoArguments<D::Db>,
    for<'q> &'q str: sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, D::Db>,
    i64: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
    Option<i64>: for<'q> sqlx::Encode<'q, D::Db>,
    bool: for<'q> sqlx::Encode<'q, D::Db> + sqlx::Type<D::Db>,
{
    let mut tx = begin::<D>(pool).await?;
    for table in TABLES {
        let count = sqlx::query(D::sql(&format!("SELECT COUNT(*) AS row_count FROM {}", table.name)))
            .fetch_one(&mut *tx)
            .await?;
        if count.integer("row_count")? > 0 {
            return Err(Error::NotEmpty { table: table.name.to_string() });
        }
    }
    for table in TABLES {
        let Some(rows) = snapshot.tables.iter().find(|rows| rows.table == table.name) else {
            continue;
        };
        let placeholders = vec!["?"; table.columns.len()].join(", ");
        let insert = D::sql(&format!("INSERT INTO {} ({}) VALUES ({placeholders})", table.name, column_list(table)));
        for row in &rows.rows {
            if row.len() != table.columns.len() {
                return Err(Error::Corrupt(format!("a {} row has {} cells", table.name, row.len())));
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.0.clone()));
            for cell in row {
                query = match cell {
                    Cell::Text(text) => query.bind(text.as_deref()),
                    Cell::Integer(integer) => query.bind(*integer),
                    Cell::Flag(flag) => query.bind(*flag),
                };
            }
            query.execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
