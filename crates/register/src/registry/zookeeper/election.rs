//! Leader election on Curator's lock recipe: each candidate holds an
//! ephemeral sequential node under `/leader`; the lowest leads, and each
//! other candidate watches the one just before it. A candidate leads only
//! while connected: on a lost connection it reports that it does not lead,
//! before its session can expire and let another take over.

use std::sync::Arc;

use tokio::sync::watch;
use zookeeper_client::{Acls, Client, LockPrefix, SessionState};

use super::{AbortOnDrop, LEADER, Session, Shared, for_each_session};
use crate::registry::{Error, Leadership};

pub(super) fn campaign(shared: Arc<Shared>, candidate: &str) -> Result<Leadership, Error> {
    shared.client()?;
    let (leading, receiver) = watch::channel(false);
    let flag = Arc::new(LeaderFlag { leading, sessions: shared.sessions.subscribe() });
    shared.follow_on_close(&flag);
    let sessions = shared.sessions.subscribe();
    let candidate = candidate.to_string();
    let task = AbortOnDrop::spawn(async move {
        for_each_session(sessions, "election", |client| run(client, candidate.clone(), flag.clone())).await;
    });
    // The session lives as long as the candidacy.
    Ok(Leadership::new(receiver, Box::new((task, shared))))
}

/// Campaigns on one session, then leads while connected; leaves its node
/// (and leadership) when cancelled.
async fn run(client: Client, candidate: String, flag: Arc<LeaderFlag>) -> Result<(), zookeeper_client::Error> {
    let _follows_when_done = FollowsWhenDone(flag.clone());
    let prefix = LockPrefix::new_curator(LEADER, "candidate-")?;
    let _node = client.lock(prefix, candidate.as_bytes(), Acls::anyone_all()).await?.into_owned();
    let mut state = client.state_watcher();
    let mut current = state.state();
    while !current.is_terminated() {
        flag.set(current == SessionState::SyncConnected);
        current = state.changed().await;
    }
    Ok(())
}

/// Whether a candidate leads, as its [`Leadership`] sees it.
pub(super) struct LeaderFlag {
    leading: watch::Sender<bool>,
    sessions: watch::Receiver<Session>,
}

impl LeaderFlag {
    /// Reports `leads`, but never leading once the registry is closed:
    /// [`Shared::close`] marks the registry closed, then clears every flag,
    /// and this check runs under the flag's lock, so a stale "leads" cannot
    /// land after the clearing.
    fn set(&self, leads: bool) {
        self.leading.send_if_modified(|leading| {
            let leads = leads && matches!(*self.sessions.borrow(), Session::Live(_));
            std::mem::replace(leading, leads) != leads
        });
    }

    pub(super) fn clear(&self) {
        self.set(false);
    }
}

/// Reports "not leading" when the campaign on a session ends, however it ends.
struct FollowsWhenDone(Arc<LeaderFlag>);

impl Drop for FollowsWhenDone {
    fn drop(&mut self) {
        self.0.clear();
    }
}
