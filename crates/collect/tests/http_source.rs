//! The `http` source against a local axum API: every pagination style,
//! resume from every checkpoint (the conformance helpers), NDJSON and CSV
//! bodies, `Retry-After`, slow pages, redirects, malformed pages, each kind
//! of authentication (with OAuth2 tokens that expire), incremental and range
//! runs, and paginators that would never end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json as JsonBody, Router};
use haul_collect::http::HttpSourcePlugin;
use haul_collect_core::job::{Mode, RangeBounds};
use haul_collect_core::registry::{BuildError, PluginRegistry};
use haul_collect_core::testsuite::{self, assert_resume_yields_rest, read_all, read_shard};
use haul_collect_core::transient::is_transient;
use haul_collect_core::{Checkpoint, PlanContext, Source};
use serde_json::{Value as Json, json};

/// The records the API holds: `id` from 1, `updated_at` one minute apart.
fn record(id: usize) -> Json {
    json!({"id": id, "name": format!("n{id}"), "updated_at": format!("2024-01-01T00:{:02}:00Z", id % 60), "tags": ["t", id % 3]})
}

fn records(ids: std::ops::RangeInclusive<usize>) -> Vec<Json> {
    ids.map(record).collect()
}

#[derive(Default)]
struct Api {
    /// How many records the API serves.
    total: AtomicUsize,
    calls: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    tokens_issued: AtomicUsize,
    token_uses: Mutex<HashMap<String, usize>>,
}

type Params = Query<HashMap<String, String>>;

impl Api {
    fn count(&self, key: &str) -> usize {
        let mut calls = self.calls.lock().unwrap();
        let count = calls.entry(key.to_string()).or_default();
        *count += 1;
        *count
    }

    fn calls(&self, key: &str) -> usize {
        self.calls.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Records `[start, start + len)` of the zero-based list.
    fn slice(&self, start: usize, len: usize) -> Vec<Json> {
        let end = (start + len).min(self.total());
        (start..end).map(|index| record(index + 1)).collect()
    }
}

fn number(params: &HashMap<String, String>, name: &str, default: usize) -> usize {
    params.get(name).and_then(|value| value.parse().ok()).unwrap_or(default)
}

const PAGE: usize = 5;

async fn page_number(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let page = number(&params, "page", 1);
    let size = number(&params, "per_page", PAGE);
    let total = api.total();
    let items = api.slice((page - 1) * size, size);
    JsonBody(json!({"data": {"items": items}, "meta": {"total_pages": total.div_ceil(size), "total": total}}))
        .into_response()
}

/// Pages without totals, answering slower for earlier pages so that pages
/// fetched ahead complete out of order.
async fn open_ended(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let page = number(&params, "page", 1);
    let now = api.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    api.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(((4 - page % 4) * 10) as u64)).await;
    api.in_flight.fetch_sub(1, Ordering::SeqCst);
    JsonBody(api.slice((page - 1) * PAGE, PAGE)).into_response()
}

async fn offset(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    // The API caps pages at 4 records whatever the limit asks.
    let limit = number(&params, "limit", PAGE).min(4);
    let items = api.slice(number(&params, "offset", 0), limit);
    JsonBody(json!({"items": items, "total": api.total()})).into_response()
}

async fn offset_open(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let items = api.slice(number(&params, "offset", 0), number(&params, "limit", PAGE).min(4));
    JsonBody(json!({"items": items})).into_response()
}

async fn cursor(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let start: usize = params.get("after").map_or(0, |cursor| cursor.trim_start_matches("c").parse().unwrap());
    let items = api.slice(start, PAGE);
    let next = (start + PAGE < api.total()).then(|| format!("c{}", start + PAGE));
    JsonBody(json!({"items": items, "meta": {"next_cursor": next}})).into_response()
}

async fn next_url(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let page = number(&params, "p", 1);
    let next = (page * PAGE < api.total()).then(|| format!("next?p={}", page + 1));
    JsonBody(json!({"results": api.slice((page - 1) * PAGE, PAGE), "links": {"next": next}})).into_response()
}

async fn link(State(api): State<Arc<Api>>, headers: HeaderMap, Query(params): Params) -> Response {
    let page = number(&params, "page", 1);
    let host = headers.get(header::HOST).unwrap().to_str().unwrap();
    let mut response = JsonBody(api.slice((page - 1) * PAGE, PAGE)).into_response();
    if page * PAGE < api.total() {
        let value =
            format!("<http://{host}/link?page=1>; rel=\"first\", <http://{host}/link?page={}>; rel=\"next\"", page + 1);
        response.headers_mut().insert(header::LINK, value.parse().unwrap());
    }
    response
}

async fn ndjson(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let page = number(&params, "page", 1);
    let mut lines: Vec<String> = api.slice((page - 1) * PAGE, PAGE).iter().map(Json::to_string).collect();
    if page == 2 {
        lines.insert(1, "{not json".into());
    }
    lines.join("\n").into_response()
}

async fn csv(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let page = number(&params, "page", 1);
    let rows = api.slice((page - 1) * PAGE, PAGE);
    let mut text = "id,name\n".to_string();
    for row in rows {
        text.push_str(&format!("{},{}\n", row["id"], row["name"].as_str().unwrap()));
    }
    ([(header::CONTENT_TYPE, "text/csv")], text).into_response()
}

/// Page 2 answers 429 with `Retry-After: 1` the first time it is asked for.
async fn throttled(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let page = number(&params, "page", 1);
    if page == 2 && api.count("throttled-2") == 1 {
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response();
    }
    JsonBody(api.slice((page - 1) * PAGE, PAGE)).into_response()
}

async fn slow() -> Response {
    tokio::time::sleep(Duration::from_secs(10)).await;
    JsonBody(json!([])).into_response()
}

async fn moved(Query(params): Params) -> Redirect {
    Redirect::temporary(&format!("/open?page={}", number(&params, "page", 1)))
}

/// Page 2's body is cut short.
async fn malformed(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let page = number(&params, "page", 1);
    if page == 2 {
        return ([(header::CONTENT_TYPE, "application/json")], "[{\"id\": 6, \"na").into_response();
    }
    JsonBody(api.slice((page - 1) * PAGE, PAGE)).into_response()
}

async fn malformed_cursor(Query(params): Params) -> Response {
    match params.get("after") {
        None => JsonBody(json!({"items": [record(1)], "meta": {"next_cursor": "c1"}})).into_response(),
        Some(_) => "{\"items\": [".into_response(),
    }
}

/// A cursor that never changes.
async fn stuck_cursor() -> Response {
    JsonBody(json!({"items": [record(1)], "meta": {"next_cursor": "same"}})).into_response()
}

/// Ignores the page parameter: every page is the first.
async fn ignores_page(State(api): State<Arc<Api>>) -> Response {
    JsonBody(api.slice(0, PAGE)).into_response()
}

async fn secure(State(api): State<Arc<Api>>, headers: HeaderMap, Query(params): Params) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let accepted = match params.get("scheme").map(String::as_str) {
        Some("bearer") => authorization == "Bearer t0k3n",
        // "ann:s3cr3t"
        Some("basic") => authorization == "Basic YW5uOnMzY3IzdA==",
        Some("header-key") => headers.get("x-api-key").is_some_and(|key| key == "k3y"),
        Some("query-key") => params.get("api_key").is_some_and(|key| key == "k3y"),
        Some("oauth2") => {
            let token = authorization.strip_prefix("Bearer ").unwrap_or("").to_string();
            let mut uses = api.token_uses.lock().unwrap();
            // A token is good for three requests, then it expires.
            match uses.get_mut(&token) {
                Some(count) if *count < 3 => {
                    *count += 1;
                    true
                }
                _ => false,
            }
        }
        _ => false,
    };
    if !accepted {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let page = number(&params, "page", 1);
    JsonBody(api.slice((page - 1) * PAGE, PAGE)).into_response()
}

async fn token(State(api): State<Arc<Api>>, headers: HeaderMap, body: String) -> Response {
    // client "haul", secret "cl13nt" with HTTP basic authentication
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if authorization != "Basic aGF1bDpjbDEzbnQ="
        || !body.contains("grant_type=client_credentials")
        || !body.contains("scope=read+list")
    {
        return (StatusCode::UNAUTHORIZED, "bad client").into_response();
    }
    let issued = api.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("tok{issued}");
    api.token_uses.lock().unwrap().insert(token.clone(), 0);
    JsonBody(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})).into_response()
}

/// Records changed after `updated_since` (all without it), in `updated_at` order.
async fn changes(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    let since = params.get("updated_since").cloned().unwrap_or_default();
    let items: Vec<Json> =
        api.slice(0, usize::MAX).into_iter().filter(|r| r["updated_at"].as_str().unwrap() > since.as_str()).collect();
    JsonBody(json!({"items": items})).into_response()
}

/// Records of the days in `[from, to)`: record `id` belongs to day `id % 3` of January 2024, paged by 2.
async fn daily(State(api): State<Arc<Api>>, Query(params): Params) -> Response {
    api.count("daily");
    let now = api.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    api.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    api.in_flight.fetch_sub(1, Ordering::SeqCst);
    let (from, to) = (params["from"].clone(), params["to"].clone());
    let page = number(&params, "page", 1);
    let day = |r: &Json| format!("2024-01-{:02}", r["id"].as_u64().unwrap() % 3 + 1);
    let matching: Vec<Json> = api
        .slice(0, usize::MAX)
        .into_iter()
        .filter(|r| day(r) >= from && day(r) < to)
        .map(|mut r| {
            r["day"] = json!(day(&r));
            r
        })
        .collect();
    let items: Vec<Json> = matching.into_iter().skip((page - 1) * 2).take(2).collect();
    JsonBody(json!({"items": items})).into_response()
}

async fn serve(total: usize) -> (String, Arc<Api>) {
    let api = Arc::new(Api { total: AtomicUsize::new(total), ..Api::default() });
    let app = Router::new()
        .route("/pages", get(page_number))
        .route("/open", get(open_ended))
        .route("/offset", get(offset))
        .route("/offset-open", get(offset_open))
        .route("/cursor", get(cursor))
        .route("/next", get(next_url))
        .route("/link", get(link))
        .route("/ndjson", get(ndjson))
        .route("/csv", get(csv))
        .route("/throttled", get(throttled))
        .route("/slow", get(slow))
        .route("/moved", get(moved))
        .route("/malformed", get(malformed))
        .route("/malformed-cursor", get(malformed_cursor))
        .route("/stuck", get(stuck_cursor))
        .route("/ignores-page", get(ignores_page))
        .route("/secure", get(secure))
        .route("/oauth/token", post(token))
        .route("/changes", get(changes))
        .route("/daily", get(daily))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), api)
}

fn try_source(options: Json) -> Result<Arc<dyn Source>, String> {
    let table: toml::Table = serde_json::from_value(options).unwrap();
    let spec =
        haul_collect_core::job::PluginSpec { kind: "http".into(), options: table, location: vec!["source".into()] };
    let mut registry = PluginRegistry::default();
    registry.add(HttpSourcePlugin);
    registry.build::<dyn Source>(&spec).map_err(|error| match error {
        BuildError::Config { path, message } => format!("{}: {message}", path.join(".")),
        other => format!("{other:#}"),
    })
}

fn source(options: Json) -> Arc<dyn Source> {
    try_source(options).unwrap()
}

/// Quick retries, so that failure tests end fast.
fn quick() -> Json {
    json!({"retry": {"attempts": 2, "initial_backoff": "10ms", "max_backoff": "20ms"}})
}

fn full() -> PlanContext {
    testsuite::full_context(2)
}

#[tokio::test]
async fn every_paginator_reads_everything_and_resumes_exactly() {
    let (base, _) = serve(23).await;
    let styles = [
        json!({"url": format!("{base}/pages"), "records": "data.items", "pagination": {"type": "page_number", "size_param": "per_page", "size": 5, "total_pages": "meta.total_pages"}}),
        json!({"url": format!("{base}/pages"), "records": "data.items", "pagination": {"type": "page_number", "size_param": "per_page", "size": 4, "total": "meta.total"}}),
        json!({"url": format!("{base}/open"), "pagination": {"type": "page_number"}}),
        json!({"url": format!("{base}/offset"), "records": "items", "pagination": {"type": "offset", "limit": 4, "total": "total"}}),
        json!({"url": format!("{base}/offset-open"), "records": "items", "pagination": {"type": "offset", "limit": 4}}),
        json!({"url": format!("{base}/cursor"), "records": "items", "pagination": {"type": "cursor", "param": "after", "cursor": "meta.next_cursor"}}),
        json!({"url": format!("{base}/next"), "records": "results", "pagination": {"type": "next_url", "next": "links.next"}}),
        json!({"url": format!("{base}/link"), "pagination": {"type": "link_header"}}),
    ];
    for options in styles {
        let source = source(options.clone());
        for batch_size in [2, 5, 100] {
            let read = assert_resume_yields_rest(source.as_ref(), &full(), batch_size).await;
            assert_eq!(read.unwrap_or_else(|error| panic!("{options}: {error:#}")), records(1..=23), "{options}");
        }
    }
}

#[tokio::test]
async fn empty_and_single_record_apis() {
    for total in [0, 1, 5] {
        let (base, api) = serve(total).await;
        let offsets = source(
            json!({"url": format!("{base}/offset"), "records": "items", "pagination": {"type": "offset", "limit": 4, "total": "total"}}),
        );
        let read = assert_resume_yields_rest(offsets.as_ref(), &full(), 1).await.unwrap();
        assert_eq!(read, records(1..=total));
        let pages =
            source(json!({"url": format!("{base}/open"), "pagination": {"type": "page_number"}, "prefetch": 1}));
        let before = api.calls("open");
        assert_eq!(read_all(pages.as_ref(), &full(), 5).await.unwrap().records, records(1..=total));
        assert_eq!(api.calls("open"), before, "a counter of another route moved");
    }
}

#[tokio::test]
async fn pages_fetched_ahead_arrive_in_order_within_the_host_limit() {
    let (base, api) = serve(60).await;
    let source = source(json!({
        "url": format!("{base}/open"),
        "pagination": {"type": "page_number"},
        "prefetch": 8,
        "politeness": {"concurrency": 3},
    }));
    let read = read_all(source.as_ref(), &full(), 7).await.unwrap();
    assert_eq!(read.records, records(1..=60));
    let peak = api.peak_in_flight.load(Ordering::SeqCst);
    assert!((2..=3).contains(&peak), "peak of {peak} requests in flight");
}

#[tokio::test]
async fn ndjson_and_csv_bodies() {
    let (base, _) = serve(12).await;
    let ndjson =
        source(json!({"url": format!("{base}/ndjson"), "format": "ndjson", "pagination": {"type": "page_number"}}));
    let read = read_all(ndjson.as_ref(), &full(), 3).await.unwrap();
    assert_eq!(read.records, records(1..=12));
    assert_eq!(read.rejected.len(), 1);
    assert_eq!(read.rejected[0].position, "shard all, page #2, line 2");
    assert_resume_yields_rest(ndjson.as_ref(), &full(), 2).await.unwrap();

    let csv = source(json!({"url": format!("{base}/csv"), "format": "csv", "pagination": {"type": "page_number"}}));
    let read = assert_resume_yields_rest(csv.as_ref(), &full(), 4).await.unwrap();
    let expected: Vec<Json> = (1..=12).map(|id| json!({"id": id.to_string(), "name": format!("n{id}")})).collect();
    assert_eq!(read, expected);

    let error = try_source(
        json!({"url": format!("{base}/csv"), "format": "csv", "pagination": {"type": "cursor", "cursor": "next"}}),
    )
    .err()
    .unwrap();
    assert!(error.starts_with("pagination: "), "{error}");
}

#[tokio::test]
async fn retry_after_is_honoured_between_pages() {
    let (base, api) = serve(15).await;
    let source =
        source(json!({"url": format!("{base}/throttled"), "pagination": {"type": "page_number"}, "prefetch": 1}));
    let started = Instant::now();
    let read = read_all(source.as_ref(), &full(), 100).await.unwrap();
    assert_eq!(read.records, records(1..=15));
    assert_eq!(api.calls("throttled-2"), 2);
    assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
}

#[tokio::test]
async fn slow_pages_time_out_as_transient_errors() {
    let (base, _) = serve(5).await;
    let mut politeness = quick();
    politeness["timeout"] = json!("100ms");
    let source = source(json!({"url": format!("{base}/slow"), "politeness": politeness}));
    let error = read_all(source.as_ref(), &full(), 10).await.unwrap_err();
    assert!(is_transient(&error), "{error:#}");
    let message = format!("{error:#}");
    assert!(
        message.contains("page #1 (the first page) of shard all")
            && message.contains("no complete response within 100ms"),
        "{message}"
    );
}

#[tokio::test]
async fn redirects_are_followed_within_the_limit() {
    let (base, _) = serve(8).await;
    let source_with = |max_redirects: usize| {
        source(
            json!({"url": format!("{base}/moved"), "pagination": {"type": "page_number"}, "politeness": {"max_redirects": max_redirects}}),
        )
    };
    assert_eq!(read_all(source_with(1).as_ref(), &full(), 10).await.unwrap().records, records(1..=8));
    let error = read_all(source_with(0).as_ref(), &full(), 10).await.unwrap_err();
    assert!(format!("{error:#}").contains("more than 0 redirects"), "{error:#}");
    assert!(!is_transient(&error));
}

#[tokio::test]
async fn malformed_pages_are_dead_letters_or_errors_with_their_position() {
    let (base, _) = serve(15).await;
    let pages = source(json!({"url": format!("{base}/malformed"), "pagination": {"type": "page_number"}}));
    let read = read_all(pages.as_ref(), &full(), 10).await.unwrap();
    let mut expected = records(1..=5);
    expected.extend(records(11..=15));
    assert_eq!(read.records, expected);
    assert_eq!(read.rejected.len(), 1);
    assert_eq!(read.rejected[0].position, "shard all, page #2");
    assert!(read.rejected[0].reason.starts_with("invalid json: EOF while parsing"), "{:?}", read.rejected[0]);
    assert_eq!(read.rejected[0].record, json!("[{\"id\": 6, \"na"));

    let cursors = source(
        json!({"url": format!("{base}/malformed-cursor"), "records": "items", "pagination": {"type": "cursor", "param": "after", "cursor": "meta.next_cursor"}}),
    );
    let error = format!("{:#}", read_all(cursors.as_ref(), &full(), 10).await.unwrap_err());
    assert!(error.contains("page #2 (the page of a cursor) of shard all: invalid json"), "{error}");
    assert!(error.contains("cannot be found without it"), "{error}");
}

#[tokio::test]
async fn paginators_that_never_end_are_stopped() {
    let (base, _) = serve(5).await;
    let stuck = source(
        json!({"url": format!("{base}/stuck"), "records": "items", "pagination": {"type": "cursor", "cursor": "meta.next_cursor"}}),
    );
    let error = format!("{:#}", read_all(stuck.as_ref(), &full(), 10).await.unwrap_err());
    assert!(error.contains("points back to a page already read"), "{error}");

    let ignored = source(json!({"url": format!("{base}/ignores-page"), "pagination": {"type": "page_number"}}));
    let error = format!("{:#}", read_all(ignored.as_ref(), &full(), 10).await.unwrap_err());
    assert!(error.contains("page #2 (page 2) of shard all is the same as the page before it"), "{error}");

    let (base, _) = serve(1_000).await;
    let capped = source(
        json!({"url": format!("{base}/cursor"), "records": "items", "max_pages": 3, "pagination": {"type": "cursor", "param": "after", "cursor": "meta.next_cursor"}}),
    );
    let error = format!("{:#}", read_all(capped.as_ref(), &full(), 10).await.unwrap_err());
    assert!(error.contains("did not end after 3 pages (`max_pages`)"), "{error}");
}

#[tokio::test]
async fn an_api_capping_its_pages_below_the_limit_is_an_error() {
    let (base, _) = serve(12).await;
    let source = source(
        json!({"url": format!("{base}/offset-open"), "records": "items", "pagination": {"type": "offset", "limit": 5}}),
    );
    let error = format!("{:#}", read_all(source.as_ref(), &full(), 10).await.unwrap_err());
    assert!(error.contains("held 4 records, fewer than `pagination.limit`, yet more followed"), "{error}");
}

#[tokio::test]
async fn every_kind_of_credentials() {
    let (base, _) = serve(7).await;
    let url = |scheme: &str| format!("{base}/secure?scheme={scheme}");
    let cases = [
        ("bearer", json!({"type": "bearer", "token": "t0k3n"})),
        ("basic", json!({"type": "basic", "username": "ann", "password": "s3cr3t"})),
        ("header-key", json!({"type": "api_key", "name": "X-Api-Key", "value": "k3y"})),
        ("query-key", json!({"type": "api_key", "name": "api_key", "in": "query", "value": "k3y"})),
    ];
    for (scheme, auth) in cases {
        let source = source(json!({"url": url(scheme), "pagination": {"type": "page_number"}, "auth": auth}));
        let read = read_all(source.as_ref(), &full(), 10).await.unwrap_or_else(|error| panic!("{scheme}: {error:#}"));
        assert_eq!(read.records, records(1..=7), "{scheme}");
    }

    let wrong = source(
        json!({"url": url("query-key"), "auth": {"type": "api_key", "name": "api_key", "in": "query", "value": "wr0ng"}}),
    );
    let error = format!("{:#}", read_all(wrong.as_ref(), &full(), 10).await.unwrap_err());
    assert!(error.contains("answered 401 Unauthorized: \"bad credentials\""), "{error}");
    assert!(error.contains("api_key=***") && !error.contains("wr0ng"), "{error}");

    let from_env =
        source(json!({"url": url("bearer"), "auth": {"type": "bearer", "token": "${env:HAUL_HTTP_TEST_UNSET}"}}));
    let error = format!("{:#}", read_all(from_env.as_ref(), &full(), 10).await.unwrap_err());
    assert!(
        error.contains("environment variable `HAUL_HTTP_TEST_UNSET` is not set") && error.contains("auth.token"),
        "{error}"
    );
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_shared_and_fetched_again_when_they_expire() {
    let (base, api) = serve(40).await;
    let source = source(json!({
        "url": format!("{base}/secure?scheme=oauth2"),
        "pagination": {"type": "page_number"},
        "prefetch": 1,
        "auth": {"type": "oauth2", "token_url": format!("{base}/oauth/token"), "client_id": "haul", "client_secret": "cl13nt", "scopes": ["read", "list"]},
    }));
    source.check().await.unwrap();
    let read = read_all(source.as_ref(), &full(), 100).await.unwrap();
    assert_eq!(read.records, records(1..=40));
    // 1 check + 9 pages (the last one empty) = 10 requests, 3 per token.
    assert_eq!(api.tokens_issued.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn incremental_runs_send_the_high_water_mark_of_the_records_read() {
    let (base, api) = serve(10).await;
    let source =
        source(json!({"url": format!("{base}/changes"), "records": "items", "query": {"updated_since": "{since}"}}));
    let mut context = PlanContext { mode: Mode::Incremental, ..full() };
    context.incremental.cursor = Some("updated_at".into());

    let state = run_to_state(source.as_ref(), &context, records(1..=10)).await;
    assert_eq!(state, Some(json!({"cursor": "2024-01-01T00:10:00Z"})));

    api.total.store(14, Ordering::SeqCst);
    context.previous_state = state;
    let state = run_to_state(source.as_ref(), &context, records(11..=14)).await;
    assert_eq!(state, Some(json!({"cursor": "2024-01-01T00:14:00Z"})));

    // Nothing new: the state stays; a lookback reads the last two minutes again.
    context.previous_state = state.clone();
    assert_eq!(run_to_state(source.as_ref(), &context, vec![]).await, state);
    context.incremental.lookback = Some(json!("2m"));
    run_to_state(source.as_ref(), &context, records(13..=14)).await;

    let full_mode = format!("{:#}", source.plan(&PlanContext { mode: Mode::Range, ..full() }).await.unwrap_err());
    assert!(full_mode.contains("range mode needs {from}"), "{full_mode}");
}

/// Plans with `context`, reads every shard, checks the records, and returns the job state the run leaves.
async fn run_to_state(source: &dyn Source, context: &PlanContext, expected: Vec<Json>) -> Option<Json> {
    let plan = source.plan(context).await.unwrap();
    let mut read = Vec::new();
    let mut checkpoints: Vec<Option<Checkpoint>> = Vec::new();
    for shard in &plan.shards {
        let shard_read = read_shard(source, shard, None, 3).await.unwrap();
        read.extend(shard_read.records);
        checkpoints.push(shard_read.checkpoints.last().map(|(_, checkpoint)| checkpoint.clone()));
    }
    assert_eq!(read, expected);
    source.final_state(plan.next_state, &checkpoints)
}

#[tokio::test]
async fn range_runs_read_one_shard_per_day_concurrently_and_resume_per_page() {
    let (base, api) = serve(20).await;
    let source = source(json!({
        "url": format!("{base}/daily"),
        "query": {"from": "{from}", "to": "{to}"},
        "records": "items",
        "pagination": {"type": "page_number"},
        "politeness": {"concurrency": 2},
    }));
    let context = PlanContext {
        mode: Mode::Range,
        range: Some(RangeBounds { field: None, from: json!("2024-01-01"), to: json!("2024-01-04") }),
        ..full()
    };
    let plan = source.plan(&context).await.unwrap();
    assert_eq!(
        plan.shards.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["2024-01-01", "2024-01-02", "2024-01-03"]
    );

    let read = assert_resume_yields_rest(source.as_ref(), &context, 1).await.unwrap();
    let mut ids: Vec<u64> = read.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(read.iter().filter(|r| r["day"] == "2024-01-02").count(), 7);
    ids.sort();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());

    // The three shards at once share the host's two request slots.
    api.peak_in_flight.store(0, Ordering::SeqCst);
    let mut tasks = tokio::task::JoinSet::new();
    for shard in plan.shards {
        let source = source.clone();
        tasks.spawn(async move { read_shard(source.as_ref(), &shard, None, 10).await.unwrap().records.len() });
    }
    let mut total = 0;
    while let Some(count) = tasks.join_next().await {
        total += count.unwrap();
    }
    assert_eq!(total, 20);
    assert_eq!(api.peak_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn configuration_errors_name_their_option() {
    let cases = [
        (json!({"url": "ftp://example.test/x"}), "`url` must be an http or https url"),
        (json!({"url": "http://example.test/", "pagination": {"type": "offset"}}), "pagination: missing field `limit`"),
        (
            json!({"url": "http://example.test/", "pagination": {"type": "page_number", "totl": "x"}}),
            "pagination: unknown field `totl`",
        ),
        (json!({"url": "http://example.test/", "auth": {"type": "bearer"}}), "auth: missing field `token`"),
        (
            json!({"url": "http://example.test/", "politeness": {"timeout": "0s"}}),
            "politeness.timeout: `timeout` must be more than zero",
        ),
        (json!({"url": "http://example.test/", "partitions": ["eu"]}), "partitions: `partitions` are set"),
        (json!({"url": "http://example.test/{day}"}), "unknown placeholder `{day}`"),
        (json!({"url": "http://example.test/", "format": "ndjson", "records": "items"}), "records: "),
        (json!({"url": "http://example.test/", "prefetch": 0}), "prefetch: "),
        (json!({"url": "http://example.test/", "methd": "POST"}), "unknown field `methd`"),
    ];
    for (options, expected) in cases {
        let error = try_source(options.clone()).err().unwrap_or_else(|| panic!("{options} built"));
        assert!(error.contains(expected), "{options}: {error}");
    }
}
