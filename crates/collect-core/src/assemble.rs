//! Builds a job's plugins from its text, turning every configuration problem
//! into an error that names the file (or API origin), line and column. Used
//! alike by `haul run`, `haul check` and the server, so a job is validated
//! the same way wherever it is submitted.

use std::path::Path;
use std::sync::Arc;

use crate::deadletter::{DeadLetters, FileDeadLetters, TableDeadLetters};
use crate::job::{DeadLetterSpec, JobFileError, JobSource, JobSpec, PluginSpec};
use crate::registry::{BuildError, PluginRegistry, PluginRole};
use crate::runtime::Pipeline;
use crate::{Sink, Source};

/// A parsed job with its plugins built.
pub struct LoadedJob {
    pub source_text: JobSource,
    pub spec: JobSpec,
    pub pipeline: Pipeline,
}

/// Reads, validates and builds the job file at `path`; a job without a
/// `name` is named after the file.
pub fn load_file(path: &Path, registry: &PluginRegistry) -> Result<LoadedJob, JobFileError> {
    let source_text = JobSource::read(path)?;
    let default_name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("job").to_string();
    load(source_text, &default_name, registry)
}

/// Validates and builds a job from its text.
pub fn load(source_text: JobSource, default_name: &str, registry: &PluginRegistry) -> Result<LoadedJob, JobFileError> {
    let spec = source_text.parse(default_name)?;
    let pipeline = Pipeline {
        source: build(&source_text, registry, &spec.source)?,
        processors: spec.processors.iter().map(|p| build(&source_text, registry, p)).collect::<Result<_, _>>()?,
        sink: build(&source_text, registry, &spec.sink)?,
    };
    Ok(LoadedJob { source_text, spec, pipeline })
}

/// The job's dead letters: its `dead_letter` file or table, or by default
/// `<state_dir>/deadletter/<job>.jsonl`.
pub fn dead_letters(
    job: &LoadedJob,
    registry: &PluginRegistry,
    state_dir: &Path,
) -> Result<Arc<dyn DeadLetters>, JobFileError> {
    Ok(match &job.spec.dead_letter {
        None => Arc::new(FileDeadLetters::new(state_dir.join("deadletter").join(format!("{}.jsonl", job.spec.name)))),
        Some(DeadLetterSpec::File { path }) => Arc::new(FileDeadLetters::new(path)),
        Some(DeadLetterSpec::Table { url, table }) => {
            let plugin = |extra: &[(&str, toml::Value)]| {
                let mut options = toml::Table::new();
                options.insert("url".into(), url.clone().into());
                options.insert("table".into(), table.clone().into());
                options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
                PluginSpec { kind: "sql".into(), options, location: vec!["dead_letter".into()] }
            };
            let key = toml::Value::Array(vec!["id".into()]);
            let source: Arc<dyn Source> = build(&job.source_text, registry, &plugin(&[]))?;
            let sink: Arc<dyn Sink> =
                build(&job.source_text, registry, &plugin(&[("mode", "upsert".into()), ("key", key)]))?;
            Arc::new(TableDeadLetters::new(source, sink))
        }
    })
}

fn build<O: PluginRole + ?Sized>(
    source_text: &JobSource,
    registry: &PluginRegistry,
    plugin: &PluginSpec,
) -> Result<Arc<O>, JobFileError> {
    registry.build::<O>(plugin).map_err(|error| match error {
        BuildError::Config { path, message } => source_text.plugin_error(plugin, &path, message),
        BuildError::UnknownKind { .. } => source_text.plugin_error(plugin, &["type".to_string()], error.to_string()),
        BuildError::Build(error) => source_text.plugin_error(plugin, &[], format!("{error:#}")),
    })
}
