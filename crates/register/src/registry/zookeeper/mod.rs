//! The ZooKeeper registry of the distributed mode. Under its chroot
//! (`/haul` unless the URL names another):
//! - `/workers/ID`: one ephemeral node per member, its [`WorkerInfo`] as JSON;
//! - `/leader/_c_UUID-candidate-N`: one ephemeral sequential node per
//!   candidate (Curator's lock layout); the lowest sequence leads;
//! - `/config/NAME`: one persistent node per document, as JSON.
//!
//! A [`ZkRegistry`] holds one session. A supervisor opens a new session when
//! the current one expires, and everything the registry keeps in ZooKeeper
//! (a membership, a candidacy, a watch) is served once per session by
//! [`for_each_session`]: after an expiry it joins again, campaigns again and
//! reads again.

mod documents;
mod election;
mod members;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OnceCell, watch};
use tokio::task::AbortHandle;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions};

use super::{Error, Leadership, Membership, Registry, WorkerInfo, check_name};
use election::LeaderFlag;

const WORKERS: &str = "/workers";
const LEADER: &str = "/leader";
const CONFIG: &str = "/config";

/// Waited before serving again on the same session after a failure that did
/// not end it (a lost connection).
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Where and how to reach ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkConfig {
    /// `host:port[,host:port…]`.
    pub hosts: String,
    /// The node every path of the registry lives under, e.g. `/haul`.
    pub chroot: String,
    /// Asked of the server, which bounds it (by default between 2 and 20
    /// ticks: 4 s to 40 s). A dead instance's members and candidacy vanish
    /// this long after it stopped.
    pub session_timeout: Duration,
}

impl ZkConfig {
    pub const DEFAULT_CHROOT: &str = "/haul";
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(5);

    /// The default chroot and session timeout on `hosts`.
    pub fn new(hosts: impl Into<String>) -> Self {
        ZkConfig {
            hosts: hosts.into(),
            chroot: Self::DEFAULT_CHROOT.to_string(),
            session_timeout: Self::DEFAULT_SESSION_TIMEOUT,
        }
    }
}

/// A session with ZooKeeper; see the module documentation.
pub struct ZkRegistry {
    shared: Arc<Shared>,
}

/// What the registry and its handles share; dropping it closes the session.
pub(super) struct Shared {
    sessions: Arc<watch::Sender<Session>>,
    session_timeout: Duration,
    supervisor: AbortHandle,
    members: OnceCell<(watch::Receiver<Vec<WorkerInfo>>, AbortOnDrop)>,
    /// Cleared on close, so that no leadership outlives [`Registry::close`].
    candidacies: Mutex<Vec<Weak<LeaderFlag>>>,
}

/// The registry's current session, as every task follows it.
#[derive(Clone)]
pub(super) enum Session {
    Live(Client),
    Closed,
}

impl ZkRegistry {
    /// Opens a session, creating the chroot and the registry's folders.
    pub async fn connect(config: ZkConfig) -> Result<ZkRegistry, Error> {
        if config.chroot.len() < 2 || !config.chroot.starts_with('/') || config.chroot.ends_with('/') {
            return Err(Error::Unsupported(format!(
                "the chroot `{}` is not an absolute node path below the root",
                config.chroot
            )));
        }
        let client = connect(&config).await?;
        let session_timeout = client.session_timeout();
        let sessions = Arc::new(watch::Sender::new(Session::Live(client.clone())));
        let supervisor = tokio::spawn(supervise(config, sessions.clone(), client)).abort_handle();
        let shared = Shared {
            sessions,
            session_timeout,
            supervisor,
            members: OnceCell::new(),
            candidacies: Mutex::new(Vec::new()),
        };
        Ok(ZkRegistry { shared: Arc::new(shared) })
    }

    /// The session timeout the server granted.
    pub fn session_timeout(&self) -> Duration {
        self.shared.session_timeout
    }
}

impl Shared {
    /// The live session's client; [`Error::Closed`] once closed.
    fn client(&self) -> Result<Client, Error> {
        match &*self.sessions.borrow() {
            Session::Live(client) => Ok(client.clone()),
            Session::Closed => Err(Error::Closed),
        }
    }

    fn close(&self) {
        self.supervisor.abort();
        self.sessions.send_replace(Session::Closed);
        for flag in self.candidacies().drain(..).filter_map(|flag| flag.upgrade()) {
            flag.clear();
        }
    }

    fn follow_on_close(&self, flag: &Arc<LeaderFlag>) {
        let mut candidacies = self.candidacies();
        candidacies.retain(|flag| flag.strong_count() > 0);
        candidacies.push(Arc::downgrade(flag));
    }

    fn candidacies(&self) -> MutexGuard<'_, Vec<Weak<LeaderFlag>>> {
        self.candidacies.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens a session and prepares the chroot; the client is rooted at it.
async fn connect(config: &ZkConfig) -> Result<Client, zookeeper_client::Error> {
    let client = Client::connector().with_session_timeout(config.session_timeout).connect(&config.hosts).await?;
    for folder in [WORKERS, LEADER, CONFIG] {
        client.mkdir(&format!("{}{folder}", config.chroot), &persistent()).await?;
    }
    client.chroot(config.chroot.clone()).map_err(|_| zookeeper_client::Error::BadArguments(&"invalid chroot"))
}

fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

/// Opens a new session each time the current one ends (expired), until the
/// registry closes (which aborts this task).
async fn supervise(config: ZkConfig, sessions: Arc<watch::Sender<Session>>, mut client: Client) {
    loop {
        let mut state = client.state_watcher();
        let mut current = state.state();
        while !current.is_terminated() {
            current = state.changed().await;
        }
        tracing::warn!(state = ?current, hosts = %config.hosts, "zookeeper session ended, opening a new one");
        client = loop {
            match connect(&config).await {
                Ok(client) => break client,
                Err(error) => {
                    tracing::warn!(%error, hosts = %config.hosts, "cannot open a zookeeper session");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        };
        tracing::info!(session = %client.session_id(), "zookeeper session opened");
        sessions.send_replace(Session::Live(client.clone()));
    }
}

/// Runs `serve` on each live session until the registry closes. `serve`
/// returns when it cannot go on: if its session ended it runs again on the
/// next one, otherwise again on the same one after [`RETRY_DELAY`]. A new
/// session (or the close) cancels a running `serve`.
pub(super) async fn for_each_session<F, Fut, E>(mut sessions: watch::Receiver<Session>, what: &str, mut serve: F)
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    loop {
        let Session::Live(client) = sessions.borrow_and_update().clone() else {
            return;
        };
        let served = tokio::select! {
            served = serve(client.clone()) => served,
            changed = sessions.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        if let Err(error) = served {
            tracing::warn!(%error, what, "lost touch with zookeeper");
        }
        let session_ended = client.state().is_terminated();
        drop(client);
        tokio::select! {
            changed = sessions.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY_DELAY), if !session_ended => {}
        }
    }
}

/// Aborts a background task when dropped.
pub(super) struct AbortOnDrop(AbortHandle);

impl AbortOnDrop {
    pub(super) fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        AbortOnDrop(tokio::spawn(task).abort_handle())
    }

    pub(super) fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl Registry for ZkRegistry {
    async fn join(&self, worker: WorkerInfo) -> Result<Membership, Error> {
        check_name(&worker.id)?;
        members::join(&self.shared, worker).await
    }

    async fn members(&self) -> Result<watch::Receiver<Vec<WorkerInfo>>, Error> {
        self.shared.client()?;
        let (members, _task) = self.shared.members.get_or_init(|| members::watch(&self.shared)).await;
        Ok(members.clone())
    }

    async fn campaign(&self, candidate: &str) -> Result<Leadership, Error> {
        check_name(candidate)?;
        election::campaign(self.shared.clone(), candidate)
    }

    async fn config(&self, name: &str) -> Result<Option<serde_json::Value>, Error> {
        check_name(name)?;
        documents::get(&self.shared.client()?, name).await
    }

    async fn put_config(&self, name: &str, document: &serde_json::Value) -> Result<(), Error> {
        check_name(name)?;
        documents::put(&self.shared.client()?, name, document).await
    }

    async fn watch_config(&self, name: &str) -> Result<watch::Receiver<Option<serde_json::Value>>, Error> {
        check_name(name)?;
        documents::watch(&self.shared, name).await
    }

    async fn close(&self) {
        self.shared.close();
    }
}
