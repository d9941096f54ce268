//! Which waiting shards start next: priorities with aging, under the free
//! worker slots, the per-pool quotas and the per-job parallelism limits.
//!
//! [`select`] is the whole decision, and it is greedy: waiting shards are
//! taken in rank order (effective priority, highest first; then the longest
//! waiting; then run and shard id, so the answer is deterministic) and each
//! one starts if a slot is free and neither its pool nor its job is at its
//! limit, counting what this call has already taken. A shard is passed over
//! only because a quota blocks it, and nothing is left waiting while a slot
//! is free and some waiting shard fits.
//!
//! Aging adds one priority point per [`Aging::step`] waited, so a shard that
//! has waited `(p_new - p_old) · step` longer than a newer shard ranks before
//! it, whatever their base priorities: nothing starves.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A shard waiting for a worker slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingShard {
    pub run_id: String,
    pub shard_id: String,
    pub job: String,
    /// The quota group of the job.
    pub pool: String,
    /// The job's base priority; higher starts first.
    pub priority: i32,
    /// When the shard started waiting.
    pub enqueued_at: DateTime<Utc>,
}

/// Capacity left for this call, and the limits that bound it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Worker slots free right now.
    pub free_slots: usize,
    /// Most shards running at once per pool; a pool absent here is unlimited.
    pub pool_limits: HashMap<String, usize>,
    /// Shards running now, per pool.
    pub running_by_pool: HashMap<String, usize>,
    /// Most shards running at once per job (its parallelism); a job absent
    /// here is unlimited.
    pub job_limits: HashMap<String, usize>,
    /// Shards running now, per job.
    pub running_by_job: HashMap<String, usize>,
}

/// How waiting raises a shard's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aging {
    /// One priority point per `step` waited; zero turns aging off.
    pub step: Duration,
}

/// The base priority plus one point per full [`Aging::step`] waited by `now`
/// (none for a shard enqueued after `now`).
pub fn effective_priority(shard: &WaitingShard, now: DateTime<Utc>, aging: &Aging) -> i64 {
    i64::from(shard.priority).saturating_add(aging.points(shard.enqueued_at, now))
}

impl Aging {
    fn points(&self, enqueued_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
        let step_nanos = i64::try_from(self.step.as_nanos()).unwrap_or(i64::MAX);
        if step_nanos == 0 || now <= enqueued_at {
            return 0;
        }
        // Timestamps in nanoseconds (years 1677 to 2262) are the fast path;
        // a wait too long for them saturates: it outranks everything anyway.
        let waited_nanos = match (now.timestamp_nanos_opt(), enqueued_at.timestamp_nanos_opt()) {
            (Some(now), Some(enqueued_at)) => now.saturating_sub(enqueued_at),
            _ => (now - enqueued_at).num_nanoseconds().unwrap_or(i64::MAX),
        };
        waited_nanos / step_nanos
    }
}

/// The indices into `waiting` of the shards to start now, in start order.
///
/// The queue is never sorted as a whole. Shards sharing a pool and a job form
/// a group: they are blocked or not together, and at most
/// `min(free slots, pool room, job room)` of them can start, so only that
/// many of each group are kept while reading `waiting`. Groups are then
/// merged in rank order through a queue per limited pool (unlimited pools
/// share one): a job that fills up drops its group, a pool that fills up
/// drops all of its groups at once.
///
/// Cost, for n waiting shards in g groups and s free slots: one pass over the
/// shards, with one string comparison and one rank comparison per shard when
/// the shards of a group are listed together (a hash lookup when the group
/// changes), O(log s) for each shard that enters its group's best; then
/// O(g + s · log g) to merge.
pub fn select(waiting: &[WaitingShard], quotas: &Quotas, now: DateTime<Utc>, aging: &Aging) -> Vec<usize> {
    if quotas.free_slots == 0 {
        return Vec::new();
    }
    let mut pools = Rooms::new(&quotas.pool_limits, &quotas.running_by_pool);
    let mut jobs = Rooms::new(&quotas.job_limits, &quotas.running_by_job);
    let mut groups = Groups::default();
    for (index, shard) in waiting.iter().enumerate() {
        let group = groups.of(shard, |pool, job| {
            let (pool, job) = (pools.id(pool), jobs.id(job));
            let cap = quotas.free_slots.min(pools.room(pool)).min(jobs.room(job));
            Group { pool, job, cap, kept: BinaryHeap::new() }
        });
        if group.cap > 0 {
            group.offer(Turn::new(shard, index, now, aging));
        }
    }
    merge(groups.list, quotas.free_slots, &mut pools, &mut jobs)
}

/// Takes the groups' kept turns in rank order until the slots are used up or
/// nothing left fits.
fn merge(mut groups: Vec<Group<'_>>, free_slots: usize, pools: &mut Rooms<'_>, jobs: &mut Rooms<'_>) -> Vec<usize> {
    // Each group's turns, best last; each pool's groups by their best turn;
    // the pools by their best group.
    let mut ranked: Vec<Vec<Turn<'_>>> = groups.iter_mut().map(Group::ranked).collect();
    let mut best_by_pool: Vec<Vec<(Turn<'_>, Reverse<usize>)>> = vec![Vec::new(); pools.len()];
    for (id, turns) in ranked.iter_mut().enumerate() {
        if let Some(best) = turns.pop() {
            best_by_pool[groups[id].pool].push((best, Reverse(id)));
        }
    }
    let mut by_pool: Vec<BinaryHeap<(Turn<'_>, Reverse<usize>)>> =
        best_by_pool.into_iter().map(BinaryHeap::from).collect();
    let mut pool_heads: BinaryHeap<(Turn<'_>, Reverse<usize>)> =
        by_pool.iter().enumerate().filter_map(|(pool, queue)| Some((queue.peek()?.0, Reverse(pool)))).collect();

    let mut selected = Vec::with_capacity(free_slots);
    while selected.len() < free_slots
        && let Some((_, Reverse(pool))) = pool_heads.pop()
    {
        if !pools.has_room(pool) {
            continue; // every group of the pool is blocked
        }
        let queue = &mut by_pool[pool];
        let (turn, Reverse(id)) = queue.pop().expect("a pool is queued by its best group");
        let job = groups[id].job;
        if jobs.has_room(job) {
            pools.take(pool);
            jobs.take(job);
            selected.push(turn.index);
            if let Some(next) = ranked[id].pop() {
                queue.push((next, Reverse(id)));
            }
        } // else every shard of the group is blocked: the group leaves the queue
        if let Some(&(best, _)) = queue.peek() {
            pool_heads.push((best, Reverse(pool)));
        }
    }
    selected
}

/// A waiting shard in rank order: the greatest turn starts first. The
/// priority and time are copied in so that comparisons only follow the
/// reference to break ties.
#[derive(Clone, Copy)]
struct Turn<'a> {
    priority: i64,
    enqueued_at: DateTime<Utc>,
    shard: &'a WaitingShard,
    index: usize,
}

impl<'a> Turn<'a> {
    fn new(shard: &'a WaitingShard, index: usize, now: DateTime<Utc>, aging: &Aging) -> Self {
        Turn { priority: effective_priority(shard, now, aging), enqueued_at: shard.enqueued_at, shard, index }
    }
}

impl Ord for Turn<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.enqueued_at.cmp(&self.enqueued_at))
            .then_with(|| other.shard.run_id.cmp(&self.shard.run_id))
            .then_with(|| other.shard.shard_id.cmp(&self.shard.shard_id))
            .then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Turn<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn<'_> {}

/// Waiting shards of one pool and one job.
struct Group<'a> {
    /// Ids in the pool and job [`Rooms`].
    pool: usize,
    job: usize,
    /// How many of the group can start in this call at most.
    cap: usize,
    /// The best `cap` turns offered so far, the worst on top.
    kept: BinaryHeap<Reverse<Turn<'a>>>,
}

impl<'a> Group<'a> {
    fn offer(&mut self, turn: Turn<'a>) {
        if self.kept.len() < self.cap {
            self.kept.push(Reverse(turn));
        } else if let Some(mut worst) = self.kept.peek_mut()
            && turn > worst.0
        {
            *worst = Reverse(turn);
        }
    }

    /// The kept turns, best last.
    fn ranked(&mut self) -> Vec<Turn<'a>> {
        let mut turns: Vec<Turn<'a>> = std::mem::take(&mut self.kept).into_iter().map(|Reverse(turn)| turn).collect();
        turns.sort_unstable();
        turns
    }
}

/// The groups met so far, by pool and job name.
#[derive(Default)]
struct Groups<'a> {
    list: Vec<Group<'a>>,
    ids: HashMap<(&'a str, &'a str), usize>,
    /// The last group looked up: shards listed together skip the hash.
    last: Option<(&'a str, &'a str, usize)>,
}

impl<'a> Groups<'a> {
    /// The group of `shard`, made by `new_group(pool, job)` on first sight.
    fn of(&mut self, shard: &'a WaitingShard, new_group: impl FnOnce(&'a str, &'a str) -> Group<'a>) -> &mut Group<'a> {
        let (pool, job) = (shard.pool.as_str(), shard.job.as_str());
        let id = match self.last {
            Some((last_pool, last_job, id)) if last_pool == pool && last_job == job => id,
            _ => *self.ids.entry((pool, job)).or_insert_with(|| {
                self.list.push(new_group(pool, job));
                self.list.len() - 1
            }),
        };
        self.last = Some((pool, job, id));
        &mut self.list[id]
    }
}

/// The room left under one kind of quota (pools or jobs), per name, with
/// limited names numbered on first sight so that the merge indexes a vector
/// instead of hashing. Every unlimited name shares [`Rooms::UNLIMITED`].
struct Rooms<'a> {
    limits: &'a HashMap<String, usize>,
    running: &'a HashMap<String, usize>,
    ids: HashMap<&'a str, usize>,
    /// Shards that may still start, per id.
    room: Vec<usize>,
    /// The last name looked up: runs of equal names skip the hash.
    last: Option<(&'a str, usize)>,
}

impl<'a> Rooms<'a> {
    const UNLIMITED: usize = 0;

    fn new(limits: &'a HashMap<String, usize>, running: &'a HashMap<String, usize>) -> Self {
        Rooms { limits, running, ids: HashMap::new(), room: vec![usize::MAX], last: None }
    }

    fn id(&mut self, name: &'a str) -> usize {
        if self.limits.is_empty() {
            return Self::UNLIMITED;
        }
        if let Some((last, id)) = self.last
            && last == name
        {
            return id;
        }
        let id = *self.ids.entry(name).or_insert_with(|| match self.limits.get(name) {
            None => Self::UNLIMITED,
            Some(limit) => {
                self.room.push(limit.saturating_sub(self.running.get(name).copied().unwrap_or(0)));
                self.room.len() - 1
            }
        });
        self.last = Some((name, id));
        id
    }

    /// How many ids there are, [`Rooms::UNLIMITED`] included.
    fn len(&self) -> usize {
        self.room.len()
    }

    fn room(&self, id: usize) -> usize {
        self.room[id]
    }

    fn has_room(&self, id: usize) -> bool {
        self.room[id] > 0
    }

    fn take(&mut self, id: usize) {
        if id != Self::UNLIMITED {
            self.room[id] -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use proptest::prelude::*;

    fn base() -> DateTime<Utc> {
        "2025-01-01T00:00:00Z".parse().unwrap()
    }

    fn shard(run: &str, shard: &str, job: &str, pool: &str, priority: i32, enqueued_after_secs: i64) -> WaitingShard {
        WaitingShard {
            run_id: run.into(),
            shard_id: shard.into(),
            job: job.into(),
            pool: pool.into(),
            priority,
            enqueued_at: base() + TimeDelta::seconds(enqueued_after_secs),
        }
    }

    fn slots(free_slots: usize) -> Quotas {
        Quotas { free_slots, ..Quotas::default() }
    }

    const MINUTE_AGING: Aging = Aging { step: Duration::from_secs(60) };
    const NO_AGING: Aging = Aging { step: Duration::ZERO };

    #[test]
    fn aging_adds_a_point_per_full_step_waited() {
        let waiting = shard("r", "s", "j", "p", 5, 0);
        let at = |secs| base() + TimeDelta::seconds(secs);
        assert_eq!(effective_priority(&waiting, at(-30), &MINUTE_AGING), 5, "not enqueued yet");
        assert_eq!(effective_priority(&waiting, at(59), &MINUTE_AGING), 5);
        assert_eq!(effective_priority(&waiting, at(60), &MINUTE_AGING), 6);
        assert_eq!(effective_priority(&waiting, at(3_600), &MINUTE_AGING), 65);
        assert_eq!(effective_priority(&waiting, at(3_600), &NO_AGING), 5);
        let far_future = base() + TimeDelta::days(365 * 1_000);
        let one_nanosecond = Aging { step: Duration::from_nanos(1) };
        assert_eq!(effective_priority(&waiting, far_future, &one_nanosecond), i64::MAX, "saturates");
    }

    #[test]
    fn ranks_by_effective_priority_then_age_then_ids() {
        let waiting = [
            shard("r2", "s1", "j", "p", 1, 0),
            shard("r1", "s2", "j", "p", 1, 0),
            shard("r1", "s1", "j", "p", 1, 0),
            shard("r0", "s0", "j", "p", 1, 30),
            shard("r9", "s9", "j", "p", 3, 100),
        ];
        // At 100 s nothing has aged a full minute: priority 3 first, then age, then ids.
        let now = base() + TimeDelta::seconds(100);
        assert_eq!(select(&waiting, &slots(10), now, &MINUTE_AGING), [4, 2, 1, 0, 3]);
        // At 120 s the three shards enqueued at 0 s have aged 2 points, to 3: tied with the
        // priority 3 shard (aged none), they go first by age; the one enqueued at 30 s aged 1.
        let later = base() + TimeDelta::seconds(120);
        assert_eq!(select(&waiting, &slots(10), later, &MINUTE_AGING), [2, 1, 0, 4, 3]);
        assert_eq!(select(&waiting, &slots(2), later, &MINUTE_AGING), [2, 1]);
        assert!(select(&waiting, &slots(0), later, &MINUTE_AGING).is_empty());
    }

    #[test]
    fn quotas_by_example() {
        let waiting = [
            shard("r1", "s1", "etl", "db", 9, 0),
            shard("r1", "s2", "etl", "db", 9, 0),
            shard("r1", "s3", "etl", "db", 9, 0),
            shard("r2", "s1", "crawl", "web", 5, 0),
            shard("r2", "s2", "crawl", "web", 5, 0),
            shard("r3", "s1", "report", "db", 1, 0),
            shard("r4", "s1", "misc", "unlisted", 0, 0),
        ];
        let quotas = Quotas {
            free_slots: 5,
            pool_limits: HashMap::from([("db".into(), 3), ("web".into(), 4)]),
            running_by_pool: HashMap::from([("db".into(), 1)]),
            job_limits: HashMap::from([("crawl".into(), 1)]),
            running_by_job: HashMap::new(),
        };
        // db has room for 2 (etl s1, s2; etl s3 and report are blocked), crawl for 1,
        // the unlisted pool and the job without a limit are unlimited.
        assert_eq!(select(&waiting, &quotas, base(), &NO_AGING), [0, 1, 3, 6]);
    }

    /// Ranks by sorting the whole queue: the reference `select` must agree with.
    fn rank_order(waiting: &[WaitingShard], now: DateTime<Utc>, aging: &Aging) -> Vec<usize> {
        let mut order: Vec<usize> = (0..waiting.len()).collect();
        order.sort_by_key(|&index| {
            let shard = &waiting[index];
            (Reverse(effective_priority(shard, now, aging)), shard.enqueued_at, &shard.run_id, &shard.shard_id, index)
        });
        order
    }

    /// Shards taken so far per pool and job, against the quotas.
    struct Taken<'a> {
        quotas: &'a Quotas,
        by_pool: HashMap<&'a str, usize>,
        by_job: HashMap<&'a str, usize>,
    }

    impl<'a> Taken<'a> {
        fn new(quotas: &'a Quotas) -> Self {
            Taken { quotas, by_pool: HashMap::new(), by_job: HashMap::new() }
        }

        fn fits(&self, shard: &WaitingShard) -> bool {
            let under = |limits: &HashMap<String, usize>,
                         running: &HashMap<String, usize>,
                         taken: &HashMap<&str, usize>,
                         name: &str| {
                limits.get(name).is_none_or(|limit| {
                    running.get(name).copied().unwrap_or(0) + taken.get(name).copied().unwrap_or(0) < *limit
                })
            };
            under(&self.quotas.pool_limits, &self.quotas.running_by_pool, &self.by_pool, &shard.pool)
                && under(&self.quotas.job_limits, &self.quotas.running_by_job, &self.by_job, &shard.job)
        }

        fn take(&mut self, shard: &'a WaitingShard) {
            *self.by_pool.entry(&shard.pool).or_default() += 1;
            *self.by_job.entry(&shard.job).or_default() += 1;
        }
    }

    fn reference_select(waiting: &[WaitingShard], quotas: &Quotas, now: DateTime<Utc>, aging: &Aging) -> Vec<usize> {
        let mut taken = Taken::new(quotas);
        let mut selected = Vec::new();
        for index in rank_order(waiting, now, aging) {
            if selected.len() == quotas.free_slots {
                break;
            }
            if taken.fits(&waiting[index]) {
                taken.take(&waiting[index]);
                selected.push(index);
            }
        }
        selected
    }

    const POOLS: &[&str] = &["db", "web", "files"];
    const JOBS: &[&str] = &["etl", "crawl", "report", "sync"];

    fn any_waiting() -> impl Strategy<Value = Vec<WaitingShard>> {
        let one = (0..4usize, 0..6usize, prop::sample::select(JOBS), prop::sample::select(POOLS), -3i32..4, 0i64..600);
        prop::collection::vec(one, 0..40).prop_map(|shards| {
            shards
                .into_iter()
                .map(|(run, id, job, pool, priority, after)| {
                    shard(&format!("r{run}"), &format!("s{id}"), job, pool, priority, after)
                })
                .collect()
        })
    }

    fn any_counts(names: &'static [&'static str], most: usize) -> impl Strategy<Value = HashMap<String, usize>> {
        prop::collection::hash_map(prop::sample::select(names).prop_map(String::from), 0..=most, 0..=names.len())
    }

    fn any_quotas() -> impl Strategy<Value = Quotas> {
        (0usize..10, any_counts(POOLS, 4), any_counts(POOLS, 5), any_counts(JOBS, 3), any_counts(JOBS, 4)).prop_map(
            |(free_slots, pool_limits, running_by_pool, job_limits, running_by_job)| Quotas {
                free_slots,
                pool_limits,
                running_by_pool,
                job_limits,
                running_by_job,
            },
        )
    }

    fn any_moment() -> impl Strategy<Value = (DateTime<Utc>, Aging)> {
        (0i64..1_200, 0u64..300)
            .prop_map(|(now, step)| (base() + TimeDelta::seconds(now), Aging { step: Duration::from_secs(step) }))
    }

    proptest! {
        #[test]
        fn select_agrees_with_sorting_the_whole_queue(waiting in any_waiting(), quotas in any_quotas(), (now, aging) in any_moment()) {
            prop_assert_eq!(select(&waiting, &quotas, now, &aging), reference_select(&waiting, &quotas, now, &aging));
        }

        #[test]
        fn quotas_are_never_exceeded(waiting in any_waiting(), quotas in any_quotas(), (now, aging) in any_moment()) {
            let selected = select(&waiting, &quotas, now, &aging);
            prop_assert!(selected.len() <= quotas.free_slots);
            let distinct: std::collections::HashSet<usize> = selected.iter().copied().collect();
            prop_assert_eq!(distinct.len(), selected.len());
            let mut taken = Taken::new(&quotas);
            for &index in &selected {
                taken.take(&waiting[index]);
            }
            let room = |limits: &HashMap<String, usize>, running: &HashMap<String, usize>, name: &str| {
                limits.get(name).map(|limit| limit.saturating_sub(running.get(name).copied().unwrap_or(0)))
            };
            for (pool, count) in &taken.by_pool {
                prop_assert!(room(&quotas.pool_limits, &quotas.running_by_pool, pool).is_none_or(|room| *count <= room), "pool {}", pool);
            }
            for (job, count) in &taken.by_job {
                prop_assert!(room(&quotas.job_limits, &quotas.running_by_job, job).is_none_or(|room| *count <= room), "job {}", job);
            }
        }

        #[test]
        fn a_passed_over_shard_was_blocked_by_a_quota(waiting in any_waiting(), quotas in any_quotas(), (now, aging) in any_moment()) {
            let selected = select(&waiting, &quotas, now, &aging);
            let Some(&last_selected) = selected.last() else { return Ok(()) };
            let mut taken = Taken::new(&quotas);
            let mut started = selected.iter();
            for index in rank_order(&waiting, now, &aging) {
                let shard = &waiting[index];
                if selected.contains(&index) {
                    prop_assert_eq!(started.next(), Some(&index), "shards start in rank order");
                    taken.take(shard);
                } else {
                    prop_assert!(!taken.fits(shard), "shard {} outranks a started one and fits", index);
                }
                if index == last_selected {
                    break;
                }
            }
        }

        #[test]
        fn no_slot_stays_free_while_a_fitting_shard_waits(waiting in any_waiting(), quotas in any_quotas(), (now, aging) in any_moment()) {
            let selected = select(&waiting, &quotas, now, &aging);
            if selected.len() < quotas.free_slots {
                let mut taken = Taken::new(&quotas);
                for &index in &selected {
                    taken.take(&waiting[index]);
                }
                for (index, shard) in waiting.iter().enumerate() {
                    prop_assert!(selected.contains(&index) || !taken.fits(shard), "shard {} fits a free slot", index);
                }
            }
        }

        /// A shard that waited `(p_new - p_old) · step` longer than a newer
        /// one ranks first, whatever their base priorities.
        #[test]
        fn waiting_long_enough_outranks_any_newer_shard(
            old_priority in -1_000i32..1_000,
            new_priority in -1_000i32..1_000,
            step_secs in 1u64..3_600,
            extra_wait_secs in 0i64..10_000,
            since_new_secs in 0i64..100_000,
        ) {
            let aging = Aging { step: Duration::from_secs(step_secs) };
            let head_start = i64::from(new_priority - old_priority).max(0) * step_secs as i64 + extra_wait_secs;
            let newer = shard("new", "s", "j", "p", new_priority, head_start);
            let older = shard("old", "s", "j", "p", old_priority, 0);
            let now = newer.enqueued_at + TimeDelta::seconds(since_new_secs);
            prop_assert_eq!(select(&[newer, older], &slots(1), now, &aging), [1]);
        }
    }

    /// One round of a busy server: `arrivals` new shards enqueued now, then
    /// one slot frees up. Returns, per shard, the rounds it waited.
    fn simulate(arrivals: &[Vec<i32>], step: Duration, round: TimeDelta, drain_rounds: usize) -> Vec<Option<usize>> {
        let aging = Aging { step };
        let mut waiting: Vec<(usize, WaitingShard)> = Vec::new();
        let mut waited = Vec::new();
        for number in 0..arrivals.len() + drain_rounds {
            let now = base() + round * number as i32;
            for &priority in arrivals.get(number).into_iter().flatten() {
                let id = waited.len();
                waited.push(None);
                waiting.push((
                    id,
                    WaitingShard { enqueued_at: now, ..shard("run", &format!("{id:06}"), "job", "pool", priority, 0) },
                ));
            }
            let queue: Vec<WaitingShard> = waiting.iter().map(|(_, shard)| shard.clone()).collect();
            if let Some(&index) = select(&queue, &slots(1), now, &aging).first() {
                let (id, started) = waiting.remove(index);
                waited[id] = Some(((now - started.enqueued_at).num_milliseconds() / round.num_milliseconds()) as usize);
            }
        }
        waited
    }

    const MAX_PRIORITY: i32 = 10;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Under a stream of arrivals (0 to 2 per round, so the queue can
        /// grow) with one slot per round, a shard of priority p waits at most
        /// as many rounds as there are shards that could ever rank before it:
        /// those already waiting when it arrived, plus those arriving within
        /// `(MAX_PRIORITY - p) · step` after it (later ones rank after it).
        #[test]
        fn with_aging_every_shard_starts_within_its_bound(
            arrivals in prop::collection::vec(prop::collection::vec(0..=MAX_PRIORITY, 0..=2), 1..150),
            step_rounds in 1i32..8,
        ) {
            let round = TimeDelta::seconds(10);
            let step = (round * step_rounds).to_std().unwrap();
            let waited = simulate(&arrivals, step, round, 400);
            let arrival_round: Vec<(usize, i32)> = arrivals
                .iter()
                .enumerate()
                .flat_map(|(number, priorities)| priorities.iter().map(move |priority| (number, *priority)))
                .collect();
            for (id, &(arrived, priority)) in arrival_round.iter().enumerate() {
                let Some(waited_rounds) = waited[id] else {
                    return Err(TestCaseError::fail(format!("shard {id} never started")));
                };
                let window_rounds = ((MAX_PRIORITY - priority) * step_rounds).max(1) as usize;
                let could_rank_before = arrival_round
                    .iter()
                    .enumerate()
                    .filter(|&(other, &(other_arrived, _))| {
                        let still_waiting_at_arrival =
                            other_arrived < arrived && waited[other].is_some_and(|rounds| other_arrived + rounds >= arrived);
                        let arrived_within_window = other_arrived >= arrived && other_arrived - arrived < window_rounds;
                        other != id && (still_waiting_at_arrival || arrived_within_window)
                    })
                    .count();
                prop_assert!(
                    waited_rounds <= could_rank_before,
                    "shard {} of priority {} waited {} rounds, bound {}", id, priority, waited_rounds, could_rank_before
                );
            }
        }
    }

    #[test]
    fn without_aging_a_low_priority_shard_starves() {
        // One high-priority arrival per round fills the only slot every time.
        let mut arrivals = vec![vec![0, 5]];
        arrivals.extend(std::iter::repeat_n(vec![5], 500));
        let round = TimeDelta::seconds(10);
        assert_eq!(simulate(&arrivals, Duration::ZERO, round, 0)[0], None);
        // With a point per minute it overtakes newcomers after 5 minutes = 30 rounds.
        assert_eq!(simulate(&arrivals, Duration::from_secs(60), round, 0)[0], Some(30));
    }
}
