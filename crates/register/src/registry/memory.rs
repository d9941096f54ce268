//! The in-process registry of the embedded server: members, candidates and
//! documents in one shared state. Each [`MemoryRegistry`] is a session;
//! [`MemoryRegistry::session`] opens another on the same state, as another
//! process would open its own session with ZooKeeper. Sessions never expire.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Error, Leadership, MemberSeat, Membership, Registry, WorkerInfo, check_name};

/// An in-process registry session; see the module documentation.
pub struct MemoryRegistry {
    space: Arc<Space>,
    session: u64,
}

struct Space {
    state: Mutex<State>,
    members: watch::Sender<Vec<WorkerInfo>>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    members: BTreeMap<String, Member>,
    /// In the order they entered; the first one leads.
    candidates: Vec<Candidate>,
    documents: BTreeMap<String, watch::Sender<Option<serde_json::Value>>>,
    closed_sessions: Vec<u64>,
}

struct Member {
    seat: u64,
    session: u64,
    info: WorkerInfo,
}

struct Candidate {
    seat: u64,
    session: u64,
    leading: watch::Sender<bool>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    /// A fresh, empty registry and a first session on it.
    pub fn new() -> Self {
        let space = Arc::new(Space {
            state: Mutex::new(State::default()),
            members: watch::Sender::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let session = space.new_id();
        MemoryRegistry { space, session }
    }

    /// Another session on the same registry.
    pub fn session(&self) -> MemoryRegistry {
        MemoryRegistry { space: self.space.clone(), session: self.space.new_id() }
    }

    /// The shared state, if this session is still open.
    fn open_state(&self) -> Result<MutexGuard<'_, State>, Error> {
        let state = self.space.lock();
        if state.closed_sessions.contains(&self.session) {
            return Err(Error::Closed);
        }
        Ok(state)
    }
}

impl Space {
    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes the members and candidates the predicates select (a removed
    /// candidate stops leading), then publishes the members and the leader.
    fn remove(
        &self,
        mut state: MutexGuard<'_, State>,
        remove_member: impl Fn(&Member) -> bool,
        remove_candidate: impl Fn(&Candidate) -> bool,
    ) {
        state.members.retain(|_, member| !remove_member(member));
        state.candidates.retain(|candidate| {
            let removed = remove_candidate(candidate);
            if removed {
                candidate.leading.send_replace(false);
            }
            !removed
        });
        if let Some(leader) = state.candidates.first() {
            leader.leading.send_if_modified(|leads| !std::mem::replace(leads, true));
        }
        self.publish_members(&state);
    }

    fn publish_members(&self, state: &State) {
        let members: Vec<WorkerInfo> = state.members.values().map(|member| member.info.clone()).collect();
        self.members.send_if_modified(|current| {
            let changed = *current != members;
            *current = members;
            changed
        });
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn join(&self, worker: WorkerInfo) -> Result<Membership, Error> {
        check_name(&worker.id)?;
        let mut state = self.open_state()?;
        if state.members.contains_key(&worker.id) {
            return Err(Error::AlreadyMember(worker.id));
        }
        let seat = self.space.new_id();
        let id = worker.id.clone();
        state.members.insert(id.clone(), Member { seat, session: self.session, info: worker });
        self.space.publish_members(&state);
        Ok(Membership::new(Box::new(MemorySeat { space: self.space.clone(), seat, id })))
    }

    async fn members(&self) -> Result<watch::Receiver<Vec<WorkerInfo>>, Error> {
        drop(self.open_state()?);
        Ok(self.space.members.subscribe())
    }

    async fn campaign(&self, candidate: &str) -> Result<Leadership, Error> {
        check_name(candidate)?;
        let mut state = self.open_state()?;
        let seat = self.space.new_id();
        let leading = watch::Sender::new(state.candidates.is_empty());
        let receiver = leading.subscribe();
        state.candidates.push(Candidate { seat, session: self.session, leading });
        Ok(Leadership::new(receiver, Box::new(MemoryCandidacy { space: self.space.clone(), seat })))
    }

    async fn config(&self, name: &str) -> Result<Option<serde_json::Value>, Error> {
        check_name(name)?;
        let state = self.open_state()?;
        Ok(state.documents.get(name).and_then(|document| document.borrow().clone()))
    }

    async fn put_config(&self, name: &str, document: &serde_json::Value) -> Result<(), Error> {
        check_name(name)?;
        let mut state = self.open_state()?;
        let sender = state.documents.entry(name.to_string()).or_insert_with(|| watch::Sender::new(None));
        sender.send_replace(Some(document.clone()));
        Ok(())
    }

    async fn watch_config(&self, name: &str) -> Result<watch::Receiver<Option<serde_json::Value>>, Error> {
        check_name(name)?;
        let mut state = self.open_state()?;
        Ok(state.documents.entry(name.to_string()).or_insert_with(|| watch::Sender::new(None)).subscribe())
    }

    async fn close(&self) {
        let mut state = self.space.lock();
        if state.closed_sessions.contains(&self.session) {
            return;
        }
        state.closed_sessions.push(self.session);
        let session = self.session;
        self.space.remove(state, |member| member.session == session, |candidate| candidate.session == session);
    }
}

/// A member listed in a [`MemoryRegistry`].
struct MemorySeat {
    space: Arc<Space>,
    seat: u64,
    id: String,
}

#[async_trait]
impl MemberSeat for MemorySeat {
    fn update_load(&self, load: u32) {
        let mut state = self.space.lock();
        if let Some(member) = state.members.get_mut(&self.id).filter(|member| member.seat == self.seat) {
            member.info.load = load;
            self.space.publish_members(&state);
        }
    }

    async fn leave(self: Box<Self>) -> Result<(), Error> {
        // Dropping leaves.
        Ok(())
    }
}

impl Drop for MemorySeat {
    fn drop(&mut self) {
        let seat = self.seat;
        self.space.remove(self.space.lock(), |member| member.seat == seat, |_| false);
    }
}

/// A candidate in a [`MemoryRegistry`]'s election; dropping it withdraws.
struct MemoryCandidacy {
    space: Arc<Space>,
    seat: u64,
}

impl Drop for MemoryCandidacy {
    fn drop(&mut self) {
        let seat = self.seat;
        self.space.remove(self.space.lock(), |_| false, |candidate| candidate.seat == seat);
    }
}
