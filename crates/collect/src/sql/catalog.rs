//! What the source reads from: a table or a trusted user query, its columns
//! with their resolved types, and the table's primary key, discovered from the
//! catalog of each backend (pg_index, information_schema, pragma_table_info).

use anyhow::{Context, bail};

use super::connection::Database;
use super::decode::Column;
use super::dialect::{Dialect, Ident};
use super::statement::Statement;

/// The relation a source reads.
#[derive(Debug, Clone)]
pub enum Relation {
    Table(Ident),
    /// A user-written `SELECT`, passed through as trusted SQL.
    Query(String),
}

/// The alias of a user query wrapped as a subquery.
const QUERY_ALIAS: &str = "haul_query";

impl Relation {
    /// The relation as it appears after `FROM`.
    pub fn sql_from(&self, dialect: Dialect) -> String {
        match self {
            Relation::Table(table) => dialect.quote(table),
            // The line end keeps a trailing `-- comment` from swallowing the parenthesis.
            Relation::Query(query) => format!("({}\n) AS {QUERY_ALIAS}", query.trim().trim_end_matches(';')),
        }
    }

    /// `table x` or `query`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Relation::Table(table) => format!("table `{table}`"),
            Relation::Query(_) => "query".to_string(),
        }
    }
}

/// Every column of the relation, in order, with its resolved type.
pub async fn relation_columns(database: &Database, relation: &Relation) -> anyhow::Result<Vec<Column>> {
    let dialect = database.dialect();
    let sql = format!("SELECT * FROM {}", relation.sql_from(dialect));
    let described = database.describe(&sql).await.with_context(|| match relation {
        Relation::Table(table) => format!("table `{table}` does not exist or cannot be read"),
        Relation::Query(_) => "the `query` does not prepare".to_string(),
    })?;
    let declared = match (dialect, relation) {
        (Dialect::Sqlite, Relation::Table(table)) => sqlite_declared_types(database, table).await?,
        (Dialect::MySql, Relation::Table(table)) => mysql_declared_types(database, table).await?,
        _ => Vec::new(),
    };
    let columns = described
        .into_iter()
        .map(|(name, driver_type)| {
            let driver = dialect.column_type(&driver_type);
            let column_type = match declared.iter().find(|(column, _)| *column == name) {
                Some((_, declared)) => dialect.refine_column_type(driver, declared),
                None => driver,
            };
            Column { name, column_type }
        })
        .collect();
    Ok(columns)
}

/// SQLite's declared column types, which the driver reduces to storage classes.
async fn sqlite_declared_types(database: &Database, table: &Ident) -> anyhow::Result<Vec<(String, String)>> {
    let rows = catalog_strings(database, "SELECT name, type FROM pragma_table_info(?, ?)", table, 2).await?;
    Ok(rows.into_iter().map(|mut row| (row.remove(0), row.remove(0))).collect())
}

/// MySQL's declared column types, to tell text with a binary collation from
/// BLOBs, and MariaDB's JSON (a LONGTEXT with a `json_valid` check) from text.
async fn mysql_declared_types(database: &Database, table: &Ident) -> anyhow::Result<Vec<(String, String)>> {
    let columns = "SELECT CAST(column_name AS CHAR), CAST(UPPER(data_type) AS CHAR) FROM information_schema.columns \
                   WHERE table_name = ? AND table_schema = COALESCE(?, DATABASE())";
    let mut declared = catalog_strings(database, columns, table, 2).await?;
    // MySQL has no table name in CHECK_CONSTRAINTS; its JSON type is declared as such anyway.
    let json_checks = "SELECT CAST(check_clause AS CHAR) FROM information_schema.check_constraints \
                       WHERE table_name = ? AND constraint_schema = COALESCE(?, DATABASE())";
    let checks = catalog_strings(database, json_checks, table, 1).await.unwrap_or_default();
    for row in &mut declared {
        let json_check = format!("json_valid(`{}`)", row[0]);
        if checks.iter().flatten().any(|clause| clause.contains(&json_check)) {
            row[1] = "JSON".to_string();
        }
    }
    Ok(declared.into_iter().map(|mut row| (row.remove(0), row.remove(0))).collect())
}

/// The columns of `table`'s primary key, in key order; empty without one.
pub async fn primary_key(database: &Database, table: &Ident) -> anyhow::Result<Vec<String>> {
    let sql = match database.dialect() {
        Dialect::Postgres => {
            "SELECT CAST(a.attname AS TEXT) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = CAST(CAST($1 AS TEXT) AS regclass) AND i.indisprimary \
             ORDER BY array_position(i.indkey, a.attnum)"
        }
        Dialect::MySql => {
            "SELECT CAST(column_name AS CHAR) FROM information_schema.key_column_usage \
             WHERE table_name = ? AND table_schema = COALESCE(?, DATABASE()) AND constraint_name = 'PRIMARY' \
             ORDER BY ordinal_position"
        }
        Dialect::Sqlite => "SELECT name FROM pragma_table_info(?, ?) WHERE pk > 0 ORDER BY pk",
    };
    let rows = catalog_strings(database, sql, table, 1).await?;
    Ok(rows.into_iter().flatten().collect())
}

/// MySQL's unique indexes of `table`, each with its columns in index order;
/// the primary key is the index named `PRIMARY`.
pub async fn mysql_unique_indexes(database: &Database, table: &Ident) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let sql = "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.statistics \
               WHERE table_name = ? AND table_schema = COALESCE(?, DATABASE()) AND non_unique = 0 \
               ORDER BY index_name, seq_in_index";
    let mut indexes: Vec<(String, Vec<String>)> = Vec::new();
    for row in catalog_strings(database, sql, table, 2).await? {
        let [index, column] = <[String; 2]>::try_from(row).map_err(|row| anyhow::anyhow!("unexpected row {row:?}"))?;
        match indexes.last_mut() {
            Some((name, columns)) if *name == index => columns.push(column),
            _ => indexes.push((index, vec![column])),
        }
    }
    Ok(indexes)
}

/// Runs a catalog query whose parameters are the table (quoted for
/// PostgreSQL's regclass; name then schema elsewhere) and whose result
/// columns are `width` strings.
async fn catalog_strings(
    database: &Database,
    sql: &str,
    table: &Ident,
    width: usize,
) -> anyhow::Result<Vec<Vec<String>>> {
    let dialect = database.dialect();
    let (schema, name) = table.schema_and_name();
    let params = match dialect {
        Dialect::Postgres => vec![dialect.quote(table).into()],
        Dialect::MySql => vec![name.into(), schema.map(Into::into).unwrap_or(haul_collect_core::Value::Null)],
        Dialect::Sqlite => vec![name.into(), schema.unwrap_or("main").into()],
    };
    let statement = Statement::with_params(dialect, sql, params);
    let text = dialect.column_type(dialect.text_type_name());
    let columns: Vec<Column> =
        (0..width).map(|i| Column { name: format!("c{i}"), column_type: text.clone() }).collect();
    let rows =
        database.fetch_all(&statement, &columns).await.with_context(|| format!("reading the catalog for `{table}`"))?;
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|value| match value {
                    haul_collect_core::Value::String(text) => Ok(text),
                    other => bail!("unexpected catalog value {other:?}"),
                })
                .collect()
        })
        .collect()
}

/// How the source's rows are split and resumed.
#[derive(Debug, Clone)]
pub enum SplitKey {
    /// A column whose unique values order the rows.
    Column(Column),
    /// No usable key, and why.
    Missing(String),
}

/// The source's relation resolved against the database, once per source.
#[derive(Debug, Clone)]
pub struct Shape {
    pub relation: Relation,
    /// The trusted user `where` predicate.
    pub filter: Option<String>,
    /// Every column of the relation.
    pub columns: Vec<Column>,
    /// The columns the source yields, in order.
    pub selected: Vec<Column>,
    pub split_key: SplitKey,
    /// Whether the split key was named by the user (it may then hold NULLs).
    pub split_key_given: bool,
    /// The table's primary key columns: empty for a query or a table without one.
    pub primary_key: Vec<Column>,
}

impl Shape {
    /// Resolves the relation's columns, the selection and the split key.
    pub async fn resolve(
        database: &Database,
        relation: Relation,
        filter: Option<String>,
        selection: Option<&[Ident]>,
        split_key: Option<&Ident>,
    ) -> anyhow::Result<Shape> {
        let split_key_given = split_key.is_some();
        let columns = relation_columns(database, &relation).await?;
        let find = |name: &Ident| {
            columns.iter().find(|column| column.name == name.as_str()).cloned().with_context(|| {
                let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
                format!("column `{name}` not found in the {}; it has {}", relation.describe(), names.join(", "))
            })
        };
        let selected = match selection {
            Some(names) => names.iter().map(find).collect::<anyhow::Result<_>>()?,
            None => columns.clone(),
        };
        let primary_key_names = match &relation {
            Relation::Table(table) => primary_key(database, table).await?,
            Relation::Query(_) => Vec::new(),
        };
        let primary_key =
            primary_key_names.iter().map(|name| find(&Ident::column(name)?)).collect::<anyhow::Result<Vec<_>>>()?;
        let split_key = match (split_key, &relation, primary_key.as_slice()) {
            (Some(name), _, _) => SplitKey::Column(find(name)?),
            (None, Relation::Query(_), _) => SplitKey::Missing("a query has no primary key".into()),
            (None, Relation::Table(_), [single]) => SplitKey::Column(single.clone()),
            (None, Relation::Table(table), []) => SplitKey::Missing(format!("table `{table}` has no primary key")),
            (None, Relation::Table(table), _) => SplitKey::Missing(format!(
                "table `{table}` has a composite primary key ({})",
                primary_key_names.join(", ")
            )),
        };
        Ok(Shape { relation, filter, columns, selected, split_key, split_key_given, primary_key })
    }

    /// A column of the relation by name, for names read back from descriptors.
    pub fn column(&self, name: &str) -> anyhow::Result<&Column> {
        Ident::column(name)?;
        self.columns
            .iter()
            .find(|column| column.name == name)
            .with_context(|| format!("column `{name}` not found in the {}", self.relation.describe()))
    }
}
