//! Records from one response body.
//!
//! JSON: the records sit at a path such as `data.items` (dotted keys; a
//! number indexes an array; empty for the body itself). The body is read
//! once, streaming: records go straight into rows (nested values stay
//! nested), the values the paginator needs (a total, a cursor, a next URL)
//! are picked up on the way, and everything else is skipped unparsed. An
//! object at the path is one record; a scalar in the records array becomes a
//! record `{"value": …}`.
//!
//! NDJSON: one object per line; a bad line is rejected with its line number.
//! CSV: a header line names the columns; every value is a string; a bad row
//! is rejected with its row number.

use std::fmt;

use haul_collect_core::{Batch, DataType, Field, Rejected, Schema, Value};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::object_rows::{Key, ObjectRows, OrderedObject, parse_object};

/// How a response body holds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    #[default]
    Json,
    Ndjson,
    Csv,
}

/// A dotted path into a JSON body; empty for the body itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct JsonPath(Vec<String>);

impl JsonPath {
    pub(crate) fn parse(text: &str) -> anyhow::Result<JsonPath> {
        let text = text.trim();
        if text.is_empty() || text == "." {
            return Ok(JsonPath::default());
        }
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        anyhow::ensure!(
            segments.iter().all(|segment| !segment.is_empty()),
            "`{text}` is not a path such as `data.items` (dotted keys, numbers for array items)"
        );
        Ok(JsonPath(segments))
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("(the whole body)") } else { f.write_str(&self.0.join(".")) }
    }
}

/// The records of one page, and the values picked up for the paginator.
#[derive(Debug)]
pub(crate) struct PageRecords {
    pub batch: Batch,
    pub rejected: Vec<Rejected>,
    /// The value at each capture path, in the order asked; `None` when absent.
    pub captured: Vec<Option<serde_json::Value>>,
}

impl PageRecords {
    /// Records and rejected records together: what "an empty page" counts.
    pub(crate) fn count(&self) -> usize {
        self.batch.len() + self.rejected.len()
    }
}

/// Why a body could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyError(pub String);

/// Reads a page's body. `position` names the page in rejected records.
pub(crate) fn read_body(
    format: ResponseFormat,
    body: &[u8],
    records: &JsonPath,
    captures: &[JsonPath],
    position: &str,
) -> Result<PageRecords, BodyError> {
    match format {
        ResponseFormat::Json => read_json(body, records, captures),
        ResponseFormat::Ndjson => Ok(read_ndjson(body, position, captures.len())),
        ResponseFormat::Csv => read_csv(body, position, captures.len()),
    }
}

fn read_json(body: &[u8], records: &JsonPath, captures: &[JsonPath]) -> Result<PageRecords, BodyError> {
    let mut out = Walked { rows: ObjectRows::default(), records_found: false, captured: vec![None; captures.len()] };
    let mut wanted = vec![(Target::Records, records.0.as_slice())];
    wanted.extend(captures.iter().enumerate().map(|(index, path)| (Target::Capture(index), path.0.as_slice())));
    // One pass over the whole body checks its UTF-8 far faster than string by string.
    let text = std::str::from_utf8(body).map_err(|error| BodyError(format!("invalid utf-8: {error}")))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let walked = NodeSeed { wanted, out: &mut out }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|error| BodyError(format!("invalid json: {error}")));
    walked?;
    if !out.records_found {
        return Err(BodyError(format!(
            "the response has nothing at `{records}`, where `records` says the records are"
        )));
    }
    Ok(PageRecords { batch: out.rows.take_batch(), rejected: Vec::new(), captured: out.captured })
}

fn read_ndjson(body: &[u8], position: &str, captures: usize) -> PageRecords {
    let mut rows = ObjectRows::default();
    let mut rejected = Vec::new();
    for (index, line) in body.split(|&byte| byte == b'\n').enumerate() {
        let parsed = std::str::from_utf8(line)
            .map_err(|error| format!("invalid utf-8: {error}"))
            .and_then(|text| if text.trim().is_empty() { Ok(None) } else { parse_object(text).map(Some) });
        match parsed {
            Ok(Some(object)) => rows.push(object),
            Ok(None) => {}
            Err(reason) => rejected.push(Rejected {
                reason,
                position: format!("{position}, line {}", index + 1),
                record: serde_json::Value::String(String::from_utf8_lossy(line).into_owned()),
                stage: "source".to_string(),
            }),
        }
    }
    PageRecords { batch: rows.take_batch(), rejected, captured: vec![None; captures] }
}

fn read_csv(body: &[u8], position: &str, captures: usize) -> Result<PageRecords, BodyError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body);
    let header = reader.headers().map_err(|error| BodyError(format!("invalid csv header: {error}")))?.clone();
    let schema =
        std::sync::Arc::new(Schema::new(header.iter().map(|name| Field::new(name, DataType::String)).collect()));
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    for (index, record) in reader.records().enumerate() {
        match record {
            Ok(record) => rows.push(record.iter().map(|field| Value::String(field.to_string())).collect()),
            Err(error) => rejected.push(Rejected {
                reason: format!("invalid csv row: {error}"),
                position: format!("{position}, row {}", index + 1),
                record: serde_json::Value::Null,
                stage: "source".to_string(),
            }),
        }
    }
    Ok(PageRecords { batch: Batch::new(schema, rows), rejected, captured: vec![None; captures] })
}

/// What a path leads to.
#[derive(Debug, Clone, Copy)]
enum Target {
    Records,
    Capture(usize),
}

struct Walked {
    rows: ObjectRows,
    records_found: bool,
    captured: Vec<Option<serde_json::Value>>,
}

/// A node of the body, with the paths (what is left of them) that lead
/// through it.
struct NodeSeed<'p, 'o> {
    wanted: Vec<(Target, &'p [String])>,
    out: &'o mut Walked,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.wanted.iter().find(|(_, rest)| rest.is_empty()).map(|(target, _)| *target) {
            Some(Target::Records) => {
                self.out.records_found = true;
                deserializer.deserialize_any(RecordsVisitor { rows: &mut self.out.rows })
            }
            Some(Target::Capture(index)) => {
                self.out.captured[index] = Some(serde_json::Value::deserialize(deserializer)?);
                Ok(())
            }
            None => deserializer.deserialize_any(NodeVisitor { wanted: self.wanted, out: self.out }),
        }
    }
}

struct NodeVisitor<'p, 'o> {
    wanted: Vec<(Target, &'p [String])>,
    out: &'o mut Walked,
}

impl<'p> NodeVisitor<'p, '_> {
    /// The paths that go on through child `key`.
    fn through(&self, key: &str) -> Vec<(Target, &'p [String])> {
        self.wanted.iter().filter(|(_, rest)| rest[0] == key).map(|(target, rest)| (*target, &rest[1..])).collect()
    }
}

/// Scalars on the way are skipped.
macro_rules! skip_scalars {
    ($($method:ident: $type:ty),*) => {
        $(fn $method<E: serde::de::Error>(self, _: $type) -> Result<(), E> { Ok(()) })*
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> { Ok(()) }
    };
}

impl<'de> Visitor<'de> for NodeVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("json")
    }

    skip_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let through = self.through(&key.0);
            if through.is_empty() {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(NodeSeed { wanted: through, out: self.out })?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let through = self.through(&index.to_string());
            let more = if through.is_empty() {
                seq.next_element::<IgnoredAny>()?.is_some()
            } else {
                seq.next_element_seed(NodeSeed { wanted: through, out: self.out })?.is_some()
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }
}

/// The value at the records path: an array of records, one object, or null.
struct RecordsVisitor<'o> {
    rows: &'o mut ObjectRows,
}

impl<'de> Visitor<'de> for RecordsVisitor<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of records, an object or null at the records path")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(RecordSeed { rows: &mut *self.rows })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.rows.push_entries(map)
    }
}

/// One item of the records array, added to the rows: an object, or a scalar
/// wrapped as `value`.
struct RecordSeed<'o> {
    rows: &'o mut ObjectRows,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(RecordVisitor { rows: self.rows })
    }
}

struct RecordVisitor<'o> {
    rows: &'o mut ObjectRows,
}

impl RecordVisitor<'_> {
    fn wrapped(self, value: serde_json::Value) {
        self.rows.push(OrderedObject(vec![(Key("value".into()), value)]));
    }
}

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.rows.push_entries(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let items = serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        self.wrapped(items);
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<(), E> {
        self.wrapped(value.into());
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<(), E> {
        self.wrapped(value.into());
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<(), E> {
        self.wrapped(value.into());
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        self.wrapped(value.into());
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<(), E> {
        self.wrapped(value.into());
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.wrapped(serde_json::Value::Null);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn path(text: &str) -> JsonPath {
        JsonPath::parse(text).unwrap()
    }

    fn rows(page: &PageRecords) -> Vec<serde_json::Value> {
        page.batch.rows.iter().map(|row| page.batch.row_to_json(row)).collect()
    }

    #[test]
    fn records_and_captures_from_one_pass() {
        let body = br#"{"meta":{"total":3,"skip":[1,2]},"data":{"items":[{"id":1,"tags":["a"]},{"id":2,"x":{"y":null}}]},"next":"c2"}"#;
        let page = read_body(
            ResponseFormat::Json,
            body,
            &path("data.items"),
            &[path("meta.total"), path("next"), path("gone")],
            "page 1",
        )
        .unwrap();
        assert_eq!(
            rows(&page),
            vec![json!({"id": 1, "tags": ["a"], "x": null}), json!({"id": 2, "tags": null, "x": {"y": null}})]
        );
        assert_eq!(page.batch.schema.fields[1].data_type, DataType::Json);
        assert_eq!(page.captured, vec![Some(json!(3)), Some(json!("c2")), None]);
    }

    #[test]
    fn root_arrays_objects_scalars_and_indexes() {
        let page = read_body(ResponseFormat::Json, br#"[{"a":1},2,"three",[4]]"#, &path(""), &[], "p").unwrap();
        assert_eq!(
            rows(&page),
            vec![
                json!({"a": 1, "value": null}),
                json!({"a": null, "value": 2}),
                json!({"a": null, "value": "three"}),
                json!({"a": null, "value": [4]})
            ]
        );
        let page = read_body(ResponseFormat::Json, br#"{"data":{"id":7}}"#, &path("data"), &[], "p").unwrap();
        assert_eq!(rows(&page), vec![json!({"id": 7})]);
        let page =
            read_body(ResponseFormat::Json, br#"{"results":[{"rows":[{"n":1}]}]}"#, &path("results.0.rows"), &[], "p")
                .unwrap();
        assert_eq!(rows(&page), vec![json!({"n": 1})]);
        let page = read_body(ResponseFormat::Json, br#"{"items":null}"#, &path("items"), &[], "p").unwrap();
        assert_eq!(page.count(), 0);
    }

    #[test]
    fn malformed_and_misplaced_bodies_are_errors() {
        let error = read_body(ResponseFormat::Json, br#"{"items":[{"id":1},"#, &path("items"), &[], "p").unwrap_err();
        assert!(error.0.starts_with("invalid json: "), "{error:?}");
        let error = read_body(ResponseFormat::Json, br#"{"items":[]} trailing"#, &path("items"), &[], "p").unwrap_err();
        assert!(error.0.starts_with("invalid json: "), "{error:?}");
        let error = read_body(ResponseFormat::Json, br#"{"data":[]}"#, &path("items"), &[], "p").unwrap_err();
        assert!(error.0.contains("nothing at `items`"), "{error:?}");
        let error = read_body(ResponseFormat::Json, br#"{"items":5}"#, &path("items"), &[], "p").unwrap_err();
        assert!(error.0.contains("an array of records"), "{error:?}");
    }

    #[test]
    fn ndjson_and_csv_reject_bad_lines_with_their_position() {
        let page = read_body(
            ResponseFormat::Ndjson,
            b"{\"id\":1}\n\nnot json\n{\"id\":2}\n",
            &JsonPath::default(),
            &[],
            "page 4",
        )
        .unwrap();
        assert_eq!(rows(&page), vec![json!({"id": 1}), json!({"id": 2})]);
        assert_eq!(page.rejected.len(), 1);
        assert_eq!(page.rejected[0].position, "page 4, line 3");
        let page =
            read_body(ResponseFormat::Csv, b"id,name\n1,ann\n2\n3,cy\n", &JsonPath::default(), &[], "page 1").unwrap();
        assert_eq!(rows(&page), vec![json!({"id": "1", "name": "ann"}), json!({"id": "3", "name": "cy"})]);
        assert_eq!(page.rejected[0].position, "page 1, row 2");
    }

    #[test]
    fn paths_are_dotted_keys() {
        assert_eq!(path("a.b.1").to_string(), "a.b.1");
        assert_eq!(JsonPath::default().to_string(), "(the whole body)");
        assert!(JsonPath::parse("a..b").is_err());
    }

    proptest! {
        #[test]
        fn any_body_reads_without_panic(body in proptest::collection::vec(any::<u8>(), 0..200), records in "[a-z.0-9]{0,8}") {
            let records = JsonPath::parse(&records).unwrap_or_default();
            for format in [ResponseFormat::Json, ResponseFormat::Ndjson, ResponseFormat::Csv] {
                let _ = read_body(format, &body, &records, &[path("a.b")], "p");
            }
        }

        #[test]
        fn generated_json_pages_read_back(items in proptest::collection::vec((any::<i64>(), "[a-z]{0,6}"), 0..20)) {
            let records: Vec<_> = items.iter().map(|(id, name)| json!({"id": id, "name": name})).collect();
            let body = serde_json::to_vec(&json!({"page": {"items": records}, "total": items.len()})).unwrap();
            let page = read_body(ResponseFormat::Json, &body, &path("page.items"), &[path("total")], "p").unwrap();
            prop_assert_eq!(rows(&page), records);
            prop_assert_eq!(page.captured[0].clone(), Some(json!(items.len())));
        }
    }
}
