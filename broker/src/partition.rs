//! One partition on disk: a folder of segment files plus an in-memory index of their batches.
//!
//! Records become readable (the high watermark advances) only once they are durable: after the
//! fsync that covers them, or at once when fsync is turned off.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::batch;
use crate::error::LogError;
use crate::record::{Record, StoredRecord};

/// Where one batch sits in its segment.
#[derive(Debug, Clone, Copy)]
struct BatchPosition {
    last_offset: i64,
    position: u64,
    size: u32,
}

struct Segment {
    base_offset: i64,
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    batches: Vec<BatchPosition>,
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
    segment_size: u64,
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
    /// Opens (or creates) the partition in `dir`, validating every batch and truncating at the
    /// first torn or corrupt one.
    pub fn open(dir: &Path, segment_size: u64) -> Result<Self, LogError> {
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
            let (segment, clean) = Segment::recover(path, *base)?;
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
            segment_size,
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
        let base_offset = state.next_offset;
        let bytes = batch::encode(base_offset, records);
        if state
            .segments
            .last()
            .is_some_and(|s| s.size > 0 && s.size + bytes.len() as u64 > self.segment_size)
        {
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
            .write_all_at(&bytes, segment.size)
            .map_err(LogError::io(&segment.path))?;
        segment.batches.push(BatchPosition {
            last_offset: base_offset + records.len() as i64 - 1,
            position: segment.size,
            size: bytes.len() as u32,
        });
        segment.size += bytes.len() as u64;
        let file = segment.file.clone();
        state.next_offset = base_offset + records.len() as i64;
        Ok(PendingAppend {
            base_offset,
            end_offset: state.next_offset,
            file,
        })
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
        })
    }

    /// Opens a segment and indexes its valid prefix; returns `false` when it had to be truncated.
    fn recover(path: PathBuf, base_offset: i64) -> Result<(Segment, bool), LogError> {
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
            let mut buf = vec![0u8; size as usize];
            file.read_exact_at(&mut buf, position)
                .map_err(LogError::io(&path))?;
            let info = match batch::check(&buf) {
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
            },
            problem.is_none(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
        let p = Partition::open(dir.path(), 1 << 20).unwrap();
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
        let p = Partition::open(dir.path(), 1 << 20).unwrap();
        let pending = p.append(&records(2, "a")).unwrap();
        assert!(p.read(0, usize::MAX).unwrap().is_empty());
        p.commit(pending.end_offset);
        assert_eq!(p.read(0, usize::MAX).unwrap().len(), 2);
    }

    #[test]
    fn segments_roll_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Partition::open(dir.path(), 4096).unwrap();
            for i in 0..50 {
                append_committed(&p, &records(5, &format!("batch{i}")));
            }
        }
        let logs = fs::read_dir(dir.path()).unwrap().count();
        assert!(logs > 1, "expected several segments, found {logs}");
        let p = Partition::open(dir.path(), 4096).unwrap();
        assert_eq!(p.high_watermark(), 250);
        assert_eq!(p.read(123, usize::MAX).unwrap()[0].offset, 123);
        assert_eq!(values(&p).len(), 250);
    }

    #[test]
    fn garbage_after_the_tail_is_truncated_away() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Partition::open(dir.path(), 1 << 20).unwrap();
            append_committed(&p, &records(3, "a"));
        }
        let valid_len = fs::metadata(segment_path(dir.path())).unwrap().len();
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path()))
            .unwrap();
        f.write_all(&[0xAB; 200]).unwrap();
        drop(f);
        let p = Partition::open(dir.path(), 1 << 20).unwrap();
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
            let p = Partition::open(dir.path(), 1 << 20).unwrap();
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
        let p = Partition::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(values(&p), vec!["a-0", "a-1"]);
        assert_eq!(p.high_watermark(), 2);
    }

    #[test]
    fn a_corrupt_batch_cuts_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = Partition::open(dir.path(), 1 << 20).unwrap();
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
        let p = Partition::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(values(&p), vec!["a-0", "a-1"]);
    }
}
