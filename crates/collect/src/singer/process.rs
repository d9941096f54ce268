//! A running Singer executable: its standard output read line by line with an
//! idle timeout (a tap that says nothing for that long is taken as hung and
//! killed), the last lines of its standard error kept for error messages, and
//! the process killed when it is dropped.

use std::collections::VecDeque;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// How many lines of standard error an error message quotes.
const STDERR_TAIL_LINES: usize = 50;
/// Longer standard error lines are cut to this many bytes.
const STDERR_LINE_BYTES: usize = 2_000;
/// How long to wait for the end of standard error once the process is gone.
const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// A spawned tap or target.
pub(crate) struct SingerProcess {
    /// What the process is called in messages: the command as configured.
    name: String,
    child: Child,
    pub stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
    stderr: StderrTail,
    /// Files named on the command line, removed when the process is dropped.
    _files: Vec<tempfile::NamedTempFile>,
}

impl SingerProcess {
    /// Spawns `command`, which must pipe standard output and standard error
    /// (and standard input when the caller writes to it).
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        files: Vec<tempfile::NamedTempFile>,
    ) -> anyhow::Result<SingerProcess> {
        command.kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("cannot start `{name}`"))?;
        let stdout = child.stdout.take().map(BufReader::new);
        let stderr = StderrTail::collect(child.stderr.take().context("standard error is not piped")?);
        let stdin = child.stdin.take();
        Ok(SingerProcess { name: name.to_string(), child, stdin, stdout, stderr, _files: files })
    }

    /// Reads the next line of standard output into `line` (without its line
    /// end); `false` at the end of the output. Kills the process and fails when
    /// nothing comes for `idle_timeout`.
    pub(crate) async fn next_line(&mut self, line: &mut Vec<u8>, idle_timeout: Duration) -> anyhow::Result<bool> {
        let stdout = self.stdout.as_mut().context("standard output is not piped")?;
        line.clear();
        let read = match tokio::time::timeout(idle_timeout, stdout.read_until(b'\n', line)).await {
            Ok(read) => read.with_context(|| format!("cannot read the output of `{}`", self.name))?,
            Err(_) => {
                let message = format!("`{}` produced no output for {idle_timeout:?}", self.name);
                return Err(self.kill_with(message).await);
            }
        };
        if line.ends_with(b"\n") {
            line.pop();
            if line.ends_with(b"\r") {
                line.pop();
            }
        }
        Ok(read > 0)
    }

    /// Takes standard output, for a caller that reads it on its own.
    pub(crate) fn take_stdout(&mut self) -> Option<BufReader<ChildStdout>> {
        self.stdout.take()
    }

    /// Waits up to `timeout` for the process to exit; an exit other than
    /// success is an error with the end of its standard error.
    pub(crate) async fn finish(mut self, timeout: Duration) -> anyhow::Result<()> {
        self.stdin = None;
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.with_context(|| format!("cannot wait for `{}`", self.name))?,
            Err(_) => {
                let message = format!("`{}` did not exit within {timeout:?} after its output ended", self.name);
                return Err(self.kill_with(message).await);
            }
        };
        if status.success() {
            return Ok(());
        }
        Err(self.stderr.error(format!("`{}` {}", self.name, describe_exit(status))).await)
    }

    /// Explains why the process stopped answering (a write failed, the output
    /// ended early): its exit status if it exited, with its standard error.
    pub(crate) async fn failure(mut self, what: &str) -> anyhow::Error {
        self.stdin = None;
        match tokio::time::timeout(STDERR_DRAIN, self.child.wait()).await {
            Ok(Ok(status)) => self.stderr.error(format!("{what}: `{}` {}", self.name, describe_exit(status))).await,
            _ => self.kill_with(format!("{what}: `{}` is still running", self.name)).await,
        }
    }

    /// Kills the process and waits for it to go.
    pub(crate) async fn kill(mut self) {
        // The process may have exited already; either way it is gone after this.
        let _ = self.child.kill().await;
    }

    async fn kill_with(&mut self, message: String) -> anyhow::Error {
        // A failure to kill means the process has already exited.
        let _ = self.child.kill().await;
        self.stderr.error(message).await
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("was stopped ({status})"),
    }
}

/// The last lines a process wrote to standard error, read by a background task.
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl StderrTail {
    fn collect(stderr: impl AsyncRead + Unpin + Send + 'static) -> StderrTail {
        let lines = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let reader = tokio::spawn(keep_tail(BufReader::new(stderr), lines.clone()));
        StderrTail { lines, reader: Some(reader) }
    }

    /// An error with `message` and the end of standard error, once the reader
    /// has seen the end of it (or after a short wait).
    async fn error(&mut self, message: String) -> anyhow::Error {
        if let Some(reader) = self.reader.take() {
            // A reader still running after the wait is left behind: the lines so far are enough.
            let _ = tokio::time::timeout(STDERR_DRAIN, reader).await;
        }
        let lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.is_empty() {
            return anyhow!("{message} (nothing on its standard error)");
        }
        let tail: Vec<&str> = lines.iter().map(String::as_str).collect();
        anyhow!("{message}; the end of its standard error:\n{}", tail.join("\n"))
    }
}

async fn keep_tail(mut stderr: BufReader<impl AsyncRead + Unpin>, lines: Arc<Mutex<VecDeque<String>>>) {
    let mut line = Vec::new();
    while let Ok(read) = stderr.read_until(b'\n', &mut line).await {
        if read == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line[..line.len().min(STDERR_LINE_BYTES)]).trim_end().to_string();
        line.clear();
        let mut lines = lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.len() == STDERR_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(text);
    }
}
