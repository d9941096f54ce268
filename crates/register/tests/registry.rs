//! The registry's behaviour, one test body for both backends: in-process,
//! and ZooKeeper on 127.0.0.1:2181 (each test in its own chroot, removed
//! after). Session expiry is ZooKeeper's alone: it is tested by cutting a
//! session's connection with a proxy until the server expires it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haul_register::registry::{Error, Leadership, MemoryRegistry, Registry, WorkerInfo, ZkConfig, ZkRegistry};
use haul_register::testing::{ZOOKEEPER, remove_zookeeper_tree};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Granted by the server of `scripts/zookeeper.cfg` (from 2 ticks of 500 ms
/// to 20).
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds every wait for something that should happen at once.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Opens sessions on one registry, as separate processes would.
trait Backend: Send + Sync + 'static {
    fn session(&self) -> impl Future<Output = Arc<dyn Registry>> + Send;
}

struct Memory(MemoryRegistry);

impl Backend for Memory {
    async fn session(&self) -> Arc<dyn Registry> {
        Arc::new(self.0.session())
    }
}

struct ZooKeeper {
    chroot: String,
}

impl ZooKeeper {
    fn new() -> Self {
        ZooKeeper { chroot: format!("/haul-test-{}", uuid::Uuid::now_v7().simple()) }
    }

    fn config(&self, hosts: &str) -> ZkConfig {
        ZkConfig { hosts: hosts.to_string(), chroot: self.chroot.clone(), session_timeout: SESSION_TIMEOUT }
    }

    /// Deletes the test's chroot and everything under it.
    async fn remove(&self) {
        remove_zookeeper_tree(&self.chroot).await;
    }
}

impl Backend for ZooKeeper {
    async fn session(&self) -> Arc<dyn Registry> {
        Arc::new(ZkRegistry::connect(self.config(ZOOKEEPER)).await.unwrap())
    }
}

/// Runs `body` on the in-process backend.
async fn on_memory<F, Fut>(body: F)
where
    F: FnOnce(Arc<Memory>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    body(Arc::new(Memory(MemoryRegistry::new()))).await;
}

/// Runs `body` in a fresh chroot on ZooKeeper, removed after even if `body` fails.
async fn on_zookeeper<F, Fut>(body: F)
where
    F: FnOnce(Arc<ZooKeeper>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let backend = Arc::new(ZooKeeper::new());
    let outcome = tokio::spawn(body(backend.clone())).await;
    backend.remove().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// One test per backend for each generic body.
macro_rules! on_both_backends {
    ($($body:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $body() {
                super::on_memory(super::$body).await;
            })*
        }
        mod zookeeper {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $body() {
                super::on_zookeeper(super::$body).await;
            })*
        }
    };
}

on_both_backends!(
    members_appear_with_their_info_and_vanish_when_they_leave_or_their_session_closes,
    load_updates_reach_watchers,
    one_of_two_candidates_leads_and_the_other_takes_over_when_it_withdraws,
    one_of_three_candidates_leads_and_leadership_passes_on_when_the_leaders_session_closes,
    config_changes_reach_watchers,
    names_that_cannot_name_a_node_are_refused,
);

fn worker(id: &str, capacity: u32) -> WorkerInfo {
    WorkerInfo { id: id.to_string(), capacity, labels: [("region".to_string(), "eu".to_string())].into(), load: 0 }
}

/// Waits until `members` satisfies `done`.
async fn members_until(members: &mut watch::Receiver<Vec<WorkerInfo>>, done: impl Fn(&[WorkerInfo]) -> bool) {
    let waited = matches!(tokio::time::timeout(PROMPTLY, members.wait_for(|members| done(members))).await, Ok(Ok(_)));
    assert!(waited, "members are still {:?}", *members.borrow());
}

fn ids(members: &[WorkerInfo]) -> Vec<&str> {
    members.iter().map(|member| member.id.as_str()).collect()
}

async fn members_appear_with_their_info_and_vanish_when_they_leave_or_their_session_closes<B: Backend>(
    backend: Arc<B>,
) {
    let worker_session = backend.session().await;
    let observer = backend.session().await;
    let mut members = observer.members().await.unwrap();
    assert!(members.borrow().is_empty());

    let first = worker_session.join(worker("w1", 4)).await.unwrap();
    let _second = worker_session.join(worker("w2", 8)).await.unwrap();
    members_until(&mut members, |members| members.len() == 2).await;
    assert_eq!(*members.borrow(), vec![worker("w1", 4), worker("w2", 8)]);

    let duplicate = observer.join(worker("w1", 1)).await.err().unwrap();
    assert!(matches!(duplicate, Error::AlreadyMember(ref id) if id == "w1"), "{duplicate}");

    drop(first);
    members_until(&mut members, |members| ids(members) == ["w2"]).await;
    let third = worker_session.join(worker("w3", 2)).await.unwrap();
    members_until(&mut members, |members| ids(members) == ["w2", "w3"]).await;
    third.leave().await.unwrap();
    members_until(&mut members, |members| ids(members) == ["w2"]).await;

    worker_session.close().await;
    members_until(&mut members, |members| members.is_empty()).await;
    assert!(matches!(worker_session.join(worker("w4", 1)).await, Err(Error::Closed)));
    // The id of a member whose session closed is free again.
    let _again = observer.join(worker("w2", 8)).await.unwrap();
    members_until(&mut members, |members| ids(members) == ["w2"]).await;
}

async fn load_updates_reach_watchers<B: Backend>(backend: Arc<B>) {
    let worker_session = backend.session().await;
    let membership = worker_session.join(worker("w1", 4)).await.unwrap();
    let observer = backend.session().await;
    let mut members = observer.members().await.unwrap();
    members_until(&mut members, |members| ids(members) == ["w1"]).await;
    for load in [1, 3, 2] {
        membership.update_load(load);
        members_until(&mut members, |members| members.first().is_some_and(|member| member.load == load)).await;
    }
    assert_eq!(members.borrow()[0], WorkerInfo { load: 2, ..worker("w1", 4) });
}

/// Watches `candidates` until every candidacy has ended and returns the
/// most leaders seen at once (sampled at each change, so a briefer overlap
/// could be missed).
fn most_leaders_at_once(candidates: &[&Leadership]) -> tokio::task::JoinHandle<usize> {
    let mut leading: Vec<watch::Receiver<bool>> = candidates.iter().map(|candidate| candidate.watch()).collect();
    tokio::spawn(async move {
        let mut most = 0;
        while !leading.is_empty() {
            let leaders = leading.iter_mut().map(|leading| *leading.borrow_and_update()).filter(|leads| *leads).count();
            most = most.max(leaders);
            let changes = leading.iter_mut().map(|leading| Box::pin(leading.changed()));
            let (changed, index, others) = futures::future::select_all(changes).await;
            drop(others);
            if changed.is_err() {
                leading.swap_remove(index);
            }
        }
        most
    })
}

/// Waits until exactly one of `candidates` leads; its index.
async fn the_leader(candidates: &[&Leadership]) -> usize {
    let started = Instant::now();
    loop {
        let leaders: Vec<usize> = (0..candidates.len()).filter(|index| candidates[*index].is_leader()).collect();
        if let [leader] = leaders[..] {
            return leader;
        }
        assert!(started.elapsed() < PROMPTLY, "leaders: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn one_of_two_candidates_leads_and_the_other_takes_over_when_it_withdraws<B: Backend>(backend: Arc<B>) {
    let first_session = backend.session().await;
    let second_session = backend.session().await;
    let first = first_session.campaign("scheduler-1").await.unwrap();
    tokio::time::timeout(PROMPTLY, first.until_leader()).await.unwrap().unwrap();
    let second = second_session.campaign("scheduler-2").await.unwrap();
    let most = most_leaders_at_once(&[&first, &second]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(first.is_leader() && !second.is_leader());

    drop(first);
    tokio::time::timeout(PROMPTLY, second.until_leader()).await.unwrap().unwrap();
    drop(second);
    assert!(most.await.unwrap() <= 1);
}

async fn one_of_three_candidates_leads_and_leadership_passes_on_when_the_leaders_session_closes<B: Backend>(
    backend: Arc<B>,
) {
    let mut sessions = Vec::new();
    let mut candidates = Vec::new();
    for index in 0..3 {
        let session = backend.session().await;
        candidates.push(session.campaign(&format!("scheduler-{index}")).await.unwrap());
        sessions.push(session);
    }
    let all: Vec<&Leadership> = candidates.iter().collect();
    let most = most_leaders_at_once(&all);
    let mut leader = the_leader(&all).await;
    for round in 0..2 {
        let closed = Instant::now();
        sessions[leader].close().await;
        let old = leader;
        leader = the_leader(&all).await;
        let took_over = closed.elapsed();
        println!("round {round}: took over after {took_over:?}");
        assert_ne!(leader, old);
        assert!(took_over <= SESSION_TIMEOUT + Duration::from_secs(1), "round {round}: took {took_over:?}");
        assert!(!candidates[old].is_leader());
        assert!(matches!(candidates[old].until_leader().await, Err(Error::Closed)));
    }
    drop(all);
    drop(candidates);
    assert!(most.await.unwrap() <= 1);
}

async fn config_changes_reach_watchers<B: Backend>(backend: Arc<B>) {
    let writer = backend.session().await;
    let reader = backend.session().await;
    assert_eq!(reader.config("pools").await.unwrap(), None);
    let mut pools = reader.watch_config("pools").await.unwrap();
    assert_eq!(*pools.borrow_and_update(), None);

    for limits in [serde_json::json!({"crawl": 2}), serde_json::json!({"crawl": 5, "etl": 1})] {
        writer.put_config("pools", &limits).await.unwrap();
        let seen = matches!(
            tokio::time::timeout(PROMPTLY, pools.wait_for(|pools| pools.as_ref() == Some(&limits))).await,
            Ok(Ok(_))
        );
        assert!(seen, "pools are still {:?}", *pools.borrow());
        assert_eq!(reader.config("pools").await.unwrap(), Some(limits));
    }
    // A watch opened later starts from the current document.
    let late = writer.watch_config("pools").await.unwrap();
    assert_eq!(*late.borrow(), Some(serde_json::json!({"crawl": 5, "etl": 1})));
    assert_eq!(reader.config("rates").await.unwrap(), None);
}

async fn names_that_cannot_name_a_node_are_refused<B: Backend>(backend: Arc<B>) {
    let session = backend.session().await;
    for name in ["", ".", "..", "a/b"] {
        assert!(matches!(session.join(worker(name, 1)).await, Err(Error::InvalidName(_))), "{name:?}");
        assert!(matches!(session.campaign(name).await, Err(Error::InvalidName(_))), "{name:?}");
        assert!(matches!(session.config(name).await, Err(Error::InvalidName(_))), "{name:?}");
    }
}

/// A TCP proxy to ZooKeeper whose connections can be cut, as if the process
/// behind it froze or its network failed.
struct Proxy {
    address: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let cuts = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *cuts.borrow() {
                    continue;
                }
                let mut cuts = cuts.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(ZOOKEEPER).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { address, cut }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_loses_its_members_and_leadership_then_joins_and_campaigns_again() {
    on_zookeeper(|backend: Arc<ZooKeeper>| async move {
        let proxy = Proxy::start().await;
        let cut_off = ZkRegistry::connect(backend.config(&proxy.address.to_string())).await.unwrap();
        let session_timeout = cut_off.session_timeout();
        let standby = backend.session().await;
        let mut members = standby.members().await.unwrap();

        let _membership = cut_off.join(worker("w1", 4)).await.unwrap();
        let old_leader = cut_off.campaign("scheduler-1").await.unwrap();
        tokio::time::timeout(PROMPTLY, old_leader.until_leader()).await.unwrap().unwrap();
        let new_leader = standby.campaign("scheduler-2").await.unwrap();
        let most = most_leaders_at_once(&[&old_leader, &new_leader]);
        members_until(&mut members, |members| ids(members) == ["w1"]).await;

        let cut = Instant::now();
        proxy.cut.send_replace(true);
        tokio::time::timeout(PROMPTLY, old_leader.until_follower()).await.unwrap();
        let stopped_leading = cut.elapsed();
        tokio::time::timeout(session_timeout * 3, new_leader.until_leader()).await.unwrap().unwrap();
        let took_over = cut.elapsed();
        members_until(&mut members, |members| members.is_empty()).await;
        println!(
            "leader stopped after {stopped_leading:?}; standby led after {took_over:?} (session timeout {session_timeout:?})"
        );
        assert!(stopped_leading < session_timeout, "{stopped_leading:?}");
        // The server expires a session on its tick after the timeout: this
        // bound needs a tick under 1 s, as in scripts/zookeeper.cfg.
        assert!(took_over <= session_timeout + Duration::from_secs(1), "{took_over:?}");

        proxy.cut.send_replace(false);
        members_until(&mut members, |members| ids(members) == ["w1"]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(new_leader.is_leader() && !old_leader.is_leader());
        drop((old_leader, new_leader));
        assert!(most.await.unwrap() <= 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_session_expired_does_not_remove_the_member_that_took_its_id() {
    on_zookeeper(|backend: Arc<ZooKeeper>| async move {
        let proxy = Proxy::start().await;
        let cut_off = ZkRegistry::connect(backend.config(&proxy.address.to_string())).await.unwrap();
        let other = backend.session().await;
        let mut members = other.members().await.unwrap();
        let stale = cut_off.join(worker("w1", 4)).await.unwrap();
        members_until(&mut members, |members| ids(members) == ["w1"]).await;

        proxy.cut.send_replace(true);
        let expired = matches!(
            tokio::time::timeout(SESSION_TIMEOUT * 3, members.wait_for(|members| members.is_empty())).await,
            Ok(Ok(_))
        );
        assert!(expired);
        let _taken = other.join(worker("w1", 8)).await.unwrap();
        proxy.cut.send_replace(false);
        // Until its new session is open, the cut-off registry's calls fail.
        let started = Instant::now();
        while cut_off.config("probe").await.is_err() {
            assert!(started.elapsed() < PROMPTLY, "no new session");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        drop(stale);
        // Requests of one session are handled in order: a delete sent by the
        // drop would be done before this call returns.
        cut_off.config("probe").await.unwrap();
        let client = zookeeper_client::Client::connect(ZOOKEEPER).await.unwrap();
        let (data, _) = client.get_data(&format!("{}/workers/w1", backend.chroot)).await.unwrap();
        assert_eq!(serde_json::from_slice::<WorkerInfo>(&data).unwrap(), worker("w1", 8));
    })
    .await;
}
