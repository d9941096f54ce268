//! `/api/v1/jobs`: submit a job (validated exactly like `haul run` reads a
//! job file), list, show, enable, disable and delete jobs, and ask for runs of
//! one — now, or one per past interval (a backfill).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::body::{JobSpecBody, JsonBody};
use super::error::{ApiError, ErrorBody};
use super::model::{BackfillBody, Job, JobDetail, Run, TriggerBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs, apply_job))
        .routes(routes!(show_job, delete_job))
        .routes(routes!(enable_job))
        .routes(routes!(disable_job))
        .routes(routes!(trigger_run))
        .routes(routes!(backfill))
}

/// Every job, by name.
#[utoipa::path(get, path = "/jobs", tag = "jobs", responses((status = OK, body = Vec<Job>)))]
async fn list_jobs(State(state): State<AppState>) -> Result<Json<Vec<Job>>, ApiError> {
    let jobs = state.platform.jobs().await?;
    Ok(Json(jobs.into_iter().map(Job::from).collect()))
}

/// Creates or updates a job from its spec.
///
/// The spec is validated like a job file given to `haul run` (plugins built,
/// unknown fields refused) and its `depends_on` must keep the jobs a DAG.
#[utoipa::path(
    put,
    path = "/jobs",
    tag = "jobs",
    request_body(
        description = "A job file (TOML), or the same structure in JSON",
        content((String = "application/toml"), (serde_json::Value = "application/json"))
    ),
    responses(
        (status = CREATED, description = "The job is new", body = JobDetail),
        (status = OK, description = "The job was updated", body = JobDetail),
        (status = UNPROCESSABLE_ENTITY, description = "The spec is invalid; the message locates the problem", body = ErrorBody),
        (status = UNSUPPORTED_MEDIA_TYPE, description = "Neither TOML nor JSON", body = ErrorBody),
    )
)]
async fn apply_job(
    State(state): State<AppState>,
    spec: JobSpecBody,
) -> Result<(StatusCode, Json<JobDetail>), ApiError> {
    let (job, created) = state.platform.apply_job(&spec.text, spec.format).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(job.into())))
}

/// A job with its spec.
#[utoipa::path(
    get,
    path = "/jobs/{name}",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses((status = OK, body = JobDetail), (status = NOT_FOUND, body = ErrorBody))
)]
async fn show_job(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<JobDetail>, ApiError> {
    Ok(Json(state.platform.job(&name).await?.into()))
}

/// Deletes a job that no other job depends on; its queued runs are cancelled.
#[utoipa::path(
    delete,
    path = "/jobs/{name}",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses(
        (status = NO_CONTENT, description = "The job is gone"),
        (status = NOT_FOUND, body = ErrorBody),
        (status = CONFLICT, description = "Other jobs depend on it", body = ErrorBody),
    )
)]
async fn delete_job(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    state.platform.delete_job(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Schedules the job again.
#[utoipa::path(
    post,
    path = "/jobs/{name}/enable",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses((status = OK, body = Job), (status = NOT_FOUND, body = ErrorBody))
)]
async fn enable_job(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.platform.set_job_enabled(&name, true).await?.into()))
}

/// Stops scheduling the job; it can still be run by hand.
#[utoipa::path(
    post,
    path = "/jobs/{name}/disable",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    responses((status = OK, body = Job), (status = NOT_FOUND, body = ErrorBody))
)]
async fn disable_job(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.platform.set_job_enabled(&name, false).await?.into()))
}

/// Queues a run of the job now; it starts at the next tick its policies allow.
#[utoipa::path(
    post,
    path = "/jobs/{name}/runs",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    request_body(content = Option<TriggerBody>, description = "A range and a priority, both optional"),
    responses(
        (status = ACCEPTED, description = "The run is queued", body = Run),
        (status = NOT_FOUND, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody),
    )
)]
async fn trigger_run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Option<JsonBody<TriggerBody>>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let request = body.map(|JsonBody(body)| body).unwrap_or_default();
    let run = state.platform.trigger(&name, request.into()).await?;
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}

/// Queues one run per interval of `[from, to)`: the job's schedule
/// intervals, or `every`. Submitting the same backfill again returns the same runs.
#[utoipa::path(
    post,
    path = "/jobs/{name}/backfill",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name")),
    request_body = BackfillBody,
    responses(
        (status = ACCEPTED, description = "The runs, one per interval", body = Vec<Run>),
        (status = NOT_FOUND, body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, body = ErrorBody),
    )
)]
async fn backfill(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<BackfillBody>,
) -> Result<(StatusCode, Json<Vec<Run>>), ApiError> {
    let runs = state.platform.backfill(&name, body.try_into()?).await?;
    Ok((StatusCode::ACCEPTED, Json(runs.into_iter().map(Run::from).collect())))
}
