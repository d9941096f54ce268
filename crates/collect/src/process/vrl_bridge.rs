//! The bridge between haul records and VRL (Vector Remap Language), shared by
//! the `remap` and `filter` processors: compiling a program once with its
//! diagnostics pointed at the job file option, running it against one record,
//! and converting values both ways.
//!
//! Into VRL, a record becomes an object `.` of its fields: strings, numbers,
//! booleans and nulls map to their VRL kinds; nested JSON stays nested; both
//! timestamp kinds become VRL timestamps (a timestamp without zone is read as
//! UTC); a date becomes its `YYYY-MM-DD` text; a decimal becomes a float only
//! when that float prints back as the same number (`12.50` → `12.5`),
//! otherwise it stays text so no digit is lost; bytes stay bytes; a NaN float
//! becomes the text `NaN`, which VRL floats cannot hold. Out of VRL, timestamps
//! become UTC timestamps, UTF-8 bytes become strings, and objects and arrays
//! become nested JSON (with timestamps inside them as RFC 3339 text).

use anyhow::Context as _;
use haul_collect_core::registry::OptionError;
use haul_collect_core::{Schema, Value};
use vrl::compiler::runtime::Runtime;
use vrl::compiler::{Program, TargetValue, TimeZone};
use vrl::diagnostic::Formatter;
use vrl::prelude::{Bytes, NotNan};
use vrl::value::{KeyString, ObjectMap, Secrets, Value as VrlValue};

/// A compiled VRL program with the time zone it reads naive times in. One
/// instance serves every shard; each call brings its own [`ProgramRunner`].
#[derive(Debug)]
pub struct CompiledProgram {
    program: Program,
    timezone: TimeZone,
}

impl CompiledProgram {
    /// Compiles `source`, the value of the option `option`; a compile error
    /// points at that option and carries VRL's diagnostics with the line and
    /// column inside the program.
    pub fn compile(option: &str, source: &str, timezone: &str) -> anyhow::Result<Self> {
        let timezone = TimeZone::parse(timezone).ok_or_else(|| OptionError {
            path: vec!["timezone".into()],
            message: format!("unknown time zone `{timezone}`, expected `local` or a name like `Europe/Paris`"),
        })?;
        let functions = vrl::stdlib::all();
        let compiled = vrl::compiler::compile(source, &functions).map_err(|diagnostics| OptionError {
            path: vec![option.into()],
            message: format!("the VRL program in `{option}` does not compile:{}", Formatter::new(source, diagnostics)),
        })?;
        if !compiled.warnings.is_empty() {
            let rendered = Formatter::new(source, compiled.warnings).to_string();
            tracing::warn!(option, warnings = %rendered.trim(), "the VRL program compiled with warnings");
        }
        Ok(CompiledProgram { program: compiled.program, timezone })
    }

    /// The compiled program, for checks on its type.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// A runner for one batch: VRL keeps the program's local variables in it.
    pub fn runner(&self) -> ProgramRunner<'_> {
        ProgramRunner { compiled: self, runtime: Runtime::default() }
    }
}

/// Runs a compiled program against records one after the other.
pub struct ProgramRunner<'a> {
    compiled: &'a CompiledProgram,
    runtime: Runtime,
}

/// What one run of a program made of a record.
pub struct ProgramOutput {
    /// The value of the program's last expression.
    pub result: VrlValue,
    /// The record `.` as the program left it.
    pub record: VrlValue,
}

impl ProgramRunner<'_> {
    /// Runs the program with `record` as `.`; an error is the reason to reject
    /// the record: VRL's runtime error message, or `aborted`.
    pub fn run(&mut self, record: VrlValue) -> Result<ProgramOutput, String> {
        let mut target =
            TargetValue { value: record, metadata: VrlValue::Object(ObjectMap::new()), secrets: Secrets::default() };
        let outcome = self.runtime.resolve(&mut target, &self.compiled.program, &self.compiled.timezone);
        self.runtime.clear();
        match outcome {
            Ok(result) => Ok(ProgramOutput { result, record: target.value }),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// A record as a VRL object. `wanted` selects the fields to convert by their
/// position in the schema; the others are left out.
pub fn record_to_vrl(schema: &Schema, row: &[Value], wanted: impl Fn(usize) -> bool) -> VrlValue {
    let object = schema
        .names()
        .zip(row)
        .enumerate()
        .filter(|(index, _)| wanted(*index))
        .map(|(_, (name, value))| (KeyString::from(name), value_to_vrl(value)))
        .collect();
    VrlValue::Object(object)
}

/// One haul value as a VRL value (see the module documentation for the mapping).
pub fn value_to_vrl(value: &Value) -> VrlValue {
    match value {
        Value::Null => VrlValue::Null,
        Value::Bool(b) => VrlValue::Boolean(*b),
        Value::Int(i) => VrlValue::Integer(*i),
        Value::Float(f) => float_to_vrl(*f),
        Value::Decimal(text) => decimal_to_vrl(text),
        Value::String(text) => VrlValue::from(text.as_str()),
        Value::Bytes(bytes) => VrlValue::Bytes(Bytes::copy_from_slice(bytes)),
        Value::Date(date) => VrlValue::from(date.format("%Y-%m-%d").to_string()),
        Value::Timestamp(naive) => VrlValue::Timestamp(naive.and_utc()),
        Value::TimestampTz(instant) => VrlValue::Timestamp(*instant),
        Value::Json(json) => json_to_vrl(json),
    }
}

fn float_to_vrl(float: f64) -> VrlValue {
    match NotNan::new(float) {
        Ok(float) => VrlValue::Float(float),
        Err(_) => VrlValue::from("NaN"),
    }
}

/// A decimal as a float when the float prints back as the same number, else as text.
fn decimal_to_vrl(text: &str) -> VrlValue {
    match text.parse::<f64>() {
        Ok(float) if float.is_finite() && same_decimal(&float.to_string(), text) => float_to_vrl(float),
        _ => VrlValue::from(text),
    }
}

/// Whether two plain decimal texts denote the same number (`1.50` and `1.5`, `-0` and `0`).
fn same_decimal(left: &str, right: &str) -> bool {
    canonical_decimal(left).is_some_and(|left| Some(left) == canonical_decimal(right))
}

fn canonical_decimal(text: &str) -> Option<(bool, &str, &str)> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    let is_zero = whole.is_empty() && fraction.is_empty();
    Some((negative && !is_zero, whole, fraction))
}

fn json_to_vrl(json: &serde_json::Value) -> VrlValue {
    match json {
        serde_json::Value::Null => VrlValue::Null,
        serde_json::Value::Bool(b) => VrlValue::Boolean(*b),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(int) => VrlValue::Integer(int),
            None => number.as_f64().map(float_to_vrl).unwrap_or_else(|| VrlValue::from(number.to_string())),
        },
        serde_json::Value::String(text) => VrlValue::from(text.as_str()),
        serde_json::Value::Array(items) => VrlValue::Array(items.iter().map(json_to_vrl).collect()),
        serde_json::Value::Object(map) => VrlValue::Object(
            map.iter().map(|(key, value)| (KeyString::from(key.as_str()), json_to_vrl(value))).collect(),
        ),
    }
}

/// A VRL value as a haul value (see the module documentation for the mapping).
pub fn vrl_to_value(value: VrlValue) -> Value {
    match value {
        VrlValue::Null => Value::Null,
        VrlValue::Boolean(b) => Value::Bool(b),
        VrlValue::Integer(i) => Value::Int(i),
        VrlValue::Float(f) => Value::Float(f.into_inner()),
        VrlValue::String(text) => text_or_bytes(text.into_bytes()),
        VrlValue::Bytes(bytes) => text_or_bytes(bytes),
        VrlValue::Regex(regex) => Value::String(regex.as_str().to_string()),
        VrlValue::Timestamp(instant) => Value::TimestampTz(instant),
        nested @ (VrlValue::Object(_) | VrlValue::Array(_)) => Value::Json(vrl_to_json(nested)),
    }
}

/// UTF-8 bytes as a string, other bytes as bytes; the buffer is reused when VRL holds the only reference.
fn text_or_bytes(bytes: Bytes) -> Value {
    match String::from_utf8(Vec::from(bytes)) {
        Ok(text) => Value::String(text),
        Err(error) => Value::Bytes(error.into_bytes()),
    }
}

/// A VRL value as JSON, for nested values.
pub fn vrl_to_json(value: VrlValue) -> serde_json::Value {
    match value {
        VrlValue::Object(map) => {
            serde_json::Value::Object(map.into_iter().map(|(key, value)| (key.into(), vrl_to_json(value))).collect())
        }
        VrlValue::Array(items) => serde_json::Value::Array(items.into_iter().map(vrl_to_json).collect()),
        scalar => vrl_to_value(scalar).to_json(),
    }
}

/// A short name of a VRL value's kind, for error messages.
pub fn kind_name(value: &VrlValue) -> &'static str {
    match value {
        VrlValue::Null => "null",
        VrlValue::Boolean(_) => "boolean",
        VrlValue::Integer(_) => "integer",
        VrlValue::Float(_) => "float",
        VrlValue::String(_) | VrlValue::Bytes(_) => "string",
        VrlValue::Regex(_) => "regex",
        VrlValue::Timestamp(_) => "timestamp",
        VrlValue::Object(_) => "object",
        VrlValue::Array(_) => "array",
    }
}

/// Runs CPU-bound work on the blocking pool, so a large batch does not stall
/// the shards' other tasks (heartbeats, reads).
pub async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await.context("a VRL program stopped unexpectedly")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_become_floats_only_when_exact() {
        assert_eq!(decimal_to_vrl("12.50"), float_to_vrl(12.5));
        assert_eq!(decimal_to_vrl("-0.000"), float_to_vrl(0.0));
        assert_eq!(decimal_to_vrl("007"), float_to_vrl(7.0));
        assert_eq!(decimal_to_vrl("12345678901234567890.12"), VrlValue::from("12345678901234567890.12"));
        assert_eq!(decimal_to_vrl("0.1000000000000000000001"), VrlValue::from("0.1000000000000000000001"));
        assert_eq!(decimal_to_vrl("1e3"), VrlValue::from("1e3"));
    }

    #[test]
    fn values_survive_a_round_trip() {
        let nested = serde_json::json!({"a": [1, 2.5, "x", null, {"b": false}]});
        for value in [
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(1.5),
            Value::String("é".into()),
            Value::Json(nested),
        ] {
            assert_eq!(vrl_to_value(value_to_vrl(&value)), value);
        }
        assert_eq!(vrl_to_value(value_to_vrl(&Value::Bytes(vec![0xff, 0]))), Value::Bytes(vec![0xff, 0]));
        assert_eq!(vrl_to_value(value_to_vrl(&Value::Float(f64::NAN))), Value::String("NaN".into()));
    }
}
