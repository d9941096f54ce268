//! The `mask` processor: hides personal data before it leaves the pipeline.
//!
//! Named fields are masked whole (`fields = { email = "partial" }`), and a
//! scan can mask the personal data found inside every other string field
//! (`scan = { detectors = ["email", "cn_id"], method = "partial" }`). Methods:
//!
//! - `full`: the value becomes a fixed four mask characters (`****`), so not
//!   even its length shows. Idempotent.
//! - `partial`: keeps the first `keep_first` and last `keep_last` characters
//!   (characters, not bytes) and replaces each one between with `mask_char`;
//!   a value too short to keep anything is masked whole, length kept.
//!   Idempotent: the kept characters stay, the rest are mask characters already.
//! - `hash`: the hex HMAC-SHA256 of the value under the secret `key`: stable
//!   across runs, so masked columns still join. Not idempotent.
//! - `token`: `tok_` and 16 hex digits of an HMAC under a key derived from
//!   `key` for tokens only, so tokens never equal hashes. Deterministic, not
//!   reversible (no vault keeps the originals). Not idempotent.
//! - `null`: the value becomes null. Idempotent.
//!
//! Masked values are text, so a masked field becomes a nullable string field.
//! Nulls stay null. The key is a secret: it is never logged or printed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::value::write_hex;
use haul_collect_core::{Batch, DataType, Field, Processed, Processor, Schema, Value};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use super::detect::{Detector, scan};

/// How a value is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMethod {
    Full,
    Partial,
    Hash,
    Token,
    Null,
}

/// What the scan of string fields looks for and how it masks what it finds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    pub detectors: Vec<Detector>,
    #[serde(default = "default_scan_method")]
    pub method: MaskMethod,
}

fn default_scan_method() -> MaskMethod {
    MaskMethod::Partial
}

/// The `mask` processor's options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Field name → method.
    #[serde(default)]
    pub fields: BTreeMap<String, MaskMethod>,
    pub scan: Option<ScanConfig>,
    #[serde(default = "default_keep_first")]
    pub keep_first: usize,
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    #[serde(default = "default_mask_char")]
    pub mask_char: char,
    /// The HMAC key of `hash` and `token`, usually `${env:NAME}`.
    pub key: Option<SecretString>,
}

fn default_keep_first() -> usize {
    1
}

fn default_keep_last() -> usize {
    2
}

fn default_mask_char() -> char {
    '*'
}

/// Builds `mask` processors.
pub struct MaskPlugin;

impl Plugin for MaskPlugin {
    type Config = MaskConfig;
    type Output = dyn haul_collect_core::Processor;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "mask",
            role: Role::Processor,
            description: "masks named fields and the personal data found in string fields (full, partial, hash, token, null)",
            options: vec![
                option("fields", "table", None, "field name = method: full, partial, hash, token or null"),
                option(
                    "scan",
                    "table",
                    None,
                    "detectors = [email, phone, cn_mobile, cn_id, bank_card, ipv4, ipv6] found in every other string field, masked with method",
                ),
                option("keep_first", "integer", Some("1"), "characters partial masking keeps at the start"),
                option("keep_last", "integer", Some("2"), "characters partial masking keeps at the end"),
                option("mask_char", "string", Some("*"), "the character that replaces hidden characters"),
                option(
                    "key",
                    "string",
                    None,
                    "secret HMAC key of hash and token, e.g. ${env:MASK_KEY}; required by them",
                ),
            ],
        }
    }

    fn build(&self, config: MaskConfig) -> anyhow::Result<Arc<dyn Processor>> {
        Ok(Arc::new(Masker::new(config)?))
    }
}

fn option_error(path: &[&str], message: impl Into<String>) -> anyhow::Error {
    OptionError { path: path.iter().map(|s| s.to_string()).collect(), message: message.into() }.into()
}

/// The HMAC keys of `hash` and `token`, ready to use. Never printed.
struct Keys {
    hash: Hmac<Sha256>,
    token: Hmac<Sha256>,
}

const TOKEN_KEY_LABEL: &[u8] = b"haul mask token key";

impl Keys {
    fn new(key: &SecretString) -> anyhow::Result<Keys> {
        let key = haul_common::env::interpolate_secret(key.expose_secret())
            .map_err(|error| option_error(&["key"], error.to_string()))?;
        if key.expose_secret().is_empty() {
            return Err(option_error(&["key"], "the mask key is empty"));
        }
        let hash = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).context("invalid mask key")?;
        let derived = hash.clone().chain_update(TOKEN_KEY_LABEL).finalize().into_bytes();
        let token = Hmac::<Sha256>::new_from_slice(&derived).context("invalid token key")?;
        Ok(Keys { hash, token })
    }
}

/// Masks text with the configured settings.
struct Masking {
    keep_first: usize,
    keep_last: usize,
    mask_char: char,
    keys: Option<Keys>,
}

impl Masking {
    /// `text` masked into `out`; a whole value masked with `null` never gets here.
    fn mask_into(&self, method: MaskMethod, text: &str, out: &mut String) {
        match method {
            MaskMethod::Full | MaskMethod::Null => out.extend(std::iter::repeat_n(self.mask_char, 4)),
            MaskMethod::Partial => {
                out.reserve(text.len());
                self.partial_into(text, out);
            }
            MaskMethod::Hash => {
                out.reserve(64);
                self.hmac_hex_into(text, out, false);
            }
            MaskMethod::Token => {
                out.reserve(20);
                out.push_str("tok_");
                self.hmac_hex_into(text, out, true);
            }
        }
    }

    fn partial_into(&self, text: &str, out: &mut String) {
        let length = text.chars().count();
        if length <= self.keep_first + self.keep_last {
            out.extend(std::iter::repeat_n(self.mask_char, length));
            return;
        }
        let byte_at = |char_index: usize| text.char_indices().nth(char_index).map_or(text.len(), |(at, _)| at);
        out.push_str(&text[..byte_at(self.keep_first)]);
        out.extend(std::iter::repeat_n(self.mask_char, length - self.keep_first - self.keep_last));
        out.push_str(&text[byte_at(length - self.keep_last)..]);
    }

    fn hmac_hex_into(&self, text: &str, out: &mut String, token: bool) {
        let Some(keys) = &self.keys else { return };
        let mac = if token { &keys.token } else { &keys.hash };
        let digest = mac.clone().chain_update(text.as_bytes()).finalize().into_bytes();
        let digest = if token { &digest[..8] } else { &digest[..] };
        write_hex(digest, |digits| out.push_str(digits));
    }

    /// Masks a whole value in place: text for every method but `null`. A
    /// string takes the masked text in its own buffer, through `scratch`, so
    /// that no record allocates unless its text grows past its capacity;
    /// other values become new text.
    fn mask_value(&self, method: MaskMethod, value: &mut Value, scratch: &mut String) {
        if method == MaskMethod::Null || value.is_null() {
            *value = Value::Null;
            return;
        }
        scratch.clear();
        match value {
            Value::String(text) => {
                self.mask_into(method, text, scratch);
                replace_text(text, scratch);
            }
            other => {
                let mut masked = String::new();
                self.mask_into(method, other.text(scratch).unwrap_or_default(), &mut masked);
                *other = Value::String(masked);
            }
        }
    }

    /// Masks every range of `text` in place (through `scratch`); untouched
    /// when there is none.
    fn mask_ranges(&self, method: MaskMethod, text: &mut String, ranges: &[Range<usize>], scratch: &mut String) {
        if ranges.is_empty() {
            return;
        }
        scratch.clear();
        let mut done = 0;
        for range in ranges {
            scratch.push_str(&text[done..range.start]);
            self.mask_into(method, &text[range.clone()], scratch);
            done = range.end;
        }
        scratch.push_str(&text[done..]);
        replace_text(text, scratch);
    }
}

/// Puts `replacement` in `text`'s own buffer, which grows only if too small.
fn replace_text(text: &mut String, replacement: &str) {
    if text != replacement {
        text.clear();
        text.push_str(replacement);
    }
}

/// The masked columns of one schema and the schema of the masked batch.
struct MaskPlan {
    /// Column index and method of each masked field.
    columns: Vec<(usize, MaskMethod)>,
    /// Masked fields become nullable strings.
    schema: Arc<Schema>,
}

/// A configured `mask` processor.
pub struct Masker {
    fields: Vec<(String, MaskMethod)>,
    scan: Option<(Vec<Detector>, MaskMethod)>,
    masking: Masking,
}

impl Masker {
    fn new(config: MaskConfig) -> anyhow::Result<Masker> {
        if config.fields.is_empty() && config.scan.is_none() {
            return Err(option_error(&["fields"], "mask needs `fields`, `scan` or both"));
        }
        if let Some(scan) = &config.scan {
            if scan.method == MaskMethod::Null {
                return Err(option_error(
                    &["scan", "method"],
                    "the scan masks parts of text: use full, partial, hash or token",
                ));
            }
            if scan.detectors.is_empty() {
                return Err(option_error(&["scan", "detectors"], "list at least one detector"));
            }
        }
        let mut methods = config.fields.values().chain(config.scan.as_ref().map(|scan| &scan.method));
        let needs_key = methods.any(|m| matches!(m, MaskMethod::Hash | MaskMethod::Token));
        let keys = match (&config.key, needs_key) {
            (Some(key), true) => Some(Keys::new(key)?),
            (None, true) => {
                return Err(option_error(&["key"], "hash and token masking need a `key`, e.g. \"${env:MASK_KEY}\""));
            }
            (_, false) => None,
        };
        Ok(Masker {
            fields: config.fields.into_iter().collect(),
            scan: config.scan.map(|scan| (scan.detectors, scan.method)),
            masking: Masking {
                keep_first: config.keep_first,
                keep_last: config.keep_last,
                mask_char: config.mask_char,
                keys,
            },
        })
    }

    /// How to mask batches of one schema.
    fn plan(&self, schema: &Arc<Schema>) -> anyhow::Result<MaskPlan> {
        let mut columns = Vec::with_capacity(self.fields.len());
        for (name, method) in &self.fields {
            let index = schema.index_of(name).with_context(|| format!("mask: field `{name}` is not in the records"))?;
            columns.push((index, *method));
        }
        let changes_type = |&(index, _): &(usize, MaskMethod)| {
            let field = &schema.fields[index];
            field.data_type != DataType::String || !field.nullable
        };
        if !columns.iter().any(changes_type) {
            return Ok(MaskPlan { columns, schema: Arc::clone(schema) });
        }
        let mut fields = schema.fields.clone();
        for &(index, _) in &columns {
            fields[index] = Field::new(fields[index].name.clone(), DataType::String);
        }
        Ok(MaskPlan { columns, schema: Arc::new(Schema::new(fields)) })
    }
}

#[async_trait]
impl Processor for Masker {
    async fn process(&self, _shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        let MaskPlan { columns, schema } = self.plan(&batch.schema)?;
        let scanned: Vec<usize> = match &self.scan {
            Some(_) => (0..schema.fields.len()).filter(|i| !columns.iter().any(|(c, _)| c == i)).collect(),
            None => Vec::new(),
        };
        let mut rows = batch.rows;
        let mut scratch = String::new();
        for row in &mut rows {
            for &(index, method) in &columns {
                self.masking.mask_value(method, &mut row[index], &mut scratch);
            }
            if let Some((detectors, method)) = &self.scan {
                for &index in &scanned {
                    if let Value::String(text) = &mut row[index] {
                        let ranges = scan(text, detectors);
                        self.masking.mask_ranges(*method, text, &ranges, &mut scratch);
                    }
                }
            }
        }
        Ok(Processed::pass(Batch { schema, rows }))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn masking(key: Option<&str>) -> Masking {
        Masking {
            keep_first: 1,
            keep_last: 2,
            mask_char: '*',
            keys: key.map(|k| Keys::new(&SecretString::from(k)).unwrap()),
        }
    }

    fn config(toml_text: &str) -> MaskConfig {
        toml::from_str(toml_text).unwrap()
    }

    /// `value` masked whole by `masking`.
    fn masked(masking: &Masking, method: MaskMethod, mut value: Value) -> Value {
        masking.mask_value(method, &mut value, &mut String::new());
        value
    }

    fn text(method: MaskMethod, value: &str) -> String {
        match masked(&masking(Some("k3y")), method, Value::from(value)) {
            Value::String(text) => text,
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn golden_fields_and_scan() {
        let masker = Masker::new(config(
            r#"
            key = "k3y"
            fields = { email = "partial", phone = "hash", name = "full", ssn = "null", card = "token", age = "full" }
            scan = { detectors = ["email", "cn_mobile", "cn_id"], method = "partial" }
            "#,
        ))
        .unwrap();
        let schema = Arc::new(Schema::new(
            ["email", "phone", "name", "ssn", "card", "age", "note"]
                .iter()
                .map(|name| Field::new(*name, if *name == "age" { DataType::Int } else { DataType::String }))
                .collect(),
        ));
        let row = |values: [Value; 7]| values.to_vec();
        let input = Batch::new(
            schema,
            vec![
                row([
                    "ann@example.com".into(),
                    "13812345678".into(),
                    "Ann Lee".into(),
                    "078-05-1120".into(),
                    "4111111111111111".into(),
                    Value::Int(42),
                    "reach 张三 at 13912345678 or zs@mail.cn, id 11010519491231002X".into(),
                ]),
                row([
                    Value::Null,
                    Value::Null,
                    "王小明".into(),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    "nothing here".into(),
                ]),
            ],
        );
        let output = masker.process("shard-0", input).await.unwrap();
        assert!(output.rejected.is_empty());
        assert_eq!(output.dropped, 0);
        let hash = text(MaskMethod::Hash, "13812345678");
        let token = text(MaskMethod::Token, "4111111111111111");
        let expected: Vec<Vec<Value>> = vec![
            row([
                "a************om".into(),
                hash.as_str().into(),
                "****".into(),
                Value::Null,
                token.as_str().into(),
                "****".into(),
                "reach 张三 at 1********78 or z*******cn, id 1***************2X".into(),
            ]),
            row([
                Value::Null,
                Value::Null,
                "****".into(),
                Value::Null,
                Value::Null,
                Value::Null,
                "nothing here".into(),
            ]),
        ];
        assert_eq!(output.batch.rows, expected);
        assert_eq!(output.batch.schema.fields[5], Field::new("age", DataType::String));
        assert_eq!(hash.len(), 64);
        assert!(token.starts_with("tok_") && token.len() == 20);
    }

    #[tokio::test]
    async fn unchanged_schema_stays_shared() {
        let masker = Masker::new(config(r#"fields = { name = "full" }"#)).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::String)]));
        let output = masker.process("shard-0", Batch::new(Arc::clone(&schema), vec![vec!["x".into()]])).await.unwrap();
        assert!(Arc::ptr_eq(&output.batch.schema, &schema));
        let missing = Batch::new(Arc::new(Schema::new(vec![Field::new("other", DataType::String)])), vec![]);
        let error = masker.process("shard-0", missing).await.unwrap_err();
        assert_eq!(error.to_string(), "mask: field `name` is not in the records");
    }

    #[test]
    fn hash_is_stable_and_keyed() {
        assert_eq!(text(MaskMethod::Hash, "x"), text(MaskMethod::Hash, "x"));
        let other = masked(&masking(Some("other")), MaskMethod::Hash, Value::from("x"));
        assert_ne!(Value::String(text(MaskMethod::Hash, "x")), other);
        assert_ne!(text(MaskMethod::Hash, "x")[..16], text(MaskMethod::Token, "x")[4..]);
    }

    #[test]
    fn strings_are_masked_in_their_own_buffer() {
        let masking = masking(Some("k3y"));
        let mut scratch = String::new();
        let mut changed = Value::String(String::with_capacity(80) + "ann@example.com");
        let mut unchanged = Value::from("a****om");
        let buffers = [&changed, &unchanged].map(|value| match value {
            Value::String(text) => text.as_ptr(),
            _ => unreachable!(),
        });
        masking.mask_value(MaskMethod::Hash, &mut changed, &mut scratch);
        masking.mask_value(MaskMethod::Partial, &mut unchanged, &mut scratch);
        let [Value::String(hashed), Value::String(kept)] = [&changed, &unchanged] else { panic!("expected text") };
        assert_eq!(hashed, &text(MaskMethod::Hash, "ann@example.com"));
        assert_eq!(kept, "a****om");
        assert_eq!([hashed.as_ptr(), kept.as_ptr()], buffers);

        let mut note = String::from("mail ann@example.com now");
        let buffer = note.as_ptr();
        masking.mask_ranges(
            MaskMethod::Full,
            &mut note,
            &scan("mail ann@example.com now", &[Detector::Email]),
            &mut scratch,
        );
        assert_eq!((note.as_str(), note.as_ptr()), ("mail **** now", buffer));
    }

    #[test]
    fn nulls_stay_null_and_other_values_become_text() {
        let masking = masking(Some("k3y"));
        assert_eq!(masked(&masking, MaskMethod::Hash, Value::Null), Value::Null);
        assert_eq!(masked(&masking, MaskMethod::Null, Value::from("x")), Value::Null);
        assert_eq!(masked(&masking, MaskMethod::Partial, Value::Int(123456)), Value::from("1***56"));
        assert_eq!(masked(&masking, MaskMethod::Partial, Value::Decimal("12.50".into())), Value::from("1**50"));
        let nested = Value::Json(serde_json::json!({"a": [1]}));
        assert_eq!(masked(&masking, MaskMethod::Partial, nested), Value::from("{******]}"));
        assert_eq!(masked(&masking, MaskMethod::Hash, Value::Int(7)), Value::String(text(MaskMethod::Hash, "7")));
    }

    #[test]
    fn partial_counts_characters_not_bytes() {
        assert_eq!(text(MaskMethod::Partial, "北京市朝阳区"), "北***阳区");
        assert_eq!(text(MaskMethod::Partial, "abc"), "***");
    }

    #[test]
    fn build_errors_point_at_options() {
        let error = |toml_text: &str| match Masker::new(config(toml_text)) {
            Err(error) => error.downcast::<OptionError>().unwrap().path,
            Ok(_) => panic!("expected an error for {toml_text}"),
        };
        assert_eq!(error(r#"fields = { a = "hash" }"#), ["key"]);
        assert_eq!(error(r#"scan = { detectors = ["email"], method = "null" }"#), ["scan", "method"]);
        assert_eq!(
            error(
                r#"key = "${env:HAUL_MASK_TEST_UNSET}"
            fields = { a = "token" }"#
            ),
            ["key"]
        );
        assert_eq!(error(""), ["fields"]);
        assert!(toml::from_str::<MaskConfig>(r#"fields = { a = "blur" }"#).is_err());
    }

    #[test]
    fn key_is_not_debug_printed() {
        let config = config(
            r#"key = "s3cr3t-key"
            fields = { a = "hash" }"#,
        );
        assert!(!format!("{config:?}").contains("s3cr3t-key"));
    }

    proptest! {
        #[test]
        fn partial_and_hash_never_leak_the_value(value in "\\PC{6,40}".prop_filter("no mask char", |v| !v.contains('*'))) {
            let partial = text(MaskMethod::Partial, &value);
            prop_assert!(!partial.contains(&value));
            prop_assert_eq!(partial.chars().count(), value.chars().count());
            let hash = text(MaskMethod::Hash, &value);
            prop_assert!(!hash.contains(&value));
            prop_assert!(!text(MaskMethod::Token, &value).contains(&value));
        }

        #[test]
        fn full_null_and_partial_are_idempotent(value in "\\PC{0,40}") {
            let masking = masking(None);
            for method in [MaskMethod::Full, MaskMethod::Null, MaskMethod::Partial] {
                let once = masked(&masking, method, Value::from(value.as_str()));
                prop_assert_eq!(masked(&masking, method, once.clone()), once);
            }
        }

        #[test]
        fn scan_masks_every_detected_email(local in "[a-z]{4,10}", domain in "[a-z]{3,8}", before in "\\PC{0,10}") {
            let email = format!("{local}@{domain}.com");
            let mut text = format!("{before} {email} ");
            let ranges = scan(&text, &[Detector::Email]);
            masking(None).mask_ranges(MaskMethod::Full, &mut text, &ranges, &mut String::new());
            prop_assert!(!text.contains(&email));
        }
    }
}
