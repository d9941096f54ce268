//! Runs whose shards remote workers execute (distributed mode). The leading
//! scheduler runs none of their shards itself: it offers each shard to the
//! workers of the run's pool — those carrying the job's worker label, when
//! it names one — through the [`Dispatcher`] once its
//! [`SlotDispatcher`] admits it (the live workers' capacity, priorities, pool
//! quotas, the job's parallelism), follows the shard ledger in the store, and
//! records the run's end once every shard has finished.
//!
//! The shard ledger is the dispatch outbox. A shard that can be claimed
//! (pending, or running on an expired lease) is offered again whenever its
//! epoch moved since it was last offered (a worker claimed it, then released
//! it or died), or when its lease expired at least a lease ttl after the
//! last offer. A shard still pending a lease ttl after its offer is offered
//! again, then at doubling intervals up to [`MAX_REOFFER_INTERVAL`] while it
//! stays pending: an offer the broker lost (a queue deleted, a broker that
//! came back empty) is replaced, and one merely waiting behind busy workers
//! costs a few duplicates. So a crash between admitting a shard and
//! publishing it loses nothing, and neither does the broker: the next leader
//! offers every unfinished shard of every running run. Offers may be
//! duplicated; the lease claim decides who runs a shard.
//!
//! The leader looks at the ledger at least every `remote_poll`, sooner while
//! shards finish (see [`LookBeat`]), and soon after a worker rings the
//! doorbell for a shard of the run that ended; a look reads only the shards in
//! flight, those it tracks and the next pending ones
//! ([`Store::shards_to_follow`](haul_register::Store::shards_to_follow)),
//! so it costs what runs, not the whole run. A shard's slot is freed once a
//! look shows it finished. Slots granted between two looks are offered at
//! once, their publishes in flight together. A run keeps no more shards
//! waiting for a slot than its job's parallelism leaves room for.
//!
//! Stragglers: when a worker slot would otherwise idle, the leader asks the
//! longest-running shard past the straggler threshold (see [`straggler`]) to
//! split, once for what it runs at its current epoch; its owner splits it at
//! its next checkpoint, and the new pending shard is offered like any other.
//! Run times are as the leader saw them: from the first look at a shard
//! running at its epoch to the first look at it finished.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use haul_collect_core::assemble::LoadedJob;
use haul_collect_core::progress::{RunProgress, ShardPhase};
use haul_collect_core::runtime::RunOutcome;
use haul_common::shutdown::CancellationToken;
use haul_register::dispatch::{Dispatcher, ShardAssignment};
use haul_register::{RunRecord, RunState, ShardRecord, ShardState};
use tokio::sync::{broadcast, mpsc};

use super::Platform;
use super::dispatch::SlotPermit;
use super::ledger::ShardTicket;
use super::straggler::{self, RunView};
use crate::planner::WaitingShard;

/// A shard offered to the workers, holding its slot until it finishes.
struct Offer {
    /// The shard's epoch when it was last offered.
    epoch: u64,
    at: DateTime<Utc>,
    /// How long the shard may stay pending at this epoch before it is offered again.
    patience: chrono::Duration,
    _slot: SlotPermit,
}

/// One run's shards as the leader follows them.
struct RemoteRun {
    platform: Platform,
    dispatcher: Arc<dyn Dispatcher>,
    ticket: ShardTicket,
    offers: HashMap<String, Offer>,
    /// Shards waiting for a slot.
    waiting: HashSet<String>,
    /// The latest record of every unfinished shard read at the last look.
    records: HashMap<String, ShardRecord>,
    /// Whether the last look saw shards finish: the next comes sooner.
    finished_since_last_look: bool,
    /// Each shard's place in the run's progress.
    progress_index: HashMap<String, usize>,
    /// When each running shard was first seen running, at which epoch.
    running_since: HashMap<String, (u64, DateTime<Utc>)>,
    /// How long each finished shard ran, as far as the leader saw.
    finished: HashMap<String, Duration>,
    /// The epoch and descriptor of each shard when it was last asked to split.
    split_asked: HashMap<String, (u64, serde_json::Value)>,
    granted: mpsc::UnboundedSender<(String, SlotPermit)>,
    stop: CancellationToken,
}

impl Platform {
    /// Follows a running run whose shards remote workers execute, until every
    /// shard has finished (then records the run's end), the run leaves the
    /// running state, or `stop`.
    pub(super) async fn drive_remote_run(
        &self,
        run: RunRecord,
        job: LoadedJob,
        dispatcher: Arc<dyn Dispatcher>,
        progress: Arc<RunProgress>,
        stop: CancellationToken,
    ) -> RunOutcome {
        let (granted, mut grants) = mpsc::unbounded_channel();
        let mut remote = RemoteRun {
            platform: self.clone(),
            dispatcher,
            ticket: ShardTicket::of(&run, &job),
            offers: HashMap::new(),
            waiting: HashSet::new(),
            records: HashMap::new(),
            finished_since_last_look: false,
            progress_index: progress
                .shards
                .iter()
                .enumerate()
                .map(|(index, shard)| (shard.id.clone(), index))
                .collect(),
            running_since: HashMap::new(),
            finished: HashMap::new(),
            split_asked: HashMap::new(),
            granted,
            stop: stop.clone(),
        };
        // Granted slots are offered between looks without reading the store again.
        let mut beat = LookBeat::new(self.inner.config.remote_poll);
        let mut next_look = tokio::time::Instant::now();
        let mut last_look = next_look;
        let mut rings = self.rings();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return RunOutcome::Stopped,
                _ = tokio::time::sleep_until(next_look) => {
                    match remote.follow(&progress).await {
                        Ok(Some(outcome)) => return outcome,
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(run_id = %run.id, error = %format!("{error:#}"), "following a remote run failed; retrying")
                        }
                    }
                    last_look = tokio::time::Instant::now();
                    next_look = last_look + beat.next(remote.finished_since_last_look);
                },
                ring = rings.recv() => {
                    let for_this_run = match &ring {
                        Ok(run_id) => *run_id == run.id,
                        // Rings were missed, maybe this run's: look.
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        // The sender lives as long as the platform this run holds.
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                    if for_this_run {
                        // Soon, but not sooner than the quickest look after the last one:
                        // rings of shards ending together make one look.
                        next_look = next_look.min(last_look + QUICKEST_LOOK);
                    }
                },
                Some(grant) = grants.recv() => {
                    let mut granted = vec![grant];
                    while let Ok(grant) = grants.try_recv() {
                        granted.push(grant);
                    }
                    remote.offer_granted(granted).await;
                }
            }
        }
    }
}

impl RemoteRun {
    /// Reads the run and its shards, offers what needs offering, and returns
    /// the run's outcome once it has one.
    async fn follow(&mut self, progress: &RunProgress) -> anyhow::Result<Option<RunOutcome>> {
        let store = self.platform.inner.store.clone();
        let run = store.run_status(&self.ticket.run_id).await?;
        if run.state != RunState::Running {
            return Ok(Some(RunOutcome::Stopped));
        }
        // Enough pending shards to fill the room once every offer finished,
        // and at least one, so a run with any left is never taken for done.
        let fill = self.ticket.job_limit.saturating_sub(self.waiting.len()).max(1);
        let pending = u32::try_from(fill).unwrap_or(u32::MAX);
        let records = store.shards_to_follow(&self.ticket.run_id, pending, &self.tracked()).await?;
        self.show_progress(progress, &records);
        if records.iter().all(|record| record.state.is_terminal()) {
            return Ok(Some(RunOutcome::Succeeded));
        }
        let now = self.platform.inner.clock.now();
        let ttl = chrono::Duration::from_std(self.platform.inner.config.lease_ttl).unwrap_or(chrono::Duration::MAX);
        let mut offer_again = Vec::new();
        for record in &records {
            let shard_id = &record.spec.id;
            if record.state.is_terminal() {
                self.offers.remove(shard_id);
            } else if let Some(offer) = self.offers.get(shard_id) {
                let moved_on = offer.epoch != record.epoch;
                let lease_lapsed = record.state == ShardState::Running && now - offer.at >= ttl;
                let unanswered = record.state == ShardState::Pending && now - offer.at >= offer.patience;
                if claimable(record, now) && (moved_on || lease_lapsed || unanswered) {
                    // nobody took the last offer at this epoch: wait longer after this one
                    let patience = if moved_on { ttl } else { next_patience(offer.patience) };
                    offer_again.push((record.clone(), patience));
                }
            }
            self.time(record, now);
        }
        let unoffered = records.iter().filter(|record| {
            let shard_id = &record.spec.id;
            !record.state.is_terminal() && !self.offers.contains_key(shard_id) && !self.waiting.contains(shard_id)
        });
        let to_wait: Vec<String> = unoffered.take(self.room()).map(|record| record.spec.id.clone()).collect();
        for shard_id in to_wait {
            self.request_slot(&shard_id);
            self.waiting.insert(shard_id);
        }
        self.finished_since_last_look = records.iter().any(|record| record.state.is_terminal());
        self.records = records
            .into_iter()
            .filter(|record| !record.state.is_terminal())
            .map(|record| (record.spec.id.clone(), record))
            .collect();
        self.publish(offer_again, now).await;
        self.split_straggler(now).await?;
        Ok(None)
    }

    /// How many more shards the run may hold or wait for: the job's
    /// parallelism bounds its slots, and more waiters than it leaves room for
    /// would only wait longer.
    fn room(&self) -> usize {
        self.ticket.job_limit.max(1).saturating_sub(self.offers.len() + self.waiting.len())
    }

    /// The shards this leader keeps track of, whatever their state now:
    /// offered, waiting for a slot, or last seen running.
    fn tracked(&self) -> Vec<String> {
        let mut tracked: HashSet<&String> = self.offers.keys().collect();
        tracked.extend(&self.waiting);
        tracked.extend(self.running_since.keys());
        tracked.into_iter().cloned().collect()
    }

    /// Shows the workers' progress on the shards read, as far as their checkpoints tell.
    fn show_progress(&self, progress: &RunProgress, records: &[ShardRecord]) {
        for record in records {
            let Some(&index) = self.progress_index.get(&record.spec.id) else { continue };
            let shard = &progress.shards[index];
            shard.subtract(shard.counters());
            shard.add(record.counters);
            if record.state == ShardState::Succeeded {
                shard.set_phase(ShardPhase::Done);
            }
        }
    }

    /// Follows how long each shard runs.
    fn time(&mut self, record: &ShardRecord, now: DateTime<Utc>) {
        let shard_id = &record.spec.id;
        match record.state {
            ShardState::Running => {
                let since = self.running_since.entry(shard_id.clone()).or_insert((record.epoch, now));
                if since.0 != record.epoch {
                    *since = (record.epoch, now);
                }
            }
            ShardState::Succeeded | ShardState::Failed => {
                if let Some((_, since)) = self.running_since.remove(shard_id) {
                    self.finished.insert(shard_id.clone(), (now - since).to_std().unwrap_or_default());
                }
            }
            ShardState::Pending => {
                self.running_since.remove(shard_id);
            }
        }
    }

    /// Asks a straggler to split when a worker slot would otherwise idle.
    async fn split_straggler(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        let queued =
            self.waiting.len() + self.records.values().filter(|record| record.state == ShardState::Pending).count();
        let running: Vec<(String, Duration)> = self
            .records
            .values()
            .filter(|record| record.state == ShardState::Running && !record.split_requested && self.may_ask(record))
            .filter_map(|record| {
                let (_, since) = self.running_since.get(&record.spec.id)?;
                Some((record.spec.id.clone(), (now - *since).to_std().unwrap_or_default()))
            })
            .collect();
        let finished: Vec<Duration> = self.finished.values().copied().collect();
        let view = RunView {
            queued,
            holding: self.offers.len(),
            job_limit: self.ticket.job_limit,
            load: self.platform.inner.dispatcher.load(),
            finished: &finished,
            running: &running,
            minimum: self.platform.inner.config.straggler_after,
        };
        let Some(decision) = straggler::straggler(&view) else { return Ok(()) };
        let Some(record) = self.records.get(&decision.shard_id) else { return Ok(()) };
        let asked = (record.epoch, record.spec.descriptor.clone());
        let store = &self.platform.inner.store;
        let requested = store.request_split(&self.ticket.run_id, &decision.shard_id, &decision.reason).await?;
        self.split_asked.insert(decision.shard_id.clone(), asked);
        if requested {
            tracing::info!(run_id = %self.ticket.run_id, shard = %decision.shard_id, reason = %decision.reason, "asked a straggling shard to split");
            metrics::counter!("haul_split_requests_total", "pool" => self.ticket.pool.clone()).increment(1);
        }
        Ok(())
    }

    /// Whether the shard was not asked to split already for what it runs now.
    fn may_ask(&self, record: &ShardRecord) -> bool {
        self.split_asked
            .get(&record.spec.id)
            .is_none_or(|(epoch, descriptor)| *epoch != record.epoch || *descriptor != record.spec.descriptor)
    }

    /// Waits for a slot for the shard in the background; the grant comes
    /// back through `granted`.
    fn request_slot(&self, shard_id: &str) {
        let waiting = WaitingShard {
            run_id: self.ticket.run_id.clone(),
            shard_id: shard_id.to_string(),
            job: self.ticket.job.clone(),
            pool: self.ticket.pool.clone(),
            priority: self.ticket.priority,
            enqueued_at: self.ticket.enqueued_at,
        };
        let slots = self.platform.inner.dispatcher.clone();
        let job_limit = self.ticket.job_limit;
        let granted = self.granted.clone();
        let stop = self.stop.clone();
        let shard_id = shard_id.to_string();
        tokio::spawn(async move {
            tokio::select! {
                slot = slots.acquire(waiting, job_limit) => { let _ = granted.send((shard_id, slot)); }
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Offers the shards that got a slot, unless a live lease shows a worker
    /// runs one already (after a change of leader): then its slot is only held.
    async fn offer_granted(&mut self, granted: Vec<(String, SlotPermit)>) {
        let now = self.platform.inner.clock.now();
        let patience = self.first_patience();
        let mut to_offer = Vec::new();
        for (shard_id, slot) in granted {
            self.waiting.remove(&shard_id);
            let Some(record) = self.records.get(&shard_id) else { continue };
            if record.state.is_terminal() {
                continue;
            }
            if claimable(record, now) {
                to_offer.push((record.clone(), patience));
            }
            self.offers.insert(shard_id, Offer { epoch: record.epoch, at: now, patience, _slot: slot });
        }
        self.publish(to_offer, now).await;
    }

    /// Offers each shard, all at once; once the broker holds a shard's
    /// offer, it is offered again if still pending after its patience. A
    /// shard whose offer failed is offered again at the next poll: its offer
    /// records no epoch it had.
    async fn publish(&mut self, offers: Vec<(ShardRecord, chrono::Duration)>, now: DateTime<Utc>) {
        let mut publishing = tokio::task::JoinSet::new();
        for (record, patience) in offers {
            let assignment = ShardAssignment {
                run_id: record.run_id.clone(),
                shard_id: record.spec.id.clone(),
                pool: self.ticket.pool.clone(),
                label: self.ticket.worker_label.clone(),
                priority: u8::try_from(self.ticket.priority.clamp(0, i32::from(u8::MAX))).unwrap_or(u8::MAX),
            };
            let dispatcher = self.dispatcher.clone();
            publishing.spawn(async move {
                let published = dispatcher.publish(&assignment).await;
                (record, patience, published)
            });
        }
        while let Some(joined) = publishing.join_next().await {
            let Ok((record, patience, published)) = joined else { continue };
            let offer = self.offers.get_mut(&record.spec.id);
            match published {
                Ok(()) => {
                    metrics::counter!("haul_shards_offered_total", "pool" => self.ticket.pool.clone()).increment(1);
                    if let Some(offer) = offer {
                        offer.patience = patience;
                        offer.epoch = record.epoch;
                        offer.at = now;
                    }
                }
                Err(error) => {
                    tracing::warn!(run_id = %record.run_id, shard = %record.spec.id, error = %format!("{error:#}"), "offering a shard failed");
                    if let Some(offer) = offer {
                        offer.epoch = u64::MAX;
                    }
                }
            }
        }
    }

    /// How long a shard may stay pending after its first offer at an epoch: a lease ttl.
    fn first_patience(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.platform.inner.config.lease_ttl).unwrap_or(chrono::Duration::MAX)
    }
}

/// The wait before the next offer of a shard still pending after one of
/// `patience`: twice as long, up to [`MAX_REOFFER_INTERVAL`].
fn next_patience(patience: chrono::Duration) -> chrono::Duration {
    let max = chrono::Duration::from_std(MAX_REOFFER_INTERVAL).unwrap_or(chrono::Duration::MAX);
    patience.checked_mul(2).unwrap_or(max).min(max)
}

/// Whether a worker could claim the shard now: pending, or running on a
/// lease that expired (by this clock; the store's decides the claim).
fn claimable(record: &ShardRecord, now: DateTime<Utc>) -> bool {
    match record.state {
        ShardState::Pending => true,
        ShardState::Running => record.lease_expires_at.is_none_or(|expires| expires <= now),
        ShardState::Succeeded | ShardState::Failed => false,
    }
}

/// The longest the leader waits between looks at a remote run's shards.
pub const DEFAULT_REMOTE_POLL: Duration = Duration::from_millis(200);

/// How often the leader looks at a run: a look that saw shards finish is
/// followed by another after an eighth of the poll interval (at least
/// [`QUICKEST_LOOK`]), as slots came free; each quiet look doubles the wait,
/// back up to the poll interval. A busy run is followed closely, an idle
/// one costs a look per poll interval.
struct LookBeat {
    poll: Duration,
    wait: Duration,
}

/// The shortest wait between two looks at a run.
const QUICKEST_LOOK: Duration = Duration::from_millis(10);

impl LookBeat {
    fn new(poll: Duration) -> Self {
        LookBeat { poll, wait: poll }
    }

    fn quickest(&self) -> Duration {
        (self.poll / 8).max(QUICKEST_LOOK).min(self.poll)
    }

    /// The wait before the next look, after one that saw shards finish or not.
    fn next(&mut self, finished: bool) -> Duration {
        self.wait = if finished { self.quickest() } else { (self.wait * 2).clamp(self.quickest(), self.poll) };
        self.wait
    }
}

/// The longest a shard stays pending before it is offered again, however
/// often its offers went unanswered.
pub const MAX_REOFFER_INTERVAL: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;
    use haul_collect_core::ShardSpec;
    use haul_collect_core::progress::ShardCounters;

    fn record(state: ShardState, lease_expires_at: Option<DateTime<Utc>>) -> ShardRecord {
        ShardRecord {
            run_id: "r".into(),
            spec: ShardSpec { id: "s".into(), descriptor: serde_json::json!({}) },
            state,
            sequence: 0,
            checkpoint: None,
            counters: ShardCounters::default(),
            epoch: 1,
            owner: None,
            lease_expires_at,
            error: None,
            split_requested: false,
        }
    }

    #[test]
    fn pending_shards_and_lapsed_leases_are_claimable_live_leases_and_finished_shards_are_not() {
        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(100);
        let earlier = now - chrono::Duration::seconds(1);
        let later = now + chrono::Duration::seconds(1);
        assert!(claimable(&record(ShardState::Pending, None), now));
        assert!(claimable(&record(ShardState::Running, Some(earlier)), now));
        assert!(claimable(&record(ShardState::Running, Some(now)), now));
        assert!(!claimable(&record(ShardState::Running, Some(later)), now));
        assert!(!claimable(&record(ShardState::Succeeded, None), now));
        assert!(!claimable(&record(ShardState::Failed, None), now));
    }

    #[test]
    fn looks_come_quickly_while_shards_finish_and_slow_down_to_the_poll_when_quiet() {
        let ms = Duration::from_millis;
        let mut beat = LookBeat::new(ms(200));
        assert_eq!(beat.next(true), ms(25));
        assert_eq!(beat.next(true), ms(25));
        assert_eq!(
            [beat.next(false), beat.next(false), beat.next(false), beat.next(false)],
            [ms(50), ms(100), ms(200), ms(200)]
        );
        assert_eq!(beat.next(true), ms(25));
        // a short poll is never undercut below the quickest look, nor exceeded
        let mut short = LookBeat::new(ms(40));
        assert_eq!(short.next(true), ms(10));
        let mut tiny = LookBeat::new(ms(5));
        assert_eq!((tiny.next(true), tiny.next(false)), (ms(5), ms(5)));
    }

    #[test]
    fn an_unanswered_offer_waits_twice_as_long_for_the_next_up_to_the_maximum() {
        let seconds = chrono::Duration::seconds;
        assert_eq!(next_patience(seconds(3)), seconds(6));
        assert_eq!(next_patience(seconds(200)), seconds(300));
        assert_eq!(next_patience(seconds(300)), seconds(300));
        // never above the maximum, even after a longer lease ttl
        assert_eq!(next_patience(seconds(600)), seconds(300));
    }
}
