//! The `http` source plugin: its options, and the [`Source`] that checks,
//! plans and opens shards of a REST/JSON API.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use haul_collect_core::job::Mode;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Checkpoint, Plan, PlanContext, ShardReader, ShardSpec, Source};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::auth::{Auth, AuthConfig};
use super::fetch::Fetcher;
use super::mark;
use super::pagination::{PaginationConfig, Paginator};
use super::plan::{self, RangeStep, ShardDescriptor};
use super::reader::{HttpCheckpoint, HttpShardReader, ShardSettings};
use super::records::{JsonPath, ResponseFormat};
use super::request::{BodyFormat, RequestOptions, RequestSpec};
use super::template::{Var, Vars};
use crate::web::{Politeness, WebClient};

/// The `http` source's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub query: BTreeMap<String, PlainValue>,
    #[serde(default)]
    pub headers: BTreeMap<String, PlainValue>,
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub body_format: BodyFormat,
    #[serde(default)]
    pub format: ResponseFormat,
    pub records: Option<String>,
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub pagination: PaginationConfig,
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    #[serde(default)]
    pub partitions: Vec<String>,
    pub range_step: Option<RangeStep>,
    #[serde(default)]
    pub politeness: Politeness,
}

/// A query or header value: text, or a number or boolean written as such.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PlainValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl PlainValue {
    fn into_text(self) -> String {
        match self {
            PlainValue::Text(text) => text,
            PlainValue::Integer(number) => number.to_string(),
            PlainValue::Float(number) => number.to_string(),
            PlainValue::Bool(flag) => flag.to_string(),
        }
    }
}

fn default_method() -> String {
    "GET".into()
}

fn default_max_pages() -> u64 {
    100_000
}

fn default_prefetch() -> usize {
    4
}

fn option_error(path: &[&str], message: impl std::fmt::Display) -> anyhow::Error {
    OptionError { path: path.iter().map(|s| s.to_string()).collect(), message: message.to_string() }.into()
}

/// Builds `http` sources.
pub struct HttpSourcePlugin;

impl Plugin for HttpSourcePlugin {
    type Config = HttpSourceConfig;
    type Output = dyn Source;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "http",
            role: Role::Source,
            description: "reads records from a REST/JSON API (also NDJSON and CSV responses), page after page; \
                          range runs read one shard per window of `[range]`, incremental runs send the greatest \
                          `[incremental] cursor` value read so far as `{since}`",
            options: vec![
                option(
                    "url",
                    "string",
                    None,
                    "the endpoint; may use {from}, {to}, {since}, {partition} and ${env:NAME}",
                ),
                option("method", "string", Some("GET"), "the http method"),
                option(
                    "query",
                    "table",
                    Some("{}"),
                    "query parameters; values are templates like `url`; one using {since} is left out until there is a mark",
                ),
                option(
                    "headers",
                    "table",
                    Some("{}"),
                    "request headers; values are templates; values from ${env:NAME} are never shown",
                ),
                option("body", "table", None, "a request body; its strings are templates"),
                option("body_format", "string", Some("json"), "`json` or `form` (url-encoded)"),
                option("format", "string", Some("json"), "the response format: `json`, `ndjson` or `csv`"),
                option("records", "string", Some("the whole body"), "json: the path to the records, e.g. `data.items`"),
                option(
                    "auth",
                    "table",
                    None,
                    "`{ type = \"bearer\", token }`, `{ type = \"basic\", username, password }`, `{ type = \"api_key\", \
                     name, in = \"header\"|\"query\", value }` or `{ type = \"oauth2\", token_url, client_id, \
                     client_secret, scopes, params, credentials = \"basic\"|\"body\" }`; secrets as ${env:NAME}",
                ),
                option(
                    "pagination",
                    "table",
                    Some("{ type = \"none\" }"),
                    "`page_number` (param, start, size_param, size, total_pages or total paths), `offset` \
                     (offset_param, limit_param, limit, total path), `cursor` (param, cursor path), `next_url` (next \
                     path) or `link_header`; without a total, a page without records ends the shard",
                ),
                option(
                    "max_pages",
                    "integer",
                    Some("100000"),
                    "a shard that reaches this many pages fails: the pagination would never end",
                ),
                option("prefetch", "integer", Some("4"), "page_number and offset: pages of a shard fetched at once"),
                option("partitions", "array", Some("[]"), "one shard per value, sent as {partition}"),
                option(
                    "range_step",
                    "string/int",
                    Some("\"1d\", or a quarter of the range per slot for numbers"),
                    "range mode: the width of one shard's window",
                ),
                Politeness::option_info("politeness"),
            ],
        }
    }

    fn build(&self, config: HttpSourceConfig) -> anyhow::Result<Arc<dyn Source>> {
        let paginator =
            Paginator::new(config.pagination).map_err(|error| option_error(&["pagination"], format!("{error:#}")))?;
        if config.format != ResponseFormat::Json {
            if paginator.needs_body() {
                return Err(option_error(
                    &["pagination"],
                    "`cursor` and `next_url` pagination read the next page from a json body; with ndjson or csv responses use page_number, offset or link_header",
                ));
            }
            if config.records.is_some() {
                return Err(option_error(
                    &["records"],
                    "`records` is a path into a json body; ndjson and csv bodies are all records",
                ));
            }
        }
        let records = JsonPath::parse(config.records.as_deref().unwrap_or(""))
            .map_err(|error| option_error(&["records"], error))?;
        if config.max_pages == 0 {
            return Err(option_error(&["max_pages"], "`max_pages` must be at least 1"));
        }
        if config.prefetch == 0 {
            return Err(option_error(&["prefetch"], "`prefetch` must be at least 1"));
        }
        config.politeness.validate("politeness")?;
        if let Some(auth) = &config.auth {
            auth.validate().map_err(|error| option_error(&["auth"], format!("{error:#}")))?;
        }
        let spec = RequestSpec::new(RequestOptions {
            method: config.method,
            url: config.url,
            query: config.query.into_iter().map(|(name, value)| (name, value.into_text())).collect(),
            headers: config.headers.into_iter().map(|(name, value)| (name, value.into_text())).collect(),
            body: config.body,
            body_format: config.body_format,
            format: config.format,
        })?;
        if config.partitions.is_empty() == spec.uses(Var::Partition) {
            let message = if config.partitions.is_empty() {
                "the request uses {partition} but `partitions` is empty"
            } else {
                "`partitions` are set but the request does not use {partition}"
            };
            return Err(option_error(&["partitions"], message));
        }
        Ok(Arc::new(HttpSource {
            spec,
            auth: config.auth,
            paginator,
            format: config.format,
            records,
            politeness: config.politeness,
            max_pages: config.max_pages,
            prefetch: config.prefetch,
            partitions: config.partitions,
            range_step: config.range_step,
            fetcher: OnceCell::new(),
        }))
    }
}

/// A configured `http` source. Secrets are read from the environment on
/// first use, not when the job is loaded.
pub struct HttpSource {
    spec: RequestSpec,
    auth: Option<AuthConfig>,
    paginator: Paginator,
    format: ResponseFormat,
    records: JsonPath,
    politeness: Politeness,
    max_pages: u64,
    prefetch: usize,
    partitions: Vec<String>,
    range_step: Option<RangeStep>,
    fetcher: OnceCell<Arc<Fetcher>>,
}

impl HttpSource {
    async fn fetcher(&self) -> anyhow::Result<Arc<Fetcher>> {
        self.fetcher
            .get_or_try_init(|| async {
                let auth = self.auth.as_ref().map(AuthConfig::resolve).transpose()?.unwrap_or(Auth::None);
                let client = WebClient::new(self.politeness.clone()).map_err(|error| error.into_anyhow())?;
                anyhow::Ok(Arc::new(Fetcher {
                    client,
                    request: self.spec.resolve()?,
                    auth,
                    paginator: self.paginator.clone(),
                    format: self.format,
                    records: self.records.clone(),
                }))
            })
            .await
            .cloned()
    }

    /// The placeholders a mode fills must be the ones the request uses.
    fn check_mode(&self, mode: Mode) -> anyhow::Result<()> {
        let uses_window = self.spec.uses(Var::From) || self.spec.uses(Var::To);
        match mode {
            Mode::Range if !uses_window => bail!(
                "range mode needs {{from}} (and usually {{to}}) in the request, or every shard reads the same pages"
            ),
            Mode::Full | Mode::Incremental if uses_window => {
                bail!("the request uses {{from}} or {{to}}, which only range mode fills")
            }
            Mode::Incremental if !self.spec.uses(Var::Since) => bail!(
                "incremental mode needs {{since}} in the request (e.g. `query = {{ updated_since = \"{{since}}\" }}`)"
            ),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Source for HttpSource {
    fn endpoint(&self) -> Option<String> {
        self.spec.endpoint()
    }

    /// Reads the secrets, gets an OAuth2 token when configured, and asks for
    /// the first page when the request needs no range window.
    async fn check(&self) -> anyhow::Result<()> {
        let fetcher = self.fetcher().await?;
        if self.spec.uses(Var::From) || self.spec.uses(Var::To) {
            return Ok(());
        }
        let vars = Arc::new(Vars { partition: self.partitions.first().cloned(), ..Vars::default() });
        let page = fetcher.clone().fetch_page(vars, self.paginator.first(), "the first page".into()).await?;
        match page.unreadable {
            Some(reason) => bail!("the first page: {reason}"),
            None => Ok(()),
        }
    }

    async fn plan(&self, context: &PlanContext) -> anyhow::Result<Plan> {
        self.check_mode(context.mode)?;
        let mut plan = plan::plan(&self.partitions, self.range_step, context)?;
        if context.mode == Mode::Incremental {
            let cursor = context.incremental.cursor.clone();
            for shard in &mut plan.shards {
                let mut descriptor: ShardDescriptor = shard.read_descriptor()?;
                descriptor.cursor = cursor.clone();
                shard.descriptor = serde_json::to_value(descriptor)?;
            }
        }
        Ok(plan)
    }

    async fn open(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Box<dyn ShardReader>> {
        let descriptor: ShardDescriptor = shard.read_descriptor()?;
        let checkpoint = checkpoint
            .map(Checkpoint::read::<HttpCheckpoint>)
            .transpose()
            .with_context(|| format!("shard {}", shard.id))?;
        let settings = ShardSettings {
            shard: shard.id.clone(),
            vars: descriptor.vars(),
            cursor: descriptor.cursor.as_deref().map(|path| path.split('.').map(str::to_string).collect()),
            batch_size: batch_size.max(1),
            max_pages: self.max_pages,
            prefetch: self.prefetch,
        };
        Ok(Box::new(HttpShardReader::new(self.fetcher().await?, settings, checkpoint)))
    }

    /// The greatest cursor value any shard delivered becomes the job state,
    /// unless the previous state is greater.
    fn final_state(
        &self,
        planned: Option<serde_json::Value>,
        checkpoints: &[Option<Checkpoint>],
    ) -> Option<serde_json::Value> {
        let previous = planned.as_ref().and_then(|state| state.get("cursor")).cloned();
        let reached = checkpoints
            .iter()
            .flatten()
            .filter_map(|checkpoint| checkpoint.read::<HttpCheckpoint>().ok()?.mark)
            .fold(previous.clone(), |known, mark| mark::max_mark(known, Some(&mark)));
        match reached {
            Some(mark) if Some(&mark) != previous.as_ref() => Some(serde_json::json!({ "cursor": mark })),
            _ => planned,
        }
    }
}
