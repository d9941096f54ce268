//! Reading one shard, page after page.
//!
//! The checkpoint is the request state of the next page to read, with the
//! records of that page already delivered when a page was larger than a
//! batch. With page numbers and offsets, up to `prefetch` pages are in
//! flight at once and handed on in order; pages past the end the totals
//! announce are never asked for, and those fetched past an empty last page
//! are left to finish and dropped unread. With cursors and next URLs the
//! next page is asked for as soon as the page before it is read, while its
//! records go down the pipeline.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use haul_collect_core::{Batch, Checkpoint, ShardReader, SourceBatch};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::task::JoinHandle;

use super::fetch::{FetchedPage, Fetcher};
use super::mark;
use super::pagination::{Next, PageState, Paginator};
use super::template::Vars;

/// The checkpoint of an `http` shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HttpCheckpoint {
    /// The next page to read; `None` once the shard is done.
    pub next: Option<PageState>,
    /// Records of that page already delivered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip_records: usize,
    /// Rejected records of that page already delivered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip_rejected: usize,
    /// Pages read to the end, counted against `max_pages`.
    pub pages: u64,
    /// The last page, when the API announced a total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<PageState>,
    /// The greatest incremental cursor value delivered so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Json>,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// How a shard is read, besides what the fetcher knows.
pub(crate) struct ShardSettings {
    pub shard: String,
    pub vars: Vars,
    /// The incremental cursor field, as a path into the record.
    pub cursor: Option<Vec<String>>,
    pub batch_size: usize,
    pub max_pages: u64,
    pub prefetch: usize,
}

/// A page fetch running in its own task. Dropping it leaves the request to
/// finish unread rather than cutting it off: the server would go on working
/// on it while the host's slot went to another request.
struct PageTask {
    state: PageState,
    handle: JoinHandle<anyhow::Result<FetchedPage>>,
}

pub(crate) struct HttpShardReader {
    fetcher: Arc<Fetcher>,
    vars: Arc<Vars>,
    settings: ShardSettings,
    position: HttpCheckpoint,
    /// Cursors and URLs already followed, to stop a paginator that loops.
    followed: HashSet<PageState>,
    previous_body: Option<u64>,
    /// An offset page with fewer records than the limit: only an empty page may follow it.
    short_page: Option<(PageState, usize)>,
    in_flight: VecDeque<PageTask>,
    ready: VecDeque<SourceBatch>,
}

impl HttpShardReader {
    pub(crate) fn new(fetcher: Arc<Fetcher>, settings: ShardSettings, checkpoint: Option<HttpCheckpoint>) -> Self {
        let position = checkpoint.unwrap_or_else(|| HttpCheckpoint {
            next: Some(fetcher.paginator.first()),
            skip_records: 0,
            skip_rejected: 0,
            pages: 0,
            last: None,
            mark: None,
        });
        HttpShardReader {
            vars: Arc::new(settings.vars.clone()),
            fetcher,
            settings,
            position,
            followed: HashSet::new(),
            previous_body: None,
            short_page: None,
            in_flight: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// Starts fetching `state` and, when the paginator allows, the pages after it.
    fn fill_window(&mut self, state: &PageState) {
        if self.in_flight.front().is_none_or(|task| task.state != *state) {
            self.in_flight.clear();
            self.spawn(state.clone());
        }
        let fetcher = self.fetcher.clone();
        let paginator = &fetcher.paginator;
        if !paginator.fetches_ahead() {
            return;
        }
        while self.in_flight.len() < self.settings.prefetch.max(1) {
            let back = &self.in_flight.back().expect("not empty").state;
            let Some(successor) = paginator.successor(back) else { return };
            let past_end = self.position.last.as_ref().is_some_and(|last| Paginator::beyond(&successor, last));
            let past_cap = self.position.pages + self.in_flight.len() as u64 >= self.settings.max_pages;
            if past_end || past_cap {
                return;
            }
            self.spawn(successor);
        }
    }

    fn spawn(&mut self, state: PageState) {
        let ordinal = self.position.pages + self.in_flight.len() as u64 + 1;
        let position = format!("shard {}, page #{ordinal}", self.settings.shard);
        let handle = tokio::spawn(self.fetcher.clone().fetch_page(self.vars.clone(), state.clone(), position));
        self.in_flight.push_back(PageTask { state, handle });
    }

    /// Takes in the page of `state`: decides the next page, then cuts the
    /// records into batches with their checkpoints.
    fn read_page(&mut self, state: PageState, page: FetchedPage) -> anyhow::Result<()> {
        let fetcher = self.fetcher.clone();
        let paginator = &fetcher.paginator;
        let ordinal = self.position.pages + 1;
        let described = format!("page #{ordinal} ({state}) of shard {}", self.settings.shard);
        if let Some(reason) = &page.unreadable
            && paginator.needs_body()
        {
            bail!("{described}: {reason}; the next page cannot be found without it");
        }
        if paginator.fetches_ahead() && page.facts.records > 0 {
            if self.previous_body == Some(page.body_hash) {
                bail!(
                    "{described} is the same as the page before it: the api seems to ignore the paging parameters; check `pagination`"
                );
            }
            if let Some((short, count)) = self.short_page.take() {
                bail!(
                    "{short} held {count} records, fewer than `pagination.limit`, yet more followed: the api caps its \
                     pages; set `limit` to {count} or less"
                );
            }
        }
        self.previous_body = Some(page.body_hash);
        if let Paginator::Offset { limit, .. } = paginator
            && page.facts.records > 0
            && (page.facts.records as u64) < *limit
        {
            self.short_page = Some((state.clone(), page.facts.records));
        }
        if let Some(last) = paginator.last(&page.facts).with_context(|| described.clone())? {
            self.position.last = Some(last);
        }
        let next = match paginator
            .next(&state, &page.facts, self.position.last.as_ref())
            .with_context(|| described.clone())?
        {
            Next::End => None,
            Next::Page(next) => {
                let next = self.without_secrets(next);
                if matches!(next, PageState::Cursor(_) | PageState::Url(_)) && !self.followed.insert(next.clone()) {
                    bail!("{described} points back to a page already read: the pagination would never end");
                }
                if ordinal >= self.settings.max_pages {
                    bail!(
                        "the pagination of shard {} did not end after {ordinal} pages (`max_pages`); raise `max_pages` if the api really has more",
                        self.settings.shard
                    );
                }
                Some(next)
            }
        };
        match &next {
            None => self.in_flight.clear(),
            Some(next) => self.fill_window(next),
        }
        self.cut_batches(state, next, page);
        Ok(())
    }

    /// A next URL without the API key parameter: checkpoints never hold it,
    /// and it is added again when the page is fetched.
    fn without_secrets(&self, state: PageState) -> PageState {
        let (PageState::Url(text), Some(secret)) = (&state, self.fetcher.auth.secret_query()) else { return state };
        let Ok(mut url) = url::Url::parse(text) else { return state };
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| name != secret)
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
        PageState::Url(url.to_string())
    }

    fn cut_batches(&mut self, state: PageState, next: Option<PageState>, page: FetchedPage) {
        let skip_records = std::mem::take(&mut self.position.skip_records);
        let skip_rejected = std::mem::take(&mut self.position.skip_rejected);
        let Batch { schema, rows } = page.records.batch;
        let mut rejected: Vec<_> = page.records.rejected.into_iter().skip(skip_rejected).collect();
        let rejected_total = skip_rejected + rejected.len();
        let mut rows = rows.into_iter().skip(skip_records).peekable();
        let pages_before = self.position.pages;
        let mut delivered = skip_records;
        // The body's bytes count once, with the page's first batch.
        let mut bytes = page.body_bytes;
        loop {
            let chunk: Vec<_> = rows.by_ref().take(self.settings.batch_size.max(1)).collect();
            let done = rows.peek().is_none();
            delivered += chunk.len();
            let batch = Batch::new(schema.clone(), chunk);
            if let Some(cursor) = &self.settings.cursor {
                self.position.mark = mark::batch_mark(&batch, cursor, self.position.mark.take());
            }
            if done {
                self.position.next = next.clone();
                self.position.pages = pages_before + 1;
            } else {
                self.position.next = Some(state.clone());
                self.position.skip_records = delivered;
                self.position.skip_rejected = rejected_total;
                self.position.pages = pages_before;
            }
            let checkpoint = Checkpoint(serde_json::to_value(&self.position).expect("a checkpoint serialises"));
            self.position.skip_records = 0;
            self.position.skip_rejected = 0;
            if !batch.is_empty() || !rejected.is_empty() {
                self.ready.push_back(SourceBatch {
                    batch,
                    rejected: std::mem::take(&mut rejected),
                    checkpoint,
                    bytes_read: Some(std::mem::take(&mut bytes)),
                });
            }
            if done {
                return;
            }
        }
    }
}

#[async_trait]
impl ShardReader for HttpShardReader {
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch));
            }
            let Some(state) = self.position.next.clone() else { return Ok(None) };
            self.fill_window(&state);
            let mut task = self.in_flight.pop_front().expect("the window holds the next page");
            let ordinal = self.position.pages + 1;
            let page = (&mut task.handle)
                .await
                .context("a page fetch stopped")?
                .with_context(|| format!("page #{ordinal} ({state}) of shard {}", self.settings.shard))?;
            self.read_page(state, page)?;
        }
    }
}
