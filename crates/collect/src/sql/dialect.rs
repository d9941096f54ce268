//! What differs between PostgreSQL, MySQL/MariaDB and SQLite in the SQL that
//! haul writes: identifier validation and quoting, bound-parameter
//! placeholders, how a column's declared type maps to a haul [`DataType`] and
//! how it is read off the wire, and which column type a sink creates.

use anyhow::{bail, ensure};
use haul_collect_core::DataType;

/// The SQL flavour of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

/// A validated identifier: a column, or a table with at most one `schema.` prefix.
/// Only letters, digits, `_` and `$` are allowed in each part, so quoting never
/// needs escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

impl Ident {
    /// A column name: no dot.
    pub fn column(text: &str) -> anyhow::Result<Ident> {
        ensure!(!text.contains('.'), "invalid column name `{text}`: a column name has no dot");
        Self::parts(text, "column")
    }

    /// A table name, optionally qualified by one schema: `schema.table`.
    pub fn table(text: &str) -> anyhow::Result<Ident> {
        ensure!(text.matches('.').count() <= 1, "invalid table name `{text}`: at most one dot (schema.table)");
        Self::parts(text, "table")
    }

    fn parts(text: &str, what: &str) -> anyhow::Result<Ident> {
        for part in text.split('.') {
            ensure!(!part.is_empty(), "invalid {what} name `{text}`: empty name");
            if let Some(bad) = part.chars().find(|c| !(c.is_alphanumeric() || *c == '_' || *c == '$')) {
                bail!("invalid {what} name `{text}`: `{bad}` is not allowed (only letters, digits, `_`, `$`)");
            }
        }
        Ok(Ident(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The schema and the name of a table identifier.
    pub fn schema_and_name(&self) -> (Option<&str>, &str) {
        match self.0.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, &self.0),
        }
    }
}

impl std::fmt::Display for Ident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a column's values travel from the driver: the Rust type to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Bool,
    I16,
    I32,
    I64,
    U64,
    F32,
    F64,
    Text,
    Bytes,
    Date,
    Timestamp,
    TimestampTz,
    Json,
}

/// A result column's type, resolved once per query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub data_type: DataType,
    pub wire: Wire,
    /// The SELECT list casts the column to text (PostgreSQL NUMERIC, UUID, and
    /// types without a direct mapping).
    pub cast_to_text: bool,
    /// The database's name of the type, upper case, for messages and casts.
    pub type_name: String,
}

impl ColumnType {
    fn new(data_type: DataType, wire: Wire, type_name: &str) -> Self {
        ColumnType { data_type, wire, cast_to_text: false, type_name: type_name.to_ascii_uppercase() }
    }

    fn text_cast(data_type: DataType, type_name: &str) -> Self {
        ColumnType { cast_to_text: true, ..Self::new(data_type, Wire::Text, type_name) }
    }
}

/// MySQL's character types, as `information_schema.columns.data_type` names them.
const MYSQL_TEXT_TYPES: [&str; 8] = ["CHAR", "VARCHAR", "TINYTEXT", "TEXT", "MEDIUMTEXT", "LONGTEXT", "ENUM", "SET"];

/// Bound-parameter limits per statement.
const POSTGRES_MAX_PARAMS: usize = 65_535;
const MYSQL_MAX_PARAMS: usize = 65_535;
const SQLITE_MAX_PARAMS: usize = 32_766;

impl Dialect {
    /// The driver name used in descriptions (`postgres`, `mysql`, `sqlite`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
        }
    }

    /// An identifier quoted for this dialect, each part separately.
    pub fn quote(self, ident: &Ident) -> String {
        let quote = match self {
            Dialect::MySql => '`',
            Dialect::Postgres | Dialect::Sqlite => '"',
        };
        ident.as_str().split('.').map(|part| format!("{quote}{part}{quote}")).collect::<Vec<_>>().join(".")
    }

    /// The placeholder of the `number`th bound parameter (from 1).
    pub fn placeholder(self, number: usize) -> String {
        match self {
            Dialect::Postgres => format!("${number}"),
            Dialect::MySql | Dialect::Sqlite => "?".to_string(),
        }
    }

    /// The name of the text type, as the driver reports it.
    pub fn text_type_name(self) -> &'static str {
        match self {
            Dialect::Postgres | Dialect::Sqlite => "TEXT",
            Dialect::MySql => "VARCHAR",
        }
    }

    /// The name of the 64-bit integer type, as the driver reports it.
    pub fn bigint_type_name(self) -> &'static str {
        match self {
            Dialect::Postgres => "INT8",
            Dialect::MySql => "BIGINT",
            Dialect::Sqlite => "INTEGER",
        }
    }

    pub fn max_bind_params(self) -> usize {
        match self {
            Dialect::Postgres => POSTGRES_MAX_PARAMS,
            Dialect::MySql => MYSQL_MAX_PARAMS,
            Dialect::Sqlite => SQLITE_MAX_PARAMS,
        }
    }

    /// An expression in a SELECT list reading `quoted_column` the way `column` decodes it.
    pub fn select_expr(self, quoted_column: &str, column: &ColumnType) -> String {
        if !column.cast_to_text {
            return quoted_column.to_string();
        }
        match self {
            Dialect::Postgres | Dialect::Sqlite => format!("CAST({quoted_column} AS TEXT)"),
            Dialect::MySql => format!("CAST({quoted_column} AS CHAR)"),
        }
    }

    /// The expression that orders and compares `operand` (a quoted column or a
    /// placeholder) as a value of `column`: SQLite stores times as text in
    /// several forms ("2024-01-02 10:00:00", "2024-01-02T10:00:00.5", unix
    /// seconds) that only `julianday` orders correctly, to the millisecond.
    pub fn comparable(self, operand: &str, column: &ColumnType) -> String {
        match (self, column.data_type) {
            (Dialect::Sqlite, DataType::Date | DataType::Timestamp | DataType::TimestampTz) => {
                format!("julianday({operand}, 'auto')")
            }
            _ => operand.to_string(),
        }
    }

    /// Resolves a column's type from the name the driver (or SQLite's declared
    /// type) gives it.
    pub fn column_type(self, type_name: &str) -> ColumnType {
        let upper = type_name.trim().to_ascii_uppercase();
        match self {
            Dialect::Postgres => postgres_column_type(&upper),
            Dialect::MySql => mysql_column_type(&upper),
            Dialect::Sqlite => sqlite_column_type(&upper),
        }
    }

    /// Corrects the driver's view of a column with its declared type from the
    /// catalog: SQLite's declared names carry the logical type; MySQL reports
    /// text with a binary collation as BLOB and MariaDB's JSON as LONGTEXT.
    pub fn refine_column_type(self, driver: ColumnType, declared: &str) -> ColumnType {
        let declared = declared.trim().to_ascii_uppercase();
        match self {
            Dialect::Sqlite => sqlite_column_type(&declared),
            Dialect::MySql if declared == "JSON" => ColumnType::new(DataType::Json, Wire::Json, &declared),
            Dialect::MySql if driver.wire == Wire::Bytes && MYSQL_TEXT_TYPES.contains(&declared.as_str()) => {
                ColumnType::new(DataType::String, Wire::Text, &declared)
            }
            Dialect::MySql | Dialect::Postgres => driver,
        }
    }

    /// The column type a sink creates for `data_type`; `is_key` when the column
    /// is part of the primary key (MySQL cannot index TEXT without a length).
    pub fn sql_type(self, data_type: DataType, is_key: bool) -> &'static str {
        use DataType as T;
        match (self, data_type) {
            (_, T::Int) => "BIGINT",
            (Dialect::Postgres, T::Float) => "DOUBLE PRECISION",
            (Dialect::MySql, T::Float) => "DOUBLE",
            (Dialect::Sqlite, T::Float) => "REAL",
            (Dialect::Postgres, T::Decimal) => "NUMERIC",
            (Dialect::MySql, T::Decimal) => "DECIMAL(65,30)",
            (Dialect::Sqlite, T::Decimal) => "TEXT",
            (Dialect::MySql, T::String) if is_key => "VARCHAR(255)",
            (_, T::String) => "TEXT",
            (Dialect::Postgres, T::Bytes) => "BYTEA",
            (Dialect::MySql, T::Bytes) if is_key => "VARBINARY(255)",
            (Dialect::MySql, T::Bytes) => "LONGBLOB",
            (Dialect::Sqlite, T::Bytes) => "BLOB",
            (_, T::Bool) => "BOOLEAN",
            (_, T::Date) => "DATE",
            (Dialect::Postgres, T::Timestamp) => "TIMESTAMP",
            (Dialect::MySql, T::Timestamp | T::TimestampTz) => "DATETIME(6)",
            (Dialect::Sqlite, T::Timestamp | T::TimestampTz | T::Json) => "TEXT",
            (Dialect::Postgres, T::TimestampTz) => "TIMESTAMPTZ",
            (Dialect::Postgres, T::Json) => "JSONB",
            (Dialect::MySql, T::Json) => "JSON",
        }
    }
}

fn postgres_column_type(name: &str) -> ColumnType {
    use DataType as T;
    let (data_type, wire) = match name {
        "BOOL" => (T::Bool, Wire::Bool),
        "INT2" => (T::Int, Wire::I16),
        "INT4" => (T::Int, Wire::I32),
        "INT8" => (T::Int, Wire::I64),
        "FLOAT4" => (T::Float, Wire::F32),
        "FLOAT8" => (T::Float, Wire::F64),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => (T::String, Wire::Text),
        "BYTEA" => (T::Bytes, Wire::Bytes),
        "DATE" => (T::Date, Wire::Date),
        "TIMESTAMP" => (T::Timestamp, Wire::Timestamp),
        "TIMESTAMPTZ" => (T::TimestampTz, Wire::TimestampTz),
        "JSON" | "JSONB" => (T::Json, Wire::Json),
        "NUMERIC" => return ColumnType::text_cast(T::Decimal, name),
        _ => return ColumnType::text_cast(T::String, name),
    };
    ColumnType::new(data_type, wire, name)
}

fn mysql_column_type(name: &str) -> ColumnType {
    use DataType as T;
    let (data_type, wire) = match name {
        "BOOLEAN" => (T::Bool, Wire::Bool),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => (T::Int, Wire::I64),
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED" | "BIGINT UNSIGNED" => {
            (T::Int, Wire::U64)
        }
        "FLOAT" => (T::Float, Wire::F32),
        "DOUBLE" => (T::Float, Wire::F64),
        "DECIMAL" => (T::Decimal, Wire::Text),
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            (T::String, Wire::Text)
        }
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => (T::Bytes, Wire::Bytes),
        "DATE" => (T::Date, Wire::Date),
        "DATETIME" => (T::Timestamp, Wire::Timestamp),
        "TIMESTAMP" => (T::TimestampTz, Wire::TimestampTz),
        "JSON" => (T::Json, Wire::Json),
        _ => return ColumnType::text_cast(T::String, name),
    };
    ColumnType::new(data_type, wire, name)
}

/// SQLite types are declared names with affinity rules; values are decoded by
/// their storage class at run time, so only the logical type matters here.
fn sqlite_column_type(name: &str) -> ColumnType {
    use DataType as T;
    let data_type = match name {
        "BOOL" | "BOOLEAN" => T::Bool,
        "DATE" => T::Date,
        "DATETIME" | "TIMESTAMP" => T::Timestamp,
        "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => T::TimestampTz,
        "JSON" | "JSONB" => T::Json,
        _ if name.contains("INT") => T::Int,
        _ if name.contains("CHAR") || name.contains("CLOB") || name.contains("TEXT") => T::String,
        _ if name.contains("BLOB") => T::Bytes,
        _ if name.contains("REAL") || name.contains("FLOA") || name.contains("DOUB") => T::Float,
        _ if name.starts_with("NUMERIC") || name.starts_with("DECIMAL") => T::Decimal,
        _ => T::String,
    };
    ColumnType::new(data_type, Wire::Text, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        assert!(Ident::column("user_id").is_ok());
        assert!(Ident::column("prix$2").is_ok());
        assert!(Ident::table("public.users").is_ok());
        for bad in ["users; drop table x", "a\"b", "a`b", "", "a.b.c", "a..b", "x y", "a-b", "t.", ".t"] {
            assert!(Ident::table(bad).is_err(), "{bad}");
        }
        assert!(Ident::column("public.users").is_err());
        let error = Ident::table("users; drop table x").unwrap_err().to_string();
        assert!(error.contains("`;` is not allowed"), "{error}");
    }

    #[test]
    fn quoting_per_dialect() {
        let table = Ident::table("public.users").unwrap();
        assert_eq!(Dialect::Postgres.quote(&table), "\"public\".\"users\"");
        assert_eq!(Dialect::Sqlite.quote(&table), "\"public\".\"users\"");
        assert_eq!(Dialect::MySql.quote(&table), "`public`.`users`");
        assert_eq!(Dialect::Postgres.placeholder(3), "$3");
        assert_eq!(Dialect::MySql.placeholder(3), "?");
    }

    #[test]
    fn sqlite_times_compare_by_julian_day() {
        let time = Dialect::Sqlite.column_type("DATETIME");
        assert_eq!(Dialect::Sqlite.comparable("?", &time), "julianday(?, 'auto')");
        assert_eq!(Dialect::Sqlite.comparable("\"id\"", &Dialect::Sqlite.column_type("INTEGER")), "\"id\"");
        assert_eq!(Dialect::Postgres.comparable("\"t\"", &Dialect::Postgres.column_type("TIMESTAMP")), "\"t\"");
    }

    #[test]
    fn types_resolve() {
        assert_eq!(Dialect::Postgres.column_type("numeric").data_type, DataType::Decimal);
        assert!(Dialect::Postgres.column_type("UUID").cast_to_text);
        assert_eq!(
            Dialect::Postgres.select_expr("\"u\"", &Dialect::Postgres.column_type("UUID")),
            "CAST(\"u\" AS TEXT)"
        );
        assert_eq!(Dialect::MySql.column_type("BOOLEAN").data_type, DataType::Bool);
        assert_eq!(Dialect::MySql.column_type("TIMESTAMP").data_type, DataType::TimestampTz);
        assert_eq!(Dialect::Sqlite.column_type("VARCHAR(20)").data_type, DataType::String);
        assert_eq!(Dialect::Sqlite.column_type("decimal(12,2)").data_type, DataType::Decimal);
        assert_eq!(Dialect::Sqlite.column_type("BIGINT").data_type, DataType::Int);
    }
}
