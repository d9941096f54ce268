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
//!
//! A program is given only the fields it uses (see [`CompiledProgram::given_fields`]
//! and [`super::vrl_record`]): the others cannot make a difference to it, so
//! they are not converted; a processor that passes them on maps them with
//! [`as_through_vrl`], which gives what the round trip would without making it.

use anyhow::Context as _;
use chrono::NaiveDate;
use haul_collect_core::registry::OptionError;
use haul_collect_core::{Schema, Value};
use vrl::compiler::runtime::Runtime;
use vrl::compiler::{Program, TargetValue, TimeZone};
use vrl::diagnostic::Formatter;
use vrl::path::{OwnedSegment, PathPrefix};
use vrl::prelude::{Bytes, NotNan};
use vrl::value::{KeyString, ObjectMap, Secrets, Value as VrlValue};

use super::vrl_functions;
use super::vrl_record::{RecordSlots, SlotTarget};

/// A compiled VRL program with the time zone it reads naive times in. One
/// instance serves every shard; each call brings its own [`ProgramRunner`].
#[derive(Debug)]
pub struct CompiledProgram {
    program: Program,
    timezone: TimeZone,
    /// Whether the program uses the record as a whole, not only named fields.
    uses_whole_record: bool,
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
        let functions = vrl_functions::all();
        let compiled = vrl::compiler::compile(source, &functions).map_err(|diagnostics| OptionError {
            path: vec![option.into()],
            message: format!("the VRL program in `{option}` does not compile:{}", Formatter::new(source, diagnostics)),
        })?;
        if !compiled.warnings.is_empty() {
            let rendered = Formatter::new(source, compiled.warnings).to_string();
            tracing::warn!(option, warnings = %rendered.trim(), "the VRL program compiled with warnings");
        }
        let info = compiled.program.info();
        // `get` shows as a query of `.`; `unnest(.field)` reads `.` too but
        // shows only its field, hence the look at the source (a false alarm
        // costs speed, not correctness).
        let uses_whole_record = info.target_queries.iter().chain(&info.target_assignments).any(|path| {
            path.prefix == PathPrefix::Event && !matches!(path.path.segments.first(), Some(OwnedSegment::Field(_)))
        }) || source.contains("unnest");
        Ok(CompiledProgram { program: compiled.program, timezone, uses_whole_record })
    }

    /// The compiled program, for checks on its type.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Slots for the fields of `schema` the program is given: those it may
    /// use as `access` says, read (a query, `exists`, `del`) or also write;
    /// every field when it uses the record as a whole (`.`, `get`, an index
    /// on `.`, `unnest`).
    pub fn given_fields(&self, schema: &Schema, access: Access) -> RecordSlots {
        let mut given = vec![self.uses_whole_record; schema.fields.len()];
        if !self.uses_whole_record {
            let info = self.program.info();
            let writes = match access {
                Access::Read => &[][..],
                Access::ReadWrite => &info.target_assignments[..],
            };
            for path in info.target_queries.iter().chain(writes).filter(|path| path.prefix == PathPrefix::Event) {
                if let Some(OwnedSegment::Field(name)) = path.path.segments.first()
                    && let Some(index) = schema.index_of(name.as_str())
                {
                    given[index] = true;
                }
            }
        }
        RecordSlots::new(schema, &given, self.uses_whole_record)
    }

    /// A runner for one batch: VRL keeps the program's local variables in it.
    pub fn runner(&self) -> ProgramRunner<'_> {
        ProgramRunner { compiled: self, runtime: Runtime::default() }
    }
}

/// How a program may use a record's fields, for [`CompiledProgram::given_fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The program's result is all that counts: the fields it reads.
    Read,
    /// The record the program leaves counts too: the fields it reads or writes.
    ReadWrite,
}

/// Runs a compiled program against records one after the other.
pub struct ProgramRunner<'a> {
    compiled: &'a CompiledProgram,
    runtime: Runtime,
}

/// What one run of a program made of a record, besides the record it left in
/// the slots.
pub struct ProgramOutput {
    /// The value of the program's last expression.
    pub result: VrlValue,
    /// What the program left `.` as when not an object (a program can only
    /// by assigning `.` itself); the slots are then empty.
    pub not_an_object: Option<&'static str>,
}

impl ProgramRunner<'_> {
    /// Runs the program on the record loaded in `slots`, which then hold the
    /// record the program left; an error is the reason to reject the record:
    /// VRL's runtime error message, or `aborted`.
    pub fn run(&mut self, slots: &mut RecordSlots) -> Result<ProgramOutput, String> {
        let (program, timezone) = (&self.compiled.program, &self.compiled.timezone);
        if !slots.whole() {
            let outcome = self.runtime.resolve(&mut SlotTarget::new(slots), program, timezone);
            self.runtime.clear();
            return outcome.map(|result| ProgramOutput { result, not_an_object: None }).map_err(|e| e.to_string());
        }
        let mut target = TargetValue {
            value: slots.take_object(),
            metadata: VrlValue::Object(ObjectMap::new()),
            secrets: Secrets::default(),
        };
        let outcome = self.runtime.resolve(&mut target, program, timezone);
        self.runtime.clear();
        let result = outcome.map_err(|error| error.to_string())?;
        let not_an_object = match target.value {
            VrlValue::Object(object) => {
                slots.read_object(object);
                None
            }
            other => Some(kind_name(&other)),
        };
        Ok(ProgramOutput { result, not_an_object })
    }
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
        Value::Date(date) => VrlValue::from(date_text(*date)),
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

fn date_text(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// A decimal as a float when the float prints back as the same number, else as text.
fn decimal_to_vrl(text: &str) -> VrlValue {
    match exact_float(text) {
        Some(float) => float_to_vrl(float),
        None => VrlValue::from(text),
    }
}

/// The float a decimal text denotes exactly, if any. A plain decimal of at
/// most 15 significant digits in the range of normal floats always does (any
/// such decimal reads and prints back unchanged: `f64::DIGITS`); longer ones
/// are printed back to be compared.
fn exact_float(text: &str) -> Option<f64> {
    if let Some(float) = short_decimal(text) {
        return Some(float);
    }
    let (_, whole, fraction) = canonical_decimal(text)?;
    let significant = match whole.is_empty() {
        true => fraction.trim_start_matches('0').len(),
        false => whole.len() + fraction.len(),
    };
    let leading_zeros = fraction.len() - fraction.trim_start_matches('0').len();
    if significant <= f64::DIGITS as usize && whole.len() < 300 && leading_zeros < 300 {
        return text.parse().ok();
    }
    text.parse::<f64>().ok().filter(|float| float.is_finite() && same_decimal(&float.to_string(), text))
}

/// A plain decimal of at most 15 digits (`-12.50`) read without the general
/// parser: its digits as an integer divided by a power of ten. Both are exact
/// as floats, so the one rounding of the division gives the float nearest the
/// decimal, as parsing does.
fn short_decimal(text: &str) -> Option<f64> {
    const POWERS_OF_TEN: [f64; 16] =
        [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text.as_bytes()[1..]),
        b'+' => (false, &text.as_bytes()[1..]),
        _ => (false, text.as_bytes()),
    };
    let (mut mantissa, mut count, mut fraction_digits) = (0u64, 0usize, None::<usize>);
    for &byte in digits {
        match byte {
            b'0'..=b'9' if count < 15 => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                count += 1;
                fraction_digits = fraction_digits.map(|digits| digits + 1);
            }
            b'.' if fraction_digits.is_none() => fraction_digits = Some(0),
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let value = mantissa as f64 / POWERS_OF_TEN[fraction_digits.unwrap_or(0)];
    Some(if negative { -value } else { value })
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

/// The value a field the program was not given leaves VRL as: the same as
/// `vrl_to_value(value_to_vrl(&value))`, moved rather than copied where the
/// trip would change nothing.
pub fn as_through_vrl(value: Value) -> Value {
    match value {
        Value::Float(float) if float.is_nan() => Value::String("NaN".to_string()),
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::String(_) | Value::TimestampTz(_) => {
            value
        }
        Value::Decimal(text) => match exact_float(&text) {
            Some(float) => Value::Float(float),
            None => Value::String(text),
        },
        Value::Bytes(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Value::String(text),
            Err(error) => Value::Bytes(error.into_bytes()),
        },
        Value::Date(date) => Value::String(date_text(date)),
        Value::Timestamp(naive) => Value::TimestampTz(naive.and_utc()),
        Value::Json(json) => vrl_to_value(json_to_vrl(&json)),
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
    use chrono::DateTime;
    use proptest::prelude::*;

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

    fn any_value() -> impl Strategy<Value = Value> {
        let json = prop_oneof![
            Just(serde_json::json!(null)),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e9f64..1e9).prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ]
        .prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        });
        let seconds = -62_000_000_000i64..250_000_000_000;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            "-?[0-9]{0,20}(\\.[0-9]{0,20})?|1e3|\\PC{0,4}".prop_map(Value::Decimal),
            "\\PC{0,12}".prop_map(Value::String),
            prop::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
            (-100_000i32..100_000)
                .prop_map(|day| Value::Date(NaiveDate::from_num_days_from_ce_opt(day.abs() + 1).unwrap())),
            seconds.clone().prop_map(|s| Value::Timestamp(DateTime::from_timestamp(s, 0).unwrap().naive_utc())),
            seconds.prop_map(|s| Value::TimestampTz(DateTime::from_timestamp(s, 7).unwrap())),
            json.prop_map(Value::Json),
        ]
    }

    proptest! {
        #[test]
        fn exact_floats_are_those_that_print_back(text in "[+-]?[0-9]{0,22}(\\.[0-9]{0,22})?|0\\.0{290,310}[1-9]{1,3}") {
            let printed_back =
                text.parse::<f64>().ok().filter(|float| float.is_finite() && same_decimal(&float.to_string(), &text));
            prop_assert_eq!(exact_float(&text).map(f64::to_bits), printed_back.map(f64::to_bits));
        }

        #[test]
        fn as_through_vrl_is_the_round_trip(value in any_value()) {
            let round_trip = vrl_to_value(value_to_vrl(&value));
            let moved = as_through_vrl(value.clone());
            // Compared as JSON with the variant, so that a NaN float equals itself.
            prop_assert_eq!(
                (moved.data_type(), moved.to_json()),
                (round_trip.data_type(), round_trip.to_json()),
                "for {:?}", value
            );
        }
    }
}
