//! The `file` sink plugin: its options, and the [`Sink`] whose shard writers
//! write one part file per commit under a temporary name and rename it into
//! place when the commit makes it durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use async_trait::async_trait;
use haul_collect_core::plugin::WriterContext;
use haul_collect_core::registry::{OptionInfo, Plugin, PluginInfo, Role};
use haul_collect_core::{Batch, Delivery, ShardWriter, Sink};
use serde::Deserialize;

use super::csv_write::CsvEncoder;
use super::jsonl_write::JsonlEncoder;
use super::parquet_write::{ParquetCodec, ParquetEncoder};
use super::part::{self, PartEncoder, PartNames, PartOutput};

/// The formats the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    Jsonl,
    Csv,
    Parquet,
}

/// The compressions a job file may ask for; which apply depends on the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputCompression {
    None,
    Gzip,
    Snappy,
    Zstd,
}

/// The `file` sink's options in a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    pub format: OutputFormat,
    #[serde(default)]
    pub compression: Option<OutputCompression>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "part".to_string()
}

/// A format with the compression it is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Jsonl { gzip: bool },
    Csv { gzip: bool },
    Parquet(ParquetCodec),
}

impl Encoding {
    fn new(format: OutputFormat, compression: Option<OutputCompression>) -> anyhow::Result<Encoding> {
        use OutputCompression as C;
        Ok(match (format, compression) {
            (OutputFormat::Jsonl, None | Some(C::None)) => Encoding::Jsonl { gzip: false },
            (OutputFormat::Jsonl, Some(C::Gzip)) => Encoding::Jsonl { gzip: true },
            (OutputFormat::Csv, None | Some(C::None)) => Encoding::Csv { gzip: false },
            (OutputFormat::Csv, Some(C::Gzip)) => Encoding::Csv { gzip: true },
            (OutputFormat::Parquet, None | Some(C::Snappy)) => Encoding::Parquet(ParquetCodec::Snappy),
            (OutputFormat::Parquet, Some(C::Zstd)) => Encoding::Parquet(ParquetCodec::Zstd),
            (OutputFormat::Parquet, Some(C::None)) => Encoding::Parquet(ParquetCodec::None),
            (OutputFormat::Jsonl | OutputFormat::Csv, Some(other)) => {
                bail!("compression `{other:?}` applies to parquet only; jsonl and csv take `none` or `gzip`")
            }
            (OutputFormat::Parquet, Some(C::Gzip)) => {
                bail!("parquet takes compression `snappy`, `zstd` or `none`, not `gzip`")
            }
        })
    }

    fn extension(self) -> &'static str {
        match self {
            Encoding::Jsonl { gzip: false } => "jsonl",
            Encoding::Jsonl { gzip: true } => "jsonl.gz",
            Encoding::Csv { gzip: false } => "csv",
            Encoding::Csv { gzip: true } => "csv.gz",
            Encoding::Parquet(_) => "parquet",
        }
    }

    /// Starts encoding a part into `file`; its columns come from `first`.
    fn encoder(self, file: std::fs::File, first: &Batch) -> anyhow::Result<Box<dyn PartEncoder>> {
        Ok(match self {
            Encoding::Jsonl { gzip } => Box::new(JsonlEncoder::new(PartOutput::new(file, gzip))),
            Encoding::Csv { gzip } => Box::new(CsvEncoder::new(PartOutput::new(file, gzip), &first.schema)?),
            Encoding::Parquet(codec) => Box::new(ParquetEncoder::new(file, &first.schema, codec)?),
        })
    }
}

/// Builds `file` sinks.
pub struct FileSinkPlugin;

impl Plugin for FileSinkPlugin {
    type Config = FileSinkConfig;
    type Output = dyn Sink;

    fn info(&self) -> PluginInfo {
        let option = |name, kind, default, description| OptionInfo { name, kind, default, description };
        PluginInfo {
            kind: "file",
            role: Role::Sink,
            description: "writes JSON Lines, CSV or Parquet part files into a directory, one per commit (more when a \
                          batch brings a new field or type), renamed into place atomically",
            options: vec![
                option("path", "string", None, "the output directory, created if missing"),
                option("format", "string", None, "`jsonl`, `csv` or `parquet`"),
                option(
                    "compression",
                    "string",
                    Some("none; snappy for parquet"),
                    "`none` or `gzip` for jsonl and csv; `snappy`, `zstd` or `none` for parquet",
                ),
                option(
                    "prefix",
                    "string",
                    Some("part"),
                    "the start of each part's name: `{prefix}-{run}-{shard}-{sequence}.{ext}`",
                ),
            ],
        }
    }

    fn build(&self, config: FileSinkConfig) -> anyhow::Result<Arc<dyn Sink>> {
        let encoding = Encoding::new(config.format, config.compression)?;
        if config.prefix.is_empty() || config.prefix.contains(['/', '\\']) {
            bail!("`prefix` must be a non-empty file name without `/`");
        }
        Ok(Arc::new(FileSink { directory: config.path, encoding, prefix: config.prefix }))
    }
}

/// A configured `file` sink.
pub struct FileSink {
    directory: PathBuf,
    encoding: Encoding,
    prefix: String,
}

impl FileSink {
    async fn create_directory(&self) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(&self.directory)
            .await
            .with_context(|| format!("cannot create the output directory `{}`", self.directory.display()))
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn check(&self) -> anyhow::Result<()> {
        self.create_directory().await?;
        let probe = PartNames::new(&self.directory, &self.prefix, "check", "probe", "tmp").new_temp_path();
        tokio::fs::write(&probe, b"")
            .await
            .with_context(|| format!("cannot write into `{}`", self.directory.display()))?;
        tokio::fs::remove_file(&probe).await.with_context(|| format!("cannot remove `{}`", probe.display()))
    }

    fn delivery(&self) -> Delivery {
        Delivery::Idempotent
    }

    fn describe_output(&self) -> String {
        self.directory.display().to_string()
    }

    async fn open(&self, context: &WriterContext) -> anyhow::Result<Box<dyn ShardWriter>> {
        self.create_directory().await?;
        let names = PartNames::new(
            &self.directory,
            &self.prefix,
            &context.run_id,
            &context.shard_id,
            self.encoding.extension(),
        );
        let stale = names.clone();
        tokio::task::spawn_blocking(move || stale.remove_stale_temps()).await.context("the part cleaner stopped")??;
        Ok(Box::new(FileShardWriter { names, encoding: self.encoding, finished: Vec::new(), part: None }))
    }
}

/// A part being written since the last commit.
struct OpenPart {
    temp: PathBuf,
    encoder: Box<dyn PartEncoder>,
}

/// A part finished before the commit because a later batch did not fit it.
struct FinishedPart {
    temp: PathBuf,
    file: std::fs::File,
}

/// Writes one shard's parts.
struct FileShardWriter {
    names: PartNames,
    encoding: Encoding,
    finished: Vec<FinishedPart>,
    part: Option<OpenPart>,
}

impl FileShardWriter {
    fn start_part(&self, first: &Batch) -> anyhow::Result<OpenPart> {
        let temp = self.names.new_temp_path();
        let file = std::fs::File::create(&temp).with_context(|| format!("cannot create `{}`", temp.display()))?;
        match self.encoding.encoder(file, first) {
            Ok(encoder) => Ok(OpenPart { temp, encoder }),
            Err(error) => {
                remove_temp(&temp);
                Err(error)
            }
        }
    }

    /// The temporary files of this commit, finished or not.
    fn temps(&self) -> impl Iterator<Item = &Path> {
        self.finished.iter().map(|part| part.temp.as_path()).chain(self.part.iter().map(|part| part.temp.as_path()))
    }
}

#[async_trait]
impl ShardWriter for FileShardWriter {
    async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let part = match self.part.take() {
            Some(part) if part.encoder.fits(&batch.schema) => part,
            Some(OpenPart { temp, encoder }) => {
                let file = encoder.finish().with_context(|| format!("cannot finish `{}`", temp.display()));
                self.finished.push(FinishedPart { file: file.inspect_err(|_| remove_temp(&temp))?, temp });
                self.start_part(batch)?
            }
            None => self.start_part(batch)?,
        };
        let part = self.part.insert(part);
        part.encoder.write_batch(batch).with_context(|| format!("cannot write `{}`", part.temp.display()))
    }

    async fn commit(&mut self, sequence: u64) -> anyhow::Result<()> {
        let mut finished = std::mem::take(&mut self.finished);
        let current = self.part.take();
        if current.is_none() && finished.is_empty() {
            return Ok(());
        }
        let names = self.names.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(OpenPart { temp, encoder }) = current {
                match encoder.finish() {
                    Ok(file) => finished.push(FinishedPart { temp, file }),
                    Err(error) => {
                        remove_temp(&temp);
                        finished.iter().for_each(|part| remove_temp(&part.temp));
                        return Err(error);
                    }
                }
            }
            publish_all(&names, sequence, finished)
        })
        .await
        .context("the part commit stopped")?
    }

    async fn abort(&mut self) -> anyhow::Result<()> {
        let temps: Vec<PathBuf> = self.temps().map(Path::to_path_buf).collect();
        self.finished.clear();
        self.part = None;
        for temp in temps {
            tokio::fs::remove_file(&temp).await.with_context(|| format!("cannot remove `{}`", temp.display()))?;
        }
        Ok(())
    }
}

/// Publishes the parts of commit `sequence` under their final names, then
/// removes parts an earlier attempt of the same commit left under other
/// names (it may have split its batches differently). On error the parts not
/// published are removed.
fn publish_all(names: &PartNames, sequence: u64, parts: Vec<FinishedPart>) -> anyhow::Result<()> {
    let final_paths = names.final_paths(sequence, parts.len());
    let mut parts = parts.into_iter();
    let published = (|| {
        let earlier = names.committed_paths(sequence)?;
        for (FinishedPart { temp, file }, final_path) in (&mut parts).zip(&final_paths) {
            part::publish(file, &temp, final_path).inspect_err(|_| remove_temp(&temp))?;
        }
        for stale in earlier.iter().filter(|path| !final_paths.contains(path)) {
            std::fs::remove_file(stale).with_context(|| format!("cannot remove `{}`", stale.display()))?;
        }
        anyhow::Ok(())
    })();
    parts.for_each(|part| remove_temp(&part.temp));
    published
}

impl Drop for FileShardWriter {
    fn drop(&mut self) {
        let temps: Vec<PathBuf> = self.temps().map(Path::to_path_buf).collect();
        self.finished.clear();
        self.part = None;
        for temp in temps {
            remove_temp(&temp);
        }
    }
}

/// Removes a temporary part that will never be published; a failure only leaves litter.
fn remove_temp(temp: &Path) {
    if let Err(error) = std::fs::remove_file(temp) {
        tracing::warn!(file = %temp.display(), %error, "cannot remove a temporary part file");
    }
}
