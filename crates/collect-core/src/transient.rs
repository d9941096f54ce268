//! Marking errors as transient. A transient error (a reset connection, a
//! timeout, a deadlock, a restarting server) is retried with backoff by
//! reopening the shard at its last checkpoint; any other error fails the shard.

use std::fmt;

/// Wraps an error to say that trying again may succeed.
#[derive(Debug)]
pub struct Transient(pub anyhow::Error);

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Transient {}

/// Marks `error` as transient.
pub fn transient(error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Transient(error.into()))
}

/// Whether `error`, or anything it wraps, was marked transient.
pub fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<Transient>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn survives_context() {
        let error =
            Err::<(), _>(transient(anyhow::anyhow!("connection reset"))).context("reading shard 3").unwrap_err();
        assert!(is_transient(&error));
        assert!(!is_transient(&anyhow::anyhow!("syntax error")));
        assert!(format!("{error:#}").contains("connection reset"));
    }
}
