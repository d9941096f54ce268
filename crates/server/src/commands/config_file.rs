//! Reading a server or worker config file (TOML), with errors that name the
//! file and line.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Reads the config at `path`, or the defaults (an empty file) without one.
pub fn read<T: DeserializeOwned>(path: Option<&Path>) -> anyhow::Result<T> {
    let text = match path {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read the config {}", path.display()))?
        }
        None => String::new(),
    };
    let origin = path.map_or_else(|| "config".to_string(), |p| p.display().to_string());
    toml::from_str(&text).map_err(|error| {
        let location = error.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            format!(":{}", before.matches('\n').count() + 1)
        });
        anyhow::anyhow!("{origin}{}: {}", location.unwrap_or_default(), error.message().trim_end())
    })
}
