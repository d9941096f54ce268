//! Measures what each processor job of `bench/jobs/processors/` costs per
//! record, on in-memory batches shaped like the processor benchmark's table
//! (`bench_rows`: the same 11 columns, types and value patterns), without a
//! database or a sink in the way. It complements `bench/processors.py`, whose
//! end-to-end wall times on a shared machine move by several percent from run
//! to run: here the cost is the CPU time of the process's threads (Linux
//! `/proc/self/task/*/schedstat`), which other work on the machine disturbs
//! far less, and the best of several rounds is kept, so a change to a
//! processor shows in nanoseconds per record.
//!
//! ```text
//! cargo run --release -p haul-collect --example processor_costs [-- ROWS [JOB...]]
//! ```
//!
//! ROWS defaults to 200000, the jobs to every file of the folder but the
//! reference; each job's processors run on batches of its `batch_size`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime};
use haul_collect_core::job::JobSource;
use haul_collect_core::registry::PluginRegistry;
use haul_collect_core::{Batch, DataType, Field, Processor, Schema, Value};

/// haul's own allocator (see the server's `main.rs`): processors allocate per
/// record, so the allocator weighs on their cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rounds per job; the fastest counts.
const ROUNDS: usize = 5;

/// The key the benchmark gives `mask` through `HAUL_BENCH_MASK_KEY`.
const MASK_KEY: &str = "haul-bench-processors-mask-key";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = match args.next() {
        Some(rows) => rows.parse().context("ROWS must be a number")?,
        None => 200_000,
    };
    let jobs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/jobs/processors");
    let mut jobs: Vec<String> = args.collect();
    if jobs.is_empty() {
        jobs = job_names(&jobs_dir)?;
    }
    let mut registry = PluginRegistry::default();
    haul_collect::register_builtin(&mut registry);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    println!("{:<10} {:>12} {:>10} {:>10}", "job", "ns/record", "written", "rejected");
    for job in jobs {
        let path = jobs_dir.join(format!("{job}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let spec = JobSource::new(path.display().to_string(), text.replace("${env:HAUL_BENCH_MASK_KEY}", MASK_KEY))
            .parse(&job)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let processors = spec
            .processors
            .iter()
            .map(|processor| registry.build::<dyn Processor>(processor).map_err(|error| anyhow::anyhow!("{error}")))
            .collect::<anyhow::Result<Vec<Arc<dyn Processor>>>>()?;
        let mut best = Duration::MAX;
        let mut counts = (0, 0);
        for _ in 0..ROUNDS {
            let batches = bench_batches(rows, spec.batch_size);
            let (elapsed, written, rejected) = runtime.block_on(run(&processors, batches))?;
            best = best.min(elapsed);
            counts = (written, rejected);
        }
        let per_record = best.as_nanos() as f64 / rows as f64;
        println!("{job:<10} {per_record:>12.0} {:>10} {:>10}", counts.0, counts.1);
    }
    Ok(())
}

/// The jobs of the folder, by name, but the reference (which has no processor).
fn job_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<PathBuf>, _>>()?
        .into_iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .filter_map(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .filter(|name| name != "reference")
        .collect();
    names.sort();
    Ok(names)
}

/// Passes every batch through the processors in turn, as one shard would;
/// returns the time taken (freeing the output batches is not counted: a sink
/// would pay for it with or without processors) and the records written and
/// rejected.
async fn run(processors: &[Arc<dyn Processor>], batches: Vec<Batch>) -> anyhow::Result<(Duration, usize, usize)> {
    let mut outputs = Vec::with_capacity(batches.len());
    let mut rejected = 0;
    let started = cpu_time()?;
    for mut batch in batches {
        for processor in processors {
            let processed = processor.process("shard-0", batch).await?;
            rejected += processed.rejected.len() + processed.dropped as usize;
            batch = processed.batch;
        }
        outputs.push(batch);
    }
    let elapsed = cpu_time()?.saturating_sub(started);
    Ok((elapsed, outputs.iter().map(Batch::len).sum(), rejected))
}

/// The CPU time of this process's live threads so far (the processors may run
/// on tokio's blocking pool, whose threads outlive a round).
fn cpu_time() -> anyhow::Result<Duration> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").context("cannot list /proc/self/task (Linux only)")? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        nanos += stat.split_whitespace().next().and_then(|on_cpu| on_cpu.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(Duration::from_nanos(nanos))
}

/// `rows` records of the benchmark table, `g` = 1, 2, …, in batches of `size`,
/// with the values bench/copy.py's SQL gives them.
fn bench_batches(rows: usize, size: usize) -> Vec<Batch> {
    let field = |name: &str, data_type, nullable| Field { name: name.to_string(), data_type, nullable };
    let schema = Arc::new(Schema::new(vec![
        field("id", DataType::Int, false),
        field("qty", DataType::Int, false),
        field("price", DataType::Float, false),
        field("code", DataType::String, false),
        field("body", DataType::String, false),
        field("created", DataType::Timestamp, false),
        field("active", DataType::Bool, false),
        field("amount", DataType::Decimal, false),
        field("maybe_int", DataType::Int, true),
        field("maybe_text", DataType::String, true),
        field("updated", DataType::TimestampTz, false),
    ]));
    let created_start = NaiveDateTime::parse_from_str("2020-01-01 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap_or_default();
    let updated_start = DateTime::parse_from_rfc3339("2021-06-01T00:00:00Z").map(|t| t.to_utc()).unwrap_or_default();
    let record = |g: i64| {
        let created = created_start + chrono::Duration::seconds(g * 37) + chrono::Duration::milliseconds(g % 1000);
        let amount = (g * 31) % 10_000_000;
        vec![
            Value::Int(g),
            Value::Int((g * 7919) % 1000),
            Value::Float(((g * 104_729) % 1_000_003) as f64 / 100.0 + 0.125),
            Value::String(format!("C-{:X}", (g * 2_654_435_761) % 4_294_967_296)),
            Value::String(format!(
                "row {g}: {:032x} {:032x} lorem ipsum dolor sit",
                g * 7_777_777,
                (g + 1) * 7_777_777
            )),
            Value::Timestamp(created),
            Value::Bool(g % 3 != 0),
            Value::Decimal(format!("{}.{:02}", amount / 100, amount % 100)),
            if g % 5 == 0 { Value::Null } else { Value::Int((g * 13) % 100_000) },
            if g % 5 == 2 { Value::Null } else { Value::String(format!("text-{}", (g * 17) % 99_991)) },
            Value::TimestampTz(updated_start + chrono::Duration::milliseconds(g * 1500)),
        ]
    };
    let records: Vec<Vec<Value>> = (1..=rows as i64).map(record).collect();
    records.chunks(size.max(1)).map(|chunk| Batch::new(Arc::clone(&schema), chunk.to_vec())).collect()
}
