//! The Redis seen set against a real Redis: two workers see each key new
//! exactly once, namespaces expire and are forgotten, and an unreachable
//! Redis leaves a working local set.

mod support;

use std::sync::Arc;
use std::time::Duration;

use haul_register::seen::{RedisSeenSet, SeenSet, SeenSetOptions};
use haul_register::testing::PrivateRedis;
use support::{SHARED_REDIS, connect, isolated_options, metric};

fn seen_set(url: &str, options: &SeenSetOptions) -> Arc<RedisSeenSet> {
    Arc::new(RedisSeenSet::new(redis::Client::open(url).unwrap(), options).unwrap())
}

fn options() -> SeenSetOptions {
    SeenSetOptions { redis: isolated_options(), ttl: Duration::from_secs(60) }
}

/// Inserts `0..count` in batches of 50, and returns the keys this worker saw new.
async fn insert_all(seen: Arc<RedisSeenSet>, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|i| format!("https://example.org/{i}")).collect();
    let mut new = Vec::new();
    for batch in keys.chunks(50) {
        let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
        let answers = seen.insert_new("crawl:run", &batch).await;
        new.extend(batch.iter().zip(answers).filter(|(_, new)| *new).map(|(key, _)| key.to_string()));
    }
    new
}

#[tokio::test]
async fn two_workers_see_each_key_new_exactly_once() {
    let options = options();
    let (first, second) = (seen_set(SHARED_REDIS, &options), seen_set(SHARED_REDIS, &options));
    let (a, b) = tokio::join!(insert_all(first.clone(), 2_000), insert_all(second.clone(), 2_000));
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(a.len() + b.len(), 2_000, "{} + {} keys reported new", a.len(), b.len());
    assert_eq!(all.len(), 2_000);
    assert!(!first.insert_if_new("crawl:run", "https://example.org/7").await);
    assert!(!first.is_degraded() && !second.is_degraded());
}

#[tokio::test]
async fn repeats_in_a_batch_are_new_once_and_namespaces_are_apart() {
    let options = options();
    let seen = seen_set(SHARED_REDIS, &options);
    assert_eq!(seen.insert_new("crawl:a", &["x", "y", "x"]).await, [true, true, false]);
    assert!(seen.insert_if_new("crawl:b", "x").await);
    assert_eq!(seen.insert_new("crawl:a", &[]).await, Vec::<bool>::new());
}

#[tokio::test]
async fn a_namespace_expires_after_its_ttl_and_is_forgotten_on_request() {
    let options = options();
    let seen = seen_set(SHARED_REDIS, &options);
    seen.insert_new("crawl:a", &["x"]).await;
    let mut connection = connect(SHARED_REDIS).await;
    let key = format!("{}:seen:crawl:a", options.redis.prefix);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut connection).await.unwrap();
    assert!(ttl > 55_000 && ttl <= 60_000, "{key} expires in {ttl} ms");
    seen.forget("crawl:a").await;
    assert!(!redis::cmd("EXISTS").arg(&key).query_async::<bool>(&mut connection).await.unwrap());
    assert!(seen.insert_if_new("crawl:a", "x").await);
}

#[tokio::test]
async fn a_redis_outage_answers_locally_and_recovers() {
    support::metrics();
    let mut server = PrivateRedis::start();
    let options = options();
    let seen = seen_set(&server.url(), &options);
    assert!(seen.insert_if_new("crawl:a", "before").await);

    server.stop();
    assert!(seen.insert_if_new("crawl:a", "during").await);
    assert!(!seen.insert_if_new("crawl:a", "during").await);
    assert!(seen.is_degraded());
    assert_eq!(metric("haul_limiter_degraded", "dedup"), Some(1.0));
    assert_eq!(metric("haul_limiter_fallbacks_total", "dedup"), Some(1.0));

    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.is_degraded() {
        assert!(std::time::Instant::now() < deadline, "the seen set never went back to redis");
        seen.insert_if_new("crawl:b", "probe").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric("haul_limiter_degraded", "dedup"), Some(0.0));
    // the restarted server kept nothing (no persistence): the key is new to it again
    assert!(seen.insert_if_new("crawl:a", "before").await);
    assert!(!seen.insert_if_new("crawl:a", "before").await);
}
