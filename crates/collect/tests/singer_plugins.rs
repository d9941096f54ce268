//! Tests of the `singer` source and sink: against the real `tap-jsonl` and
//! `target-jsonl` (installed by `scripts/test`, found through
//! `HAUL_SINGER_BIN`), and against the small Python taps and targets in
//! `tests/singer/` for resume and misbehaviour.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use haul_collect::singer::{SingerSinkConfig, SingerSinkPlugin, SingerSourceConfig, SingerSourcePlugin};
use haul_collect_core::job::Mode;
use haul_collect_core::plugin::WriterContext;
use haul_collect_core::registry::Plugin;
use haul_collect_core::testsuite::{
    assert_resume_yields_rest, assert_sink_commits, full_context, numbered_batch, read_all, read_shard,
};
use haul_collect_core::{Sink, Source};
use serde_json::{Value, json};

/// A real tap or target; the test fails when the test script did not provide it.
fn installed(name: &str) -> String {
    let folder = std::env::var("HAUL_SINGER_BIN").expect(
        "HAUL_SINGER_BIN is not set: run the tests through scripts/test, which installs tap-jsonl and target-jsonl",
    );
    let path = Path::new(&folder).join(name);
    assert!(path.is_file(), "`{name}` is missing from HAUL_SINGER_BIN ({folder}): run scripts/test to install it");
    path.to_string_lossy().into_owned()
}

fn fake(script: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/singer").join(script).to_string_lossy().into_owned()
}

fn source(options: Value) -> Arc<dyn Source> {
    let config: SingerSourceConfig = serde_json::from_value(options).unwrap();
    SingerSourcePlugin.build(config).unwrap()
}

fn fake_tap(config: Value) -> Arc<dyn Source> {
    source(json!({"command": "python3", "args": [fake("fake_tap.py")], "config": config, "idle_timeout": "20s"}))
}

fn sink(options: Value) -> Arc<dyn Sink> {
    let config: SingerSinkConfig = serde_json::from_value(options).unwrap();
    SingerSinkPlugin.build(config).unwrap()
}

fn field(records: &[Value], name: &str) -> Vec<Value> {
    records.iter().map(|record| record[name].clone()).collect()
}

fn ids(range: std::ops::RangeInclusive<i64>) -> Vec<Value> {
    range.map(|id| json!(id)).collect()
}

fn read_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(|line| serde_json::from_str(line).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

fn writer_context() -> WriterContext {
    WriterContext { job: "users".into(), run_id: "run-1".into(), shard_id: "shard-0".into() }
}

#[tokio::test]
async fn tap_jsonl_records_become_typed_rows() {
    let folder = tempfile::tempdir().unwrap();
    let input = folder.path().join("users.jsonl");
    std::fs::write(
        &input,
        "{\"id\":1,\"name\":\"ada\",\"at\":\"2024-01-02T04:04:05+01:00\",\"tags\":[\"x\"]}\n\
         {\"id\":2,\"name\":null,\"at\":\"2024-01-03T03:04:05Z\",\"tags\":[]}\n\
         {\"id\":3,\"name\":\"cy\",\"at\":\"2024-01-04T03:04:05Z\",\"tags\":[\"y\"]}\n",
    )
    .unwrap();
    let tap = source(json!({
        "command": installed("tap-jsonl"),
        "config": {"path": input.to_string_lossy(), "stream_name": "users"},
    }));
    let read = read_all(tap.as_ref(), &full_context(1), 2).await.unwrap();
    assert!(read.rejected.is_empty(), "{:?}", read.rejected);
    assert_eq!(field(&read.records, "_stream"), vec![json!("users"); 3]);
    assert_eq!(field(&read.records, "id"), ids(1..=3));
    assert_eq!(field(&read.records, "name"), vec![json!("ada"), Value::Null, json!("cy")]);
    assert_eq!(
        field(&read.records, "at"),
        vec![json!("2024-01-02T03:04:05Z"), json!("2024-01-03T03:04:05Z"), json!("2024-01-04T03:04:05Z")]
    );
    assert_eq!(field(&read.records, "tags"), vec![json!(["x"]), json!([]), json!(["y"])]);
}

#[tokio::test]
async fn resuming_at_each_state_yields_the_rest() {
    let tap = fake_tap(json!({"records": 9, "state_every": 2}));
    let records = assert_resume_yields_rest(tap.as_ref(), &full_context(4), 2).await.unwrap();
    assert_eq!(field(&records, "id"), ids(1..=9));

    let plan = tap.plan(&full_context(4)).await.unwrap();
    assert_eq!(plan.shards.len(), 1);
    let read = read_shard(tap.as_ref(), &plan.shards[0], None, 2).await.unwrap();
    let (_, last) = read.checkpoints.last().unwrap();
    assert_eq!(last.0, json!({"state": {"bookmark": 8}, "records_since_state": 1, "complete": true}));
}

#[tokio::test]
async fn records_after_the_last_state_are_read_again_on_resume() {
    let tap = fake_tap(json!({"records": 5, "state_every": 3}));
    let plan = tap.plan(&full_context(1)).await.unwrap();
    let full = read_shard(tap.as_ref(), &plan.shards[0], None, 2).await.unwrap();
    let cuts: Vec<_> =
        full.checkpoints.iter().map(|(consumed, checkpoint)| (*consumed, checkpoint.0.clone())).collect();
    assert_eq!(
        cuts,
        vec![
            (2, json!({"state": null, "records_since_state": 2, "complete": false})),
            (3, json!({"state": {"bookmark": 3}, "records_since_state": 0, "complete": false})),
            (5, json!({"state": {"bookmark": 3}, "records_since_state": 2, "complete": true})),
        ]
    );
    let rest = read_shard(tap.as_ref(), &plan.shards[0], Some(&full.checkpoints[0].1), 2).await.unwrap();
    assert_eq!(field(&rest.records, "id"), ids(1..=5), "no STATE yet: the tap starts over");
    let rest = read_shard(tap.as_ref(), &plan.shards[0], Some(&full.checkpoints[1].1), 2).await.unwrap();
    assert_eq!(field(&rest.records, "id"), ids(4..=5));
    let rest = read_shard(tap.as_ref(), &plan.shards[0], Some(&full.checkpoints[2].1), 2).await.unwrap();
    assert!(rest.records.is_empty() && rest.checkpoints.is_empty(), "a complete shard reads nothing");
}

#[tokio::test]
async fn incremental_runs_start_the_tap_from_the_job_state() {
    let tap = fake_tap(json!({"records": 6, "state_every": 1}));
    let mut context = full_context(1);
    context.mode = Mode::Incremental;
    context.previous_state = Some(json!({"bookmark": 4}));
    let read = read_all(tap.as_ref(), &context, 10).await.unwrap();
    assert_eq!(field(&read.records, "id"), ids(5..=6));
    context.mode = Mode::Range;
    assert!(tap.plan(&context).await.unwrap_err().to_string().contains("range mode"));
}

#[tokio::test]
async fn bad_lines_are_rejected_with_their_line() {
    let tap = fake_tap(json!({"behaviour": "bad_lines"}));
    let read = read_all(tap.as_ref(), &full_context(1), 10).await.unwrap();
    assert_eq!(field(&read.records, "id"), ids(1..=2));
    let rejected: Vec<_> = read.rejected.iter().map(|r| (r.position.as_str(), r.stage.as_str())).collect();
    assert_eq!(
        rejected,
        vec![
            ("stdout line 1", "source"),
            ("stdout line 3", "source"),
            ("stdout line 4", "source"),
            ("stdout line 6", "source")
        ]
    );
    assert_eq!(read.rejected[0].reason, "RECORD of stream `users` before its SCHEMA");
    assert_eq!(read.rejected[0].record["id"], json!(0));
    assert!(read.rejected[1].reason.starts_with("invalid singer message"), "{}", read.rejected[1].reason);
    assert_eq!(read.rejected[1].record, json!("this is not json"));
    assert!(read.rejected[2].reason.contains("unknown variant `BOGUS`"), "{}", read.rejected[2].reason);
    assert_eq!(read.rejected[3].reason, "field `at`: \"yesterday\" is not a valid date-time (RFC 3339)");
}

#[tokio::test]
async fn streams_go_in_separate_batches_and_can_be_selected() {
    let tap = fake_tap(json!({"records": 2, "second_stream": true, "state_every": 2}));
    let plan = tap.plan(&full_context(1)).await.unwrap();
    let read = read_shard(tap.as_ref(), &plan.shards[0], None, 10).await.unwrap();
    assert_eq!(field(&read.records, "_stream"), vec![json!("users"), json!("events"), json!("users"), json!("events")]);
    let consumed: Vec<_> = read.checkpoints.iter().map(|(consumed, _)| *consumed).collect();
    assert_eq!(consumed, vec![1, 2, 3, 4, 4], "a batch per stream change, then the STATE and the end");
    assert_eq!(read.records[1], json!({"_stream": "events", "event": "event-1"}));

    let only_events = source(json!({
        "command": "python3", "args": [fake("fake_tap.py")], "streams": ["events"],
        "config": {"records": 3, "second_stream": true},
    }));
    let read = read_all(only_events.as_ref(), &full_context(1), 10).await.unwrap();
    assert_eq!(field(&read.records, "event"), vec![json!("event-1"), json!("event-2"), json!("event-3")]);
    assert!(read.rejected.is_empty());
}

#[tokio::test]
async fn a_failing_tap_reports_its_status_and_stderr() {
    let tap = fake_tap(json!({"behaviour": "fail"}));
    let error = read_all(tap.as_ref(), &full_context(1), 10).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("`python3` exited with status 3"), "{message}");
    assert!(message.contains("boom: credentials rejected"), "{message}");
}

#[tokio::test]
async fn a_silent_tap_is_killed_after_the_idle_timeout() {
    let tap = source(json!({
        "command": "python3", "args": [fake("fake_tap.py")], "config": {"behaviour": "hang"}, "idle_timeout": "1s",
    }));
    let started = std::time::Instant::now();
    let error = read_all(tap.as_ref(), &full_context(1), 10).await.unwrap_err();
    assert!(format!("{error:#}").contains("`python3` produced no output for 1s"), "{error:#}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[tokio::test]
async fn check_finds_missing_executables_and_variables() {
    let missing = source(json!({"command": "haul-no-such-tap"}));
    assert!(missing.check().await.unwrap_err().to_string().contains("not on PATH"));
    let unset = source(json!({"command": "python3", "config": {"token": "${env:HAUL_SINGER_UNSET_TOKEN}"}}));
    let message = format!("{:#}", unset.check().await.unwrap_err());
    assert_eq!(message, "in `config`: environment variable `HAUL_SINGER_UNSET_TOKEN` is not set");
}

#[tokio::test]
async fn commits_wait_for_the_target_to_echo_the_state() {
    for keep_running in [false, true] {
        let folder = tempfile::tempdir().unwrap();
        let output = folder.path().join("out.jsonl");
        let target = sink(json!({
            "command": "python3", "args": [fake("fake_target.py")], "keep_running": keep_running,
            "config": {"path": output.to_string_lossy()}, "idle_timeout": "20s",
        }));
        let batches = [numbered_batch(1, 3), numbered_batch(4, 2)];
        assert_sink_commits(target.as_ref(), &batches, || async { Ok(read_lines(&output)) }).await.unwrap();
    }
}

#[tokio::test]
async fn target_jsonl_receives_schema_and_records() {
    let folder = tempfile::tempdir().unwrap();
    let target = sink(json!({
        "command": installed("target-jsonl"),
        "config": {"destination_path": folder.path().to_string_lossy(), "do_timestamp_file": false},
    }));
    let mut writer = target.open(&writer_context()).await.unwrap();
    writer.write(&numbered_batch(1, 2)).await.unwrap();
    writer.commit(1).await.unwrap();
    writer.write(&numbered_batch(3, 1)).await.unwrap();
    writer.commit(2).await.unwrap();
    let written = read_lines(&folder.path().join("users.jsonl"));
    assert_eq!(field(&written, "id"), ids(1..=3));
    assert_eq!(written[2], json!({"id": 3, "name": "name-3"}));
}

#[tokio::test]
async fn a_failing_target_reports_its_status_and_stderr() {
    let target = sink(json!({
        "command": "python3", "args": [fake("fake_target.py")], "config": {"behaviour": "fail"}, "idle_timeout": "20s",
    }));
    let mut writer = target.open(&writer_context()).await.unwrap();
    let result = match writer.write(&numbered_batch(1, 2)).await {
        Ok(()) => writer.commit(1).await,
        Err(error) => Err(error),
    };
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("`python3` exited with status 2"), "{message}");
    assert!(message.contains("target exploded"), "{message}");
}
