//! The [`Registry`]: who is alive, who leads, and the live configuration.
//! Workers join with their capacity, labels and load; scheduler instances
//! campaign to lead; named configuration documents (pool limits, rate limits)
//! are stored and watched. In-process for the embedded server
//! ([`MemoryRegistry`]); ZooKeeper in the distributed mode ([`ZkRegistry`]).
//! Nothing here is a source of truth: the store is. A registry may lose
//! everything and the platform only waits for members to join again.
//!
//! Lifecycle: [`open`] a registry (one session with the coordination
//! service); [`Registry::join`], [`Registry::campaign`] and the config
//! operations act within it; [`Registry::close`] (or dropping the registry
//! and every handle it gave) ends the session, and with it its memberships
//! and candidacies, at once for every other instance.
//!
//! Guarantees every backend keeps:
//! - A member is listed from the moment [`Registry::join`] returns until its
//!   [`Membership`] is dropped or left, or its session ends. If a session
//!   expires (the process was frozen or cut off longer than the session
//!   timeout), everyone else sees its members vanish; a backend that opens a
//!   new session joins its live memberships again and campaigns again.
//! - At most one candidate of an election believes it leads. A leader that
//!   cannot be sure it still leads (its connection is lost) reports that it
//!   does not lead before the session timeout, which is when another may
//!   take over; so a leader that stops acting as soon as
//!   [`Leadership::is_leader`] turns false never overlaps its successor.
//! - When a leader's session closes, the next candidate leads at once; when
//!   it expires, within the session timeout.
//! - A config watcher sees every document's latest value; intermediate
//!   values of quick successive changes may be skipped.

mod memory;
mod open;
mod zookeeper;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use memory::MemoryRegistry;
pub use open::open;
pub use zookeeper::{ZkConfig, ZkRegistry};

/// What a worker tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique among live workers; a node name: no `/`, not `.` or `..`.
    pub id: String,
    /// Shards the worker runs at once.
    pub capacity: u32,
    /// What else the worker shows of itself: `haul worker` lists its
    /// `pools` and its worker `labels` here, each comma-separated.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Shards running on it now.
    pub load: u32,
}

/// What a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("zookeeper error: {0}")]
    ZooKeeper(#[from] zookeeper_client::Error),
    /// The registry was closed: its session ended and will not be renewed.
    #[error("the registry is closed")]
    Closed,
    /// Another live member already uses this worker id.
    #[error("worker {0} is already a member")]
    AlreadyMember(String),
    /// A worker id, candidate id or config name that cannot name a node.
    #[error("invalid name `{0}`: expected a non-empty name without `/`, other than `.` and `..`")]
    InvalidName(String),
    /// A stored document or member entry that does not decode.
    #[error("corrupt registry entry {path}: {source}")]
    Corrupt { path: String, source: serde_json::Error },
    /// A registry URL this build cannot open.
    #[error("unsupported registry url: {0}")]
    Unsupported(String),
}

/// Membership, leader election and the config centre. See the module
/// documentation for the lifecycle and the guarantees.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Lists `worker` among the members until the returned handle is left or
    /// dropped, or this registry's session ends. [`Error::AlreadyMember`] if
    /// a live member has the same id.
    async fn join(&self, worker: WorkerInfo) -> Result<Membership, Error>;

    /// The live members, sorted by id, kept current at least while this
    /// registry is open: the value is the membership at the time of the call
    /// or later.
    async fn members(&self) -> Result<watch::Receiver<Vec<WorkerInfo>>, Error>;

    /// Enters the election as `candidate` and returns at once; the handle
    /// tells when this candidate leads. Candidates lead in the order they
    /// entered. Dropping the handle withdraws the candidacy (and the
    /// leadership, which passes on at once).
    async fn campaign(&self, candidate: &str) -> Result<Leadership, Error>;

    /// The document stored under `name`, if any.
    async fn config(&self, name: &str) -> Result<Option<serde_json::Value>, Error>;

    /// Stores `document` under `name`, replacing any previous one; every
    /// watcher of `name` sees it.
    async fn put_config(&self, name: &str, document: &serde_json::Value) -> Result<(), Error>;

    /// The document under `name`, kept current (`None` while there is none).
    /// The watch ends when every receiver is dropped.
    async fn watch_config(&self, name: &str) -> Result<watch::Receiver<Option<serde_json::Value>>, Error>;

    /// Ends this registry's session now: its memberships and candidacies
    /// vanish for everyone, its leaderships report that they do not lead,
    /// and every later operation fails with [`Error::Closed`].
    async fn close(&self);
}

/// A worker's place among the members; dropping it leaves.
pub struct Membership {
    seat: Box<dyn MemberSeat>,
}

impl Membership {
    pub(crate) fn new(seat: Box<dyn MemberSeat>) -> Self {
        Membership { seat }
    }

    /// Publishes the worker's current load (running shards). Watchers see it
    /// shortly after; a newer load replaces an older one not yet published.
    pub fn update_load(&self, load: u32) {
        self.seat.update_load(load);
    }

    /// Leaves now, and waits until the others can see it.
    pub async fn leave(self) -> Result<(), Error> {
        self.seat.leave().await
    }
}

/// How a backend keeps one member listed; dropping it leaves.
#[async_trait]
pub(crate) trait MemberSeat: Send + Sync {
    fn update_load(&self, load: u32);
    async fn leave(self: Box<Self>) -> Result<(), Error>;
}

/// A candidacy in the leader election; dropping it withdraws.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    /// Kept for its drop, which withdraws the candidacy.
    _candidacy: Box<dyn Send + Sync>,
}

impl Leadership {
    pub(crate) fn new(leading: watch::Receiver<bool>, candidacy: Box<dyn Send + Sync>) -> Self {
        Leadership { leading, _candidacy: candidacy }
    }

    /// Whether this candidate leads now. A leader must stop leading (stop
    /// scheduling) as soon as this turns false.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows [`Leadership::is_leader`] as it changes.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Waits until this candidate leads; [`Error::Closed`] if the registry
    /// closed first.
    pub async fn until_leader(&self) -> Result<(), Error> {
        let mut leading = self.leading.clone();
        leading.wait_for(|leads| *leads).await.map(|_| ()).map_err(|_| Error::Closed)
    }

    /// Waits until this candidate does not lead.
    pub async fn until_follower(&self) {
        let mut leading = self.leading.clone();
        // A closed channel means the candidacy ended: it does not lead.
        let _ = leading.wait_for(|leads| !*leads).await;
    }
}

/// Checks that `name` can name a node (a worker, a candidate, a document).
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Error::InvalidName(name.to_string()));
    }
    Ok(())
}
