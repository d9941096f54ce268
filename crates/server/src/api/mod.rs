//! The server's HTTP surface: the REST API under `/api/v1` (jobs and runs,
//! JSON, with its OpenAPI document at `/api/v1/openapi.json`, generated from
//! the handlers), the Prometheus `/metrics`, and the `/healthz` (the process
//! answers) and `/readyz` (the store answers) probes. Every request is logged
//! as a span with its method, path, status and latency.

mod body;
pub mod error;
mod jobs;
pub mod model;
mod runs;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use haul_scheduler::service::Platform;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub platform: Platform,
    pub metrics: PrometheusHandle,
}

/// The document's title, version and tags; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "haul", description = "Submit jobs, run and backfill them, and follow their runs."),
    tags(
        (name = "jobs", description = "Job specs, and asking for runs of a job"),
        (name = "runs", description = "Runs, their shards and events, and their lifecycle"),
    )
)]
struct ApiDoc;

/// The REST API's routes and the OpenAPI document that describes them.
fn api_v1() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", jobs::router().merge(runs::router()))
        .split_for_parts()
}

/// The whole HTTP surface of `haul server`.
pub fn router(platform: Platform, metrics: PrometheusHandle) -> Router {
    let state = AppState { platform, metrics };
    let (api, document) = api_v1();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/api/v1/openapi.json", get(move || std::future::ready(Json(document.clone()))))
        .merge(api)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.platform.ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    }
}

async fn render_metrics(State(state): State<AppState>) -> String {
    let load = state.platform.dispatch_load();
    metrics::gauge!("haul_worker_slots").set(load.slots as f64);
    metrics::gauge!("haul_shards_running").set(load.busy as f64);
    metrics::gauge!("haul_shards_waiting").set(load.waiting as f64);
    state.metrics.render()
}
