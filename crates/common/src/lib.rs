//! Infrastructure shared by every haul crate, and nothing else: environment
//! interpolation for secrets, durations in job files, the clock, retry with backoff,
//! the shutdown signal, and telemetry setup.
//!
//! This crate must not know any domain type (jobs, runs, shards, records):
//! those live in `haul-collect-core` and above.

pub mod clock;
pub mod duration;
pub mod env;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
