//! The `crawl` source's options, and the settings a crawl runs with once they
//! are checked: parsed seeds, compiled patterns and selectors, the record
//! schema and the web client.

use std::sync::Arc;

use haul_collect_core::registry::{OptionError, OptionInfo};
use haul_collect_core::{DataType, Field, Schema};
use regex::RegexSet;
use serde::Deserialize;
use url::Url;

use super::extract::{Extractor, FieldConfig};
use super::normalize::Normalizer;
use super::scope::{Scope, ScopeMode};
use crate::web::{Politeness, WebClient};

/// The options of `[source] type = "crawl"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrawlSourceConfig {
    #[serde(default)]
    pub seeds: Vec<String>,
    #[serde(default)]
    pub sitemaps: Vec<String>,
    #[serde(default)]
    pub scope: ScopeMode,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub max_depth: Option<u32>,
    #[serde(default = "default_max_pages")]
    pub max_pages: usize,
    #[serde(default = "default_true")]
    pub robots: bool,
    #[serde(default)]
    pub sort_query: bool,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    pub shards: Option<usize>,
    #[serde(default = "default_metadata")]
    pub metadata: Vec<Metadata>,
    #[serde(default)]
    pub fields: Vec<FieldConfig>,
    #[serde(default)]
    pub politeness: Politeness,
}

fn default_max_pages() -> usize {
    100_000
}

fn default_true() -> bool {
    true
}

fn default_concurrency() -> usize {
    8
}

fn default_metadata() -> Vec<Metadata> {
    vec![Metadata::Url, Metadata::Status, Metadata::FetchedAt]
}

/// A field every record may carry besides the extracted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metadata {
    /// The page's normalised URL, as the frontier knows it (before redirects).
    Url,
    /// The HTTP status of the final response.
    Status,
    /// When the response arrived.
    FetchedAt,
}

impl Metadata {
    fn field(self) -> Field {
        match self {
            Metadata::Url => Field::new("url", DataType::String),
            Metadata::Status => Field::new("status", DataType::Int),
            Metadata::FetchedAt => Field::new("fetched_at", DataType::TimestampTz),
        }
    }
}

/// Everything a crawl needs once its options are checked; shared by its shards.
pub struct Crawl {
    pub seeds: Vec<Url>,
    pub sitemaps: Vec<Url>,
    pub scope: Scope,
    pub normalizer: Normalizer,
    pub max_depth: Option<u32>,
    pub max_pages: usize,
    pub obey_robots: bool,
    pub concurrency: usize,
    pub shards: Option<usize>,
    pub metadata: Vec<Metadata>,
    pub extractor: Extractor,
    /// Metadata fields, then extracted fields.
    pub schema: Arc<Schema>,
    pub client: WebClient,
}

/// The most shards a crawl is split into.
pub const MAX_SHARDS: usize = 10_000;

fn option_error(path: &[&str], message: impl Into<String>) -> anyhow::Error {
    OptionError { path: path.iter().map(|segment| segment.to_string()).collect(), message: message.into() }.into()
}

impl Crawl {
    pub fn new(config: CrawlSourceConfig) -> anyhow::Result<Self> {
        let normalizer = Normalizer { sort_query: config.sort_query };
        let urls = |option: &str, texts: &[String]| -> anyhow::Result<Vec<Url>> {
            let mut urls: Vec<Url> = Vec::with_capacity(texts.len());
            for (index, text) in texts.iter().enumerate() {
                let url = normalizer
                    .absolute(text)
                    .map_err(|message| option_error(&[option, &index.to_string()], message))?;
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
            Ok(urls)
        };
        let seeds = urls("seeds", &config.seeds)?;
        let sitemaps = urls("sitemaps", &config.sitemaps)?;
        if seeds.is_empty() && sitemaps.is_empty() {
            anyhow::bail!("the crawl source needs `seeds` or `sitemaps` to start from");
        }
        let patterns = |option: &str, patterns: &[String]| {
            RegexSet::new(patterns)
                .map_err(|error| option_error(&[option], format!("invalid `{option}` pattern: {error}")))
        };
        let allow = if config.allow.is_empty() { None } else { Some(patterns("allow", &config.allow)?) };
        let deny = patterns("deny", &config.deny)?;
        let scope = Scope::new(config.scope, seeds.iter().chain(&sitemaps), allow, deny);
        if config.max_pages == 0 {
            return Err(option_error(&["max_pages"], "`max_pages` must be at least 1"));
        }
        if config.concurrency == 0 || config.concurrency > 1024 {
            return Err(option_error(&["concurrency"], "`concurrency` must be between 1 and 1024"));
        }
        if let Some(shards) = config.shards
            && !(1..=MAX_SHARDS).contains(&shards)
        {
            return Err(option_error(
                &["shards"],
                format!("`shards` must be between 1 and {MAX_SHARDS}, not {shards}"),
            ));
        }
        config.politeness.validate("politeness")?;

        let extractor = Extractor::new(&config.fields)
            .map_err(|error| option_error(&["fields", &error.index.to_string(), error.option], error.message))?;
        let mut metadata: Vec<Metadata> = Vec::with_capacity(config.metadata.len());
        for fact in config.metadata {
            if !metadata.contains(&fact) {
                metadata.push(fact);
            }
        }
        let mut fields: Vec<Field> = metadata.iter().map(|metadata| metadata.field()).collect();
        for (index, field) in extractor.schema_fields().enumerate() {
            if fields.iter().any(|other| other.name == field.name) {
                return Err(option_error(
                    &["fields", &index.to_string(), "name"],
                    format!("the field `{}` is already the page's {} (see `metadata`)", field.name, field.name),
                ));
            }
            fields.push(field);
        }
        let client = WebClient::new(config.politeness).map_err(|error| error.into_anyhow())?;
        Ok(Crawl {
            seeds,
            sitemaps,
            scope,
            normalizer,
            max_depth: config.max_depth,
            max_pages: config.max_pages,
            obey_robots: config.robots,
            concurrency: config.concurrency,
            shards: config.shards,
            metadata,
            extractor,
            schema: Arc::new(Schema::new(fields)),
            client,
        })
    }

    /// Whether a link from a page at `depth` may be followed.
    pub fn follows_from(&self, depth: u32) -> bool {
        self.max_depth.is_none_or(|max| depth < max)
    }
}

/// The options as `haul plugins` lists them.
pub fn option_infos() -> Vec<OptionInfo> {
    let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
    vec![
        option("seeds", "array", Some("[]"), "the URLs the crawl starts from; always fetched (robots.txt permitting)"),
        option(
            "sitemaps",
            "array",
            Some("[]"),
            "sitemap, sitemap index (plain or gzip) or robots.txt URLs whose listed pages start the crawl too",
        ),
        option(
            "scope",
            "string",
            Some("host"),
            "host: the hosts of the seeds and sitemaps; domain: those and their subdomains; any: every host",
        ),
        option("allow", "array", Some("[]"), "regular expressions: when given, a link is followed only if one matches"),
        option("deny", "array", Some("[]"), "regular expressions: a link that matches one is not followed"),
        option(
            "max_depth",
            "integer",
            None,
            "links followed from a seed at most; 0 fetches the seeds and sitemap pages only",
        ),
        option(
            "max_pages",
            "integer",
            Some("100000"),
            "URLs admitted to a shard's frontier at most (bounds its checkpoint)",
        ),
        option(
            "robots",
            "boolean",
            Some("true"),
            "obey robots.txt (and its Crawl-delay) for the user agent's product token",
        ),
        option("sort_query", "boolean", Some("false"), "sort query parameters when normalising URLs"),
        option(
            "concurrency",
            "integer",
            Some("8"),
            "pages fetched at once per shard (each host also has its own limit)",
        ),
        option("shards", "integer", Some("parallelism"), "the most shards to split the sites into (by host hash)"),
        option(
            "metadata",
            "array",
            Some("[\"url\", \"status\", \"fetched_at\"]"),
            "the page facts each record starts with",
        ),
        option(
            "fields",
            "array",
            Some("[]"),
            "tables { name, selector, extract = text | html | attribute, attribute, multiple, required }: values \
             taken by CSS selector; a page missing a required field goes to the dead letters",
        ),
        Politeness::option_info("politeness"),
    ]
}
