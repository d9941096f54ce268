//! Pagination: which page to ask for next, and when to stop.
//!
//! Each style is a small state machine over [`PageState`], the request state
//! of one page; the state of the next page to read is the shard's
//! checkpoint. Page numbers and offsets are known in advance, so pages can
//! be fetched ahead; cursors and next URLs come from the page before.
//! A paginator that would never end is an error: the same cursor or URL
//! twice, a page identical to the one before, or `max_pages` reached.

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};
use url::Url;

use super::records::JsonPath;

/// `[source.pagination]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationConfig {
    /// One request, one page.
    #[default]
    None,
    /// `?page=1`, `?page=2`, … until the total says so or a page is empty.
    PageNumber {
        #[serde(default = "default_page_param")]
        param: String,
        #[serde(default = "default_first_page")]
        start: u64,
        /// The page size parameter, sent with `size` when both are set.
        size_param: Option<String>,
        size: Option<u64>,
        /// A path to the number of pages, e.g. `meta.total_pages`.
        total_pages: Option<String>,
        /// A path to the number of records (needs `size`), e.g. `meta.total`.
        total: Option<String>,
    },
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, … until the total or an empty page.
    Offset {
        #[serde(default = "default_offset_param")]
        offset_param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        limit: u64,
        /// A path to the number of records, e.g. `meta.total`.
        total: Option<String>,
    },
    /// A cursor token from the body, sent back as `param`, until it is absent.
    Cursor {
        #[serde(default = "default_cursor_param")]
        param: String,
        /// The path to the next cursor, e.g. `meta.next_cursor`.
        cursor: String,
    },
    /// The next page's URL from the body, until it is absent.
    NextUrl {
        /// The path to the next URL, e.g. `links.next`.
        next: String,
    },
    /// The RFC 8288 `Link` header's `rel="next"`, until there is none.
    LinkHeader,
}

fn default_page_param() -> String {
    "page".into()
}

fn default_first_page() -> u64 {
    1
}

fn default_offset_param() -> String {
    "offset".into()
}

fn default_limit_param() -> String {
    "limit".into()
}

fn default_cursor_param() -> String {
    "cursor".into()
}

/// The request state of one page: what the checkpoint stores.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PageState {
    /// The request as configured, before any pagination input.
    First,
    Page(u64),
    Offset(u64),
    Cursor(String),
    Url(String),
}

impl std::fmt::Display for PageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageState::First => f.write_str("the first page"),
            PageState::Page(page) => write!(f, "page {page}"),
            PageState::Offset(offset) => write!(f, "the page at offset {offset}"),
            PageState::Cursor(_) => f.write_str("the page of a cursor"),
            PageState::Url(_) => f.write_str("the page of a next url"),
        }
    }
}

/// What one page tells the paginator.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageFacts {
    /// Records on the page, rejected ones included.
    pub records: usize,
    /// The values at [`Paginator::captures`], in order.
    pub captured: Vec<Option<serde_json::Value>>,
    /// The `Link` header's next target, resolved.
    pub link_next: Option<String>,
    /// The URL that answered, to resolve a relative next URL.
    pub url: Option<Url>,
}

/// Where reading goes after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    Page(PageState),
    End,
}

/// A validated pagination style.
#[derive(Debug, Clone)]
pub(crate) enum Paginator {
    None,
    PageNumber {
        param: String,
        start: u64,
        size: Option<(Option<String>, u64)>,
        total_pages: Option<JsonPath>,
        total: Option<JsonPath>,
    },
    Offset {
        offset_param: String,
        limit_param: String,
        limit: u64,
        total: Option<JsonPath>,
    },
    Cursor {
        param: String,
        cursor: JsonPath,
    },
    NextUrl {
        next: JsonPath,
    },
    LinkHeader,
}

impl Paginator {
    pub(crate) fn new(config: PaginationConfig) -> anyhow::Result<Paginator> {
        let path = |text: Option<String>| text.map(|text| JsonPath::parse(&text)).transpose();
        Ok(match config {
            PaginationConfig::None => Paginator::None,
            PaginationConfig::PageNumber { param, start, size_param, size, total_pages, total } => {
                ensure!(size != Some(0), "`pagination.size` must be at least 1");
                ensure!(
                    total.is_none() || size.is_some(),
                    "`pagination.total` counts records: it needs `size` to count pages"
                );
                ensure!(size_param.is_none() || size.is_some(), "`pagination.size_param` needs `size`");
                ensure!(
                    total.is_none() || total_pages.is_none(),
                    "set either `pagination.total` or `total_pages`, not both"
                );
                Paginator::PageNumber {
                    param,
                    start,
                    size: size.map(|size| (size_param, size)),
                    total_pages: path(total_pages)?,
                    total: path(total)?,
                }
            }
            PaginationConfig::Offset { offset_param, limit_param, limit, total } => {
                ensure!(limit > 0, "`pagination.limit` must be at least 1");
                Paginator::Offset { offset_param, limit_param, limit, total: path(total)? }
            }
            PaginationConfig::Cursor { param, cursor } => {
                Paginator::Cursor { param, cursor: JsonPath::parse(&cursor)? }
            }
            PaginationConfig::NextUrl { next } => Paginator::NextUrl { next: JsonPath::parse(&next)? },
            PaginationConfig::LinkHeader => Paginator::LinkHeader,
        })
    }

    /// The state of a shard's first page.
    pub(crate) fn first(&self) -> PageState {
        match self {
            Paginator::PageNumber { start, .. } => PageState::Page(*start),
            Paginator::Offset { .. } => PageState::Offset(0),
            _ => PageState::First,
        }
    }

    /// Whether the next page can be asked for before this one is read.
    pub(crate) fn fetches_ahead(&self) -> bool {
        matches!(self, Paginator::PageNumber { .. } | Paginator::Offset { .. })
    }

    /// Whether the paginator reads its next page from the body (so a page
    /// whose body cannot be read ends the shard in an error).
    pub(crate) fn needs_body(&self) -> bool {
        matches!(self, Paginator::Cursor { .. } | Paginator::NextUrl { .. })
    }

    /// The page after `state` when pages are known in advance.
    pub(crate) fn successor(&self, state: &PageState) -> Option<PageState> {
        match (self, state) {
            (Paginator::PageNumber { .. }, PageState::Page(page)) => Some(PageState::Page(page + 1)),
            (Paginator::Offset { limit, .. }, PageState::Offset(offset)) => Some(PageState::Offset(offset + limit)),
            _ => None,
        }
    }

    /// The JSON paths whose values [`Paginator::next`] needs, in the order of [`PageFacts::captured`].
    pub(crate) fn captures(&self) -> Vec<JsonPath> {
        match self {
            Paginator::PageNumber { total_pages: Some(path), .. }
            | Paginator::PageNumber { total: Some(path), .. }
            | Paginator::Offset { total: Some(path), .. }
            | Paginator::Cursor { cursor: path, .. }
            | Paginator::NextUrl { next: path } => vec![path.clone()],
            _ => Vec::new(),
        }
    }

    /// The query parameters that ask for the page of `state`; a URL state
    /// replaces the whole request URL instead.
    pub(crate) fn query(&self, state: &PageState) -> Vec<(String, String)> {
        match (self, state) {
            (Paginator::PageNumber { param, size, .. }, PageState::Page(page)) => {
                let mut query = vec![(param.clone(), page.to_string())];
                if let Some((Some(size_param), size)) = size {
                    query.push((size_param.clone(), size.to_string()));
                }
                query
            }
            (Paginator::Offset { offset_param, limit_param, limit, .. }, PageState::Offset(offset)) => {
                vec![(offset_param.clone(), offset.to_string()), (limit_param.clone(), limit.to_string())]
            }
            (Paginator::Cursor { param, .. }, PageState::Cursor(cursor)) => vec![(param.clone(), cursor.clone())],
            _ => Vec::new(),
        }
    }

    /// The last page, when the page just read tells how many there are.
    pub(crate) fn last(&self, facts: &PageFacts) -> anyhow::Result<Option<PageState>> {
        let count = |path: &JsonPath| -> anyhow::Result<Option<u64>> {
            match facts.captured.first().cloned().flatten() {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(value) => {
                    match value.as_u64().or_else(|| value.as_str().and_then(|text| text.trim().parse().ok())) {
                        Some(count) => Ok(Some(count)),
                        None => bail!("`{path}` holds {value}, not a count"),
                    }
                }
            }
        };
        let last_page = |start: u64, pages: u64| PageState::Page(start + pages.max(1) - 1);
        Ok(match self {
            Paginator::PageNumber { start, total_pages: Some(path), .. } => {
                count(path)?.map(|pages| last_page(*start, pages))
            }
            Paginator::PageNumber { start, size: Some((_, size)), total: Some(path), .. } => {
                count(path)?.map(|records| last_page(*start, records.div_ceil(*size)))
            }
            Paginator::Offset { limit, total: Some(path), .. } => {
                count(path)?.map(|records| PageState::Offset(records.saturating_sub(1) / limit * limit))
            }
            _ => None,
        })
    }

    /// Whether `state` lies past `last` (a page the totals rule out).
    pub(crate) fn beyond(state: &PageState, last: &PageState) -> bool {
        match (state, last) {
            (PageState::Page(page), PageState::Page(last)) => page > last,
            (PageState::Offset(offset), PageState::Offset(last)) => offset > last,
            _ => false,
        }
    }

    /// The page after the one of `state`, from what that page told.
    pub(crate) fn next(&self, state: &PageState, facts: &PageFacts, last: Option<&PageState>) -> anyhow::Result<Next> {
        let text = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(text)) if !text.is_empty() => Some(text),
            Some(serde_json::Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        Ok(match self {
            Paginator::None => Next::End,
            Paginator::PageNumber { .. } | Paginator::Offset { .. } => match self.successor(state) {
                Some(next) if last.map_or(facts.records > 0, |last| !Paginator::beyond(&next, last)) => {
                    Next::Page(next)
                }
                _ => Next::End,
            },
            Paginator::Cursor { .. } => match text(facts.captured.first().cloned().flatten()) {
                Some(cursor) => Next::Page(PageState::Cursor(cursor)),
                None => Next::End,
            },
            Paginator::NextUrl { .. } => match text(facts.captured.first().cloned().flatten()) {
                Some(next) => Next::Page(PageState::Url(resolve(facts.url.as_ref(), &next)?)),
                None => Next::End,
            },
            Paginator::LinkHeader => match &facts.link_next {
                Some(next) => Next::Page(PageState::Url(resolve(facts.url.as_ref(), next)?)),
                None => Next::End,
            },
        })
    }
}

/// `next` made absolute against the URL of the page that named it.
fn resolve(base: Option<&Url>, next: &str) -> anyhow::Result<String> {
    let url = match base {
        Some(base) => base.join(next),
        None => Url::parse(next),
    };
    match url {
        Ok(url) => Ok(url.to_string()),
        Err(error) => bail!("the next page's url `{next}` is not valid: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paginator(toml_text: &str) -> anyhow::Result<Paginator> {
        Paginator::new(toml::from_str(toml_text)?)
    }

    fn facts(records: usize, captured: Option<serde_json::Value>) -> PageFacts {
        PageFacts {
            records,
            captured: vec![captured],
            link_next: None,
            url: Some(Url::parse("http://api.test/v1/items?page=1").unwrap()),
        }
    }

    #[test]
    fn page_numbers_stop_at_the_total_or_an_empty_page() {
        let pages = paginator("type = \"page_number\"\ntotal_pages = \"meta.pages\"").unwrap();
        assert_eq!(pages.first(), PageState::Page(1));
        assert!(pages.fetches_ahead());
        let last = pages.last(&facts(10, Some(json!(3)))).unwrap();
        assert_eq!(last, Some(PageState::Page(3)));
        assert_eq!(
            pages.next(&PageState::Page(2), &facts(10, None), last.as_ref()).unwrap(),
            Next::Page(PageState::Page(3))
        );
        assert_eq!(pages.next(&PageState::Page(3), &facts(10, None), last.as_ref()).unwrap(), Next::End);
        assert_eq!(pages.last(&facts(0, Some(json!(0)))).unwrap(), Some(PageState::Page(1)));

        let open_ended =
            paginator("type = \"page_number\"\nparam = \"p\"\nstart = 0\nsize_param = \"n\"\nsize = 50").unwrap();
        assert_eq!(
            open_ended.query(&PageState::Page(4)),
            [("p".to_string(), "4".to_string()), ("n".to_string(), "50".to_string())]
        );
        assert_eq!(
            open_ended.next(&PageState::Page(0), &facts(50, None), None).unwrap(),
            Next::Page(PageState::Page(1))
        );
        assert_eq!(open_ended.next(&PageState::Page(1), &facts(0, None), None).unwrap(), Next::End);

        let by_records = paginator("type = \"page_number\"\nsize = 100\ntotal = \"count\"").unwrap();
        assert_eq!(by_records.last(&facts(100, Some(json!("201")))).unwrap(), Some(PageState::Page(3)));
        assert!(by_records.last(&facts(100, Some(json!("many")))).unwrap_err().to_string().contains("not a count"));
    }

    #[test]
    fn offsets_step_by_the_limit() {
        let offsets = paginator("type = \"offset\"\nlimit = 100\ntotal = \"total\"").unwrap();
        assert_eq!(
            offsets.query(&PageState::Offset(200)),
            [("offset".to_string(), "200".to_string()), ("limit".to_string(), "100".to_string())]
        );
        let last = offsets.last(&facts(100, Some(json!(250)))).unwrap();
        assert_eq!(last, Some(PageState::Offset(200)));
        assert_eq!(
            offsets.next(&PageState::Offset(100), &facts(100, None), last.as_ref()).unwrap(),
            Next::Page(PageState::Offset(200))
        );
        assert_eq!(offsets.next(&PageState::Offset(200), &facts(50, None), last.as_ref()).unwrap(), Next::End);
        assert_eq!(offsets.last(&facts(0, Some(json!(0)))).unwrap(), Some(PageState::Offset(0)));
    }

    #[test]
    fn cursors_urls_and_links_come_from_the_page() {
        let cursor = paginator("type = \"cursor\"\nparam = \"after\"\ncursor = \"meta.next\"").unwrap();
        assert!(!cursor.fetches_ahead() && cursor.needs_body());
        assert_eq!(
            cursor.next(&PageState::First, &facts(5, Some(json!("abc"))), None).unwrap(),
            Next::Page(PageState::Cursor("abc".into()))
        );
        assert_eq!(
            cursor.next(&PageState::First, &facts(5, Some(json!(42))), None).unwrap(),
            Next::Page(PageState::Cursor("42".into()))
        );
        for end in [json!(""), json!(null)] {
            assert_eq!(cursor.next(&PageState::First, &facts(5, Some(end)), None).unwrap(), Next::End);
        }
        assert_eq!(cursor.query(&PageState::Cursor("abc".into())), [("after".to_string(), "abc".to_string())]);
        assert!(cursor.query(&PageState::First).is_empty());

        let next_url = paginator("type = \"next_url\"\nnext = \"links.next\"").unwrap();
        let relative = next_url.next(&PageState::First, &facts(5, Some(json!("items?page=2"))), None).unwrap();
        assert_eq!(relative, Next::Page(PageState::Url("http://api.test/v1/items?page=2".into())));

        let link = paginator("type = \"link_header\"").unwrap();
        let mut page = facts(5, None);
        page.link_next = Some("/v2/items?page=3".into());
        assert_eq!(
            link.next(&PageState::First, &page, None).unwrap(),
            Next::Page(PageState::Url("http://api.test/v2/items?page=3".into()))
        );
        page.link_next = None;
        assert_eq!(link.next(&PageState::First, &page, None).unwrap(), Next::End);
        assert_eq!(Paginator::None.next(&PageState::First, &page, None).unwrap(), Next::End);
    }

    #[test]
    fn configuration_errors_are_explained() {
        let error = paginator("type = \"offset\"\nlimit = 10\nlimt = 5").unwrap_err().to_string();
        assert!(error.contains("unknown field `limt`"), "{error}");
        let error = paginator("type = \"page_number\"\ntotal = \"count\"").unwrap_err().to_string();
        assert!(error.contains("needs `size`"), "{error}");
        let error = paginator("type = \"cursors\"").unwrap_err().to_string();
        assert!(error.contains("unknown variant `cursors`"), "{error}");
        assert!(paginator("type = \"offset\"\nlimit = 0").is_err());
    }
}
