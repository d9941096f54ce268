//! The `crawl` source: a polite, resumable web crawler.
//!
//! A crawl starts from seeds and sitemaps, follows links within its scope
//! (hosts, domains, allow and deny patterns, depth and page caps), obeys
//! robots.txt, and extracts fields from each page by CSS selector. Requests
//! go through the shared [`crate::web::WebClient`], whose per-host gates,
//! retries and `Retry-After` handling make it polite to every host at once.
//!
//! Shards split the sites by host hash; each shard keeps its own frontier
//! of normalised URLs, checkpointed with every batch, so a stopped or
//! crashed crawl resumes without fetching a finished page again. The job
//! state keeps every page's `ETag` and `Last-Modified`, so an incremental
//! run asks for each page only if it changed.

mod config;
mod extract;
mod fetch;
mod frontier;
mod normalize;
mod plan;
mod reader;
mod robots;
mod scope;
mod sitemap;
mod source;

pub use config::{CrawlSourceConfig, Metadata};
pub use extract::{ExtractKind, FieldConfig};
pub use scope::ScopeMode;
pub use source::{CrawlSource, CrawlSourcePlugin};
