//! The web client shared by the `http` and `crawl` sources.
//!
//! A [`WebClient`] is built from a source's [`Politeness`] table
//! (`[source.politeness]`) and sends [`WebRequest`]s with
//! [`WebClient::fetch`], which returns a [`WebResponse`]: the final status,
//! headers, URL (after redirects) and the whole body.
//!
//! What `fetch` guarantees:
//! - only `http` and `https` URLs are fetched, redirects included
//!   ([`WebError::Scheme`], [`WebError::Redirect`]);
//! - every request to one origin (scheme, host, port) from this process
//!   passes one gate, whichever shard, source or job sends it: at most
//!   `concurrency` in flight and starts at least `min_delay` (or
//!   1/`requests_per_second`) apart, each request held to its own source's
//!   limits;
//! - timeouts, network errors and the statuses 408, 429, 500, 502, 503 and
//!   504 are retried with the `retry` policy's backoff; a `Retry-After`
//!   (seconds or an HTTP date) replaces the backoff and holds back every
//!   request to that host; a wait longer than `max_retry_after` fails at once;
//! - every other status (200, 304, 404, …) is a response, not an error: the
//!   caller decides;
//! - a body larger than `max_response_bytes` (after decompression) is refused
//!   while it streams in ([`WebError::TooLarge`]), the whole request is
//!   bounded by `timeout`, and at most `max_redirects` redirects are followed;
//! - passwords in URLs, sensitive headers and the query parameters named in
//!   [`WebRequest::secret_query`] never appear in errors or logs.
//!
//! Errors from exhausted retries are transient ([`WebError::is_transient`]);
//! [`WebError::into_anyhow`] keeps that mark for the runtime, which then
//! reopens the shard at its last checkpoint after a backoff of its own.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use haul_collect::web::{Politeness, WebClient, WebRequest};
//! let client = WebClient::new(Politeness::default()).map_err(|e| e.into_anyhow())?;
//! let request = WebRequest::get(url::Url::parse("https://example.com/items?page=1")?);
//! let response = client.fetch(&request).await.map_err(|e| e.into_anyhow())?;
//! if response.status.is_success() {
//!     println!("{} bytes from {}", response.body.len(), response.url);
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod gate;
mod options;
mod retry_after;

pub use client::{WebClient, WebRequest, WebResponse, is_web_scheme};
pub use error::WebError;
pub use options::{Politeness, default_user_agent};
pub use retry_after::parse_retry_after;
