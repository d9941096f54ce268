//! How the API answers a failure: a status code and a JSON body
//! `{"error": "..."}`. The platform's errors map to 404 (not found), 422
//! (invalid input, with its location), 409 (conflicts with the current
//! state, such as an illegal transition) and 500; malformed requests keep the
//! status the extractor chose.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use haul_scheduler::service::PlatformError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, lowercase, with the location of the problem when there is one.
    pub error: String,
}

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    /// A request that does not validate (422).
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<PlatformError> for ApiError {
    fn from(error: PlatformError) -> Self {
        let status = match &error {
            PlatformError::NotFound(_) => StatusCode::NOT_FOUND,
            PlatformError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PlatformError::Conflict(_) => StatusCode::CONFLICT,
            PlatformError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = format!("{:#}", anyhow::Error::from(error));
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %message, "api request failed");
        }
        ApiError::new(status, message)
    }
}

/// Rejections of axum's extractors keep their status and message.
macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                ApiError::new(rejection.status(), rejection.body_text())
            }
        }
    )*};
}

from_rejection!(JsonRejection, QueryRejection, BytesRejection);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_errors_map_to_their_status_and_keep_their_message() {
        let cases = [
            (PlatformError::NotFound("run r1".into()), StatusCode::NOT_FOUND, "run r1 not found"),
            (
                PlatformError::Invalid("job.toml:3:1: unknown field".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                "job.toml:3:1: unknown field",
            ),
            (
                PlatformError::Conflict("run r1 is running, not paused".into()),
                StatusCode::CONFLICT,
                "run r1 is running, not paused",
            ),
            (
                PlatformError::Internal(anyhow::anyhow!("disk full").context("saving the run")),
                StatusCode::INTERNAL_SERVER_ERROR,
                "saving the run: disk full",
            ),
        ];
        for (error, status, message) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status, api.message()), (status, message));
        }
    }
}
