//! Config documents as persistent nodes under `/config`, followed with a
//! persistent watch (re-added on each new session).

use std::sync::Arc;

use tokio::sync::watch;
use zookeeper_client::{AddWatchMode, Client, EventType, SessionState};

use super::{CONFIG, Shared, for_each_session, persistent};
use crate::registry::Error;

pub(super) async fn get(client: &Client, name: &str) -> Result<Option<serde_json::Value>, Error> {
    read(client, &path(name)).await
}

pub(super) async fn put(client: &Client, name: &str, document: &serde_json::Value) -> Result<(), Error> {
    let path = path(name);
    let data = serde_json::to_vec(document).expect("a JSON value always serializes");
    loop {
        match client.set_data(&path, &data, None).await {
            Ok(_) => return Ok(()),
            Err(zookeeper_client::Error::NoNode) => {}
            Err(error) => return Err(error.into()),
        }
        match client.create(&path, &data, &persistent()).await {
            // Created meanwhile by another writer: overwrite it.
            Ok(_) => return Ok(()),
            Err(zookeeper_client::Error::NodeExists) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

pub(super) async fn watch(shared: &Shared, name: &str) -> Result<watch::Receiver<Option<serde_json::Value>>, Error> {
    let path = path(name);
    let first = read(&shared.client()?, &path).await?;
    let (sender, receiver) = watch::channel(first);
    let sender = Arc::new(sender);
    let sessions = shared.sessions.subscribe();
    let unwatched = sender.clone();
    tokio::spawn(async move {
        let follow = for_each_session(sessions, "config", |client| follow(client, path.clone(), sender.clone()));
        tokio::select! {
            () = follow => {}
            () = unwatched.closed() => {}
        }
    });
    Ok(receiver)
}

async fn follow(
    client: Client,
    path: String,
    document: Arc<watch::Sender<Option<serde_json::Value>>>,
) -> Result<(), Error> {
    let mut watcher = client.watch(&path, AddWatchMode::Persistent).await?;
    loop {
        match read(&client, &path).await {
            Ok(current) => {
                document.send_if_modified(|document| {
                    let changed = *document != current;
                    *document = current;
                    changed
                });
            }
            // Watchers keep the last good document.
            Err(error @ Error::Corrupt { .. }) => tracing::warn!(%error, "ignoring a config document"),
            Err(error) => return Err(error),
        }
        loop {
            let event = watcher.changed().await;
            match (event.event_type, event.session_state) {
                (EventType::Session, state) if state.is_terminated() => return Ok(()),
                // Changes may have been missed while disconnected.
                (EventType::Session, SessionState::SyncConnected) => break,
                (EventType::Session | EventType::NodeChildrenChanged, _) => continue,
                _ => break,
            }
        }
    }
}

async fn read(client: &Client, path: &str) -> Result<Option<serde_json::Value>, Error> {
    match client.get_data(path).await {
        Ok((data, _)) => {
            serde_json::from_slice(&data).map(Some).map_err(|source| Error::Corrupt { path: path.to_string(), source })
        }
        Err(zookeeper_client::Error::NoNode) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn path(name: &str) -> String {
    format!("{CONFIG}/{name}")
}
