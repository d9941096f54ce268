//! Connections: the `url` option (with `${env:NAME}` interpolated and kept
//! secret), its description without credentials, and one pool per backend
//! behind one enum (no `AnyPool`, which loses column types). Server pools are
//! shared within the process (see [`super::shared_pools`]).

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::dialect::Dialect;
use super::errors::classify;
use super::shared_pools;

/// Connections a PostgreSQL or MySQL pool keeps open at most: one pool
/// serves every source (or every sink) of the process on the same database
/// (see [`super::shared_pools`]); they open only as shards need them.
const SERVER_MAX_CONNECTIONS: u32 = 64;
/// Connections a SQLite pool, a run's own, keeps open at most.
const SQLITE_MAX_CONNECTIONS: u32 = 16;
/// How long a writer waits for a locked SQLite file before failing (transiently).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// A database URL: secret, with its dialect and a printable description.
#[derive(Clone)]
pub struct ConnectionUrl {
    secret: SecretString,
    dialect: Dialect,
    description: String,
}

impl std::fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl ConnectionUrl {
    /// Interpolates `${env:NAME}` references and recognises the driver.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let secret = haul_common::env::interpolate_secret(text).context("in the sql `url` option")?;
        let url = secret.expose_secret();
        let (scheme, rest) = match url.split_once("://") {
            Some(split) => split,
            None if url.starts_with("sqlite:") => ("sqlite", &url["sqlite:".len()..]),
            None => bail!("the sql `url` must start with postgres://, mysql://, mariadb:// or sqlite://"),
        };
        let (dialect, default_port) = match scheme {
            "postgres" | "postgresql" => (Dialect::Postgres, 5432),
            "mysql" | "mariadb" => (Dialect::MySql, 3306),
            "sqlite" => (Dialect::Sqlite, 0),
            other => {
                bail!("unsupported sql url scheme `{other}`: expected postgres, postgresql, mysql, mariadb or sqlite")
            }
        };
        let description = match dialect {
            Dialect::Sqlite => format!("sqlite://{}", rest.split('?').next().unwrap_or_default()),
            _ => describe_network(dialect, rest, default_port),
        };
        let secret = match scheme {
            "mariadb" => SecretString::from(format!("mysql://{rest}")),
            _ => secret,
        };
        Ok(ConnectionUrl { secret, dialect, description })
    }

    /// `driver://host:port/db`, without user or password.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// `HOST:PORT` of a database server; `None` for a SQLite file.
    pub fn endpoint(&self) -> Option<String> {
        let (scheme, rest) = self.description.split_once("://")?;
        if scheme == "sqlite" {
            return None;
        }
        rest.split('/').next().map(str::to_string)
    }
}

/// `driver://host:port/db` from what follows `driver://`. The user and
/// password end at the last `@`: a password may hold `@`, `/`, `?` or `:`
/// unescaped, so nothing before that `@` is ever shown.
fn describe_network(dialect: Dialect, rest: &str, default_port: u16) -> String {
    let after_credentials = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let without_query = after_credentials.split('?').next().unwrap_or_default();
    let (host_port, database) = without_query.split_once('/').unwrap_or((without_query, ""));
    let host_port = if host_port.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    format!("{}://{host_port}/{database}", dialect.name())
}

/// A connection pool to one of the supported backends.
#[derive(Clone)]
pub enum Database {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// How a pool uses the database: sources read (a SQLite file is opened
/// read-only), sinks write (a missing SQLite file is created, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// A sink's SQLite file may name a folder that does not exist yet.
fn create_parent_folder(file: &std::path::Path) -> anyhow::Result<()> {
    match file.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        Some(parent) => {
            std::fs::create_dir_all(parent).with_context(|| format!("creating the folder {}", parent.display()))
        }
        None => Ok(()),
    }
}

impl Database {
    /// Opens a pool, or takes the one this process shares for the URL, and
    /// checks that one connection can be made.
    pub async fn connect(url: &ConnectionUrl, access: Access) -> anyhow::Result<Database> {
        let text = url.secret.expose_secret();
        let database = match url.dialect {
            Dialect::Postgres => shared_pools::shared(text, access, || {
                let options = PgConnectOptions::from_str(text).map_err(|_| invalid_url(url))?;
                Ok(Database::Postgres(
                    PgPoolOptions::new().max_connections(SERVER_MAX_CONNECTIONS).connect_lazy_with(options),
                ))
            })?,
            Dialect::MySql => shared_pools::shared(text, access, || {
                let options = MySqlConnectOptions::from_str(text).map_err(|_| invalid_url(url))?;
                Ok(Database::MySql(
                    MySqlPoolOptions::new().max_connections(SERVER_MAX_CONNECTIONS).connect_lazy_with(options),
                ))
            })?,
            Dialect::Sqlite => {
                let options = SqliteConnectOptions::from_str(text)
                    .map_err(|_| invalid_url(url))?
                    .create_if_missing(access == Access::Write)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT);
                let in_memory = text.contains(":memory:") || text.contains("mode=memory");
                if access == Access::Write && !in_memory {
                    create_parent_folder(options.get_filename())?;
                }
                // A source leaves the user's database as it is: read-only, journal mode unchanged.
                let options = match access {
                    Access::Read => options.read_only(!in_memory),
                    Access::Write if in_memory => options,
                    Access::Write => options.journal_mode(SqliteJournalMode::Wal),
                };
                // Every connection to an in-memory database is a different database.
                let connections = if in_memory { 1 } else { SQLITE_MAX_CONNECTIONS };
                Database::Sqlite(SqlitePoolOptions::new().max_connections(connections).connect_lazy_with(options))
            }
        };
        database.ping().await.with_context(|| format!("connecting to {}", url.description()))?;
        Ok(database)
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Database::Postgres(_) => Dialect::Postgres,
            Database::MySql(_) => Dialect::MySql,
            Database::Sqlite(_) => Dialect::Sqlite,
        }
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let result = match self {
            Database::Postgres(pool) => pool.acquire().await.map(drop),
            Database::MySql(pool) => pool.acquire().await.map(drop),
            Database::Sqlite(pool) => pool.acquire().await.map(drop),
        };
        result.map_err(classify)
    }
}

fn invalid_url(url: &ConnectionUrl) -> anyhow::Error {
    anyhow::anyhow!("invalid {} url (the url is not shown because it may hold a password)", url.dialect.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_hide_credentials() {
        let url = ConnectionUrl::parse("postgres://me:s3cr3t@db.local/sales?sslmode=require").unwrap();
        assert_eq!(url.description(), "postgres://db.local:5432/sales");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        let url = ConnectionUrl::parse("mariadb://root:pw@127.0.0.1:3307/test").unwrap();
        assert_eq!(url.dialect, Dialect::MySql);
        assert_eq!(url.description(), "mysql://127.0.0.1:3307/test");
        assert_eq!(ConnectionUrl::parse("sqlite::memory:").unwrap().description(), "sqlite://:memory:");
        assert_eq!(
            ConnectionUrl::parse("postgres://me:s3cr3t@db.local/sales").unwrap().endpoint().unwrap(),
            "db.local:5432"
        );
        assert_eq!(ConnectionUrl::parse("sqlite:///tmp/a.db").unwrap().endpoint(), None);
        assert_eq!(ConnectionUrl::parse("sqlite:///tmp/a.db?mode=rwc").unwrap().description(), "sqlite:///tmp/a.db");
    }

    #[test]
    fn passwords_with_url_characters_stay_hidden() {
        let url = ConnectionUrl::parse("postgres://me:se?cret@db/x").unwrap();
        assert_eq!(url.description(), "postgres://db:5432/x");
        let url = ConnectionUrl::parse("mysql://me:a/b@c:d@db:3307/x?ssl=true").unwrap();
        assert_eq!(url.description(), "mysql://db:3307/x");
    }

    proptest::proptest! {
        #[test]
        fn descriptions_never_hold_the_password(
            secret in "[ -~\u{a0}-\u{17f}]{0,24}",
            host in "[a-z][a-z0-9.-]{0,12}",
            query in proptest::option::of("[a-z=&]{0,10}"),
        ) {
            let password = format!("Pw{secret}");
            let query = query.map(|query| format!("?{query}")).unwrap_or_default();
            let url = format!("postgres://user:{password}@{host}/sales{query}");
            if let Ok(url) = ConnectionUrl::parse(&url) {
                let debug = format!("{url:?}");
                proptest::prop_assert!(!url.description().contains(&password), "{}", url.description());
                proptest::prop_assert!(!debug.contains(&password));
            }
        }
    }

    #[test]
    fn rejects_unknown_schemes() {
        let error = ConnectionUrl::parse("oracle://u:p@h/db").unwrap_err().to_string();
        assert!(error.contains("unsupported sql url scheme `oracle`"), "{error}");
        assert!(!error.contains("u:p"));
    }
}
