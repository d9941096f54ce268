//! `/api/v1/runs`: list and filter runs, look at one with its shards'
//! progress, errors and events, and move it through its lifecycle — pause,
//! resume, cancel, retry. Illegal transitions answer 409.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use haul_register::{RunFilter, RunState, RunTrigger};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::model::{Run, RunDetail, Shard};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(show_run))
        .routes(routes!(show_shard))
        .routes(routes!(pause_run))
        .routes(routes!(resume_run))
        .routes(routes!(cancel_run))
        .routes(routes!(retry_run))
}

/// Which runs to list, newest first.
#[derive(Debug, Default, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunQuery {
    /// Only the runs of this job.
    job: Option<String>,
    /// Only runs in these states: repeat the parameter, or separate states with commas.
    #[param(schema_with = super::model::run_states_schema, required = false)]
    state: Vec<RunState>,
    /// Only runs created this way.
    #[param(schema_with = super::model::trigger_schema, required = false)]
    trigger: Option<RunTrigger>,
    /// At most this many runs.
    limit: Option<u32>,
}

impl RunQuery {
    /// Reads a query string; `state` may repeat, and unknown parameters are refused.
    fn parse(query: &str) -> Result<RunQuery, ApiError> {
        let mut parsed = RunQuery::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "job" => parsed.job = Some(value.into_owned()),
                "state" => {
                    for name in value.split(',').map(str::trim).filter(|name| !name.is_empty()) {
                        let state = name.parse().map_err(|error| ApiError::invalid(format!("`state`: {error}")))?;
                        if !parsed.state.contains(&state) {
                            parsed.state.push(state);
                        }
                    }
                }
                "trigger" => {
                    let trigger = value.parse().map_err(|error| ApiError::invalid(format!("`trigger`: {error}")))?;
                    parsed.trigger = Some(trigger);
                }
                "limit" => {
                    let limit = value.parse().map_err(|_| {
                        ApiError::invalid(format!("`limit`: expected a non-negative integer, not `{value}`"))
                    })?;
                    parsed.limit = Some(limit);
                }
                other => {
                    return Err(ApiError::invalid(format!(
                        "unknown query parameter `{other}`: expected job, state, trigger or limit"
                    )));
                }
            }
        }
        Ok(parsed)
    }
}

impl From<RunQuery> for RunFilter {
    fn from(query: RunQuery) -> Self {
        RunFilter {
            job: query.job,
            states: query.state,
            trigger: query.trigger,
            limit: query.limit,
            ..Default::default()
        }
    }
}

/// Runs, newest first, filtered by job, state and trigger.
#[utoipa::path(
    get,
    path = "/runs",
    tag = "runs",
    params(RunQuery),
    responses((status = OK, body = Vec<Run>), (status = UNPROCESSABLE_ENTITY, body = ErrorBody))
)]
async fn list_runs(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Vec<Run>>, ApiError> {
    let filter = RunQuery::parse(query.as_deref().unwrap_or_default())?.into();
    let runs = state.platform.runs(&filter).await?;
    Ok(Json(runs.into_iter().map(Run::from).collect()))
}

/// A run with its shards (stored and live counters, phase, errors) and its events.
#[utoipa::path(
    get,
    path = "/runs/{id}",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = OK, body = RunDetail), (status = NOT_FOUND, body = ErrorBody))
)]
async fn show_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunDetail>, ApiError> {
    Ok(Json(state.platform.run_detail(&id).await?.into()))
}

/// One shard of a run.
#[utoipa::path(
    get,
    path = "/runs/{id}/shards/{shard}",
    tag = "runs",
    params(
        ("id" = String, Path, description = "The run's id"),
        ("shard" = String, Path, description = "The shard's id within the run"),
    ),
    responses((status = OK, body = Shard), (status = NOT_FOUND, body = ErrorBody))
)]
async fn show_shard(
    State(state): State<AppState>,
    Path((id, shard)): Path<(String, String)>,
) -> Result<Json<Shard>, ApiError> {
    Ok(Json(state.platform.shard(&id, &shard).await?.into()))
}

/// Pauses a running run: its shards commit, checkpoint and stop at their next batch boundary.
#[utoipa::path(
    post,
    path = "/runs/{id}/pause",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = OK, body = Run),
        (status = NOT_FOUND, body = ErrorBody),
        (status = CONFLICT, description = "The run cannot be paused in its state", body = ErrorBody),
    )
)]
async fn pause_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Run>, ApiError> {
    Ok(Json(state.platform.pause(&id).await?.into()))
}

/// Resumes a paused run from its checkpoints.
#[utoipa::path(
    post,
    path = "/runs/{id}/resume",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = OK, body = Run),
        (status = NOT_FOUND, body = ErrorBody),
        (status = CONFLICT, description = "The run is not paused", body = ErrorBody),
    )
)]
async fn resume_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Run>, ApiError> {
    Ok(Json(state.platform.resume(&id).await?.into()))
}

/// Cancels an unfinished run.
#[utoipa::path(
    post,
    path = "/runs/{id}/cancel",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = OK, body = Run),
        (status = NOT_FOUND, body = ErrorBody),
        (status = CONFLICT, description = "The run has already ended", body = ErrorBody),
    )
)]
async fn cancel_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Run>, ApiError> {
    Ok(Json(state.platform.cancel(&id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RetryQuery {
    /// Run the whole request again as a new run, instead of only the failed shards from their checkpoints.
    #[serde(default)]
    whole: bool,
}

/// Tries a failed run again: only its failed shards, from their checkpoints;
/// or with `whole=true`, as a new run of the same request.
#[utoipa::path(
    post,
    path = "/runs/{id}/retry",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id"), RetryQuery),
    responses(
        (status = ACCEPTED, description = "The retried run, or the new run with `whole`", body = Run),
        (status = NOT_FOUND, body = ErrorBody),
        (status = CONFLICT, description = "The run has not failed", body = ErrorBody),
    )
)]
async fn retry_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<RetryQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let Query(RetryQuery { whole }) = query?;
    Ok((StatusCode::ACCEPTED, Json(state.platform.retry(&id, whole).await?.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn states_repeat_or_come_comma_separated() {
        let query = RunQuery::parse("job=orders&state=running,paused&state=failed&limit=5&trigger=backfill").unwrap();
        assert_eq!(
            query,
            RunQuery {
                job: Some("orders".into()),
                state: vec![RunState::Running, RunState::Paused, RunState::Failed],
                trigger: Some(RunTrigger::Backfill),
                limit: Some(5),
            }
        );
        assert_eq!(RunQuery::parse("").unwrap(), RunQuery::default());
        assert_eq!(RunQuery::parse("job=a%20b").unwrap().job.as_deref(), Some("a b"));
    }

    #[test]
    fn bad_parameters_are_named() {
        let message = |query: &str| RunQuery::parse(query).unwrap_err().message().to_string();
        assert_eq!(message("state=done"), "`state`: unknown run state `done`");
        assert_eq!(message("trigger=cron"), "`trigger`: unknown trigger state `cron`");
        assert_eq!(message("limit=-1"), "`limit`: expected a non-negative integer, not `-1`");
        assert!(message("jobs=x").starts_with("unknown query parameter `jobs`"));
    }

    proptest! {
        #[test]
        fn any_way_of_writing_states_reads_the_same_set(
            picks in proptest::collection::vec(0..RunState::ALL.len(), 0..8),
            commas in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let states: Vec<RunState> = picks.iter().map(|i| RunState::ALL[*i]).collect();
            let mut query = String::new();
            for (i, state) in states.iter().enumerate() {
                let separator = if i == 0 { "state=" } else if commas[i] { "," } else { "&state=" };
                query.push_str(separator);
                query.push_str(state.as_str());
            }
            let mut expected = Vec::new();
            for state in states {
                if !expected.contains(&state) {
                    expected.push(state);
                }
            }
            prop_assert_eq!(RunQuery::parse(&query).unwrap().state, expected);
        }
    }
}
