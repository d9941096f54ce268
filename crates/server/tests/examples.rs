//! Every job in `examples/` is valid: it parses and its plugins build.

use std::path::Path;
use std::process::Command;

#[test]
fn every_example_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let job = entry.unwrap().path().join("job.toml");
        if !job.exists() {
            continue;
        }
        let output = Command::new(env!("CARGO_BIN_EXE_haul"))
            .args(["check", "--offline"])
            .arg(&job)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}: {}", job.display(), String::from_utf8_lossy(&output.stderr));
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} examples found");
}

#[test]
fn the_cleaning_example_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_haul"))
        .args(["run", "--restart", "--state-dir"])
        .arg(state.path())
        .arg("examples/cleaning/job.toml")
        .current_dir(&root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    // 204 lines: 200 customers and 4 duplicates; 15 broken emails and 6 unknown ages are rejected.
    assert!(text.contains("204 read, 179 written, 21 rejected"), "{text}");
}
