//! The request bodies the API reads: JSON whose errors answer like every other
//! API error, and job specs in TOML or JSON, told apart by `Content-Type`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use haul_scheduler::service::SpecFormat;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body; as an `Option`, absent when the request has no `Content-Type`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = <Json<T> as FromRequest<S>>::from_request(request, state).await?;
        Ok(JsonBody(value))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let json = <Json<T> as OptionalFromRequest<S>>::from_request(request, state).await?;
        Ok(json.map(|Json(value)| JsonBody(value)))
    }
}

/// A submitted job spec: TOML (`application/toml`, `text/plain`, or no
/// `Content-Type`) or the same structure in JSON (`application/json`).
pub struct JobSpecBody {
    pub text: String,
    pub format: SpecFormat,
}

impl<S: Send + Sync> FromRequest<S> for JobSpecBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let format = spec_format(request.headers())?;
        let bytes = Bytes::from_request(request, state).await?;
        let text = String::from_utf8(bytes.into()).map_err(|_| ApiError::invalid("the job spec is not UTF-8 text"))?;
        Ok(JobSpecBody { text, format })
    }
}

fn spec_format(headers: &HeaderMap) -> Result<SpecFormat, ApiError> {
    let Some(content_type) = headers.get(CONTENT_TYPE) else { return Ok(SpecFormat::Toml) };
    let essence = content_type.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(SpecFormat::Json),
        json if json.starts_with("application/") && json.ends_with("+json") => Ok(SpecFormat::Json),
        "application/toml" | "application/x-toml" | "text/toml" | "text/x-toml" | "text/plain" => Ok(SpecFormat::Toml),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("cannot read a job spec sent as `{other}`: send application/toml or application/json"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_of(content_type: Option<&str>) -> Result<SpecFormat, String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
        }
        spec_format(&headers).map_err(|error| error.message().to_string())
    }

    #[test]
    fn job_specs_are_toml_unless_sent_as_json() {
        assert_eq!(format_of(None), Ok(SpecFormat::Toml));
        assert_eq!(format_of(Some("application/toml")), Ok(SpecFormat::Toml));
        assert_eq!(format_of(Some("text/plain; charset=utf-8")), Ok(SpecFormat::Toml));
        assert_eq!(format_of(Some("application/json")), Ok(SpecFormat::Json));
        assert_eq!(format_of(Some("Application/JSON; charset=UTF-8")), Ok(SpecFormat::Json));
        assert_eq!(format_of(Some("application/vnd.haul.job+json")), Ok(SpecFormat::Json));
    }

    #[test]
    fn other_content_types_are_refused_by_name() {
        let error = format_of(Some("application/x-www-form-urlencoded")).unwrap_err();
        assert!(error.contains("`application/x-www-form-urlencoded`"), "{error}");
    }
}
