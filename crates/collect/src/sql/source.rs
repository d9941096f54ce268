//! The `sql` source: reads a table or a query from PostgreSQL, MySQL/MariaDB
//! or SQLite, split by a unique key into half-open key ranges read in
//! parallel, each resumable after the last key it delivered. A query must
//! name its `split_key`: without one its rows have no order to resume in.
//!
//! A value that cannot be read as its column's type (text in an SQLite
//! INTEGER column, a boolean written "maybe") rejects its row to the dead
//! letters, with the row's key as its position.
//!
//! The `where` predicate and the `query` are passed to the database as
//! written: they are trusted SQL from the job's author, like DataX's `where`
//! and `querySql`. Every other name is validated and quoted, and every value
//! is a bound parameter.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use async_trait::async_trait;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Checkpoint, Plan, PlanContext, ShardReader, ShardSpec, Source, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::catalog::{Relation, Shape, SplitKey};
use super::connection::{Access, ConnectionUrl, Database};
use super::decode::Column;
use super::descriptor::{Conditions, ShardDescriptor};
use super::dialect::Ident;
use super::plan::MAX_SHARDS;
use super::planner::{SplitMethod, plan, single_value};
use super::reader::SqlShardReader;
use super::split::split_shard;
use super::statement::Statement;

/// Shards planned per unit of parallelism when `shards` is not set.
const SHARDS_PER_SLOT: usize = 4;

/// The options of `[source] type = "sql"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSourceConfig {
    pub url: SecretString,
    pub table: Option<String>,
    pub query: Option<String>,
    pub columns: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub split_key: Option<String>,
    #[serde(default)]
    pub split: SplitMethod,
    pub shards: Option<usize>,
}

/// The factory registered as `sql`.
pub struct SqlSourcePlugin;

impl Plugin for SqlSourcePlugin {
    type Config = SqlSourceConfig;
    type Output = dyn Source;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "sql",
            role: Role::Source,
            description: "reads a table or query from PostgreSQL, MySQL/MariaDB or SQLite, split by a unique key; \
                          incremental runs read rows whose cursor is above the last run's mark minus the lookback: \
                          rows committed late below it need a lookback (and an upsert sink), rows with a NULL \
                          cursor are never read",
            options: vec![
                option(
                    "url",
                    "string",
                    None,
                    "postgres://, mysql://, mariadb:// or sqlite:// url; ${env:NAME} is replaced",
                ),
                option("table", "string", None, "the table to read, optionally schema.table (or use `query`)"),
                option("query", "string", None, "a trusted SELECT to read instead of a table; needs `split_key`"),
                option("columns", "array", Some("all"), "the columns to read"),
                option("where", "string", None, "a trusted SQL predicate that filters the rows"),
                option(
                    "split_key",
                    "string",
                    Some("primary key"),
                    "a unique column that orders, splits and resumes the read; required with `query`; \
                     its NULL rows, if any, are read in primary key order (a table without one is refused); \
                     SQLite times compare by julianday, to the millisecond",
                ),
                option("split", "string", Some("auto"), "auto, even (integer keys) or quantile"),
                option("shards", "integer", Some("4 * parallelism"), "how many shards to plan, 1 to 100000"),
            ],
        }
    }

    fn build(&self, config: SqlSourceConfig) -> anyhow::Result<Arc<dyn Source>> {
        Ok(Arc::new(SqlSource::new(config)?))
    }
}

/// A configured `sql` source; it connects on first use.
pub struct SqlSource {
    url: ConnectionUrl,
    relation: Relation,
    filter: Option<String>,
    columns: Option<Vec<Ident>>,
    split_key: Option<Ident>,
    split: SplitMethod,
    shards: Option<usize>,
    database: OnceCell<Database>,
    shape: OnceCell<Arc<Shape>>,
}

impl SqlSource {
    pub fn new(config: SqlSourceConfig) -> anyhow::Result<Self> {
        let relation = match (config.table, config.query) {
            (Some(table), None) => Relation::Table(Ident::table(&table)?),
            (None, Some(query)) => {
                ensure!(!query.trim().is_empty(), "the sql source's `query` is empty");
                if config.split_key.is_none() {
                    return Err(OptionError {
                        path: vec!["query".into()],
                        message: "a `query` needs `split_key`: a unique, non-null column of its result that orders \
                                  the rows, so that shards can be split and resumed"
                            .into(),
                    }
                    .into());
                }
                Relation::Query(query)
            }
            (Some(_), Some(_)) => bail!("the sql source takes either `table` or `query`, not both"),
            (None, None) => bail!("the sql source needs `table` or `query`"),
        };
        let columns = match config.columns {
            Some(names) => {
                ensure!(!names.is_empty(), "`columns` is empty; leave it out to read every column");
                Some(names.iter().map(|name| Ident::column(name)).collect::<anyhow::Result<_>>()?)
            }
            None => None,
        };
        if let Some(shards) = config.shards
            && !(1..=MAX_SHARDS).contains(&shards)
        {
            return Err(OptionError {
                path: vec!["shards".into()],
                message: format!("`shards` must be between 1 and {MAX_SHARDS}, not {shards}"),
            }
            .into());
        }
        Ok(SqlSource {
            url: ConnectionUrl::parse(config.url.expose_secret())?,
            relation,
            filter: config.filter.filter(|filter| !filter.trim().is_empty()),
            columns,
            split_key: config.split_key.as_deref().map(Ident::column).transpose()?,
            split: config.split,
            shards: config.shards,
            database: OnceCell::new(),
            shape: OnceCell::new(),
        })
    }

    async fn database(&self) -> anyhow::Result<&Database> {
        self.database.get_or_try_init(|| Database::connect(&self.url, Access::Read)).await
    }

    async fn shape(&self) -> anyhow::Result<&Arc<Shape>> {
        let database = self.database().await?;
        self.shape
            .get_or_try_init(|| async {
                let shape = Shape::resolve(
                    database,
                    self.relation.clone(),
                    self.filter.clone(),
                    self.columns.as_deref(),
                    self.split_key.as_ref(),
                )
                .await
                .with_context(|| format!("reading {} at {}", self.relation.describe(), self.url.description()))?;
                anyhow::Ok(Arc::new(shape))
            })
            .await
    }
}

#[async_trait]
impl Source for SqlSource {
    fn endpoint(&self) -> Option<String> {
        self.url.endpoint()
    }

    async fn check(&self) -> anyhow::Result<()> {
        let shape = self.shape().await?;
        if let SplitKey::Missing(reason) = &shape.split_key {
            bail!("{reason}: set `split_key` to a unique, non-null column");
        }
        Ok(())
    }

    async fn plan(&self, context: &PlanContext) -> anyhow::Result<Plan> {
        let shape = self.shape().await?;
        let shards = self.shards.unwrap_or(SHARDS_PER_SLOT.saturating_mul(context.parallelism.max(1)).min(MAX_SHARDS));
        plan(self.database().await?, shape, self.split, shards, context)
            .await
            .with_context(|| format!("planning the {} at {}", shape.relation.describe(), self.url.description()))
    }

    async fn open(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Box<dyn ShardReader>> {
        let descriptor = ShardDescriptor::parse(&shard.descriptor).with_context(|| format!("shard {}", shard.id))?;
        let shape = self.shape().await?;
        let reader =
            SqlShardReader::open(self.database().await?, shape, &shard.id, &descriptor, checkpoint, batch_size)?;
        Ok(Box::new(reader))
    }

    async fn split(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
    ) -> anyhow::Result<Option<(serde_json::Value, serde_json::Value)>> {
        let descriptor = ShardDescriptor::parse(&shard.descriptor).with_context(|| format!("shard {}", shard.id))?;
        let parts = split_shard(self.database().await?, self.shape().await?, &descriptor, checkpoint)
            .await
            .with_context(|| format!("splitting shard {}", shard.id))?;
        Ok(parts.map(|(kept, rest)| (kept.to_json(), rest.to_json())))
    }

    async fn estimate(&self, shard: &ShardSpec) -> Option<u64> {
        let descriptor = ShardDescriptor::parse(&shard.descriptor).ok()?;
        let database = self.database().await.ok()?;
        let shape = self.shape().await.ok()?;
        count_shard(database, shape, &descriptor).await.ok()
    }
}

/// `COUNT(*)` over a shard's rows.
async fn count_shard(database: &Database, shape: &Shape, descriptor: &ShardDescriptor) -> anyhow::Result<u64> {
    let dialect = database.dialect();
    let mut statement = Statement::new(dialect);
    statement.push(&format!("SELECT COUNT(*) FROM {}", shape.relation.sql_from(dialect)));
    Conditions::new(&mut statement, dialect).shard(shape, descriptor, None)?;
    let counter = Column::bigint(dialect, "count");
    match single_value(database, &statement, &counter).await? {
        Value::Int(count) => Ok(count.max(0) as u64),
        other => bail!("COUNT(*) returned {other:?}"),
    }
}
