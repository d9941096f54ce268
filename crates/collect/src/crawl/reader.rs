//! Reading one shard of a crawl: pages are fetched `concurrency` at a time,
//! each in its own task (fetch, parse and extract), and their results are
//! taken in the order the pages left the frontier. Links are admitted, and
//! records batched, in that order too, so a crawl of an unchanging site
//! yields the same records in the same order whatever the timing, and a
//! checkpoint taken between two results is exact.
//!
//! A batch holds the pages finished since the previous one: it is cut at
//! `batch_size` records and dead letters, after [`BATCH_WINDOW`] when at
//! least one page finished (a page that yields nothing, a 304, still moves
//! the checkpoint), and when the frontier runs dry. Its checkpoint is the
//! frontier's state, pages in flight counted as not fetched.
//!
//! A link is admitted when the page it is on is below `max_depth`, it is new
//! to the frontier and the frontier is not full, its site belongs to this
//! shard, the allow and deny patterns let it through, and robots.txt allows
//! it. Seeds skip the patterns; sitemap entries do not; the pages the last run
//! finished (incremental mode) were checked by the plan.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use haul_collect_core::{Batch, Checkpoint, Rejected, ShardReader, SourceBatch, Value};
use haul_common::duration::HumanDuration;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use url::Url;

use super::config::Crawl;
use super::fetch::{Fetched, fetch_page};
use super::frontier::{Frontier, FrontierState, Validators};
use super::plan::ShardDescriptor;
use super::robots::RobotsCache;
use super::scope::SiteShare;
use super::sitemap::{self, Sitemap};
use crate::web::{Politeness, WebClient, WebRequest};

/// The longest a batch stays open once a page has finished.
const BATCH_WINDOW: Duration = Duration::from_millis(500);

/// Sitemap files read per shard at most (an index of indexes could be endless).
const MAX_SITEMAP_FILES: usize = 1_000;

/// Where a URL comes from, which decides the checks it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Seed,
    Sitemap,
    Link,
    /// A page the last run finished (incremental mode), filtered by the plan.
    Known,
}

/// Reads one shard of a crawl; see the module documentation.
pub struct CrawlReader {
    crawl: Arc<Crawl>,
    share: SiteShare,
    frontier: Frontier,
    /// Validators of the pages the last run finished, for conditional GETs.
    previous: HashMap<String, Validators>,
    robots: RobotsCache,
    /// A client per origin whose robots.txt sets a `Crawl-delay`.
    delayed_clients: HashMap<String, WebClient>,
    in_flight: FuturesOrdered<AbortOnDropHandle<anyhow::Result<Fetched>>>,
    batch_size: usize,
    rows: Vec<Vec<Value>>,
    rejected: Vec<Rejected>,
    /// Pages finished since the last batch, and their body bytes.
    finished_since_cut: usize,
    bytes_since_cut: u64,
    window_start: Instant,
    /// Whether `max_pages` has been reported.
    full_reported: bool,
}

impl CrawlReader {
    /// Opens a shard at `checkpoint`, or at its seeds and sitemaps.
    pub async fn open(
        crawl: Arc<Crawl>,
        descriptor: ShardDescriptor,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Self> {
        let frontier = match checkpoint {
            Some(checkpoint) => {
                let state: FrontierState = checkpoint.read()?;
                Frontier::restore(state, crawl.max_pages).map_err(anyhow::Error::msg)?
            }
            None => Frontier::new(crawl.max_pages),
        };
        let previous = descriptor.known.iter().map(|page| (page.url().to_string(), page.validators())).collect();
        let mut reader = CrawlReader {
            robots: RobotsCache::new(&crawl.client.politeness().user_agent),
            crawl,
            share: descriptor.share,
            frontier,
            previous,
            delayed_clients: HashMap::new(),
            in_flight: FuturesOrdered::new(),
            batch_size: batch_size.max(1),
            rows: Vec::new(),
            rejected: Vec::new(),
            finished_since_cut: 0,
            bytes_since_cut: 0,
            window_start: Instant::now(),
            full_reported: false,
        };
        if checkpoint.is_none() {
            reader.start(&descriptor).await?;
        }
        Ok(reader)
    }

    /// Fills a fresh frontier: seeds, then sitemap entries, then the pages the last run knew.
    async fn start(&mut self, descriptor: &ShardDescriptor) -> anyhow::Result<()> {
        for seed in &descriptor.seeds {
            let url = Url::parse(seed).with_context(|| format!("seed {seed}"))?;
            self.admit(url, 0, Origin::Seed).await?;
        }
        let mut sitemaps: Vec<Url> =
            descriptor.sitemaps.iter().map(|url| Url::parse(url)).collect::<Result<_, _>>().context("a sitemap url")?;
        let mut files_read = 0;
        while let Some(sitemap) = sitemaps.pop() {
            files_read += 1;
            if files_read > MAX_SITEMAP_FILES {
                tracing::warn!(limit = MAX_SITEMAP_FILES, "too many sitemap files; the rest are not read");
                break;
            }
            for entry in self.sitemap_entries(&sitemap).await? {
                match entry {
                    SitemapEntry::Page(url) => self.admit(url, 0, Origin::Sitemap).await?,
                    SitemapEntry::Sitemap(url) => sitemaps.push(url),
                }
            }
        }
        for page in &descriptor.known {
            let url = Url::parse(page.url()).with_context(|| format!("a known page {}", page.url()))?;
            self.admit(url, page.depth(), Origin::Known).await?;
        }
        Ok(())
    }

    /// What a sitemap, sitemap index or robots.txt lists, in document order.
    async fn sitemap_entries(&mut self, url: &Url) -> anyhow::Result<Vec<SitemapEntry>> {
        let normalizer = self.crawl.normalizer;
        let parse = |text: &String| normalizer.absolute(text).ok();
        if url.path() == "/robots.txt" {
            let rules = self.robots.rules(&self.crawl.client, url).await?;
            return Ok(rules.sitemaps().iter().filter_map(parse).rev().map(SitemapEntry::Sitemap).collect());
        }
        let response =
            self.crawl.client.fetch(&WebRequest::get(url.clone())).await.map_err(|error| error.into_anyhow())?;
        if !response.status.is_success() {
            bail!("the sitemap {url} answered {}", response.status);
        }
        let entries = match sitemap::parse(&response.body).with_context(|| format!("reading the sitemap {url}"))? {
            Sitemap::Pages(pages) => pages.iter().filter_map(parse).map(SitemapEntry::Page).collect(),
            // Pushed on a stack: reversed so that the first listed is read first.
            Sitemap::Index(sitemaps) => sitemaps.iter().filter_map(parse).rev().map(SitemapEntry::Sitemap).collect(),
        };
        Ok(entries)
    }

    /// Queues `url` at `depth` if it passes the checks for its origin.
    async fn admit(&mut self, url: Url, depth: u32, origin: Origin) -> anyhow::Result<()> {
        if !self.frontier.admits(url.as_str()) {
            if self.frontier.is_full() && !self.full_reported {
                self.full_reported = true;
                tracing::warn!(max_pages = self.crawl.max_pages, "the frontier is full; no more pages are admitted");
            }
            return Ok(());
        }
        let in_share = self.crawl.scope.site_of(&url).is_some_and(|site| self.share.owns(site));
        let checks_patterns = matches!(origin, Origin::Sitemap | Origin::Link);
        if !in_share || (checks_patterns && !self.crawl.scope.patterns_allow(&url)) {
            return Ok(());
        }
        if self.crawl.obey_robots && !self.robots.rules(&self.crawl.client, &url).await?.allows(&url) {
            tracing::debug!(url = %url, "robots.txt disallows the page");
            return Ok(());
        }
        self.frontier.push(url.as_str(), depth);
        Ok(())
    }

    /// The client for `url`'s origin: slowed to its robots.txt `Crawl-delay`, if it sets one.
    async fn client_for(&mut self, url: &Url) -> anyhow::Result<WebClient> {
        if !self.crawl.obey_robots {
            return Ok(self.crawl.client.clone());
        }
        let origin = url.origin().ascii_serialization();
        if let Some(client) = self.delayed_clients.get(&origin) {
            return Ok(client.clone());
        }
        let rules = self.robots.rules(&self.crawl.client, url).await?;
        match rules.crawl_delay() {
            Some(delay) if delay > self.crawl.client.politeness().min_delay.0 => {
                let politeness =
                    Politeness { min_delay: HumanDuration(delay), ..self.crawl.client.politeness().clone() };
                let client = WebClient::new(politeness).map_err(|error| error.into_anyhow())?;
                self.delayed_clients.insert(origin, client.clone());
                Ok(client)
            }
            _ => Ok(self.crawl.client.clone()),
        }
    }

    /// Starts fetching pages until `concurrency` are in flight or the queue is empty.
    async fn dispatch(&mut self) -> anyhow::Result<()> {
        while self.in_flight.len() < self.crawl.concurrency {
            let Some(page) = self.frontier.dispatch() else { break };
            let url = Url::parse(&page.url).with_context(|| format!("a queued url {}", page.url))?;
            let client = self.client_for(&url).await?;
            let previous = self.previous.get(&*page.url).cloned();
            let follow_links = self.crawl.follows_from(page.depth);
            let task = fetch_page(self.crawl.clone(), client, page, previous, follow_links);
            self.in_flight.push_back(AbortOnDropHandle::new(tokio::spawn(task)));
        }
        Ok(())
    }

    /// Takes the result of the oldest page in flight.
    async fn finish(&mut self, fetched: Fetched) -> anyhow::Result<()> {
        let Fetched { row, rejected, validators, links, bytes } = fetched;
        let page = self.frontier.finish(validators);
        for link in links {
            self.admit(link, page.depth + 1, Origin::Link).await?;
        }
        self.rows.extend(row);
        self.rejected.extend(rejected);
        self.finished_since_cut += 1;
        self.bytes_since_cut += bytes;
        Ok(())
    }

    /// The batch of the pages finished since the last one.
    fn cut(&mut self) -> SourceBatch {
        let checkpoint = serde_json::to_value(self.frontier.state()).expect("a frontier state serialises");
        self.finished_since_cut = 0;
        self.window_start = Instant::now();
        SourceBatch {
            batch: Batch::new(self.crawl.schema.clone(), std::mem::take(&mut self.rows)),
            rejected: std::mem::take(&mut self.rejected),
            checkpoint: Checkpoint(checkpoint),
            bytes_read: Some(std::mem::take(&mut self.bytes_since_cut)),
        }
    }
}

/// One line of a sitemap.
enum SitemapEntry {
    Page(Url),
    Sitemap(Url),
}

#[async_trait]
impl ShardReader for CrawlReader {
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        loop {
            if self.rows.len() + self.rejected.len() >= self.batch_size {
                return Ok(Some(self.cut()));
            }
            self.dispatch().await?;
            let deadline = self.window_start + BATCH_WINDOW;
            let next = match self.in_flight.is_empty() {
                true => None,
                false => match tokio::time::timeout_at(deadline, self.in_flight.next()).await {
                    Ok(next) => next,
                    Err(_elapsed) if self.finished_since_cut > 0 => return Ok(Some(self.cut())),
                    Err(_elapsed) => {
                        self.window_start = Instant::now();
                        continue;
                    }
                },
            };
            match next {
                Some(joined) => {
                    let fetched = joined.context("a page task panicked")??;
                    self.finish(fetched).await?;
                }
                None if self.finished_since_cut > 0 => return Ok(Some(self.cut())),
                None => return Ok(None),
            }
        }
    }
}
