//! End-to-end tests of the `haul` command on files: a full run, an
//! incremental second run, pause on SIGINT and resume, and the errors a user
//! sees for a bad job file.

mod common {
    pub mod server;
    pub mod workspace;
}

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::server::{csv, output_ids};
use common::workspace::Workspace;

const FILES_TO_JSONL: &str = r#"
mode = "incremental"
parallelism = 2
batch_size = 100
checkpoint_interval = "100ms"

[source]
type = "file"
path = "in/*.csv"

[sink]
type = "file"
path = "out"
format = "jsonl"
"#;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn incremental_runs_collect_only_new_files() {
    let ws = Workspace::new();
    ws.write("job.toml", FILES_TO_JSONL);
    ws.write("in/a.csv", &csv(1, 500));
    ws.write("in/b.csv", &csv(501, 500));

    let first = ws.run(&["run", "job.toml"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stderr(&first).contains("1,000 written"), "{}", stderr(&first));
    assert_eq!(output_ids(&ws.path("out")), (1..=1000).collect::<Vec<_>>());

    ws.write("in/c.csv", &csv(1001, 200));
    let second = ws.run(&["run", "job.toml"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stderr(&second).contains("200 written"), "{}", stderr(&second));
    assert_eq!(output_ids(&ws.path("out")), (1..=1200).collect::<Vec<_>>());

    let third = ws.run(&["run", "job.toml"]);
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(stderr(&third).contains("0 written"), "{}", stderr(&third));
}

#[test]
fn sigint_pauses_and_the_next_run_resumes() {
    let ws = Workspace::new();
    let job = format!("{FILES_TO_JSONL}\n[rate_limit]\nrecords_per_second = 4000\n");
    ws.write("job.toml", &job);
    ws.write("in/a.csv", &csv(1, 10_000));
    ws.write("in/b.csv", &csv(10_001, 10_000));

    let child = ws.haul(&["run", "--progress", "plain", "job.toml"]).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_output(&ws.path("out"), Duration::from_secs(20));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let paused = child.wait_with_output().unwrap();
    assert_eq!(paused.status.code(), Some(130), "{}", stderr(&paused));
    assert!(stderr(&paused).contains("again to resume"), "{}", stderr(&paused));
    let partial = output_ids(&ws.path("out")).len();
    assert!(partial > 0 && partial < 20_000, "paused after {partial} records");

    let resumed = ws.run(&["run", "job.toml"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("resuming run"), "{}", stderr(&resumed));
    assert_eq!(
        output_ids(&ws.path("out")),
        (1..=20_000).collect::<Vec<_>>(),
        "lost or duplicated records across the pause"
    );
}

/// Waits until a committed part file appears in `dir`.
fn wait_for_output(dir: &Path, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        let committed = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().any(|e| !e.file_name().to_string_lossy().starts_with('.')))
            .unwrap_or(false);
        if committed {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no output in {} after {limit:?}", dir.display());
}

#[test]
fn bad_job_files_are_located() {
    let ws = Workspace::new();
    ws.write("typo.toml", &FILES_TO_JSONL.replace("parallelism", "paralelism"));
    let output = ws.run(&["check", "--offline", "typo.toml"]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(text.contains("typo.toml:3:1: unknown field `paralelism`"), "{text}");
    assert!(text.contains("parallelism"), "{text}");

    ws.write("plugin.toml", &FILES_TO_JSONL.replace("format = \"jsonl\"", "format = \"jsonl\"\ncompresion = \"gzip\""));
    let text = stderr(&ws.run(&["check", "--offline", "plugin.toml"]));
    assert!(text.contains("plugin.toml:15:1: unknown field `compresion`"), "{text}");

    ws.write(
        "kind.toml",
        &FILES_TO_JSONL.replace("type = \"file\"\npath = \"out\"", "type = \"fiel\"\npath = \"out\""),
    );
    let text = stderr(&ws.run(&["check", "--offline", "kind.toml"]));
    assert!(text.contains("kind.toml:12:"), "{text}");
    assert!(text.contains("unknown sink type `fiel`"), "{text}");
}

#[test]
fn secrets_from_the_environment_are_never_printed() {
    let ws = Workspace::new();
    let job = r#"
[source]
type = "sql"
url = "postgres://postgres:${env:HAUL_TEST_PASSWORD}@127.0.0.1:1/test"
table = "missing"

[sink]
type = "stdout"
"#;
    ws.write("job.toml", job);
    let output = ws.haul(&["check", "-vvv", "job.toml"]).env("HAUL_TEST_PASSWORD", "hunter2-secret").output().unwrap();
    assert!(!output.status.success());
    let all = format!("{}{}", stderr(&output), String::from_utf8_lossy(&output.stdout));
    assert!(!all.contains("hunter2-secret"), "{all}");
}

#[test]
fn check_and_plugins_work() {
    let ws = Workspace::new();
    ws.write("job.toml", FILES_TO_JSONL);
    ws.write("in/a.csv", &csv(1, 3));
    let output = ws.run(&["check", "job.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let output = ws.run(&["plugins", "--output", "json"]);
    assert!(output.status.success());
    let plugins: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    for (role, kind) in [("source", "file"), ("source", "sql"), ("sink", "file"), ("sink", "sql"), ("sink", "stdout")] {
        assert!(plugins.iter().any(|p| p["role"] == role && p["kind"] == kind), "missing {role} {kind}");
    }
    for command in [&["--help"][..], &["run", "--help"], &["check", "--help"], &["plugins", "--help"]] {
        assert!(ws.run(command).status.success(), "{command:?}");
    }
}

#[test]
fn a_singer_tap_resumes_from_its_last_state_on_the_next_run() {
    let ws = Workspace::new();
    let tap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collect/tests/singer/fake_tap.py");
    let job = |records: u32| {
        format!(
            r#"
mode = "incremental"
[source]
type = "singer"
command = "python3"
args = ["{}"]
config = {{ records = {records}, state_every = 5 }}

[sink]
type = "file"
path = "out"
format = "jsonl"
"#,
            tap.display()
        )
    };
    ws.write("job.toml", &job(10));
    let first = ws.run(&["run", "job.toml"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stderr(&first).contains("10 written"), "{}", stderr(&first));

    ws.write("job.toml", &job(15));
    let second = ws.run(&["run", "job.toml"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stderr(&second).contains("5 written"), "the tap did not start from its last STATE: {}", stderr(&second));
}
