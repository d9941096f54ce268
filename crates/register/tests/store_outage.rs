//! A restart of the store's database, shorter than a lease, pauses a run
//! and then lets it go on: against a private PostgreSQL that the tests stop
//! and start, a pipeline run through the store ledger completes with every
//! shard succeeded under its first lease and every record delivered once;
//! and a store's connection pool serves again once its server is back.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use haul_collect_core::deadletter::FileDeadLetters;
use haul_collect_core::flow::InProcessLimiter;
use haul_collect_core::job::Mode;
use haul_collect_core::plugin::WriterContext;
use haul_collect_core::runtime::{Pipeline, RunOutcome, RunSettings, execute, progress_for};
use haul_collect_core::{
    Batch, Checkpoint, DataType, Delivery, Field, Plan, PlanContext, Schema, ShardReader, ShardSpec, ShardWriter, Sink,
    Source, SourceBatch, Value,
};
use haul_common::retry::RetryPolicy;
use haul_common::shutdown::CancellationToken;
use haul_register::ledger::StoreLedger;
use haul_register::testing::PrivatePostgres;
use haul_register::{NewRun, ShardState, Store, store};

const SHARDS: u64 = 4;
const RECORDS_PER_SHARD: u64 = 4_000;
const BATCH_SIZE: usize = 25;
/// Per batch: 160 batches make a shard last about five seconds.
const BATCH_DELAY: Duration = Duration::from_millis(30);
const LEASE_TTL: Duration = Duration::from_secs(15);
const OUTAGE: Duration = Duration::from_secs(3);

fn plan() -> Plan {
    let shards = (0..SHARDS)
        .map(|i| ShardSpec { id: format!("s{i}"), descriptor: serde_json::json!({"start": i * RECORDS_PER_SHARD}) })
        .collect();
    Plan { shards, next_state: None }
}

/// Shard `i` yields the ids `i*RECORDS_PER_SHARD ..` in order, one batch per
/// `BATCH_DELAY`; its checkpoint is the next id.
struct Counting;

struct CountingReader {
    next: u64,
    end: u64,
    batch_size: usize,
}

#[async_trait]
impl Source for Counting {
    async fn check(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn plan(&self, _context: &PlanContext) -> anyhow::Result<Plan> {
        Ok(plan())
    }

    async fn open(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Box<dyn ShardReader>> {
        let start = shard.descriptor["start"].as_u64().unwrap();
        let next = checkpoint.map_or(start, |c| c.0.as_u64().unwrap());
        Ok(Box::new(CountingReader { next, end: start + RECORDS_PER_SHARD, batch_size }))
    }
}

#[async_trait]
impl ShardReader for CountingReader {
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        if self.next >= self.end {
            return Ok(None);
        }
        tokio::time::sleep(BATCH_DELAY).await;
        let stop = (self.next + self.batch_size as u64).min(self.end);
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int)]));
        let rows = (self.next..stop).map(|id| vec![Value::Int(id as i64)]).collect();
        self.next = stop;
        Ok(Some(SourceBatch {
            batch: Batch::new(schema, rows),
            rejected: Vec::new(),
            checkpoint: Checkpoint(serde_json::json!(stop)),
            bytes_read: None,
        }))
    }
}

/// Keeps the ids of every committed batch, duplicates included.
#[derive(Default)]
struct Collected {
    committed: Arc<Mutex<Vec<i64>>>,
}

struct CollectedWriter {
    pending: Vec<i64>,
    committed: Arc<Mutex<Vec<i64>>>,
}

#[async_trait]
impl Sink for Collected {
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
        Ok(Box::new(CollectedWriter { pending: Vec::new(), committed: self.committed.clone() }))
    }
}

#[async_trait]
impl ShardWriter for CollectedWriter {
    async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        for row in &batch.rows {
            let Value::Int(id) = row[0] else { anyhow::bail!("not an id: {:?}", row[0]) };
            self.pending.push(id);
        }
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

fn settings(run_id: &str) -> RunSettings {
    RunSettings {
        job: "outage".into(),
        run_id: run_id.to_string(),
        parallelism: SHARDS as usize,
        batch_size: BATCH_SIZE,
        // A checkpoint after every batch: the outage cannot fall between two.
        checkpoint_interval: Duration::ZERO,
        retry: RetryPolicy::default(),
        error_limit: Default::default(),
        rate_limits: Vec::new(),
        limiter: Arc::new(InProcessLimiter::new()),
        shard_timeout: None,
    }
}

/// Stops or starts the server off the runtime's threads.
async fn blocking(mut postgres: PrivatePostgres, change: fn(&mut PrivatePostgres)) -> PrivatePostgres {
    tokio::task::spawn_blocking(move || {
        change(&mut postgres);
        postgres
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_rides_out_a_database_restart_shorter_than_its_leases() {
    let metrics = support::metrics();
    let created = Instant::now();
    let postgres = PrivatePostgres::create();
    eprintln!("private postgres created and started in {:?}", created.elapsed());
    let store = store::open(&postgres.url()).await.unwrap();

    let new_run = NewRun {
        job: "outage".into(),
        spec_hash: "h".into(),
        mode: Mode::Full,
        plan: plan(),
        request: Default::default(),
    };
    let run = store.create_run(new_run).await.unwrap();
    let sink = Arc::new(Collected::default());
    let committed = sink.committed.clone();
    let ledger = Arc::new(StoreLedger::new(store.clone(), &run.id, "worker", LEASE_TTL));
    let folder = tempfile::tempdir().unwrap();
    let dead_letters = Arc::new(FileDeadLetters::new(folder.path().join("dead.jsonl")));
    let shards = plan().shards;
    let pipeline = Pipeline { source: Arc::new(Counting), processors: Vec::new(), sink };
    let running = tokio::spawn(execute(
        pipeline,
        settings(&run.id),
        shards.clone(),
        ledger,
        dead_letters,
        progress_for(&shards),
        CancellationToken::new(),
    ));

    // The restart falls in the middle of the run: every shard is writing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_outage = committed.lock().unwrap().len();
    let postgres = blocking(postgres, PrivatePostgres::stop).await;
    let stopped = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let during_outage = committed.lock().unwrap().len();
    let postgres = blocking(postgres, PrivatePostgres::start).await;
    eprintln!("private postgres down for {:?}", stopped.elapsed());

    let report = running.await.unwrap();
    assert_eq!(report.outcome, RunOutcome::Succeeded, "{report:?}");
    let total = (SHARDS * RECORDS_PER_SHARD) as usize;
    assert!(before_outage > 0 && before_outage < total / 2, "the run was not under way: {before_outage} records");
    // A shard stops at its first checkpoint the store does not take: at most one more batch each.
    assert!(during_outage <= before_outage + SHARDS as usize * 2 * BATCH_SIZE, "{before_outage} then {during_outage}");

    let mut ids = committed.lock().unwrap().clone();
    ids.sort_unstable();
    let expected: Vec<i64> = (0..total as i64).collect();
    assert!(ids == expected, "{} records delivered, {} expected, each once", ids.len(), total);

    for shard in store.shards(&run.id).await.unwrap() {
        assert_eq!(shard.state, ShardState::Succeeded, "{shard:?}");
        assert_eq!(shard.epoch, 1, "shard {} was claimed again: its lease was lost", shard.spec.id);
        assert_eq!(shard.counters.records_written, RECORDS_PER_SHARD, "{shard:?}");
    }
    // Seen and told: the outage warned (an answer in the midst of the
    // shutdown may split it in two), and every shard retried its checkpoint.
    let outages = support::series("haul_store_outages_total");
    assert!(outages.is_some_and(|n| n >= 1.0), "{}", metrics.render());
    let retries = support::series("haul_store_retries_total{operation=\"checkpoint\"}");
    assert!(retries.is_some_and(|n| n >= SHARDS as f64), "{}", metrics.render());
    drop(postgres);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_serves_again_once_its_database_is_back() {
    let postgres = PrivatePostgres::create();
    let store: Arc<dyn Store> = store::open(&postgres.url()).await.unwrap();
    assert!(store.jobs().await.unwrap().is_empty());

    let postgres = blocking(postgres, PrivatePostgres::stop).await;
    let down = store.jobs().await.unwrap_err();
    assert!(down.is_transient(), "{down}");

    let postgres = blocking(postgres, PrivatePostgres::start).await;
    let back = Instant::now();
    store.put_job("after", "spec", "hash").await.unwrap();
    assert!(back.elapsed() < Duration::from_secs(2), "the pool took {:?} to reconnect", back.elapsed());
    assert_eq!(store.jobs().await.unwrap().len(), 1);
    drop(postgres);
}
