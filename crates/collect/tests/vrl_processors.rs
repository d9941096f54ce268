//! Golden tests of the VRL processors `remap` and `filter`: each JSON file
//! under `tests/golden/<processor>/` holds a program, an input batch, and the
//! output batch, rejected records and dropped count expected from it. Also
//! checks that a program that does not compile is reported at the option's
//! line in the job file, with VRL's line and column inside the program.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use haul_collect::process::filter::FilterPlugin;
use haul_collect::process::remap::RemapPlugin;
use haul_collect_core::job::JobSource;
use haul_collect_core::registry::{BuildError, Plugin, PluginRegistry};
use haul_collect_core::{Batch, DataType, Field, Processor, Schema, Value};
use serde::Deserialize;
use serde_json::json;

/// One golden case, as written in its file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoldenCase {
    /// What the case shows.
    about: String,
    /// The program, one line per item.
    program: Vec<String>,
    /// Options besides the program.
    #[serde(default)]
    options: serde_json::Map<String, serde_json::Value>,
    input: GoldenBatch,
    output: GoldenBatch,
    #[serde(default)]
    rejected: Vec<GoldenRejected>,
    #[serde(default)]
    dropped: u64,
}

/// A batch as `[name, type]` pairs and rows of JSON values.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct GoldenBatch {
    fields: Vec<(String, DataType)>,
    rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct GoldenRejected {
    reason: String,
    record: serde_json::Value,
}

impl GoldenBatch {
    fn to_batch(&self) -> Batch {
        let schema = Schema::new(self.fields.iter().map(|(name, data_type)| Field::new(name, *data_type)).collect());
        let rows = self
            .rows
            .iter()
            .map(|row| {
                row.iter().zip(&self.fields).map(|(json, (_, data_type))| typed_value(json, *data_type)).collect()
            })
            .collect();
        Batch::new(Arc::new(schema), rows)
    }

    fn from_batch(batch: &Batch) -> Self {
        GoldenBatch {
            fields: batch.schema.fields.iter().map(|field| (field.name.clone(), field.data_type)).collect(),
            rows: batch.rows.iter().map(|row| row.iter().map(Value::to_json).collect()).collect(),
        }
    }
}

/// A JSON value read as the variant of `data_type`.
fn typed_value(json: &serde_json::Value, data_type: DataType) -> Value {
    let text = json.as_str().unwrap_or_default();
    match (json, data_type) {
        (serde_json::Value::Null, _) => Value::Null,
        (_, DataType::Bool) => Value::Bool(json.as_bool().expect("a boolean")),
        (_, DataType::Int) => Value::Int(json.as_i64().expect("an integer")),
        (_, DataType::Float) => Value::Float(json.as_f64().expect("a number")),
        (_, DataType::Decimal) => Value::Decimal(text.to_string()),
        (_, DataType::String) => Value::String(text.to_string()),
        (_, DataType::Bytes) => Value::Bytes(text.as_bytes().to_vec()),
        (_, DataType::Date) => Value::Date(text.parse::<NaiveDate>().expect("a date")),
        (_, DataType::Timestamp) => Value::Timestamp(text.parse::<NaiveDateTime>().expect("a timestamp")),
        (_, DataType::TimestampTz) => Value::TimestampTz(text.parse::<DateTime<Utc>>().expect("an instant")),
        (_, DataType::Json) => Value::Json(json.clone()),
    }
}

fn build(kind: &str, options: serde_json::Map<String, serde_json::Value>) -> anyhow::Result<Arc<dyn Processor>> {
    let options = serde_json::Value::Object(options);
    match kind {
        "remap" => RemapPlugin.build(serde_json::from_value(options)?),
        "filter" => FilterPlugin.build(serde_json::from_value(options)?),
        other => anyhow::bail!("no golden cases for `{other}`"),
    }
}

/// Runs one golden file; an error describes the first difference.
async fn run_case(kind: &str, option: &str, path: &Path) -> anyhow::Result<()> {
    let case: GoldenCase = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut options = case.options.clone();
    options.insert(option.to_string(), json!(case.program.join("\n")));
    let processor = build(kind, options)?;
    let processed = processor.process("shard-0", case.input.to_batch()).await?;
    let output = GoldenBatch::from_batch(&processed.batch);
    anyhow::ensure!(output == case.output, "{}: output\n{output:#?}\nexpected\n{:#?}", case.about, case.output);
    let rejected: Vec<GoldenRejected> = processed
        .rejected
        .iter()
        .map(|rejected| {
            assert_eq!(rejected.stage, kind);
            GoldenRejected { reason: rejected.reason.clone(), record: rejected.record.clone() }
        })
        .collect();
    anyhow::ensure!(
        rejected == case.rejected,
        "{}: rejected\n{rejected:#?}\nexpected\n{:#?}",
        case.about,
        case.rejected
    );
    anyhow::ensure!(processed.dropped == case.dropped, "{}: dropped {}", case.about, processed.dropped);
    Ok(())
}

/// Runs every golden file of a processor and reports all the failing ones.
async fn run_golden(kind: &str, option: &str) {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(kind);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&folder).unwrap().map(|entry| entry.unwrap().path()).collect();
    paths.sort();
    assert!(paths.len() >= 3, "golden cases missing in {}", folder.display());
    let mut failures = Vec::new();
    for path in &paths {
        if let Err(error) = run_case(kind, option, path).await {
            failures.push(format!("{}: {error:#}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn remap_golden_cases() {
    run_golden("remap", "source").await;
}

#[tokio::test]
async fn filter_golden_cases() {
    run_golden("filter", "condition").await;
}

const JOB_WITH_BAD_PROGRAM: &str = r#"name = "orders"

[source]
type = "file"
path = "orders.csv"

[[processors]]
type = "remap"
source = """
.id = to_int!(.id)
.total = to_int(.total)
"""

[sink]
type = "stdout"
"#;

fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::default();
    haul_collect::register_builtin(&mut registry);
    registry
}

#[test]
fn compile_error_points_at_the_job_file_and_the_program() {
    let source = JobSource::new("job.toml", JOB_WITH_BAD_PROGRAM);
    let job = source.parse("j").unwrap();
    let spec = &job.processors[0];
    let Err(BuildError::Config { path, message }) = registry().build::<dyn Processor>(spec) else {
        panic!("the program should not compile");
    };
    assert_eq!(path, vec!["source".to_string()]);
    let error = source.plugin_error(spec, &path, message);
    assert_eq!(error.location.map(|(line, _)| line), Some(9), "{error}");
    let text = error.to_string();
    assert!(text.starts_with("job.toml:9:"), "{text}");
    assert!(text.contains("the VRL program in `source` does not compile"), "{text}");
    assert!(text.contains("unhandled fallible assignment"), "{text}");
    assert!(text.contains(":2:10"), "the line and column inside the program: {text}");
    assert!(!text.contains('\u{1b}'), "no colours: {text}");
}

#[test]
fn filter_rejects_a_condition_that_is_never_boolean() {
    let options = json!({"condition": "upcase(\"yes\")"}).as_object().cloned().unwrap();
    let message = build("filter", options).err().unwrap().to_string();
    assert_eq!(message, "the condition returns string, never a boolean");
}

#[test]
fn bad_options_point_at_their_key() {
    let cases = [
        (json!({"source": ".a = 1", "timezone": "Mars/Olympus"}), "timezone", "unknown time zone `Mars/Olympus`"),
        (json!({"source": ".a = 1", "drop_on_error": true, "on_error": "fail"}), "on_error", "contradicts"),
    ];
    for (options, key, expected) in cases {
        let error = build("remap", options.as_object().cloned().unwrap()).err().unwrap();
        let option = error.downcast_ref::<haul_collect_core::registry::OptionError>().expect("an option error");
        assert_eq!(option.path, vec![key.to_string()]);
        assert!(option.message.contains(expected), "{}", option.message);
    }
}

#[tokio::test]
async fn on_error_fail_fails_the_batch() {
    let options = json!({"source": ".n = to_int!(.n)", "on_error": "fail"}).as_object().cloned().unwrap();
    let processor = build("remap", options).unwrap();
    let input = GoldenBatch { fields: vec![("n".into(), DataType::String)], rows: vec![vec![json!("x")]] };
    let error = processor.process("shard-0", input.to_batch()).await.unwrap_err();
    assert!(error.to_string().starts_with("remap failed on a record: function call error for \"to_int\""), "{error}");
}
