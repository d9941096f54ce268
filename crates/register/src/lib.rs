//! haul's coordination layer: the traits through which runs, shards and
//! workers coordinate — starting with the [`store::Store`], the source of truth
//! for jobs' incremental state, runs and the shard ledger — and their backends
//! (SQLite, PostgreSQL and MySQL/MariaDB behind the same trait). Beside it, the
//! services that may lose their state: the shared [`limiter`] and the
//! [`seen`] set, in process or on Redis ([`redis_link`]), and the
//! [`registry`] of worker membership, leader election and the config centre,
//! in process or on ZooKeeper, and the [`dispatch`] of shard assignments, in
//! process or on RabbitMQ. The records and state machines they share live in
//! [`model`]. This crate depends only on `haul-collect-core` and
//! `haul-common` among haul's crates; it knows nothing of the scheduler, the
//! server or concrete plugins.

pub mod dispatch;
pub mod ledger;
pub mod limiter;
pub mod model;
pub mod redis_link;
pub mod registry;
pub mod seen;
pub mod store;
#[cfg(feature = "testsuite")]
pub mod testing;

pub use model::{
    ClaimedShard, Event, JobRecord, Lease, NewRun, QueuedRun, RunFilter, RunRecord, RunRequest, RunState, RunStatus,
    RunTrigger, ShardRecord, ShardState,
};
pub use store::{Error, MySqlStore, PostgresStore, SqliteStore, Store};
