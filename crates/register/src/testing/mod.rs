//! Fresh, isolated store databases for tests (`testsuite` feature): a SQLite
//! file in a temporary folder, or a uniquely named database on the local
//! PostgreSQL or MariaDB server, dropped when the [`TestDatabase`] is. Tests
//! run in parallel, so each one gets its own.
//!
//! The servers are the ones the test script starts on 127.0.0.1; the
//! `HAUL_TEST_POSTGRES_URL` and `HAUL_TEST_MYSQL_URL` variables point
//! elsewhere (a URL of a database the user may create databases from).
//!
//! Tests that stop a broker run a [`PrivateRabbitMq`] node of their own;
//! tests that stop their database, a [`PrivatePostgres`] server; tests that
//! stop Redis, a [`PrivateRedis`].

mod private_postgres;
mod private_rabbitmq;
mod private_redis;

use std::sync::Arc;

use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::store::{self, Store};

pub use private_postgres::PrivatePostgres;
pub use private_rabbitmq::PrivateRabbitMq;
pub use private_redis::PrivateRedis;

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// The ZooKeeper the test script starts.
pub const ZOOKEEPER: &str = "127.0.0.1:2181";

/// Deletes the node `path` of [`ZOOKEEPER`] and everything under it: a
/// test's chroot, when the test ends.
pub async fn remove_zookeeper_tree(path: &str) {
    let client = zookeeper_client::Client::connect(ZOOKEEPER).await.unwrap();
    let mut nodes = vec![path.to_string()];
    let mut index = 0;
    while index < nodes.len() {
        let children = client.list_children(&nodes[index]).await.unwrap_or_default();
        let parent = nodes[index].clone();
        nodes.extend(children.into_iter().map(|child| format!("{parent}/{child}")));
        index += 1;
    }
    for node in nodes.iter().rev() {
        let _ = client.delete(node, None).await;
    }
}

/// Deletes `queues` (and the messages in them) from the RabbitMQ broker at
/// `url`, when a test ends; a broker that is gone or a queue that is
/// missing is no error.
pub async fn delete_rabbit_queues(url: &str, queues: &[String]) {
    use lapin::options::QueueDeleteOptions;
    let Ok(connection) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await else {
        return;
    };
    for queue in queues {
        // a failed delete closes the channel: one channel per queue
        let Ok(channel) = connection.create_channel().await else { break };
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// A store backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::MariaDb];

    /// The URL of the server's database that test databases are created from.
    fn admin_url(self) -> Option<String> {
        let (variable, default) = match self {
            Backend::Sqlite => return None,
            Backend::Postgres => ("HAUL_TEST_POSTGRES_URL", POSTGRES_URL),
            Backend::MariaDb => ("HAUL_TEST_MYSQL_URL", MYSQL_URL),
        };
        Some(std::env::var(variable).unwrap_or_else(|_| default.to_string()))
    }
}

/// An empty database of its own for one test; see the module documentation.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    url: String,
    /// The admin URL and the database name to drop, on a server.
    server: Option<(String, String)>,
    _folder: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// Creates an empty database; panics if the server is unreachable.
    pub async fn create(backend: Backend) -> Self {
        let Some(admin_url) = backend.admin_url() else {
            let folder = tempfile::tempdir().expect("a temporary folder");
            let url = format!("sqlite://{}", folder.path().join("state").join("haul.db").display());
            return TestDatabase { backend, url, server: None, _folder: Some(folder) };
        };
        let name = format!("haul_test_{}", uuid::Uuid::now_v7().simple());
        execute_on_server(backend, &admin_url, &format!("CREATE DATABASE {name}")).await;
        let (base, _) = admin_url.rsplit_once('/').expect("a database url ends with /DATABASE");
        let url = format!("{base}/{name}");
        TestDatabase { backend, url, server: Some((admin_url, name)), _folder: None }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The store URL of the database, for `store::open`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new store on the database (each with its own connections).
    pub async fn open(&self) -> Arc<dyn Store> {
        store::open(&self.url).await.unwrap_or_else(|error| panic!("opening {}: {error}", self.url))
    }
}

async fn execute_on_server(backend: Backend, admin_url: &str, statement: &str) {
    async fn execute<C: Connection>(admin_url: &str, statement: &str)
    where
        for<'c> &'c mut C: Executor<'c>,
    {
        let mut connection = C::connect(admin_url)
            .await
            .unwrap_or_else(|error| panic!("connecting to the test server {admin_url}: {error}"));
        connection
            .execute(AssertSqlSafe(statement.to_string()))
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
        let _ = connection.close().await;
    }
    match backend {
        Backend::Postgres => execute::<sqlx::PgConnection>(admin_url, statement).await,
        Backend::MariaDb => execute::<sqlx::MySqlConnection>(admin_url, statement).await,
        Backend::Sqlite => unreachable!("a sqlite test database is a file"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.server.take() else {
            return;
        };
        let backend = self.backend;
        let statement = match backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            _ => format!("DROP DATABASE IF EXISTS {name}"),
        };
        // Drop may run inside a runtime that is shutting down: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(execute_on_server(backend, &admin_url, &statement));
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop the test database {}", self.url);
        }
    }
}
