//! The Redis limiter against a real Redis: a limit shared by two workers,
//! GCRA's burst and spacing, the script sent once, and the local fallback
//! while Redis is down.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haul_register::limiter::{Admission, Error, Limit, Limiter, LimiterOptions, RedisLimiter};
use haul_register::testing::PrivateRedis;
use support::{SHARED_REDIS, connect, isolated_options, metric};

fn limit(per_second: u32, burst: u32) -> Limit {
    Limit::per_second(NonZeroU32::new(per_second).unwrap()).with_burst(NonZeroU32::new(burst).unwrap())
}

fn limiter(url: &str, options: &LimiterOptions) -> Arc<RedisLimiter> {
    Arc::new(RedisLimiter::new(redis::Client::open(url).unwrap(), options).unwrap())
}

fn options(expected_workers: u32) -> LimiterOptions {
    LimiterOptions { redis: isolated_options(), expected_workers: NonZeroU32::new(expected_workers).unwrap() }
}

/// Takes single permits of `key` for `window` the way a pipeline waits for
/// them, and counts them.
async fn count_grants(limiter: Arc<RedisLimiter>, key: &str, limit: Limit, window: Duration) -> u64 {
    let end = tokio::time::Instant::now() + window;
    let mut granted = 0;
    while tokio::time::timeout_at(end, limiter.acquire(key, limit, 1)).await.is_ok() {
        granted += 1;
    }
    granted
}

#[tokio::test]
async fn two_workers_sharing_a_limit_never_exceed_it_together() {
    let options = options(2);
    let (first, second) = (limiter(SHARED_REDIS, &options), limiter(SHARED_REDIS, &options));
    let limit = limit(50, 10);
    let window = Duration::from_secs(2);
    let start = Instant::now();
    let (a, b) = tokio::join!(
        count_grants(first, "job:shared", limit, window),
        count_grants(second, "job:shared", limit, window)
    );
    let elapsed = start.elapsed().as_secs_f64();
    // each alone would take 10 + 50 × 2; together they must share that
    let ceiling = 10.0 + 50.0 * elapsed + 1.0;
    let total = (a + b) as f64;
    assert!(total <= ceiling, "{a} + {b} permits in {elapsed:.2}s exceed {ceiling:.0}");
    assert!(total >= 0.9 * (10.0 + 50.0 * 2.0), "{a} + {b} permits in {elapsed:.2}s: the limit starves");
    assert!(a > 10 && b > 10, "both workers are served: {a} and {b}");
}

#[tokio::test]
async fn the_burst_passes_at_once_then_permits_are_spaced_by_the_interval() {
    let options = options(1);
    let limiter = limiter(SHARED_REDIS, &options);
    let limit = limit(10, 5);
    assert_eq!(limiter.try_acquire("endpoint:example.org", limit, 5).await, Ok(Admission::Granted));
    let Ok(Admission::RetryAfter(wait)) = limiter.try_acquire("endpoint:example.org", limit, 1).await else {
        panic!("the burst is spent");
    };
    assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100), "{wait:?}");
    tokio::time::sleep(wait).await;
    assert_eq!(limiter.try_acquire("endpoint:example.org", limit, 1).await, Ok(Admission::Granted));
    assert!(matches!(limiter.try_acquire("endpoint:example.org", limit, 1).await, Ok(Admission::RetryAfter(_))));
    // other keys are other buckets
    assert_eq!(limiter.try_acquire("endpoint:example.com", limit, 5).await, Ok(Admission::Granted));
    assert_eq!(
        limiter.try_acquire("endpoint:example.com", limit, 6).await,
        Err(Error::ExceedsBurst { requested: 6, burst: 5 })
    );
    assert!(!limiter.is_degraded());
}

#[tokio::test]
async fn an_idle_key_expires_once_its_bucket_has_refilled() {
    let options = options(1);
    let limiter = limiter(SHARED_REDIS, &options);
    limiter.try_acquire("pool:default", limit(10, 5), 3).await.unwrap();
    let mut connection = connect(SHARED_REDIS).await;
    let key = format!("{}:limit:pool:default", options.redis.prefix);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut connection).await.unwrap();
    // three permits at 100 ms each refill within 300 ms
    assert!(ttl > 200 && ttl <= 300, "{key} expires in {ttl} ms");
}

#[tokio::test]
async fn acquire_waits_for_permits_beyond_the_burst() {
    let options = options(1);
    let limiter = limiter(SHARED_REDIS, &options);
    let start = Instant::now();
    // 30 permits at 100 a second with a burst of 10: 20 after the burst take 200 ms
    limiter.acquire("job:wait:records", limit(100, 10), 30).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(180) && elapsed < Duration::from_millis(600), "{elapsed:?}");
}

/// The calls of `command` the server counted, from `INFO commandstats`.
async fn command_calls(connection: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(connection).await.unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test]
async fn the_script_is_loaded_once_and_again_after_a_flush() {
    let server = PrivateRedis::start();
    let options = options(1);
    let limiter = limiter(&server.url(), &options);
    for _ in 0..5 {
        assert_eq!(limiter.try_acquire("global", limit(1000, 100), 1).await, Ok(Admission::Granted));
    }
    let mut connection = connect(&server.url()).await;
    assert_eq!(command_calls(&mut connection, "script|load").await, 1);
    assert_eq!(command_calls(&mut connection, "eval").await, 0);
    assert_eq!(command_calls(&mut connection, "evalsha").await, 6, "five calls and the first one's NOSCRIPT");

    redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut connection).await.unwrap();
    assert_eq!(limiter.try_acquire("global", limit(1000, 100), 1).await, Ok(Admission::Granted));
    assert_eq!(command_calls(&mut connection, "script|load").await, 2);
    assert!(!limiter.is_degraded());
}

#[tokio::test]
async fn an_unreachable_redis_leaves_a_conservative_local_limit() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // nothing listens on the port once the listener is dropped
    let limiter = limiter(&format!("redis://127.0.0.1:{port}/0"), &options(4));
    let window = Duration::from_secs(1);
    let start = Instant::now();
    let granted = count_grants(limiter.clone(), "job:down:records", limit(40, 40), window).await;
    let elapsed = start.elapsed().as_secs_f64();
    assert!(limiter.is_degraded());
    // a quarter of 40 a second with a quarter of the burst: about 10 + 10
    let ceiling = 10.0 + 10.0 * elapsed + 1.0;
    assert!((granted as f64) <= ceiling && granted >= 15, "{granted} permits in {elapsed:.2}s, ceiling {ceiling:.0}");
    // permits beyond the local burst are taken in smaller chunks
    limiter.acquire("job:down:bytes", limit(1000, 1000), 400).await;
}

#[tokio::test]
async fn a_redis_outage_falls_back_alerts_once_and_recovers() {
    support::metrics();
    let mut server = PrivateRedis::start();
    let options = options(4);
    let limiter = limiter(&server.url(), &options);
    let limit = limit(40, 40);
    assert_eq!(limiter.try_acquire("job:outage", limit, 40).await, Ok(Admission::Granted));
    assert_eq!(metric("haul_limiter_degraded", "rate_limit"), Some(0.0));

    server.stop();
    let start = Instant::now();
    let granted = count_grants(limiter.clone(), "job:outage", limit, Duration::from_secs(1)).await;
    let elapsed = start.elapsed().as_secs_f64();
    assert!(limiter.is_degraded());
    let ceiling = 10.0 + 10.0 * elapsed + 1.0;
    assert!((granted as f64) <= ceiling && granted >= 15, "{granted} permits in {elapsed:.2}s, ceiling {ceiling:.0}");
    assert_eq!(metric("haul_limiter_degraded", "rate_limit"), Some(1.0));
    // probes failed meanwhile, but the outage is counted once
    assert_eq!(metric("haul_limiter_fallbacks_total", "rate_limit"), Some(1.0));

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while limiter.is_degraded() {
        assert!(Instant::now() < deadline, "the limiter never went back to redis");
        let _ = limiter.try_acquire("job:outage", limit, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric("haul_limiter_degraded", "rate_limit"), Some(0.0));
    assert_eq!(metric("haul_limiter_fallbacks_total", "rate_limit"), Some(1.0));
    // the limit lives in redis again
    assert_eq!(limiter.try_acquire("job:after", limit, 40).await, Ok(Admission::Granted));
    let mut connection = connect(&server.url()).await;
    let key = format!("{}:limit:job:after", options.redis.prefix);
    assert!(redis::cmd("EXISTS").arg(&key).query_async::<bool>(&mut connection).await.unwrap());
}
