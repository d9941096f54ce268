//! Opening a [`Store`] by URL, as the server config and `haul run` name it:
//! `sqlite://PATH` (relative, or absolute as `sqlite:///abs/path`),
//! `postgres://…` or `postgresql://…`, and `mysql://…` or `mariadb://…`
//! (user, password, host, port and database as their drivers read them).

use std::path::Path;
use std::sync::Arc;

use super::{Error, MySqlStore, PostgresStore, SqliteStore, Store};

const EXPECTED: &str = "expected sqlite://PATH, postgres://HOST/DATABASE or mysql://HOST/DATABASE";

/// Opens the store at `url` and applies pending migrations; a SQLite file and
/// its parent folder are created if missing.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::Unsupported(format!("`{url}` has no scheme; {EXPECTED}")));
    };
    match scheme {
        "sqlite" if rest.is_empty() => Err(Error::Unsupported(format!("`{url}` names no file"))),
        "sqlite" => Ok(Arc::new(SqliteStore::open(Path::new(rest)).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::connect(url).await?)),
        "mysql" | "mariadb" => Ok(Arc::new(MySqlStore::connect(url).await?)),
        other => Err(Error::Unsupported(format!("unknown store scheme `{other}`; {EXPECTED}"))),
    }
}

/// `url` with its password masked, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_hide_only_the_password() {
        assert_eq!(redacted("postgres://haul:s3cret@db:5432/haul"), "postgres://haul:***@db:5432/haul");
        assert_eq!(redacted("mysql://root@127.0.0.1/test"), "mysql://root@127.0.0.1/test");
        assert_eq!(redacted("sqlite://.haul/p:q@r.db"), "sqlite://.haul/p:q@r.db");
        assert_eq!(redacted("mariadb://u:p@w@host/db"), "mariadb://u:***@host/db");
    }

    #[tokio::test]
    async fn sqlite_url_creates_the_file_and_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".haul").join("state.db");
        let store = open(&format!("sqlite://{}", path.display())).await.unwrap();
        assert!(path.exists());
        assert_eq!(store.job_state("job").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_folder_that_cannot_be_created_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let url = format!("sqlite://{}", file.join("state.db").display());
        let error = open(&url).await.err().unwrap();
        assert!(matches!(error, Error::CreateFolder { .. }), "{error}");
        assert!(error.to_string().starts_with("cannot create the store folder "), "{error}");
    }

    #[tokio::test]
    async fn other_urls_are_clear_errors() {
        let cases = [
            ("redis://localhost", format!("unknown store scheme `redis`; {EXPECTED}")),
            ("state.db", format!("`state.db` has no scheme; {EXPECTED}")),
            ("sqlite://", "`sqlite://` names no file".to_string()),
        ];
        for (url, message) in cases {
            let error = open(url).await.err().unwrap();
            assert!(matches!(error, Error::Unsupported(_)), "{url}: {error}");
            assert_eq!(error.to_string(), format!("unsupported store url: {message}"));
        }
    }
}
