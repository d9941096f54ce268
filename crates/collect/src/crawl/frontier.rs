//! The frontier: the pages a shard has finished, is fetching, and will fetch.
//!
//! Pages leave the queue in first-in, first-out order (breadth first) and
//! must be finished in the order they left it; the reader keeps that order
//! even while it fetches many pages at once, so a crawl of an unchanging
//! site visits its pages in the same order every time, whatever the timing.
//!
//! Every URL is admitted once: the frontier remembers each URL it ever
//! queued, exactly (no hashes, no bloom filter). At most `max_pages` URLs
//! are admitted in all, which bounds both memory and the checkpoint.
//!
//! The checkpoint ([`FrontierState`], format version 1) lists the finished
//! pages, with their depth and the validators of their last response, then
//! the pages still to fetch, those in flight first. Restoring it re-admits
//! exactly these URLs, so the crawl continues with the unfinished pages and
//! never fetches a finished one again. Its size is about the length of every
//! admitted URL plus 10 to 20 bytes each, and of the validators, so at most
//! `max_pages` × (URL length + 80) bytes.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The version of [`FrontierState`] written today.
pub const FRONTIER_FORMAT: u32 = 1;

/// What a response said about its page's version, for a later conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A finished page, written `[url, depth, etag, last_modified]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonePage(pub String, pub u32, pub Option<String>, pub Option<String>);

impl DonePage {
    pub fn url(&self) -> &str {
        &self.0
    }

    pub fn depth(&self) -> u32 {
        self.1
    }

    pub fn validators(&self) -> Validators {
        Validators { etag: self.2.clone(), last_modified: self.3.clone() }
    }
}

/// A page waiting to be fetched, written `[url, depth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedPage(pub String, pub u32);

/// A frontier as its checkpoint holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontierState {
    pub version: u32,
    /// Finished pages, in the order they finished.
    pub done: Vec<DonePage>,
    /// Pages to fetch, in the order they will be fetched.
    pub queue: Vec<QueuedPage>,
}

/// A page on its way through the frontier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub url: Arc<str>,
    /// Links followed from a seed or sitemap entry to reach it.
    pub depth: u32,
}

/// A shard's frontier; see the module documentation.
#[derive(Debug)]
pub struct Frontier {
    queue: VecDeque<Page>,
    in_flight: VecDeque<Page>,
    done: Vec<(Page, Validators)>,
    seen: HashSet<Arc<str>>,
    max_pages: usize,
}

impl Frontier {
    /// An empty frontier that admits at most `max_pages` URLs.
    pub fn new(max_pages: usize) -> Self {
        Frontier {
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            done: Vec::new(),
            seen: HashSet::new(),
            max_pages,
        }
    }

    /// The frontier a checkpoint saved.
    pub fn restore(state: FrontierState, max_pages: usize) -> Result<Self, String> {
        if state.version != FRONTIER_FORMAT {
            return Err(format!(
                "the crawl checkpoint has format version {}, this haul reads version {FRONTIER_FORMAT}",
                state.version
            ));
        }
        let mut frontier = Frontier::new(max_pages.max(state.done.len() + state.queue.len()));
        for DonePage(url, depth, etag, last_modified) in state.done {
            let url = frontier.remember(&url).ok_or_else(|| format!("the crawl checkpoint lists {url} twice"))?;
            frontier.done.push((Page { url, depth }, Validators { etag, last_modified }));
        }
        for QueuedPage(url, depth) in state.queue {
            let url = frontier.remember(&url).ok_or_else(|| format!("the crawl checkpoint lists {url} twice"))?;
            frontier.queue.push_back(Page { url, depth });
        }
        frontier.max_pages = max_pages;
        Ok(frontier)
    }

    /// The checkpoint of this frontier: pages in flight count as not fetched.
    pub fn state(&self) -> FrontierState {
        let done = self
            .done
            .iter()
            .map(|(page, validators)| {
                DonePage(page.url.to_string(), page.depth, validators.etag.clone(), validators.last_modified.clone())
            })
            .collect();
        let queue =
            self.in_flight.iter().chain(&self.queue).map(|page| QueuedPage(page.url.to_string(), page.depth)).collect();
        FrontierState { version: FRONTIER_FORMAT, done, queue }
    }

    /// Whether `url` would be admitted: never seen, and room is left.
    pub fn admits(&self, url: &str) -> bool {
        !self.seen.contains(url) && !self.is_full()
    }

    /// Whether `max_pages` URLs have been admitted.
    pub fn is_full(&self) -> bool {
        self.seen.len() >= self.max_pages
    }

    /// Queues `url` unless it was seen before or the frontier is full; says whether it was queued.
    pub fn push(&mut self, url: &str, depth: u32) -> bool {
        if self.is_full() {
            return false;
        }
        match self.remember(url) {
            Some(url) => {
                self.queue.push_back(Page { url, depth });
                true
            }
            None => false,
        }
    }

    fn remember(&mut self, url: &str) -> Option<Arc<str>> {
        if self.seen.contains(url) {
            return None;
        }
        let url: Arc<str> = Arc::from(url);
        self.seen.insert(url.clone());
        Some(url)
    }

    /// The next page to fetch; it stays in flight until [`Frontier::finish`].
    pub fn dispatch(&mut self) -> Option<Page> {
        let page = self.queue.pop_front()?;
        self.in_flight.push_back(page.clone());
        Some(page)
    }

    /// Finishes the page dispatched first among those in flight, with the
    /// validators to send when it is fetched again.
    pub fn finish(&mut self, validators: Validators) -> Page {
        let page = self.in_flight.pop_front().expect("a page is finished only after it was dispatched");
        self.done.push((page.clone(), validators));
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(node: usize) -> String {
        format!("http://site.test/{node}")
    }

    /// Crawls a graph of pages (`links[n]` are the pages page `n` links to)
    /// from page 0 with `concurrency` pages in flight, finishing them in
    /// order, and stops after `stop_after` pages. Returns the pages finished.
    fn crawl(frontier: &mut Frontier, links: &[Vec<usize>], concurrency: usize, stop_after: usize) -> Vec<String> {
        let mut finished = Vec::new();
        while finished.len() < stop_after {
            while frontier.in_flight.len() < concurrency && frontier.dispatch().is_some() {}
            if frontier.in_flight.is_empty() {
                break;
            }
            let page = frontier.finish(Validators::default());
            let node: usize = page.url.rsplit('/').next().unwrap().parse().unwrap();
            for link in &links[node] {
                frontier.push(&url(*link), page.depth + 1);
            }
            finished.push(page.url.to_string());
        }
        finished
    }

    fn graph() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..40).prop_flat_map(|pages| prop::collection::vec(prop::collection::vec(0..pages, 0..6), pages))
    }

    proptest! {
        #[test]
        fn a_restored_frontier_continues_with_exactly_the_unvisited_pages(
            links in graph(),
            concurrency in 1usize..6,
            stop_fraction in 0.0f64..1.0,
            max_pages in 1usize..50,
        ) {
            let fresh = || {
                let mut frontier = Frontier::new(max_pages);
                frontier.push(&url(0), 0);
                frontier
            };
            let whole = crawl(&mut fresh(), &links, concurrency, usize::MAX);
            prop_assert!(whole.len() <= max_pages);
            let unique: HashSet<_> = whole.iter().collect();
            prop_assert_eq!(unique.len(), whole.len(), "a page was fetched twice");

            let stop = (whole.len() as f64 * stop_fraction) as usize;
            let mut first = fresh();
            let before = crawl(&mut first, &links, concurrency, stop);
            let saved = serde_json::to_string(&first.state()).unwrap();
            let state: FrontierState = serde_json::from_str(&saved).unwrap();
            let unvisited: Vec<String> = state.queue.iter().map(|page| page.0.clone()).collect();
            let mut restored = Frontier::restore(state, max_pages).unwrap();
            let after = crawl(&mut restored, &links, concurrency, usize::MAX);

            prop_assert_eq!(&before, &whole[..stop]);
            prop_assert_eq!(&after, &whole[stop..]);
            prop_assert!(after.iter().all(|page| !before.contains(page)));
            // the pages the checkpoint left unvisited are fetched first after it, in their order
            prop_assert_eq!(&after[..unvisited.len()], &unvisited[..]);
            prop_assert_eq!(restored.done.len(), whole.len());
        }
    }

    #[test]
    fn admits_each_url_once_and_at_most_max_pages() {
        let mut frontier = Frontier::new(2);
        assert!(frontier.push("http://a/1", 0));
        assert!(!frontier.push("http://a/1", 3));
        assert!(!frontier.admits("http://a/1"));
        assert!(frontier.push("http://a/2", 1));
        assert!(frontier.is_full());
        assert!(!frontier.push("http://a/3", 1));
        let first = frontier.dispatch().unwrap();
        assert_eq!(first, Page { url: "http://a/1".into(), depth: 0 });
        frontier.finish(Validators { etag: Some("\"v1\"".into()), last_modified: None });
        frontier.dispatch().unwrap();
        assert_eq!(
            frontier.state(),
            FrontierState {
                version: 1,
                done: vec![DonePage("http://a/1".into(), 0, Some("\"v1\"".into()), None)],
                queue: vec![QueuedPage("http://a/2".into(), 1)],
            }
        );
    }

    #[test]
    fn the_checkpoint_format_is_stable() {
        let path = format!("{}/tests/golden/crawl/checkpoint-v1.json", env!("CARGO_MANIFEST_DIR"));
        let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let state: FrontierState = serde_json::from_value(golden.clone()).unwrap();
        let restored = Frontier::restore(state, 10).unwrap();
        assert_eq!(serde_json::to_value(restored.state()).unwrap(), golden);
        assert!(!restored.admits("http://site.test/page/1.html"));
        assert!(!restored.admits("http://site.test/page/3.html?a=1&b=2"));
        assert!(restored.admits("http://site.test/page/4.html"));
    }

    #[test]
    fn refuses_other_versions_and_repeated_urls() {
        let state = |version, queue: Vec<QueuedPage>| FrontierState { version, done: Vec::new(), queue };
        assert!(Frontier::restore(state(2, Vec::new()), 10).unwrap_err().contains("version 2"));
        let twice = vec![QueuedPage("http://a/1".into(), 0), QueuedPage("http://a/1".into(), 1)];
        assert!(Frontier::restore(state(1, twice), 10).unwrap_err().contains("twice"));
    }
}
