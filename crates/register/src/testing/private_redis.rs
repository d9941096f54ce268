//! A Redis of one test's own, for tests that stop Redis or restart it:
//! [`PrivateRedis`] runs `redis-server` on a free port of 127.0.0.1, without
//! persistence (a restarted server starts empty), as a child of the test
//! (in its process group, so that a runner that signals the group stops it
//! too). The shared Redis on 6379 is never touched.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for the server to answer `PING`.
const PATIENCE: Duration = Duration::from_secs(10);

/// A private `redis-server`, killed when dropped; see the module documentation.
pub struct PrivateRedis {
    pub port: u16,
    /// The server while it runs.
    process: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port and waits until it answers; panics if
    /// `redis-server` is missing or does not answer within ten seconds.
    pub fn start() -> Self {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port();
        let mut redis = PrivateRedis { port, process: None };
        redis.launch();
        redis
    }

    /// The URL of the server's database 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL, as a crash would) and waits until it has
    /// exited: connections to it fail at once. Nothing is kept.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Stops the server if it runs, then starts an empty one on the same
    /// port and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        assert!(self.process.is_none(), "the server runs already");
        let port = self.port.to_string();
        let process = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.process = Some(process);
        let deadline = Instant::now() + PATIENCE;
        let client = redis::Client::open(self.url()).expect("a valid redis url");
        let ping =
            || client.get_connection().and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
        while ping().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {} within {PATIENCE:?}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
