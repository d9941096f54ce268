//! A RabbitMQ node of one test's own, for tests that stop or restart the
//! broker: [`PrivateRabbitMq`] runs `rabbitmq-server` on free ports of
//! 127.0.0.1 under a node name of its own (`haul-test-PORT@localhost`), with
//! its database, logs, configuration and Erlang cookie in a temporary folder,
//! and no plugins. The shared node on 5672 is never touched. A test may stop
//! the node, restart it with its data, or delete a queue as a node that lost
//! its data would have.
//!
//! The node runs as a child of the test, in the test's process group, so
//! that a runner that signals the group (nextest does, on a timeout) stops it
//! too. It registers with the machine's `epmd` (the shared node's, normally;
//! a node that finds none starts one, which outlives it).
//! `HAUL_TEST_RABBITMQ_BIN` names the folder of `rabbitmq-server` (default:
//! Debian's `/usr/lib/rabbitmq/bin`, whose scripts run as the calling user,
//! unlike the `/usr/sbin` wrappers).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Longest wait for the node to accept AMQP connections, or to stop.
const PATIENCE: Duration = Duration::from_secs(60);

/// The node's configuration, in the classic format (no schema to translate
/// at boot): logs of warnings and worse, to the file only.
const CONFIG: &str = "[{rabbit, [{log, [{console, [{enabled, false}]}, {file, [{level, warning}]}]}]}].\n";

/// A private RabbitMQ node, stopped when dropped; see the module documentation.
pub struct PrivateRabbitMq {
    port: u16,
    dist_port: u16,
    folder: tempfile::TempDir,
    /// The `rabbitmq-server` script while the node runs; it stops the node on SIGTERM.
    process: Option<Child>,
}

impl PrivateRabbitMq {
    /// Starts a fresh node and waits until it accepts AMQP connections as
    /// guest; panics if it does not within a minute.
    pub async fn start() -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(folder.path().join("rabbitmq.config"), CONFIG).expect("writing rabbitmq.config");
        // empty: no plugins (the management plugin would want port 15672), no rabbitmq-env.conf
        std::fs::write(folder.path().join("enabled_plugins"), "").expect("writing enabled_plugins");
        std::fs::write(folder.path().join("rabbitmq-env.conf"), "").expect("writing rabbitmq-env.conf");
        let mut node = PrivateRabbitMq { port: free_port(), dist_port: free_port(), folder, process: None };
        node.launch().await;
        node
    }

    /// The AMQP URL of the node's default virtual host, as guest.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's Erlang name.
    pub fn node_name(&self) -> String {
        format!("haul-test-{}@localhost", self.port)
    }

    /// Stops the node cleanly (SIGTERM, which RabbitMQ takes as a graceful
    /// shutdown) and waits until it has exited; its data stays.
    pub async fn stop(&mut self) {
        let Some(process) = self.process.as_mut() else {
            return;
        };
        signal(process.id(), Signal::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        while let Ok(None) = process.try_wait() {
            if Instant::now() >= deadline {
                self.kill();
                panic!("rabbitmq node {} did not stop within {PATIENCE:?}", self.node_name());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.process = None;
    }

    /// Stops the node and starts it again on the same ports with the same
    /// data: durable queues and the messages in them survive.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Deletes `queue` and the messages in it, as a node that lost its data
    /// would have; its consumers are cancelled. Panics if the node refuses.
    pub async fn delete_queue(&self, queue: &str) {
        let connection = Connection::connect(&self.url(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|error| panic!("connecting to rabbitmq node {}: {error}", self.node_name()));
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|error| panic!("deleting queue {queue}: {error}"));
        let _ = connection.close(200, "done".into()).await;
    }

    /// Starts `rabbitmq-server` and waits until the node accepts AMQP connections.
    async fn launch(&mut self) {
        assert!(self.process.is_none(), "the node runs already");
        let folder = self.folder.path();
        let output = std::fs::File::create(folder.join("startup.log")).expect("creating startup.log");
        let errors = output.try_clone().expect("a second handle on startup.log");
        let bin = std::env::var_os("HAUL_TEST_RABBITMQ_BIN")
            .map_or_else(|| PathBuf::from("/usr/lib/rabbitmq/bin"), PathBuf::from);
        let process = Command::new(bin.join("rabbitmq-server"))
            .env("HOME", folder)
            .env("RABBITMQ_NODENAME", self.node_name())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", folder.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", folder.join("rabbitmq.config"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", folder.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", folder.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", folder.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", folder.join("log"))
            .env("RABBITMQ_PID_FILE", folder.join("node.pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", bin.join("rabbitmq-server").display()));
        self.process = Some(process);
        self.wait_until_ready().await;
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        let url = self.url();
        loop {
            if let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await {
                let _ = connection.close(200, "ready".into()).await;
                return;
            }
            let exited = self.process.as_mut().and_then(|process| process.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                panic!("rabbitmq node {} did not start ({exited:?}); its output:\n{}", self.node_name(), self.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the node printed and logged, to explain a failure.
    fn output(&self) -> String {
        let folder = self.folder.path();
        let log = folder.join("log").join(format!("{}.log", self.node_name()));
        read(&folder.join("startup.log")) + &read(&log)
    }

    /// Kills a node that did not stop: its Erlang VM, then its script.
    fn kill(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let vm = std::fs::read_to_string(self.folder.path().join("node.pid"));
        if let Some(pid) = vm.ok().and_then(|pid| pid.trim().parse().ok()) {
            signal(pid, Signal::SIGKILL);
        }
        let _ = process.kill();
        let _ = process.wait();
    }
}

impl Drop for PrivateRabbitMq {
    /// Stops the node cleanly, or kills it when it does not stop in time.
    fn drop(&mut self) {
        let Some(process) = self.process.as_mut() else {
            return;
        };
        signal(process.id(), Signal::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        while let Ok(None) = process.try_wait() {
            if Instant::now() >= deadline {
                self.kill();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
