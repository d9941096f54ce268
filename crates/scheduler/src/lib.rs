//! haul's scheduler: planning (cron, dependencies, priorities, quotas, shard
//! placement — pure functions, no IO), the run lifecycle driven through the
//! `haul-register` store, the scheduler service and the worker agent.
//!
//! `haul run` executes one job in-process and does not need it; `haul server`
//! and `haul worker` are built on it. It depends on `haul-register` only.
