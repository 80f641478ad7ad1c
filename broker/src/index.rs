//! A segment's sparse indexes, kept beside its `.log` as Kafka keeps them.
//!
//! `{base}.index` maps a batch's offset to its byte position in the log (8-byte entries: relative
//! offset u32, position u32, big-endian); `{base}.timeindex` maps a timestamp to an offset (12-byte
//! entries: timestamp i64, relative offset u32): every record before that offset is older than or
//! as old as the timestamp. One entry of each is added for the first batch written after at least
//! [`INDEX_INTERVAL_BYTES`] of log since the previous entry, so a lookup lands within about that
//! many bytes of its target and the reader scans batch headers from there.
//!
//! Entries are written as batches are appended and fsynced when the segment is closed. An index
//! that is missing, damaged or inconsistent with its log is rebuilt from the log's batch headers.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// Log bytes between two index entries (Kafka's `index.interval.bytes`).
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 4096;
const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;

/// The name of a segment's file with `extension`: the base offset in 20 digits.
pub(crate) fn segment_file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Offset of the indexed batch's first record, relative to the segment's base offset.
    relative_offset: u32,
    /// Where that batch starts in the log.
    position: u32,
    /// The newest timestamp of any record before that batch in the segment.
    max_timestamp_before: i64,
}

/// Both indexes of one segment, in memory and on disk.
pub(crate) struct SegmentIndex {
    offset_path: PathBuf,
    time_path: PathBuf,
    offset_file: File,
    time_file: File,
    entries: Vec<Entry>,
    /// Log bytes written since the last entry's batch started (or since the segment's start).
    unindexed_bytes: u64,
}

impl SegmentIndex {
    /// Creates empty index files for a new segment, replacing any left over.
    pub fn create(dir: &Path, base_offset: i64) -> Result<SegmentIndex, LogError> {
        let (offset_path, time_path) = paths(dir, base_offset);
        Ok(SegmentIndex {
            offset_file: open(&offset_path, true)?,
            time_file: open(&time_path, true)?,
            offset_path,
            time_path,
            entries: Vec::new(),
            unindexed_bytes: 0,
        })
    }

    /// Loads a segment's index files, checked against the log's length. `Ok(Err(why))` when
    /// they are missing or damaged and must be rebuilt.
    pub fn load(
        dir: &Path,
        base_offset: i64,
        log_len: u64,
    ) -> Result<Result<SegmentIndex, String>, LogError> {
        let (offset_path, time_path) = paths(dir, base_offset);
        if !offset_path.exists() || !time_path.exists() {
            return Ok(Err("an index file is missing".to_string()));
        }
        let offset_file = open(&offset_path, false)?;
        let time_file = open(&time_path, false)?;
        let offsets = read_all(&offset_file, &offset_path)?;
        let times = read_all(&time_file, &time_path)?;
        let entries = match parse(&offsets, &times, log_len) {
            Ok(entries) => entries,
            Err(why) => return Ok(Err(why)),
        };
        let unindexed_bytes = log_len - entries.last().map_or(0, |e| u64::from(e.position));
        Ok(Ok(SegmentIndex {
            offset_path,
            time_path,
            offset_file,
            time_file,
            entries,
            unindexed_bytes,
        }))
    }

    /// Notes a batch of `size` bytes written at `position`, adding an entry for it when one is due.
    /// `max_timestamp_before` is the newest timestamp in the segment before this batch.
    pub fn add(
        &mut self,
        relative_offset: u32,
        position: u64,
        size: u64,
        max_timestamp_before: i64,
    ) -> Result<(), LogError> {
        if self.unindexed_bytes >= INDEX_INTERVAL_BYTES {
            let entry = Entry {
                relative_offset,
                position: u32::try_from(position).expect("segments are smaller than 4 GiB"),
                max_timestamp_before,
            };
            let n = self.entries.len() as u64;
            let mut offset_bytes = [0u8; OFFSET_ENTRY_LEN];
            offset_bytes[..4].copy_from_slice(&entry.relative_offset.to_be_bytes());
            offset_bytes[4..].copy_from_slice(&entry.position.to_be_bytes());
            let mut time_bytes = [0u8; TIME_ENTRY_LEN];
            time_bytes[..8].copy_from_slice(&entry.max_timestamp_before.to_be_bytes());
            time_bytes[8..].copy_from_slice(&entry.relative_offset.to_be_bytes());
            self.offset_file
                .write_all_at(&offset_bytes, n * OFFSET_ENTRY_LEN as u64)
                .map_err(LogError::io(&self.offset_path))?;
            self.time_file
                .write_all_at(&time_bytes, n * TIME_ENTRY_LEN as u64)
                .map_err(LogError::io(&self.time_path))?;
            self.entries.push(entry);
            self.unindexed_bytes = 0;
        }
        self.unindexed_bytes += size;
        Ok(())
    }

    /// Where to start scanning for the batch holding `relative_offset`: the position of the last
    /// indexed batch starting at or before it.
    pub fn position_for_offset(&self, relative_offset: u32) -> u64 {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        i.checked_sub(1)
            .map_or(0, |i| u64::from(self.entries[i].position))
    }

    /// Where to start scanning for the first record at or after `timestamp_ms`: the last indexed
    /// batch before which every record is older.
    pub fn position_for_timestamp(&self, timestamp_ms: i64) -> u64 {
        let i = self
            .entries
            .partition_point(|e| e.max_timestamp_before < timestamp_ms);
        i.checked_sub(1)
            .map_or(0, |i| u64::from(self.entries[i].position))
    }

    /// The last entry's batch: where a scan for the segment's end starts.
    pub fn last_position(&self) -> u64 {
        self.entries.last().map_or(0, |e| u64::from(e.position))
    }

    /// The last entry's relative offset and timestamp, to check against the log.
    pub fn last_entry(&self) -> Option<(u32, i64)> {
        self.entries
            .last()
            .map(|e| (e.relative_offset, e.max_timestamp_before))
    }

    /// Fsyncs both files.
    pub fn sync(&self) -> Result<(), LogError> {
        self.offset_file
            .sync_data()
            .map_err(LogError::io(&self.offset_path))?;
        self.time_file
            .sync_data()
            .map_err(LogError::io(&self.time_path))
    }

    /// Deletes both files.
    pub fn remove(self) -> Result<(), LogError> {
        std::fs::remove_file(&self.offset_path).map_err(LogError::io(&self.offset_path))?;
        std::fs::remove_file(&self.time_path).map_err(LogError::io(&self.time_path))
    }
}

fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf) {
    (
        dir.join(segment_file_name(base_offset, "index")),
        dir.join(segment_file_name(base_offset, "timeindex")),
    )
}

fn open(path: &Path, truncate: bool) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .map_err(LogError::io(path))
}

fn read_all(file: &File, path: &Path) -> Result<Vec<u8>, LogError> {
    let len = file.metadata().map_err(LogError::io(path))?.len();
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(LogError::io(path))?;
    Ok(buf)
}

/// Decodes both files into entries, or says why they cannot be trusted.
fn parse(offsets: &[u8], times: &[u8], log_len: u64) -> Result<Vec<Entry>, String> {
    if !offsets.len().is_multiple_of(OFFSET_ENTRY_LEN)
        || !times.len().is_multiple_of(TIME_ENTRY_LEN)
    {
        return Err("an index file ends in a partial entry".to_string());
    }
    if offsets.len() / OFFSET_ENTRY_LEN != times.len() / TIME_ENTRY_LEN {
        return Err("the offset and time indexes have different lengths".to_string());
    }
    let entries: Vec<Entry> = offsets
        .chunks_exact(OFFSET_ENTRY_LEN)
        .zip(times.chunks_exact(TIME_ENTRY_LEN))
        .map(|(o, t)| Entry {
            relative_offset: u32::from_be_bytes(o[..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(o[4..].try_into().expect("4 bytes")),
            max_timestamp_before: i64::from_be_bytes(t[..8].try_into().expect("8 bytes")),
        })
        .collect();
    let same_offsets = offsets
        .chunks_exact(OFFSET_ENTRY_LEN)
        .zip(times.chunks_exact(TIME_ENTRY_LEN))
        .all(|(o, t)| o[..4] == t[8..]);
    if !same_offsets {
        return Err("the offset and time indexes disagree".to_string());
    }
    let ordered = entries.windows(2).all(|w| {
        w[0].relative_offset < w[1].relative_offset
            && w[0].position < w[1].position
            && w[0].max_timestamp_before <= w[1].max_timestamp_before
    });
    if !ordered {
        return Err("index entries are out of order".to_string());
    }
    if entries
        .last()
        .is_some_and(|e| u64::from(e.position) >= log_len)
    {
        return Err("an index entry points past the end of the log".to_string());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_sparse_and_lookups_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = SegmentIndex::create(dir.path(), 100).unwrap();
        // 1,000-byte batches of 10 records with timestamps rising by 10 per batch.
        for i in 0..20u32 {
            index
                .add(i * 10, u64::from(i) * 1000, 1000, i64::from(i) * 10 - 1)
                .unwrap();
        }
        // An entry for every fifth batch: the first one written after 5,000 unindexed bytes.
        assert_eq!(index.last_position(), 15_000);
        assert_eq!(index.position_for_offset(0), 0);
        assert_eq!(index.position_for_offset(49), 0);
        assert_eq!(index.position_for_offset(50), 5_000);
        assert_eq!(index.position_for_offset(199), 15_000);
        assert_eq!(index.position_for_timestamp(49), 0);
        assert_eq!(index.position_for_timestamp(50), 5_000);
        assert_eq!(index.position_for_timestamp(i64::MAX), 15_000);

        let loaded = SegmentIndex::load(dir.path(), 100, 20_000)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.entries, index.entries);
        assert_eq!(loaded.unindexed_bytes, index.unindexed_bytes);
    }

    #[test]
    fn damaged_or_missing_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = SegmentIndex::create(dir.path(), 0).unwrap();
        for i in 0..10u32 {
            index.add(i, u64::from(i) * 5000, 5000, 0).unwrap();
        }
        let (offset_path, time_path) = paths(dir.path(), 0);
        let why = |log_len| SegmentIndex::load(dir.path(), 0, log_len).unwrap().err();
        assert_eq!(why(50_000), None);
        assert_eq!(
            why(20_000).as_deref(),
            Some("an index entry points past the end of the log")
        );

        let offsets = std::fs::read(&offset_path).unwrap();
        std::fs::write(&offset_path, &offsets[..offsets.len() - 3]).unwrap();
        assert_eq!(
            why(50_000).as_deref(),
            Some("an index file ends in a partial entry")
        );
        std::fs::write(&offset_path, &offsets[..offsets.len() - 8]).unwrap();
        assert_eq!(
            why(50_000).as_deref(),
            Some("the offset and time indexes have different lengths")
        );
        let mut swapped = offsets.clone();
        swapped[8..16].copy_from_slice(&offsets[16..24]);
        swapped[16..24].copy_from_slice(&offsets[8..16]);
        std::fs::write(&offset_path, &swapped).unwrap();
        assert_eq!(
            why(50_000).as_deref(),
            Some("the offset and time indexes disagree")
        );
        std::fs::remove_file(&time_path).unwrap();
        assert_eq!(why(50_000).as_deref(), Some("an index file is missing"));
    }
}
