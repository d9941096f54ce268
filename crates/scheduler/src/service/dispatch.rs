//! The embedded dispatcher: a fixed number of worker slots in this process,
//! given to waiting shards in the order the [`crate::planner`] decides
//! (priority with aging, pool quotas, per-job parallelism).
//!
//! A shard asks for a slot with [`SlotDispatcher::acquire`] and holds the
//! returned [`SlotPermit`] while it runs; dropping the permit frees the slot
//! and lets the next shards in. A waiter that gives up (its run was paused)
//! simply drops its future: a slot granted to it comes straight back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use haul_common::clock::Clock;
use haul_common::shutdown::CancellationToken;
use tokio::sync::{oneshot, watch};

use crate::planner::{self, Aging, Quotas, WaitingShard};

/// Hands out worker slots; see the module documentation.
pub struct SlotDispatcher {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    aging: Aging,
}

struct State {
    /// All slots, busy or free.
    capacity: usize,
    quotas: Quotas,
    waiting: Vec<Waiter>,
}

impl State {
    fn busy(&self) -> usize {
        self.quotas.running_by_job.values().sum()
    }
}

struct Waiter {
    shard: WaitingShard,
    grant: oneshot::Sender<SlotPermit>,
}

/// A held worker slot; dropping it frees the slot.
pub struct SlotPermit {
    dispatcher: Arc<SlotDispatcher>,
    job: String,
    pool: String,
}

/// What the dispatcher is doing, for metrics and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchLoad {
    pub slots: usize,
    pub busy: usize,
    pub waiting: usize,
}

impl SlotDispatcher {
    /// `slots` worker slots; `pool_limits` caps the running shards of each named pool.
    pub fn new(slots: usize, pool_limits: HashMap<String, usize>, clock: Arc<dyn Clock>, aging: Aging) -> Arc<Self> {
        let quotas = Quotas {
            free_slots: slots,
            pool_limits,
            running_by_pool: HashMap::new(),
            job_limits: HashMap::new(),
            running_by_job: HashMap::new(),
        };
        let state = State { capacity: slots, quotas, waiting: Vec::new() };
        Arc::new(SlotDispatcher { state: Mutex::new(state), clock, aging })
    }

    /// Waits for a slot for `shard`; at most `job_limit` shards of its job run at once.
    pub async fn acquire(self: &Arc<Self>, shard: WaitingShard, job_limit: usize) -> SlotPermit {
        let (grant, granted) = oneshot::channel();
        let refused = {
            let mut state = self.lock();
            state.quotas.job_limits.insert(shard.job.clone(), job_limit.max(1));
            state.waiting.push(Waiter { shard, grant });
            self.grant(&mut state)
        };
        drop(refused);
        match granted.await {
            Ok(permit) => permit,
            // The sender lives in `waiting` until it is granted, and the
            // dispatcher outlives its waiters (they hold an `Arc` to it).
            Err(_) => unreachable!("a waiter is granted or stays waiting"),
        }
    }

    /// Replaces the pool limits. A raised limit admits waiting shards at once;
    /// a lowered one stops nothing that runs, and admits no new shard of the
    /// pool until its running shards fall below it.
    pub fn set_pool_limits(self: &Arc<Self>, pool_limits: HashMap<String, usize>) {
        let refused = {
            let mut state = self.lock();
            state.quotas.pool_limits = pool_limits;
            self.grant(&mut state)
        };
        drop(refused);
    }

    /// Replaces the number of slots (in distributed mode, the capacity of the
    /// live workers). More slots admit waiting shards at once; fewer stop
    /// nothing that runs, and admit no new shard until the busy slots fall
    /// below the new number.
    pub fn set_slots(self: &Arc<Self>, slots: usize) {
        let refused = {
            let mut state = self.lock();
            state.capacity = slots;
            state.quotas.free_slots = slots.saturating_sub(state.busy());
            self.grant(&mut state)
        };
        drop(refused);
    }

    /// Applies each new value of `pool_limits` (the config centre's `pools`
    /// document) until the sender is gone or `shutdown`.
    pub fn follow_pool_limits(
        self: &Arc<Self>,
        mut pool_limits: watch::Receiver<HashMap<String, usize>>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let dispatcher = self.clone();
        tokio::spawn(async move {
            loop {
                let limits = pool_limits.borrow_and_update().clone();
                dispatcher.set_pool_limits(limits);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = pool_limits.changed() => if changed.is_err() { return },
                }
            }
        })
    }

    pub fn load(&self) -> DispatchLoad {
        let state = self.lock();
        DispatchLoad { slots: state.capacity, busy: state.busy(), waiting: state.waiting.len() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Grants free slots to the waiters the planner picks. Returns the permits
    /// whose waiter had gone, to be dropped once the lock is released.
    fn grant(self: &Arc<Self>, state: &mut State) -> Vec<SlotPermit> {
        state.waiting.retain(|waiter| !waiter.grant.is_closed());
        if state.quotas.free_slots == 0 || state.waiting.is_empty() {
            return Vec::new();
        }
        let shards: Vec<WaitingShard> = state.waiting.iter().map(|waiter| waiter.shard.clone()).collect();
        let mut chosen = planner::select(&shards, &state.quotas, self.clock.now(), &self.aging);
        chosen.sort_unstable_by(|a, b| b.cmp(a));
        let mut refused = Vec::new();
        for index in chosen {
            let waiter = state.waiting.swap_remove(index);
            let (job, pool) = (waiter.shard.job, waiter.shard.pool);
            *state.quotas.running_by_job.entry(job.clone()).or_default() += 1;
            *state.quotas.running_by_pool.entry(pool.clone()).or_default() += 1;
            state.quotas.free_slots -= 1;
            let permit = SlotPermit { dispatcher: self.clone(), job, pool };
            if let Err(permit) = waiter.grant.send(permit) {
                refused.push(permit);
            }
        }
        refused
    }

    fn release(self: &Arc<Self>, job: &str, pool: &str) {
        let refused = {
            let mut state = self.lock();
            decrement(&mut state.quotas.running_by_job, job);
            decrement(&mut state.quotas.running_by_pool, pool);
            state.quotas.free_slots = state.capacity.saturating_sub(state.busy());
            self.grant(&mut state)
        };
        drop(refused);
    }
}

fn decrement(counts: &mut HashMap<String, usize>, key: &str) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.dispatcher.release(&self.job, &self.pool);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use haul_common::clock::ManualClock;

    use super::*;

    fn shard(job: &str, pool: &str, priority: i32, id: &str) -> WaitingShard {
        WaitingShard {
            run_id: format!("run-{job}"),
            shard_id: id.into(),
            job: job.into(),
            pool: pool.into(),
            priority,
            enqueued_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    fn dispatcher(slots: usize, pools: &[(&str, usize)]) -> Arc<SlotDispatcher> {
        let pools = pools.iter().map(|(name, limit)| (name.to_string(), *limit)).collect();
        let clock = Arc::new(ManualClock::new(DateTime::<Utc>::UNIX_EPOCH));
        SlotDispatcher::new(slots, pools, clock, Aging { step: Duration::from_secs(60) })
    }

    #[tokio::test]
    async fn slots_pools_and_jobs_bound_what_runs_and_a_freed_slot_goes_to_the_best_waiter() {
        let dispatcher = dispatcher(3, &[("small", 1)]);
        let a1 = dispatcher.acquire(shard("a", "small", 0, "1"), 5).await;
        // The pool `small` is full: b waits although slots are free.
        let waiting_b = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(shard("b", "small", 0, "1"), 5).await }
        });
        let c1 = dispatcher.acquire(shard("c", "default", 0, "1"), 1).await;
        // Job c allows one shard at a time.
        let waiting_c = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(shard("c", "default", 9, "2"), 1).await }
        });
        tokio::task::yield_now().await;
        while dispatcher.load().waiting < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 3, busy: 2, waiting: 2 });
        drop(a1);
        let b1 = waiting_b.await.unwrap();
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 3, busy: 2, waiting: 1 });
        drop(c1);
        let c2 = waiting_c.await.unwrap();
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 3, busy: 2, waiting: 0 });
        drop((b1, c2));
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 3, busy: 0, waiting: 0 });
    }

    #[tokio::test]
    async fn followed_pool_limits_apply_to_waiting_and_later_shards() {
        let dispatcher = dispatcher(3, &[("small", 1)]);
        let (limits, followed) = watch::channel(HashMap::from([("small".to_string(), 1)]));
        let shutdown = CancellationToken::new();
        let following = dispatcher.follow_pool_limits(followed, shutdown.clone());
        let a1 = dispatcher.acquire(shard("a", "small", 0, "1"), 5).await;
        let waiting_a2 = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(shard("a", "small", 0, "2"), 5).await }
        });
        while dispatcher.load().waiting < 1 {
            tokio::task::yield_now().await;
        }
        // Raised: the waiting shard starts at once.
        limits.send_replace(HashMap::from([("small".to_string(), 2)]));
        let a2 = waiting_a2.await.unwrap();
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 3, busy: 2, waiting: 0 });

        // Lowered below what runs: nothing stops, nothing new starts until
        // the pool is under the new limit.
        limits.send_replace(HashMap::from([("small".to_string(), 1)]));
        while dispatcher.lock().quotas.pool_limits["small"] != 1 {
            tokio::task::yield_now().await;
        }
        let waiting_a3 = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(shard("a", "small", 0, "3"), 5).await }
        });
        while dispatcher.load().waiting < 1 {
            tokio::task::yield_now().await;
        }
        drop(a1);
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 3, busy: 1, waiting: 1 });
        drop(a2);
        let a3 = waiting_a3.await.unwrap();
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 3, busy: 1, waiting: 0 });
        drop(a3);

        shutdown.cancel();
        following.await.unwrap();
    }

    #[tokio::test]
    async fn changed_slots_admit_waiters_or_hold_new_shards_back() {
        let dispatcher = dispatcher(1, &[]);
        let a1 = dispatcher.acquire(shard("a", "default", 0, "1"), 5).await;
        let waiting_a2 = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(shard("a", "default", 0, "2"), 5).await }
        });
        while dispatcher.load().waiting < 1 {
            tokio::task::yield_now().await;
        }
        // A worker joins: the waiting shard starts.
        dispatcher.set_slots(2);
        let a2 = waiting_a2.await.unwrap();
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 2, busy: 2, waiting: 0 });
        // Every worker leaves: what runs goes on, nothing new starts.
        dispatcher.set_slots(0);
        let waiting_a3 = tokio::spawn({
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(shard("a", "default", 0, "3"), 5).await }
        });
        while dispatcher.load().waiting < 1 {
            tokio::task::yield_now().await;
        }
        drop((a1, a2));
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 0, busy: 0, waiting: 1 });
        dispatcher.set_slots(1);
        let a3 = waiting_a3.await.unwrap();
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 1, busy: 1, waiting: 0 });
        drop(a3);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_keep_a_slot() {
        let dispatcher = dispatcher(1, &[]);
        let held = dispatcher.acquire(shard("a", "default", 0, "1"), 5).await;
        let given_up = tokio::time::timeout(Duration::from_millis(10), {
            let dispatcher = dispatcher.clone();
            async move { dispatcher.acquire(shard("b", "default", 0, "1"), 5).await }
        })
        .await;
        assert!(given_up.is_err());
        drop(held);
        assert_eq!(dispatcher.load(), DispatchLoad { slots: 1, busy: 0, waiting: 0 });
        let again = dispatcher.acquire(shard("c", "default", 0, "1"), 5).await;
        assert_eq!(dispatcher.load().busy, 1);
        drop(again);
    }
}
