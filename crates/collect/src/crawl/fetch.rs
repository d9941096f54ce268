//! Fetching one page and making it a record, a dead letter or nothing.
//!
//! A 2xx page is extracted: it becomes a record, or a dead letter when a
//! required field is missing. A 304 (the page is unchanged since the
//! validators sent) yields nothing. Any other final status, a body over the
//! size cap, too many redirects, or a 5xx or timeout that outlasts the
//! client's retries is a dead letter for this page alone. Failures that
//! concern the whole host fail the shard with a transient error, so that the
//! run retries it from its checkpoint later: a 429 or a network error that
//! outlasts the retries, or a `Retry-After` longer than allowed.

use std::sync::Arc;

use chrono::Utc;
use haul_collect_core::{Rejected, Value};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use url::Url;

use super::config::{Crawl, Metadata};
use super::extract::Extracted;
use super::frontier::{Page, Validators};
use crate::web::{WebClient, WebError, WebRequest, WebResponse};

/// What became of one page.
#[derive(Debug)]
pub struct Fetched {
    /// The record, for a page that was extracted.
    pub row: Option<Vec<Value>>,
    /// The dead letter, for a page that failed.
    pub rejected: Option<Rejected>,
    /// What to send when asking for the page again.
    pub validators: Validators,
    /// Links to consider following.
    pub links: Vec<Url>,
    /// Body bytes received.
    pub bytes: u64,
}

/// Fetches `page` (conditionally when `previous` validators are known) and
/// extracts it; links are kept only when `follow_links`.
pub async fn fetch_page(
    crawl: Arc<Crawl>,
    client: WebClient,
    page: Page,
    previous: Option<Validators>,
    follow_links: bool,
) -> anyhow::Result<Fetched> {
    let url = Url::parse(&page.url)?;
    let mut request = WebRequest::get(url.clone());
    if let Some(previous) = &previous {
        let headers = [(IF_NONE_MATCH, &previous.etag), (IF_MODIFIED_SINCE, &previous.last_modified)];
        for (name, value) in headers {
            if let Some(value) = value.as_deref().and_then(|value| HeaderValue::from_str(value).ok()) {
                request.headers.insert(name, value);
            }
        }
    }
    match client.fetch(&request).await {
        Ok(response) => Ok(read_response(&crawl, &page, response, previous, follow_links)),
        Err(error) if concerns_the_host(&error) => Err(error.into_anyhow()),
        Err(error) => Ok(Fetched {
            row: None,
            rejected: Some(rejection(&page, None, error.to_string(), None)),
            validators: Validators::default(),
            links: Vec::new(),
            bytes: 0,
        }),
    }
}

/// Whether a failed request says more about the host than about the page.
fn concerns_the_host(error: &WebError) -> bool {
    match error {
        WebError::RetryAfterTooLong { .. } => true,
        WebError::GaveUp { last, .. } => match last.as_ref() {
            WebError::Network { .. } => true,
            WebError::Status { status, .. } => *status == StatusCode::TOO_MANY_REQUESTS,
            _ => false,
        },
        _ => false,
    }
}

/// The record, dead letter or nothing a response makes; runs the extraction (CPU-bound).
fn read_response(
    crawl: &Crawl,
    page: &Page,
    response: WebResponse,
    previous: Option<Validators>,
    follow_links: bool,
) -> Fetched {
    let status = response.status;
    let bytes = response.body.len() as u64;
    let header = |name| response.header(name).map(str::to_string);
    let validators = Validators { etag: header(ETAG), last_modified: header(LAST_MODIFIED) };
    if status == StatusCode::NOT_MODIFIED {
        let previous = previous.unwrap_or_default();
        let validators = Validators {
            etag: validators.etag.or(previous.etag),
            last_modified: validators.last_modified.or(previous.last_modified),
        };
        return Fetched { row: None, rejected: None, validators, links: Vec::new(), bytes };
    }
    if !status.is_success() {
        let reason = format!("the server answered {status}");
        let rejected = rejection(page, Some(status), reason, None);
        return Fetched {
            row: None,
            rejected: Some(rejected),
            validators: Validators::default(),
            links: Vec::new(),
            bytes,
        };
    }
    let fetched_at = Utc::now();
    let content_type = response.header(CONTENT_TYPE).unwrap_or("text/html");
    let extracted = if content_type.contains("html") {
        let html = String::from_utf8_lossy(&response.body);
        crawl.extractor.extract(&html, &response.url, &crawl.normalizer, follow_links)
    } else {
        crawl.extractor.nothing(&format!("the page is {content_type}, not html"))
    };
    let Extracted { values, failure, links } = extracted;
    match failure {
        Some(reason) => {
            let fields =
                crawl.extractor.field_names().zip(&values).map(|(name, value)| (name.to_string(), value.to_json()));
            let rejected = rejection(page, Some(status), reason, Some(fields.collect()));
            Fetched { row: None, rejected: Some(rejected), validators, links, bytes }
        }
        None => {
            let mut row = Vec::with_capacity(crawl.schema.fields.len());
            for fact in &crawl.metadata {
                row.push(match fact {
                    Metadata::Url => Value::String(page.url.to_string()),
                    Metadata::Status => Value::Int(i64::from(status.as_u16())),
                    Metadata::FetchedAt => Value::TimestampTz(fetched_at),
                });
            }
            row.extend(values);
            Fetched { row: Some(row), rejected: None, validators, links, bytes }
        }
    }
}

/// A dead letter for `page`: its URL, status and whatever fields were read.
fn rejection(
    page: &Page,
    status: Option<StatusCode>,
    reason: String,
    fields: Option<serde_json::Map<String, serde_json::Value>>,
) -> Rejected {
    let mut record = serde_json::Map::new();
    record.insert("url".into(), serde_json::Value::String(page.url.to_string()));
    if let Some(status) = status {
        record.insert("status".into(), serde_json::Value::from(status.as_u16()));
    }
    record.extend(fields.into_iter().flatten());
    Rejected {
        reason,
        position: page.url.to_string(),
        record: serde_json::Value::Object(record),
        stage: "source".to_string(),
    }
}
