//! Conformance and behaviour tests of the `file` source, the `file` sink and
//! the `stdout` sink.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use haul_collect::file::{FileSinkPlugin, FileSourcePlugin};
use haul_collect::stdout::StdoutSinkPlugin;
use haul_collect_core::job::Mode;
use haul_collect_core::registry::{Plugin, PluginRegistry};
use haul_collect_core::testsuite::{self, assert_resume_yields_rest, assert_sink_commits, numbered_batch, read_all};
use haul_collect_core::{Batch, DataType, Field, PlanContext, Schema, Sink, Source, Value};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn source(options: Json) -> Arc<dyn Source> {
    FileSourcePlugin.build(serde_json::from_value(options).unwrap()).unwrap()
}

fn sink(options: Json) -> Arc<dyn Sink> {
    FileSinkPlugin.build(serde_json::from_value(options).unwrap()).unwrap()
}

fn path_of(path: &Path) -> Json {
    json!(path.display().to_string())
}

fn full() -> PlanContext {
    testsuite::full_context(2)
}

fn incremental(previous_state: Option<Json>) -> PlanContext {
    PlanContext { mode: Mode::Incremental, previous_state, ..testsuite::full_context(2) }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn numbered_jsonl(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("{{\"id\":{i},\"name\":\"n{i}\"}}\n")).collect()
}

fn numbered_records(first: usize, count: usize) -> Vec<Json> {
    (first..first + count).map(|i| json!({"id": i, "name": format!("n{i}")})).collect()
}

#[tokio::test]
async fn csv_with_header_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.csv");
    std::fs::write(&file, "id,name\n1,ann\n2,bob\n3,cy\n4,\n5,eve").unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let records = assert_resume_yields_rest(source.as_ref(), &full(), 2).await.unwrap();
    assert_eq!(
        records,
        vec![
            json!({"id": "1", "name": "ann"}),
            json!({"id": "2", "name": "bob"}),
            json!({"id": "3", "name": "cy"}),
            json!({"id": "4", "name": ""}),
            json!({"id": "5", "name": "eve"}),
        ]
    );
}

#[tokio::test]
async fn csv_with_bom_delimiter_and_quoted_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.csv");
    let text = "\u{feff}id;note\r\n1;\"a;b\"\r\n2;\"line one\nline two\"\r\n\r\n3;\"say \"\"hi\"\"\"\r\n4;\r\n";
    std::fs::write(&file, text).unwrap();
    let source = source(json!({"path": path_of(&file), "delimiter": ";", "empty_as_null": true}));
    for batch_size in [1, 2, 10] {
        let records = assert_resume_yields_rest(source.as_ref(), &full(), batch_size).await.unwrap();
        assert_eq!(
            records,
            vec![
                json!({"id": "1", "note": "a;b"}),
                json!({"id": "2", "note": "line one\nline two"}),
                json!({"id": "3", "note": "say \"hi\""}),
                json!({"id": "4", "note": null}),
            ]
        );
    }
}

#[tokio::test]
async fn csv_without_header_takes_the_given_columns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.txt");
    std::fs::write(&file, "1,a\n2,b\n").unwrap();
    let source = source(json!({"path": path_of(&file), "format": "csv", "header": false, "columns": ["n", "s"]}));
    let records = assert_resume_yields_rest(source.as_ref(), &full(), 1).await.unwrap();
    assert_eq!(records, vec![json!({"n": "1", "s": "a"}), json!({"n": "2", "s": "b"})]);
}

#[tokio::test]
async fn jsonl_keeps_nesting_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let text = "{\"id\":1,\"tags\":[\"a\"],\"meta\":{\"k\":null},\"score\":1.5}\n{\"id\":2,\"extra\":true}\n\n{\"id\":\"three\"}\n";
    std::fs::write(&file, text).unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let records = assert_resume_yields_rest(source.as_ref(), &full(), 1).await.unwrap();
    assert_eq!(
        records,
        vec![
            json!({"id": 1, "tags": ["a"], "meta": {"k": null}, "score": 1.5}),
            json!({"id": 2, "extra": true}),
            json!({"id": "three"}),
        ]
    );

    let plan = source.plan(&full()).await.unwrap();
    let mut reader = source.open(&plan.shards[0], None, 10).await.unwrap();
    let batch = reader.next_batch().await.unwrap().unwrap();
    let names: Vec<_> = batch.batch.schema.names().collect();
    assert_eq!(names, ["id", "tags", "meta", "score", "extra"]);
    let types: Vec<_> = batch.batch.schema.fields.iter().map(|field| field.data_type).collect();
    assert_eq!(types, [DataType::Json, DataType::Json, DataType::Json, DataType::Float, DataType::Bool]);
    assert_eq!(
        batch.batch.rows[1],
        vec![Value::Json(json!(2)), Value::Null, Value::Null, Value::Null, Value::Bool(true)]
    );
    assert_eq!(batch.bytes_read, Some(text.len() as u64));
    assert!(reader.next_batch().await.unwrap().is_none());
}

#[tokio::test]
async fn gzip_csv_resumes_in_the_decompressed_stream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("numbers.csv.gz");
    let text: String =
        std::iter::once("n,square\n".to_string()).chain((0..50).map(|i| format!("{i},{}\n", i * i))).collect();
    std::fs::write(&file, gzip(text.as_bytes())).unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let records = assert_resume_yields_rest(source.as_ref(), &full(), 7).await.unwrap();
    assert_eq!(records.len(), 50);
    assert_eq!(records[49], json!({"n": "49", "square": "2401"}));
}

#[tokio::test]
async fn a_glob_reads_every_matching_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for (name, first) in [("b.jsonl", 3), ("a.jsonl", 0), ("c.jsonl.gz", 6)] {
        let text = numbered_jsonl(first, 3);
        let bytes = if name.ends_with(".gz") { gzip(text.as_bytes()) } else { text.into_bytes() };
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    std::fs::write(dir.path().join("ignored.csv"), "x\n1\n").unwrap();
    let source = source(json!({"path": path_of(&dir.path().join("*.jsonl*"))}));
    let plan = source.plan(&full()).await.unwrap();
    let ids: Vec<_> = plan.shards.iter().map(|shard| shard.id.as_str()).collect();
    assert_eq!(ids, ["f0000", "f0001", "f0002"]);
    let records = assert_resume_yields_rest(source.as_ref(), &full(), 2).await.unwrap();
    assert_eq!(records, numbered_records(0, 9));
    source.check().await.unwrap();
}

#[tokio::test]
async fn empty_files_yield_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["empty.csv", "empty.jsonl"] {
        let file = dir.path().join(name);
        std::fs::write(&file, "").unwrap();
        let source = source(json!({"path": path_of(&file)}));
        let read = read_all(source.as_ref(), &full(), 10).await.unwrap();
        assert!(read.records.is_empty() && read.rejected.is_empty(), "{name}: {read:?}");
    }
    let file = dir.path().join("header_only.csv");
    std::fs::write(&file, "a,b\n").unwrap();
    let read = read_all(source(json!({"path": path_of(&file)})).as_ref(), &full(), 10).await.unwrap();
    assert!(read.records.is_empty() && read.rejected.is_empty(), "{read:?}");
}

#[tokio::test]
async fn one_record_and_batch_size_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let batch_size = 4;
    for count in [1, batch_size, batch_size + 1] {
        let file = dir.path().join(format!("n{count}.jsonl"));
        std::fs::write(&file, numbered_jsonl(0, count)).unwrap();
        let source = source(json!({"path": path_of(&file)}));
        let records = assert_resume_yields_rest(source.as_ref(), &full(), batch_size).await.unwrap();
        assert_eq!(records, numbered_records(0, count));
        let plan = source.plan(&full()).await.unwrap();
        let read = testsuite::read_shard(source.as_ref(), &plan.shards[0], None, batch_size).await.unwrap();
        assert_eq!(read.checkpoints.len(), count.div_ceil(batch_size), "{count} records");
        let last = &read.checkpoints.last().unwrap().1;
        assert_eq!(last.0, json!({"offset": numbered_jsonl(0, count).len(), "line": count}));
    }
}

#[tokio::test]
async fn malformed_jsonl_lines_are_rejected_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.jsonl");
    let mut bytes = b"{\"id\":1}\nnot json\n[1,2]\n{\"id\":2}\r\n".to_vec();
    bytes.extend_from_slice(b"{\"id\":\"\xff\"}\n{\"id\":3}\n{\"id\":");
    std::fs::write(&file, &bytes).unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let records = assert_resume_yields_rest(source.as_ref(), &full(), 2).await.unwrap();
    assert_eq!(records, vec![json!({"id": 1}), json!({"id": 2}), json!({"id": 3})]);
    let read = read_all(source.as_ref(), &full(), 2).await.unwrap();
    let rejected: Vec<_> =
        read.rejected.iter().map(|r| (r.position.clone(), r.record.clone(), r.stage.clone())).collect();
    let at = |line: usize| format!("{}:{line}", file.display());
    assert_eq!(
        rejected,
        vec![
            (at(2), json!("not json"), "source".to_string()),
            (at(3), json!("[1,2]"), "source".to_string()),
            (at(5), json!("{\"id\":\"\u{fffd}\"}"), "source".to_string()),
            (at(7), json!("{\"id\":"), "source".to_string()),
        ]
    );
    assert!(read.rejected[0].reason.contains("invalid json"), "{:?}", read.rejected[0]);
    assert!(read.rejected[1].reason.contains("not a json object"), "{:?}", read.rejected[1]);
    assert!(read.rejected[2].reason.contains("utf-8"), "{:?}", read.rejected[2]);
}

#[tokio::test]
async fn malformed_csv_records_are_rejected_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, b"a,b\n1,\"two\nlines\"\n1,2,3\n4\n\xff,5\n6,7\n").unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let records = assert_resume_yields_rest(source.as_ref(), &full(), 3).await.unwrap();
    assert_eq!(records, vec![json!({"a": "1", "b": "two\nlines"}), json!({"a": "6", "b": "7"})]);
    let read = read_all(source.as_ref(), &full(), 3).await.unwrap();
    let positions: Vec<_> = read.rejected.iter().map(|r| r.position.rsplit(':').next().unwrap().to_string()).collect();
    assert_eq!(positions, ["4", "5", "6"]);
    assert_eq!(read.rejected[0].record, json!("1,2,3"));
    assert!(read.rejected[0].reason.contains("expected 2 fields, found 3"), "{:?}", read.rejected[0]);
    assert!(read.rejected[2].reason.contains("utf-8"), "{:?}", read.rejected[2]);
}

#[tokio::test]
async fn rejected_lines_in_a_later_byte_range_know_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ranged.jsonl");
    let mut text = numbered_jsonl(0, 20);
    text.push_str("oops\n");
    text.push_str(&numbered_jsonl(20, 2));
    std::fs::write(&file, &text).unwrap();
    let source = source(json!({"path": path_of(&file), "split_bytes": 64}));
    let plan = source.plan(&full()).await.unwrap();
    assert!(plan.shards.len() > 3, "{plan:?}");
    let read = read_all(source.as_ref(), &full(), 3).await.unwrap();
    assert_eq!(read.records, numbered_records(0, 22));
    assert_eq!(read.rejected.len(), 1);
    assert_eq!(read.rejected[0].position, format!("{}:21", file.display()));
}

/// Reads every shard of a JSON Lines file split into byte ranges of
/// `split_bytes` and checks each line is read exactly once, in order.
async fn check_split_file(
    lines: &[String],
    blank_every: usize,
    line_end: &str,
    final_line_end: bool,
    split_bytes: u64,
    batch_size: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("split.jsonl");
    let mut text = String::new();
    for (index, line) in lines.iter().enumerate() {
        text.push_str(&format!("{{\"i\":{index},\"s\":\"{line}\"}}{line_end}"));
        if blank_every > 0 && index % blank_every == 0 {
            text.push_str(line_end);
        }
    }
    if !final_line_end {
        text.truncate(text.trim_end().len());
    }
    std::fs::write(&file, &text).unwrap();
    let source = source(json!({"path": path_of(&file), "split_bytes": split_bytes}));
    let records = assert_resume_yields_rest(source.as_ref(), &full(), batch_size).await.unwrap();
    let expected: Vec<_> = lines.iter().enumerate().map(|(i, s)| json!({"i": i, "s": s})).collect();
    assert_eq!(records, expected, "split_bytes {split_bytes}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn byte_ranges_read_every_line_once(
        lines in proptest::collection::vec("[a-z ]{0,40}", 0..40),
        blank_every in 0usize..5,
        crlf in any::<bool>(),
        final_line_end in any::<bool>(),
        split_bytes in 1u64..200,
        batch_size in 1usize..6,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let line_end = if crlf { "\r\n" } else { "\n" };
        runtime.block_on(check_split_file(&lines, blank_every, line_end, final_line_end, split_bytes, batch_size));
    }
}

#[tokio::test]
async fn csv_byte_ranges_take_the_header_from_the_file_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("split.csv");
    let text: String =
        std::iter::once("\u{feff}id,word\r\n".to_string()).chain((0..30).map(|i| format!("{i},w{i}\r\n"))).collect();
    std::fs::write(&file, text).unwrap();
    let source = source(json!({"path": path_of(&file), "split_bytes": 25}));
    let plan = source.plan(&full()).await.unwrap();
    assert!(plan.shards.len() > 5);
    assert_eq!(plan.shards[1].id, "f0000-r0001");
    assert_eq!(plan.shards[1].descriptor["start"], json!(25));
    let records = assert_resume_yields_rest(source.as_ref(), &full(), 4).await.unwrap();
    let expected: Vec<_> = (0..30).map(|i| json!({"id": i.to_string(), "word": format!("w{i}")})).collect();
    assert_eq!(records, expected);
}

#[tokio::test]
async fn incremental_runs_read_only_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.csv");
    std::fs::write(&first, "id,v\n1,x\n2,y\n").unwrap();
    let source = source(json!({"path": path_of(&dir.path().join("*.csv"))}));

    let plan = source.plan(&incremental(None)).await.unwrap();
    let read = read_all(source.as_ref(), &incremental(None), 10).await.unwrap();
    assert_eq!(read.records.len(), 2);
    let state = plan.next_state.unwrap();
    assert_eq!(state["files"][first.display().to_string()]["size"], json!(13));

    let unchanged = source.plan(&incremental(Some(state.clone()))).await.unwrap();
    assert!(unchanged.shards.is_empty(), "{unchanged:?}");

    std::fs::OpenOptions::new().append(true).open(&first).unwrap().write_all(b"3,z\n4,w\n").unwrap();
    let context = incremental(Some(state));
    let records = assert_resume_yields_rest(source.as_ref(), &context, 1).await.unwrap();
    assert_eq!(records, vec![json!({"id": "3", "v": "z"}), json!({"id": "4", "v": "w"})]);
    let state = source.plan(&context).await.unwrap().next_state.unwrap();

    std::fs::write(dir.path().join("b.csv"), "id,v\n5,q\n").unwrap();
    let records = assert_resume_yields_rest(source.as_ref(), &incremental(Some(state)), 10).await.unwrap();
    assert_eq!(records, vec![json!({"id": "5", "v": "q"})]);
}

#[tokio::test]
async fn incremental_runs_leave_a_half_written_line_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("growing.jsonl");
    std::fs::write(&file, format!("{}{{\"id\":2,\"na", numbered_jsonl(0, 2))).unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let plan = source.plan(&incremental(None)).await.unwrap();
    let read = read_all(source.as_ref(), &incremental(None), 10).await.unwrap();
    assert_eq!(read.records, numbered_records(0, 2));
    assert!(read.rejected.is_empty(), "{:?}", read.rejected);

    // The writer finishes the line and adds another.
    std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"me\":\"n2\"}\n").unwrap();
    std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(numbered_jsonl(3, 1).as_bytes()).unwrap();
    let next = incremental(plan.next_state);
    let records = assert_resume_yields_rest(source.as_ref(), &next, 1).await.unwrap();
    assert_eq!(records, numbered_records(2, 2));
}

#[tokio::test]
async fn a_replaced_file_is_read_again_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rotated.jsonl");
    std::fs::write(&file, numbered_jsonl(0, 2)).unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let state = source.plan(&incremental(None)).await.unwrap().next_state;

    // Rotation: a new, longer file takes the name.
    let replacement = dir.path().join("rotated.jsonl.new");
    std::fs::write(&replacement, numbered_jsonl(10, 3)).unwrap();
    std::fs::rename(&replacement, &file).unwrap();
    let records = assert_resume_yields_rest(source.as_ref(), &incremental(state), 1).await.unwrap();
    assert_eq!(records, numbered_records(10, 3));
}

#[tokio::test]
async fn duplicate_csv_columns_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twice.csv");
    std::fs::write(&file, "id,name,id\n1,a,2\n").unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let plan = source.plan(&full()).await.unwrap();
    let error = format!("{:#}", source.open(&plan.shards[0], None, 10).await.err().unwrap());
    assert!(error.contains("twice.csv") && error.contains("column `id`"), "{error}");
    let columns = serde_json::from_value(json!({"path": "x.csv", "columns": ["a", "a"]})).unwrap();
    let error = FileSourcePlugin.build(columns).err().unwrap().to_string();
    assert!(error.contains("`a`"), "{error}");
}

#[tokio::test]
async fn a_shard_reads_only_the_bytes_present_at_planning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("growing.jsonl");
    std::fs::write(&file, numbered_jsonl(0, 3)).unwrap();
    let source = source(json!({"path": path_of(&file)}));
    let plan = source.plan(&full()).await.unwrap();
    std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(numbered_jsonl(3, 2).as_bytes()).unwrap();
    let read = testsuite::read_shard(source.as_ref(), &plan.shards[0], None, 10).await.unwrap();
    assert_eq!(read.records, numbered_records(0, 3));
}

#[tokio::test]
async fn range_mode_and_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = source(json!({"path": path_of(&dir.path().join("missing.jsonl"))}));
    let error = missing.check().await.unwrap_err();
    assert!(format!("{error:#}").contains("missing.jsonl"), "{error:#}");
    assert!(missing.plan(&full()).await.is_err());
    let nothing = source(json!({"path": path_of(&dir.path().join("*.csv"))}));
    assert!(nothing.check().await.unwrap_err().to_string().contains("no file matches"));

    let context = PlanContext { mode: Mode::Range, ..full() };
    let error = missing.plan(&context).await.unwrap_err();
    assert!(error.to_string().contains("does not support range mode"), "{error}");

    let unknown = serde_json::from_value::<<FileSourcePlugin as Plugin>::Config>(json!({"path": "x", "delim": ";"}));
    assert!(unknown.unwrap_err().to_string().contains("unknown field `delim`"));
    let no_columns = serde_json::from_value(json!({"path": "x.csv", "header": false})).unwrap();
    assert!(FileSourcePlugin.build(no_columns).is_err());
}

#[test]
fn the_plugins_are_registered_with_documented_options() {
    let mut registry = PluginRegistry::default();
    haul_collect::register_builtin(&mut registry);
    let infos = registry.infos();
    for kind in ["file", "stdout"] {
        assert!(infos.iter().any(|info| info.kind == kind), "{kind} is not registered");
    }
    let source = FileSourcePlugin.info();
    let names: Vec<_> = source.options.iter().map(|option| option.name).collect();
    assert_eq!(
        names,
        ["path", "format", "compression", "delimiter", "quote", "header", "columns", "empty_as_null", "split_bytes"]
    );
    assert_eq!(FileSinkPlugin.info().options.len(), 4);
    assert!(StdoutSinkPlugin.info().options.is_empty());
}

// ---- sinks ----

/// The committed parts in `dir` with `extension`; panics on a leftover temporary file.
fn parts(dir: &Path, extension: &str) -> Vec<std::path::PathBuf> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(extension) && !name.starts_with('.') {
            parts.push(path);
        }
    }
    parts.sort();
    parts
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_str().unwrap().to_string())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

fn read_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let mut text = String::new();
    if path.extension().is_some_and(|ext| ext == "gz") {
        flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
    } else {
        text = String::from_utf8(bytes).unwrap();
    }
    text
}

fn sink_batches() -> Vec<Batch> {
    vec![numbered_batch(1, 3), numbered_batch(4, 2), numbered_batch(6, 4)]
}

#[tokio::test]
async fn jsonl_sink_commits_idempotently() {
    for (compression, extension) in [("none", ".jsonl"), ("gzip", ".jsonl.gz")] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let sink = sink(json!({"path": path_of(&out), "format": "jsonl", "compression": compression}));
        let read_back = || async {
            let mut rows = Vec::new();
            for part in parts(&out, extension) {
                rows.extend(read_text(&part).lines().map(|line| serde_json::from_str::<Json>(line).unwrap()));
            }
            anyhow::Ok(rows)
        };
        assert_sink_commits(sink.as_ref(), &sink_batches(), read_back).await.unwrap();
        let names: Vec<_> =
            parts(&out, extension).iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
        assert_eq!(names[0], format!("part-run-1-shard-0-000001{extension}"));
        assert_eq!(names.len(), 3);
        assert!(temp_files(&out).is_empty(), "{:?}", temp_files(&out));
        assert_eq!(sink.describe_output(), out.display().to_string());
    }
}

/// Reads CSV parts back as records `{id: int, name: string}`.
fn csv_records(dir: &Path, extension: &str) -> Vec<Json> {
    let mut rows = Vec::new();
    for part in parts(dir, extension) {
        let text = read_text(&part);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap(), vec!["id", "name"]);
        for record in reader.records() {
            let record = record.unwrap();
            rows.push(json!({"id": record[0].parse::<i64>().unwrap(), "name": &record[1]}));
        }
    }
    rows
}

#[tokio::test]
async fn csv_sink_commits_idempotently() {
    for (compression, extension) in [("none", ".csv"), ("gzip", ".csv.gz")] {
        let dir = tempfile::tempdir().unwrap();
        let sink =
            sink(json!({"path": path_of(dir.path()), "format": "csv", "compression": compression, "prefix": "p"}));
        let read_back = || async { anyhow::Ok(csv_records(dir.path(), extension)) };
        assert_sink_commits(sink.as_ref(), &sink_batches(), read_back).await.unwrap();
        assert!(temp_files(dir.path()).is_empty());
    }
}

#[tokio::test]
async fn csv_sink_maps_later_batches_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(json!({"path": path_of(dir.path()), "format": "csv"}));
    let context =
        haul_collect_core::plugin::WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
    let mut writer = sink.open(&context).await.unwrap();
    writer.write(&numbered_batch(1, 1)).await.unwrap();
    let swapped = Schema::new(vec![Field::new("name", DataType::String)]);
    writer.write(&Batch::new(Arc::new(swapped), vec![vec![Value::from("only-name")]])).await.unwrap();
    writer.commit(1).await.unwrap();
    assert_eq!(read_text(&parts(dir.path(), ".csv")[0]), "id,name\n1,name-1\n,only-name\n");

    // A new field starts a new part, with its own header, in the same commit.
    writer.write(&numbered_batch(2, 1)).await.unwrap();
    let more = Schema::new(vec![Field::new("id", DataType::Int), Field::new("surprise", DataType::Int)]);
    writer.write(&Batch::new(Arc::new(more), vec![vec![Value::Int(3), Value::Int(9)]])).await.unwrap();
    writer.commit(2).await.unwrap();
    let names: Vec<_> =
        parts(dir.path(), ".csv").iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, ["part-r-s-000001.csv", "part-r-s-000002-1.csv", "part-r-s-000002-2.csv"]);
    assert_eq!(read_text(&dir.path().join(&names[1])), "id,name\n2,name-2\n");
    assert_eq!(read_text(&dir.path().join(&names[2])), "id,surprise\n3,9\n");

    // Repeating commit 2 with one part replaces both earlier parts.
    writer.write(&numbered_batch(2, 2)).await.unwrap();
    writer.commit(2).await.unwrap();
    let names: Vec<_> =
        parts(dir.path(), ".csv").iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, ["part-r-s-000001.csv", "part-r-s-000002.csv"]);

    writer.write(&numbered_batch(1, 1)).await.unwrap();
    let unknown = Schema::new(vec![Field::new("other", DataType::Int)]);
    writer.write(&Batch::new(Arc::new(unknown), vec![vec![Value::Int(1)]])).await.unwrap();
    writer.abort().await.unwrap();
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(parts(dir.path(), ".csv").len(), 2);
}

#[tokio::test]
async fn parquet_parts_follow_jsonl_batches_that_change_shape() {
    use arrow::array::{Array, Float64Array};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // The first batch types `score` as float; the second has integers only; the third adds a key.
    std::fs::write(
        &input,
        "{\"id\":1,\"score\":1.5}\n{\"id\":2,\"score\":2}\n{\"id\":3,\"score\":3.5,\"tag\":\"x\"}\n",
    )
    .unwrap();
    let source = source(json!({"path": path_of(&input)}));
    let out = dir.path().join("out");
    let sink = sink(json!({"path": path_of(&out), "format": "parquet"}));
    let context =
        haul_collect_core::plugin::WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
    let mut writer = sink.open(&context).await.unwrap();
    let plan = source.plan(&full()).await.unwrap();
    let mut reader = source.open(&plan.shards[0], None, 1).await.unwrap();
    while let Some(batch) = reader.next_batch().await.unwrap() {
        writer.write(&batch.batch).await.unwrap();
    }
    writer.commit(1).await.unwrap();
    let parts = parts(&out, ".parquet");
    assert_eq!(parts.len(), 2, "{parts:?}");
    let mut scores = Vec::new();
    for part in &parts {
        let file = std::fs::File::open(part).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("score").unwrap();
            let floats = column.as_any().downcast_ref::<Float64Array>().unwrap();
            scores.extend((0..floats.len()).map(|i| floats.value(i)));
        }
    }
    assert_eq!(scores, [1.5, 2.0, 3.5]);
    assert!(temp_files(&out).is_empty());
}

/// Reads Parquet parts back as records `{id: int, name: string}`.
fn parquet_records(dir: &Path) -> Vec<Json> {
    use arrow::array::{Array, Int64Array, StringArray};
    let mut rows = Vec::new();
    for part in parts(dir, ".parquet") {
        let file = std::fs::File::open(part).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let names = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..batch.num_rows() {
                assert!(!ids.is_null(i));
                rows.push(json!({"id": ids.value(i), "name": names.value(i)}));
            }
        }
    }
    rows
}

#[tokio::test]
async fn parquet_sink_commits_idempotently() {
    for compression in ["snappy", "zstd", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(json!({"path": path_of(dir.path()), "format": "parquet", "compression": compression}));
        let read_back = || async { anyhow::Ok(parquet_records(dir.path())) };
        assert_sink_commits(sink.as_ref(), &sink_batches(), read_back).await.unwrap();
        assert!(temp_files(dir.path()).is_empty());
    }
}

#[tokio::test]
async fn parquet_sink_maps_every_type() {
    use arrow::datatypes::{DataType as Arrow, TimeUnit};
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(json!({"path": path_of(dir.path()), "format": "parquet"}));
    let types = [
        (DataType::Bool, Value::Bool(true), Arrow::Boolean),
        (DataType::Int, Value::Int(-3), Arrow::Int64),
        (DataType::Float, Value::Float(0.5), Arrow::Float64),
        (DataType::Decimal, Value::Decimal("1.20".into()), Arrow::Utf8),
        (DataType::String, Value::from("s"), Arrow::Utf8),
        (DataType::Bytes, Value::Bytes(vec![0, 255]), Arrow::Binary),
        (DataType::Date, Value::Date(chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()), Arrow::Date32),
        (
            DataType::Timestamp,
            Value::Timestamp(chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap().and_hms_opt(1, 2, 3).unwrap()),
            Arrow::Timestamp(TimeUnit::Microsecond, None),
        ),
        (
            DataType::TimestampTz,
            Value::TimestampTz(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            Arrow::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ),
        (DataType::Json, Value::Json(json!({"a": [1]})), Arrow::Utf8),
    ];
    let schema = Schema::new(types.iter().enumerate().map(|(i, (t, _, _))| Field::new(format!("c{i}"), *t)).collect());
    let row: Vec<Value> = types.iter().map(|(_, v, _)| v.clone()).collect();
    let nulls = vec![Value::Null; types.len()];
    let context =
        haul_collect_core::plugin::WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
    let mut writer = sink.open(&context).await.unwrap();
    writer.write(&Batch::new(Arc::new(schema), vec![row, nulls])).await.unwrap();
    writer.commit(1).await.unwrap();

    let file = std::fs::File::open(&parts(dir.path(), ".parquet")[0]).unwrap();
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let read_types: Vec<_> = builder.schema().fields().iter().map(|field| field.data_type().clone()).collect();
    let expected: Vec<_> = types.iter().map(|(_, _, arrow)| arrow.clone()).collect();
    assert_eq!(read_types, expected);
    let batch = builder.build().unwrap().next().unwrap().unwrap();
    assert_eq!(batch.num_rows(), 2);
    let json_column = batch.column(9).as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    assert_eq!(json_column.value(0), "{\"a\":[1]}");
    assert!(batch.columns().iter().all(|column| column.null_count() == 1));
}

#[tokio::test]
async fn a_commit_without_writes_makes_no_file_and_abort_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/out");
    let sink = sink(json!({"path": path_of(&out), "format": "jsonl"}));
    sink.check().await.unwrap();
    let context =
        haul_collect_core::plugin::WriterContext { job: "j".into(), run_id: "r".into(), shard_id: "s".into() };
    let mut writer = sink.open(&context).await.unwrap();
    writer.commit(1).await.unwrap();
    writer.write(&numbered_batch(1, 0)).await.unwrap();
    writer.commit(2).await.unwrap();
    writer.write(&numbered_batch(1, 2)).await.unwrap();
    writer.abort().await.unwrap();
    writer.write(&numbered_batch(1, 2)).await.unwrap();
    drop(writer);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn sink_options_are_checked() {
    let parquet_gzip =
        serde_json::from_value(json!({"path": "o", "format": "parquet", "compression": "gzip"})).unwrap();
    assert!(FileSinkPlugin.build(parquet_gzip).is_err());
    let csv_zstd = serde_json::from_value(json!({"path": "o", "format": "csv", "compression": "zstd"})).unwrap();
    assert!(FileSinkPlugin.build(csv_zstd).is_err());
    let no_format = serde_json::from_value::<<FileSinkPlugin as Plugin>::Config>(json!({"path": "o"}));
    assert!(no_format.is_err());
    let stdout_options = serde_json::from_value::<<StdoutSinkPlugin as Plugin>::Config>(json!({"path": "o"}));
    assert!(stdout_options.is_err());
}
