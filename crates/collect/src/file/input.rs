//! A shard's input: the bytes of one file (decompressed when gzip), read from
//! a given offset up to the size recorded at planning, with the position of
//! the next byte kept as a byte offset and a line count. Line numbers of
//! shards that start inside a file are counted only when one is needed.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::PathBuf;

use anyhow::{Context, ensure};
use flate2::read::MultiGzDecoder;

/// The read buffer: large, so that files stream with few system calls.
const BUFFER_BYTES: usize = 1024 * 1024;

/// The UTF-8 byte order mark, skipped at the start of a file.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Which file to read and how.
#[derive(Debug, Clone)]
pub(crate) struct InputFile {
    pub path: PathBuf,
    pub gzip: bool,
    /// Bytes of the (compressed) file to read at most: its size at planning.
    pub size: u64,
}

impl InputFile {
    /// The file's (decompressed) bytes from `offset` on, unbuffered.
    fn stream_from(&self, offset: u64) -> anyhow::Result<Box<dyn Read + Send>> {
        let path = self.path.display();
        let mut file = File::open(&self.path).with_context(|| format!("cannot open `{path}`"))?;
        if !self.gzip {
            file.seek(SeekFrom::Start(offset)).with_context(|| format!("cannot seek `{path}` to byte {offset}"))?;
            return Ok(Box::new(file.take(self.size.saturating_sub(offset))));
        }
        let mut stream = MultiGzDecoder::new(BufReader::with_capacity(BUFFER_BYTES, file.take(self.size)));
        let skipped = io::copy(&mut (&mut stream).take(offset), &mut io::sink())
            .with_context(|| format!("cannot decompress `{path}`"))?;
        ensure!(skipped == offset, "`{path}` holds {skipped} decompressed bytes, fewer than the offset {offset}");
        Ok(Box::new(stream))
    }
}

/// The input of one shard, positioned at its next byte.
pub(crate) struct Input {
    file: InputFile,
    reader: Box<dyn BufRead + Send>,
    opened_at: u64,
    offset: u64,
    /// Newlines consumed since `opened_at`.
    newlines: u64,
    /// Newlines before `opened_at`, once known.
    newlines_before: Option<u64>,
}

impl Input {
    /// Opens `file` at `offset` of its decompressed bytes. A byte order mark at
    /// the start is skipped. `newlines_before` is the number of lines before
    /// `offset`, when the caller knows it.
    pub fn open(file: &InputFile, offset: u64, newlines_before: Option<u64>) -> anyhow::Result<Input> {
        let mut stream = file.stream_from(offset)?;
        let (mut offset, mut newlines_before) = (offset, newlines_before);
        if offset == 0 {
            let mut head = Vec::with_capacity(BOM.len());
            (&mut stream)
                .take(BOM.len() as u64)
                .read_to_end(&mut head)
                .with_context(|| format!("cannot read `{}`", file.path.display()))?;
            if head == BOM {
                head.clear();
                offset = BOM.len() as u64;
            }
            stream = Box::new(Cursor::new(head).chain(stream));
            newlines_before = Some(0);
        }
        let reader = Box::new(BufReader::with_capacity(BUFFER_BYTES, stream));
        Ok(Input { file: file.clone(), reader, opened_at: offset, offset, newlines: 0, newlines_before })
    }

    /// The offset of the next byte in the decompressed file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The lines before the next byte, when known without counting.
    pub fn lines_before(&self) -> Option<u64> {
        self.newlines_before.map(|before| before + self.newlines)
    }

    /// The line number of the next byte, counting the lines before the
    /// shard's start on first use.
    pub fn line_number(&mut self) -> anyhow::Result<u64> {
        let before = match self.newlines_before {
            Some(before) => before,
            None => {
                let before = count_newlines(&self.file, self.opened_at)?;
                self.newlines_before = Some(before);
                before
            }
        };
        Ok(before + self.newlines + 1)
    }

    /// Reads one record with `read`, which fills `raw` with the record's bytes
    /// (line end included) and says whether there was one.
    pub fn read_record(
        &mut self,
        read: impl FnOnce(&mut dyn BufRead, &mut Vec<u8>) -> io::Result<bool>,
        raw: &mut Vec<u8>,
    ) -> anyhow::Result<bool> {
        raw.clear();
        let found =
            read(&mut *self.reader, raw).with_context(|| format!("cannot read `{}`", self.file.path.display()))?;
        self.offset += raw.len() as u64;
        self.newlines += newline_count(raw);
        Ok(found)
    }

    /// Skips the line ends (`\r`, `\n`) at the current position: blank lines
    /// and the rest of a `\r\n`.
    pub fn skip_line_ends(&mut self) -> anyhow::Result<()> {
        self.skip(|byte| matches!(byte, b'\r' | b'\n'), false)
    }

    /// Skips up to and including the first byte for which `is_line_end` holds:
    /// the rest of a line that belongs to the shard before.
    pub fn skip_past_line_end(&mut self, is_line_end: fn(u8) -> bool) -> anyhow::Result<()> {
        self.skip(|byte| !is_line_end(byte), true)
    }

    /// Consumes bytes while `skipped` holds; with `and_next`, the first byte
    /// where it does not as well.
    fn skip(&mut self, skipped: impl Fn(u8) -> bool, and_next: bool) -> anyhow::Result<()> {
        loop {
            let buffer =
                self.reader.fill_buf().with_context(|| format!("cannot read `{}`", self.file.path.display()))?;
            if buffer.is_empty() {
                return Ok(());
            }
            let stop = buffer.iter().position(|&byte| !skipped(byte));
            let consumed = match stop {
                Some(position) if and_next => position + 1,
                Some(position) => position,
                None => buffer.len(),
            };
            self.newlines += newline_count(buffer.get(..consumed).unwrap_or(buffer));
            self.offset += consumed as u64;
            self.reader.consume(consumed);
            if stop.is_some() {
                return Ok(());
            }
        }
    }
}

fn newline_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&byte| byte == b'\n').count() as u64
}

/// The number of newlines in the first `offset` decompressed bytes of `file`.
fn count_newlines(file: &InputFile, offset: u64) -> anyhow::Result<u64> {
    let mut reader = BufReader::with_capacity(BUFFER_BYTES, file.stream_from(0)?.take(offset));
    let mut count = 0;
    loop {
        let buffer = reader.fill_buf().with_context(|| format!("cannot read `{}`", file.path.display()))?;
        if buffer.is_empty() {
            break;
        }
        count += newline_count(buffer);
        let length = buffer.len();
        reader.consume(length);
    }
    Ok(count)
}
