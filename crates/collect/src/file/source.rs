//! The `file` source plugin: its options, and the [`Source`] that checks,
//! plans and opens shards of CSV and JSON Lines files.

use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use haul_collect_core::job::Mode;
use haul_collect_core::registry::{OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Checkpoint, Plan, PlanContext, ShardReader, ShardSpec, Source};
use serde::Deserialize;

use super::csv_read::{self, CsvOptions};
use super::estimate;
use super::plan::{self, FileSizes, InputCompression, InputFormat, PlanOptions, ShardDescriptor};
use super::read::{self, FilePosition};

/// The `file` source's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    pub path: String,
    #[serde(default)]
    pub format: Option<InputFormat>,
    #[serde(default)]
    pub compression: InputCompression,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default = "default_quote")]
    pub quote: char,
    #[serde(default = "default_header")]
    pub header: bool,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub empty_as_null: bool,
    #[serde(default)]
    pub split_bytes: Option<u64>,
}

fn default_delimiter() -> char {
    ','
}

fn default_quote() -> char {
    '"'
}

fn default_header() -> bool {
    true
}

/// Builds `file` sources.
pub struct FileSourcePlugin;

impl Plugin for FileSourcePlugin {
    type Config = FileSourceConfig;
    type Output = dyn Source;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "file",
            role: Role::Source,
            description: "reads CSV and JSON Lines files, plain or gzip, named by a path or a glob pattern; \
                          incremental runs read new files and appended complete lines (a last line without a line \
                          end waits for the next run) and read a replaced file again from its start",
            options: vec![
                option(
                    "path",
                    "string",
                    None,
                    "a file or a glob pattern such as `data/*.csv.gz`, relative to the working directory",
                ),
                option(
                    "format",
                    "string",
                    None,
                    "`csv` or `jsonl`; inferred from each file's extension (after `.gz`) when absent",
                ),
                option(
                    "compression",
                    "string",
                    Some("auto"),
                    "`auto` (gzip when the name ends with `.gz`), `none` or `gzip`",
                ),
                option("delimiter", "string", Some(","), "csv: the single character between fields"),
                option("quote", "string", Some("\""), "csv: the single character that quotes fields"),
                option("header", "boolean", Some("true"), "csv: whether the first line names the columns"),
                option(
                    "columns",
                    "array",
                    None,
                    "csv: column names; required without a header, replaces the header's names otherwise",
                ),
                option(
                    "empty_as_null",
                    "boolean",
                    Some("false"),
                    "csv: read empty fields as null instead of empty strings",
                ),
                option(
                    "split_bytes",
                    "integer",
                    Some("67108864 for jsonl"),
                    "split large uncompressed files into byte ranges of about this size; csv only when set, and only safe when no quoted field holds a line end",
                ),
            ],
        }
    }

    fn build(&self, config: FileSourceConfig) -> anyhow::Result<Arc<dyn Source>> {
        glob::Pattern::new(&config.path).with_context(|| format!("invalid glob pattern `{}`", config.path))?;
        if config.split_bytes == Some(0) {
            bail!("`split_bytes` must be at least 1");
        }
        let csv = CsvOptions {
            delimiter: ascii_byte("delimiter", config.delimiter)?,
            quote: ascii_byte("quote", config.quote)?,
            header: config.header,
            columns: config.columns,
            empty_as_null: config.empty_as_null,
        };
        csv_read::check_options(&csv)?;
        let plan = PlanOptions {
            pattern: config.path,
            format: config.format,
            compression: config.compression,
            split_bytes: config.split_bytes,
        };
        Ok(Arc::new(FileSource { plan: Arc::new(plan), csv: Arc::new(csv) }))
    }
}

fn ascii_byte(option: &str, character: char) -> anyhow::Result<u8> {
    match u8::try_from(character) {
        Ok(byte) if byte.is_ascii() => Ok(byte),
        _ => bail!("`{option}` must be a single ascii character, not `{character}`"),
    }
}

/// A configured `file` source.
pub struct FileSource {
    plan: Arc<PlanOptions>,
    csv: Arc<CsvOptions>,
}

#[async_trait]
impl Source for FileSource {
    async fn check(&self) -> anyhow::Result<()> {
        let options = self.plan.clone();
        tokio::task::spawn_blocking(move || {
            for path in plan::matching_files(&options.pattern)? {
                std::fs::File::open(&path).with_context(|| format!("cannot open `{}`", path.display()))?;
            }
            anyhow::Ok(())
        })
        .await
        .context("the file check stopped")?
    }

    async fn plan(&self, context: &PlanContext) -> anyhow::Result<Plan> {
        let previous = match context.mode {
            Mode::Full => None,
            Mode::Incremental => match &context.previous_state {
                Some(state) => Some(
                    serde_json::from_value::<FileSizes>(state.clone())
                        .context("the job state is not the file sizes of an earlier run")?,
                ),
                None => None,
            },
            Mode::Range => bail!("the file source does not support range mode; use full or incremental"),
        };
        let options = self.plan.clone();
        let incremental = context.mode == Mode::Incremental;
        let (shards, sizes) =
            tokio::task::spawn_blocking(move || plan::plan_shards(&options, incremental, previous.as_ref()))
                .await
                .context("the file planner stopped")??;
        Ok(Plan { shards, next_state: Some(serde_json::to_value(sizes)?) })
    }

    async fn open(
        &self,
        shard: &ShardSpec,
        checkpoint: Option<&Checkpoint>,
        batch_size: usize,
    ) -> anyhow::Result<Box<dyn ShardReader>> {
        let descriptor: ShardDescriptor = shard.read_descriptor()?;
        let position = checkpoint
            .map(Checkpoint::read::<FilePosition>)
            .transpose()
            .with_context(|| format!("shard {}", shard.id))?;
        read::open_shard(descriptor, position, self.csv.clone(), batch_size.max(1)).await
    }

    async fn estimate(&self, shard: &ShardSpec) -> Option<u64> {
        let descriptor: ShardDescriptor = shard.read_descriptor().ok()?;
        tokio::task::spawn_blocking(move || estimate::estimate_records(&descriptor)).await.ok().flatten()
    }
}
