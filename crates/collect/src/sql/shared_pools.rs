//! Server connection pools shared by the sources and sinks of this process
//! that reach the same database with the same access: a job's next run, or
//! another job on the same database, finds connections already open. A new
//! PostgreSQL or MySQL connection costs a TLS handshake and a session start,
//! hundreds of milliseconds on some servers (PostgreSQL over TLS here), which
//! every run paid again on every worker, and twice for a copy between two
//! databases. SQLite is not shared: opening a file costs nothing, and an
//! in-memory database must stay each run's own.
//!
//! A shared pool lives as long as the process; its connections close after
//! sqlx's idle timeout (ten minutes) without use.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use sha2::{Digest, Sha256};

use super::connection::{Access, Database};

/// The pools opened so far.
static SHARED: LazyLock<Mutex<HashMap<PoolKey, Database>>> = LazyLock::new(Mutex::default);

/// A pool's URL, by digest so that no password is kept in clear, and its access.
#[derive(PartialEq, Eq, Hash)]
struct PoolKey {
    url: [u8; 32],
    access: Access,
}

/// The pool shared for `url` and `access`, opened by `open` if there is none yet.
pub(super) fn shared(
    url: &str,
    access: Access,
    open: impl FnOnce() -> anyhow::Result<Database>,
) -> anyhow::Result<Database> {
    let key = PoolKey { url: Sha256::digest(url.as_bytes()).into(), access };
    let mut pools = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(pool) = pools.get(&key) {
        return Ok(pool.clone());
    }
    // Opening is lazy (no connection is made yet), so it holds the lock for no time.
    let pool = open()?;
    pools.insert(key, pool.clone());
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgPoolOptions;

    use super::*;

    fn lazy_pool(url: &str) -> anyhow::Result<Database> {
        Ok(Database::Postgres(PgPoolOptions::new().connect_lazy(url)?))
    }

    #[tokio::test]
    async fn one_pool_per_url_and_access() {
        let url = "postgres://nobody@127.0.0.1:1/shared-pools-test";
        let opened = std::sync::atomic::AtomicUsize::new(0);
        let open = || {
            opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            lazy_pool(url)
        };
        let first = shared(url, Access::Read, open).unwrap();
        let again = shared(url, Access::Read, open).unwrap();
        let writer = shared(url, Access::Write, open).unwrap();
        let other = shared("postgres://nobody@127.0.0.1:1/another", Access::Read, open).unwrap();
        assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 3);
        let (
            Database::Postgres(first),
            Database::Postgres(again),
            Database::Postgres(writer),
            Database::Postgres(other),
        ) = (first, again, writer, other)
        else {
            panic!("postgres pools")
        };
        // Clones of one pool share its state: closing one closes the other.
        first.close().await;
        assert!(again.is_closed());
        assert!(!writer.is_closed() && !other.is_closed());
    }
}
