//! What the tests share: Redis options isolated under a unique key prefix,
//! a connection for their own checks, and the metrics this process records.
//! (A private `redis-server` a test may stop is
//! `haul_register::testing::PrivateRedis`.)

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

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
