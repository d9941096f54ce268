//! Fetching one page: the request built for the shard and page, sent with
//! its credentials (once more with fresh ones after a 401 when OAuth2 can
//! get them), and its body read into records. Pages are fetched in tasks of
//! their own, so several pages of a shard can be in flight and parsed at once.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use anyhow::bail;
use haul_collect_core::{Batch, Rejected, Schema};
use reqwest::StatusCode;
use reqwest::header::LINK;

use super::auth::Auth;
use super::link_header::find_link;
use super::pagination::{PageFacts, PageState, Paginator};
use super::records::{BodyError, JsonPath, PageRecords, ResponseFormat, read_body};
use super::request::ResolvedRequest;
use super::template::Vars;
use crate::web::{WebClient, WebResponse};

/// The most of an unreadable body kept in its dead letter.
const MAX_REJECTED_BODY: usize = 64 * 1024;

/// Everything needed to fetch pages, shared by the shards of a source.
pub(crate) struct Fetcher {
    pub client: WebClient,
    pub request: ResolvedRequest,
    pub auth: Auth,
    pub paginator: Paginator,
    pub format: ResponseFormat,
    pub records: JsonPath,
}

/// One page, fetched and read.
pub(crate) struct FetchedPage {
    pub records: PageRecords,
    pub facts: PageFacts,
    /// A fingerprint of the records, to notice an API that ignores the page parameter.
    pub body_hash: u64,
    pub body_bytes: u64,
    /// Why the body could not be read, when it could not (it is then one rejected record).
    pub unreadable: Option<String>,
}

impl Fetcher {
    /// Fetches and reads the page of `state`; `position` names it in errors and dead letters.
    pub(crate) async fn fetch_page(
        self: Arc<Self>,
        vars: Arc<Vars>,
        state: PageState,
        position: String,
    ) -> anyhow::Result<FetchedPage> {
        let response = self.send(&vars, &state).await?;
        let link_next =
            find_link(response.headers.get_all(LINK).iter().filter_map(|value| value.to_str().ok()), "next");
        let captures = self.paginator.captures();
        let (records, unreadable) = match read_body(self.format, &response.body, &self.records, &captures, &position) {
            Ok(records) => (records, None),
            Err(BodyError(reason)) => {
                let rejected = Rejected {
                    reason: reason.clone(),
                    position: position.clone(),
                    record: serde_json::Value::String(excerpt(&response.body)),
                    stage: "source".to_string(),
                };
                let empty = Batch::empty(Arc::new(Schema::default()));
                (
                    PageRecords { batch: empty, rejected: vec![rejected], captured: vec![None; captures.len()] },
                    Some(reason),
                )
            }
        };
        let body_hash = fingerprint(&records);
        let facts = PageFacts {
            records: records.count(),
            captured: records.captured.clone(),
            link_next,
            url: Some(response.url),
        };
        Ok(FetchedPage { records, facts, body_hash, body_bytes: response.body.len() as u64, unreadable })
    }

    async fn send(&self, vars: &Vars, state: &PageState) -> anyhow::Result<WebResponse> {
        let mut retried_credentials = false;
        loop {
            let mut request = self.request.build(vars, state, &self.paginator)?;
            self.auth.apply(&self.client, &mut request).await?;
            let response = self.client.fetch(&request).await.map_err(|error| error.into_anyhow())?;
            if response.status == StatusCode::UNAUTHORIZED && !retried_credentials && self.auth.refused(&request).await
            {
                retried_credentials = true;
                continue;
            }
            if !response.status.is_success() {
                bail!(
                    "{} {} answered {}{}",
                    request.method,
                    request.shown_url(),
                    response.status,
                    quoted_excerpt(&response.body)
                );
            }
            return Ok(response);
        }
    }
}

/// A fingerprint of a page's records: their count and the first and last
/// of them, enough to tell a page served again from the next one.
fn fingerprint(records: &PageRecords) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let batch = &records.batch;
    (batch.len(), records.rejected.len()).hash(&mut hasher);
    for row in [batch.rows.first(), batch.rows.last()].into_iter().flatten() {
        batch.row_to_json(row).to_string().hash(&mut hasher);
    }
    if let Some(rejected) = records.rejected.first() {
        rejected.record.to_string().hash(&mut hasher);
    }
    hasher.finish()
}

/// The start of a body as text, for dead letters.
fn excerpt(body: &[u8]) -> String {
    let cut = body.len().min(MAX_REJECTED_BODY);
    let mut text = String::from_utf8_lossy(&body[..cut]).into_owned();
    if cut < body.len() {
        text.push_str(&format!("… ({} bytes in all)", body.len()));
    }
    text
}

/// `: "<the body's first line>"` for an error message, or nothing.
fn quoted_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() { String::new() } else { format!(": \"{line}\"") }
}
