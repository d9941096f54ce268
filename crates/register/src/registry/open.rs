//! Opening a [`Registry`] by URL, as the server config names it:
//! `memory://` (in-process) or
//! `zk://HOST:PORT[,HOST:PORT…][/CHROOT][?session_timeout=5s]`
//! (ZooKeeper; the chroot defaults to `/haul`).

use std::sync::Arc;

use haul_common::duration::HumanDuration;

use super::{Error, MemoryRegistry, Registry, ZkConfig, ZkRegistry};

/// Opens the registry at `url`: a fresh in-process one, or a ZooKeeper session.
pub async fn open(url: &str) -> Result<Arc<dyn Registry>, Error> {
    match url.split_once("://") {
        Some(("memory", "")) => Ok(Arc::new(MemoryRegistry::new())),
        Some(("zk", _)) => Ok(Arc::new(ZkRegistry::connect(zk_config(url)?).await?)),
        _ => Err(Error::Unsupported(format!("`{url}`: expected memory:// or zk://HOST:PORT[,…][/CHROOT]"))),
    }
}

/// Reads a `zk://` URL.
fn zk_config(url: &str) -> Result<ZkConfig, Error> {
    let invalid = |why: &str| Error::Unsupported(format!("`{url}`: {why}"));
    let rest = url.strip_prefix("zk://").ok_or_else(|| invalid("expected zk://"))?;
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (hosts, chroot) = match address.find('/') {
        Some(slash) => (&address[..slash], &address[slash..]),
        None => (address, ""),
    };
    if hosts.is_empty() || hosts.split(',').any(|host| host.rsplit_once(':').is_none_or(|(name, _)| name.is_empty())) {
        return Err(invalid("expected HOST:PORT[,HOST:PORT…] after zk://"));
    }
    let mut config = ZkConfig::new(hosts);
    if !chroot.is_empty() && chroot != "/" {
        config.chroot = chroot.trim_end_matches('/').to_string();
    }
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("session_timeout", value)) => {
                let HumanDuration(timeout) = value.parse().map_err(|error| invalid(&format!("{error}")))?;
                config.session_timeout = timeout;
            }
            _ => return Err(invalid(&format!("unknown parameter `{pair}`; expected session_timeout"))),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn zk_urls_name_hosts_chroot_and_session_timeout() {
        let config = zk_config("zk://10.0.0.1:2181,10.0.0.2:2181/prod/haul?session_timeout=8s").unwrap();
        assert_eq!(config.hosts, "10.0.0.1:2181,10.0.0.2:2181");
        assert_eq!(config.chroot, "/prod/haul");
        assert_eq!(config.session_timeout, Duration::from_secs(8));

        let config = zk_config("zk://127.0.0.1:2181").unwrap();
        assert_eq!(config, ZkConfig::new("127.0.0.1:2181"));
        assert_eq!(zk_config("zk://127.0.0.1:2181/").unwrap().chroot, "/haul");
    }

    #[tokio::test]
    async fn bad_urls_are_clear_errors() {
        let cases = [
            ("redis://localhost", "`redis://localhost`: expected memory:// or zk://HOST:PORT[,…][/CHROOT]"),
            ("memory://x", "`memory://x`: expected memory:// or zk://HOST:PORT[,…][/CHROOT]"),
            ("zk:///haul", "`zk:///haul`: expected HOST:PORT[,HOST:PORT…] after zk://"),
            ("zk://localhost/haul", "`zk://localhost/haul`: expected HOST:PORT[,HOST:PORT…] after zk://"),
            (
                "zk://localhost:2181?timeout=1s",
                "`zk://localhost:2181?timeout=1s`: unknown parameter `timeout=1s`; expected session_timeout",
            ),
        ];
        for (url, message) in cases {
            let error = open(url).await.err().unwrap();
            assert_eq!(error.to_string(), format!("unsupported registry url: {message}"), "{url}");
        }
        let error = open("zk://localhost:2181?session_timeout=soon").await.err().unwrap();
        assert!(error.to_string().contains("invalid duration `soon`"), "{error}");
    }
}
