//! The per-field rules of the `validate` processor (`required`, `type`,
//! `regex`, `min`/`max`, `min_length`/`max_length`, `enum`) and the
//! run-wide index behind `unique`.
//!
//! A rule checks one value and appends what is wrong with it to a reason,
//! `field: what is wrong`, joined by `; `. Values are not quoted into reasons
//! except numbers compared with a bound, so reasons stay short.
//!
//! The unique index keeps a 128-bit fingerprint of each value seen in the run
//! (not the value), in 64 mutex-guarded shards so that concurrent shards of a
//! run rarely wait on each other. It is bounded by `unique_capacity` distinct
//! values per field (about 40 bytes each): past it the shard fails rather than
//! let duplicates through unchecked.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Write;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use haul_collect_core::Value;
use regex::Regex;
use serde::Deserialize;

/// The type a `type` rule expects. A string value also passes when its text
/// parses as that type (text formats such as CSV carry every value as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedType {
    String,
    Int,
    Float,
    Bool,
    Decimal,
    Date,
    Timestamp,
    Json,
}

impl ExpectedType {
    fn name(self) -> &'static str {
        match self {
            ExpectedType::String => "string",
            ExpectedType::Int => "int",
            ExpectedType::Float => "float",
            ExpectedType::Bool => "bool",
            ExpectedType::Decimal => "decimal",
            ExpectedType::Date => "date",
            ExpectedType::Timestamp => "timestamp",
            ExpectedType::Json => "json",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (ExpectedType::String, Value::String(_))
            | (ExpectedType::Int, Value::Int(_))
            | (ExpectedType::Float, Value::Float(_) | Value::Int(_) | Value::Decimal(_))
            | (ExpectedType::Bool, Value::Bool(_))
            | (ExpectedType::Decimal, Value::Decimal(_) | Value::Int(_))
            | (ExpectedType::Date, Value::Date(_))
            | (ExpectedType::Timestamp, Value::Timestamp(_) | Value::TimestampTz(_))
            | (ExpectedType::Json, Value::Json(_)) => true,
            (ExpectedType::Int, Value::String(text)) => text.parse::<i64>().is_ok(),
            (ExpectedType::Float, Value::String(text)) => text.parse::<f64>().is_ok_and(f64::is_finite),
            (ExpectedType::Bool, Value::String(text)) => text == "true" || text == "false",
            (ExpectedType::Decimal, Value::String(text)) => is_decimal_text(text),
            (ExpectedType::Date, Value::String(text)) => NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
            (ExpectedType::Timestamp, Value::String(text)) => {
                DateTime::parse_from_rfc3339(text).is_ok()
                    || NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
                    || NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").is_ok()
            }
            (ExpectedType::Json, Value::String(text)) => serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
            _ => false,
        }
    }
}

/// `[+-]digits[.digits]`.
fn is_decimal_text(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

/// One `[[rules]]` table of the `validate` processor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub field: String,
    #[serde(default)]
    pub required: bool,
    #[serde(rename = "type")]
    pub expected: Option<ExpectedType>,
    pub regex: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub unique: bool,
}

/// A compiled rule.
pub struct Rule {
    pub field: String,
    pub unique: bool,
    required: bool,
    expected: Option<ExpectedType>,
    regex: Option<Regex>,
    min: Option<f64>,
    max: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    /// The allowed values as text: strings as they are, other JSON as written.
    allowed: Option<Vec<String>>,
}

impl Rule {
    /// Compiles a rule; the error is a message about its `regex`.
    pub fn compile(config: RuleConfig) -> Result<Rule, String> {
        let regex = config
            .regex
            .map(|pattern| {
                Regex::new(&pattern).map_err(|error| format!("rule for `{}`: invalid regex: {error}", config.field))
            })
            .transpose()?;
        let allowed = config.allowed.map(|values| {
            values
                .into_iter()
                .map(|value| match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                })
                .collect()
        });
        Ok(Rule {
            field: config.field,
            unique: config.unique,
            required: config.required,
            expected: config.expected,
            regex,
            min: config.min,
            max: config.max,
            min_length: config.min_length,
            max_length: config.max_length,
            allowed,
        })
    }

    /// Appends what is wrong with `value` (`None`: the field is absent) to
    /// `reason`; `scratch` holds the text of a value that is not text, so
    /// that one buffer serves every record.
    pub fn check(&self, value: Option<&Value>, scratch: &mut String, reason: &mut Reason) {
        let value = match value {
            Some(value) if !value.is_null() => value,
            _ => {
                if self.required {
                    reason.add(&self.field, format_args!("is required"));
                }
                return;
            }
        };
        if let Some(expected) = self.expected
            && !expected.accepts(value)
        {
            reason.add(&self.field, format_args!("is not a valid {}", expected.name()));
        }
        if self.min.is_some() || self.max.is_some() {
            self.check_bounds(value, reason);
        }
        if self.regex.is_none() && self.allowed.is_none() && self.min_length.is_none() && self.max_length.is_none() {
            return;
        }
        let text = value.text(scratch).unwrap_or_default();
        if let Some(regex) = &self.regex
            && !regex.is_match(text)
        {
            reason.add(&self.field, format_args!("does not match {}", regex.as_str()));
        }
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|choice| choice == text)
        {
            reason.add(&self.field, format_args!("is not one of {}", allowed.join(", ")));
        }
        let length = match value {
            Value::Json(serde_json::Value::Array(items)) => items.len(),
            _ => text.chars().count(),
        };
        if let Some(min) = self.min_length
            && length < min
        {
            reason.add(&self.field, format_args!("length {length} is below the minimum length {min}"));
        }
        if let Some(max) = self.max_length
            && length > max
        {
            reason.add(&self.field, format_args!("length {length} is above the maximum length {max}"));
        }
    }

    fn check_bounds(&self, value: &Value, reason: &mut Reason) {
        let number = match value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Decimal(text) | Value::String(text) => text.parse::<f64>().ok(),
            _ => None,
        };
        let Some(number) = number.filter(|n| !n.is_nan()) else {
            reason.add(&self.field, format_args!("is not a number"));
            return;
        };
        let shown = || value.to_text().unwrap_or_default();
        if let Some(min) = self.min
            && number < min
        {
            reason.add(&self.field, format_args!("{} is below the minimum {min}", shown()));
        }
        if let Some(max) = self.max
            && number > max
        {
            reason.add(&self.field, format_args!("{} is above the maximum {max}", shown()));
        }
    }
}

/// The violations of one record, `field: problem` joined by `; `.
#[derive(Debug, Default)]
pub struct Reason(String);

impl Reason {
    pub fn add(&mut self, field: &str, problem: std::fmt::Arguments<'_>) {
        if !self.0.is_empty() {
            self.0.push_str("; ");
        }
        let _ = write!(self.0, "{field}: {problem}");
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Hashes values and records into fingerprints, with keys random per run.
pub struct Fingerprints {
    high: RandomState,
    low: RandomState,
}

impl Fingerprints {
    pub fn new() -> Self {
        Fingerprints { high: RandomState::new(), low: RandomState::new() }
    }

    /// A 128-bit fingerprint of one value: two independent 64-bit hashes.
    pub fn value(&self, value: &Value) -> u128 {
        let hash = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            hash_value(value, &mut hasher);
            hasher.finish()
        };
        (u128::from(hash(&self.high)) << 64) | u128::from(hash(&self.low))
    }

    /// A 64-bit fingerprint of a whole record.
    pub fn record(&self, row: &[Value]) -> u64 {
        let mut hasher = self.low.build_hasher();
        row.iter().for_each(|value| hash_value(value, &mut hasher));
        hasher.finish()
    }
}

fn hash_value(value: &Value, hasher: &mut impl Hasher) {
    std::mem::discriminant(value).hash(hasher);
    match value {
        Value::Null => {}
        Value::Bool(b) => b.hash(hasher),
        Value::Int(i) => i.hash(hasher),
        Value::Float(f) => f.to_bits().hash(hasher),
        Value::Decimal(text) | Value::String(text) => text.hash(hasher),
        Value::Bytes(bytes) => bytes.hash(hasher),
        Value::Date(d) => d.hash(hasher),
        Value::Timestamp(t) => t.hash(hasher),
        Value::TimestampTz(t) => t.hash(hasher),
        Value::Json(json) => json.to_string().hash(hasher),
    }
}

/// What claiming a value in a [`UniqueIndex`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First seen: now claimed by this record.
    New,
    /// Claimed before by the same record (read again after a retry).
    Same,
    /// Claimed by another record: a duplicate.
    Taken,
}

const UNIQUE_SHARDS: usize = 64;

/// The values of one field seen in a run, each with the record that claimed it.
pub struct UniqueIndex {
    field: String,
    capacity: usize,
    len: AtomicUsize,
    shards: Vec<Mutex<HashMap<u128, u64>>>,
}

impl UniqueIndex {
    pub fn new(field: &str, capacity: usize) -> Self {
        UniqueIndex {
            field: field.to_string(),
            capacity,
            len: AtomicUsize::new(0),
            shards: (0..UNIQUE_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, value: u128) -> std::sync::MutexGuard<'_, HashMap<u128, u64>> {
        let shard = &self.shards[(value as usize) % UNIQUE_SHARDS];
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `value` for `record`, atomically across shards of the run.
    pub fn claim(&self, value: u128, record: u64) -> anyhow::Result<Claim> {
        match self.shard(value).entry(value) {
            Entry::Occupied(owner) => Ok(if *owner.get() == record { Claim::Same } else { Claim::Taken }),
            Entry::Vacant(slot) => {
                if self.len.fetch_add(1, Ordering::Relaxed) >= self.capacity {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    anyhow::bail!(
                        "the unique check of `{}` reached its limit of {} distinct values (raise unique_capacity)",
                        self.field,
                        self.capacity
                    );
                }
                slot.insert(record);
                Ok(Claim::New)
            }
        }
    }

    /// Whether another record claimed `value`.
    pub fn taken_by_other(&self, value: u128, record: u64) -> bool {
        self.shard(value).get(&value).is_some_and(|owner| *owner != record)
    }

    /// Gives back a value claimed by a record that turned out invalid.
    pub fn release(&self, value: u128) {
        if self.shard(value).remove(&value).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Rule {
        Rule::compile(toml::from_str(toml_text).unwrap()).unwrap()
    }

    fn reason(rule: &Rule, value: Option<Value>) -> String {
        let mut reason = Reason::default();
        rule.check(value.as_ref(), &mut String::new(), &mut reason);
        reason.as_str().to_string()
    }

    #[test]
    fn each_rule_kind() {
        let required = rule(
            r#"field = "a"
            required = true"#,
        );
        assert_eq!(reason(&required, None), "a: is required");
        assert_eq!(reason(&required, Some(Value::Null)), "a: is required");
        assert_eq!(reason(&required, Some("x".into())), "");
        let optional = rule(
            r#"field = "a"
            type = "int""#,
        );
        assert_eq!(reason(&optional, None), "");
        let bounds = rule(
            r#"field = "age"
            min = 0
            max = 120"#,
        );
        assert_eq!(reason(&bounds, Some(Value::Int(130))), "age: 130 is above the maximum 120");
        assert_eq!(reason(&bounds, Some("-1".into())), "age: -1 is below the minimum 0");
        assert_eq!(reason(&bounds, Some("old".into())), "age: is not a number");
        assert_eq!(reason(&bounds, Some(Value::Float(120.0))), "");
        let lengths = rule(
            r#"field = "n"
            min_length = 2
            max_length = 3"#,
        );
        assert_eq!(reason(&lengths, Some("北".into())), "n: length 1 is below the minimum length 2");
        assert_eq!(reason(&lengths, Some("北京市".into())), "");
        assert_eq!(reason(&lengths, Some("abcd".into())), "n: length 4 is above the maximum length 3");
        let choices = rule(
            r#"field = "s"
            enum = ["new", "paid", 3]"#,
        );
        assert_eq!(reason(&choices, Some("paid".into())), "");
        assert_eq!(reason(&choices, Some(Value::Int(3))), "");
        assert_eq!(reason(&choices, Some("lost".into())), "s: is not one of new, paid, 3");
        let pattern = rule(
            r#"field = "email"
            regex = '^\S+@\S+$'"#,
        );
        assert_eq!(reason(&pattern, Some("a@b".into())), "");
        assert_eq!(reason(&pattern, Some("a b".into())), r"email: does not match ^\S+@\S+$");
        assert!(
            Rule::compile(
                toml::from_str(
                    r#"field = "x"
            regex = "(""#
                )
                .unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn each_type() {
        use ExpectedType::*;
        let cases: &[(ExpectedType, Value, bool)] = &[
            (String, "x".into(), true),
            (String, Value::Int(1), false),
            (Int, Value::Int(1), true),
            (Int, "12".into(), true),
            (Int, "1.5".into(), false),
            (Float, "1.5".into(), true),
            (Float, "inf".into(), false),
            (Bool, "true".into(), true),
            (Bool, "yes".into(), false),
            (Decimal, "-12.50".into(), true),
            (Decimal, "1e5".into(), false),
            (Decimal, ".5".into(), false),
            (Date, "2024-02-29".into(), true),
            (Date, "2023-02-29".into(), false),
            (Timestamp, "2024-01-02T03:04:05Z".into(), true),
            (Timestamp, "2024-01-02 03:04:05".into(), true),
            (Timestamp, "yesterday".into(), false),
            (Json, "{\"a\": [1]}".into(), true),
            (Json, "{a}".into(), false),
            (Json, Value::Json(serde_json::json!([1])), true),
        ];
        for (expected, value, accepted) in cases {
            assert_eq!(expected.accepts(value), *accepted, "{expected:?} {value:?}");
        }
    }

    #[test]
    fn unique_index_claims_once_and_is_bounded() {
        let index = UniqueIndex::new("id", 2);
        assert_eq!(index.claim(1, 10).unwrap(), Claim::New);
        assert_eq!(index.claim(1, 10).unwrap(), Claim::Same);
        assert_eq!(index.claim(1, 11).unwrap(), Claim::Taken);
        assert!(index.taken_by_other(1, 11) && !index.taken_by_other(1, 10));
        assert_eq!(index.claim(2, 10).unwrap(), Claim::New);
        let full = index.claim(3, 10).unwrap_err().to_string();
        assert_eq!(full, "the unique check of `id` reached its limit of 2 distinct values (raise unique_capacity)");
        index.release(2);
        assert_eq!(index.claim(3, 10).unwrap(), Claim::New);
    }
}
