//! The request of one page: the configured method, URL, query, headers and
//! body with the shard's placeholders filled in, then the paginator's
//! parameters (or its next URL, which replaces URL and query).
//!
//! A query parameter, header or body field whose template uses `{since}` is
//! left out while there is no high-water mark (the first incremental run, or
//! a full run), so the same job reads everything the first time.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value as Json;
use url::Url;

use super::pagination::{PageState, Paginator};
use super::records::ResponseFormat;
use super::template::{Resolved, Template, Unset, Var, Vars};
use crate::web::WebRequest;

/// How the `body` table is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    #[default]
    Json,
    Form,
}

/// The request options, parsed.
#[derive(Debug)]
pub(crate) struct RequestSpec {
    method: Method,
    url: Template,
    query: Vec<(String, Template)>,
    headers: Vec<(HeaderName, Template)>,
    body: Option<(BodyFormat, JsonTemplate)>,
    format: ResponseFormat,
    /// `HOST:PORT` of the url, unless a variable is part of it.
    endpoint: Option<String>,
}

/// A JSON body whose strings are templates.
#[derive(Debug)]
enum JsonTemplate {
    Text(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
    Other(Json),
}

impl JsonTemplate {
    fn parse(value: Json) -> anyhow::Result<JsonTemplate> {
        Ok(match value {
            Json::String(text) => JsonTemplate::Text(Template::parse(&text)?),
            Json::Array(items) => {
                JsonTemplate::Array(items.into_iter().map(JsonTemplate::parse).collect::<anyhow::Result<_>>()?)
            }
            Json::Object(map) => JsonTemplate::Object(
                map.into_iter()
                    .map(|(key, value)| Ok((key, JsonTemplate::parse(value)?)))
                    .collect::<anyhow::Result<_>>()?,
            ),
            other => JsonTemplate::Other(other),
        })
    }

    fn uses(&self, var: Var) -> bool {
        match self {
            JsonTemplate::Text(template) => template.uses(var),
            JsonTemplate::Array(items) => items.iter().any(|item| item.uses(var)),
            JsonTemplate::Object(entries) => entries.iter().any(|(_, value)| value.uses(var)),
            JsonTemplate::Other(_) => false,
        }
    }

    fn resolve(&self) -> anyhow::Result<ResolvedJson> {
        Ok(match self {
            JsonTemplate::Text(template) => ResolvedJson::Text(template.resolve()?),
            JsonTemplate::Array(items) => {
                ResolvedJson::Array(items.iter().map(JsonTemplate::resolve).collect::<anyhow::Result<_>>()?)
            }
            JsonTemplate::Object(entries) => ResolvedJson::Object(
                entries
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), value.resolve()?)))
                    .collect::<anyhow::Result<_>>()?,
            ),
            JsonTemplate::Other(value) => ResolvedJson::Other(value.clone()),
        })
    }
}

enum ResolvedJson {
    Text(Resolved),
    Array(Vec<ResolvedJson>),
    Object(Vec<(String, ResolvedJson)>),
    Other(Json),
}

impl ResolvedJson {
    /// The JSON value; `None` for a string left out (see the module doc).
    fn render(&self, vars: &Vars) -> anyhow::Result<Option<Json>> {
        Ok(match self {
            ResolvedJson::Text(template) => fill(template, vars)?.map(Json::String),
            ResolvedJson::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.extend(item.render(vars)?);
                }
                Some(Json::Array(out))
            }
            ResolvedJson::Object(entries) => {
                let mut out = serde_json::Map::new();
                for (key, value) in entries {
                    if let Some(value) = value.render(vars)? {
                        out.insert(key.clone(), value);
                    }
                }
                Some(Json::Object(out))
            }
            ResolvedJson::Other(value) => Some(value.clone()),
        })
    }
}

/// A template's text, `None` when it uses `{since}` without a value.
fn fill(template: &Resolved, vars: &Vars) -> anyhow::Result<Option<String>> {
    match template.render(vars) {
        Ok(text) => Ok(Some(text)),
        Err(Unset(Var::Since)) => Ok(None),
        Err(unset) => bail!("{unset}"),
    }
}

/// The parts of a request as the job file writes them.
pub(crate) struct RequestOptions {
    pub method: String,
    pub url: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub body: Option<Json>,
    pub body_format: BodyFormat,
    pub format: ResponseFormat,
}

impl RequestSpec {
    pub(crate) fn new(options: RequestOptions) -> anyhow::Result<RequestSpec> {
        let method = Method::from_bytes(options.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| anyhow::anyhow!("`{}` is not an http method", options.method))?;
        let url = Template::parse(&options.url).context("in `url`")?;
        let mut endpoint = None;
        if !options.url.contains("${") && !options.url.starts_with('{') {
            let sample = options.url.replace(['{', '}'], "");
            let parsed = Url::parse(&sample).with_context(|| format!("`url` `{}` is not a url", options.url))?;
            if !crate::web::is_web_scheme(parsed.scheme()) {
                bail!("`url` must be an http or https url, not `{}:`", parsed.scheme());
            }
            let authority = options.url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or("{");
            if !authority.contains('{')
                && let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default())
            {
                endpoint = Some(format!("{host}:{port}"));
            }
        }
        let query = options
            .query
            .into_iter()
            .map(|(name, text)| {
                Ok((name.clone(), Template::parse(&text).with_context(|| format!("in `query.{name}`"))?))
            })
            .collect::<anyhow::Result<_>>()?;
        let headers = options
            .headers
            .into_iter()
            .map(|(name, text)| {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("`{name}` is not a header name"))?;
                Ok((header, Template::parse(&text).with_context(|| format!("in `headers.{name}`"))?))
            })
            .collect::<anyhow::Result<_>>()?;
        let body = match options.body {
            None => None,
            Some(body) => {
                if options.body_format == BodyFormat::Form
                    && !body.as_object().is_some_and(|map| {
                        map.values().all(|value| value.is_string() || value.is_number() || value.is_boolean())
                    })
                {
                    bail!("a form `body` must be a table of plain values");
                }
                Some((options.body_format, JsonTemplate::parse(body).context("in `body`")?))
            }
        };
        Ok(RequestSpec { method, url, query, headers, body, format: options.format, endpoint })
    }

    /// `HOST:PORT` of the url, unless a variable is part of it.
    pub(crate) fn endpoint(&self) -> Option<String> {
        self.endpoint.clone()
    }

    /// Whether any part of the request uses `var`.
    pub(crate) fn uses(&self, var: Var) -> bool {
        self.url.uses(var)
            || self.query.iter().any(|(_, template)| template.uses(var))
            || self.headers.iter().any(|(_, template)| template.uses(var))
            || self.body.as_ref().is_some_and(|(_, body)| body.uses(var))
    }

    /// Reads the `${env:…}` references.
    pub(crate) fn resolve(&self) -> anyhow::Result<ResolvedRequest> {
        let named = |what: &str, name: &str, template: &Template| {
            template.resolve().with_context(|| format!("in `{what}.{name}`"))
        };
        Ok(ResolvedRequest {
            method: self.method.clone(),
            url: self.url.resolve().context("in `url`")?,
            query: self
                .query
                .iter()
                .map(|(name, t)| Ok((name.clone(), named("query", name, t)?)))
                .collect::<anyhow::Result<_>>()?,
            headers: self
                .headers
                .iter()
                .map(|(name, t)| Ok((name.clone(), named("headers", name.as_str(), t)?)))
                .collect::<anyhow::Result<_>>()?,
            body: self
                .body
                .as_ref()
                .map(|(format, body)| Ok::<_, anyhow::Error>((*format, body.resolve().context("in `body`")?)))
                .transpose()?,
            format: self.format,
        })
    }
}

/// The request options with their environment references read.
pub(crate) struct ResolvedRequest {
    method: Method,
    url: Resolved,
    query: Vec<(String, Resolved)>,
    headers: Vec<(HeaderName, Resolved)>,
    body: Option<(BodyFormat, ResolvedJson)>,
    format: ResponseFormat,
}

impl ResolvedRequest {
    /// The request of the page `page` of a shard with placeholder values `vars`.
    pub(crate) fn build(&self, vars: &Vars, page: &PageState, paginator: &Paginator) -> anyhow::Result<WebRequest> {
        let mut secret_query = Vec::new();
        let url = match page {
            PageState::Url(next) => {
                Url::parse(next).with_context(|| format!("the next page's url `{next}` is not valid"))?
            }
            _ => {
                let text = self.url.render(vars).map_err(|unset| anyhow::anyhow!("in `url`: {unset}"))?;
                let mut url = Url::parse(&text).with_context(|| format!("`{text}` is not a url"))?;
                let paging = paginator.query(page);
                let mut pairs = Vec::new();
                for (name, template) in &self.query {
                    if paging.iter().any(|(param, _)| param == name) {
                        continue;
                    }
                    if let Some(value) = fill(template, vars).with_context(|| format!("in `query.{name}`"))? {
                        if template.secret {
                            secret_query.push(name.clone());
                        }
                        pairs.push((name.clone(), value));
                    }
                }
                pairs.extend(paging);
                if !pairs.is_empty() {
                    url.query_pairs_mut().extend_pairs(pairs);
                }
                url
            }
        };
        let mut headers = HeaderMap::new();
        let accept = match self.format {
            ResponseFormat::Json => "application/json",
            ResponseFormat::Ndjson => "application/x-ndjson",
            ResponseFormat::Csv => "text/csv",
        };
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        let mut body = None;
        if let Some((format, template)) = &self.body {
            let value = template.render(vars)?.unwrap_or(Json::Null);
            let (content_type, bytes) = match format {
                BodyFormat::Json => ("application/json", serde_json::to_vec(&value)?),
                BodyFormat::Form => {
                    let mut form = url::form_urlencoded::Serializer::new(String::new());
                    for (key, value) in value.as_object().into_iter().flatten() {
                        form.append_pair(key, &super::mark::as_text(value));
                    }
                    ("application/x-www-form-urlencoded", form.finish().into_bytes())
                }
            };
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            body = Some(bytes);
        }
        for (name, template) in &self.headers {
            let Some(text) = fill(template, vars).with_context(|| format!("in `headers.{name}`"))? else { continue };
            let mut value = HeaderValue::from_str(&text)
                .with_context(|| format!("`headers.{name}` is not a valid header value"))?;
            value.set_sensitive(template.secret);
            headers.insert(name.clone(), value);
        }
        Ok(WebRequest { method: self.method.clone(), url, headers, body, secret_query })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(
        url: &str,
        query: &[(&str, &str)],
        body: Option<Json>,
        body_format: BodyFormat,
    ) -> anyhow::Result<RequestSpec> {
        RequestSpec::new(RequestOptions {
            method: "post".into(),
            url: url.into(),
            query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            headers: [
                ("X-Token".to_string(), "${env:CARGO_PKG_NAME}".to_string()),
                ("X-Day".to_string(), "{from}".to_string()),
            ]
            .into(),
            body,
            body_format,
            format: ResponseFormat::Json,
        })
    }

    fn vars(since: Option<&str>) -> Vars {
        Vars { from: Some("2024-01-01".into()), since: since.map(str::to_string), ..Vars::default() }
    }

    #[test]
    fn the_endpoint_is_the_host_and_port_unless_a_variable_is_part_of_it() {
        let endpoint = |url| spec(url, &[], None, BodyFormat::Json).unwrap().endpoint();
        assert_eq!(endpoint("https://api.test/v1/{from}/items").as_deref(), Some("api.test:443"));
        assert_eq!(endpoint("http://127.0.0.1:8080/items").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(endpoint("http://{from}.api.test/items"), None);
        assert_eq!(endpoint("${env:CARGO_PKG_NAME}/items"), None);
    }

    #[test]
    fn builds_pages_with_placeholders_secrets_and_paging() {
        let request_spec = spec(
            "http://api.test/v1/{from}/items",
            &[("updated_since", "{since}"), ("page", "9"), ("key", "${env:CARGO_PKG_NAME}")],
            Some(json!({"q": "{since}", "n": 1})),
            BodyFormat::Json,
        )
        .unwrap();
        assert!(request_spec.uses(Var::Since) && request_spec.uses(Var::From) && !request_spec.uses(Var::To));
        let paginator = Paginator::new(toml::from_str("type = \"page_number\"").unwrap()).unwrap();
        let resolved = request_spec.resolve().unwrap();

        let first = resolved.build(&vars(None), &PageState::Page(2), &paginator).unwrap();
        assert_eq!(first.method, Method::POST);
        assert_eq!(first.url.as_str(), "http://api.test/v1/2024-01-01/items?key=haul-collect&page=2");
        assert_eq!(first.secret_query, ["key"]);
        assert_eq!(first.body.as_deref(), Some(&br#"{"n":1}"#[..]));
        assert!(first.headers["x-token"].is_sensitive() && !first.headers["x-day"].is_sensitive());
        assert_eq!(first.headers[ACCEPT], "application/json");
        assert!(!format!("{first:?}").contains("haul-collect"));

        let later = resolved.build(&vars(Some("2024-05-01T00:00:00Z")), &PageState::Page(3), &paginator).unwrap();
        assert_eq!(later.url.query(), Some("key=haul-collect&updated_since=2024-05-01T00%3A00%3A00Z&page=3"));
        assert_eq!(later.body.as_deref(), Some(&br#"{"n":1,"q":"2024-05-01T00:00:00Z"}"#[..]));

        let next = resolved.build(&vars(None), &PageState::Url("http://api.test/next?c=1".into()), &paginator).unwrap();
        assert_eq!(next.url.as_str(), "http://api.test/next?c=1");
    }

    #[test]
    fn forms_and_errors() {
        let form = spec("https://api.test/token", &[], Some(json!({"a": "x y", "b": 2})), BodyFormat::Form).unwrap();
        let request = form.resolve().unwrap().build(&vars(None), &PageState::First, &Paginator::None).unwrap();
        assert_eq!(request.body.as_deref(), Some(&b"a=x+y&b=2"[..]));
        assert_eq!(request.headers[CONTENT_TYPE], "application/x-www-form-urlencoded");

        let error = |url: &str| spec(url, &[], None, BodyFormat::Json).unwrap_err().to_string();
        assert!(error("ftp://api.test/x").contains("http or https"));
        assert!(error("not a url").contains("is not a url"));
        assert!(
            spec("http://x.test/{to}", &[], None, BodyFormat::Json)
                .unwrap()
                .resolve()
                .unwrap()
                .build(&vars(None), &PageState::First, &Paginator::None)
                .unwrap_err()
                .to_string()
                .contains("range mode")
        );
        assert!(spec("http://x.test/", &[], Some(json!({"a": [1]})), BodyFormat::Form).is_err());
    }
}
