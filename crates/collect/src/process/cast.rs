//! The `cast` processor: converts fields to other types. A value that cannot
//! be converted rejects its record (with the field, the value and the target
//! type), which leaves the batch; nulls stay null. The output schema is built
//! once per batch, and kept as is when no field changes type.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::FixedOffset;
use chrono::format::{Item, StrftimeItems};
use haul_collect_core::registry::{OptionError, OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Field, Processed, Processor, Rejected, Schema, Value};
use serde::Deserialize;

use super::cast_value::{CastTarget, Conversion, NumberFormat};

/// The `cast` processor's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CastConfig {
    /// Field = target type.
    pub fields: BTreeMap<String, CastTarget>,
    /// Field = chrono strftime format, for dates and times read from text.
    #[serde(default)]
    pub formats: BTreeMap<String, String>,
    #[serde(default)]
    pub decimal: NumberFormat,
    /// An offset like "+08:00" for times without one.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The field whose value locates a rejected record in the dead letters.
    #[serde(default)]
    pub key: Option<String>,
}

/// Builds `cast` processors.
pub struct CastPlugin;

impl Plugin for CastPlugin {
    type Config = CastConfig;
    type Output = dyn Processor;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "cast",
            role: Role::Processor,
            description: "converts fields to other types; a value that does not convert rejects its record",
            options: vec![
                option(
                    "fields",
                    "table",
                    None,
                    "field = \"string\", \"int\", \"float\", \"decimal\", \"bool\", \"date\", \"timestamp\", \"timestamp_tz\" or \"json\"",
                ),
                option(
                    "formats",
                    "table",
                    None,
                    "field = chrono strftime format of its dates or times, e.g. \"%d/%m/%Y %H:%M\"; default ISO 8601 / RFC 3339",
                ),
                option(
                    "decimal",
                    "table",
                    Some("{ separator = \".\" }"),
                    "how numbers are written: `separator` (decimal point) and `thousands`, e.g. { separator = \",\", thousands = \".\" }",
                ),
                option(
                    "timezone",
                    "string",
                    None,
                    "offset like \"+08:00\" of times without one; when set, `timestamp` fields become instants (UTC)",
                ),
                option("key", "string", None, "field whose value is the position of a rejected record"),
            ],
        }
    }

    fn build(&self, config: CastConfig) -> anyhow::Result<Arc<dyn Processor>> {
        let error = |path: &[&str], message: String| OptionError {
            path: path.iter().map(|s| s.to_string()).collect(),
            message,
        };
        if Some(config.decimal.separator) == config.decimal.thousands {
            return Err(
                error(&["decimal"], "the decimal separator and the thousands separator must differ".into()).into()
            );
        }
        let timezone = match &config.timezone {
            Some(text) => Some(read_offset(text).ok_or_else(|| {
                error(
                    &["timezone"],
                    format!("invalid timezone `{text}`: expected an offset like \"+08:00\" or \"UTC\""),
                )
            })?),
            None => None,
        };
        for (field, format) in &config.formats {
            match config.fields.get(field) {
                Some(target) if target.reads_times() => {}
                _ => {
                    return Err(error(&["formats", field], format!("`{field}` is not cast to a date or a time")).into());
                }
            }
            if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
                return Err(error(&["formats", field], format!("invalid strftime format `{format}`")).into());
            }
        }
        let conversions = config
            .fields
            .into_iter()
            .map(|(field, target)| {
                let format = config.formats.get(&field).cloned();
                (field, Conversion { target, format, timezone, numbers: config.decimal })
            })
            .collect();
        Ok(Arc::new(Cast { conversions, key: config.key }))
    }
}

/// Reads "+08:00", "-0530", "Z" or "UTC".
fn read_offset(text: &str) -> Option<FixedOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest.get(..2)?, rest.get(2..)?));
    let digits = |part: &str| match part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()) {
        true => part.parse::<i32>().ok(),
        false => None,
    };
    FixedOffset::east_opt(sign * (digits(hours)? * 3600 + digits(minutes)? * 60))
}

/// A configured `cast` processor.
pub struct Cast {
    conversions: Vec<(String, Conversion)>,
    key: Option<String>,
}

#[async_trait]
impl Processor for Cast {
    async fn process(&self, _shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        let plan: Vec<(usize, &str, &Conversion)> = self
            .conversions
            .iter()
            .filter_map(|(field, conversion)| Some((batch.schema.index_of(field)?, field.as_str(), conversion)))
            .collect();
        if plan.is_empty() {
            return Ok(Processed::pass(batch));
        }
        let mut fields = batch.schema.fields.clone();
        for (index, _, conversion) in &plan {
            fields[*index] = Field { data_type: conversion.output(), ..fields[*index].clone() };
        }
        let output = Schema::new(fields);
        let output = if output == *batch.schema { Arc::clone(&batch.schema) } else { Arc::new(output) };
        let key = self.key.as_deref().and_then(|key| batch.schema.index_of(key));
        let mut kept = Vec::with_capacity(batch.rows.len());
        let mut rejected = Vec::new();
        let mut originals: Vec<(usize, Value)> = Vec::new();
        'rows: for mut row in batch.rows {
            originals.clear();
            for &(index, field, conversion) in &plan {
                if conversion.leaves(&row[index]) {
                    continue;
                }
                let Some(cast) = conversion.convert(&row[index]) else {
                    let reason = format!(
                        "cannot cast field `{field}` value {} to {}",
                        row[index].to_json(),
                        conversion.target.name()
                    );
                    for (index, original) in originals.drain(..) {
                        row[index] = original;
                    }
                    rejected.push(Rejected {
                        reason,
                        position: key.and_then(|key| row[key].to_text()).unwrap_or_default(),
                        record: batch.schema.row_to_json(&row),
                        stage: "cast".to_string(),
                    });
                    continue 'rows;
                };
                originals.push((index, std::mem::replace(&mut row[index], cast)));
            }
            kept.push(row);
        }
        Ok(Processed { batch: Batch::new(output, kept), rejected, dropped: 0 })
    }
}

#[cfg(test)]
mod tests {
    use haul_collect_core::DataType::{Bool, Date, Decimal, Float, Int, Json, String as Text, Timestamp, TimestampTz};
    use serde_json::json;

    use super::super::test_table::table;
    use super::*;

    fn cast(options: serde_json::Value) -> anyhow::Result<Arc<dyn Processor>> {
        CastPlugin.build(serde_json::from_value(options).unwrap())
    }

    fn rejection(reason: &str, position: &str, record: serde_json::Value) -> Rejected {
        Rejected { reason: reason.to_string(), position: position.to_string(), record, stage: "cast".to_string() }
    }

    #[tokio::test]
    async fn golden_every_target_with_formats_separators_and_timezone() {
        let processor = cast(json!({
            "fields": { "amount": "decimal", "at": "timestamp", "n": "int", "ok": "bool", "d": "date",
                        "f": "float", "s": "string", "j": "json" },
            "formats": { "at": "%d/%m/%Y %H:%M", "d": "%Y%m%d" },
            "decimal": { "separator": ",", "thousands": "." },
            "timezone": "+08:00",
            "key": "id",
        }))
        .unwrap();
        let fields = [
            ("id", Int),
            ("amount", Text),
            ("at", Text),
            ("n", Text),
            ("ok", Text),
            ("d", Text),
            ("f", Text),
            ("s", Int),
            ("j", Text),
        ];
        let input = table(
            &fields,
            json!([
                [1, "1.234,56", "02/01/2024 09:30", "1.000", "yes", "20240131", "-0,5", 7, "{\"a\":[1]}"],
                [2, null, null, null, null, null, null, null, null],
                [3, "12,3x", "02/01/2024 09:30", "1", "no", "20240131", "1", 1, "1"],
                [4, "1", "2024-13-45", "1", "no", "20240131", "1", 1, "1"],
                [5, " -0,5 ", "31/12/2023 23:59", "1,5", "no", "20240131", "1", 1, "1"],
                [6, "1", "31/12/2023 23:59", "1", "no", "20240131", "1", 1, "[1"],
            ]),
        );
        let processed = processor.process("shard-0", input).await.unwrap();
        let expected = table(
            &[
                ("id", Int),
                ("amount", Decimal),
                ("at", TimestampTz),
                ("n", Int),
                ("ok", Bool),
                ("d", Date),
                ("f", Float),
                ("s", Text),
                ("j", Json),
            ],
            json!([
                [1, "1234.56", "2024-01-02T01:30:00Z", 1000, true, "2024-01-31", -0.5, "7", {"a": [1]}],
                [2, null, null, null, null, null, null, null, null],
            ]),
        );
        assert_eq!(processed.batch, expected);
        let row = |id: i64, amount: &str, at: &str, n: &str, j: &str| json!({"id": id, "amount": amount, "at": at, "n": n, "ok": "no", "d": "20240131", "f": "1", "s": 1, "j": j});
        assert_eq!(
            processed.rejected,
            [
                rejection(
                    "cannot cast field `amount` value \"12,3x\" to decimal",
                    "3",
                    row(3, "12,3x", "02/01/2024 09:30", "1", "1")
                ),
                rejection(
                    "cannot cast field `at` value \"2024-13-45\" to timestamp",
                    "4",
                    row(4, "1", "2024-13-45", "1", "1")
                ),
                rejection(
                    "cannot cast field `n` value \"1,5\" to int",
                    "5",
                    row(5, " -0,5 ", "31/12/2023 23:59", "1,5", "1")
                ),
                rejection(
                    "cannot cast field `j` value \"[1\" to json",
                    "6",
                    row(6, "1", "31/12/2023 23:59", "1", "[1")
                ),
            ]
        );
    }

    #[tokio::test]
    async fn golden_times_without_timezone() {
        let processor =
            cast(json!({ "fields": { "wall": "timestamp", "instant": "timestamp_tz", "day": "date" } })).unwrap();
        let input = table(
            &[("wall", Text), ("instant", Text), ("day", Timestamp)],
            json!([
                ["2024-01-02 03:04:05.5", "2024-01-02T03:04:05+02:00", "2024-01-02T23:59:59"],
                ["2024-01-02", "2024-01-02T03:04", null],
                ["2024-01-02T03:04:05Z", "2024-01-02", null],
            ]),
        );
        let processed = processor.process("shard-0", input).await.unwrap();
        let expected = table(
            &[("wall", Timestamp), ("instant", TimestampTz), ("day", Date)],
            json!([
                ["2024-01-02T03:04:05.5", "2024-01-02T01:04:05Z", "2024-01-02"],
                ["2024-01-02T00:00:00", "2024-01-02T03:04:00Z", null],
            ]),
        );
        assert_eq!(processed.batch, expected);
        assert_eq!(processed.rejected.len(), 1);
        assert_eq!(
            processed.rejected[0].reason,
            "cannot cast field `wall` value \"2024-01-02T03:04:05Z\" to timestamp"
        );
        assert_eq!(processed.rejected[0].position, "");
    }

    #[tokio::test]
    async fn empty_batches_and_untouched_schemas() {
        let processor = cast(json!({ "fields": { "n": "int", "absent": "bool" } })).unwrap();
        let empty = processor.process("shard-0", table(&[("n", Text)], json!([]))).await.unwrap();
        assert_eq!(empty.batch, table(&[("n", Int)], json!([])));
        let input = table(&[("n", Int)], json!([[1], [null]]));
        let schema = Arc::clone(&input.schema);
        let processed = processor.process("shard-0", input).await.unwrap();
        assert!(Arc::ptr_eq(&processed.batch.schema, &schema));
        assert_eq!(processed.batch, table(&[("n", Int)], json!([[1], [null]])));
    }

    #[test]
    fn options_are_checked_when_built() {
        let path = |options| cast(options).err().unwrap().downcast::<OptionError>().unwrap().path;
        assert_eq!(path(json!({ "fields": { "a": "int" }, "formats": { "a": "%Y" } })), ["formats", "a"]);
        assert_eq!(path(json!({ "fields": { "a": "date" }, "formats": { "a": "%Q" } })), ["formats", "a"]);
        assert_eq!(path(json!({ "fields": {}, "timezone": "Mars/Olympus" })), ["timezone"]);
        assert_eq!(path(json!({ "fields": {}, "decimal": { "separator": "," , "thousands": "," } })), ["decimal"]);
        assert!(serde_json::from_value::<CastConfig>(json!({ "fields": { "a": "money" } })).is_err());
        assert_eq!(read_offset("+08:00"), FixedOffset::east_opt(8 * 3600));
        assert_eq!(read_offset("-0530"), FixedOffset::east_opt(-(5 * 3600 + 30 * 60)));
    }
}
