//! A temporary folder to run the `haul` command in: the test writes its job
//! and input files there, and runs the built binary with that folder as its
//! working directory, without the caller's `RUST_LOG` and `HAUL_STATE_DIR`.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes `text` to `relative`, creating its folders.
    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `haul ARGS` in the folder, to adjust before running.
    pub fn haul(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_haul"));
        command.args(args).current_dir(self.dir.path()).env_remove("RUST_LOG").env_remove("HAUL_STATE_DIR");
        command
    }

    /// Runs `haul ARGS` in the folder to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.haul(args).output().unwrap()
    }
}
