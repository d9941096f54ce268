//! [`WebClient`]: one request at a time through the host's gate, with
//! retries, a timeout, a redirect limit and a cap on the body's size.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{AsHeaderName, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use url::Url;

use super::error::WebError;
use super::gate::{HostLimits, gate_for};
use super::options::Politeness;
use super::retry_after::parse_retry_after;

/// One request to send: built by the caller, sent (and resent on retries)
/// by [`WebClient::fetch`].
#[derive(Clone)]
pub struct WebRequest {
    pub method: Method,
    pub url: Url,
    /// Mark secret values with `HeaderValue::set_sensitive` so that they are
    /// not shown by `Debug`.
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// Query parameters whose values are secrets (an API key): masked
    /// wherever the URL is shown.
    pub secret_query: Vec<String>,
}

impl WebRequest {
    /// A plain `GET`.
    pub fn get(url: Url) -> Self {
        WebRequest { method: Method::GET, url, headers: HeaderMap::new(), body: None, secret_query: Vec::new() }
    }

    /// The URL for messages and logs: password and secret query values masked.
    pub fn shown_url(&self) -> String {
        mask_url(&self.url, &self.secret_query)
    }
}

impl fmt::Debug for WebRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRequest")
            .field("method", &self.method)
            .field("url", &self.shown_url())
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

/// The answer to a request, after redirects: any status that is not retried.
#[derive(Clone)]
pub struct WebResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The URL that answered, after redirects.
    pub url: Url,
    /// The whole body, decompressed; at most `max_response_bytes`.
    pub body: Vec<u8>,
}

impl WebResponse {
    /// A header's value, when present and visible ascii.
    pub fn header(&self, name: impl AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl fmt::Debug for WebResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut url = self.url.clone();
        url.set_query(None);
        f.debug_struct("WebResponse")
            .field("status", &self.status)
            .field("url", &mask_url(&url, &[]))
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// A polite HTTP client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct WebClient {
    http: reqwest::Client,
    politeness: Arc<Politeness>,
}

impl WebClient {
    pub fn new(politeness: Politeness) -> Result<Self, WebError> {
        let max_redirects = politeness.max_redirects;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let scheme = attempt.url().scheme().to_string();
            if !is_web_scheme(&scheme) {
                attempt.error(format!("redirected to a `{scheme}:` url; only http and https are followed"))
            } else if attempt.previous().len() > max_redirects {
                attempt.error(format!("more than {max_redirects} redirects (`max_redirects`)"))
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .user_agent(politeness.user_agent.clone())
            .timeout(politeness.timeout.0)
            .redirect(redirects)
            .build()
            .map_err(|error| WebError::Client { reason: describe(error) })?;
        Ok(WebClient { http, politeness: Arc::new(politeness) })
    }

    pub fn politeness(&self) -> &Politeness {
        &self.politeness
    }

    /// Sends `request` through its host's gate, retrying timeouts, network
    /// errors and retried statuses (408, 429, 500, 502, 503, 504) with
    /// backoff, or after the server's `Retry-After` (which holds back every
    /// request to that host). Any other status is returned as a response.
    pub async fn fetch(&self, request: &WebRequest) -> Result<WebResponse, WebError> {
        if !is_web_scheme(request.url.scheme()) {
            return Err(WebError::Scheme { url: request.shown_url() });
        }
        let gate = gate_for(&request.url);
        let limits = HostLimits { concurrency: self.politeness.concurrency.get(), spacing: self.politeness.spacing() };
        let mut delays = self.politeness.retry.delays();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = {
                let _pass = gate.enter(limits).await;
                self.send_once(request).await
            };
            let (failure, retry_after) = match outcome {
                Ok(response) if !is_retried_status(response.status) => return Ok(response),
                Ok(response) => (self.status_error(request, response.status), retry_after(&response)),
                Err(error) if error.is_retried() => (error, None),
                Err(error) => return Err(error),
            };
            let Some(backoff) = delays.next() else {
                return Err(WebError::GaveUp { attempts, last: Box::new(failure) });
            };
            let limit = self.politeness.max_retry_after.0;
            let wait = match retry_after {
                Some(wait) if wait > limit => {
                    let (method, url) = (request.method.to_string(), request.shown_url());
                    return Err(WebError::RetryAfterTooLong { method, url, wait, limit });
                }
                Some(wait) => {
                    gate.pause_for(wait);
                    wait
                }
                None => backoff,
            };
            tracing::warn!(attempt = attempts, wait_ms = wait.as_millis() as u64, error = %failure, "retrying a web request");
            if retry_after.is_none() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// One attempt: send, then read the body up to the size cap.
    async fn send_once(&self, request: &WebRequest) -> Result<WebResponse, WebError> {
        let mut builder =
            self.http.request(request.method.clone(), request.url.clone()).headers(request.headers.clone());
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let mut response = builder.send().await.map_err(|error| self.failure(request, error))?;
        let limit = self.politeness.max_response_bytes;
        let too_large = || WebError::TooLarge { method: request.method.to_string(), url: request.shown_url(), limit };
        let expected = response.content_length().unwrap_or(0);
        if expected > limit {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(expected as usize);
        while let Some(chunk) = response.chunk().await.map_err(|error| self.failure(request, error))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(WebResponse {
            status: response.status(),
            headers: response.headers().clone(),
            url: response.url().clone(),
            body,
        })
    }

    fn status_error(&self, request: &WebRequest, status: StatusCode) -> WebError {
        WebError::Status { method: request.method.to_string(), url: request.shown_url(), status }
    }

    fn failure(&self, request: &WebRequest, error: reqwest::Error) -> WebError {
        let (method, url) = (request.method.to_string(), request.shown_url());
        if error.is_timeout() {
            WebError::Timeout { method, url, timeout: self.politeness.timeout.0 }
        } else if error.is_redirect() {
            WebError::Redirect { method, url, reason: describe(error) }
        } else if error.is_connect() || error.is_request() || error.is_body() {
            WebError::Network { method, url, reason: describe(error) }
        } else {
            WebError::Request { method, url, reason: describe(error) }
        }
    }
}

/// Whether a URL scheme is one a web client may fetch.
pub fn is_web_scheme(scheme: &str) -> bool {
    scheme == "http" || scheme == "https"
}

/// Statuses that say "try again": the client retries them.
fn is_retried_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// An error and its causes, without the URL (it may hold secrets).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// `url` with its password and the values of `secret_query` masked.
fn mask_url(url: &Url, secret_query: &[String]) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if !secret_query.is_empty() && url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let secret = secret_query.iter().any(|name| *name == key);
                let value = if secret { "***".to_string() } else { value.into_owned() };
                (key.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// How long `response` asks to wait before asking again, if it says.
fn retry_after(response: &WebResponse) -> Option<Duration> {
    response.header(RETRY_AFTER).and_then(|value| parse_retry_after(value, SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_mask_secrets() {
        let mut request = WebRequest::get(Url::parse("https://user:pw@api.test/items?page=2&api_key=abc").unwrap());
        request.secret_query = vec!["api_key".into()];
        let shown = request.shown_url();
        assert_eq!(shown, "https://user:***@api.test/items?page=2&api_key=***");
        assert!(!format!("{request:?}").contains("abc"));
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let client = WebClient::new(Politeness::default()).unwrap();
        for url in ["ftp://example.test/file", "file:///etc/passwd"] {
            let error = client.fetch(&WebRequest::get(Url::parse(url).unwrap())).await.unwrap_err();
            assert!(matches!(error, WebError::Scheme { .. }), "{error}");
            assert!(error.to_string().contains("is not an http or https url"), "{error}");
        }
    }
}
