//! `haul plugins`: lists every plugin and its options.

use std::io::Write;
use std::process::ExitCode;

use crate::job_loader;

#[derive(Debug, clap::Args)]
pub struct PluginsArgs {
    /// Show only this plugin type (e.g. `sql`).
    pub kind: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub fn run(args: PluginsArgs) -> anyhow::Result<ExitCode> {
    let infos: Vec<_> = job_loader::builtin_registry()
        .infos()
        .into_iter()
        .filter(|info| args.kind.as_deref().is_none_or(|kind| info.kind == kind))
        .collect();
    if infos.is_empty() {
        anyhow::bail!("no plugin of type `{}`", args.kind.unwrap_or_default());
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&infos)?)?,
        Output::Text => {
            for info in infos {
                writeln!(out, "{} {}: {}", info.role, info.kind, info.description)?;
                for option in &info.options {
                    let default = option.default.map(|d| format!(" (default {d})")).unwrap_or_default();
                    writeln!(out, "    {:<20} {:<10} {}{default}", option.name, option.kind, option.description)?;
                }
                writeln!(out)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
