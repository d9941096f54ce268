//! The `http` source: records from REST/JSON APIs (and NDJSON or CSV
//! responses), collected page after page through the shared [`crate::web`]
//! client, so per-host limits, retries and `Retry-After` hold across every
//! shard and source of the process.
//!
//! A run has one shard, or one per `partitions` value and, in range mode,
//! per window of the range. Each shard pages through its responses with one
//! of the paginators (page number, offset, cursor, next URL, `Link` header)
//! and checkpoints the request state of its next page, so a resumed shard
//! starts at the page after the last one in the sink. Incremental runs send
//! the job's high-water mark as `{since}` and raise it to the greatest
//! cursor value the run read. A page whose body cannot be read goes to the
//! dead letters with its position when the paginator can go on without it,
//! and fails the shard otherwise.

mod auth;
mod fetch;
mod link_header;
mod mark;
mod pagination;
mod plan;
mod reader;
mod records;
mod request;
mod source;
mod template;

pub use auth::{AuthConfig, CredentialsIn, KeyLocation};
pub use pagination::PaginationConfig;
pub use plan::RangeStep;
pub use records::ResponseFormat;
pub use request::BodyFormat;
pub use source::{HttpSource, HttpSourceConfig, HttpSourcePlugin, PlainValue};
