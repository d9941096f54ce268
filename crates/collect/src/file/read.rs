//! Reading one shard of the `file` source: the loop shared by every format
//! that frames records, builds batches, rejects bad records with their line,
//! and checkpoints byte offsets. It runs on a blocking thread and hands the
//! batches over through a small bounded channel.

use std::io::{self, BufRead};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use haul_collect_core::{Batch, Checkpoint, Rejected, ShardReader, SourceBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::csv_read::{self, CsvFormat, CsvOptions};
use super::input::{Input, InputFile};
use super::jsonl_read::{self, JsonlFormat};
use super::plan::{InputFormat, ShardDescriptor};

/// Batches read ahead of the consumer.
const READ_AHEAD: usize = 2;

/// A record longer than this fails the shard instead of filling the memory
/// (a CSV quote that is never closed, a file without line ends).
pub(crate) const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// A text format: how records are framed in the byte stream, and how they
/// become rows.
pub(crate) trait RecordFormat: Send {
    /// Reads one record's bytes, line end included, into the empty `raw`;
    /// false at the end of the input.
    fn read_record(&mut self, reader: &mut dyn BufRead, raw: &mut Vec<u8>) -> io::Result<bool>;

    /// Adds the record just read to the batch under way, or says why it cannot.
    fn push_row(&mut self, raw: &[u8]) -> Result<(), String>;

    /// The rows pushed since the last call.
    fn take_batch(&mut self) -> Batch;
}

/// The checkpoint of the `file` source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct FilePosition {
    /// The byte just after the last record read, in the decompressed file.
    pub offset: u64,
    /// The lines before `offset` (the line number of the last record's end),
    /// `null` in a shard that started inside the file and needed no line number.
    pub line: Option<u64>,
}

/// Opens a shard at `checkpoint`, or at its start, and starts reading it.
pub(crate) async fn open_shard(
    descriptor: ShardDescriptor,
    checkpoint: Option<FilePosition>,
    csv_options: Arc<CsvOptions>,
    batch_size: usize,
) -> anyhow::Result<Box<dyn ShardReader>> {
    let path = descriptor.path.clone();
    let shard =
        tokio::task::spawn_blocking(move || ShardInput::open(&descriptor, checkpoint, &csv_options, batch_size))
            .await
            .context("the shard opener stopped")?
            .with_context(|| format!("cannot open `{path}`"))?;
    Ok(Box::new(ChannelReader::spawn(shard)))
}

/// The state of a shard being read.
struct ShardInput {
    path: String,
    input: Input,
    format: Box<dyn RecordFormat>,
    end: Option<u64>,
    batch_size: usize,
    raw: Vec<u8>,
}

impl ShardInput {
    fn open(
        descriptor: &ShardDescriptor,
        checkpoint: Option<FilePosition>,
        csv_options: &CsvOptions,
        batch_size: usize,
    ) -> anyhow::Result<ShardInput> {
        let file = InputFile { path: PathBuf::from(&descriptor.path), gzip: descriptor.gzip, size: descriptor.size };
        let is_line_end = match descriptor.format {
            InputFormat::Csv => csv_read::is_line_end,
            InputFormat::Jsonl => jsonl_read::is_line_end,
        };
        let mut input = match (checkpoint, descriptor.start.checked_sub(1)) {
            (Some(position), _) => Input::open(&file, position.offset, position.line)?,
            (None, None) => Input::open(&file, 0, Some(0))?,
            (None, Some(before_start)) => {
                let mut input = Input::open(&file, before_start, None)?;
                input.skip_past_line_end(is_line_end)?;
                input
            }
        };
        let at_file_start = checkpoint.is_none() && descriptor.start == 0;
        let format: Box<dyn RecordFormat> = match descriptor.format {
            InputFormat::Jsonl => Box::new(JsonlFormat::default()),
            InputFormat::Csv => {
                let header = match (csv_options.header, at_file_start) {
                    (false, _) => None,
                    (true, true) => csv_read::read_header(csv_options, &mut input)?,
                    (true, false) => csv_read::read_header(csv_options, &mut Input::open(&file, 0, Some(0))?)?,
                };
                Box::new(CsvFormat::new(csv_options, header, &descriptor.path)?)
            }
        };
        let raw = Vec::new();
        Ok(ShardInput { path: descriptor.path.clone(), input, format, end: descriptor.end, batch_size, raw })
    }

    /// Reads up to `batch_size` records (rejected ones included); `None` at the end.
    fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        let begin = self.input.offset();
        let mut rejected = Vec::new();
        let mut records = 0;
        while records < self.batch_size {
            self.input.skip_line_ends()?;
            if self.end.is_some_and(|end| self.input.offset() >= end) {
                break;
            }
            let lines_before = self.input.lines_before();
            let line = lines_before.map(|before| before + 1);
            let format = &mut self.format;
            if !self.input.read_record(|reader, raw| format.read_record(reader, raw), &mut self.raw)? {
                break;
            }
            records += 1;
            if let Err(reason) = self.format.push_row(&self.raw) {
                let line = match line {
                    Some(line) => line,
                    None => self.line_of_last_record()?,
                };
                rejected.push(Rejected {
                    reason,
                    position: format!("{}:{line}", self.path),
                    record: serde_json::Value::String(record_text(&self.raw)),
                    stage: "source".into(),
                });
            }
        }
        if records == 0 {
            return Ok(None);
        }
        let position = FilePosition { offset: self.input.offset(), line: self.input.lines_before() };
        Ok(Some(SourceBatch {
            batch: self.format.take_batch(),
            rejected,
            checkpoint: Checkpoint(serde_json::to_value(position)?),
            bytes_read: Some(self.input.offset() - begin),
        }))
    }

    /// The line number where the record just read starts, counting the lines
    /// before the shard's start.
    fn line_of_last_record(&mut self) -> anyhow::Result<u64> {
        let next_line = self.input.line_number()?;
        let record_lines = self.raw.iter().filter(|&&byte| byte == b'\n').count() as u64;
        Ok(next_line.saturating_sub(record_lines))
    }
}

/// A record's text for the dead letters, without its line end.
fn record_text(raw: &[u8]) -> String {
    let end = raw.iter().rposition(|&byte| !matches!(byte, b'\r' | b'\n')).map_or(0, |last| last + 1);
    String::from_utf8_lossy(raw.get(..end).unwrap_or(raw)).into_owned()
}

type Item = anyhow::Result<Option<SourceBatch>>;

/// Receives the batches a blocking thread reads.
struct ChannelReader {
    batches: mpsc::Receiver<Item>,
    finished: bool,
}

impl ChannelReader {
    fn spawn(mut shard: ShardInput) -> ChannelReader {
        let (sender, batches) = mpsc::channel::<Item>(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            loop {
                let item = shard.next_batch();
                let last = !matches!(item, Ok(Some(_)));
                if sender.blocking_send(item).is_err() || last {
                    break;
                }
            }
        });
        ChannelReader { batches, finished: false }
    }
}

#[async_trait]
impl ShardReader for ChannelReader {
    async fn next_batch(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        if self.finished {
            return Ok(None);
        }
        let item = self.batches.recv().await.unwrap_or_else(|| Err(anyhow!("the file reader stopped unexpectedly")));
        if !matches!(item, Ok(Some(_))) {
            self.finished = true;
        }
        item
    }
}
