//! One partition on disk: a folder of segments (see [`crate::segment`]), the newest one active.
//!
//! Records become readable (the high watermark advances) only once they are durable: after the
//! fsync that covers them, or at once when fsync is turned off.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::batch;
use crate::error::LogError;
use crate::index::segment_file_name;
use crate::record::{Record, StoredRecord};
use crate::segment::{LogFile, Segment, SegmentView};

/// When the active segment is closed and a new one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rolling {
    pub size: u64,
    pub age: Duration,
}

struct State {
    /// Oldest first; the last one is active.
    segments: Vec<Segment>,
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
    file: Arc<LogFile>,
    ticket: u64,
}

impl PendingAppend {
    /// Fsyncs the write, sharing the fsync with concurrent appends to the same segment.
    pub fn sync(&self) -> Result<(), LogError> {
        self.file.sync_through(self.ticket)
    }
}

impl Partition {
    /// Opens (or creates) the partition in `dir`. After an unclean stop the active (last) segment
    /// is validated batch by batch (length, magic, CRC-32C, offsets), truncated at the first torn
    /// or corrupt batch and re-indexed; earlier segments were fsynced with their indexes when they
    /// were closed, so only their index files and the batch headers after the last index entry
    /// are read — as for all segments after a clean shutdown. A missing or damaged index is
    /// rebuilt from its segment's batch headers.
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
        for (i, base) in bases.iter().enumerate() {
            if let Some(previous) = segments.last()
                && *base != previous.next_offset()
            {
                tracing::warn!(dir = %dir.display(), base, expected = previous.next_offset(), "segment does not continue the log; removing it and those after it");
                remove_segments(dir, &bases[i..])?;
                break;
            }
            let validate = !clean_shutdown && i + 1 == bases.len();
            let (segment, clean) = Segment::open(dir, *base, validate)?;
            segments.push(segment);
            if !clean {
                remove_segments(dir, &bases[i + 1..])?;
                break;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0)?);
        }
        let high_watermark = segments.last().expect("not empty").next_offset();
        Ok(Partition {
            dir: dir.to_path_buf(),
            rolling,
            state: Mutex::new(State {
                segments,
                high_watermark,
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
        let bytes = batch::encode(active(&state).next_offset(), records);
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
        let base_offset = active(&state).next_offset();
        bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
        let info = batch::BatchInfo {
            base_offset,
            ..info
        };
        self.write(&mut state, &bytes, info)
    }

    fn write(
        &self,
        state: &mut State,
        bytes: &[u8],
        info: batch::BatchInfo,
    ) -> Result<PendingAppend, LogError> {
        let full = active(state).is_full(
            bytes.len() as u64,
            info.last_offset(),
            self.rolling.size,
            self.rolling.age,
        );
        if full {
            let closing = active(state);
            closing.sync_all()?;
            let segment = Segment::create(&self.dir, closing.next_offset())?;
            state.segments.push(segment);
        }
        let segment = state
            .segments
            .last_mut()
            .expect("a partition always has an active segment");
        let ticket = segment.append(bytes, &info)?;
        Ok(PendingAppend {
            base_offset: info.base_offset,
            end_offset: segment.next_offset(),
            file: segment.log_file(),
            ticket,
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
            let mut total: u64 = state.segments.iter().map(Segment::size).sum();
            while state.segments.len() > 1 {
                let oldest = &state.segments[0];
                let expired = retention
                    .is_some_and(|r| oldest.max_timestamp() < now_ms - r.as_millis() as i64);
                let oversized = retention_bytes.is_some_and(|limit| total > limit);
                if !(expired || oversized) {
                    break;
                }
                total -= oldest.size();
                removed.push(state.segments.remove(0));
            }
            removed
        };
        let mut records = 0;
        for segment in removed {
            records += segment.next_offset() - segment.base_offset();
            tracing::info!(path = %segment.path().display(), "retention deleted a segment");
            segment.remove()?;
        }
        Ok(records)
    }

    /// Fsyncs the active segment's log.
    pub fn flush(&self) -> Result<(), LogError> {
        active(&self.lock()).log_file().sync()
    }

    /// Fsyncs the active segment's log and indexes, for a clean shutdown.
    pub fn close(&self) -> Result<(), LogError> {
        active(&self.lock()).sync_all()
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
        self.lock().segments.first().map_or(0, Segment::base_offset)
    }

    /// Whole batches holding `offset` and after, up to about `max_bytes` (always at least one
    /// batch when there is one), as stored bytes.
    pub fn read_batches(&self, offset: i64, max_bytes: usize) -> Result<Vec<Bytes>, LogError> {
        let (views, high_watermark): (Vec<SegmentView>, i64) = {
            let state = self.lock();
            let first = state
                .segments
                .partition_point(|s| s.base_offset() <= offset)
                .saturating_sub(1);
            let views = state.segments[first..]
                .iter()
                .map(|s| s.view_from_offset(offset))
                .collect();
            (views, state.high_watermark)
        };
        let mut budget = max_bytes;
        let mut out = Vec::new();
        for view in views {
            if !view.read_batches(offset, high_watermark, &mut budget, &mut out)? {
                break;
            }
        }
        Ok(out)
    }

    /// The first offset whose record has a timestamp at or after `timestamp_ms`, with that
    /// timestamp; `None` when every durable record is older. Only the first segment holding a
    /// newer record is searched, from its time index entry at or before the timestamp.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let (view, high_watermark) = {
            let state = self.lock();
            let segment = state
                .segments
                .iter()
                .find(|s| s.max_timestamp() >= timestamp_ms);
            match segment {
                Some(s) => (s.view_from_timestamp(timestamp_ms), state.high_watermark),
                None => return Ok(None),
            }
        };
        let Some(bytes) = view.first_batch_at_or_after(timestamp_ms, high_watermark)? else {
            return Ok(None);
        };
        Ok(batch::decode(&bytes)?
            .into_iter()
            .find(|r| r.record.timestamp_ms >= timestamp_ms)
            .map(|r| (r.offset, r.record.timestamp_ms)))
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

fn active(state: &State) -> &Segment {
    state
        .segments
        .last()
        .expect("a partition always has an active segment")
}

/// Deletes the files of the segments starting at `bases`.
fn remove_segments(dir: &Path, bases: &[i64]) -> Result<(), LogError> {
    for base in bases {
        for extension in ["log", "index", "timeindex"] {
            let path = dir.join(segment_file_name(*base, extension));
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LogError::io(&path)(e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

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
        pending.sync().unwrap();
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
        dir.join(segment_file_name(0, "log"))
    }

    /// The base offsets of the partition's segments, from their `.log` files.
    fn segment_bases(dir: &Path) -> Vec<i64> {
        let mut bases: Vec<i64> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        bases.sort_unstable();
        bases
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
        let logs = segment_bases(dir.path()).len();
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
        let before = segment_bases(dir.path()).len();
        let deleted = p.enforce_retention(0, None, Some(2 * 4096)).unwrap();
        let after = segment_bases(dir.path()).len();
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
            segment_bases(dir.path()).len(),
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
        assert_eq!(segment_bases(dir.path()), vec![0, 1]);
    }

    /// A closed partition of 12 segments of 25 small batches each, every record's timestamp its
    /// offset × 10.
    fn indexed_partition(dir: &Path) -> Partition {
        let p = Partition::open(dir, rolling(16 * 1024), false).unwrap();
        for b in 0..300 {
            let recs: Vec<Record> = (0..4)
                .map(|i| {
                    let offset = b * 4 + i;
                    Record::new(Some("k"), format!("{offset:0>200}"), offset * 10)
                })
                .collect();
            append_committed(&p, &recs);
        }
        p.close().unwrap();
        p
    }

    /// Reads every record from every offset and by every timestamp, as a partition without
    /// damage answers them.
    fn assert_complete(p: &Partition) {
        assert_eq!(p.high_watermark(), 1200);
        for offset in (0..1200).step_by(7) {
            let read = p.read(offset, 1).unwrap();
            assert_eq!(read[0].offset, offset);
            assert_eq!(read[0].record.value, format!("{offset:0>200}"));
        }
        assert_eq!(p.read(0, usize::MAX).unwrap().len(), 1200);
        for ts in (0..=11_990).step_by(13) {
            let first = (ts + 9) / 10;
            assert_eq!(
                p.offset_for_timestamp(ts).unwrap(),
                Some((first, first * 10))
            );
        }
        assert_eq!(p.offset_for_timestamp(11_991).unwrap(), None);
    }

    #[test]
    fn sparse_indexes_find_every_offset_and_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let p = indexed_partition(dir.path());
        let bases = segment_bases(dir.path());
        assert!(bases.len() >= 10, "segments: {bases:?}");
        let index_len = fs::metadata(dir.path().join(segment_file_name(0, "index")))
            .unwrap()
            .len();
        // 16 KiB segments indexed every 4 KiB: a few 8-byte entries each, not one per batch.
        assert!((16..=32).contains(&index_len), "index of {index_len} bytes");
        assert_complete(&p);
        drop(p);
        assert_complete(&Partition::open(dir.path(), rolling(16 * 1024), true).unwrap());
    }

    #[test]
    fn deleted_indexes_are_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = indexed_partition(dir.path());
        let expected = fs::read(dir.path().join(segment_file_name(0, "timeindex"))).unwrap();
        drop(p);
        let bases = segment_bases(dir.path());
        let (closed, active) = (bases[3], *bases.last().unwrap());
        fs::remove_file(dir.path().join(segment_file_name(0, "timeindex"))).unwrap();
        fs::remove_file(dir.path().join(segment_file_name(closed, "index"))).unwrap();
        fs::remove_file(dir.path().join(segment_file_name(active, "index"))).unwrap();
        let p = Partition::open(dir.path(), rolling(16 * 1024), true).unwrap();
        assert_complete(&p);
        assert_eq!(segment_bases(dir.path()), bases);
        let rebuilt = fs::read(dir.path().join(segment_file_name(0, "timeindex"))).unwrap();
        assert_eq!(rebuilt, expected, "the rebuilt index is the one written");
        for base in [closed, active] {
            assert!(dir.path().join(segment_file_name(base, "index")).exists());
        }
    }

    #[test]
    fn damaged_indexes_are_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        drop(indexed_partition(dir.path()));
        let bases = segment_bases(dir.path());
        // Garbage over one index, another cut mid-entry, the last entry of a third off by a byte.
        fs::write(
            dir.path().join(segment_file_name(bases[1], "index")),
            [0xFF; 24],
        )
        .unwrap();
        let cut = dir.path().join(segment_file_name(bases[2], "index"));
        let bytes = fs::read(&cut).unwrap();
        fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        let shifted = dir.path().join(segment_file_name(bases[4], "index"));
        let mut bytes = fs::read(&shifted).unwrap();
        let last = bytes.len() - 4;
        let position = u32::from_be_bytes(bytes[last..].try_into().unwrap());
        bytes[last..].copy_from_slice(&(position + 1).to_be_bytes());
        fs::write(&shifted, &bytes).unwrap();
        assert_complete(&Partition::open(dir.path(), rolling(16 * 1024), true).unwrap());
    }

    #[test]
    fn an_unclean_stop_reindexes_the_truncated_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        drop(indexed_partition(dir.path()));
        let active = *segment_bases(dir.path()).last().unwrap();
        let path = dir.path().join(segment_file_name(active, "log"));
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        // The index still has entries for the bytes cut off; recovery must not trust them.
        let p = Partition::open(dir.path(), rolling(16 * 1024), false).unwrap();
        assert_eq!(p.high_watermark(), 1196, "the torn last batch of 4 is gone");
        assert_eq!(p.read(1195, 1).unwrap()[0].offset, 1195);
        append_committed(&p, &records(1, "after"));
        assert_eq!(p.read(1196, 1).unwrap()[0].record.value, "after-0");
        assert_eq!(
            p.offset_for_timestamp(11_950).unwrap(),
            Some((1195, 11_950))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            /// Append a batch of this many records with these value sizes.
            Append(Vec<usize>),
            /// Close and reopen, cleanly or as after a crash.
            Reopen { clean: bool },
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                8 => proptest::collection::vec(0usize..600, 1..6).prop_map(Step::Append),
                1 => any::<bool>().prop_map(|clean| Step::Reopen { clean }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// Any sequence of appends and reopenings keeps every record at its offset, and a
            /// read from any offset with any byte budget returns exactly the records from there.
            #[test]
            fn appends_and_reads_round_trip(
                steps in proptest::collection::vec(step(), 1..40),
                reads in proptest::collection::vec((any::<u16>(), 0usize..3000), 1..20),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut p = Some(Partition::open(dir.path(), rolling(4096), false).unwrap());
                let mut written: Vec<Record> = Vec::new();
                for step in steps {
                    match step {
                        Step::Append(sizes) => {
                            let recs: Vec<Record> = sizes
                                .iter()
                                .map(|&n| {
                                    let offset = written.len() as i64;
                                    written.push(Record::new(Some(format!("k{offset}")), vec![offset as u8; n], 1_000_000 - offset));
                                    written.last().unwrap().clone()
                                })
                                .collect();
                            append_committed(p.as_ref().unwrap(), &recs);
                        }
                        Step::Reopen { clean } => {
                            let old = p.take().unwrap();
                            if clean {
                                old.close().unwrap();
                            }
                            drop(old);
                            p = Some(Partition::open(dir.path(), rolling(4096), clean).unwrap());
                        }
                    }
                }
                let p = p.unwrap();
                prop_assert_eq!(p.high_watermark(), written.len() as i64);
                for (at, max_bytes) in reads {
                    let offset = i64::from(at) % (written.len() as i64 + 1);
                    let read = p.read(offset, max_bytes).unwrap();
                    if offset < written.len() as i64 {
                        prop_assert!(!read.is_empty(), "a read below the high watermark returns a record");
                    }
                    for (i, r) in read.iter().enumerate() {
                        prop_assert_eq!(r.offset, offset + i as i64);
                        prop_assert_eq!(&r.record, &written[r.offset as usize]);
                    }
                }
            }
        }
    }
}
