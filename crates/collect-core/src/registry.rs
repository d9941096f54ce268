//! The plugin registry: typed factories behind an untyped lookup by the
//! `type` string of a job file's table. The built-in set is registered by one
//! plain function in `haul-collect`; there is no link-time magic.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::job::PluginSpec;
use crate::{Processor, Sink, Source};

/// Where a plugin sits in a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Source,
    Processor,
    Sink,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Processor => "processor",
            Role::Sink => "sink",
        })
    }
}

/// One option of a plugin, for `haul plugins` and the docs.
#[derive(Debug, Clone, Serialize)]
pub struct OptionInfo {
    pub name: &'static str,
    /// The option's type in the job file, e.g. `string`, `integer`, `table`.
    pub kind: &'static str,
    /// The default, or `None` when the option is required or has no default.
    pub default: Option<&'static str>,
    pub description: &'static str,
}

/// What a plugin is and which options it takes.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub kind: &'static str,
    pub role: Role,
    pub description: &'static str,
    pub options: Vec<OptionInfo>,
}

/// The trait object a plugin of each role builds.
pub trait PluginRole: Send + Sync + 'static {
    const ROLE: Role;
    fn catalog(registry: &mut PluginRegistry) -> &mut Catalog<Self>;
    fn catalog_ref(registry: &PluginRegistry) -> &Catalog<Self>;
}

/// A typed plugin factory: reads its own `Config` from the job file's table
/// (without the `type` key) and builds the configured plugin.
pub trait Plugin: Send + Sync + 'static {
    type Config: DeserializeOwned;
    /// `dyn Source`, `dyn Processor` or `dyn Sink`.
    type Output: PluginRole + ?Sized;

    fn info(&self) -> PluginInfo;

    /// Builds the plugin. Errors here are about values that parse but make no
    /// sense together, or resources that cannot be prepared.
    fn build(&self, config: Self::Config) -> anyhow::Result<Arc<Self::Output>>;
}

/// Why a plugin could not be built from its table.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown {role} type `{kind}`, expected one of {}", choices.join(", "))]
    UnknownKind { role: Role, kind: String, choices: Vec<String> },
    /// The options do not fit the plugin's config; `path` leads to the offending key.
    #[error("{message}")]
    Config { path: Vec<String>, message: String },
    #[error(transparent)]
    Build(#[from] anyhow::Error),
}

/// An error a plugin's `build` returns to point at one of its options (for
/// example a transform program that does not compile): the job file error
/// then names that option's line and column.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OptionError {
    /// The path of keys inside the plugin's table, e.g. `["source"]`.
    pub path: Vec<String>,
    pub message: String,
}

trait ErasedPlugin<O: ?Sized>: Send + Sync {
    fn info(&self) -> PluginInfo;
    fn build(&self, options: &toml::Table) -> Result<Arc<O>, BuildError>;
}

impl<P: Plugin> ErasedPlugin<P::Output> for P {
    fn info(&self) -> PluginInfo {
        Plugin::info(self)
    }

    fn build(&self, options: &toml::Table) -> Result<Arc<P::Output>, BuildError> {
        let value = toml::Value::Table(options.clone());
        let config: P::Config = serde_path_to_error::deserialize(value).map_err(|error| {
            let path = error.path().iter().map(|segment| segment.to_string()).filter(|s| s != "?").collect();
            BuildError::Config { path, message: error.into_inner().to_string() }
        })?;
        Plugin::build(self, config).map_err(|error| match error.downcast::<OptionError>() {
            Ok(option) => BuildError::Config { path: option.path, message: option.message },
            Err(error) => BuildError::Build(error),
        })
    }
}

/// The plugins of one role, by their `type` string.
pub struct Catalog<O: ?Sized> {
    plugins: BTreeMap<&'static str, Box<dyn ErasedPlugin<O>>>,
}

impl<O: ?Sized> Default for Catalog<O> {
    fn default() -> Self {
        Catalog { plugins: BTreeMap::new() }
    }
}

macro_rules! role {
    ($object:ty, $role:expr, $field:ident) => {
        impl PluginRole for $object {
            const ROLE: Role = $role;
            fn catalog(registry: &mut PluginRegistry) -> &mut Catalog<Self> {
                &mut registry.$field
            }
            fn catalog_ref(registry: &PluginRegistry) -> &Catalog<Self> {
                &registry.$field
            }
        }
    };
}

role!(dyn Source, Role::Source, sources);
role!(dyn Processor, Role::Processor, processors);
role!(dyn Sink, Role::Sink, sinks);

/// Every plugin available to jobs.
#[derive(Default)]
pub struct PluginRegistry {
    sources: Catalog<dyn Source>,
    processors: Catalog<dyn Processor>,
    sinks: Catalog<dyn Sink>,
}

impl PluginRegistry {
    /// Adds a plugin under its `info().kind`; a later plugin of the same kind and role replaces it.
    pub fn add<P: Plugin>(&mut self, plugin: P) {
        let kind = Plugin::info(&plugin).kind;
        P::Output::catalog(self).plugins.insert(kind, Box::new(plugin));
    }

    /// Builds the plugin a job file's table describes.
    pub fn build<O: PluginRole + ?Sized>(&self, spec: &PluginSpec) -> Result<Arc<O>, BuildError> {
        let catalog = O::catalog_ref(self);
        let plugin = catalog.plugins.get(spec.kind.as_str()).ok_or_else(|| BuildError::UnknownKind {
            role: O::ROLE,
            kind: spec.kind.clone(),
            choices: catalog.plugins.keys().map(|k| k.to_string()).collect(),
        })?;
        plugin.build(&spec.options)
    }

    /// Every registered plugin, sources first.
    pub fn infos(&self) -> Vec<PluginInfo> {
        let sources = self.sources.plugins.values().map(|p| p.info());
        let processors = self.processors.plugins.values().map(|p| p.info());
        let sinks = self.sinks.plugins.values().map(|p| p.info());
        sources.chain(processors).chain(sinks).collect()
    }
}
