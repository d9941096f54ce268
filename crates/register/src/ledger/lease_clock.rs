//! This process's estimate of when a held lease runs out, for deciding how
//! long to retry a write under it while the store is unreachable.
//!
//! The store sets a lease's expiry by its own clock to `ttl` after it
//! executes a claim or renewal, which is never before the request was sent;
//! so the instant the last successful request was sent, plus `ttl`, is never
//! later than the real expiry (clock rate drift aside, negligible over one
//! ttl). Past it, another owner may hold the shard.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When a lease expires at the earliest; see the module documentation.
#[derive(Debug)]
pub(super) struct LeaseClock {
    ttl: Duration,
    /// When the last claim or renewal that succeeded was sent.
    granted: Mutex<Instant>,
}

impl LeaseClock {
    /// A lease claimed by a request sent at `sent`.
    pub(super) fn claimed(sent: Instant, ttl: Duration) -> Self {
        LeaseClock { ttl, granted: Mutex::new(sent) }
    }

    /// Records a renewal that succeeded, sent at `sent`.
    pub(super) fn renewed(&self, sent: Instant) {
        let mut granted = self.granted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *granted = (*granted).max(sent);
    }

    /// The earliest instant the lease may expire.
    pub(super) fn expires(&self) -> Instant {
        *self.granted.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) + self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_only_move_the_expiry_forward() {
        let sent = Instant::now();
        let ttl = Duration::from_secs(15);
        let clock = LeaseClock::claimed(sent, ttl);
        assert_eq!(clock.expires(), sent + ttl);
        clock.renewed(sent + Duration::from_secs(5));
        assert_eq!(clock.expires(), sent + Duration::from_secs(20));
        clock.renewed(sent + Duration::from_secs(1));
        assert_eq!(clock.expires(), sent + Duration::from_secs(20), "a late answer to an older renewal");
    }
}
