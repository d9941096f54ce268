//! The pipeline runtime: runs a run's shards in parallel, moving batches from
//! the source through the processors into the sink.
//!
//! Per shard it keeps the guarantee of DESIGN.md: a checkpoint is reported to
//! the [`Ledger`] only after the sink's writer has committed every batch up to
//! it. Reading runs one batch ahead of writing (a small bounded channel), so
//! the source and the sink work at the same time.
//!
//! Failures: a transient error discards the uncommitted work, waits with
//! backoff, and reopens the shard at its last checkpoint; any other error
//! fails the shard. Rejected records go to the dead letters (synced before
//! each commit of the writer, with the checkpoint) and count against the
//! error limit; exceeding it stops the run as failed. A stop request
//! (Ctrl-C) makes every shard commit what it has written, save its checkpoint
//! and give the shard back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use haul_common::retry::RetryPolicy;
use haul_common::shutdown::CancellationToken;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::deadletter::DeadLetters;
use crate::error_limit::ErrorLimit;
use crate::flow::{InProcessLimiter, Limiter, ScopedRateLimit, Throttle};
use crate::plugin::WriterContext;
use crate::progress::{RunProgress, ShardCounters, ShardPhase, ShardProgress};
use crate::transient::is_transient;
use crate::{Checkpoint, Processor, Rejected, ShardSpec, ShardWriter, Sink, Source, SourceBatch};

/// The plugins of a job, built; clones share them.
#[derive(Clone)]
pub struct Pipeline {
    pub source: Arc<dyn Source>,
    pub processors: Vec<Arc<dyn Processor>>,
    pub sink: Arc<dyn Sink>,
}

/// How a run executes.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub job: String,
    pub run_id: String,
    pub parallelism: usize,
    pub batch_size: usize,
    /// How often a shard commits its writer and saves its checkpoint.
    pub checkpoint_interval: Duration,
    pub retry: RetryPolicy,
    pub error_limit: ErrorLimit,
    /// The rate limits the run's batches pass under, at every scope that has
    /// one (the job's `[rate_limit]`, its pool, the source's endpoint, the
    /// whole deployment); they may change while it runs.
    pub rate_limits: Vec<ScopedRateLimit>,
    /// Where `rate_limits` take their permits: this process's own buckets, or
    /// a limiter shared by every worker.
    pub limiter: Arc<dyn Limiter>,
    /// A shard still going this long after it started fails (retries included).
    pub shard_timeout: Option<Duration>,
}

impl RunSettings {
    /// The settings a job file gives a run, limited in this process alone.
    pub fn for_job(spec: &crate::job::JobSpec, run_id: &str) -> Self {
        RunSettings {
            job: spec.name.clone(),
            run_id: run_id.to_string(),
            parallelism: spec.parallelism,
            batch_size: spec.batch_size,
            checkpoint_interval: spec.checkpoint_interval.0,
            retry: spec.retry,
            error_limit: spec.error_limit,
            rate_limits: vec![ScopedRateLimit::job(&spec.name, spec.rate_limit)],
            limiter: Arc::new(InProcessLimiter::new()),
            shard_timeout: spec.platform.shard_timeout.map(|timeout| timeout.0),
        }
    }
}

/// Where a shard resumes: its last saved checkpoint and what it had done by then.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResumePoint {
    /// The sequence number of the writer's last commit (0 before the first).
    pub sequence: u64,
    pub checkpoint: Option<Checkpoint>,
    pub counters: ShardCounters,
}

/// How a shard's execution ended, as told to the ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardOutcome {
    Succeeded,
    Failed(String),
    /// Stopped at a checkpoint; the shard can be resumed.
    Released,
}

/// The shard ledger of a run: ownership and checkpoints, backed by the store.
///
/// `acquire` is called before a shard runs, `checkpoint` after each writer
/// commit but the last, `finish` once. An error from `checkpoint` (for
/// example a lost lease) stops the shard at once: another owner may be
/// running it.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Takes ownership of the shard. `None` when it is finished or owned elsewhere.
    async fn acquire(&self, shard: &ShardSpec) -> anyhow::Result<Option<ResumePoint>>;

    async fn checkpoint(&self, shard: &ShardSpec, resume: &ResumePoint) -> anyhow::Result<()>;

    /// Confirms, right before the writer commits, that the shard is still
    /// owned here; an error stops the shard without committing, so that a
    /// process that lost its lease (frozen past it) does not publish output
    /// its successor also writes. Ledgers whose owners cannot overlap keep
    /// the default, which confirms nothing.
    async fn fence(&self, _shard: &ShardSpec) -> anyhow::Result<()> {
        Ok(())
    }

    /// Whether the shard was asked to split (a straggler others could help
    /// with). Asked after every saved checkpoint, so it must be cheap: a
    /// flag kept in memory. Ledgers that cannot split keep the default.
    async fn split_requested(&self, _shard: &ShardSpec) -> bool {
        false
    }

    /// Splits the owned shard: its descriptor becomes `kept` and `new_shard`
    /// joins the run for another owner, in one write; clears the request.
    /// Called right after a saved checkpoint; the runtime then goes on with
    /// `kept` from that checkpoint. An error fails the shard, as a failed
    /// checkpoint does.
    async fn split(&self, shard: &ShardSpec, _kept: &serde_json::Value, _new_shard: &ShardSpec) -> anyhow::Result<()> {
        anyhow::bail!("shard {} cannot split: this ledger has no other owner to give a part to", shard.id)
    }

    /// Ends the shard's ownership with `outcome`, saving `reached` with it:
    /// the shard's position after the writer's last commit, which was not
    /// reported through `checkpoint`.
    async fn finish(&self, shard: &ShardSpec, outcome: &ShardOutcome, reached: &ResumePoint) -> anyhow::Result<()>;
}

/// How a run ended in this process.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Succeeded,
    /// Stopped on request; every running shard saved its checkpoint.
    Stopped,
    Failed(Vec<String>),
}

/// The end of a run's execution.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: RunOutcome,
    pub totals: ShardCounters,
    pub elapsed: Duration,
}

/// Creates the progress counters for `shards`, to share with a display before [`execute`].
pub fn progress_for(shards: &[ShardSpec]) -> Arc<RunProgress> {
    let shards = shards.iter().map(|s| Arc::new(ShardProgress::new(&s.id, ShardCounters::default()))).collect();
    Arc::new(RunProgress { shards })
}

struct RunContext {
    pipeline: Pipeline,
    settings: RunSettings,
    ledger: Arc<dyn Ledger>,
    dead_letters: Arc<dyn DeadLetters>,
    throttle: Throttle,
    progress: Arc<RunProgress>,
    /// Cancelled on a stop request.
    stop: CancellationToken,
    /// Cancelled when the run must fail (error limit); a child of `stop` is not enough
    /// because a failing run must still tell why.
    abort: CancellationToken,
    abort_reason: Mutex<Option<String>>,
}

impl RunContext {
    fn halted(&self) -> bool {
        self.stop.is_cancelled() || self.abort.is_cancelled()
    }

    async fn halt_requested(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.abort.cancelled() => {}
        }
    }

    fn fail_run(&self, reason: String) {
        if let Ok(mut slot) = self.abort_reason.lock() {
            slot.get_or_insert(reason);
        }
        self.abort.cancel();
    }
}

/// Runs `shards` to completion, to a stop request, or to failure.
pub async fn execute(
    pipeline: Pipeline,
    settings: RunSettings,
    shards: Vec<ShardSpec>,
    ledger: Arc<dyn Ledger>,
    dead_letters: Arc<dyn DeadLetters>,
    progress: Arc<RunProgress>,
    stop: CancellationToken,
) -> RunReport {
    let started = Instant::now();
    let context = Arc::new(RunContext {
        throttle: Throttle::new(&settings.rate_limits, settings.limiter.clone()),
        pipeline,
        settings,
        ledger,
        dead_letters,
        progress,
        stop,
        abort: CancellationToken::new(),
        abort_reason: Mutex::new(None),
    });
    let slots = Arc::new(Semaphore::new(context.settings.parallelism.max(1)));
    let mut tasks = JoinSet::new();
    for (index, shard) in shards.into_iter().enumerate() {
        let context = context.clone();
        let slots = slots.clone();
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let progress = context.progress.shards.get(index).cloned().unwrap_or_default();
            if context.halted() {
                return ShardEnd::Stopped;
            }
            run_shard(&context, &shard, &progress).await
        });
    }

    let mut failures = Vec::new();
    let mut stopped = false;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(ShardEnd::Done) => {}
            Ok(ShardEnd::Stopped) => stopped = true,
            Ok(ShardEnd::Failed(message)) => failures.push(message),
            Err(panic) => failures.push(format!("a shard task panicked: {panic}")),
        }
    }

    let totals = context.progress.totals();
    if let Ok(Some(reason)) = context.abort_reason.lock().map(|r| r.clone()) {
        failures.insert(0, reason);
    }
    let error_limit = context.settings.error_limit;
    if failures.is_empty() && !stopped && error_limit.exceeded_at_end(totals.records_rejected, totals.records_read) {
        failures.push(format!(
            "{} records rejected out of {} read, more than the error limit of {error_limit}",
            totals.records_rejected, totals.records_read
        ));
    }
    let outcome = if !failures.is_empty() {
        RunOutcome::Failed(failures)
    } else if stopped {
        RunOutcome::Stopped
    } else {
        RunOutcome::Succeeded
    };
    RunReport { outcome, totals, elapsed: started.elapsed() }
}

enum ShardEnd {
    Done,
    Stopped,
    Failed(String),
}

/// How one attempt at a shard ended without error.
enum AttemptEnd {
    Exhausted,
    Halted,
    /// The shard was split at its last checkpoint: it goes on with this spec.
    Split(ShardSpec),
}

async fn run_shard(context: &RunContext, planned: &ShardSpec, progress: &ShardProgress) -> ShardEnd {
    let mut shard = planned.clone();
    let shard = &mut shard;
    let mut resume = match context.ledger.acquire(shard).await {
        Ok(Some(resume)) => resume,
        // Not acquired because the run was halted meanwhile: the shard did not run.
        Ok(None) if context.halted() => {
            progress.set_phase(ShardPhase::Stopped);
            return ShardEnd::Stopped;
        }
        Ok(None) => {
            progress.set_phase(ShardPhase::Done);
            return ShardEnd::Done;
        }
        Err(error) => return ShardEnd::Failed(format!("shard {}: {error:#}", shard.id)),
    };
    progress.add(resume.counters);
    if progress.estimated_records.load(std::sync::atomic::Ordering::Relaxed) == 0
        && let Some(estimate) = context.pipeline.source.estimate(shard).await
    {
        progress.estimated_records.store(estimate, std::sync::atomic::Ordering::Relaxed);
    }

    let mut delays = context.settings.retry.delays();
    let deadline = context.settings.shard_timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let mut splits = SplitState::default();
    loop {
        progress.set_phase(ShardPhase::Running);
        let sequence_before = resume.sequence;
        let error = match attempt(context, shard, &mut resume, progress, deadline, &mut splits).await {
            Ok(AttemptEnd::Exhausted) => {
                return finish(context, shard, ShardOutcome::Succeeded, &resume, progress).await;
            }
            Ok(AttemptEnd::Halted) => return finish(context, shard, ShardOutcome::Released, &resume, progress).await,
            Ok(AttemptEnd::Split(kept)) => {
                *shard = kept;
                delays = context.settings.retry.delays();
                continue;
            }
            Err(error) => error,
        };
        if resume.sequence > sequence_before {
            delays = context.settings.retry.delays();
        }
        let delay = if is_transient(&error) && !context.halted() { delays.next() } else { None };
        match delay {
            Some(delay) => {
                tracing::warn!(shard = %shard.id, delay_ms = delay.as_millis() as u64, error = %format!("{error:#}"), "transient error, retrying from the last checkpoint");
                progress.set_phase(ShardPhase::Retrying);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = context.halt_requested() => {
                        return finish(context, shard, ShardOutcome::Released, &resume, progress).await;
                    }
                }
            }
            None => {
                let message = format!("shard {}: {error:#}", shard.id);
                return finish(context, shard, ShardOutcome::Failed(message), &resume, progress).await;
            }
        }
    }
}

async fn finish(
    context: &RunContext,
    shard: &ShardSpec,
    outcome: ShardOutcome,
    resume: &ResumePoint,
    progress: &ShardProgress,
) -> ShardEnd {
    let end = match &outcome {
        ShardOutcome::Succeeded => ShardEnd::Done,
        ShardOutcome::Released => ShardEnd::Stopped,
        ShardOutcome::Failed(message) => ShardEnd::Failed(message.clone()),
    };
    progress.set_phase(match end {
        ShardEnd::Done => ShardPhase::Done,
        ShardEnd::Stopped => ShardPhase::Stopped,
        ShardEnd::Failed(_) => ShardPhase::Failed,
    });
    match context.ledger.finish(shard, &outcome, resume).await {
        Ok(()) => end,
        Err(error) => ShardEnd::Failed(format!("shard {}: recording its end failed: {error:#}", shard.id)),
    }
}

/// Work written to the sink but not yet committed.
#[derive(Default)]
struct Uncommitted {
    checkpoint: Option<Checkpoint>,
    counters: ShardCounters,
}

/// Whether a shard's owner may still split it.
#[derive(Default)]
struct SplitState {
    /// The source declined a requested split: it is not asked again.
    declined: bool,
}

/// After a saved checkpoint: splits the shard if the ledger asks for it and
/// the source can, returning the spec the shard goes on with.
async fn split_if_requested(
    context: &RunContext,
    shard: &ShardSpec,
    resume: &ResumePoint,
    splits: &mut SplitState,
) -> anyhow::Result<Option<ShardSpec>> {
    if splits.declined || !context.ledger.split_requested(shard).await {
        return Ok(None);
    }
    let parts = context.pipeline.source.split(shard, resume.checkpoint.as_ref()).await?;
    let Some((kept, rest)) = parts else {
        tracing::info!(shard = %shard.id, "the source cannot split the shard; it runs on whole");
        splits.declined = true;
        return Ok(None);
    };
    // A shard splits at most once per commit, and its sequence goes on
    // across owners: the name is unique in the run.
    let new_shard = ShardSpec { id: format!("{}.s{}", shard.id, resume.sequence), descriptor: rest };
    context.ledger.split(shard, &kept, &new_shard).await.context("recording the split")?;
    tracing::info!(shard = %shard.id, new_shard = %new_shard.id, "split the shard: another owner takes the rest");
    Ok(Some(ShardSpec { id: shard.id.clone(), descriptor: kept }))
}

/// One pass over a shard from `resume`, updating `resume` at every commit.
async fn attempt(
    context: &RunContext,
    shard: &ShardSpec,
    resume: &mut ResumePoint,
    progress: &ShardProgress,
    deadline: Option<tokio::time::Instant>,
    splits: &mut SplitState,
) -> anyhow::Result<AttemptEnd> {
    let settings = &context.settings;
    let reader = context
        .pipeline
        .source
        .open(shard, resume.checkpoint.as_ref(), settings.batch_size)
        .await
        .with_context(|| format!("opening shard {} of the source", shard.id))?;
    let writer_context =
        WriterContext { job: settings.job.clone(), run_id: settings.run_id.clone(), shard_id: shard.id.clone() };
    let mut writer = context.pipeline.sink.open(&writer_context).await.context("opening the sink")?;

    // Read one batch ahead of the writer (sources may buffer more themselves).
    let (sender, mut batches) = mpsc::channel(1);
    let read_ahead = tokio::spawn(read_into(reader, sender));
    let _stop_reading = AbortOnDrop(read_ahead);

    let mut uncommitted = Uncommitted::default();
    let mut last_commit = Instant::now();
    let result: anyhow::Result<AttemptEnd> = async {
        loop {
            let next = tokio::select! {
                biased;
                _ = context.halt_requested() => return Ok(AttemptEnd::Halted),
                _ = sleep_until(deadline) => {
                    let timeout = settings.shard_timeout.unwrap_or_default();
                    anyhow::bail!("the shard timed out after {}", haul_common::duration::HumanDuration(timeout));
                }
                next = batches.recv() => next,
            };
            let Some(next) = next else { return Ok(AttemptEnd::Exhausted) };
            let source_batch = next?;
            write_batch(context, &writer_context, writer.as_mut(), source_batch, &mut uncommitted, progress).await?;
            if last_commit.elapsed() >= settings.checkpoint_interval {
                if commit(context, shard, writer.as_mut(), resume, &mut uncommitted).await? {
                    context.ledger.checkpoint(shard, resume).await.context("saving the checkpoint")?;
                    // Every batch read is committed: reading goes on with the kept part.
                    if let Some(kept) = split_if_requested(context, shard, resume, splits).await? {
                        return Ok(AttemptEnd::Split(kept));
                    }
                }
                last_commit = Instant::now();
            }
        }
    }
    .await;

    match result {
        Ok(end) => {
            // The ledger saves this last checkpoint when the shard finishes.
            commit(context, shard, writer.as_mut(), resume, &mut uncommitted).await?;
            Ok(end)
        }
        Err(error) => {
            if let Err(abort_error) = writer.abort().await {
                tracing::warn!(shard = %shard.id, error = %format!("{abort_error:#}"), "discarding uncommitted output failed");
            }
            for processor in &context.pipeline.processors {
                processor.rewound(&shard.id).await;
            }
            progress.subtract(uncommitted.counters);
            Err(error)
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_into(mut reader: Box<dyn crate::ShardReader>, sender: mpsc::Sender<anyhow::Result<SourceBatch>>) {
    loop {
        let next = reader.next_batch().await;
        let done = !matches!(next, Ok(Some(_)));
        let item = match next {
            Ok(Some(batch)) => Ok(batch),
            Ok(None) => return,
            Err(error) => Err(error),
        };
        if sender.send(item).await.is_err() || done {
            return;
        }
    }
}

async fn write_batch(
    context: &RunContext,
    writer_context: &WriterContext,
    writer: &mut dyn ShardWriter,
    source_batch: SourceBatch,
    uncommitted: &mut Uncommitted,
    progress: &ShardProgress,
) -> anyhow::Result<()> {
    let SourceBatch { mut batch, rejected, checkpoint, bytes_read } = source_batch;
    let read = ShardCounters {
        records_read: (batch.len() + rejected.len()) as u64,
        bytes_read: bytes_read.unwrap_or_else(|| batch.approximate_size()),
        ..Default::default()
    };
    let mut all_rejected = rejected;
    let mut dropped = 0;
    for processor in &context.pipeline.processors {
        let processed = processor.process(&writer_context.shard_id, batch).await?;
        batch = processed.batch;
        all_rejected.extend(processed.rejected);
        dropped += processed.dropped;
    }
    reject(context, writer_context, &all_rejected, dropped).await?;
    context.throttle.acquire(batch.len() as u64, read.bytes_read).await;
    if !batch.is_empty() {
        writer.write(&batch).await.context("writing to the sink")?;
    }
    let delta =
        ShardCounters { records_written: batch.len() as u64, records_rejected: all_rejected.len() as u64, ..read };
    uncommitted.counters += delta;
    uncommitted.checkpoint = Some(checkpoint);
    progress.add(delta);
    Ok(())
}

/// Sends rejected records to the dead letters and checks the error limit,
/// counting `dropped` invalid records as rejected too.
async fn reject(
    context: &RunContext,
    writer_context: &WriterContext,
    rejected: &[Rejected],
    dropped: u64,
) -> anyhow::Result<()> {
    if rejected.is_empty() && dropped == 0 {
        return Ok(());
    }
    if !rejected.is_empty() {
        context.dead_letters.write(writer_context, rejected).await.context("writing dead letters")?;
    }
    let total = context.progress.totals().records_rejected + rejected.len() as u64 + dropped;
    let limit = context.settings.error_limit;
    if limit.exceeded_so_far(total) {
        context.fail_run(format!(
            "{total} records rejected, more than the error limit of {limit}; see the dead letters in {}",
            context.dead_letters.describe()
        ));
    }
    Ok(())
}

/// Commits the writer and moves `resume` to the committed checkpoint, for
/// the caller to save; `false` when there was nothing to commit.
async fn commit(
    context: &RunContext,
    shard: &ShardSpec,
    writer: &mut dyn ShardWriter,
    resume: &mut ResumePoint,
    uncommitted: &mut Uncommitted,
) -> anyhow::Result<bool> {
    let Some(checkpoint) = uncommitted.checkpoint.take() else { return Ok(false) };
    let sequence = resume.sequence + 1;
    context.ledger.fence(shard).await.context("confirming the lease before committing")?;
    // The records this commit's batches rejected are durable before their checkpoint can be.
    context.dead_letters.sync().await.context("syncing dead letters")?;
    writer.commit(sequence).await.context("committing to the sink")?;
    for processor in &context.pipeline.processors {
        processor.committed(&shard.id).await?;
    }
    resume.sequence = sequence;
    resume.checkpoint = Some(checkpoint);
    resume.counters += std::mem::take(&mut uncommitted.counters);
    Ok(true)
}
