//! How a run resumes and ends, for `haul run` and the server alike: progress
//! starts from the stored shards; the store is the source of truth, so a run
//! succeeds only if every one of its shards did, and then its source may
//! revise the job state the run leaves behind.

use std::sync::Arc;

use haul_collect_core::progress::{RunProgress, ShardPhase};
use haul_collect_core::runtime::{RunOutcome, progress_for};
use haul_collect_core::{ShardSpec, Source};
use haul_register::{RunRecord, RunState, ShardRecord, ShardState, Store};

/// The shards of a stored run, and progress counters that start from what
/// its finished shards did.
pub fn progress_of(records: &[ShardRecord]) -> (Vec<ShardSpec>, Arc<RunProgress>) {
    let shards: Vec<ShardSpec> = records.iter().map(|record| record.spec.clone()).collect();
    let progress = progress_for(&shards);
    for (record, shard_progress) in records.iter().zip(&progress.shards) {
        if record.state == ShardState::Succeeded {
            shard_progress.add(record.counters);
            shard_progress.set_phase(ShardPhase::Done);
        }
    }
    (shards, progress)
}

/// Records the end of a run's execution and returns the state it reached, or
/// `None` for a stopped run (paused, cancelled or shut down), whose state is
/// the stopper's business.
pub async fn finish_run(
    store: &dyn Store,
    source: &dyn Source,
    run: &RunRecord,
    outcome: &RunOutcome,
) -> anyhow::Result<Option<RunState>> {
    let (state, reason) = match outcome {
        RunOutcome::Stopped => return Ok(None),
        RunOutcome::Failed(reasons) => (RunState::Failed, reasons.join("; ")),
        RunOutcome::Succeeded => {
            let shards = store.shards(&run.id).await?;
            let failed: Vec<String> = shards
                .iter()
                .filter(|shard| shard.state != ShardState::Succeeded)
                .map(|shard| match &shard.error {
                    Some(error) => format!("shard {}: {error}", shard.spec.id),
                    None => format!("shard {} is {}", shard.spec.id, shard.state),
                })
                .collect();
            if failed.is_empty() {
                record_final_state(store, source, run, &shards).await?;
                (RunState::Succeeded, "every shard succeeded".to_string())
            } else {
                (RunState::Failed, failed.join("; "))
            }
        }
    };
    store.set_run_state(&run.id, state, &reason).await?;
    Ok(Some(state))
}

/// Lets the source revise the job state the run leaves, from its checkpoints.
async fn record_final_state(
    store: &dyn Store,
    source: &dyn Source,
    run: &RunRecord,
    shards: &[ShardRecord],
) -> anyhow::Result<()> {
    let checkpoints: Vec<_> = shards.iter().map(|shard| shard.checkpoint.clone()).collect();
    let final_state = source.final_state(run.next_state.clone(), &checkpoints);
    if let Some(state) = final_state.filter(|state| Some(state) != run.next_state.as_ref()) {
        store.set_next_state(&run.id, &state).await?;
    }
    Ok(())
}
