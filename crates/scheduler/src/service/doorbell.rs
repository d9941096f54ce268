//! The leader's side of the doorbell (see [`haul_register::dispatch`]):
//! while this instance leads, it takes the rings of workers whose shards
//! ended and passes each ring's run on to the run followed here, which then
//! looks at its shards at once instead of at its next poll.
//!
//! Only the leader consumes the doorbell: a follower taking rings would take
//! them from the leader. Rings that arrive while nobody leads, or that are
//! lost, only delay a look until the next poll.

use std::sync::Arc;
use std::time::Duration;

use haul_register::dispatch::Dispatcher;
use tokio::sync::broadcast;

use super::Platform;

/// Rings buffered for the runs followed here; a run that falls behind looks at once.
pub(super) const RUNG_CAPACITY: usize = 256;

/// Waited before taking the doorbell again after it failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Platform {
    /// The runs whose shards workers reported ended, as they ring.
    pub(super) fn rings(&self) -> broadcast::Receiver<String> {
        self.inner.rung.subscribe()
    }

    /// Takes the doorbell of `dispatcher` while this instance leads, until
    /// shutdown, passing each ring on to the run it names.
    pub fn follow_doorbell(&self, dispatcher: Arc<dyn Dispatcher>) -> tokio::task::JoinHandle<()> {
        let platform = self.clone();
        tokio::spawn(async move {
            let inner = &platform.inner;
            let mut leading = inner.config.leading.clone();
            // Once nothing can change the leadership any more, it stays as it is.
            let mut settled = false;
            loop {
                if !*leading.borrow_and_update() {
                    if settled {
                        return;
                    }
                    tokio::select! {
                        _ = inner.shutdown.cancelled() => return,
                        changed = leading.changed() => if changed.is_err() { return },
                    }
                    continue;
                }
                let mut doorbell = match dispatcher.doorbell().await {
                    Ok(doorbell) => doorbell,
                    Err(error) => {
                        tracing::warn!(%error, "taking the workers' doorbell failed; following runs by polling only");
                        tokio::select! {
                            _ = inner.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(RETRY_AFTER) => continue,
                        }
                    }
                };
                loop {
                    let ring = tokio::select! {
                        _ = inner.shutdown.cancelled() => return,
                        // Leading or not, the doorbell is taken again from the top.
                        changed = leading.changed(), if !settled => match changed {
                            Ok(()) => break,
                            Err(_) => {
                                settled = true;
                                continue;
                            }
                        },
                        ring = doorbell.next() => ring,
                    };
                    match ring {
                        Some(Ok(delivery)) => {
                            // Nobody following the run here is no error: the ring is for nobody.
                            let _ = inner.rung.send(delivery.assignment.run_id.clone());
                            if let Err(error) = delivery.ack().await {
                                tracing::debug!(%error, "acknowledging a ring failed");
                            }
                        }
                        Some(Err(error)) => tracing::debug!(%error, "an unreadable ring"),
                        None => return,
                    }
                }
            }
        })
    }
}
