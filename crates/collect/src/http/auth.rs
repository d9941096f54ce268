//! Authentication of the `http` source's requests: a bearer token, basic
//! credentials, an API key (in a header or the query), or an OAuth2 access
//! token fetched with the client credentials grant and fetched again before
//! it expires or when the API answers 401.
//!
//! Secrets may be written as `${env:NAME}`; they are read from the
//! environment on first use, held as [`SecretString`]s, sent only in
//! sensitive headers or masked query parameters, and never logged.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use haul_common::env::interpolate_secret;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::web::{WebClient, WebRequest};

/// Tokens are fetched again this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// `[source.auth]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    Bearer {
        token: SecretString,
    },
    Basic {
        username: String,
        password: SecretString,
    },
    ApiKey {
        /// The header or query parameter that carries the key.
        name: String,
        #[serde(default, rename = "in")]
        location: KeyLocation,
        value: SecretString,
    },
    Oauth2 {
        token_url: String,
        client_id: String,
        client_secret: SecretString,
        #[serde(default)]
        scopes: Vec<String>,
        /// Extra form fields of the token request, e.g. `audience`.
        #[serde(default)]
        params: BTreeMap<String, String>,
        /// How the client credentials reach the token endpoint.
        #[serde(default)]
        credentials: CredentialsIn,
    },
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    #[default]
    Header,
    Query,
}

/// How OAuth2 client credentials are sent: HTTP basic authentication (the
/// method every server must support) or form fields of the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsIn {
    #[default]
    Basic,
    Body,
}

impl AuthConfig {
    /// Checks what can be checked without the environment.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        match self {
            AuthConfig::ApiKey { name, location: KeyLocation::Header, .. } => {
                HeaderName::from_bytes(name.as_bytes()).with_context(|| format!("`{name}` is not a header name"))?;
            }
            AuthConfig::Oauth2 { token_url, .. } if !token_url.contains("${") => {
                let url = Url::parse(token_url).with_context(|| format!("`token_url` `{token_url}` is not a url"))?;
                if !crate::web::is_web_scheme(url.scheme()) {
                    bail!("`token_url` must be an http or https url");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads the secrets from the environment.
    pub(crate) fn resolve(&self) -> anyhow::Result<Auth> {
        let secret = |value: &SecretString, option: &str| {
            interpolate_secret(value.expose_secret()).with_context(|| format!("in `auth.{option}`"))
        };
        Ok(match self {
            AuthConfig::Bearer { token } => {
                Auth::Header(AUTHORIZATION, sensitive(&format!("Bearer {}", secret(token, "token")?.expose_secret()))?)
            }
            AuthConfig::Basic { username, password } => {
                let password = secret(password, "password")?;
                Auth::Header(AUTHORIZATION, basic(username, &password)?)
            }
            AuthConfig::ApiKey { name, location: KeyLocation::Header, value } => {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("`{name}` is not a header name"))?;
                Auth::Header(header, sensitive(secret(value, "value")?.expose_secret())?)
            }
            AuthConfig::ApiKey { name, location: KeyLocation::Query, value } => {
                Auth::Query(name.clone(), secret(value, "value")?)
            }
            AuthConfig::Oauth2 { token_url, client_id, client_secret, scopes, params, credentials } => {
                let token_url = interpolate_secret(token_url).context("in `auth.token_url`")?;
                let token_url = Url::parse(token_url.expose_secret()).context("`auth.token_url` is not a url")?;
                Auth::OAuth2(Box::new(ClientCredentials {
                    token_url,
                    client_id: client_id.clone(),
                    client_secret: secret(client_secret, "client_secret")?,
                    scopes: scopes.join(" "),
                    params: params.clone(),
                    credentials: *credentials,
                    token: Mutex::new(None),
                }))
            }
        })
    }
}

fn sensitive(text: &str) -> anyhow::Result<HeaderValue> {
    let mut value =
        HeaderValue::from_str(text).map_err(|_| anyhow::anyhow!("a credential holds characters a header cannot"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn basic(username: &str, password: &SecretString) -> anyhow::Result<HeaderValue> {
    use base64::Engine;
    let credentials = format!("{username}:{}", password.expose_secret());
    sensitive(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)))
}

/// Authentication ready to apply, its secrets resolved.
pub(crate) enum Auth {
    None,
    Header(HeaderName, HeaderValue),
    Query(String, SecretString),
    OAuth2(Box<ClientCredentials>),
}

impl Auth {
    /// Adds the credentials to `request`.
    pub(crate) async fn apply(&self, client: &WebClient, request: &mut WebRequest) -> anyhow::Result<()> {
        match self {
            Auth::None => {}
            Auth::Header(name, value) => {
                request.headers.insert(name.clone(), value.clone());
            }
            Auth::Query(name, value) => {
                request.url.query_pairs_mut().append_pair(name, value.expose_secret());
                request.secret_query.push(name.clone());
            }
            Auth::OAuth2(credentials) => {
                let token = credentials.token(client).await?;
                request.headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {}", token.expose_secret()))?);
            }
        }
        Ok(())
    }

    /// The API refused the credentials of `request`: true when fresh ones
    /// may help (an OAuth2 token is dropped, to be fetched again).
    pub(crate) async fn refused(&self, request: &WebRequest) -> bool {
        match self {
            Auth::OAuth2(credentials) => {
                let sent = request.headers.get(AUTHORIZATION).cloned();
                credentials.forget(sent).await;
                true
            }
            _ => false,
        }
    }

    /// The query parameter that carries a key, to keep it out of checkpoints.
    pub(crate) fn secret_query(&self) -> Option<&str> {
        match self {
            Auth::Query(name, _) => Some(name),
            _ => None,
        }
    }
}

/// The OAuth2 client credentials grant, with the token it holds.
pub(crate) struct ClientCredentials {
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    scopes: String,
    params: BTreeMap<String, String>,
    credentials: CredentialsIn,
    token: Mutex<Option<Token>>,
}

struct Token {
    access: SecretString,
    /// When to fetch a new one; `None` when the server gave no lifetime.
    refresh_at: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl ClientCredentials {
    /// A valid access token: the one held, or a new one. Shards share it;
    /// one fetches while the others wait.
    async fn token(&self, client: &WebClient) -> anyhow::Result<SecretString> {
        let mut held = self.token.lock().await;
        if let Some(token) = held.as_ref()
            && token.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(token.access.clone());
        }
        let token = self.fetch(client).await?;
        let access = token.access.clone();
        *held = Some(token);
        Ok(access)
    }

    /// Drops the held token if it is the one `sent` (another shard may have replaced it already).
    async fn forget(&self, sent: Option<HeaderValue>) {
        let mut held = self.token.lock().await;
        let same = match (held.as_ref(), sent) {
            (Some(token), Some(sent)) => {
                sent.as_bytes() == format!("Bearer {}", token.access.expose_secret()).as_bytes()
            }
            _ => true,
        };
        if same {
            *held = None;
        }
    }

    async fn fetch(&self, client: &WebClient) -> anyhow::Result<Token> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if !self.scopes.is_empty() {
            form.push(("scope", &self.scopes));
        }
        form.extend(self.params.iter().map(|(key, value)| (key.as_str(), value.as_str())));
        let mut request = WebRequest::get(self.token_url.clone());
        request.method = Method::POST;
        match self.credentials {
            CredentialsIn::Basic => {
                request.headers.insert(AUTHORIZATION, basic(&self.client_id, &self.client_secret)?);
            }
            CredentialsIn::Body => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.expose_secret()));
            }
        }
        request.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        request.body =
            Some(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish().into_bytes());
        let requested = Instant::now();
        let response =
            client.fetch(&request).await.map_err(|error| error.into_anyhow().context("fetching an oauth2 token"))?;
        if !response.status.is_success() {
            bail!("the oauth2 token endpoint {} answered {}", request.shown_url(), response.status);
        }
        let answer: TokenResponse = serde_json::from_slice(&response.body)
            .context("the oauth2 token endpoint's answer has no `access_token`")?;
        let refresh_at =
            answer.expires_in.map(|seconds| requested + Duration::from_secs(seconds).saturating_sub(EXPIRY_MARGIN));
        tracing::debug!(token_url = %request.shown_url(), expires_in = answer.expires_in, "fetched an oauth2 token");
        Ok(Token { access: answer.access_token, refresh_at })
    }
}
