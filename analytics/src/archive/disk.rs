//! Archive files on disk: writing one durably, reading one back, and finding them all at start.
//!
//! A file is written under a temporary name, fsynced, renamed into place and its folder fsynced,
//! so it is either whole or absent. Its footer carries the log positions it holds, its newest
//! event time and, for a compacted file, the names of the files it replaces: a crash between
//! writing the merged file and deleting those leaves them to be deleted at the next start, never
//! counted twice. Each table folder also keeps `_expired.json`, the hour before which retention
//! deleted everything, written before the files go: a restart neither keeps such an hour's files
//! nor takes its rows in again from the log.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{NaiveDate, NaiveTime};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::statistics::Statistics;
use polis_telemetry::schema;
use serde::{Deserialize, Serialize};

use super::{ArchivedFile, HOUR_MS, Offsets, RowGroupSpan, hour_folder};
use crate::error::ArchiveError;
use crate::store::event_times;

const OFFSETS_KEY: &str = "polis.offsets";
const REPLACES_KEY: &str = "polis.replaces";
const NEWEST_KEY: &str = "polis.newest_ms";
const EXTENSION: &str = "parquet";
const TEMPORARY: &str = "tmp";
/// The file in a table folder naming the hour before which retention deleted everything.
const EXPIRED: &str = "_expired.json";
/// Rows per row group: small enough that a query reads only the groups its time range
/// touches and splits even a few of them over its threads, large enough to compress well.
const ROW_GROUP_ROWS: usize = 512 * 1024;

#[derive(Serialize, Deserialize)]
struct Expired {
    before_ms: i64,
}

/// Writes `batches`, rows of `table`'s hour `hour_ms`, as a new file of the archive in `root`
/// beside the hour's `present` files; a compacted file names the files it `replaces` (and those
/// they replaced in turn). No name a present file replaced is reused, so a later start cannot
/// mistake the new file for a stale one.
pub(crate) fn write(
    root: &Path,
    table: &str,
    hour_ms: i64,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    present: &[Arc<ArchivedFile>],
    replaces: &[Arc<ArchivedFile>],
) -> Result<ArchivedFile, ArchiveError> {
    let folder = root.join(hour_folder(table, hour_ms));
    fs::create_dir_all(&folder).map_err(|e| ArchiveError::io(&folder, e))?;
    let offsets = Offsets::of(batches);
    let (first, last) = offsets.bounds().unwrap_or_default();
    let path = (0..)
        .map(|n| {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!("-{n}")
            };
            folder.join(format!("{first}-{last}{suffix}.{EXTENSION}"))
        })
        .find(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            !p.exists()
                && !present
                    .iter()
                    .any(|f| name.as_ref().is_some_and(|n| f.replaces.contains(n)))
        })
        .expect("some name is free");
    let mut replaced: Vec<String> = replaces
        .iter()
        .flat_map(|f| {
            let own = f.path.file_name().map(|n| n.to_string_lossy().into_owned());
            own.into_iter().chain(f.replaces.iter().cloned())
        })
        .collect();
    replaced.sort();
    replaced.dedup();
    let time_column = schema
        .index_of(schema::event_time_column(table))
        .map_err(|e| ArchiveError::Layout {
            path: folder.clone(),
            reason: format!("table `{table}` has no event time column: {e}"),
        })?;
    let newest_ms = batches
        .iter()
        .flat_map(|b| event_times(b, time_column))
        .max()
        .unwrap_or(hour_ms);
    let temporary = path.with_extension(TEMPORARY);
    let footer = Footer {
        offsets,
        replaces: replaced,
        newest_ms,
    };
    let written =
        write_temporary(&temporary, schema, batches, &footer).and_then(|(metadata, size)| {
            fs::rename(&temporary, &path).map_err(|e| ArchiveError::io(&path, e))?;
            sync_folder(&folder)?;
            Ok((
                size,
                row_groups(&metadata, schema::event_time_column(table)),
            ))
        });
    let (size, row_groups) = match written {
        Ok(done) => done,
        Err(e) => {
            if temporary.exists() {
                delete(std::slice::from_ref(&temporary));
            }
            return Err(e);
        }
    };
    Ok(ArchivedFile {
        path,
        hour_ms,
        size,
        row_groups,
        newest_ms,
        offsets: footer.offsets,
        replaces: footer.replaces,
    })
}

/// What a file's footer says besides its rows.
struct Footer {
    offsets: Offsets,
    replaces: Vec<String>,
    newest_ms: i64,
}

/// Writes `batches` with `footer` to `temporary` and fsyncs it; returns its metadata and size.
/// Measurements (the float columns) are written plain: they rarely repeat, so a dictionary costs
/// the writer its hashing and every reader a lookup per value.
fn write_temporary(
    temporary: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    footer: &Footer,
) -> Result<(ParquetMetaData, u64), ArchiveError> {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for measurement in schema
        .fields()
        .iter()
        .filter(|f| f.data_type().is_floating())
    {
        properties =
            properties.set_column_dictionary_enabled(measurement.name().as_str().into(), false);
    }
    let properties = properties
        .set_key_value_metadata(Some(vec![
            KeyValue::new(
                OFFSETS_KEY.to_string(),
                serde_json::to_string(&footer.offsets).expect("offsets serialize"),
            ),
            KeyValue::new(
                REPLACES_KEY.to_string(),
                serde_json::to_string(&footer.replaces).expect("names serialize"),
            ),
            KeyValue::new(NEWEST_KEY.to_string(), footer.newest_ms.to_string()),
        ]))
        .build();
    let file = File::create(temporary).map_err(|e| ArchiveError::io(temporary, e))?;
    let parquet = |e| ArchiveError::Parquet {
        path: temporary.to_path_buf(),
        source: e,
    };
    let mut writer =
        ArrowWriter::try_new(&file, schema.clone(), Some(properties)).map_err(parquet)?;
    for batch in batches {
        writer.write(batch).map_err(parquet)?;
    }
    let metadata = writer.close().map_err(parquet)?;
    file.sync_all()
        .map_err(|e| ArchiveError::io(temporary, e))?;
    let size = file
        .metadata()
        .map_err(|e| ArchiveError::io(temporary, e))?
        .len();
    Ok((metadata, size))
}

/// The row groups `metadata` lists, with the event times in `time_column` its statistics give.
fn row_groups(metadata: &ParquetMetaData, time_column: &str) -> Vec<RowGroupSpan> {
    let column = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == time_column);
    metadata
        .row_groups()
        .iter()
        .map(|group| RowGroupSpan {
            rows: group.num_rows() as u64,
            event_time_ms: column.and_then(|c| match group.column(c).statistics()? {
                Statistics::Int64(times) => Some((*times.min_opt()?, *times.max_opt()?)),
                _ => None,
            }),
        })
        .collect()
}

/// Every row of `file`.
pub(crate) fn read(file: &ArchivedFile) -> Result<Vec<RecordBatch>, ArchiveError> {
    let parquet = |e| ArchiveError::Parquet {
        path: file.path.clone(),
        source: e,
    };
    let f = File::open(&file.path).map_err(|e| ArchiveError::io(&file.path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(parquet)?
        .map(|batch| {
            batch.map_err(|e| ArchiveError::Parquet {
                path: file.path.clone(),
                source: e.into(),
            })
        })
        .collect()
}

/// Deletes files the archive no longer lists, and their hour's folder once it is empty.
pub(crate) fn delete(paths: &[PathBuf]) {
    for path in paths {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete an archive file");
        }
        // Only an empty folder is removed; a folder still holding files stays, as it should.
        if let Some(hour) = path.parent() {
            let _ = fs::remove_dir(hour);
        }
    }
}

fn sync_folder(folder: &Path) -> Result<(), ArchiveError> {
    File::open(folder)
        .and_then(|f| f.sync_all())
        .map_err(|e| ArchiveError::io(folder, e))
}

/// The footer of a file: its row groups, and what Polis wrote in it.
fn footer(path: &Path, time_column: &str) -> Result<(Vec<RowGroupSpan>, Footer), ArchiveError> {
    let f = File::open(path).map_err(|e| ArchiveError::io(path, e))?;
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&f)
        .map_err(|e| ArchiveError::Parquet {
            path: path.to_path_buf(),
            source: e,
        })?;
    let meta = metadata.file_metadata();
    let value = |key: &str| {
        meta.key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == key))
            .and_then(|k| k.value.clone())
            .ok_or_else(|| ArchiveError::Layout {
                path: path.to_path_buf(),
                reason: format!(
                    "its footer has no `{key}`: it was not written by Polis; move it out of the archive"
                ),
            })
    };
    let invalid = |key: &str, e: String| ArchiveError::Layout {
        path: path.to_path_buf(),
        reason: format!("its footer's `{key}` is invalid: {e}"),
    };
    let offsets = serde_json::from_str(&value(OFFSETS_KEY)?)
        .map_err(|e| invalid(OFFSETS_KEY, e.to_string()))?;
    let replaces = serde_json::from_str(&value(REPLACES_KEY)?)
        .map_err(|e| invalid(REPLACES_KEY, e.to_string()))?;
    let newest_ms = value(NEWEST_KEY)?
        .parse()
        .map_err(|e: std::num::ParseIntError| invalid(NEWEST_KEY, e.to_string()))?;
    let footer = Footer {
        offsets,
        replaces,
        newest_ms,
    };
    Ok((row_groups(&metadata, time_column), footer))
}

/// The start of the hour a `date=YYYY-MM-DD/hour=HH` folder stands for.
fn folder_hour(date: &str, hour: &str) -> Option<i64> {
    let date = NaiveDate::parse_from_str(date.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.strip_prefix("hour=")?.parse().ok()?;
    let time = NaiveTime::from_hms_opt(hour, 0, 0)?;
    let ms = date.and_time(time).and_utc().timestamp_millis();
    (ms % HOUR_MS == 0).then_some(ms)
}

fn entries(folder: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut paths = fs::read_dir(folder)
        .map_err(|e| ArchiveError::io(folder, e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ArchiveError::io(folder, e))?;
    paths.sort();
    Ok(paths)
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `path` is a file others may keep beside the archive's (`_SUCCESS`, `.DS_Store`, …).
fn hidden(path: &Path) -> bool {
    name(path).starts_with(['_', '.'])
}

/// The hour before which retention deleted every file of `table`, if it ever did.
pub(crate) fn expired_before(root: &Path, table: &str) -> Result<Option<i64>, ArchiveError> {
    let path = root.join(table).join(EXPIRED);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ArchiveError::io(&path, e)),
    };
    let expired: Expired = serde_json::from_str(&text).map_err(|e| ArchiveError::Layout {
        path: path.clone(),
        reason: format!("expected {{\"before_ms\": <ms since 1970>}}: {e}"),
    })?;
    Ok(Some(expired.before_ms))
}

/// Records durably that retention deleted every hour of `table` before `before_ms`.
pub(crate) fn set_expired_before(
    root: &Path,
    table: &str,
    before_ms: i64,
) -> Result<(), ArchiveError> {
    let folder = root.join(table);
    fs::create_dir_all(&folder).map_err(|e| ArchiveError::io(&folder, e))?;
    let path = folder.join(EXPIRED);
    let temporary = path.with_extension(TEMPORARY);
    let text = serde_json::to_vec(&Expired { before_ms }).expect("a number serializes");
    File::create(&temporary)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, &text)?;
            f.sync_all()
        })
        .map_err(|e| ArchiveError::io(&temporary, e))?;
    fs::rename(&temporary, &path).map_err(|e| ArchiveError::io(&path, e))?;
    sync_folder(&folder)
}

/// The files of `table` in the archive at `root`, after deleting what a crash left behind:
/// temporary files, files a compacted file replaces, and hours before `expired_before`.
pub(crate) fn open(
    root: &Path,
    table: &str,
    expired_before: Option<i64>,
) -> Result<Vec<ArchivedFile>, ArchiveError> {
    let table_folder = root.join(table);
    if !table_folder.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for date in entries(&table_folder)? {
        if hidden(&date) {
            continue;
        }
        if !date.is_dir() {
            return Err(ArchiveError::Layout {
                path: date,
                reason: format!(
                    "expected only folders `date=YYYY-MM-DD` in {}",
                    table_folder.display()
                ),
            });
        }
        for hour in entries(&date)? {
            if hidden(&hour) {
                continue;
            }
            let hour_ms = folder_hour(&name(&date), &name(&hour))
                .filter(|_| hour.is_dir())
                .ok_or_else(|| ArchiveError::Layout {
                    path: hour.clone(),
                    reason: format!(
                        "expected a folder `{table}/date=YYYY-MM-DD/hour=HH` (HH from 00 to 23)"
                    ),
                })?;
            if expired_before.is_some_and(|before| hour_ms < before) {
                tracing::info!(folder = %hour.display(), "deleting an archive hour past analytics.archive_retention");
                if let Err(e) = fs::remove_dir_all(&hour) {
                    tracing::warn!(folder = %hour.display(), error = %e, "cannot delete an expired archive hour");
                }
                continue;
            }
            files.extend(open_hour(&hour, hour_ms, schema::event_time_column(table))?);
        }
        // An empty date folder (its hours expired) goes; one holding hours stays.
        let _ = fs::remove_dir(&date);
    }
    Ok(files)
}

/// The files of one hour folder, after deleting temporary and replaced files.
fn open_hour(
    hour: &Path,
    hour_ms: i64,
    time_column: &str,
) -> Result<Vec<ArchivedFile>, ArchiveError> {
    let mut found: BTreeMap<String, ArchivedFile> = BTreeMap::new();
    let mut replaced = Vec::new();
    for path in entries(hour)? {
        match path.extension().and_then(|e| e.to_str()) {
            Some(TEMPORARY) => delete(std::slice::from_ref(&path)),
            Some(EXTENSION) if path.is_file() => {
                let (row_groups, footer) = footer(&path, time_column)?;
                let size = fs::metadata(&path)
                    .map_err(|e| ArchiveError::io(&path, e))?
                    .len();
                replaced.extend(footer.replaces.iter().cloned());
                let file = ArchivedFile {
                    path: path.clone(),
                    hour_ms,
                    size,
                    row_groups,
                    newest_ms: footer.newest_ms,
                    offsets: footer.offsets,
                    replaces: footer.replaces,
                };
                found.insert(name(&path), file);
            }
            _ if hidden(&path) => {}
            _ => {
                return Err(ArchiveError::Layout {
                    path,
                    reason: "expected only `.parquet` files written by Polis in an archive hour; move it elsewhere".to_string(),
                });
            }
        }
    }
    let stale: Vec<PathBuf> = replaced
        .iter()
        .filter_map(|n| found.remove(n))
        .map(|f| f.path)
        .collect();
    if !stale.is_empty() {
        tracing::info!(files = stale.len(), folder = %hour.display(), "deleting archive files a compacted file replaced");
        delete(&stale);
    }
    Ok(found.into_values().collect())
}
