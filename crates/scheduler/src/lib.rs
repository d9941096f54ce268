//! haul's scheduler. Today it owns planning: the pure decisions of what runs
//! next and where. Cron schedules in a time zone and what a tick fires
//! ([`cron`]), what a due run does while another runs ([`overlap`]),
//! dependencies between jobs ([`dag`]), which waiting shards start under
//! priorities, aging and quotas ([`planner`]), the intervals of a backfill
//! ([`backfill`]), and when a failed run is retried ([`retry`]).
//!
//! Planning does no IO: it reads no clock (`now` is always a parameter),
//! touches no store, network or file, spawns nothing and logs nothing, so
//! every decision is a function of its arguments and is property-tested.
//! The scheduler service, the run lifecycle and the worker agent call these
//! functions and do the IO through `haul-register`.
//!
//! `haul run` executes one job in-process and does not need this crate;
//! `haul server` and `haul worker` are built on it. It depends on
//! `haul-common` and `haul-register` only.

pub mod backfill;
pub mod cron;
pub mod dag;
mod delta;
pub mod overlap;
pub mod planner;
pub mod retry;

pub use backfill::{BackfillError, Interval, MAX_BACKFILL_INTERVALS, fixed_intervals, intervals};
pub use cron::{CronSchedule, Due, MAX_COUNTED_MISSES, MisfirePolicy, ScheduleError, ScheduleSpec, due};
pub use dag::{DagError, DependencyGraph, Readiness, UpstreamFailurePolicy, UpstreamState, readiness};
pub use overlap::{OverlapDecision, OverlapPolicy, decide};
pub use planner::{Aging, Quotas, WaitingShard, effective_priority, select};
pub use retry::{RunRetryPolicy, next_attempt_at};

pub mod lifecycle;
pub mod service;
pub mod worker;
