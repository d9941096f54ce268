//! The `file` source and the `file` sink.
//!
//! The source reads CSV and JSON Lines files (plain or gzip) matched by a path
//! or a glob pattern. Each file is a shard, and a large uncompressed file is
//! split into byte ranges that own the lines starting inside them. Checkpoints
//! are byte offsets, so a shard resumes exactly after its last record; bad
//! records are rejected with their line and never fail the shard.
//!
//! The sink writes one part file per commit (JSON Lines, CSV or Parquet) to a
//! hidden temporary name and renames it into place on commit, which makes a
//! repeated commit replace rather than duplicate its part.

mod columns;
mod csv_read;
mod csv_write;
mod estimate;
mod input;
mod jsonl_read;
mod jsonl_write;
mod parquet_write;
mod part;
mod plan;
mod read;
mod sink;
mod source;

pub use plan::{InputCompression, InputFormat};
pub use sink::{FileSinkConfig, FileSinkPlugin, OutputCompression, OutputFormat};
pub use source::{FileSourceConfig, FileSourcePlugin};

pub(crate) use jsonl_write::JsonRows;
