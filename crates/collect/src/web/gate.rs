//! The per-host gate: every request of this process to one origin (scheme,
//! host and port) passes it, whichever shard, source or job sends it.
//!
//! Each request brings its own limits (its source's [`Politeness`]): it
//! enters only while fewer than its `concurrency` requests to the host are in
//! flight, starts no sooner than its spacing after the host's previous start,
//! and never before the host's pause (set by a `Retry-After`) ends. Gates
//! live in one process-wide table; idle ones are pruned as it grows.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use url::Url;

/// The gates of this process, by origin.
static GATES: LazyLock<Mutex<HashMap<String, Arc<HostGate>>>> = LazyLock::new(Default::default);

/// Past this many origins, idle gates are dropped when a new one is added.
const PRUNE_ABOVE: usize = 1024;

/// What one request asks of the host's gate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostLimits {
    pub concurrency: usize,
    pub spacing: Duration,
}

/// The shared state of one host.
#[derive(Default)]
pub(crate) struct HostGate {
    state: Mutex<GateState>,
    released: Notify,
}

#[derive(Default)]
struct GateState {
    in_flight: usize,
    /// When the latest request started (or is scheduled to start).
    last_start: Option<Instant>,
    /// No request starts before this (a `Retry-After`).
    paused_until: Option<Instant>,
}

/// The gate of `url`'s origin, shared by the whole process.
pub(crate) fn gate_for(url: &Url) -> Arc<HostGate> {
    let origin =
        format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0));
    let mut gates = GATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(gate) = gates.get(&origin) {
        return gate.clone();
    }
    if gates.len() >= PRUNE_ABOVE {
        gates.retain(|_, gate| Arc::strong_count(gate) > 1 || !gate.idle());
    }
    gates.entry(origin).or_default().clone()
}

impl HostGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Nothing in flight, nothing scheduled, no pause pending.
    fn idle(&self) -> bool {
        let state = self.lock();
        let now = Instant::now();
        state.in_flight == 0
            && state.last_start.is_none_or(|start| start <= now)
            && state.paused_until.is_none_or(|until| until <= now)
    }

    /// Waits until a request within `limits` may start; the request is in
    /// flight until the returned pass is dropped.
    pub(crate) async fn enter(self: &Arc<Self>, limits: HostLimits) -> Pass {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let start = {
                let mut state = self.lock();
                (state.in_flight < limits.concurrency.max(1)).then(|| {
                    let mut start = Instant::now();
                    if let Some(last) = state.last_start {
                        start = start.max(last + limits.spacing);
                    }
                    if let Some(until) = state.paused_until {
                        start = start.max(until);
                    }
                    state.last_start = Some(start);
                    state.in_flight += 1;
                    start
                })
            };
            if let Some(start) = start {
                // The pass exists before the wait, so a cancelled wait still leaves the gate.
                let pass = Pass { gate: self.clone() };
                tokio::time::sleep_until(start).await;
                return pass;
            }
            released.await;
        }
    }

    /// Holds back every request to the host for `wait` from now.
    pub(crate) fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut state = self.lock();
        state.paused_until = Some(state.paused_until.map_or(until, |known| known.max(until)));
    }
}

/// A request in flight through a [`HostGate`].
pub(crate) struct Pass {
    gate: Arc<HostGate>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.gate.lock().in_flight -= 1;
        // Waiters have different limits: wake them all to check their own.
        self.gate.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn limits(concurrency: usize, spacing_ms: u64) -> HostLimits {
        HostLimits { concurrency, spacing: Duration::from_millis(spacing_ms) }
    }

    #[test]
    fn one_gate_per_origin() {
        let a = gate_for(&Url::parse("http://example.test/a").unwrap());
        let b = gate_for(&Url::parse("http://example.test:80/b?x").unwrap());
        let c = gate_for(&Url::parse("https://example.test/a").unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[tokio::test]
    async fn concurrency_is_capped_per_caller() {
        let gate = Arc::new(HostGate::default());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let (gate, in_flight, peak) = (gate.clone(), in_flight.clone(), peak.clone());
            tasks.spawn(async move {
                let _pass = gate.enter(limits(3, 0)).await;
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(gate.lock().in_flight, 0);
    }

    #[tokio::test]
    async fn starts_are_spaced_and_pauses_hold_everyone() {
        let gate = Arc::new(HostGate::default());
        let begin = Instant::now();
        for _ in 0..4 {
            drop(gate.enter(limits(8, 40)).await);
        }
        // Four starts, three gaps of 40ms.
        assert!(begin.elapsed() >= Duration::from_millis(120), "{:?}", begin.elapsed());

        gate.pause_for(Duration::from_millis(100));
        let begin = Instant::now();
        drop(gate.enter(limits(8, 0)).await);
        assert!(begin.elapsed() >= Duration::from_millis(100), "{:?}", begin.elapsed());
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_gate() {
        let gate = Arc::new(HostGate::default());
        drop(gate.enter(limits(1, 0)).await);
        gate.pause_for(Duration::from_secs(60));
        let waiting = tokio::time::timeout(Duration::from_millis(10), gate.enter(limits(1, 0))).await;
        assert!(waiting.is_err());
        assert_eq!(gate.lock().in_flight, 0);
    }
}
