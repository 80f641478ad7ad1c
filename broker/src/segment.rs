//! One segment of a partition: a `.log` file of record batches and its sparse indexes.
//!
//! Batches are found by looking up the index entry at or before the wanted offset (or timestamp)
//! and scanning batch headers from there, reading the file in large chunks. Reads run without any
//! lock on a [`SegmentView`]: the log file only grows, and a view never looks past the bytes that
//! were completely written when it was taken.

use std::fs::{File, OpenOptions};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::{self, BatchInfo};
use crate::error::LogError;
use crate::index::{SegmentIndex, segment_file_name};

/// Bytes read at once while scanning batch headers.
const SCAN_CHUNK: usize = 64 * 1024;

/// A segment's log file, shared with readers.
pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    /// Writes so far: each append takes the next number as its ticket.
    writes: AtomicU64,
    /// The highest ticket known durable; held while an fsync runs, so appends that wait for
    /// one fsync behind the running one (group commit).
    synced: Mutex<u64>,
}

pub(crate) struct Segment {
    base_offset: i64,
    log: Arc<LogFile>,
    index: SegmentIndex,
    /// Bytes of complete batches in the file.
    size: u64,
    /// The offset after the segment's last record.
    next_offset: i64,
    /// The newest record's timestamp; `i64::MIN` while the segment is empty.
    max_timestamp: i64,
    /// When this process opened or created the segment: its age for rolling.
    opened: Instant,
}

/// What a lock-free reader needs of a segment.
pub(crate) struct SegmentView {
    log: Arc<LogFile>,
    /// Where to start scanning batch headers.
    start: u64,
    /// Bytes completely written when the view was taken.
    size: u64,
}

/// Where a header scan ended, and why if the file is damaged there.
struct ScanEnd {
    position: u64,
    next_offset: i64,
    problem: Option<String>,
}

impl Segment {
    /// Creates an empty segment starting at `base_offset`.
    pub fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(LogError::io(&path))?;
        let index = SegmentIndex::create(dir, base_offset)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(LogError::io(dir))?;
        Ok(Segment {
            base_offset,
            log: Arc::new(LogFile::new(path, file)),
            index,
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            opened: Instant::now(),
        })
    }

    /// Opens an existing segment. With `validate` (after an unclean stop) every batch's length,
    /// magic, CRC-32C and offsets are checked, the file is truncated at the first bad one and the
    /// index rebuilt. Without it the index files are trusted if they are consistent with the log,
    /// and only the batch headers after their last entry are read; otherwise the index is rebuilt
    /// from every batch header. Returns `false` when the segment had to be truncated.
    pub fn open(dir: &Path, base_offset: i64, validate: bool) -> Result<(Segment, bool), LogError> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io(&path))?;
        let log = LogFile::new(path, file);
        let len = log.len()?;
        if !validate {
            match SegmentIndex::load(dir, base_offset, len)? {
                Ok(index) => match Self::trust_index(log, index, base_offset, len)? {
                    Ok(segment) => return Ok((segment, true)),
                    Err((log, why)) => return Self::rebuild(dir, log, base_offset, false, &why),
                },
                Err(why) => return Self::rebuild(dir, log, base_offset, false, &why),
            }
        }
        Self::rebuild(dir, log, base_offset, true, "")
    }

    /// Completes a loaded index with the batches after its last entry; gives the log back with
    /// the reason when the log does not continue where the index says.
    fn trust_index(
        log: LogFile,
        index: SegmentIndex,
        base_offset: i64,
        len: u64,
    ) -> Result<Result<Segment, (LogFile, String)>, LogError> {
        let (expected, mut max_timestamp) = index
            .last_entry()
            .map_or((base_offset, i64::MIN), |(relative_offset, before)| {
                (base_offset + i64::from(relative_offset), before)
            });
        let end = log.scan(index.last_position(), len, expected, false, |_, info| {
            max_timestamp = max_timestamp.max(info.max_timestamp);
            ControlFlow::Continue(())
        })?;
        if let Some(problem) = end.problem {
            return Ok(Err((log, problem)));
        }
        Ok(Ok(Segment {
            base_offset,
            log: Arc::new(log),
            index,
            size: len,
            next_offset: end.next_offset,
            max_timestamp,
            opened: Instant::now(),
        }))
    }

    /// Scans every batch of the log (checking CRCs when `validate`), truncates it at the first bad
    /// one and writes a fresh index. `why` is logged when the index is rebuilt because it was bad.
    fn rebuild(
        dir: &Path,
        log: LogFile,
        base_offset: i64,
        validate: bool,
        why: &str,
    ) -> Result<(Segment, bool), LogError> {
        if !why.is_empty() {
            tracing::warn!(path = %log.path.display(), "{why}; rebuilding the segment's index from its batches");
        }
        let len = log.len()?;
        let mut index = SegmentIndex::create(dir, base_offset)?;
        let mut max_timestamp = i64::MIN;
        let mut failed = None;
        let end = log.scan(0, len, base_offset, validate, |position, info| {
            let relative = (info.base_offset - base_offset) as u32;
            if let Err(e) = index.add(relative, position, info.size as u64, max_timestamp) {
                failed = Some(e);
                return ControlFlow::Break(());
            }
            max_timestamp = max_timestamp.max(info.max_timestamp);
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(problem) = &end.problem {
            tracing::warn!(path = %log.path.display(), valid_bytes = end.position, dropped_bytes = len - end.position, "{problem}; truncating the segment to its valid prefix");
            log.file
                .set_len(end.position)
                .map_err(LogError::io(&log.path))?;
            log.file.sync_all().map_err(LogError::io(&log.path))?;
        }
        index.sync()?;
        Ok((
            Segment {
                base_offset,
                log: Arc::new(log),
                index,
                size: end.position,
                next_offset: end.next_offset,
                max_timestamp,
                opened: Instant::now(),
            },
            end.problem.is_none(),
        ))
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub fn path(&self) -> &Path {
        &self.log.path
    }

    /// Whether a batch of `size` bytes ending at `last_offset` belongs in a new segment: this one
    /// holds data and would grow past `max_size`, is older than `max_age`, or could not index the
    /// batch's offsets relative to its base.
    pub fn is_full(&self, size: u64, last_offset: i64, max_size: u64, max_age: Duration) -> bool {
        self.size > 0
            && (self.size + size > max_size
                || self.opened.elapsed() >= max_age
                || last_offset - self.base_offset > i64::from(u32::MAX))
    }

    /// Writes one batch, whose header says `info`, at the end of the segment (not yet durable).
    /// Returns the write's ticket for [`LogFile::sync_through`].
    pub fn append(&mut self, bytes: &[u8], info: &BatchInfo) -> Result<u64, LogError> {
        self.log
            .file
            .write_all_at(bytes, self.size)
            .map_err(LogError::io(&self.log.path))?;
        let ticket = self.log.writes.fetch_add(1, Ordering::AcqRel) + 1;
        let relative = (info.base_offset - self.base_offset) as u32;
        self.index
            .add(relative, self.size, bytes.len() as u64, self.max_timestamp)?;
        self.size += bytes.len() as u64;
        self.next_offset = info.last_offset() + 1;
        self.max_timestamp = self.max_timestamp.max(info.max_timestamp);
        Ok(ticket)
    }

    /// The log file, to fsync appends (its indexes are rebuilt after a crash instead).
    pub fn log_file(&self) -> Arc<LogFile> {
        self.log.clone()
    }

    /// Fsyncs the log and its indexes: when the segment is closed and at a clean shutdown.
    pub fn sync_all(&self) -> Result<(), LogError> {
        self.log.sync()?;
        self.index.sync()
    }

    /// Deletes the segment's files.
    pub fn remove(self) -> Result<(), LogError> {
        std::fs::remove_file(&self.log.path).map_err(LogError::io(&self.log.path))?;
        self.index.remove()
    }

    /// A view for reading from the batch holding `offset`.
    pub fn view_from_offset(&self, offset: i64) -> SegmentView {
        let relative = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        self.view(self.index.position_for_offset(relative))
    }

    /// A view for finding the first record at or after `timestamp_ms`.
    pub fn view_from_timestamp(&self, timestamp_ms: i64) -> SegmentView {
        self.view(self.index.position_for_timestamp(timestamp_ms))
    }

    fn view(&self, start: u64) -> SegmentView {
        SegmentView {
            log: self.log.clone(),
            start,
            size: self.size,
        }
    }
}

impl SegmentView {
    /// Appends to `out` the whole batches holding `offset` and after that end below
    /// `high_watermark`, while they fit in `budget` bytes (the first batch of the whole read
    /// always does). Returns `true` when the segment's end was reached, so the read may go on in
    /// the next segment.
    pub fn read_batches(
        &self,
        offset: i64,
        high_watermark: i64,
        budget: &mut usize,
        out: &mut Vec<Bytes>,
    ) -> Result<bool, LogError> {
        let mut wanted: Vec<(u64, usize)> = Vec::new();
        let mut reached_end = true;
        self.log
            .read_scan(self.start, self.size, |position, info| {
                if info.last_offset() < offset {
                    return ControlFlow::Continue(());
                }
                let first = out.is_empty() && wanted.is_empty();
                if info.last_offset() >= high_watermark || (!first && info.size > *budget) {
                    reached_end = false;
                    return ControlFlow::Break(());
                }
                *budget = budget.saturating_sub(info.size);
                wanted.push((position, info.size));
                ControlFlow::Continue(())
            })?;
        let (Some(&(from, _)), Some(&(last, last_size))) = (wanted.first(), wanted.last()) else {
            return Ok(reached_end);
        };
        let bytes = Bytes::from(self.log.read(from, (last - from) as usize + last_size)?);
        out.extend(wanted.into_iter().map(|(position, size)| {
            let at = (position - from) as usize;
            bytes.slice(at..at + size)
        }));
        Ok(reached_end)
    }

    /// The first batch ending below `high_watermark` that holds a record at or after
    /// `timestamp_ms`, as stored bytes.
    pub fn first_batch_at_or_after(
        &self,
        timestamp_ms: i64,
        high_watermark: i64,
    ) -> Result<Option<Bytes>, LogError> {
        let mut found = None;
        self.log
            .read_scan(self.start, self.size, |position, info| {
                if info.last_offset() >= high_watermark {
                    return ControlFlow::Break(());
                }
                if info.max_timestamp >= timestamp_ms {
                    found = Some((position, info.size));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })?;
        found
            .map(|(position, size)| Ok(Bytes::from(self.log.read(position, size)?)))
            .transpose()
    }
}

impl LogFile {
    fn new(path: PathBuf, file: File) -> LogFile {
        LogFile {
            path,
            file,
            writes: AtomicU64::new(0),
            synced: Mutex::new(0),
        }
    }

    /// Makes the write with `ticket` durable: returns at once if an fsync that started after it
    /// already covered it, and otherwise fsyncs once for every write made so far.
    pub fn sync_through(&self, ticket: u64) -> Result<(), LogError> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *synced >= ticket {
            return Ok(());
        }
        let written = self.writes.load(Ordering::Acquire);
        self.sync()?;
        *synced = written;
        Ok(())
    }

    fn len(&self) -> Result<u64, LogError> {
        Ok(self
            .file
            .metadata()
            .map_err(LogError::io(&self.path))?
            .len())
    }

    fn read(&self, position: u64, len: usize) -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(LogError::io(&self.path))?;
        Ok(buf)
    }

    /// Fsyncs the file's data.
    pub fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().map_err(LogError::io(&self.path))
    }

    /// Visits the batches between byte `position` and `end` for a read; a damaged batch header
    /// there is an error, as nothing but complete, recovered batches lies below `end`.
    fn read_scan(
        &self,
        position: u64,
        end: u64,
        visit: impl FnMut(u64, &BatchInfo) -> ControlFlow<()>,
    ) -> Result<(), LogError> {
        match self.scan(position, end, -1, false, visit)?.problem {
            None => Ok(()),
            Some(problem) => Err(LogError::CorruptBatch(format!(
                "{problem} in {}",
                self.path.display()
            ))),
        }
    }

    /// Visits the batches between byte `position` and `end` until `visit` breaks, reading headers
    /// in chunks of [`SCAN_CHUNK`] bytes (whole batches when `validate`, to check their CRC).
    /// Stops with a problem at the first torn or invalid batch, or one whose base offset is not
    /// `expected` (the previous batch's next offset; -1 takes the first batch's as it is).
    fn scan(
        &self,
        mut position: u64,
        end: u64,
        mut expected: i64,
        validate: bool,
        mut visit: impl FnMut(u64, &BatchInfo) -> ControlFlow<()>,
    ) -> Result<ScanEnd, LogError> {
        let mut chunk = Vec::new();
        let mut chunk_start = 0u64;
        let problem = loop {
            if position >= end {
                break None;
            }
            if end - position < batch::HEADER_LEN as u64 {
                break Some("torn batch header at the end of the file".to_string());
            }
            let in_chunk = position >= chunk_start
                && position + batch::HEADER_LEN as u64 <= chunk_start + chunk.len() as u64;
            if !in_chunk {
                chunk_start = position;
                chunk = self.read(position, SCAN_CHUNK.min((end - position) as usize))?;
            }
            let header = &chunk[(position - chunk_start) as usize..];
            let size = batch::LOG_OVERHEAD as i64
                + i64::from(i32::from_be_bytes(
                    header[8..12].try_into().expect("4 bytes"),
                ));
            if size < batch::HEADER_LEN as i64 || position + size as u64 > end {
                break Some(format!(
                    "batch at byte {position} claims {size} bytes: less than a batch header or more than the file holds"
                ));
            }
            let checked = if validate {
                batch::check(&self.read(position, size as usize)?)
            } else {
                batch::parse_header(header)
            };
            let info = match checked {
                Ok(Some(info)) => info,
                Ok(None) => break Some(format!("torn batch at byte {position}")),
                Err(e) => break Some(format!("{e} at byte {position}")),
            };
            if expected >= 0 && info.base_offset != expected {
                break Some(format!(
                    "batch at byte {position} has base offset {}, expected {expected}",
                    info.base_offset
                ));
            }
            expected = info.last_offset() + 1;
            if visit(position, &info).is_break() {
                break None;
            }
            position += size as u64;
        };
        Ok(ScanEnd {
            position,
            next_offset: expected,
            problem,
        })
    }
}
