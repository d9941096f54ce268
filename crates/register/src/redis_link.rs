//! The link to Redis shared by the Redis backends of the [`crate::limiter`]
//! and the [`crate::seen`] set: opening by URL, keys under a prefix, a short
//! timeout on every call, and the outage rule.
//!
//! Redis is never needed for correctness. When a call errors or times out,
//! the link declares an outage: it warns once, sets the gauge
//! `haul_limiter_degraded{role}` to 1 and counts
//! `haul_limiter_fallbacks_total{role}` (one per outage), and its callers
//! answer from their local fallback. During the outage one call at a time
//! probes Redis, with exponential backoff between probes; the first probe that
//! succeeds ends the outage and sets the gauge back to 0.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use haul_common::duration::HumanDuration;
use haul_common::retry::RetryPolicy;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};
use tokio::time::Instant;

/// How the Redis backends reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Prepended to every key, as `PREFIX:limit:KEY`, so that deployments can
    /// share a Redis.
    pub prefix: String,
    /// Longest wait for any answer before falling back.
    pub timeout: Duration,
    /// Delay before the first probe of an outage; doubled after each failed probe.
    pub probe_initial: Duration,
    /// Longest delay between two probes.
    pub probe_max: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "haul".into(),
            timeout: Duration::from_millis(200),
            probe_initial: Duration::from_millis(500),
            probe_max: Duration::from_secs(30),
        }
    }
}

/// What opening a backend by URL can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown url scheme `{0}`; expected memory:// or redis://HOST:PORT/DB")]
    Scheme(String),
    #[error("invalid redis url: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The Redis client a backend URL names: `None` for a backend in this
/// process (no URL, or `memory://`), a client for `redis://` or `rediss://`.
pub(crate) fn redis_client(url: Option<&str>) -> Result<Option<Client>, Error> {
    let Some(url) = url else {
        return Ok(None);
    };
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("memory") => Ok(None),
        Some("redis" | "rediss") => Ok(Some(Client::open(url)?)),
        Some(other) => Err(Error::Scheme(other.to_string())),
        None => Err(Error::Scheme(String::new())),
    }
}

/// An outage in progress: when the next probe is due, and the delays after it.
struct Outage {
    next_probe: Instant,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
}

/// One connection to Redis (multiplexed, reconnecting), with the outage rule.
pub(crate) struct RedisLink {
    connection: ConnectionManager,
    options: RedisOptions,
    /// The `role` label of the metrics: what this link serves.
    role: &'static str,
    outage: Mutex<Option<Outage>>,
}

impl RedisLink {
    /// A link that connects on its first call, so that a process starts even
    /// while Redis is down.
    pub(crate) fn new(client: Client, options: RedisOptions, role: &'static str) -> Result<Self, Error> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        metrics::gauge!("haul_limiter_degraded", "role" => role).set(0.0);
        Ok(RedisLink { connection, options, role, outage: Mutex::new(None) })
    }

    /// The Redis key of `name` among the keys of `kind`.
    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.options.prefix)
    }

    /// Whether an outage is in progress.
    pub(crate) fn is_degraded(&self) -> bool {
        self.outage().is_some()
    }

    /// Runs `request` on Redis and returns its answer; `None` when the caller
    /// must use its fallback: Redis failed or timed out, or an outage is in
    /// progress and no probe is due.
    pub(crate) async fn call<T, F, Fut>(&self, request: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let probing = match self.outage().as_mut() {
            None => false,
            Some(outage) if Instant::now() < outage.next_probe => return None,
            Some(outage) => {
                // the next probe is scheduled before this one answers, so one caller probes at a time
                let delay = outage.delays.next().unwrap_or(self.options.probe_max);
                outage.next_probe = Instant::now() + delay;
                true
            }
        };
        let error = match tokio::time::timeout(self.options.timeout, request(self.connection.clone())).await {
            Ok(Ok(answer)) => {
                if probing {
                    self.end_outage();
                }
                return Some(answer);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.options.timeout),
        };
        self.start_outage(&error);
        None
    }

    fn outage(&self) -> std::sync::MutexGuard<'_, Option<Outage>> {
        self.outage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start_outage(&self, error: &str) {
        let mut outage = self.outage();
        if outage.is_some() {
            return;
        }
        tracing::warn!(role = self.role, %error, "redis unreachable, falling back to local state until it answers");
        metrics::gauge!("haul_limiter_degraded", "role" => self.role).set(1.0);
        metrics::counter!("haul_limiter_fallbacks_total", "role" => self.role).increment(1);
        let policy = RetryPolicy {
            attempts: usize::MAX,
            initial_backoff: HumanDuration(self.options.probe_initial),
            max_backoff: HumanDuration(self.options.probe_max),
        };
        let mut delays = policy.delays();
        let first = delays.next().unwrap_or(self.options.probe_initial);
        *outage = Some(Outage { next_probe: Instant::now() + first, delays: Box::new(delays) });
    }

    fn end_outage(&self) {
        if self.outage().take().is_some() {
            tracing::info!(role = self.role, "redis answers again, leaving the local fallback");
            metrics::gauge!("haul_limiter_degraded", "role" => self.role).set(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert!(matches!(redis_client(None), Ok(None)));
        assert!(matches!(redis_client(Some("memory://")), Ok(None)));
        assert!(matches!(redis_client(Some("redis://127.0.0.1:6379/0")), Ok(Some(_))));
        let unknown = redis_client(Some("zk://127.0.0.1:2181")).err().unwrap();
        assert_eq!(unknown.to_string(), "unknown url scheme `zk`; expected memory:// or redis://HOST:PORT/DB");
        assert!(matches!(redis_client(Some("127.0.0.1:6379")), Err(Error::Scheme(_))));
        assert!(matches!(redis_client(Some("redis://:secret@[::1")), Err(Error::Redis(_))));
    }
}
