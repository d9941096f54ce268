//! Extraction: a page's fields by CSS selector, and its links.
//!
//! A field takes, from every element its selector matches, the element's
//! text (its text nodes joined, runs of whitespace collapsed to one space,
//! trimmed), its inner HTML, or one of its attributes (elements without the
//! attribute are passed over). A single field keeps the first value, or
//! null; a `multiple` field keeps them all as a JSON array of strings. A
//! `required` field without a value (or with an empty array) fails the page,
//! which then goes to the dead letters with the reason. Links are the
//! `href` of every `<a>` and `<area>`, resolved against the page's `<base
//! href>` or its own URL, and normalised.

use haul_collect_core::{DataType, Field, Value};
use scraper::{ElementRef, Html, Selector};
use serde::Deserialize;
use url::Url;

use super::normalize::Normalizer;

/// One `[[source.fields]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    pub name: String,
    pub selector: String,
    /// `text` (the default), `html` (inner HTML) or `attribute`.
    pub extract: Option<ExtractKind>,
    /// The attribute to read; implies `extract = "attribute"`.
    pub attribute: Option<String>,
    #[serde(default)]
    pub multiple: bool,
    #[serde(default)]
    pub required: bool,
}

/// What a field takes from the elements it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtractKind {
    Text,
    Html,
    Attribute,
}

/// What a compiled field reads from an element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Take {
    Text,
    InnerHtml,
    Attribute(String),
}

#[derive(Debug)]
struct CompiledField {
    name: String,
    selector: Selector,
    /// The selector as written, for error messages.
    selector_text: String,
    take: Take,
    multiple: bool,
    required: bool,
}

/// A problem with one field's options: its index in `fields` and what is wrong.
#[derive(Debug)]
pub struct FieldError {
    pub index: usize,
    pub option: &'static str,
    pub message: String,
}

/// What one page yielded.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// One value per field, in the order of the fields.
    pub values: Vec<Value>,
    /// Why the page fails extraction: a required field without a value.
    pub failure: Option<String>,
    /// The page's links, normalised, in document order (repeats kept).
    pub links: Vec<Url>,
}

/// The compiled `fields` of a crawl and its link selector.
#[derive(Debug)]
pub struct Extractor {
    fields: Vec<CompiledField>,
    links: Selector,
    base: Selector,
}

impl Extractor {
    pub fn new(fields: &[FieldConfig]) -> Result<Self, FieldError> {
        let mut compiled: Vec<CompiledField> = Vec::with_capacity(fields.len());
        for (index, field) in fields.iter().enumerate() {
            let error = |option, message: String| FieldError { index, option, message };
            if field.name.trim().is_empty() {
                return Err(error("name", "a field needs a name".into()));
            }
            if compiled.iter().any(|other| other.name == field.name) {
                return Err(error("name", format!("two fields are named `{}`", field.name)));
            }
            let selector = Selector::parse(&field.selector)
                .map_err(|parse| error("selector", format!("invalid CSS selector `{}`: {parse}", field.selector)))?;
            let take = match (field.extract, &field.attribute) {
                (None | Some(ExtractKind::Text), None) => Take::Text,
                (Some(ExtractKind::Html), None) => Take::InnerHtml,
                (None | Some(ExtractKind::Attribute), Some(attribute)) => Take::Attribute(attribute.clone()),
                (Some(ExtractKind::Attribute), None) => {
                    return Err(error(
                        "attribute",
                        "`extract = \"attribute\"` needs `attribute`, e.g. \"href\"".into(),
                    ));
                }
                (Some(kind), Some(_)) => {
                    let kind = if kind == ExtractKind::Text { "text" } else { "html" };
                    return Err(error(
                        "attribute",
                        format!("`attribute` reads an attribute, not the element's {kind}"),
                    ));
                }
            };
            compiled.push(CompiledField {
                name: field.name.clone(),
                selector,
                selector_text: field.selector.clone(),
                take,
                multiple: field.multiple,
                required: field.required,
            });
        }
        Ok(Extractor {
            fields: compiled,
            links: Selector::parse("a[href], area[href]").expect("a valid selector"),
            base: Selector::parse("base[href]").expect("a valid selector"),
        })
    }

    /// The fields' names and types: a string, or JSON for `multiple`.
    pub fn schema_fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.fields
            .iter()
            .map(|field| Field::new(field.name.clone(), if field.multiple { DataType::Json } else { DataType::String }))
    }

    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|field| field.name.as_str())
    }

    /// The values of a page that could not be read as HTML: every field
    /// empty, and the reason the first required field fails.
    pub fn nothing(&self, why: &str) -> Extracted {
        let failure = self
            .fields
            .iter()
            .find(|field| field.required)
            .map(|field| format!("required field `{}` has no value: {why}", field.name));
        let values = self.fields.iter().map(|field| field.empty()).collect();
        Extracted { values, failure, links: Vec::new() }
    }

    /// Extracts the fields of an HTML page found at `url`, and its links when `follow_links`.
    pub fn extract(&self, html: &str, url: &Url, normalizer: &Normalizer, follow_links: bool) -> Extracted {
        let document = Html::parse_document(html);
        let mut failure = None;
        let values = self
            .fields
            .iter()
            .map(|field| {
                let value = field.read(&document);
                let missing = match &value {
                    Value::Null => true,
                    Value::Json(serde_json::Value::Array(items)) => items.is_empty(),
                    _ => false,
                };
                if missing && field.required && failure.is_none() {
                    failure = Some(format!(
                        "required field `{}` has no value: nothing matches `{}`",
                        field.name, field.selector_text
                    ));
                }
                value
            })
            .collect();
        let links = if follow_links { self.links(&document, url, normalizer) } else { Vec::new() };
        Extracted { values, failure, links }
    }

    fn links(&self, document: &Html, url: &Url, normalizer: &Normalizer) -> Vec<Url> {
        let base = document
            .select(&self.base)
            .next()
            .and_then(|base| base.attr("href"))
            .and_then(|href| url.join(href.trim()).ok())
            .unwrap_or_else(|| url.clone());
        document
            .select(&self.links)
            .filter_map(|link| link.attr("href"))
            .filter_map(|href| normalizer.link(&base, href))
            .collect()
    }
}

impl CompiledField {
    /// The value of a field that matched nothing.
    fn empty(&self) -> Value {
        if self.multiple { Value::Json(serde_json::Value::Array(Vec::new())) } else { Value::Null }
    }

    fn read(&self, document: &Html) -> Value {
        let mut values = document.select(&self.selector).filter_map(|element| self.take.from(element));
        if self.multiple {
            Value::Json(serde_json::Value::Array(values.map(serde_json::Value::String).collect()))
        } else {
            values.next().map_or(Value::Null, Value::String)
        }
    }
}

impl Take {
    fn from(&self, element: ElementRef<'_>) -> Option<String> {
        match self {
            Take::Text => Some(collapse_whitespace(element.text())),
            Take::InnerHtml => Some(element.inner_html()),
            Take::Attribute(name) => element.attr(name).map(str::to_string),
        }
    }
}

/// The pieces joined, runs of whitespace made one space, trimmed.
fn collapse_whitespace<'a>(pieces: impl Iterator<Item = &'a str>) -> String {
    let joined: String = pieces.collect();
    let mut text = String::with_capacity(joined.len());
    for word in joined.split_whitespace() {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(word);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(name: &str, selector: &str) -> FieldConfig {
        FieldConfig {
            name: name.into(),
            selector: selector.into(),
            extract: None,
            attribute: None,
            multiple: false,
            required: false,
        }
    }

    const PAGE: &str = r#"<html><head><title> A  page </title><base href="/docs/"></head><body>
        <h1>Hello <b>big</b>
            world</h1>
        <p class="price" data-cents="1250">12.50</p>
        <ul><li>one</li><li> two </li></ul>
        <div id="box"><i>inner</i> html</div>
        <a href="a.html#x">a</a> <a href="/b?q=1">b</a> <a href="mailto:x@y.z">mail</a> <a>none</a>
        <map><area href="c.html"></map>
    </body></html>"#;

    #[test]
    fn fields_by_selector() {
        let fields = vec![
            field("title", "title"),
            field("heading", "h1"),
            FieldConfig { attribute: Some("data-cents".into()), ..field("cents", "p.price") },
            FieldConfig { multiple: true, ..field("items", "li") },
            FieldConfig { extract: Some(ExtractKind::Html), ..field("box", "#box") },
            field("absent", ".nothing"),
            FieldConfig { multiple: true, ..field("none", ".nothing") },
        ];
        let extractor = Extractor::new(&fields).unwrap();
        let url = Url::parse("http://site.test/start/page.html").unwrap();
        let extracted = extractor.extract(PAGE, &url, &Normalizer { sort_query: false }, true);
        assert_eq!(
            extracted.values,
            vec![
                Value::String("A page".into()),
                Value::String("Hello big world".into()),
                Value::String("1250".into()),
                Value::Json(serde_json::json!(["one", "two"])),
                Value::String("<i>inner</i> html".into()),
                Value::Null,
                Value::Json(serde_json::json!([])),
            ]
        );
        assert_eq!(extracted.failure, None);
        let links: Vec<&str> = extracted.links.iter().map(Url::as_str).collect();
        assert_eq!(links, ["http://site.test/docs/a.html", "http://site.test/b?q=1", "http://site.test/docs/c.html"]);
    }

    #[test]
    fn a_missing_required_field_fails_the_page() {
        let fields = vec![
            FieldConfig { required: true, ..field("title", "title") },
            FieldConfig { required: true, multiple: true, ..field("tags", ".tag") },
        ];
        let extractor = Extractor::new(&fields).unwrap();
        let url = Url::parse("http://site.test/").unwrap();
        let extracted = extractor.extract(PAGE, &url, &Normalizer { sort_query: false }, false);
        assert_eq!(extracted.failure.as_deref(), Some("required field `tags` has no value: nothing matches `.tag`"));
        assert!(extracted.links.is_empty());
        assert_eq!(
            extractor.nothing("the page is image/png").failure.as_deref(),
            Some("required field `title` has no value: the page is image/png")
        );
    }

    #[test]
    fn bad_fields_name_their_option() {
        let error = |fields: Vec<FieldConfig>| {
            let error = Extractor::new(&fields).unwrap_err();
            (error.index, error.option, error.message)
        };
        let (index, option, message) = error(vec![field("a", "p"), field("b", "p[")]);
        assert_eq!((index, option), (1, "selector"));
        assert!(message.starts_with("invalid CSS selector `p[`"), "{message}");
        assert_eq!(error(vec![field("a", "p"), field("a", "q")]).1, "name");
        let attribute_needed = FieldConfig { extract: Some(ExtractKind::Attribute), ..field("a", "p") };
        assert_eq!(error(vec![attribute_needed]).1, "attribute");
        let both = FieldConfig { extract: Some(ExtractKind::Html), attribute: Some("href".into()), ..field("a", "p") };
        assert_eq!(error(vec![both]).2, "`attribute` reads an attribute, not the element's html");
    }

    proptest! {
        #[test]
        fn never_panics_on_any_markup(html in "(<[a-z]{1,3}( href=\"[a-z:/#.]{0,6}\")?>|</[a-z]{1,3}>|[a-z &;<>]{0,4}){0,20}") {
            let extractor = Extractor::new(&[field("a", "a"), FieldConfig { multiple: true, ..field("p", "p") }]).unwrap();
            let url = Url::parse("http://site.test/").unwrap();
            let extracted = extractor.extract(&html, &url, &Normalizer { sort_query: true }, true);
            prop_assert_eq!(extracted.values.len(), 2);
        }
    }
}
