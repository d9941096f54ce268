//! The `sql` source and sink for PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! The source splits a table (or a trusted user query) into half-open ranges
//! of a unique split key, reads each with one streaming query ordered by the
//! key, and resumes after the last key delivered; the split key must be
//! unique or a resumed shard may skip rows sharing the last key. The sink
//! writes with bulk statements (COPY, multi-row INSERT) inside transactions
//! made durable by the runtime's commit.

mod catalog;
mod connection;
mod convert;
mod copy;
mod copy_in;
mod decode;
mod descriptor;
mod dialect;
mod errors;
mod plan;
mod planner;
mod reader;
mod shared_pools;
mod sink;
mod source;
mod split;
mod statement;
mod write;

pub use sink::{SqlSinkConfig, SqlSinkPlugin, WriteMode};
pub use source::{SqlSourceConfig, SqlSourcePlugin};
