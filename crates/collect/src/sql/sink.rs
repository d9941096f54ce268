//! The `sql` sink: writes batches into a PostgreSQL, MySQL/MariaDB or SQLite
//! table with bulk statements, inside a transaction that the runtime's commit
//! makes durable. `upsert` replaces rows by key and is idempotent; `insert`
//! appends and is at-least-once. A missing table is created from the first
//! batch's schema.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use anyhow::{Context, bail, ensure};
use async_trait::async_trait;
use haul_collect_core::plugin::WriterContext;
use haul_collect_core::registry::{OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Delivery, Schema, ShardWriter, Sink};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::catalog::{Relation, mysql_unique_indexes, primary_key, relation_columns};
use super::connection::{Access, ConnectionUrl, Database};
use super::dialect::{Dialect, Ident};
use super::statement::Statement;
use super::write::{OnConflict, SinkTransaction};

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Append rows; a rewrite after a crash appends them again.
    #[default]
    Insert,
    /// Insert or replace by key; rewrites are harmless.
    Upsert,
}

/// The options of `[sink] type = "sql"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSinkConfig {
    pub url: SecretString,
    pub table: String,
    #[serde(default)]
    pub mode: WriteMode,
    pub key: Option<Vec<String>>,
    #[serde(default = "create_table_by_default")]
    pub create_table: bool,
}

fn create_table_by_default() -> bool {
    true
}

/// The factory registered as `sql`.
pub struct SqlSinkPlugin;

impl Plugin for SqlSinkPlugin {
    type Config = SqlSinkConfig;
    type Output = dyn Sink;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "sql",
            role: Role::Sink,
            description: "writes into a PostgreSQL, MySQL/MariaDB or SQLite table with COPY or multi-row inserts",
            options: vec![
                option(
                    "url",
                    "string",
                    None,
                    "postgres://, mysql://, mariadb:// or sqlite:// url; ${env:NAME} is replaced",
                ),
                option("table", "string", None, "the target table, optionally schema.table"),
                option(
                    "mode",
                    "string",
                    Some("insert"),
                    "insert (append, at-least-once) or upsert (by key, idempotent)",
                ),
                option(
                    "key",
                    "array",
                    Some("primary key"),
                    "the key columns of upserts and of a created table; on MySQL/MariaDB it must be the table's \
                     primary key (or its only unique key), since an upsert replaces the row matching any unique key",
                ),
                option("create_table", "boolean", Some("true"), "create a missing table from the first batch's schema"),
            ],
        }
    }

    fn build(&self, config: SqlSinkConfig) -> anyhow::Result<Arc<dyn Sink>> {
        Ok(Arc::new(SqlSink::new(config)?))
    }
}

/// Tables created by this process, so that shards starting together create each one once.
static CREATED_TABLES: LazyLock<Mutex<HashMap<String, Arc<OnceCell<()>>>>> = LazyLock::new(Default::default);

/// A configured `sql` sink; it connects on first use.
pub struct SqlSink {
    shared: Arc<SinkShared>,
}

struct SinkShared {
    url: ConnectionUrl,
    table: Ident,
    mode: WriteMode,
    key: Option<Vec<Ident>>,
    create_table: bool,
    database: OnceCell<Database>,
    /// The upsert key, resolved at the first write.
    upsert_key: OnceCell<Vec<Ident>>,
}

impl SqlSink {
    pub fn new(config: SqlSinkConfig) -> anyhow::Result<Self> {
        let key = match config.key {
            Some(names) => {
                ensure!(!names.is_empty(), "`key` is empty; leave it out to use the table's primary key");
                Some(names.iter().map(|name| Ident::column(name)).collect::<anyhow::Result<_>>()?)
            }
            None => None,
        };
        Ok(SqlSink {
            shared: Arc::new(SinkShared {
                url: ConnectionUrl::parse(config.url.expose_secret())?,
                table: Ident::table(&config.table)?,
                mode: config.mode,
                key,
                create_table: config.create_table,
                database: OnceCell::new(),
                upsert_key: OnceCell::new(),
            }),
        })
    }
}

impl SinkShared {
    async fn database(&self) -> anyhow::Result<&Database> {
        self.database.get_or_try_init(|| Database::connect(&self.url, Access::Write)).await
    }

    fn describe(&self) -> String {
        format!("{} table {}", self.url.description(), self.table)
    }

    /// Creates the table from `schema` if it is missing, once per process.
    async fn ensure_table(&self, schema: &Schema) -> anyhow::Result<()> {
        if !self.create_table {
            return Ok(());
        }
        let guard = {
            let mut created = CREATED_TABLES.lock().expect("table registry lock");
            created.entry(self.describe()).or_default().clone()
        };
        guard.get_or_try_init(|| self.create_table_from(schema)).await?;
        Ok(())
    }

    async fn create_table_from(&self, schema: &Schema) -> anyhow::Result<()> {
        let database = self.database().await?;
        let dialect = database.dialect();
        let key: Vec<&str> = self.key.iter().flatten().map(Ident::as_str).collect();
        if let Some(missing) = key.iter().find(|k| schema.index_of(k).is_none()) {
            bail!("key column `{missing}` is not in the records written to {}", self.describe());
        }
        let mut definitions = Vec::with_capacity(schema.fields.len() + 1);
        for field in &schema.fields {
            let is_key = key.contains(&field.name.as_str());
            let sql_type = dialect.sql_type(field.data_type, is_key);
            let not_null = if is_key { " NOT NULL" } else { "" };
            definitions.push(format!("{} {sql_type}{not_null}", dialect.quote(&Ident::column(&field.name)?)));
        }
        if !key.is_empty() {
            let quoted: Vec<String> = self.key.iter().flatten().map(|k| dialect.quote(k)).collect();
            definitions.push(format!("PRIMARY KEY ({})", quoted.join(", ")));
        }
        let mut statement = Statement::new(dialect);
        statement.push(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            dialect.quote(&self.table),
            definitions.join(", ")
        ));
        database.execute(&statement).await.with_context(|| format!("creating {}", self.describe()))?;
        Ok(())
    }

    /// The upsert key: the `key` option, or the table's primary key.
    async fn upsert_key(&self) -> anyhow::Result<&[Ident]> {
        let key = self
            .upsert_key
            .get_or_try_init(|| async {
                let database = self.database().await?;
                if let Some(key) = &self.key {
                    if database.dialect() == Dialect::MySql {
                        self.check_mysql_key(database, key).await?;
                    }
                    return Ok(key.clone());
                }
                let key = primary_key(database, &self.table).await?;
                ensure!(!key.is_empty(), "upsert into {} needs `key`: the table has no primary key", self.describe());
                key.iter().map(|k| Ident::column(k)).collect()
            })
            .await?;
        Ok(key)
    }
}

impl SinkShared {
    /// MySQL's `ON DUPLICATE KEY UPDATE` fires on a conflict with any unique
    /// index, so the key must be the primary key (or the only unique key).
    async fn check_mysql_key(&self, database: &Database, key: &[Ident]) -> anyhow::Result<()> {
        let indexes = mysql_unique_indexes(database, &self.table).await?;
        let wanted: BTreeSet<&str> = key.iter().map(Ident::as_str).collect();
        let primary = indexes.iter().find(|(name, _)| name == "PRIMARY").or(match indexes.as_slice() {
            [only] => Some(only),
            _ => None,
        });
        match primary {
            Some((_, columns)) if columns.iter().map(String::as_str).collect::<BTreeSet<_>>() == wanted => Ok(()),
            Some((name, columns)) => bail!(
                "upsert `key` ({}) of {} is not its {} ({}): MySQL replaces the row matching any unique key",
                key.iter().map(Ident::as_str).collect::<Vec<_>>().join(", "),
                self.describe(),
                if name == "PRIMARY" { "primary key".to_string() } else { format!("unique key `{name}`") },
                columns.join(", ")
            ),
            None => bail!(
                "upsert into {} needs the table's primary key as `key`: it has no primary key and {} unique keys",
                self.describe(),
                indexes.len()
            ),
        }
    }
}

#[async_trait]
impl Sink for SqlSink {
    async fn check(&self) -> anyhow::Result<()> {
        let shared = &self.shared;
        let database = shared.database().await?;
        let exists = relation_columns(database, &Relation::Table(shared.table.clone())).await;
        match (exists, shared.create_table) {
            (Ok(_), _) if shared.mode == WriteMode::Upsert => shared.upsert_key().await.map(drop),
            (Ok(_), _) => Ok(()),
            (Err(_), true) if shared.mode == WriteMode::Upsert && shared.key.is_none() => {
                bail!("upsert into the missing {} needs `key` to create it", shared.describe())
            }
            (Err(_), true) => Ok(()),
            (Err(error), false) => Err(error.context("the table is missing and `create_table` is false")),
        }
    }

    fn delivery(&self) -> Delivery {
        match self.shared.mode {
            WriteMode::Upsert => Delivery::Idempotent,
            WriteMode::Insert => Delivery::AppendOnly,
        }
    }

    fn describe_output(&self) -> String {
        self.shared.describe()
    }

    async fn open(&self, context: &WriterContext) -> anyhow::Result<Box<dyn ShardWriter>> {
        self.shared.database().await?;
        Ok(Box::new(SqlShardWriter { shared: self.shared.clone(), shard: context.shard_id.clone(), transaction: None }))
    }
}

/// Writes one shard; a transaction spans the writes between two commits.
struct SqlShardWriter {
    shared: Arc<SinkShared>,
    shard: String,
    transaction: Option<SinkTransaction>,
}

impl SqlShardWriter {
    async fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        shared.ensure_table(&batch.schema).await?;
        let on_conflict = match shared.mode {
            WriteMode::Insert => OnConflict::Fail,
            WriteMode::Upsert => OnConflict::Update { key: shared.upsert_key().await? },
        };
        let transaction = match &mut self.transaction {
            Some(transaction) => transaction,
            None => self.transaction.insert(SinkTransaction::begin(shared.database().await?).await?),
        };
        transaction.write(&shared.table, batch, on_conflict).await
    }
}

#[async_trait]
impl ShardWriter for SqlShardWriter {
    async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write_batch(batch)
            .await
            .with_context(|| format!("writing shard {} to {}", self.shard, self.shared.describe()))
    }

    async fn commit(&mut self, sequence: u64) -> anyhow::Result<()> {
        if let Some(transaction) = self.transaction.take() {
            transaction
                .commit()
                .await
                .with_context(|| format!("commit {sequence} of shard {} to {}", self.shard, self.shared.describe()))?;
        }
        Ok(())
    }

    async fn abort(&mut self) -> anyhow::Result<()> {
        if let Some(transaction) = self.transaction.take() {
            transaction.rollback().await.with_context(|| format!("aborting shard {}", self.shard))?;
        }
        Ok(())
    }
}
