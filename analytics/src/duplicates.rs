//! Repeated readings. A reading that reaches a telemetry topic twice (a producer's retry without
//! idempotence, a file replayed by hand) is stored both times, like every record, but metrics
//! count it once. A reading is identified by its device and observation time; of several
//! records with both equal, the first stored counts. A device's records share one partition
//! (the key is its id), so "first" is the lowest offset, the same after every replay.

use arrow::array::{AsArray, BooleanArray, MAX_INLINE_VIEW_LEN, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampMillisecondType;
use arrow::error::ArrowError;
use datafusion::common::HashSet;

const DEVICE: &str = "device_id";

/// A device id as a key: one of at most [`MAX_INLINE_VIEW_LEN`] bytes by its view, which holds
/// the whole id after its length (so equal ids have equal views, and ids of other lengths never
/// match), a longer one by its text.
#[derive(PartialEq, Eq, Hash)]
enum Device<'a> {
    Inline(u128),
    Text(&'a str),
}

/// `batches` (rows of one table, in the order stored) without the rows that repeat an earlier
/// row's device and event time (`time_column`).
pub(crate) fn first_readings(
    batches: Vec<RecordBatch>,
    time_column: &str,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let mut seen: HashSet<(Device, i64)> = HashSet::with_capacity(rows);
    let mut out = Vec::with_capacity(batches.len());
    for batch in &batches {
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                ArrowError::SchemaError(format!("a telemetry table without column `{name}`"))
            })
        };
        let devices = column(DEVICE)?.as_string_view();
        let times = column(time_column)?.as_primitive::<TimestampMillisecondType>();
        let device = |row: usize| {
            let view = devices.views()[row];
            if view as u32 <= MAX_INLINE_VIEW_LEN {
                Device::Inline(view)
            } else {
                Device::Text(devices.value(row))
            }
        };
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|row| Some(seen.insert((device(row), times.value(row)))))
            .collect();
        if keep.true_count() == batch.num_rows() {
            out.push(batch.clone());
        } else {
            out.push(filter_record_batch(batch, &keep)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringViewArray, TimestampMillisecondArray};

    use super::*;

    fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "device_id",
                Arc::new(StringViewArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "observed_at",
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )) as ArrayRef,
            ),
            (
                "vehicles",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn a_repeated_device_and_time_counts_once_across_batches() {
        // Ids of up to 12 bytes are compared by their views, longer ones by their text.
        let (short, long, longer) = ("meter-000012", "streetlight-n-7", "streetlight-n-8");
        let kept = first_readings(
            vec![
                batch(&[
                    ("tc-1", 1_000, 5),
                    ("tc-2", 1_000, 6),
                    ("tc-1", 1_000, 7),
                    (long, 1_000, 1),
                    (short, 1_000, 4),
                ]),
                batch(&[
                    ("tc-1", 2_000, 8),
                    ("tc-2", 1_000, 9),
                    (long, 1_000, 2),
                    (longer, 1_000, 3),
                    (short, 1_000, 10),
                ]),
            ],
            "observed_at",
        )
        .unwrap();
        let kept = arrow::compute::concat_batches(&kept[0].schema(), &kept).unwrap();
        assert_eq!(
            kept,
            batch(&[
                ("tc-1", 1_000, 5),
                ("tc-2", 1_000, 6),
                (long, 1_000, 1),
                (short, 1_000, 4),
                ("tc-1", 2_000, 8),
                (longer, 1_000, 3),
            ])
        );
    }

    #[test]
    fn a_table_without_a_device_column_is_an_error() {
        let batch = RecordBatch::try_from_iter([(
            "observed_at",
            Arc::new(TimestampMillisecondArray::from_iter_values([1])) as ArrayRef,
        )])
        .unwrap();
        let err = first_readings(vec![batch], "observed_at").unwrap_err();
        assert!(err.to_string().contains("`device_id`"), "{err}");
    }
}
