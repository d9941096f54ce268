//! Members as ephemeral nodes under `/workers`: a [`ZkSeat`] keeps its node
//! (created again on each new session, rewritten when the load changes);
//! [`watch`] follows them all with one persistent recursive watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use tokio::sync::watch;
use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode, EventType, SessionState};

use super::{AbortOnDrop, Shared, WORKERS, for_each_session};
use crate::registry::{Error, MemberSeat, Membership, WorkerInfo};

pub(super) async fn join(shared: &Arc<Shared>, worker: WorkerInfo) -> Result<Membership, Error> {
    let client = shared.client()?;
    let path = format!("{WORKERS}/{}", worker.id);
    let data = encode(&worker);
    match client.create(&path, &data, &CreateMode::Ephemeral.with_acls(Acls::anyone_all())).await {
        Ok(_) => {}
        Err(zookeeper_client::Error::NodeExists) => return Err(Error::AlreadyMember(worker.id)),
        Err(error) => return Err(error.into()),
    }
    let owner = Arc::new(AtomicI64::new(client.session_id().0));
    let (info, receiver) = watch::channel(worker);
    let sessions = shared.sessions.subscribe();
    let task = {
        let (path, owner) = (path.clone(), owner.clone());
        AbortOnDrop::spawn(async move {
            for_each_session(sessions, "membership", |client| {
                keep(client, path.clone(), receiver.clone(), owner.clone())
            })
            .await;
        })
    };
    Ok(Membership::new(Box::new(ZkSeat { shared: shared.clone(), path, owner, info, task, left: false })))
}

/// Keeps this session's node of a member, with its latest info, and records
/// the session as its `owner`.
async fn keep(
    client: Client,
    path: String,
    mut info: watch::Receiver<WorkerInfo>,
    owner: Arc<AtomicI64>,
) -> Result<(), zookeeper_client::Error> {
    let mut state = client.state_watcher();
    let data = encode(&info.borrow_and_update());
    match client.create(&path, &data, &CreateMode::Ephemeral.with_acls(Acls::anyone_all())).await {
        Ok(_) => {}
        // Created by `join`, or before a lost connection: ours if this session owns it.
        Err(zookeeper_client::Error::NodeExists) => {
            let (_, stat) = client.get_data(&path).await?;
            if stat.ephemeral_owner != client.session_id().0 {
                return Err(zookeeper_client::Error::NodeExists);
            }
            client.set_data(&path, &data, None).await?;
        }
        Err(error) => return Err(error),
    }
    owner.store(client.session_id().0, Ordering::Release);
    loop {
        tokio::select! {
            changed = info.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let data = encode(&info.borrow_and_update());
                client.set_data(&path, &data, None).await?;
            }
            session = state.changed() => if session.is_terminated() {
                return Ok(());
            },
        }
    }
}

/// A member kept in ZooKeeper; dropping it deletes its node.
struct ZkSeat {
    shared: Arc<Shared>,
    path: String,
    /// The session that created the node: a node of the same id created by
    /// another session (after this one expired) is not this seat's to delete.
    owner: Arc<AtomicI64>,
    info: watch::Sender<WorkerInfo>,
    task: AbortOnDrop,
    left: bool,
}

impl ZkSeat {
    /// The live session's client, if that session owns the node.
    fn owning_client(&self) -> Result<Option<Client>, Error> {
        let client = self.shared.client()?;
        Ok((client.session_id().0 == self.owner.load(Ordering::Acquire)).then_some(client))
    }
}

#[async_trait]
impl MemberSeat for ZkSeat {
    fn update_load(&self, load: u32) {
        self.info.send_if_modified(|info| std::mem::replace(&mut info.load, load) != load);
    }

    async fn leave(mut self: Box<Self>) -> Result<(), Error> {
        self.task.abort();
        self.left = true;
        let Some(client) = self.owning_client()? else {
            return Ok(());
        };
        match client.delete(&self.path, None).await {
            Ok(()) | Err(zookeeper_client::Error::NoNode) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

impl Drop for ZkSeat {
    fn drop(&mut self) {
        self.task.abort();
        if !self.left
            && let Ok(Some(client)) = self.owning_client()
        {
            // The request is sent now; its reply is not awaited.
            drop(client.delete(&self.path, None));
        }
    }
}

/// Follows every member, from a first complete read on.
pub(super) async fn watch(shared: &Shared) -> (watch::Receiver<Vec<WorkerInfo>>, AbortOnDrop) {
    let (sender, mut receiver) = watch::channel(Vec::new());
    let sender = Arc::new(sender);
    let sessions = shared.sessions.subscribe();
    let task = AbortOnDrop::spawn(async move {
        for_each_session(sessions, "members", |client| follow(client, sender.clone())).await;
    });
    // The first read is always published, even when empty.
    let _ = receiver.changed().await;
    (receiver, task)
}

async fn follow(client: Client, members: Arc<watch::Sender<Vec<WorkerInfo>>>) -> Result<(), zookeeper_client::Error> {
    let mut watcher = client.watch(WORKERS, AddWatchMode::PersistentRecursive).await?;
    let mut known = read_all(&client).await?;
    members.send_replace(known.values().cloned().collect());
    loop {
        let event = watcher.changed().await;
        match event.event_type {
            EventType::Session if event.session_state.is_terminated() => return Ok(()),
            // Events may have been missed while disconnected.
            EventType::Session if event.session_state == SessionState::SyncConnected => {
                known = read_all(&client).await?;
            }
            EventType::Session | EventType::NodeChildrenChanged => continue,
            EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                let Some(id) = event.path.strip_prefix(WORKERS).and_then(|rest| rest.strip_prefix('/')) else {
                    continue;
                };
                match read(&client, id).await? {
                    Some(info) => known.insert(id.to_string(), info),
                    None => known.remove(id),
                };
            }
        }
        let current: Vec<WorkerInfo> = known.values().cloned().collect();
        members.send_if_modified(|members| {
            let changed = *members != current;
            *members = current;
            changed
        });
    }
}

async fn read_all(client: &Client) -> Result<BTreeMap<String, WorkerInfo>, zookeeper_client::Error> {
    let mut members = BTreeMap::new();
    for id in client.list_children(WORKERS).await? {
        if let Some(info) = read(client, &id).await? {
            members.insert(id, info);
        }
    }
    Ok(members)
}

/// A member's info; `None` if it left, or if its entry does not decode (logged).
async fn read(client: &Client, id: &str) -> Result<Option<WorkerInfo>, zookeeper_client::Error> {
    let path = format!("{WORKERS}/{id}");
    let data = match client.get_data(&path).await {
        Ok((data, _)) => data,
        Err(zookeeper_client::Error::NoNode) => return Ok(None),
        Err(error) => return Err(error),
    };
    match serde_json::from_slice(&data) {
        Ok(info) => Ok(Some(info)),
        Err(source) => {
            tracing::warn!(error = %Error::Corrupt { path, source }, "ignoring a member");
            Ok(None)
        }
    }
}

fn encode(info: &WorkerInfo) -> Vec<u8> {
    serde_json::to_vec(info).expect("worker info always serializes")
}
