//! What the tests share: Redis options isolated under a unique key prefix,
//! a private `redis-server` a test may stop and restart, and the metrics
//! this process records.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use haul_register::redis_link::RedisOptions;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The Redis every test may share.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

/// Options whose keys no other test touches, probing quickly after an outage.
pub fn isolated_options() -> RedisOptions {
    RedisOptions {
        prefix: format!("haul-test-{}", uuid::Uuid::now_v7()),
        timeout: Duration::from_millis(200),
        probe_initial: Duration::from_millis(50),
        probe_max: Duration::from_millis(200),
    }
}

/// A connection to `url` for the tests' own checks.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// A `redis-server` of this test alone, without persistence, killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    process: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = PrivateRedis { port, process: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again on the same port, and waits until it answers.
    pub fn restart(&mut self) {
        let process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.process = Some(process);
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).unwrap();
        while client.get_connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The metrics this test process records (nextest runs each test in its own
/// process); call it before building what records them.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of the series `name{role="ROLE"}`, if recorded.
pub fn metric(name: &str, role: &str) -> Option<f64> {
    series(&format!("{name}{{role=\"{role}\"}}"))
}

/// The value of `series` (a name with its labels as rendered, or a bare
/// name), if recorded.
pub fn series(series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    metrics().render().lines().find_map(|line| line.strip_prefix(&prefix).and_then(|value| value.parse().ok()))
}
