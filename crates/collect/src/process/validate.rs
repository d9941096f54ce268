//! The `validate` processor: checks each record against per-field rules and,
//! optionally, a JSON Schema of the whole record. A record that breaks any
//! rule is listed with all its violations in one reason and, per
//! `on_invalid`, goes to the dead letters (`dead_letter`, the default), is
//! dropped and counted (`drop`), or fails the shard (`fail`).
//!
//! `unique` holds within a run, across its concurrent shards: the first
//! record to bring a value claims it, and a later record with the same value
//! is a duplicate. A record identical in every field to the one that claimed
//! the value is taken for that record read again (after a retry from a
//! checkpoint), not for a duplicate. Invalid records give back the values they
//! claimed. The index lives in memory for one run in one process: a resumed
//! run starts it afresh.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Processed, Processor, Rejected, Value};
use serde::Deserialize;

use super::validate_rules::{Claim, Fingerprints, Reason, Rule, RuleConfig, UniqueIndex};

/// What happens to an invalid record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Removed from the batch and counted against the error limit, written nowhere.
    Drop,
    /// Sent to the dead letters with its reason.
    #[default]
    DeadLetter,
    /// Fails the shard.
    Fail,
}

/// The `validate` processor's options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// A JSON Schema of the whole record, inline.
    pub json_schema: Option<String>,
    /// A JSON Schema of the whole record, in a file.
    pub json_schema_file: Option<PathBuf>,
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// The field whose value is the rejected record's position.
    pub key: Option<String>,
    #[serde(default = "default_unique_capacity")]
    pub unique_capacity: usize,
}

fn default_unique_capacity() -> usize {
    10_000_000
}

/// Builds `validate` processors.
pub struct ValidatePlugin;

impl Plugin for ValidatePlugin {
    type Config = ValidateConfig;
    type Output = dyn Processor;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "validate",
            role: Role::Processor,
            description: "checks records against field rules and a JSON Schema; invalid ones are dead-lettered, dropped or fail the shard",
            options: vec![
                option(
                    "rules",
                    "array of tables",
                    Some("[]"),
                    "{ field, required, type, regex, min, max, min_length, max_length, enum, unique } per field",
                ),
                option(
                    "json_schema",
                    "string",
                    None,
                    "an inline JSON Schema every record must match (no remote references)",
                ),
                option("json_schema_file", "string", None, "a file holding the JSON Schema, instead of json_schema"),
                option("on_invalid", "string", Some("dead_letter"), "dead_letter, drop or fail"),
                option("key", "string", None, "field whose value is the position of a rejected record"),
                option(
                    "unique_capacity",
                    "integer",
                    Some("10000000"),
                    "distinct values a unique rule remembers per run (about 40 bytes each)",
                ),
            ],
        }
    }

    fn build(&self, config: ValidateConfig) -> anyhow::Result<Arc<dyn Processor>> {
        Ok(Arc::new(RecordValidator::new(config)?))
    }
}

fn option_error(option: &str, message: impl Into<String>) -> anyhow::Error {
    OptionError { path: vec![option.to_string()], message: message.into() }.into()
}

fn json_schema(config: &ValidateConfig) -> anyhow::Result<Option<jsonschema::Validator>> {
    let (option, text) = match (&config.json_schema, &config.json_schema_file) {
        (Some(_), Some(_)) => {
            return Err(option_error("json_schema", "give json_schema or json_schema_file, not both"));
        }
        (Some(text), None) => ("json_schema", text.clone()),
        (None, Some(path)) => (
            "json_schema_file",
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, None) => return Ok(None),
    };
    let schema: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| option_error(option, format!("the JSON Schema is not JSON: {error}")))?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|error| option_error(option, format!("invalid JSON Schema: {error}")))?;
    Ok(Some(validator))
}

/// A configured `validate` processor.
pub struct RecordValidator {
    rules: Vec<Rule>,
    schema: Option<jsonschema::Validator>,
    on_invalid: OnInvalid,
    key: Option<String>,
    /// One index per rule, for the `unique` ones.
    unique: Vec<Option<UniqueIndex>>,
    fingerprints: Fingerprints,
}

impl RecordValidator {
    fn new(config: ValidateConfig) -> anyhow::Result<RecordValidator> {
        let schema = json_schema(&config)?;
        if config.rules.is_empty() && schema.is_none() {
            return Err(option_error("rules", "validate needs `rules`, a JSON Schema or both"));
        }
        let rules: Vec<Rule> = config
            .rules
            .into_iter()
            .map(Rule::compile)
            .collect::<Result<_, _>>()
            .map_err(|m| option_error("rules", m))?;
        let unique = rules
            .iter()
            .map(|rule| rule.unique.then(|| UniqueIndex::new(&rule.field, config.unique_capacity)))
            .collect();
        Ok(RecordValidator {
            rules,
            schema,
            on_invalid: config.on_invalid,
            key: config.key,
            unique,
            fingerprints: Fingerprints::new(),
        })
    }

    /// Checks the unique rules of a record otherwise `valid`; claims its values
    /// only if it stays valid.
    fn check_unique(
        &self,
        row: &[Value],
        columns: &[Option<usize>],
        record: u64,
        reason: &mut Reason,
    ) -> anyhow::Result<()> {
        let valid = reason.is_empty();
        let mut claimed = Vec::new();
        for ((rule, index), column) in self.rules.iter().zip(&self.unique).zip(columns) {
            let (Some(index), Some(value)) = (index, column.map(|c| &row[c])) else { continue };
            if value.is_null() {
                continue;
            }
            let fingerprint = self.fingerprints.value(value);
            let duplicate = if valid {
                let claim = index.claim(fingerprint, record)?;
                if claim == Claim::New {
                    claimed.push((index, fingerprint));
                }
                claim == Claim::Taken
            } else {
                index.taken_by_other(fingerprint, record)
            };
            if duplicate {
                reason.add(&rule.field, format_args!("is a duplicate"));
            }
        }
        if !reason.is_empty() {
            claimed.into_iter().for_each(|(index, fingerprint)| index.release(fingerprint));
        }
        Ok(())
    }
}

#[async_trait]
impl Processor for RecordValidator {
    async fn process(&self, _shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        let Batch { schema, rows } = batch;
        let columns: Vec<Option<usize>> = self.rules.iter().map(|rule| schema.index_of(&rule.field)).collect();
        let key_column = self.key.as_deref().and_then(|key| schema.index_of(key));
        let has_unique = self.unique.iter().any(Option::is_some);
        let mut passed = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        let mut dropped = 0;
        let mut reason = Reason::default();
        let mut scratch = String::new();
        for row in rows {
            reason.clear();
            for (rule, column) in self.rules.iter().zip(&columns) {
                rule.check(column.map(|c| &row[c]), &mut scratch, &mut reason);
            }
            if let Some(validator) = &self.schema {
                let record = schema.row_to_json(&row);
                for error in validator.iter_errors(&record) {
                    let path = error.instance_path().to_string();
                    reason.add(if path.is_empty() { "record" } else { &path }, format_args!("{error}"));
                }
            }
            if has_unique {
                let record = self.fingerprints.record(&row);
                self.check_unique(&row, &columns, record, &mut reason)?;
            }
            if reason.is_empty() {
                passed.push(row);
                continue;
            }
            let position = key_column.and_then(|c| row[c].to_text()).unwrap_or_default();
            match self.on_invalid {
                OnInvalid::Drop => dropped += 1,
                OnInvalid::DeadLetter => rejected.push(Rejected {
                    reason: reason.as_str().to_string(),
                    position,
                    record: schema.row_to_json(&row),
                    stage: "validate".to_string(),
                }),
                OnInvalid::Fail => {
                    let at = if position.is_empty() { String::new() } else { format!(" at {position}") };
                    anyhow::bail!("invalid record{at}: {}", reason.as_str());
                }
            }
        }
        Ok(Processed { batch: Batch { schema, rows: passed }, rejected, dropped })
    }
}

#[cfg(test)]
mod tests {
    use haul_collect_core::{DataType, Field, Schema};

    use super::*;

    fn validator(toml_text: &str) -> RecordValidator {
        RecordValidator::new(toml::from_str(toml_text).unwrap()).unwrap()
    }

    /// A batch from a table: the first line names the fields, each later line
    /// is a record; cells are JSON (`null`, `1`, `"text"`).
    fn table(text: &str) -> Batch {
        let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
        let names: Vec<&str> = lines.next().unwrap().split('|').map(str::trim).collect();
        let rows: Vec<Vec<Value>> = lines
            .map(|line| {
                line.split('|').map(|cell| Value::from_json(serde_json::from_str(cell.trim()).unwrap())).collect()
            })
            .collect();
        let fields = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let data_type = match rows.iter().map(|row| &row[i]).find(|v| !v.is_null()) {
                    Some(Value::Int(_)) => DataType::Int,
                    _ => DataType::String,
                };
                Field::new(*name, data_type)
            })
            .collect();
        Batch::new(Arc::new(Schema::new(fields)), rows)
    }

    const RULES: &str = r#"
        key = "id"
        [[rules]]
        field = "email"
        required = true
        regex = '^\S+@\S+$'
        [[rules]]
        field = "age"
        type = "int"
        min = 0
        max = 120
        [[rules]]
        field = "status"
        enum = ["new", "paid"]
        [[rules]]
        field = "id"
        unique = true
    "#;

    const INPUT: &str = r#"
        id | email       | age   | status
        1  | "a@x.io"    | 30    | "new"
        2  | "not mail"  | 130   | "paid"
        3  | null        | "old" | "lost"
        1  | "b@x.io"    | 40    | "new"
        4  | "c@x.io"    | null  | null
    "#;

    #[tokio::test]
    async fn golden_dead_letters_list_every_violation() {
        let output = validator(RULES).process("shard-0", table(INPUT)).await.unwrap();
        let expected = table(
            r#"
            id | email    | age | status
            1  | "a@x.io" | 30  | "new"
            4  | "c@x.io" | null| null
            "#,
        );
        assert_eq!(output.batch.rows, expected.rows);
        let reasons: Vec<(&str, &str)> =
            output.rejected.iter().map(|r| (r.position.as_str(), r.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [
                ("2", r"email: does not match ^\S+@\S+$; age: 130 is above the maximum 120"),
                (
                    "3",
                    "email: is required; age: is not a valid int; age: is not a number; status: is not one of new, paid"
                ),
                ("1", "id: is a duplicate"),
            ]
        );
        assert_eq!(
            output.rejected[2].record,
            serde_json::json!({"id": 1, "email": "b@x.io", "age": 40, "status": "new"})
        );
        assert!(output.rejected.iter().all(|r| r.stage == "validate"));
        assert_eq!(output.dropped, 0);
    }

    #[tokio::test]
    async fn drop_counts_and_fail_errors() {
        let dropping = validator(&format!("on_invalid = \"drop\"\n{RULES}"));
        let output = dropping.process("shard-0", table(INPUT)).await.unwrap();
        assert_eq!((output.batch.len(), output.rejected.len(), output.dropped), (2, 0, 3));
        let failing = validator(&format!("on_invalid = \"fail\"\n{RULES}"));
        let error = failing.process("shard-0", table(INPUT)).await.unwrap_err().to_string();
        assert_eq!(error, r"invalid record at 2: email: does not match ^\S+@\S+$; age: 130 is above the maximum 120");
    }

    #[tokio::test]
    async fn json_schema_pass_and_fail() {
        let schema = r#"json_schema = '{"type": "object", "required": ["email"], "properties": {"age": {"type": "integer", "maximum": 120}}}'"#;
        let output = validator(schema)
            .process(
                "shard-0",
                table(
                    r#"
                email     | age
                "a@x.io"  | 30
                "b@x.io"  | 130
                "#,
                ),
            )
            .await
            .unwrap();
        assert_eq!(output.batch.len(), 1);
        assert_eq!(output.rejected.len(), 1);
        assert_eq!(output.rejected[0].reason, "/age: 130 is greater than the maximum of 120");
        let missing = validator(schema).process("shard-0", table("age\n1")).await.unwrap();
        assert_eq!(missing.rejected[0].reason, "record: \"email\" is a required property");
    }

    #[test]
    fn build_errors_point_at_options() {
        let path = |toml_text: &str| match RecordValidator::new(toml::from_str(toml_text).unwrap()) {
            Err(error) => error.downcast::<OptionError>().unwrap().path,
            Ok(_) => panic!("expected an error for {toml_text}"),
        };
        assert_eq!(path("[[rules]]\nfield = \"a\"\nregex = \"(\""), ["rules"]);
        assert_eq!(path("json_schema = '{\"type\": 12}'"), ["json_schema"]);
        assert_eq!(path("json_schema = 'nope'"), ["json_schema"]);
        assert_eq!(path(r#"json_schema = '{"$ref": "https://example.com/s.json"}'"#), ["json_schema"]);
        assert_eq!(path(""), ["rules"]);
        assert!(toml::from_str::<ValidateConfig>("on_invalid = \"ignore\"").is_err());
    }

    #[tokio::test]
    async fn json_schema_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("schema.json");
        std::fs::write(&file, r#"{"properties": {"age": {"minimum": 0}}}"#).unwrap();
        let validator = validator(&format!("json_schema_file = {:?}", file.to_str().unwrap()));
        let output = validator.process("shard-0", table("age\n-1\n1")).await.unwrap();
        assert_eq!((output.batch.len(), output.rejected.len()), (1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unique_holds_across_concurrent_shards_and_allows_rereads() {
        let validator = Arc::new(validator("[[rules]]\nfield = \"id\"\nunique = true"));
        let shard = |start: i64| {
            let validator = Arc::clone(&validator);
            tokio::spawn(async move {
                let mut passed = 0;
                for chunk in 0..20 {
                    let rows = (0..50).map(|i| vec![Value::Int(start + chunk * 50 + i), Value::Int(start)]).collect();
                    let schema = Arc::new(Schema::new(vec![
                        Field::new("id", DataType::Int),
                        Field::new("shard", DataType::Int),
                    ]));
                    passed += validator.process("shard-0", Batch::new(schema, rows)).await.unwrap().batch.len();
                }
                passed
            })
        };
        let (first, second) = (shard(0), shard(500));
        let passed = first.await.unwrap() + second.await.unwrap();
        assert_eq!(passed, 1500, "ids 0..1500 pass once each; the overlap 500..1000 once in all");
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("shard", DataType::Int)]));
        let reread = validator
            .process("shard-0", Batch::new(Arc::clone(&schema), vec![vec![Value::Int(1), Value::Int(0)]]))
            .await
            .unwrap();
        assert_eq!(reread.batch.len(), 1, "the same record read again is not its own duplicate");
    }
}
