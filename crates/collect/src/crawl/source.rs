//! The `crawl` source plugin: its registration, and the [`Source`] that
//! checks, plans and opens shards of a crawl.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use haul_collect_core::registry::{Plugin, PluginInfo, Role};
use haul_collect_core::{Checkpoint, Plan, PlanContext, ShardReader, ShardSpec, Source};

use super::config::{self, Crawl, CrawlSourceConfig};
use super::plan::{self, ShardDescriptor};
use super::reader::CrawlReader;
use super::robots::RobotsCache;

/// The factory registered as `crawl`.
pub struct CrawlSourcePlugin;

impl Plugin for CrawlSourcePlugin {
    type Config = CrawlSourceConfig;
    type Output = dyn Source;

    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: "crawl",
            role: Role::Source,
            description: "crawls web pages from seeds and sitemaps, politely (robots.txt, per-host limits, \
                          back-off on 429 and 5xx), and extracts fields by CSS selector; shards split the sites \
                          by host hash and resume from a checkpointed frontier; incremental runs revisit known \
                          pages with conditional GETs and emit only the changed ones",
            options: config::option_infos(),
        }
    }

    fn build(&self, config: CrawlSourceConfig) -> anyhow::Result<Arc<dyn Source>> {
        Ok(Arc::new(CrawlSource { crawl: Arc::new(Crawl::new(config)?) }))
    }
}

/// A configured `crawl` source.
pub struct CrawlSource {
    crawl: Arc<Crawl>,
}

#[async_trait]
impl Source for CrawlSource {
    /// Reads the robots.txt of every seed's and sitemap's origin: the sites answer and their rules parse.
    async fn check(&self) -> anyhow::Result<()> {
        let mut robots = RobotsCache::new(&self.crawl.client.politeness().user_agent);
        for url in self.crawl.seeds.iter().chain(&self.crawl.sitemaps) {
            robots.rules(&self.crawl.client, url).await.with_context(|| format!("checking {url}"))?;
        }
        Ok(())
    }

    async fn plan(&self, context: &PlanContext) -> anyhow::Result<Plan> {
        plan::plan(&self.crawl, context)
    }

    async fn open(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Box<dyn ShardReader>> {
        let descriptor: ShardDescriptor = shard.read_descriptor()?;
        let reader = CrawlReader::open(self.crawl.clone(), descriptor, checkpoint, batch_size)
            .await
            .with_context(|| format!("opening shard {}", shard.id))?;
        Ok(Box::new(reader))
    }

    /// Every page the run finished, with its validators, so that the next
    /// incremental run asks for each only if it changed.
    fn final_state(
        &self,
        planned: Option<serde_json::Value>,
        checkpoints: &[Option<Checkpoint>],
    ) -> Option<serde_json::Value> {
        match plan::final_state(checkpoints) {
            Ok(state) => state.or(planned),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "the crawl's checkpoints could not be read; no state is kept");
                planned
            }
        }
    }
}
