//! A real `haul server` for tests: started from the built binary on an
//! ephemeral port of 127.0.0.1, with its state and the jobs' files in a
//! temporary folder, and killed when the guard is dropped. Small helpers call
//! its API with JSON and its CLI client with `--server`.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

const LISTENING: &str = "haul server listening on ";
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// The server's config file in the test's folder, when the test writes one.
const SERVER_CONFIG: &str = "server.toml";

/// A running server; dropping it kills the process.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    dir: PathBuf,
    /// The folder the server owns, removed when it is dropped.
    _owned_dir: Option<tempfile::TempDir>,
    slots: usize,
    logs: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Server {
    /// Starts a server and waits for the line that gives its address.
    pub fn start() -> Server {
        Server::start_owning(tempfile::tempdir().unwrap())
    }

    /// Starts a server with `config` as its config file (`server.toml`).
    pub fn start_with_config(config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SERVER_CONFIG), config).unwrap();
        Server::start_owning(dir)
    }

    /// Starts a server in `dir` (kept), with `dir/server.toml` as its config
    /// when there is one, and `slots` embedded worker slots.
    pub fn start_in(dir: &Path, slots: usize) -> Server {
        let (child, address, logs) = spawn(dir, slots);
        Server { child, address, dir: dir.to_path_buf(), _owned_dir: None, slots, logs, http: reqwest::Client::new() }
    }

    fn start_owning(dir: tempfile::TempDir) -> Server {
        let mut server = Server::start_in(dir.path(), 4);
        server._owned_dir = Some(dir);
        server
    }

    /// Kills the server with SIGKILL, as a crash would, and starts it again on
    /// the same state (on a new port).
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, address, logs) = spawn(&self.dir, self.slots);
        (self.child, self.address, self.logs) = (child, address, logs);
    }
    /// The test's folder: the server's working directory, for input and output files.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// What the server printed on stderr so far, for failure messages.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(self.http.get(self.url(path))).await
    }

    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let request = self.http.post(self.url(path));
        answer(match body {
            Some(body) => request.json(&body),
            None => request,
        })
        .await
    }

    pub async fn put_job(&self, spec: &str, content_type: &str) -> (StatusCode, Value) {
        let request = self.http.put(self.url("/api/v1/jobs")).header("content-type", content_type);
        answer(request.body(spec.to_string())).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        answer(self.http.delete(self.url(path))).await
    }

    /// Applies a TOML job that must be valid; returns the stored job.
    pub async fn apply(&self, spec: &str) -> Value {
        let (status, job) = self.put_job(spec, "application/toml").await;
        assert!(status.is_success(), "{status}: {job}");
        job
    }

    /// Queues a run of `job` now; returns its id.
    pub async fn trigger(&self, job: &str) -> String {
        let (status, run) = self.post(&format!("/api/v1/jobs/{job}/runs"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{run}");
        run["id"].as_str().unwrap().to_string()
    }

    /// Polls the run until its state is one of `states`; returns its detail.
    pub async fn wait_for_run(&self, id: &str, states: &[&str]) -> Value {
        let start = Instant::now();
        loop {
            let (status, detail) = self.get(&format!("/api/v1/runs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{detail}");
            if states.contains(&detail["state"].as_str().unwrap()) {
                return detail;
            }
            assert!(
                start.elapsed() < WAIT_LIMIT,
                "run {id} still {} after {WAIT_LIMIT:?}, waiting for {states:?}: {detail}\n{}",
                detail["state"],
                self.logs()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Runs the CLI client against this server.
    pub fn haul(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_haul"))
            .args(args)
            .env("HAUL_SERVER", &self.address)
            .env_remove("RUST_LOG")
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `haul server` in `dir` (state in `dir/state`, config from
/// `dir/server.toml` if present) and waits for the line that gives its address.
fn spawn(dir: &Path, slots: usize) -> (Child, String, Arc<Mutex<String>>) {
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_haul"));
    command
        .args(["-v", "server", "--listen", "127.0.0.1:0", "--slots", &slots.to_string(), "--state-dir"])
        .arg(&state_dir);
    if dir.join(SERVER_CONFIG).exists() {
        command.arg("--config").arg(dir.join(SERVER_CONFIG));
    }
    spawn_haul(command, dir, LISTENING)
}

/// Starts a `haul` command in `dir` and waits for its stderr line that
/// starts with `ready`; returns the process, the rest of that line's first
/// word, and the logs, which keep collecting.
pub fn spawn_haul(mut command: Command, dir: &Path, ready: &'static str) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("HAUL_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let (address_tx, address_rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(ready) {
                let address = rest.split_whitespace().next().unwrap_or_default().to_string();
                let _ = address_tx.send(address);
            }
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let address = match address_rx.recv_timeout(WAIT_LIMIT) {
        Ok(address) => address,
        Err(_) => {
            let _ = child.kill();
            panic!("haul did not say `{ready}`:\n{}", logs.lock().unwrap());
        }
    };
    (child, address, logs)
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.bytes().await.unwrap();
    let value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
    (status, value)
}

/// A job that copies the CSV files under `in/<name>/` to JSON Lines parts in `out/<name>/`.
pub fn files_job(server: &Server, name: &str, extra: &str) -> String {
    let input = server.path(&format!("in/{name}"));
    let output = server.path(&format!("out/{name}"));
    format!(
        "name = \"{name}\"\nparallelism = 2\nbatch_size = 100\n{extra}\n\n\
         [source]\ntype = \"file\"\npath = \"{}/*.csv\"\n\n\
         [sink]\ntype = \"file\"\npath = \"{}\"\nformat = \"jsonl\"\n",
        input.display(),
        output.display()
    )
}

/// `count` CSV records with ids from `first`.
pub fn csv(first: u64, count: u64) -> String {
    let mut text = String::from("id,name\n");
    for id in first..first + count {
        text.push_str(&format!("{id},name {id}\n"));
    }
    text
}

/// The ids of every record in the committed parts of `dir`, sorted.
pub fn output_ids(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            ids.push(record["id"].as_str().unwrap().parse().unwrap());
        }
    }
    ids.sort();
    ids
}
