//! Opening a [`Store`] by URL, as the server config and `haul run` name it:
//! `sqlite://PATH` (relative, or absolute as `sqlite:///abs/path`). The
//! `mysql://` and `postgres://` backends are not available yet.

use std::path::Path;
use std::sync::Arc;

use super::{Error, SqliteStore, Store};

/// Opens the store at `url`, creating a SQLite file and its parent folder if
/// missing, and applying pending migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::Unsupported(format!("`{url}` has no scheme; expected sqlite://PATH")));
    };
    match scheme {
        "sqlite" if rest.is_empty() => Err(Error::Unsupported(format!("`{url}` names no file"))),
        "sqlite" => Ok(Arc::new(SqliteStore::open(Path::new(rest)).await?)),
        "mysql" | "mariadb" | "postgres" | "postgresql" => {
            Err(Error::Unsupported(format!("the {scheme} store is not supported yet; use sqlite://PATH")))
        }
        other => Err(Error::Unsupported(format!("unknown store scheme `{other}`; expected sqlite://PATH"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("postgres://localhost/haul", "the postgres store is not supported yet; use sqlite://PATH"),
            ("mysql://localhost/haul", "the mysql store is not supported yet; use sqlite://PATH"),
            ("redis://localhost", "unknown store scheme `redis`; expected sqlite://PATH"),
            ("state.db", "`state.db` has no scheme; expected sqlite://PATH"),
            ("sqlite://", "`sqlite://` names no file"),
        ];
        for (url, message) in cases {
            let error = open(url).await.err().unwrap();
            assert!(matches!(error, Error::Unsupported(_)), "{url}: {error}");
            assert_eq!(error.to_string(), format!("unsupported store url: {message}"));
        }
    }
}
