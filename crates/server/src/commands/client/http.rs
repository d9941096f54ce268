//! Requests to a server's `/api/v1`: path segments percent-encoded, JSON
//! answers decoded, and error answers turned into their `{"error": ...}`
//! message so that the command fails with it.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::error::ErrorBody;

/// A client of one server's REST API.
pub struct ApiClient {
    server: Url,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the server at `server` (`http://host:port`); nothing is sent yet.
    pub fn new(server: &str) -> anyhow::Result<ApiClient> {
        let server = Url::parse(server).with_context(|| format!("invalid server address `{server}`"))?;
        if !matches!(server.scheme(), "http" | "https") || server.cannot_be_a_base() {
            bail!("invalid server address `{server}`: expected http://host:port or https://host:port");
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("haul/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(ApiClient { server, http })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &[&str], query: &[(&str, String)]) -> anyhow::Result<T> {
        let (_, answer) = self.send(self.http.get(self.url(path)).query(query)).await?;
        Ok(answer)
    }

    /// POSTs `body` as JSON, or nothing.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.post(self.url(path)).query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (_, answer) = self.send(request).await?;
        Ok(answer)
    }

    /// PUTs `text` as `content_type`; the status tells created (201) from updated (200).
    pub async fn put_text<T: DeserializeOwned>(
        &self,
        path: &[&str],
        text: String,
        content_type: &str,
    ) -> anyhow::Result<(StatusCode, T)> {
        let request = self.http.put(self.url(path)).header(reqwest::header::CONTENT_TYPE, content_type).body(text);
        self.send(request).await
    }

    pub async fn delete(&self, path: &[&str]) -> anyhow::Result<()> {
        self.answer(self.http.delete(self.url(path))).await?;
        Ok(())
    }

    fn url(&self, path: &[&str]) -> Url {
        let mut url = self.server.clone();
        // `new` refused addresses that cannot be a base, so the segments exist.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["api", "v1"]).extend(path);
        }
        url
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<(StatusCode, T)> {
        let (status, body) = self.answer(request).await?;
        let answer = serde_json::from_slice(&body).context("the server's answer is not what this client expects")?;
        Ok((status, answer))
    }

    /// The status and body of a successful answer; an error answer's message otherwise.
    async fn answer(&self, request: RequestBuilder) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let response =
            request.send().await.with_context(|| format!("cannot reach the haul server at {}", self.server))?;
        let status = response.status();
        let body = response.bytes().await.context("reading the server's answer")?.to_vec();
        if status.is_success() {
            return Ok((status, body));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => bail!("{error}"),
            Err(_) => bail!("the server answered {status}: {}", String::from_utf8_lossy(&body).trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_under_api_v1_with_segments_encoded() {
        let client = ApiClient::new("http://127.0.0.1:8080/").unwrap();
        assert_eq!(client.url(&["jobs"]).as_str(), "http://127.0.0.1:8080/api/v1/jobs");
        let shard = client.url(&["runs", "r1", "shards", "in/a b.csv"]);
        assert_eq!(shard.as_str(), "http://127.0.0.1:8080/api/v1/runs/r1/shards/in%2Fa%20b.csv");
        let prefixed = ApiClient::new("https://haul.example/platform").unwrap();
        assert_eq!(prefixed.url(&["runs"]).as_str(), "https://haul.example/platform/api/v1/runs");
    }

    #[test]
    fn addresses_that_are_not_http_are_refused() {
        for address in ["127.0.0.1:8080", "ftp://host", "mailto:ops@example.com", "not a url"] {
            assert!(ApiClient::new(address).is_err(), "{address}");
        }
    }
}
