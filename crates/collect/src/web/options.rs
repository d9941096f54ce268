//! The `politeness` table of a web source (`[source.politeness]`): who the
//! client says it is, how hard it may push each host, how long it waits and
//! how much it accepts. The `http` and `crawl` sources read the same table.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use haul_collect_core::registry::{OptionError, OptionInfo};
use haul_common::duration::HumanDuration;
use haul_common::retry::RetryPolicy;
use serde::{Deserialize, Serialize};

/// How a web client treats the hosts it talks to. The per-host limits hold
/// for every request to that host from this process, whichever shard or
/// source sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Politeness {
    /// The `User-Agent` header of every request.
    pub user_agent: String,
    /// Requests to one host (scheme, host and port) in flight at once.
    pub concurrency: NonZeroUsize,
    /// Requests started per second on one host; no limit when absent.
    pub requests_per_second: Option<NonZeroU32>,
    /// The least time between the starts of two requests to one host.
    pub min_delay: HumanDuration,
    /// The longest a request may take, from connecting to the body's last byte.
    pub timeout: HumanDuration,
    /// The largest response body accepted, after decompression.
    pub max_response_bytes: u64,
    /// Redirects followed per request.
    pub max_redirects: usize,
    /// Retries of timeouts, network errors, 408, 429 and 5xx responses.
    pub retry: RetryPolicy,
    /// The longest `Retry-After` honoured; a server asking for more fails the
    /// request (transiently: the run retries the shard later).
    pub max_retry_after: HumanDuration,
}

impl Default for Politeness {
    fn default() -> Self {
        Politeness {
            user_agent: default_user_agent(),
            concurrency: NonZeroUsize::new(4).expect("not zero"),
            requests_per_second: None,
            min_delay: HumanDuration(Duration::ZERO),
            timeout: HumanDuration(Duration::from_secs(30)),
            max_response_bytes: 64 * 1024 * 1024,
            max_redirects: 5,
            retry: RetryPolicy::default(),
            max_retry_after: HumanDuration(Duration::from_secs(300)),
        }
    }
}

/// `haul/<version>`, the user agent when none is configured.
pub fn default_user_agent() -> String {
    format!("haul/{}", env!("CARGO_PKG_VERSION"))
}

impl Politeness {
    /// Checks values that parse but cannot work; the error names the option
    /// under `table` (the key the source reads this table from).
    pub fn validate(&self, table: &str) -> Result<(), OptionError> {
        let error = |option: &str, message: &str| OptionError {
            path: vec![table.to_string(), option.to_string()],
            message: message.to_string(),
        };
        if self.timeout.0.is_zero() {
            return Err(error("timeout", "`timeout` must be more than zero"));
        }
        if self.max_response_bytes == 0 {
            return Err(error("max_response_bytes", "`max_response_bytes` must be at least 1"));
        }
        if self.user_agent.trim().is_empty() || reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(error("user_agent", "`user_agent` must be non-empty visible ascii text"));
        }
        Ok(())
    }

    /// The least time between two request starts on one host: the stricter
    /// of `min_delay` and `requests_per_second`.
    pub(crate) fn spacing(&self) -> Duration {
        let by_rate = self.requests_per_second.map_or(Duration::ZERO, |rate| Duration::from_secs(1) / rate.get());
        self.min_delay.0.max(by_rate)
    }

    /// The table's entry in a plugin's option list.
    pub fn option_info(table: &'static str) -> OptionInfo {
        OptionInfo {
            name: table,
            kind: "table",
            default: Some("{}"),
            description: "per-host politeness and limits, shared by every request of this process to the same \
                          scheme, host and port: `user_agent` (haul/VERSION), `concurrency` (4), \
                          `requests_per_second` (none), `min_delay` between request starts (\"0ms\"), `timeout` \
                          (\"30s\"), `max_response_bytes` (67108864), `max_redirects` (5), `retry` of timeouts, \
                          network errors, 408, 429 and 5xx ({ attempts = 5, initial_backoff = \"200ms\", \
                          max_backoff = \"30s\" }), `max_retry_after` (\"5m\")",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_table_and_rejects_unknown_keys() {
        let politeness: Politeness =
            toml::from_str("concurrency = 2\nrequests_per_second = 4\nmin_delay = \"100ms\"").unwrap();
        assert_eq!(politeness.concurrency.get(), 2);
        assert_eq!(politeness.spacing(), Duration::from_millis(250));
        assert_eq!(politeness.timeout, Politeness::default().timeout);
        let error = toml::from_str::<Politeness>("concurency = 2").unwrap_err().to_string();
        assert!(error.contains("unknown field `concurency`"), "{error}");
    }

    #[test]
    fn validation_names_the_option() {
        let politeness = Politeness { timeout: HumanDuration(Duration::ZERO), ..Politeness::default() };
        let error = politeness.validate("politeness").unwrap_err();
        assert_eq!(error.path, ["politeness", "timeout"]);
        let politeness = Politeness { user_agent: "bad\nagent".into(), ..Politeness::default() };
        assert_eq!(politeness.validate("politeness").unwrap_err().path, ["politeness", "user_agent"]);
        assert!(Politeness::default().validate("politeness").is_ok());
    }
}
