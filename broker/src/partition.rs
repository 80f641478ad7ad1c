//! One partition on disk: a folder of segment files plus an in-memory index of their batches.
//!
//! Records become readable (the high watermark advances) only once they are durable: after the
//! fsync that covers them, or at once when fsync is turned off.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch;
use crate::error::LogError;
use crate::record::{Record, StoredRecord};

/// Where one batch sits in its segment.
#[derive(Debug, Clone, Copy)]
struct BatchPosition {
    last_offset: i64,
    max_timestamp: i64,
    position: u64,
    size: u32,
}

struct Segment {
    base_offset: i64,
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    batches: Vec<BatchPosition>,
    /// When this process opened or created the segment: its age for rolling.
    opened: Instant,
}

/// When the active segment is closed and a new one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rolling {
    pub size: u64,
    pub age: Duration,
}

struct State {
    segments: Vec<Segment>,
    /// The offset the next appended record gets.
    next_offset: i64,
    /// Records below this offset are durable and readable.
    high_watermark: i64,
}

pub(crate) struct Partition {
    dir: PathBuf,
    rolling: Rolling,
    state: Mutex<State>,
}

/// A write that is on the file but not yet durable.
pub(crate) struct PendingAppend {
    pub base_offset: i64,
    pub end_offset: i64,
    pub file: Arc<File>,
}

/// The name of a segment file: the base offset in 20 digits.
pub(crate) fn segment_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

impl Partition {
    /// Opens (or creates) the partition in `dir`. After an unclean stop the active (last) segment
    /// is validated batch by batch (length, magic, CRC-32C, offsets) and truncated at the first torn
    /// or corrupt batch; earlier segments were fsynced when they were closed, so only their batch
    /// headers are read — as are all segments after a clean shutdown.
    pub fn open(dir: &Path, rolling: Rolling, clean_shutdown: bool) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let mut bases: Vec<i64> = fs::read_dir(dir)
            .map_err(LogError::io(dir))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::new();
        let mut next_offset = 0;
        for (i, base) in bases.iter().enumerate() {
            let path = dir.join(segment_file_name(*base));
            if *base != next_offset && !segments.is_empty() {
                tracing::warn!(path = %path.display(), expected = next_offset, "segment does not continue the log; removing it and those after it");
                remove_segments(dir, &bases[i..])?;
                break;
            }
            let validate = !clean_shutdown && i + 1 == bases.len();
            let (segment, clean) = Segment::recover(path, *base, validate)?;
            next_offset = segment
                .batches
                .last()
                .map_or(segment.base_offset, |b| b.last_offset + 1);
            segments.push(segment);
            if !clean {
                remove_segments(dir, &bases[i + 1..])?;
                break;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
        }
        Ok(Partition {
            dir: dir.to_path_buf(),
            rolling,
            state: Mutex::new(State {
                segments,
                next_offset,
                high_watermark: next_offset,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `records` as one batch. The caller makes it durable with `sync` and then `commit`.
    pub fn append(&self, records: &[Record]) -> Result<PendingAppend, LogError> {
        let mut state = self.lock();
        let bytes = batch::encode(state.next_offset, records);
        let info = batch::check(&bytes)?.expect("an encoded batch is complete");
        self.write(&mut state, &bytes, info)
    }

    /// Writes a producer's record batch as it is, after giving it the next offset. The batch must
    /// be one complete, valid RecordBatch v2 (its CRC does not cover the base offset).
    pub fn append_batch(&self, mut bytes: Vec<u8>) -> Result<PendingAppend, LogError> {
        let info = batch::check(&bytes)?
            .ok_or_else(|| LogError::CorruptBatch("the batch is truncated".into()))?;
        if info.size != bytes.len() {
            return Err(LogError::CorruptBatch(format!(
                "expected exactly one batch of {} bytes, got {} bytes",
                info.size,
                bytes.len()
            )));
        }
        let mut state = self.lock();
        bytes[0..8].copy_from_slice(&state.next_offset.to_be_bytes());
        self.write(&mut state, &bytes, info)
    }

    fn write(
        &self,
        state: &mut State,
        bytes: &[u8],
        info: batch::BatchInfo,
    ) -> Result<PendingAppend, LogError> {
        let base_offset = state.next_offset;
        let full = |s: &Segment| {
            s.size + bytes.len() as u64 > self.rolling.size
                || s.opened.elapsed() >= self.rolling.age
        };
        if state.segments.last().is_some_and(|s| s.size > 0 && full(s)) {
            let full = state.segments.last().expect("checked");
            full.file.sync_data().map_err(LogError::io(&full.path))?;
            let segment = Segment::create(&self.dir, base_offset)?;
            state.segments.push(segment);
        }
        let segment = state
            .segments
            .last_mut()
            .expect("a partition always has an active segment");
        segment
            .file
            .write_all_at(bytes, segment.size)
            .map_err(LogError::io(&segment.path))?;
        let last_offset = base_offset + i64::from(info.last_offset_delta);
        segment.batches.push(BatchPosition {
            last_offset,
            max_timestamp: info.max_timestamp,
            position: segment.size,
            size: bytes.len() as u32,
        });
        segment.size += bytes.len() as u64;
        let file = segment.file.clone();
        state.next_offset = last_offset + 1;
        Ok(PendingAppend {
            base_offset,
            end_offset: state.next_offset,
            file,
        })
    }

    /// Deletes the oldest closed segments while they are all older than `retention` (by their
    /// newest record's timestamp) or the partition is larger than `retention_bytes`; the log start
    /// offset moves to the first segment kept. Returns the records deleted.
    pub fn enforce_retention(
        &self,
        now_ms: i64,
        retention: Option<Duration>,
        retention_bytes: Option<u64>,
    ) -> Result<i64, LogError> {
        let removed: Vec<Segment> = {
            let mut state = self.lock();
            let mut removed = Vec::new();
            while state.segments.len() > 1 {
                let oldest = &state.segments[0];
                let newest_record = oldest
                    .batches
                    .iter()
                    .map(|b| b.max_timestamp)
                    .max()
                    .unwrap_or(i64::MIN);
                let expired =
                    retention.is_some_and(|r| newest_record < now_ms - r.as_millis() as i64);
                let total: u64 = state.segments.iter().map(|s| s.size).sum();
                let oversized = retention_bytes.is_some_and(|limit| total > limit);
                if !(expired || oversized) {
                    break;
                }
                removed.push(state.segments.remove(0));
            }
            removed
        };
        let mut records = 0;
        for segment in removed {
            fs::remove_file(&segment.path).map_err(LogError::io(&segment.path))?;
            records += segment
                .batches
                .last()
                .map_or(0, |b| b.last_offset + 1 - segment.base_offset);
            tracing::info!(path = %segment.path.display(), "retention deleted a segment");
        }
        Ok(records)
    }

    /// Fsyncs the active segment.
    pub fn flush(&self) -> Result<(), LogError> {
        let state = self.lock();
        let active = state
            .segments
            .last()
            .expect("a partition always has an active segment");
        active.file.sync_data().map_err(LogError::io(&active.path))
    }

    /// Makes records below `end_offset` readable.
    pub fn commit(&self, end_offset: i64) {
        let mut state = self.lock();
        state.high_watermark = state.high_watermark.max(end_offset);
    }

    pub fn high_watermark(&self) -> i64 {
        self.lock().high_watermark
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().segments.first().map_or(0, |s| s.base_offset)
    }

    /// Whole batches holding `offset` and after, up to about `max_bytes` (always at least one
    /// batch when there is one), as stored bytes.
    pub fn read_batches(&self, offset: i64, max_bytes: usize) -> Result<Vec<Bytes>, LogError> {
        let plan: Vec<(Arc<File>, PathBuf, BatchPosition)> = {
            let state = self.lock();
            let mut plan = Vec::new();
            let mut bytes = 0usize;
            let first_segment = state
                .segments
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            'segments: for segment in &state.segments[first_segment..] {
                let first_batch = segment.batches.partition_point(|b| b.last_offset < offset);
                for b in &segment.batches[first_batch..] {
                    if b.last_offset >= state.high_watermark
                        || (!plan.is_empty() && bytes + b.size as usize > max_bytes)
                    {
                        break 'segments;
                    }
                    bytes += b.size as usize;
                    plan.push((segment.file.clone(), segment.path.clone(), *b));
                }
            }
            plan
        };
        plan.into_iter()
            .map(|(file, path, b)| {
                let mut buf = vec![0u8; b.size as usize];
                file.read_exact_at(&mut buf, b.position)
                    .map_err(LogError::io(&path))?;
                Ok(Bytes::from(buf))
            })
            .collect()
    }

    /// The first offset whose record has a timestamp at or after `timestamp_ms`, with that
    /// timestamp; `None` when every durable record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let start = {
            let state = self.lock();
            let first = state
                .segments
                .iter()
                .flat_map(|s| s.batches.iter())
                .take_while(|b| b.last_offset < state.high_watermark)
                .find(|b| b.max_timestamp >= timestamp_ms);
            match first {
                Some(b) => b.last_offset,
                None => return Ok(None),
            }
        };
        // The batch found holds a record at or after the timestamp: its maximum is.
        let batch = self.read_batches(self.batch_base(start), 0)?;
        let records = batch
            .first()
            .map(batch::decode)
            .transpose()?
            .unwrap_or_default();
        Ok(records
            .into_iter()
            .find(|r| r.record.timestamp_ms >= timestamp_ms)
            .map(|r| (r.offset, r.record.timestamp_ms)))
    }

    /// The base offset of the batch holding `offset`.
    fn batch_base(&self, offset: i64) -> i64 {
        let state = self.lock();
        let mut base = state.segments.first().map_or(0, |s| s.base_offset);
        for b in state.segments.iter().flat_map(|s| s.batches.iter()) {
            if b.last_offset >= offset {
                return base;
            }
            base = b.last_offset + 1;
        }
        base
    }

    /// Records from `offset` on, up to about `max_bytes`.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Vec<StoredRecord>, LogError> {
        let mut records = Vec::new();
        for bytes in self.read_batches(offset, max_bytes)? {
            records.extend(
                batch::decode(&bytes)?
                    .into_iter()
                    .filter(|r| r.offset >= offset),
            );
        }
        Ok(records)
    }
}

fn remove_segments(dir: &Path, bases: &[i64]) -> Result<(), LogError> {
    for base in bases {
        let path = dir.join(segment_file_name(*base));
        fs::remove_file(&path).map_err(LogError::io(&path))?;
    }
    Ok(())
}

impl Segment {
    fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let path = dir.join(segment_file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LogError::io(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(LogError::io(dir))?;
        Ok(Segment {
            base_offset,
            path,
            file: Arc::new(file),
            size: 0,
            batches: Vec::new(),
            opened: Instant::now(),
        })
    }

    /// Opens a segment and indexes its valid prefix, checking every batch's CRC when `validate`;
    /// returns `false` when it had to be truncated.
    fn recover(
        path: PathBuf,
        base_offset: i64,
        validate: bool,
    ) -> Result<(Segment, bool), LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io(&path))?;
        let len = file.metadata().map_err(LogError::io(&path))?.len();
        let mut batches = Vec::new();
        let mut position = 0u64;
        let mut expected_offset = base_offset;
        let mut header = [0u8; batch::HEADER_LEN];
        let problem = loop {
            if position == len {
                break None;
            }
            if len - position < batch::HEADER_LEN as u64 {
                break Some("torn batch header at the end of the file".to_string());
            }
            file.read_exact_at(&mut header, position)
                .map_err(LogError::io(&path))?;
            let batch_length = i32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
            let size = batch::LOG_OVERHEAD as i64 + i64::from(batch_length);
            if size < batch::HEADER_LEN as i64 || position + size as u64 > len {
                break Some(format!(
                    "batch at byte {position} claims {size} bytes, more than the file holds"
                ));
            }
            let checked = if validate {
                let mut buf = vec![0u8; size as usize];
                file.read_exact_at(&mut buf, position)
                    .map_err(LogError::io(&path))?;
                batch::check(&buf)
            } else {
                batch::parse_header(&header)
            };
            let info = match checked {
                Ok(Some(info)) => info,
                Ok(None) => break Some(format!("torn batch at byte {position}")),
                Err(e) => break Some(format!("{e} at byte {position}")),
            };
            if info.base_offset != expected_offset {
                break Some(format!(
                    "batch at byte {position} has base offset {}, expected {expected_offset}",
                    info.base_offset
                ));
            }
            batches.push(BatchPosition {
                last_offset: info.last_offset(),
                max_timestamp: info.max_timestamp,
                position,
                size: size as u32,
            });
            expected_offset = info.last_offset() + 1;
            position += size as u64;
        };
        if let Some(problem) = &problem {
            tracing::warn!(path = %path.display(), valid_bytes = position, dropped_bytes = len - position, "{problem}; truncating the segment to its valid prefix");
            file.set_len(position).map_err(LogError::io(&path))?;
            file.sync_all().map_err(LogError::io(&path))?;
        }
        Ok((
            Segment {
                base_offset,
                path,
                file: Arc::new(file),
                size: position,
                batches,
                opened: Instant::now(),
            },
            problem.is_none(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rolling(size: u64) -> Rolling {
        Rolling {
            size,
            age: Duration::from_secs(3600),
        }
    }

    fn records(n: usize, tag: &str) -> Vec<Record> {
        (0..n)
            .map(|i| {
                Record::new(
                    Some(format!("k{i}")),
                    format!("{tag}-{i}"),
                    1_000 + i as i64,
                )
            })
            .collect()
    }

    fn append_committed(p: &Partition, recs: &[Record]) -> i64 {
        let pending = p.append(recs).unwrap();
        pending.file.sync_data().unwrap();
        p.commit(pending.end_offset);
        pending.base_offset
    }

    fn values(p: &Partition) -> Vec<String> {
        p.read(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| String::from_utf8(r.record.value.to_vec()).unwrap())
            .collect()
    }

    fn segment_path(dir: &Path) -> PathBuf {
        dir.join(segment_file_name(0))
    }

    #[test]
    fn offsets_are_dense_and_reads_start_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(dir.path(), rolling(1 << 20), false).unwrap();
        assert_eq!(append_committed(&p, &records(3, "a")), 0);
        assert_eq!(append_committed(&p, &records(2, "b")), 3);
        assert_eq!(p.high_watermark(), 5);
        let from_inside = p.read(1, usize::MAX).unwrap();
        assert_eq!(
            from_inside.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(p.read(5, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn uncommitted_records_are_invisible() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(dir.path(), rolling(1 << 20), false).unwrap();
        let pending = p.append(&records(2, "a")).unwrap();
        assert!(p.read(0, usize::MAX).unwrap().is_empty());
        p.commit(pending.end_offset);
        assert_eq!(p.read(0, usize::MAX).unwrap().len(), 2);
    }

    #[test]
    fn segments_roll_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Partition::open(dir.path(), rolling(4096), false).unwrap();
            for i in 0..50 {
                append_committed(&p, &records(5, &format!("batch{i}")));
            }
        }
        let logs = fs::read_dir(dir.path()).unwrap().count();
        assert!(logs > 1, "expected several segments, found {logs}");
        let p = Partition::open(dir.path(), rolling(4096), false).unwrap();
        assert_eq!(p.high_watermark(), 250);
        assert_eq!(p.read(123, usize::MAX).unwrap()[0].offset, 123);
        assert_eq!(values(&p).len(), 250);
    }

    #[test]
    fn garbage_after_the_tail_is_truncated_away() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Partition::open(dir.path(), rolling(1 << 20), false).unwrap();
            append_committed(&p, &records(3, "a"));
        }
        let valid_len = fs::metadata(segment_path(dir.path())).unwrap().len();
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path()))
            .unwrap();
        f.write_all(&[0xAB; 200]).unwrap();
        drop(f);
        let p = Partition::open(dir.path(), rolling(1 << 20), false).unwrap();
        assert_eq!(values(&p), vec!["a-0", "a-1", "a-2"]);
        assert_eq!(
            fs::metadata(segment_path(dir.path())).unwrap().len(),
            valid_len
        );
        append_committed(&p, &records(1, "b"));
        assert_eq!(values(&p), vec!["a-0", "a-1", "a-2", "b-0"]);
    }

    #[test]
    fn a_torn_last_batch_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Partition::open(dir.path(), rolling(1 << 20), false).unwrap();
            append_committed(&p, &records(2, "a"));
            append_committed(&p, &records(2, "b"));
        }
        let path = segment_path(dir.path());
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let p = Partition::open(dir.path(), rolling(1 << 20), false).unwrap();
        assert_eq!(values(&p), vec!["a-0", "a-1"]);
        assert_eq!(p.high_watermark(), 2);
    }

    #[test]
    fn a_corrupt_batch_cuts_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Partition::open(dir.path(), rolling(1 << 20), false).unwrap();
            append_committed(&p, &records(2, "a"));
            append_committed(&p, &records(2, "b"));
            append_committed(&p, &records(2, "c"));
        }
        let path = segment_path(dir.path());
        let first_len = batch::encode(0, &records(2, "a")).len() as u64;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, first_len + 70).unwrap();
        f.write_all_at(&[byte[0] ^ 0xFF], first_len + 70).unwrap();
        let p = Partition::open(dir.path(), rolling(1 << 20), false).unwrap();
        assert_eq!(values(&p), vec!["a-0", "a-1"]);
    }

    #[test]
    fn retention_by_size_deletes_the_oldest_closed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(dir.path(), rolling(4096), false).unwrap();
        for i in 0..150 {
            append_committed(&p, &records(5, &format!("b{i}")));
        }
        let before = fs::read_dir(dir.path()).unwrap().count();
        let deleted = p.enforce_retention(0, None, Some(2 * 4096)).unwrap();
        let after = fs::read_dir(dir.path()).unwrap().count();
        assert!(
            after < before && after >= 2,
            "{before} segments became {after}"
        );
        assert_eq!(p.log_start_offset(), deleted);
        assert_eq!(
            p.read(p.log_start_offset(), usize::MAX).unwrap()[0].offset,
            deleted
        );
        assert_eq!(p.high_watermark(), 750);
    }

    #[test]
    fn retention_by_time_keeps_the_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(dir.path(), rolling(4096), false).unwrap();
        for i in 0..40 {
            append_committed(&p, &records(5, &format!("b{i}")));
        }
        // The test records carry timestamps around 1 s after the epoch.
        let now_ms = 5_000;
        assert_eq!(
            p.enforce_retention(now_ms, Some(Duration::from_secs(60 * 60)), None)
                .unwrap(),
            0,
            "records are recent enough"
        );
        p.enforce_retention(now_ms, Some(Duration::from_secs(1)), None)
            .unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the active segment is left"
        );
        assert!(p.log_start_offset() > 0);
        assert_eq!(p.high_watermark(), 200);
    }

    #[test]
    fn an_old_active_segment_is_rolled() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(
            dir.path(),
            Rolling {
                size: 1 << 20,
                age: Duration::ZERO,
            },
            false,
        )
        .unwrap();
        append_committed(&p, &records(1, "a"));
        append_committed(&p, &records(1, "b"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
