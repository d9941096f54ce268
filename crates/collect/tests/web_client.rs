//! The shared web client against a local axum server: retries and
//! `Retry-After`, statuses handed back, timeouts, redirects, the size cap,
//! per-host concurrency shared by clients, and secrets kept out of errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use haul_collect::web::{Politeness, WebClient, WebError, WebRequest};
use haul_collect_core::transient::is_transient;
use haul_common::duration::HumanDuration;
use haul_common::retry::RetryPolicy;
use url::Url;

#[derive(Default)]
struct Counters {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

fn quick_retries(attempts: usize) -> Politeness {
    Politeness {
        retry: RetryPolicy {
            attempts,
            initial_backoff: HumanDuration(Duration::from_millis(5)),
            max_backoff: HumanDuration(Duration::from_millis(20)),
        },
        ..Politeness::default()
    }
}

fn client(politeness: Politeness) -> WebClient {
    WebClient::new(politeness).unwrap()
}

fn get_request(base: &str, path: &str) -> WebRequest {
    WebRequest::get(Url::parse(&format!("{base}{path}")).unwrap())
}

async fn flaky(State(counters): State<Arc<Counters>>, Path(kind): Path<String>) -> Response {
    let call = counters.calls.fetch_add(1, Ordering::SeqCst);
    match kind.as_str() {
        "retry-after" if call == 0 => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response(),
        "retry-after-long" => (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "3600")]).into_response(),
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "bad-gateway-once" if call == 0 => StatusCode::BAD_GATEWAY.into_response(),
        "missing" => (StatusCode::NOT_FOUND, "no such page").into_response(),
        _ => "ok".into_response(),
    }
}

fn flaky_app() -> (Router, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    (Router::new().route("/flaky/{kind}", get(flaky)).with_state(counters.clone()), counters)
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (app, counters) = flaky_app();
    let base = serve(app).await;
    let started = Instant::now();
    let response = client(quick_retries(3)).fetch(&get_request(&base, "/flaky/retry-after")).await.unwrap();
    assert_eq!((response.status.as_u16(), response.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(counters.calls.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_millis(950), "retried after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_fails_transiently_at_once() {
    let (app, counters) = flaky_app();
    let base = serve(app).await;
    let error = client(quick_retries(3)).fetch(&get_request(&base, "/flaky/retry-after-long")).await.unwrap_err();
    assert!(matches!(error, WebError::RetryAfterTooLong { .. }), "{error}");
    assert_eq!(counters.calls.load(Ordering::SeqCst), 1);
    assert!(is_transient(&error.into_anyhow()));
}

#[tokio::test]
async fn server_errors_are_retried_then_given_up_transiently() {
    let (app, counters) = flaky_app();
    let base = serve(app).await;
    let client = client(quick_retries(2));
    let response = client.fetch(&get_request(&base, "/flaky/bad-gateway-once")).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);

    counters.calls.store(0, Ordering::SeqCst);
    let error = client.fetch(&get_request(&base, "/flaky/unavailable")).await.unwrap_err();
    assert_eq!(counters.calls.load(Ordering::SeqCst), 3);
    let message = error.to_string();
    assert!(message.starts_with("gave up after 3 attempts: GET http://"), "{message}");
    assert!(message.ends_with("503 Service Unavailable"), "{message}");
    assert!(is_transient(&error.into_anyhow()));
}

#[tokio::test]
async fn other_statuses_are_responses() {
    let (app, counters) = flaky_app();
    let base = serve(app).await;
    let response = client(quick_retries(3)).fetch(&get_request(&base, "/flaky/missing")).await.unwrap();
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.body, b"no such page");
    assert_eq!(counters.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_responses_time_out() {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    let base = serve(app).await;
    let politeness = Politeness { timeout: HumanDuration(Duration::from_millis(100)), ..quick_retries(1) };
    let started = Instant::now();
    let error = client(politeness).fetch(&get_request(&base, "/slow")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let WebError::GaveUp { attempts: 2, last } = &error else { panic!("{error}") };
    assert!(matches!(**last, WebError::Timeout { .. }), "{error}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit_and_only_to_the_web() {
    let app = Router::new()
        .route(
            "/hop/{left}",
            get(|Path(left): Path<u32>| async move {
                match left {
                    0 => "arrived".into_response(),
                    n => Redirect::temporary(&format!("/hop/{}", n - 1)).into_response(),
                }
            }),
        )
        .route("/to-ftp", get(|| async { Redirect::temporary("ftp://127.0.0.1/file") }));
    let base = serve(app).await;
    let client = client(Politeness { max_redirects: 3, ..quick_retries(0) });

    let response = client.fetch(&get_request(&base, "/hop/3")).await.unwrap();
    assert_eq!(response.body, b"arrived");
    assert_eq!(response.url.path(), "/hop/0");

    let error = client.fetch(&get_request(&base, "/hop/4")).await.unwrap_err();
    assert!(matches!(error, WebError::Redirect { .. }), "{error}");
    assert!(error.to_string().contains("more than 3 redirects"), "{error}");

    let error = client.fetch(&get_request(&base, "/to-ftp")).await.unwrap_err();
    assert!(error.to_string().contains("only http and https are followed"), "{error}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn bodies_above_the_cap_are_refused() {
    let app = Router::new().route("/sized", get(|| async { "x".repeat(2_000) })).route(
        "/streamed",
        get(|| async {
            let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 100]));
            Body::from_stream(futures::stream::iter(chunks))
        }),
    );
    let base = serve(app).await;
    let client = client(Politeness { max_response_bytes: 1_000, ..quick_retries(0) });
    for path in ["/sized", "/streamed"] {
        let error = client.fetch(&get_request(&base, path)).await.unwrap_err();
        assert!(matches!(error, WebError::TooLarge { limit: 1_000, .. }), "{path}: {error}");
    }
    let roomy = self::client(Politeness { max_response_bytes: 2_000, ..quick_retries(0) });
    assert_eq!(roomy.fetch(&get_request(&base, "/streamed")).await.unwrap().body.len(), 2_000);
}

#[tokio::test]
async fn clients_share_the_per_host_concurrency() {
    let counters = Arc::new(Counters::default());
    let app = Router::new()
        .route(
            "/busy",
            get(|State(counters): State<Arc<Counters>>| async move {
                let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                counters.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                "done"
            }),
        )
        .with_state(counters.clone());
    let base = serve(app).await;
    let politeness = Politeness { concurrency: 2.try_into().unwrap(), ..quick_retries(0) };
    let clients = [client(politeness.clone()), client(politeness)];
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..16 {
        let client = clients[index % 2].clone();
        let request = get_request(&base, "/busy");
        tasks.spawn(async move { client.fetch(&request).await.map(|response| response.status) });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(counters.peak.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn secrets_stay_out_of_errors() {
    // A port nobody listens on: the connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut request = WebRequest::get(Url::parse(&format!("http://user:hunter2@{address}/x?key=s3cr3t")).unwrap());
    request.secret_query = vec!["key".into()];
    let error = client(quick_retries(1)).fetch(&request).await.unwrap_err();
    let message = format!("{error} {error:?}");
    assert!(matches!(&error, WebError::GaveUp { last, .. } if matches!(**last, WebError::Network { .. })), "{message}");
    assert!(!message.contains("s3cr3t") && !message.contains("hunter2"), "{message}");
}
