//! Planning a crawl into shards, and the job state it leaves for the next
//! incremental run.
//!
//! Each shard owns a share of the sites (see [`super::scope`]): its seeds,
//! its sitemaps and, in incremental mode, the pages the last run finished on
//! its sites. A crawl is split into at most `shards` (or `parallelism`)
//! shares, never more than it has sites, and shares without a seed, sitemap
//! or known page are left out.
//!
//! The job state ([`RecrawlState`], format version 1) lists every page the
//! last successful run finished, with its depth and the `ETag` and
//! `Last-Modified` of its last response. An incremental run queues these
//! pages after the seeds and sitemap entries and asks for each with
//! `If-None-Match`/`If-Modified-Since`: an unchanged page answers 304 and
//! yields no record, but is still known to the next run. A full run ignores
//! the state, fetches and emits every page, and leaves a new state.

use anyhow::{Context, bail};
use haul_collect_core::job::Mode;
use haul_collect_core::{Checkpoint, Plan, PlanContext, ShardSpec};
use serde::{Deserialize, Serialize};
use url::Url;

use super::config::Crawl;
use super::frontier::{DonePage, FrontierState};
use super::scope::SiteShare;

/// The version of [`RecrawlState`] written today.
const RECRAWL_FORMAT: u32 = 1;

/// What a shard of a crawl starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardDescriptor {
    pub share: SiteShare,
    pub seeds: Vec<String>,
    pub sitemaps: Vec<String>,
    /// Pages the last run finished, with their validators (incremental mode).
    pub known: Vec<DonePage>,
}

/// The job state of a crawl: the pages its last successful run finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecrawlState {
    pub version: u32,
    pub pages: Vec<DonePage>,
}

/// The shards of one run.
pub fn plan(crawl: &Crawl, context: &PlanContext) -> anyhow::Result<Plan> {
    let known = match context.mode {
        Mode::Full => Vec::new(),
        Mode::Incremental => match &context.previous_state {
            Some(state) => read_state(state)?.pages,
            None => Vec::new(),
        },
        Mode::Range => bail!("the crawl source does not support range mode; use full or incremental"),
    };
    let sites = crawl.scope.sites().len();
    let count = crawl.shards.unwrap_or(context.parallelism).clamp(1, sites.max(1));
    let count = u32::try_from(count).context("too many shards")?;
    let mut shards = Vec::new();
    for index in 0..count {
        let share = SiteShare { index, count };
        let owned = |url: &Url| crawl.scope.site_of(url).is_some_and(|site| share.owns(site));
        let seeds: Vec<String> = crawl.seeds.iter().filter(|url| owned(url)).map(Url::to_string).collect();
        let sitemaps: Vec<String> = crawl.sitemaps.iter().filter(|url| owned(url)).map(Url::to_string).collect();
        let known: Vec<DonePage> = known
            .iter()
            .filter(|page| {
                let Ok(url) = Url::parse(page.url()) else { return false };
                owned(&url)
                    && crawl.max_depth.is_none_or(|max| page.depth() <= max)
                    && (crawl.seeds.contains(&url) || crawl.scope.patterns_allow(&url))
            })
            .cloned()
            .collect();
        if seeds.is_empty() && sitemaps.is_empty() && known.is_empty() {
            continue;
        }
        let descriptor = serde_json::to_value(ShardDescriptor { share, seeds, sitemaps, known })?;
        shards.push(ShardSpec { id: format!("sites-{index}-of-{count}"), descriptor });
    }
    Ok(Plan { shards, next_state: None })
}

fn read_state(state: &serde_json::Value) -> anyhow::Result<RecrawlState> {
    let state: RecrawlState = serde_json::from_value(state.clone())
        .context("the job state left by the last crawl is not a crawl state; run once in full mode")?;
    if state.version != RECRAWL_FORMAT {
        bail!("the job state has crawl format version {}, this haul reads version {RECRAWL_FORMAT}", state.version);
    }
    Ok(state)
}

/// The pages every shard finished, from their last checkpoints, as the next run's state.
pub fn final_state(checkpoints: &[Option<Checkpoint>]) -> anyhow::Result<Option<serde_json::Value>> {
    let mut pages = Vec::new();
    for checkpoint in checkpoints.iter().flatten() {
        let frontier: FrontierState = checkpoint.read()?;
        pages.extend(frontier.done);
    }
    if pages.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_value(RecrawlState { version: RECRAWL_FORMAT, pages })?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> serde_json::Value {
        let path = format!("{}/tests/golden/crawl/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn the_job_state_lists_the_finished_pages_of_every_shard() {
        let checkpoint = Checkpoint(golden("checkpoint-v1.json"));
        let state = final_state(&[Some(checkpoint), None]).unwrap();
        assert_eq!(state, Some(golden("state-v1.json")));
        assert_eq!(read_state(&golden("state-v1.json")).unwrap().pages.len(), 2);
        assert_eq!(final_state(&[None]).unwrap(), None);
    }

    #[test]
    fn other_states_are_refused_with_a_way_out() {
        let error = read_state(&serde_json::json!({"files": {}})).unwrap_err();
        assert!(error.to_string().contains("run once in full mode"), "{error}");
        let error = read_state(&serde_json::json!({"version": 2, "pages": []})).unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }
}
