//! How a tap or a target is started: the executable, its extra arguments,
//! its `--config` (a table written to a private temporary JSON file), and
//! extra environment variables. String values of the config and the
//! environment may use `${env:NAME}`; they are interpolated only when the
//! process starts and never logged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};
use haul_common::env::interpolate_secret;
use secrecy::ExposeSecret;
use serde_json::Map;
use tokio::process::Command;

use super::process::SingerProcess;

/// The options every Singer plugin takes to start its executable.
#[derive(Debug)]
pub(crate) struct Launch {
    pub command: String,
    pub args: Vec<String>,
    pub config: Map<String, serde_json::Value>,
    pub env: BTreeMap<String, String>,
}

impl Launch {
    /// Checks that the executable exists and every `${env:…}` reference is set.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        find_executable(&self.command)?;
        self.interpolated_config()?;
        self.interpolated_env()?;
        Ok(())
    }

    /// Starts the executable with `--config` and each of `files` as a flag
    /// followed by a temporary JSON file. Standard input is piped when
    /// `with_stdin`, standard output and standard error always.
    pub(crate) fn spawn(
        &self,
        files: &[(&str, &serde_json::Value)],
        with_stdin: bool,
    ) -> anyhow::Result<SingerProcess> {
        let mut command = Command::new(&self.command);
        command.args(&self.args);
        let mut temporary = Vec::with_capacity(files.len() + 1);
        let config = json_file(&self.interpolated_config()?).context("cannot write the config file")?;
        command.arg("--config").arg(config.path());
        temporary.push(config);
        for (flag, content) in files {
            let file = json_file(content).with_context(|| format!("cannot write the file for `{flag}`"))?;
            command.arg(flag).arg(file.path());
            temporary.push(file);
        }
        command.envs(self.interpolated_env()?);
        command.stdin(if with_stdin { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        SingerProcess::spawn(&self.command, command, temporary)
    }

    fn interpolated_config(&self) -> anyhow::Result<serde_json::Value> {
        let mut config = serde_json::Value::Object(self.config.clone());
        interpolate_strings(&mut config).context("in `config`")?;
        Ok(config)
    }

    fn interpolated_env(&self) -> anyhow::Result<Vec<(&str, String)>> {
        self.env
            .iter()
            .map(|(name, value)| {
                let value = interpolate_secret(value).with_context(|| format!("in `env.{name}`"))?;
                Ok((name.as_str(), value.expose_secret().to_string()))
            })
            .collect()
    }
}

/// Replaces `${env:…}` references in every string of a JSON tree.
fn interpolate_strings(json: &mut serde_json::Value) -> anyhow::Result<()> {
    match json {
        serde_json::Value::String(text) => *text = interpolate_secret(text)?.expose_secret().to_string(),
        serde_json::Value::Array(items) => items.iter_mut().try_for_each(interpolate_strings)?,
        serde_json::Value::Object(map) => map.values_mut().try_for_each(interpolate_strings)?,
        _ => {}
    }
    Ok(())
}

/// Writes JSON to a temporary file readable by this user only.
fn json_file(content: &serde_json::Value) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new().prefix("haul-singer-").suffix(".json").tempfile()?;
    serde_json::to_writer(&mut file, content)?;
    file.flush()?;
    Ok(file)
}

/// Finds an executable given as a path or as a name on `PATH`.
fn find_executable(command: &str) -> anyhow::Result<()> {
    if command.contains('/') {
        if Path::new(command).is_file() {
            return Ok(());
        }
        bail!("the executable `{command}` does not exist");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|directory| directory.join(command).is_file()) {
        return Ok(());
    }
    bail!("the executable `{command}` is not on PATH")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_strings_are_interpolated_deeply() {
        // PATH is set wherever tests run.
        let path = std::env::var("PATH").unwrap();
        let mut config = json!({"a": "${env:PATH}", "b": [{"c": "x${env:PATH}"}], "d": 1});
        interpolate_strings(&mut config).unwrap();
        assert_eq!(config, json!({"a": path, "b": [{"c": format!("x{path}")}], "d": 1}));
        let mut missing = json!({"a": "${env:HAUL_SURELY_UNSET_VARIABLE}"});
        let error = interpolate_strings(&mut missing).unwrap_err().to_string();
        assert_eq!(error, "environment variable `HAUL_SURELY_UNSET_VARIABLE` is not set");
    }

    #[test]
    fn executables_are_found_on_path_or_by_path() {
        assert!(find_executable("sh").is_ok());
        assert!(find_executable("/bin/sh").is_ok());
        assert!(find_executable("haul-no-such-tap").unwrap_err().to_string().contains("not on PATH"));
        assert!(find_executable("./no/such/tap").unwrap_err().to_string().contains("does not exist"));
    }
}
