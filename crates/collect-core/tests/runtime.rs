//! The runtime's guarantees, checked with in-memory plugins: every record
//! arrives once; a stop resumes exactly where the checkpoints say; transient
//! errors retry from the last checkpoint; the error limit fails the run; a
//! shard split while it runs hands the rest to a new shard, each record once.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use haul_collect_core::deadletter::{DeadLetter, DeadLetters};
use haul_collect_core::flow::{RateLimitSpec, ScopedRateLimit};
use haul_collect_core::plugin::WriterContext;
use haul_collect_core::runtime::{
    Ledger, Pipeline, ResumePoint, RunOutcome, RunSettings, ShardOutcome, execute, progress_for,
};
use haul_collect_core::transient::transient;
use haul_collect_core::{
    Batch, Checkpoint, DataType, Delivery, Field, Plan, PlanContext, Processed, Processor, Rejected, Schema,
    ShardReader, ShardSpec, ShardWriter, Sink, Source, SourceBatch, Value,
};
use haul_common::duration::HumanDuration;
use haul_common::retry::RetryPolicy;
use haul_common::shutdown::CancellationToken;
use tokio::sync::watch;

/// Shard `i` holds ids `i*1000 .. i*1000+len` (a split part: `start .. end`);
/// ids divisible by `reject_every` are malformed.
struct NumbersSource {
    shards: usize,
    len: u64,
    reject_every: Option<u64>,
    /// Fail transiently once when reaching this id.
    fail_at: Option<u64>,
    failed: Arc<AtomicUsize>,
    /// Pause each batch, to give a stop request time to arrive.
    delay: Duration,
}

impl NumbersSource {
    fn new(shards: usize, len: u64) -> Self {
        NumbersSource { shards, len, reject_every: None, fail_at: None, failed: Arc::default(), delay: Duration::ZERO }
    }
}

struct NumbersReader {
    next: u64,
    end: u64,
    batch_size: usize,
    reject_every: Option<u64>,
    fail_at: Option<u64>,
    source_failed: Arc<AtomicUsize>,
    delay: Duration,
}

#[async_trait]
impl Source for NumbersSource {
    async fn check(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn plan(&self, _context: &PlanContext) -> anyhow::Result<Plan> {
        let shards = (0..self.shards)
            .map(|i| ShardSpec { id: format!("s{i}"), descriptor: serde_json::json!({"start": i as u64 * 1000}) })
            .collect();
        Ok(Plan { shards, next_state: None })
    }

    async fn open(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Box<dyn ShardReader>> {
        let (start, end) = self.bounds(shard);
        let next = checkpoint.map(|c| c.0.as_u64().unwrap()).unwrap_or(start);
        let failed = self.failed.clone();
        Ok(Box::new(NumbersReader {
            next,
            end,
            batch_size,
            reject_every: self.reject_every,
            fail_at: if failed.load(Ordering::SeqCst) == 0 { self.fail_at } else { None },
            source_failed: failed,
            delay: self.delay,
        }))
    }

    async fn split(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
    ) -> anyhow::Result<Option<(serde_json::Value, serde_json::Value)>> {
        let (start, end) = self.bounds(shard);
        let next = checkpoint.map(|c| c.0.as_u64().unwrap()).unwrap_or(start);
        if end - next < 2 {
            return Ok(None);
        }
        let middle = next + (end - next) / 2;
        Ok(Some((serde_json::json!({"start": start, "end": middle}), serde_json::json!({"start": middle, "end": end}))))
    }
}

impl NumbersSource {
    fn bounds(&self, shard: &ShardSpec) -> (u64, u64) {
        let start = shard.descriptor["start"].as_u64().unwrap();
        (start, shard.descriptor["end"].as_u64().unwrap_or(start + self.len))
    }
}

#[async_trait]
impl ShardReader for NumbersReader {
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        if self.next >= self.end {
            return Ok(None);
        }
        tokio::time::sleep(self.delay).await;
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int)]));
        let mut rows = Vec::new();
        let mut rejected = Vec::new();
        let stop = (self.next + self.batch_size as u64).min(self.end);
        for id in self.next..stop {
            if self.fail_at == Some(id) {
                self.fail_at = None;
                self.source_failed.fetch_add(1, Ordering::SeqCst);
                return Err(transient(anyhow::anyhow!("connection reset at {id}")));
            }
            match self.reject_every {
                Some(every) if id % every == 0 => rejected.push(Rejected {
                    reason: "divisible".into(),
                    position: id.to_string(),
                    record: serde_json::json!(id),
                    stage: "source".into(),
                }),
                _ => rows.push(vec![Value::Int(id as i64)]),
            }
        }
        self.next = stop;
        Ok(Some(SourceBatch {
            batch: Batch::new(schema, rows),
            rejected,
            checkpoint: Checkpoint(serde_json::json!(stop)),
            bytes_read: None,
        }))
    }
}

/// Committed ids per shard; uncommitted writes are held per writer.
#[derive(Default)]
struct MemorySink {
    committed: Arc<Mutex<Vec<i64>>>,
}

struct MemoryWriter {
    pending: Vec<i64>,
    committed: Arc<Mutex<Vec<i64>>>,
}

#[async_trait]
impl Sink for MemorySink {
    async fn check(&self) -> anyhow::Result<()> {
        Ok(())
    }
    fn delivery(&self) -> Delivery {
        Delivery::AppendOnly
    }
    fn describe_output(&self) -> String {
        "memory".into()
    }
    async fn open(&self, _context: &WriterContext) -> anyhow::Result<Box<dyn ShardWriter>> {
        Ok(Box::new(MemoryWriter { pending: Vec::new(), committed: self.committed.clone() }))
    }
}

#[async_trait]
impl ShardWriter for MemoryWriter {
    async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        self.pending.extend(batch.rows.iter().map(|row| match row[0] {
            Value::Int(id) => id,
            _ => unreachable!(),
        }));
        Ok(())
    }
    async fn commit(&mut self, _sequence: u64) -> anyhow::Result<()> {
        self.committed.lock().unwrap().append(&mut self.pending);
        Ok(())
    }
    async fn abort(&mut self) -> anyhow::Result<()> {
        self.pending.clear();
        Ok(())
    }
}

/// Keeps resume points in memory, like the store would.
#[derive(Default)]
struct MemoryLedger {
    points: Mutex<HashMap<String, ResumePoint>>,
    finished: Mutex<HashMap<String, ShardOutcome>>,
    /// Shards asked to split.
    split_requests: Mutex<HashSet<String>>,
    /// The splits made: the shard, where it was, its kept descriptor and the new shard.
    splits: Mutex<Vec<(String, ResumePoint, serde_json::Value, ShardSpec)>>,
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn acquire(&self, shard: &ShardSpec) -> anyhow::Result<Option<ResumePoint>> {
        if self.finished.lock().unwrap().get(&shard.id) == Some(&ShardOutcome::Succeeded) {
            return Ok(None);
        }
        Ok(Some(self.points.lock().unwrap().get(&shard.id).cloned().unwrap_or_default()))
    }
    async fn checkpoint(&self, shard: &ShardSpec, resume: &ResumePoint) -> anyhow::Result<()> {
        self.points.lock().unwrap().insert(shard.id.clone(), resume.clone());
        Ok(())
    }
    async fn split_requested(&self, shard: &ShardSpec) -> bool {
        self.split_requests.lock().unwrap().contains(&shard.id)
    }
    async fn split(&self, shard: &ShardSpec, kept: &serde_json::Value, new_shard: &ShardSpec) -> anyhow::Result<()> {
        self.split_requests.lock().unwrap().remove(&shard.id);
        let at = self.points.lock().unwrap().get(&shard.id).cloned().unwrap_or_default();
        self.splits.lock().unwrap().push((shard.id.clone(), at, kept.clone(), new_shard.clone()));
        Ok(())
    }
    async fn finish(&self, shard: &ShardSpec, outcome: &ShardOutcome, reached: &ResumePoint) -> anyhow::Result<()> {
        self.points.lock().unwrap().insert(shard.id.clone(), reached.clone());
        self.finished.lock().unwrap().insert(shard.id.clone(), outcome.clone());
        Ok(())
    }
}

#[derive(Default)]
struct MemoryDeadLetters {
    records: Mutex<Vec<Rejected>>,
    /// How many of `records` the last sync made durable.
    synced: Mutex<usize>,
}

#[async_trait]
impl DeadLetters for MemoryDeadLetters {
    async fn write(&self, _context: &WriterContext, rejected: &[Rejected]) -> anyhow::Result<()> {
        self.records.lock().unwrap().extend_from_slice(rejected);
        Ok(())
    }
    async fn sync(&self) -> anyhow::Result<()> {
        *self.synced.lock().unwrap() = self.records.lock().unwrap().len();
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn list(&self, _job: &str, _include_replayed: bool) -> anyhow::Result<Vec<DeadLetter>> {
        Ok(Vec::new())
    }
    async fn mark_replayed(&self, _ids: &[String]) -> anyhow::Result<()> {
        Ok(())
    }
}

fn settings(error_limit: haul_collect_core::error_limit::ErrorLimit) -> RunSettings {
    RunSettings {
        job: "test".into(),
        run_id: "run".into(),
        parallelism: 3,
        batch_size: 10,
        checkpoint_interval: Duration::ZERO,
        retry: RetryPolicy {
            attempts: 3,
            initial_backoff: HumanDuration(Duration::from_millis(1)),
            max_backoff: HumanDuration(Duration::from_millis(5)),
        },
        error_limit,
        rate_limits: Vec::new(),
        limiter: Arc::new(haul_collect_core::flow::InProcessLimiter::new()),
        shard_timeout: None,
    }
}

struct Harness {
    source: Arc<NumbersSource>,
    sink: Arc<MemorySink>,
    ledger: Arc<MemoryLedger>,
    dead_letters: Arc<MemoryDeadLetters>,
}

impl Harness {
    fn new(source: NumbersSource) -> Self {
        Harness { source: Arc::new(source), sink: Arc::default(), ledger: Arc::default(), dead_letters: Arc::default() }
    }

    async fn run(&self, settings: RunSettings, stop: CancellationToken) -> haul_collect_core::runtime::RunReport {
        self.run_with(settings, stop, vec![]).await
    }

    async fn run_with(
        &self,
        settings: RunSettings,
        stop: CancellationToken,
        processors: Vec<Arc<dyn Processor>>,
    ) -> haul_collect_core::runtime::RunReport {
        let plan = self.source.plan(&haul_collect_core_context()).await.unwrap();
        let progress = progress_for(&plan.shards);
        let pipeline = Pipeline { source: self.source.clone(), processors, sink: self.sink.clone() };
        execute(pipeline, settings, plan.shards, self.ledger.clone(), self.dead_letters.clone(), progress, stop).await
    }

    fn committed_sorted(&self) -> Vec<i64> {
        let mut ids = self.sink.committed.lock().unwrap().clone();
        ids.sort();
        ids
    }
}

fn haul_collect_core_context() -> PlanContext {
    PlanContext {
        mode: Default::default(),
        incremental: Default::default(),
        previous_state: None,
        range: None,
        parallelism: 3,
    }
}

fn expected(shards: usize, len: u64) -> Vec<i64> {
    (0..shards as i64).flat_map(|s| (s * 1000)..(s * 1000 + len as i64)).collect()
}

#[tokio::test]
async fn every_record_arrives_once() {
    let harness = Harness::new(NumbersSource::new(5, 95));
    let report = harness.run(settings(Default::default()), CancellationToken::new()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(harness.committed_sorted(), expected(5, 95));
    assert_eq!(report.totals.records_written, 5 * 95);
}

/// A shard asked to split after its first commit keeps the first half of
/// what is left and goes on; the new shard, run afterwards as another
/// owner would, reads the rest: every record once across the two.
#[tokio::test]
async fn a_shard_split_mid_run_and_its_new_shard_yield_every_record_once() {
    let harness = Harness::new(NumbersSource::new(1, 100));
    harness.ledger.split_requests.lock().unwrap().insert("s0".into());
    let report = harness.run(settings(Default::default()), CancellationToken::new()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let splits = harness.ledger.splits.lock().unwrap().clone();
    assert_eq!(splits.len(), 1, "{splits:?}");
    let (shard, at, kept, new_shard) = &splits[0];
    assert_eq!(
        (shard.as_str(), at.sequence, at.checkpoint.clone()),
        ("s0", 1, Some(Checkpoint(serde_json::json!(10))))
    );
    assert_eq!(kept, &serde_json::json!({"start": 0, "end": 55}));
    assert_eq!(new_shard, &ShardSpec { id: "s0.s1".into(), descriptor: serde_json::json!({"start": 55, "end": 100}) });
    assert_eq!(harness.committed_sorted(), (0..55).collect::<Vec<i64>>(), "the shard stopped at its kept part");
    assert!(harness.ledger.split_requests.lock().unwrap().is_empty());

    let pipeline = Pipeline { source: harness.source.clone(), processors: Vec::new(), sink: harness.sink.clone() };
    let shards = vec![new_shard.clone()];
    let progress = progress_for(&shards);
    let ledger = harness.ledger.clone();
    let dead_letters = harness.dead_letters.clone();
    let stop = CancellationToken::new();
    let report = execute(pipeline, settings(Default::default()), shards, ledger, dead_letters, progress, stop).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(harness.committed_sorted(), expected(1, 100));
}

/// A split the source declines is not asked again; the shard runs whole.
#[tokio::test]
async fn a_declined_split_leaves_the_shard_whole() {
    let harness = Harness::new(NumbersSource::new(1, 11));
    harness.ledger.split_requests.lock().unwrap().insert("s0".into());
    let report = harness.run(settings(Default::default()), CancellationToken::new()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert!(harness.ledger.splits.lock().unwrap().is_empty());
    assert_eq!(harness.committed_sorted(), expected(1, 11));
}

#[tokio::test]
async fn stop_then_resume_yields_exactly_the_rest() {
    let mut source = NumbersSource::new(4, 200);
    source.delay = Duration::from_millis(5);
    let harness = Harness::new(source);
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(60)).await;
        trigger.cancel();
    });
    let first = harness.run(settings(Default::default()), stop).await;
    assert_eq!(first.outcome, RunOutcome::Stopped);
    let partial = harness.committed_sorted().len();
    assert!(partial > 0 && partial < 800, "stopped after {partial} records");

    let second = harness.run(settings(Default::default()), CancellationToken::new()).await;
    assert_eq!(second.outcome, RunOutcome::Succeeded);
    assert_eq!(harness.committed_sorted(), expected(4, 200), "records lost or duplicated across the stop");
}

#[tokio::test]
async fn transient_error_retries_from_the_checkpoint() {
    let mut source = NumbersSource::new(2, 100);
    source.fail_at = Some(55);
    let harness = Harness::new(source);
    let report = harness.run(settings(Default::default()), CancellationToken::new()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(harness.committed_sorted(), expected(2, 100));
    assert_eq!(report.totals.records_written, 200, "counters of the discarded attempt were taken back");
}

#[tokio::test(start_paused = true)]
async fn a_shard_past_its_timeout_fails_and_keeps_what_it_committed() {
    let mut source = NumbersSource::new(1, 1_000);
    source.delay = Duration::from_millis(100);
    let harness = Harness::new(source);
    let mut settings = settings(Default::default());
    settings.shard_timeout = Some(Duration::from_millis(450));
    let report = harness.run(settings, CancellationToken::new()).await;
    let RunOutcome::Failed(reasons) = report.outcome else { panic!("{:?}", report.outcome) };
    assert_eq!(reasons, ["shard s0: the shard timed out after 450ms"]);
    // Batches of 10 every 100 ms, committed as they come (checkpoint interval 0).
    assert_eq!(harness.committed_sorted(), (0..40).collect::<Vec<i64>>());
}

#[tokio::test]
async fn rejected_records_go_to_dead_letters_within_the_limit() {
    let mut source = NumbersSource::new(1, 100);
    source.reject_every = Some(10);
    let harness = Harness::new(source);
    let report =
        harness.run(settings(haul_collect_core::error_limit::ErrorLimit::Count(10)), CancellationToken::new()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(harness.dead_letters.records.lock().unwrap().len(), 10);
    // Synced before the writer's commits, the last one included.
    assert_eq!(*harness.dead_letters.synced.lock().unwrap(), 10);
    assert_eq!(harness.committed_sorted().len(), 90);
    assert_eq!(report.totals.records_rejected, 10);
}

#[tokio::test]
async fn exceeding_the_error_limit_fails_the_run() {
    let mut source = NumbersSource::new(2, 500);
    source.reject_every = Some(7);
    let harness = Harness::new(source);
    let report =
        harness.run(settings(haul_collect_core::error_limit::ErrorLimit::Count(5)), CancellationToken::new()).await;
    match report.outcome {
        RunOutcome::Failed(reasons) => assert!(reasons[0].contains("error limit"), "{reasons:?}"),
        other => panic!("expected failure, got {other:?}"),
    }
}

#[tokio::test]
async fn ratio_limit_is_checked_at_the_end() {
    let mut source = NumbersSource::new(1, 100);
    source.reject_every = Some(5);
    let harness = Harness::new(source);
    let report =
        harness.run(settings(haul_collect_core::error_limit::ErrorLimit::Ratio(0.1)), CancellationToken::new()).await;
    assert!(matches!(report.outcome, RunOutcome::Failed(_)), "{:?}", report.outcome);
    let harness = Harness::new({
        let mut s = NumbersSource::new(1, 100);
        s.reject_every = Some(5);
        s
    });
    let report =
        harness.run(settings(haul_collect_core::error_limit::ErrorLimit::Ratio(0.25)), CancellationToken::new()).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
}

/// Records what the runtime tells a processor, per shard.
#[derive(Default)]
struct Journal {
    events: Mutex<Vec<String>>,
}

#[async_trait]
impl Processor for Journal {
    async fn process(&self, shard: &str, batch: Batch) -> anyhow::Result<Processed> {
        self.events.lock().unwrap().push(format!("{shard}:process"));
        Ok(Processed::pass(batch))
    }
    async fn committed(&self, shard: &str) -> anyhow::Result<()> {
        self.events.lock().unwrap().push(format!("{shard}:committed"));
        Ok(())
    }
    async fn rewound(&self, shard: &str) {
        self.events.lock().unwrap().push(format!("{shard}:rewound"));
    }
}

#[tokio::test]
async fn processors_hear_of_commits_and_rewinds() {
    let mut source = NumbersSource::new(1, 100);
    source.fail_at = Some(55);
    let harness = Harness::new(source);
    let journal = Arc::new(Journal::default());
    let report = harness.run_with(settings(Default::default()), CancellationToken::new(), vec![journal.clone()]).await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let events = journal.events.lock().unwrap().clone();
    let rewound = events.iter().position(|e| e == "s0:rewound").expect("the retry rewound the processor");
    assert!(events[..rewound].contains(&"s0:committed".to_string()));
    assert_eq!(events.last().map(String::as_str), Some("s0:committed"));
    assert_eq!(harness.committed_sorted(), expected(1, 100));
}

#[tokio::test]
async fn a_running_run_follows_its_rate_limit_as_it_changes() {
    // one shard of 200 records in batches of 10 at 10 records a second: the first
    // batch passes on the burst, the other 19 would take 19 seconds
    let harness = Harness::new(NumbersSource::new(1, 200));
    let per_second = |rate| RateLimitSpec { records_per_second: NonZeroU32::new(rate), bytes_per_second: None };
    let (rate_limit, rate_limit_in_force) = watch::channel(per_second(10));
    let scoped = ScopedRateLimit { scope: ScopedRateLimit::job_scope("job"), spec: rate_limit_in_force };
    let settings = RunSettings { rate_limits: vec![scoped], ..settings(Default::default()) };
    let raise_once_running = async {
        while harness.sink.committed.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rate_limit.send_replace(per_second(1_000_000));
    };
    let run = harness.run(settings, CancellationToken::new());
    let (report, ()) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(run, raise_once_running) })
        .await
        .expect("the running run kept its first rate limit");
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert_eq!(harness.committed_sorted(), expected(1, 200));
}
