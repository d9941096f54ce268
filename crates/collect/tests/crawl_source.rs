//! The `crawl` source against a generated site served on 127.0.0.1: link
//! following with duplicates, fragments and relative links; robots.txt; a
//! sitemap index; 429 with `Retry-After` and a 500 that recovers; depth,
//! page caps and patterns; extraction (golden) and dead letters; the
//! conformance helpers; sharding by host; and incremental recrawls with
//! conditional GETs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use haul_collect::crawl::CrawlSourcePlugin;
use haul_collect_core::job::{JobSource, Mode};
use haul_collect_core::registry::{BuildError, Plugin, PluginRegistry};
use haul_collect_core::testsuite::{self, ShardRead, assert_resume_yields_rest, read_all, read_shard};
use haul_collect_core::{Checkpoint, PlanContext, Source};
use serde_json::{Value as Json, json};

/// Pages `/page/0.html` to `/page/{PAGES - 1}.html`.
const PAGES: usize = 12;
const LAST_MODIFIED_DATE: &str = "Tue, 01 Oct 2024 10:00:00 GMT";

/// The site's state: what was asked for, and the version of its pages.
#[derive(Default)]
struct Site {
    /// Requests per path (with query), in arrival order per path.
    hits: Mutex<BTreeMap<String, Vec<Instant>>>,
    /// Requests answered 304.
    not_modified: Mutex<Vec<String>>,
    /// Bumped to change the content (and ETag) of page 3.
    version: AtomicU32,
    /// Pages beyond `PAGES` that exist and are linked from page 0, which
    /// changes with them.
    extra_pages: AtomicU32,
}

impl Site {
    fn hit(&self, uri: &Uri) -> usize {
        let mut hits = self.hits.lock().unwrap();
        let times = hits.entry(uri.to_string()).or_default();
        times.push(Instant::now());
        times.len()
    }

    fn count(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).map_or(0, Vec::len)
    }

    fn paths(&self) -> Vec<String> {
        self.hits.lock().unwrap().keys().cloned().collect()
    }

    fn reset(&self) {
        self.hits.lock().unwrap().clear();
        self.not_modified.lock().unwrap().clear();
    }
}

struct Server {
    address: SocketAddr,
    site: Arc<Site>,
}

impl Server {
    async fn start() -> Server {
        let site = Arc::new(Site::default());
        let app = Router::new()
            .route("/robots.txt", get(robots))
            .route("/sitemap.xml", get(sitemap_index))
            .route("/sitemap-extra.xml", get(sitemap_pages))
            .route("/page/{name}", get(page))
            .route("/orphan/{name}", get(orphan))
            .route("/deep/{name}", get(deep))
            .route("/private/{name}", get(orphan))
            .route("/flaky/busy.html", get(busy))
            .route("/flaky/broken-once.html", get(broken_once))
            .route("/missing.html", get(missing))
            .route("/no-title.html", get(no_title))
            .route("/image.png", get(image))
            .with_state(site.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { address, site }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// `text` with this server's origin written `http://site.test`, for golden comparisons.
    fn neutral(&self, text: &str) -> String {
        text.replace(&format!("http://{}", self.address), "http://site.test")
    }
}

fn html(body: String) -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn robots(State(site): State<Arc<Site>>, uri: Uri, headers: HeaderMap) -> String {
    site.hit(&uri);
    let host = headers.get("host").and_then(|host| host.to_str().ok()).unwrap_or_default();
    format!(
        "User-agent: *\nDisallow: /private/\n\nUser-agent: otherbot\nDisallow: /\n\nSitemap: http://{host}/sitemap.xml\n"
    )
}

async fn sitemap_index(State(site): State<Arc<Site>>, uri: Uri, headers: HeaderMap) -> String {
    site.hit(&uri);
    let host = headers.get("host").and_then(|host| host.to_str().ok()).unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sitemap><loc>http://{host}/sitemap-extra.xml</loc></sitemap>
</sitemapindex>"#
    )
}

async fn sitemap_pages(State(site): State<Arc<Site>>, uri: Uri, headers: HeaderMap) -> String {
    site.hit(&uri);
    let host = headers.get("host").and_then(|host| host.to_str().ok()).unwrap_or_default();
    format!(
        r#"<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>http://{host}/orphan/a.html</loc></url>
  <url><loc>http://{host}/orphan/b.html#top</loc></url>
  <url><loc>http://{host}/page/1.html</loc></url>
  <url><loc>http://{host}/private/from-sitemap.html</loc></url>
</urlset>"#
    )
}

/// A product page: linked to its neighbours with every kind of link.
async fn page(State(site): State<Arc<Site>>, UrlPath(name): UrlPath<String>, uri: Uri, headers: HeaderMap) -> Response {
    site.hit(&uri);
    let Some(number) = name.strip_suffix(".html").and_then(|n| n.parse::<usize>().ok()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let extra = site.extra_pages.load(Ordering::SeqCst) as usize;
    if number >= PAGES + extra {
        return StatusCode::NOT_FOUND.into_response();
    }
    let version = match number {
        0 => extra as u32,
        3 => site.version.load(Ordering::SeqCst),
        _ => 0,
    };
    let etag = format!("\"v{version}-{number}\"");
    if headers.get(IF_NONE_MATCH).and_then(|value| value.to_str().ok()) == Some(etag.as_str()) {
        site.not_modified.lock().unwrap().push(uri.to_string());
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response();
    }
    let next = (number + 1) % PAGES;
    let double = (number * 2 + 1) % PAGES;
    let mut links = format!(
        r##"<a href="/page/{next}.html">next</a>
<a href="{double}.html#details">relative, with a fragment</a>
<a href="../page/{number}.html">itself</a>
<a href="/page/{next}.html?">next again, with an empty query</a>
<a href="HTTP://{host}/page/{next}.html">next again, absolute</a>
<a href="#reviews">a fragment of this page</a>
<a href="mailto:shop@site.test">mail</a>"##,
        host = headers.get("host").and_then(|host| host.to_str().ok()).unwrap_or_default(),
    );
    if number == 0 {
        links.push_str(
            r#"
<a href="/private/secret.html">private</a>
<a href="/flaky/busy.html">busy</a>
<a href="/flaky/broken-once.html">broken once</a>
<a href="/missing.html">missing</a>
<a href="/no-title.html">no title</a>
<a href="/image.png">image</a>
<a href="/deep/1.html">deep</a>"#,
        );
        for extra in PAGES..PAGES + extra {
            links.push_str(&format!("\n<a href=\"/page/{extra}.html\">new</a>"));
        }
    }
    let body = format!(
        r#"<!doctype html><html><head><title>Page {number}</title></head><body>
<h1>  Product
   {number} </h1>
<p class="price" data-currency="EUR">{number}.99</p>
<p class="description">Version <em>{version}</em> of the page</p>
<ul><li class="tag">group-{group}</li><li class="tag"> all </li></ul>
{links}
</body></html>"#,
        group = number % 3,
    );
    ([(ETAG, etag.as_str()), (LAST_MODIFIED, LAST_MODIFIED_DATE), (CONTENT_TYPE, "text/html")], body).into_response()
}

async fn orphan(State(site): State<Arc<Site>>, UrlPath(name): UrlPath<String>, uri: Uri) -> Response {
    site.hit(&uri);
    html(format!(
        r#"<html><head><title>Orphan {name}</title></head><body><h1>{name}</h1><p class="price">1.00</p></body></html>"#
    ))
}

/// `/deep/n.html` links to `/deep/{n+1}.html`, without end.
async fn deep(State(site): State<Arc<Site>>, UrlPath(name): UrlPath<String>, uri: Uri) -> Response {
    site.hit(&uri);
    let number: usize = name.trim_end_matches(".html").parse().unwrap_or(0);
    html(format!(
        r#"<html><head><title>Deep {number}</title></head><body><p class="price">0</p><a href="{}.html">deeper</a></body></html>"#,
        number + 1
    ))
}

/// Answers 429 with `Retry-After: 1` the first time, then the page.
async fn busy(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    if site.hit(&uri) == 1 {
        return (StatusCode::TOO_MANY_REQUESTS, [(RETRY_AFTER, "1")], "slow down").into_response();
    }
    html(r#"<html><head><title>Busy</title></head><body><p class="price">2.00</p></body></html>"#.into())
}

/// Answers 500 the first time, then the page.
async fn broken_once(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    if site.hit(&uri) == 1 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response();
    }
    html(r#"<html><head><title>Recovered</title></head><body><p class="price">3.00</p></body></html>"#.into())
}

async fn missing(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    site.hit(&uri);
    (StatusCode::NOT_FOUND, "no such page").into_response()
}

async fn no_title(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    site.hit(&uri);
    html(r#"<html><body><h1>Untitled</h1><p class="price">4.00</p></body></html>"#.into())
}

async fn image(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    site.hit(&uri);
    ([(CONTENT_TYPE, "image/png")], vec![0x89, b'P', b'N', b'G']).into_response()
}

/// The crawl options of most tests: fast retries, the page's title, price and tags.
fn options(server: &Server, extra: Json) -> Json {
    let mut options = json!({
        "seeds": [server.url("/page/0.html")],
        "metadata": ["url", "status"],
        "politeness": {"retry": {"attempts": 3, "initial_backoff": "10ms", "max_backoff": "50ms"}},
        "fields": [
            {"name": "title", "selector": "title", "required": true},
            {"name": "heading", "selector": "h1"},
            {"name": "price", "selector": "p.price"},
            {"name": "currency", "selector": "p.price", "attribute": "data-currency"},
            {"name": "description", "selector": "p.description", "extract": "html"},
            {"name": "tags", "selector": "li.tag", "multiple": true},
        ],
    });
    let object = options.as_object_mut().unwrap();
    for (key, value) in extra.as_object().unwrap() {
        object.insert(key.clone(), value.clone());
    }
    options
}

fn source(options: Json) -> Arc<dyn Source> {
    CrawlSourcePlugin.build(serde_json::from_value(options).unwrap()).unwrap()
}

fn full() -> PlanContext {
    testsuite::full_context(2)
}

fn incremental(previous_state: Option<Json>) -> PlanContext {
    PlanContext { mode: Mode::Incremental, previous_state, ..full() }
}

fn urls(server: &Server, read: &ShardRead) -> Vec<String> {
    read.records.iter().map(|record| server.neutral(record["url"].as_str().unwrap())).collect()
}

fn golden(name: &str) -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/crawl").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn crawls_the_site_politely_and_extracts_its_pages() {
    let server = Server::start().await;
    let crawl = source(options(&server, json!({"sitemaps": [server.url("/robots.txt")], "max_depth": 2})));
    let read = read_all(crawl.as_ref(), &full(), 1000).await.unwrap();
    let site = &server.site;

    // Records and dead letters, in frontier order, exactly as the golden file says.
    let records: Json = serde_json::from_str(&server.neutral(&Json::Array(read.records.clone()).to_string())).unwrap();
    let rejected: Vec<Json> = read
        .rejected
        .iter()
        .map(|rejected| {
            assert_eq!(rejected.stage, "source");
            assert_eq!(rejected.position, rejected.record["url"].as_str().unwrap());
            json!({"reason": server.neutral(&rejected.reason), "record": rejected.record})
        })
        .collect();
    let rejected: Json = serde_json::from_str(&server.neutral(&Json::Array(rejected).to_string())).unwrap();
    let expected = golden("site.json");
    assert_eq!(records, expected["records"], "records");
    assert_eq!(rejected, expected["rejected"], "dead letters");

    // Every page once: duplicate, fragment, empty-query and absolute links are one URL.
    for path in site.paths() {
        let expected = if path.starts_with("/flaky/") { 2 } else { 1 };
        assert_eq!(site.count(&path), expected, "requests of {path}");
    }
    // robots.txt is obeyed, for links and sitemap entries alike.
    assert_eq!(site.count("/private/secret.html"), 0);
    assert_eq!(site.count("/private/from-sitemap.html"), 0);
    // max_depth = 2: /deep/1 is at depth 1, /deep/2 at depth 2, /deep/3 is not followed.
    assert_eq!((site.count("/deep/2.html"), site.count("/deep/3.html")), (1, 0));
    // The 429 asked for a second's pause before the retry.
    let hits = site.hits.lock().unwrap();
    let busy = &hits["/flaky/busy.html"];
    assert!(busy[1] - busy[0] >= Duration::from_millis(950), "retried after {:?}", busy[1] - busy[0]);
}

#[tokio::test]
async fn resuming_at_any_checkpoint_yields_exactly_the_rest() {
    let server = Server::start().await;
    let crawl = source(options(&server, json!({"max_depth": 3, "concurrency": 4})));
    for batch_size in [1, 3, 7] {
        let records = assert_resume_yields_rest(crawl.as_ref(), &full(), batch_size).await.unwrap();
        // pages 0-5 and 7, two flaky pages and three deep ones, within three links of page 0
        assert_eq!(records.len(), 12, "batch size {batch_size}");
    }
}

#[tokio::test]
async fn a_resumed_shard_does_not_fetch_finished_pages_again() {
    let server = Server::start().await;
    let crawl = source(options(&server, json!({"max_depth": 1})));
    let plan = crawl.plan(&full()).await.unwrap();
    let shard = &plan.shards[0];
    let whole = read_shard(crawl.as_ref(), shard, None, 2).await.unwrap();
    let (consumed, checkpoint) = whole.checkpoints[2].clone();
    server.site.reset();
    let rest = read_shard(crawl.as_ref(), shard, Some(&checkpoint), 2).await.unwrap();
    assert_eq!(rest.records, whole.records[consumed..]);
    let finished: Vec<String> =
        whole.records[..consumed].iter().map(|record| record["url"].as_str().unwrap().to_string()).collect();
    for url in finished {
        let path = url.strip_prefix(&format!("http://{}", server.address)).unwrap();
        assert_eq!(server.site.count(path), 0, "{path} was fetched again");
    }
}

#[tokio::test]
async fn edge_cases_of_the_conformance_suite() {
    let server = Server::start().await;
    // No input: the only seed is disallowed by robots.txt.
    let crawl = source(options(&server, json!({"seeds": [server.url("/private/x.html")]})));
    let read = assert_resume_yields_rest(crawl.as_ref(), &full(), 5).await.unwrap();
    assert!(read.is_empty());
    assert_eq!(server.site.count("/private/x.html"), 0);

    // One record.
    let crawl = source(options(&server, json!({"max_pages": 1})));
    let read = assert_resume_yields_rest(crawl.as_ref(), &full(), 5).await.unwrap();
    assert_eq!(read.len(), 1);

    // A batch-size boundary: four records in batches of two.
    let crawl = source(options(&server, json!({"seeds": [server.url("/deep/0.html")], "max_depth": 3})));
    let read = assert_resume_yields_rest(crawl.as_ref(), &full(), 2).await.unwrap();
    assert_eq!(read.len(), 4);
}

#[tokio::test]
async fn depth_and_page_caps() {
    let server = Server::start().await;
    let crawl = source(options(&server, json!({"seeds": [server.url("/deep/0.html")], "max_depth": 3})));
    let read = read_all(crawl.as_ref(), &full(), 100).await.unwrap();
    assert_eq!(
        urls(&server, &read),
        ["/deep/0.html", "/deep/1.html", "/deep/2.html", "/deep/3.html"].map(|path| format!("http://site.test{path}"))
    );
    assert_eq!(server.site.count("/deep/4.html"), 0);

    server.site.reset();
    let crawl = source(options(&server, json!({"max_pages": 5})));
    let read = read_all(crawl.as_ref(), &full(), 100).await.unwrap();
    assert_eq!(read.records.len() + read.rejected.len(), 5);
    let pages = server.site.paths().into_iter().filter(|path| path != "/robots.txt").count();
    assert_eq!(pages, 5, "{:?}", server.site.paths());
}

#[tokio::test]
async fn allow_and_deny_patterns_choose_the_links() {
    let server = Server::start().await;
    let crawl = source(options(&server, json!({"allow": ["/page/"], "deny": [r"/page/1\d\.html", r"/page/[5-9]\."]})));
    let read = read_all(crawl.as_ref(), &full(), 100).await.unwrap();
    let mut found = urls(&server, &read);
    found.sort();
    let expected: Vec<String> = [0, 1, 2, 3, 4].iter().map(|n| format!("http://site.test/page/{n}.html")).collect();
    assert_eq!(found, expected);
    assert!(read.rejected.is_empty());
    assert_eq!(server.site.count("/flaky/busy.html"), 0);
}

#[tokio::test]
async fn a_recrawl_emits_only_changed_and_new_pages() {
    let server = Server::start().await;
    let crawl = source(options(&server, json!({"max_depth": 2, "allow": ["/page/"], "metadata": ["url"]})));
    let first = crawl.plan(&full()).await.unwrap();
    let mut checkpoints = Vec::new();
    let mut fetched = Vec::new();
    for shard in &first.shards {
        let read = read_shard(crawl.as_ref(), shard, None, 100).await.unwrap();
        fetched.extend(urls(&server, &read));
        checkpoints.push(read.checkpoints.last().map(|(_, checkpoint)| checkpoint.clone()));
    }
    assert_eq!(
        fetched,
        ["/page/0.html", "/page/1.html", "/page/2.html", "/page/3.html"].map(|p| format!("http://site.test{p}"))
    );
    let state = crawl.final_state(first.next_state.clone(), &checkpoints);

    // Page 3 changes; page 0 changes too: it links to a new page 12.
    server.site.reset();
    server.site.version.store(1, Ordering::SeqCst);
    server.site.extra_pages.store(1, Ordering::SeqCst);
    let read = read_all(crawl.as_ref(), &incremental(state), 100).await.unwrap();
    assert_eq!(
        urls(&server, &read),
        ["/page/0.html", "/page/3.html", "/page/12.html"].map(|p| format!("http://site.test{p}"))
    );
    let mut not_modified = server.site.not_modified.lock().unwrap().clone();
    not_modified.sort();
    assert_eq!(not_modified, ["/page/1.html", "/page/2.html"]);
    for path in ["/page/0.html", "/page/1.html", "/page/2.html", "/page/3.html", "/page/12.html"] {
        assert_eq!(server.site.count(path), 1, "{path}");
    }

    // A full run ignores the state: every page again.
    server.site.reset();
    let read = read_all(crawl.as_ref(), &full(), 100).await.unwrap();
    assert_eq!(read.records.len(), 5);
    assert!(server.site.not_modified.lock().unwrap().is_empty());
}

#[tokio::test]
async fn shards_split_the_sites_by_host() {
    let server = Server::start().await;
    let port = server.address.port();
    let seeds = json!([format!("http://127.0.0.1:{port}/page/0.html"), format!("http://localhost:{port}/page/0.html")]);
    for shards in 1..=4 {
        let crawl =
            source(options(&server, json!({"seeds": seeds, "max_depth": 1, "metadata": ["url"], "shards": shards})));
        let plan = crawl.plan(&full()).await.unwrap();
        assert!(plan.shards.len() <= shards, "{plan:?}");
        let mut crawled_by = BTreeMap::new();
        let mut records_per_host: BTreeMap<String, usize> = BTreeMap::new();
        for shard in &plan.shards {
            let read = read_shard(crawl.as_ref(), shard, None, 100).await.unwrap();
            for record in &read.records {
                let url = url::Url::parse(record["url"].as_str().unwrap()).unwrap();
                *records_per_host.entry(url.host_str().unwrap().to_string()).or_default() += 1;
                let owner = crawled_by.entry(url.host_str().unwrap().to_string()).or_insert_with(|| shard.id.clone());
                assert_eq!(*owner, shard.id, "{url} crawled by two shards");
            }
        }
        // each host: page 0, page 1, two flaky pages and /deep/1
        assert_eq!(records_per_host, BTreeMap::from([("127.0.0.1".into(), 5), ("localhost".into(), 5)]));
        let distinct_shards: std::collections::BTreeSet<_> = crawled_by.values().collect();
        assert_eq!(distinct_shards.len(), plan.shards.len());
    }
}

#[tokio::test]
async fn failures_of_the_whole_host_fail_the_shard_transiently() {
    // A port nobody listens on: connections are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let crawl = source(json!({
        "seeds": [format!("http://{address}/")],
        "politeness": {"retry": {"attempts": 1, "initial_backoff": "10ms", "max_backoff": "10ms"}},
    }));
    let plan = crawl.plan(&full()).await.unwrap();
    let error = match crawl.open(&plan.shards[0], None, 10).await {
        Ok(mut reader) => reader.next_batch().await.unwrap_err(),
        Err(error) => error,
    };
    assert!(haul_collect_core::transient::is_transient(&error), "{error:#}");
    assert!(format!("{error:#}").contains("robots.txt"), "{error:#}");
}

#[tokio::test]
async fn range_mode_is_refused() {
    let crawl = source(json!({"seeds": ["http://127.0.0.1:9/"]}));
    let context = PlanContext { mode: Mode::Range, ..full() };
    let error = crawl.plan(&context).await.unwrap_err();
    assert!(error.to_string().contains("does not support range mode"), "{error}");
}

/// Option errors point at their line and column in the job file.
#[test]
fn bad_options_are_located() {
    let mut registry = PluginRegistry::default();
    registry.add(CrawlSourcePlugin);
    let cases = [
        ("seeds = [\"http://a.test/\", \"ftp://b.test/\"]", "not an http or https url", (3, 28)),
        (
            "seeds = [\"http://a.test/\"]\n[[source.fields]]\nname = \"t\"\nselector = \"p[\"",
            "invalid CSS selector",
            (6, 12),
        ),
        ("seeds = [\"http://a.test/\"]\ndeny = [\"(\"]", "invalid `deny` pattern", (4, 8)),
        ("seeds = [\"http://a.test/\"]\nmax_pages = 0", "`max_pages` must be at least 1", (4, 13)),
        ("seeds = [\"http://a.test/\"]\nscope = \"galaxy\"", "unknown variant `galaxy`", (4, 9)),
        ("seeds = [\"http://a.test/\"]\nseed = 1", "unknown field `seed`", (4, 1)),
        (
            "seeds = [\"http://a.test/\"]\nmetadata = [\"url\"]\n[[source.fields]]\nname = \"url\"\nselector = \"a\"",
            "already the page's url",
            (6, 8),
        ),
    ];
    for (options, message, (line, column)) in cases {
        let text = format!("[source]\ntype = \"crawl\"\n{options}\n\n[sink]\ntype = \"stdout\"\n");
        let job = JobSource::new("job.toml", text.clone());
        let spec = job.parse("job").unwrap();
        let error = match registry.build::<dyn Source>(&spec.source) {
            Ok(_) => panic!("{options} was accepted"),
            Err(BuildError::Config { path, message }) => job.plugin_error(&spec.source, &path, message),
            Err(other) => panic!("{options}: {other}"),
        };
        assert!(error.message.contains(message), "{options}: {}", error.message);
        assert_eq!(error.location, Some((line, column)), "{options}: {}", error.message);
    }
}

#[tokio::test]
async fn pages_that_are_not_html_or_not_found_are_dead_letters() {
    let server = Server::start().await;
    let crawl = source(options(&server, json!({"seeds": [server.url("/image.png"), server.url("/missing.html")]})));
    let read = read_all(crawl.as_ref(), &full(), 10).await.unwrap();
    assert!(read.records.is_empty());
    let reasons: HashMap<String, String> =
        read.rejected.iter().map(|rejected| (server.neutral(&rejected.position), rejected.reason.clone())).collect();
    assert_eq!(
        reasons["http://site.test/image.png"],
        "required field `title` has no value: the page is image/png, not html"
    );
    assert_eq!(reasons["http://site.test/missing.html"], "the server answered 404 Not Found");
}

#[tokio::test]
async fn checkpoints_are_readable_frontiers() {
    let server = Server::start().await;
    let crawl = source(options(&server, json!({"max_depth": 0})));
    let plan = crawl.plan(&full()).await.unwrap();
    let read = read_shard(crawl.as_ref(), &plan.shards[0], None, 10).await.unwrap();
    let (_, Checkpoint(last)) = read.checkpoints.last().unwrap().clone();
    let last: Json = serde_json::from_str(&server.neutral(&last.to_string())).unwrap();
    assert_eq!(
        last,
        json!({
            "version": 1,
            "done": [["http://site.test/page/0.html", 0, "\"v0-0\"", LAST_MODIFIED_DATE]],
            "queue": [],
        })
    );
}
