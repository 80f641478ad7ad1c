//! The Parquet archive on real files and the embedded log: hours past `hot_retention` roll into
//! `{archive_dir}/traffic/date=…/hour=…/`, SQL counts every row exactly once while rows move from
//! memory to disk and across restarts, late rows add files that compaction merges, retention
//! deletes whole hours, hours archived with Utf8 strings read as before, and a file that does
//! not belong stops start-up naming it.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use chrono::{DateTime, Utc};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use polis_analytics::{Analytics, AnalyticsConfig, AnalyticsError, ArchiveError};
use polis_broker::{BrokerConfig, EmbeddedLog, Log, LogClient, Record};
use polis_telemetry::{TrafficReading, schema, topics};
use tokio_util::sync::CancellationToken;

use common::eventually;

const TABLE_TOTALS: &str = "SELECT count(*), sum(vehicles) FROM traffic";

/// 2020-01-01 at `hh:mm` UTC: event times far behind the wall clock.
fn at(hh: i64, mm: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_577_836_800 + hh * 3600 + mm * 60, 0).unwrap()
}

/// A log whose traffic topic has two partitions.
fn log(dir: &Path) -> Arc<dyn LogClient> {
    let log = Log::open(dir, BrokerConfig::default()).unwrap();
    for (table, topic) in schema::TABLES {
        log.create_topic(topic, if table == "traffic" { 2 } else { 1 })
            .unwrap();
    }
    Arc::new(EmbeddedLog(log))
}

fn config(archive: &Path) -> AnalyticsConfig {
    AnalyticsConfig {
        archive_dir: Some(archive.to_path_buf()),
        hot_retention: Duration::from_secs(3 * 3600),
        archive_retention: Duration::from_secs(5 * 3600),
        archive_compact_after: 2,
        // Files a compaction or retention replaces are deleted this long after.
        query_timeout: Duration::from_secs(2),
        ..AnalyticsConfig::default()
    }
}

struct Running {
    analytics: Analytics,
    shutdown: CancellationToken,
}

async fn start(log: &Arc<dyn LogClient>, archive: &Path) -> Running {
    let shutdown = CancellationToken::new();
    let analytics = Analytics::start(config(archive), log.clone(), shutdown.clone())
        .await
        .unwrap();
    Running {
        analytics,
        shutdown,
    }
}

impl Running {
    async fn stop(self) {
        common::stop(self.analytics, self.shutdown).await;
    }

    /// `count(*)` and `sum(vehicles)` of `sql`.
    async fn totals(&self, sql: &str) -> (i64, i64) {
        let result = self.analytics.sql().query(sql).await.unwrap();
        let batch = arrow::compute::concat_batches(&result.schema, &result.batches).unwrap();
        assert_eq!(batch.num_rows(), 1, "{sql}");
        let value = |i: usize| {
            let column = batch.column(i).as_primitive::<Int64Type>();
            if column.is_null(0) {
                0
            } else {
                column.value(0)
            }
        };
        (value(0), value(1))
    }

    /// Waits until the whole table totals `expected` and the archive's layout passes `done`.
    /// Once the totals are reached they must hold at every later poll: a row rolled from memory
    /// to a file is never counted twice or missed on the way.
    async fn settle(
        &self,
        what: &str,
        archive: &Path,
        expected: (i64, i64),
        done: impl Fn(&Layout) -> bool,
    ) -> Layout {
        let reached = Cell::new(false);
        eventually(what, || async {
            let totals = self.totals(TABLE_TOTALS).await;
            if reached.get() {
                assert_eq!(totals, expected, "rows lost or counted twice: {what}");
            }
            reached.set(reached.get() || totals == expected);
            let layout = layout(archive);
            (reached.get() && done(&layout)).then_some(layout)
        })
        .await
    }
}

/// Rows produced so far: how many and their vehicles.
#[derive(Default, Clone, Copy)]
struct Produced(i64, i64);

/// Appends one traffic reading per `(event time, vehicles)` of device `device`, in order;
/// returns the partitions they went to.
async fn produce(
    log: &Arc<dyn LogClient>,
    produced: &mut Produced,
    device: &str,
    rows: &[(DateTime<Utc>, i64)],
) -> BTreeSet<i32> {
    let records = rows
        .iter()
        .map(|(t, vehicles)| {
            produced.0 += 1;
            produced.1 += vehicles;
            let reading = TrafficReading {
                device_id: device.to_string(),
                district: "centre".into(),
                observed_at: *t,
                ingested_at: *t,
                lane_id: None,
                vehicles: *vehicles,
                occupancy_ratio: 0.5,
                average_speed_kmh: 40.0,
                congested: None,
                sequence: None,
            };
            Record::new(
                Some(device.to_string()),
                serde_json::to_vec(&reading).unwrap(),
                Utc::now().timestamp_millis(),
            )
        })
        .collect();
    let positions = log.produce(topics::TRAFFIC, records).await.unwrap();
    positions.into_iter().map(|(p, _)| p).collect()
}

/// Six readings an hour, at minute 5, 15, …, 55 of each of `hours`, with vehicles 1, 2, 3, … in
/// time order, spread over devices `tc-1`…`tc-4`.
async fn hours_of_readings(
    log: &Arc<dyn LogClient>,
    produced: &mut Produced,
    hours: std::ops::Range<i64>,
) {
    let rows: Vec<(DateTime<Utc>, i64)> = hours
        .flat_map(|h| (0..6).map(move |m| at(h, 5 + 10 * m)))
        .zip(1..)
        .collect();
    for (d, device) in ["tc-1", "tc-2", "tc-3", "tc-4"].into_iter().enumerate() {
        let mine: Vec<_> = rows.iter().skip(d).step_by(4).copied().collect();
        produce(log, produced, device, &mine).await;
    }
}

/// One reading at `t` for each of several devices, so that every partition of `traffic` has
/// a record after everything produced before: once SQL counts them, a restarted analytics has
/// replayed the whole log.
async fn markers(log: &Arc<dyn LogClient>, produced: &mut Produced, t: DateTime<Utc>) {
    let mut partitions = BTreeSet::new();
    for device in ["m-1", "m-2", "m-3", "m-4"] {
        partitions.extend(produce(log, produced, device, &[(t, 1000)]).await);
    }
    assert_eq!(
        partitions,
        BTreeSet::from([0, 1]),
        "markers cover both partitions"
    );
}

/// The archive's traffic files: `date=…/hour=…` → Parquet file names, and the other files of
/// the table folder.
#[derive(Debug, PartialEq, Clone)]
struct Layout {
    hours: BTreeMap<String, Vec<String>>,
    table_files: Vec<String>,
}

fn names(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    paths
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn layout(archive: &Path) -> Layout {
    let mut hours = BTreeMap::new();
    let mut table_files = Vec::new();
    for date in names(&archive.join("traffic")) {
        if !date.is_dir() {
            table_files.push(file_name(&date));
            continue;
        }
        for hour in names(&date) {
            // Not the temporary file of one being written.
            let files = names(&hour)
                .iter()
                .map(|p| file_name(p))
                .filter(|n| n.ends_with(".parquet"))
                .collect();
            hours.insert(format!("{}/{}", file_name(&date), file_name(&hour)), files);
        }
    }
    Layout { hours, table_files }
}

impl Layout {
    fn files(&self, hour: &str) -> usize {
        self.hours.get(hour).map_or(0, Vec::len)
    }

    fn path(&self, archive: &Path, hour: &str) -> PathBuf {
        let files = &self.hours[hour];
        assert_eq!(files.len(), 1, "{hour}: {files:?}");
        archive.join("traffic").join(hour).join(&files[0])
    }
}

/// The rows of a Parquet file and the value of `key` in its footer.
fn footer(path: &Path, key: &str) -> (i64, String) {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let meta = reader.metadata().file_metadata();
    let value = meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == key))
        .and_then(|k| k.value.clone())
        .unwrap_or_else(|| panic!("{} has no footer key {key}", path.display()));
    (meta.num_rows(), value)
}

/// Whether each named column of a Parquet file's first row group has a dictionary page.
fn dictionary_pages(path: &Path, columns: &[&str]) -> Vec<bool> {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let group = reader.metadata().row_group(0);
    columns
        .iter()
        .map(|name| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == *name)
                .unwrap_or_else(|| panic!("{} has no column {name}", path.display()))
                .dictionary_page_offset()
                .is_some()
        })
        .collect()
}

/// Rewrites the Parquet file at `path` with its string columns as Utf8 and its Polis footer
/// kept: a file as Polis archived it before strings were views.
fn rewrite_strings_as_utf8(path: &Path) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let footer: Vec<_> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .filter(|kv| kv.key.starts_with("polis."))
        .cloned()
        .collect();
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    let utf8 = |f: &Arc<Field>| match f.data_type() {
        DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
        _ => f.as_ref().clone(),
    };
    let schema = Arc::new(Schema::new(
        batches[0]
            .schema()
            .fields()
            .iter()
            .map(utf8)
            .collect::<Vec<_>>(),
    ));
    let properties = WriterProperties::builder()
        .set_key_value_metadata(Some(footer))
        .build();
    let mut writer = ArrowWriter::try_new(
        File::create(path).unwrap(),
        schema.clone(),
        Some(properties),
    )
    .unwrap();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| arrow::compute::cast(c, f.data_type()).unwrap())
            .collect();
        writer
            .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    writer.close().unwrap();
}

const H0: &str = "date=2020-01-01/hour=00";
const H1: &str = "date=2020-01-01/hour=01";
const H2: &str = "date=2020-01-01/hour=02";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_counted_once_while_hours_roll_restart_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let log = log(&dir.path().join("log"));
    let mut produced = Produced::default();

    // Three hours of rows, all within hot_retention (3 h) of the newest: nothing is archived.
    let running = start(&log, &archive).await;
    hours_of_readings(&log, &mut produced, 0..3).await;
    let expected = (18, (1..=18).sum());
    assert_eq!((produced.0, produced.1), expected);
    let layout_a = running
        .settle("three hot hours", &archive, expected, |_| true)
        .await;
    assert!(layout_a.hours.is_empty(), "{layout_a:?}");

    // A row at 05:30 puts hours 00 and 01 wholly 3 h behind it: each becomes one file. The
    // archive also records its retention horizon (00:00, 5 h back: nothing to delete yet).
    produce(&log, &mut produced, "tc-1", &[(at(5, 30), 100)]).await;
    let expected = (19, 171 + 100);
    let rolled = running
        .settle("hours 00 and 01 archived", &archive, expected, |l| {
            l.files(H0) == 1 && l.files(H1) == 1 && l.table_files == ["_expired.json"]
        })
        .await;
    assert_eq!(
        rolled.hours.keys().collect::<Vec<_>>(),
        [H0, H1],
        "hour 02 is still hot"
    );
    for hour in [H0, H1] {
        let name = &rolled.hours[hour][0];
        let (first, last) = name
            .strip_suffix(".parquet")
            .unwrap()
            .split_once('-')
            .unwrap();
        assert!(
            first.parse::<i64>().unwrap() <= last.parse::<i64>().unwrap(),
            "{name}"
        );
        let (rows, offsets) = footer(&rolled.path(&archive, hour), "polis.offsets");
        assert_eq!(rows, 6, "{hour}");
        let offsets: BTreeMap<i32, Vec<(i64, i64)>> = serde_json::from_str(&offsets).unwrap();
        let held: i64 = offsets.values().flatten().map(|(s, e)| e - s + 1).sum();
        assert_eq!(held, 6, "{hour}: {offsets:?}");
        assert_eq!(
            dictionary_pages(
                &rolled.path(&archive, hour),
                &[
                    "district",
                    "vehicles",
                    "occupancy_ratio",
                    "average_speed_kmh"
                ]
            ),
            [true, true, false, false],
            "{hour}: measurements are written plain"
        );
    }
    // Queries over part of the day read the archived hours, the hot ones, or both.
    let by_hour = |from: &str, to: &str| {
        format!(
            "SELECT count(*), sum(vehicles) FROM traffic WHERE observed_at >= TIMESTAMP '2020-01-01T{from}:00Z' AND observed_at < TIMESTAMP '2020-01-01T{to}:00Z'"
        )
    };
    assert_eq!(running.totals(&by_hour("00:00", "01:00")).await, (6, 21));
    assert_eq!(running.totals(&by_hour("01:00", "02:00")).await, (6, 57));
    assert_eq!(running.totals(&by_hour("00:30", "02:30")).await, (12, 114));
    assert_eq!(running.totals(&by_hour("02:00", "06:00")).await, (7, 193));
    // Within an archived hour but past its last reading: no row group of its file can match.
    assert_eq!(running.totals(&by_hour("00:56", "00:59")).await, (0, 0));
    assert_eq!(running.totals(&by_hour("00:50", "00:59")).await, (1, 6));
    running.stop().await;

    // After a restart the log is replayed from its start: no archived row comes in twice.
    let running = start(&log, &archive).await;
    markers(&log, &mut produced, at(5, 31)).await;
    let expected = (23, 271 + 4000);
    let after_restart = running
        .settle(
            "the log replayed after a restart",
            &archive,
            expected,
            |_| true,
        )
        .await;
    assert_eq!(after_restart, rolled, "a restart writes no archive file");

    // A late row of hour 00 is counted and added to it as a second file.
    produce(&log, &mut produced, "tc-2", &[(at(0, 20), 7)]).await;
    let expected = (24, 4278);
    running
        .settle("a late row archived", &archive, expected, |l| {
            l.files(H0) == 2
        })
        .await;
    // A third file is more than archive_compact_after = 2: the hour is merged into one.
    produce(&log, &mut produced, "tc-3", &[(at(0, 40), 9)]).await;
    let expected = (25, 4287);
    let compacted = running
        .settle("hour 00 compacted", &archive, expected, |l| {
            l.files(H0) == 1
        })
        .await;
    let (rows, replaces) = footer(&compacted.path(&archive, H0), "polis.replaces");
    assert_eq!(rows, 8);
    let replaces: Vec<String> = serde_json::from_str(&replaces).unwrap();
    assert_eq!(replaces.len(), 3, "{replaces:?}");
    assert!(replaces.contains(&rolled.hours[H0][0]), "{replaces:?}");
    assert_eq!(running.totals(&by_hour("00:00", "01:00")).await, (8, 37));
    running.stop().await;

    // And once more after a restart, over the compacted hour.
    let running = start(&log, &archive).await;
    markers(&log, &mut produced, at(5, 32)).await;
    let expected = (29, 8287);
    assert_eq!((produced.0, produced.1), expected);
    let last = running
        .settle(
            "the log replayed over a compacted hour",
            &archive,
            expected,
            |_| true,
        )
        .await;
    assert_eq!(last, compacted);
    assert_eq!(running.totals(&by_hour("00:00", "01:00")).await, (8, 37));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_whole_hours_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let log = log(&dir.path().join("log"));
    let mut produced = Produced::default();
    let running = start(&log, &archive).await;
    hours_of_readings(&log, &mut produced, 0..3).await;
    produce(&log, &mut produced, "tc-1", &[(at(5, 30), 100)]).await;
    let rolled = running
        .settle("hours 00 and 01 archived", &archive, (19, 271), |l| {
            l.files(H0) == 1 && l.files(H1) == 1
        })
        .await;
    assert_eq!(rolled.hours.len(), 2);

    // 07:30 puts hours 00 and 01 wholly more than archive_retention = 5 h behind: they go,
    // rows and files; hour 02 is archived.
    produce(&log, &mut produced, "tc-1", &[(at(7, 30), 1000)]).await;
    let expected = (20 - 12, 1271 - 21 - 57);
    let expired = running
        .settle("hours 00 and 01 deleted", &archive, expected, |l| {
            l.files(H2) == 1 && !l.hours.contains_key(H0) && !l.hours.contains_key(H1)
        })
        .await;
    assert_eq!(expired.hours.keys().collect::<Vec<_>>(), [H2]);
    assert_eq!(expired.table_files, ["_expired.json"]);

    // A late row of a deleted hour is not taken in; the marker after it on the same partition is.
    produce(
        &log,
        &mut produced,
        "tc-2",
        &[(at(1, 30), 5), (at(7, 31), 10)],
    )
    .await;
    let expected = (expected.0 + 1, expected.1 + 10);
    running
        .settle("the row after a too-late one", &archive, expected, |_| true)
        .await;
    running.stop().await;

    // A restart replays the deleted hours' rows from the log but keeps them out.
    let running = start(&log, &archive).await;
    markers(&log, &mut produced, at(7, 32)).await;
    let expected = (expected.0 + 4, expected.1 + 4000);
    let after = running
        .settle(
            "the log replayed past deleted hours",
            &archive,
            expected,
            |_| true,
        )
        .await;
    assert_eq!(after, expired);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hours_archived_with_utf8_strings_are_read_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let log = log(&dir.path().join("log"));
    let mut produced = Produced::default();
    let running = start(&log, &archive).await;
    hours_of_readings(&log, &mut produced, 0..1).await;
    produce(&log, &mut produced, "tc-1", &[(at(5, 30), 100)]).await;
    let expected = (7, 21 + 100);
    let rolled = running
        .settle("hour 00 archived", &archive, expected, |l| l.files(H0) == 1)
        .await;
    running.stop().await;

    let file = rolled.path(&archive, H0);
    rewrite_strings_as_utf8(&file);
    let written = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).unwrap()).unwrap();
    assert_eq!(
        written
            .schema()
            .field_with_name("device_id")
            .unwrap()
            .data_type(),
        &DataType::Utf8
    );
    let running = start(&log, &archive).await;
    running
        .settle("restarted over the Utf8 hour", &archive, expected, |_| true)
        .await;
    let result = running
        .analytics
        .sql()
        .query(
            "SELECT device_id, count(*), sum(vehicles) FROM traffic \
             WHERE observed_at < TIMESTAMP '2020-01-01T01:00:00Z' \
             GROUP BY device_id ORDER BY device_id",
        )
        .await
        .unwrap();
    let batch = arrow::compute::concat_batches(&result.schema, &result.batches).unwrap();
    assert_eq!(batch.schema().field(0).data_type(), &schema::text());
    let devices = batch.column(0).as_string_view();
    let counts = batch.column(1).as_primitive::<Int64Type>();
    let vehicles = batch.column(2).as_primitive::<Int64Type>();
    let rows: Vec<(&str, i64, i64)> = (0..batch.num_rows())
        .map(|i| (devices.value(i), counts.value(i), vehicles.value(i)))
        .collect();
    assert_eq!(
        rows,
        [
            ("tc-1", 2, 6),
            ("tc-2", 2, 8),
            ("tc-3", 1, 3),
            ("tc-4", 1, 4)
        ]
    );
    running.stop().await;
}

/// The error `Analytics::start` gives over `archive`.
async fn start_error(log: &Arc<dyn LogClient>, archive: &Path) -> ArchiveError {
    match Analytics::start(config(archive), log.clone(), CancellationToken::new()).await {
        Err(AnalyticsError::Archive(e)) => e,
        Err(e) => panic!("expected an archive error, got {e}"),
        Ok(_) => panic!("analytics started over a broken archive"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_does_not_belong_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let hour = archive.join("traffic").join(H0);
    std::fs::create_dir_all(&hour).unwrap();
    let log = log(&dir.path().join("log"));

    let corrupt = hour.join("0-5.parquet");
    std::fs::write(&corrupt, b"PAR1 but not really").unwrap();
    let error = start_error(&log, &archive).await;
    assert!(
        matches!(&error, ArchiveError::Parquet { path, .. } if path.ends_with("traffic/date=2020-01-01/hour=00/0-5.parquet")),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&format!(
            "archive file {} is not valid Parquet",
            corrupt.canonicalize().unwrap().display()
        )),
        "{error}"
    );
    std::fs::remove_file(&corrupt).unwrap();

    // Valid Parquet that Polis did not write.
    let foreign = hour.join("export.parquet");
    let batch = RecordBatch::try_from_iter([(
        "x",
        Arc::new(arrow::array::Int64Array::from(vec![1, 2])) as _,
    )])
    .unwrap();
    let mut writer =
        ArrowWriter::try_new(File::create(&foreign).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let error = start_error(&log, &archive).await;
    assert!(
        matches!(&error, ArchiveError::Layout { path, .. } if path.ends_with("hour=00/export.parquet")),
        "{error:?}"
    );
    assert!(
        error.to_string().ends_with(
            "does not belong in the archive (analytics.archive_dir): its footer has no `polis.offsets`: it was not written by Polis; move it out of the archive"
        ),
        "{error}"
    );
    std::fs::remove_file(&foreign).unwrap();

    // A file of another kind, and a folder outside the layout.
    std::fs::write(hour.join("notes.txt"), "hello").unwrap();
    let error = start_error(&log, &archive).await;
    assert!(
        matches!(&error, ArchiveError::Layout { path, .. } if path.ends_with("hour=00/notes.txt")),
        "{error:?}"
    );
    std::fs::remove_file(hour.join("notes.txt")).unwrap();
    std::fs::create_dir_all(archive.join("traffic/date=2020-01-01/hour=24")).unwrap();
    let error = start_error(&log, &archive).await;
    assert!(
        error
            .to_string()
            .contains("expected a folder `traffic/date=YYYY-MM-DD/hour=HH` (HH from 00 to 23)"),
        "{error}"
    );
    std::fs::remove_dir(archive.join("traffic/date=2020-01-01/hour=24")).unwrap();

    // Files others keep beside data (`_SUCCESS`, `.DS_Store`) are left alone, and an empty
    // hour starts.
    std::fs::write(hour.join("_SUCCESS"), "").unwrap();
    std::fs::write(archive.join("traffic/.DS_Store"), "").unwrap();
    let shutdown = CancellationToken::new();
    let analytics = Analytics::start(config(&archive), log, shutdown.clone())
        .await
        .unwrap();
    shutdown.cancel();
    analytics.join().await;
}
