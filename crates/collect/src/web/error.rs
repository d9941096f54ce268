//! Why a web request failed. Statuses that are not retried (404, 304, …) are
//! not errors: the caller gets the response.

use std::time::Duration;

use reqwest::StatusCode;

/// A failed request. URLs in messages have their password and secret query
/// values masked.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot set up the web client: {reason}")]
    Client { reason: String },
    #[error("`{url}` is not an http or https url")]
    Scheme { url: String },
    #[error("{method} {url}: the response is larger than {limit} bytes (`max_response_bytes`)")]
    TooLarge { method: String, url: String, limit: u64 },
    #[error("{method} {url}: {reason}")]
    Redirect { method: String, url: String, reason: String },
    #[error("{method} {url}: no complete response within {timeout:?}")]
    Timeout { method: String, url: String, timeout: Duration },
    #[error("{method} {url}: {reason}")]
    Network { method: String, url: String, reason: String },
    #[error("{method} {url}: the server answered {status}")]
    Status { method: String, url: String, status: StatusCode },
    #[error("{method} {url}: the server asked to retry after {wait:?}, more than `max_retry_after` ({limit:?})")]
    RetryAfterTooLong { method: String, url: String, wait: Duration, limit: Duration },
    #[error("{method} {url}: {reason}")]
    Request { method: String, url: String, reason: String },
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: Box<WebError> },
}

impl WebError {
    /// Whether trying again later may succeed: retries were exhausted, or the
    /// server asked for a longer wait than allowed.
    pub fn is_transient(&self) -> bool {
        matches!(self, WebError::GaveUp { .. } | WebError::RetryAfterTooLong { .. })
    }

    /// Whether the client retries this failure itself.
    pub(crate) fn is_retried(&self) -> bool {
        matches!(self, WebError::Timeout { .. } | WebError::Network { .. } | WebError::Status { .. })
    }

    /// As an `anyhow` error, marked [`haul_collect_core::transient`] when
    /// transient so that the runtime retries the shard from its checkpoint.
    /// Plugins convert with this rather than `?`, which would drop the mark.
    pub fn into_anyhow(self) -> anyhow::Error {
        if self.is_transient() { haul_collect_core::transient::transient(self) } else { anyhow::Error::new(self) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haul_collect_core::transient::is_transient;

    #[test]
    fn exhausted_retries_are_transient() {
        let last = WebError::Status { method: "GET".into(), url: "http://h/".into(), status: StatusCode::BAD_GATEWAY };
        assert!(last.is_retried());
        let error = WebError::GaveUp { attempts: 3, last: Box::new(last) };
        assert_eq!(error.to_string(), "gave up after 3 attempts: GET http://h/: the server answered 502 Bad Gateway");
        assert!(is_transient(&error.into_anyhow()));
        let error = WebError::Scheme { url: "ftp://h/".into() };
        assert!(!error.is_retried());
        assert!(!is_transient(&error.into_anyhow()));
    }
}
