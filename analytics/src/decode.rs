//! Log records → Arrow record batches, one table at a time.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::ReaderBuilder;
use polis_broker::ConsumedRecord;
use polis_telemetry::deadletter::{
    HEADER_CLIENT_ID, HEADER_DETAIL, HEADER_MQTT_TOPIC, HEADER_REASON, HEADER_RECEIVED_AT,
};
use polis_telemetry::schema;

/// Decodes `records` of `table` into one batch with the table's full schema. Records that do not
/// decode are skipped with a warning, so one bad record never blocks a topic.
pub(crate) fn decode(table: &str, records: &[&ConsumedRecord]) -> Result<RecordBatch, ArrowError> {
    let full = schema::table_schema(table)
        .ok_or_else(|| ArrowError::SchemaError(format!("no table `{table}`")))?;
    if table == "deadletter" {
        return dead_letters(full, records);
    }
    let values = schema::value_schema(table).expect("table has a value schema");
    match json_values(&values, records) {
        Ok(batch) => with_positions(full, batch, records),
        Err(bulk_error) => {
            let good: Vec<&ConsumedRecord> = records
                .iter()
                .copied()
                .filter(|r| match json_values(&values, &[r]) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(table, topic = r.topic, partition = r.partition, offset = r.offset, error = %e, "skipping a record that does not decode");
                        false
                    }
                })
                .collect();
            tracing::debug!(table, error = %bulk_error, skipped = records.len() - good.len(), "decoded record by record");
            let batch = json_values(&values, &good)?;
            with_positions(full, batch, &good)
        }
    }
}

fn json_values(values: &SchemaRef, records: &[&ConsumedRecord]) -> Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(values.clone())
        .with_batch_size(records.len().max(1))
        .build_decoder()?;
    for r in records {
        let mut value = &r.record.value[..];
        while !value.is_empty() {
            let consumed = decoder.decode(value)?;
            if consumed == 0 {
                return Err(ArrowError::JsonError(format!(
                    "record at offset {} did not decode",
                    r.offset
                )));
            }
            value = &value[consumed..];
        }
        decoder.decode(b"\n")?;
    }
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(values.clone())))
}

fn with_positions(
    full: SchemaRef,
    values: RecordBatch,
    records: &[&ConsumedRecord],
) -> Result<RecordBatch, ArrowError> {
    if values.num_rows() != records.len() {
        return Err(ArrowError::JsonError(format!(
            "{} records decoded into {} rows",
            records.len(),
            values.num_rows()
        )));
    }
    let mut columns: Vec<ArrayRef> = values.columns().to_vec();
    columns.push(Arc::new(Int32Array::from_iter_values(
        records.iter().map(|r| r.partition),
    )));
    columns.push(Arc::new(Int64Array::from_iter_values(
        records.iter().map(|r| r.offset),
    )));
    RecordBatch::try_new(full, columns)
}

fn dead_letters(full: SchemaRef, records: &[&ConsumedRecord]) -> Result<RecordBatch, ArrowError> {
    let mut device_id = StringBuilder::new();
    let mut mqtt_topic = StringBuilder::new();
    let mut client_id = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut detail = StringBuilder::new();
    let mut received_at = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut payload = BinaryBuilder::new();
    let mut payload_text = StringBuilder::new();
    for r in records {
        let header = |name| {
            r.record
                .header(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        device_id.append_option(
            r.record
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
        );
        mqtt_topic.append_value(header(HEADER_MQTT_TOPIC).unwrap_or_default());
        client_id.append_option(header(HEADER_CLIENT_ID));
        reason.append_value(header(HEADER_REASON).unwrap_or_else(|| "unknown".into()));
        detail.append_value(header(HEADER_DETAIL).unwrap_or_default());
        let received = header(HEADER_RECEIVED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map_or(r.record.timestamp_ms, |t| t.timestamp_millis());
        received_at.append_value(received);
        payload.append_value(&r.record.value);
        payload_text.append_option(std::str::from_utf8(&r.record.value).ok());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(device_id.finish()),
        Arc::new(mqtt_topic.finish()),
        Arc::new(client_id.finish()),
        Arc::new(reason.finish()),
        Arc::new(detail.finish()),
        Arc::new(received_at.finish()),
        Arc::new(payload.finish()),
        Arc::new(payload_text.finish()),
    ];
    let values = RecordBatch::try_new(
        schema::value_schema("deadletter").expect("deadletter schema"),
        columns,
    )?;
    with_positions(full, values, records)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    use bytes::Bytes;
    use polis_broker::Record;

    pub(crate) fn consumed(topic: &str, offset: i64, value: &str) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.into(),
            partition: 3,
            offset,
            record: Record::new(None::<Bytes>, value.to_string(), 0),
        }
    }

    /// A traffic batch with one row per (event time ms, vehicles).
    pub(crate) fn traffic_batch(rows: &[(i64, i64)]) -> RecordBatch {
        let records: Vec<ConsumedRecord> = rows
            .iter()
            .enumerate()
            .map(|(i, (ms, vehicles))| {
                let t = chrono::DateTime::from_timestamp_millis(*ms).unwrap();
                consumed(
                    "telemetry.traffic",
                    i as i64,
                    &format!(
                        r#"{{"device_id":"tc-{i}","district":"centre","observed_at":"{}","ingested_at":"{}","lane_id":null,"vehicles":{vehicles},"occupancy_ratio":0.5,"average_speed_kmh":40.0,"congested":null}}"#,
                        polis_telemetry::reading::format_time(t),
                        polis_telemetry::reading::format_time(t)
                    ),
                )
            })
            .collect();
        decode("traffic", &records.iter().collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn json_records_decode_with_positions() {
        let batch = traffic_batch(&[(1_000, 7), (2_000, 9)]);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema::table_schema("traffic").unwrap());
        let vehicles = batch
            .column_by_name("vehicles")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(vehicles.values().to_vec(), vec![7, 9]);
        let offsets = batch
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![0, 1]);
    }

    #[test]
    fn a_bad_record_is_skipped_not_fatal() {
        let good = traffic_batch(&[(1_000, 7)]);
        assert_eq!(good.num_rows(), 1);
        let records = [
            consumed("telemetry.traffic", 5, "{not json"),
            consumed("telemetry.traffic", 6, r#"{"device_id":"x"}"#),
        ];
        let batch = decode("traffic", &records.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(batch.num_rows(), 0);
    }

    #[test]
    fn dead_letters_decode_from_headers() {
        let mut record = Record::new(Some("tc-1"), Bytes::from_static(b"\xffraw"), 1_000);
        record.headers = vec![
            (
                HEADER_MQTT_TOPIC.into(),
                Bytes::from_static(b"city/x/traffic/tc-1"),
            ),
            (HEADER_REASON.into(), Bytes::from_static(b"malformed_json")),
            (
                HEADER_DETAIL.into(),
                Bytes::from_static(b"payload is not valid JSON"),
            ),
        ];
        let consumed = ConsumedRecord {
            topic: "telemetry.deadletter".into(),
            partition: 0,
            offset: 4,
            record,
        };
        let batch = decode("deadletter", &[&consumed]).unwrap();
        assert_eq!(
            batch
                .column_by_name("reason")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "malformed_json"
        );
        assert_eq!(
            batch
                .column_by_name("payload")
                .unwrap()
                .as_binary::<i32>()
                .value(0),
            b"\xffraw"
        );
        assert!(batch.column_by_name("payload_text").unwrap().is_null(0));
        assert_eq!(
            batch
                .column_by_name("device_id")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "tc-1"
        );
    }
}
