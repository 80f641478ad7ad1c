//! Log records → Arrow record batches, one table at a time: the gateway's flat JSON through
//! [`flat_json`](crate::flat_json), anything else through arrow-json.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringViewBuilder,
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

use crate::flat_json;

/// A table's rows decoded from records, and the records that did not decode with why.
pub(crate) struct Decoded<'r> {
    pub batch: RecordBatch,
    pub undecodable: Vec<(&'r ConsumedRecord, ArrowError)>,
}

/// Decodes `records` of `table` into one batch with the table's full schema. Records that do not
/// decode are handed back beside it, so one bad record never blocks a topic.
pub(crate) fn decode<'r>(
    table: &str,
    records: &[&'r ConsumedRecord],
) -> Result<Decoded<'r>, ArrowError> {
    let full = schema::table_schema(table)
        .ok_or_else(|| ArrowError::SchemaError(format!("no table `{table}`")))?;
    if table == "deadletter" {
        let batch = dead_letters(full, records)?;
        return Ok(Decoded {
            batch,
            undecodable: Vec::new(),
        });
    }
    let values = schema::value_schema(table).expect("table has a value schema");
    let whole =
        flat_json::decode(&values, records).map_or_else(|| json_values(&values, records), Ok);
    if let Ok(batch) = whole {
        let batch = with_positions(full, batch, records)?;
        return Ok(Decoded {
            batch,
            undecodable: Vec::new(),
        });
    }
    let mut good = Vec::with_capacity(records.len());
    let mut undecodable = Vec::new();
    for r in records {
        match json_values(&values, &[r]) {
            Ok(_) => good.push(*r),
            Err(e) => undecodable.push((*r, e)),
        }
    }
    let batch = json_values(&values, &good)?;
    Ok(Decoded {
        batch: with_positions(full, batch, &good)?,
        undecodable,
    })
}

pub(crate) fn json_values(
    values: &SchemaRef,
    records: &[&ConsumedRecord],
) -> Result<RecordBatch, ArrowError> {
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
    let mut device_id = StringViewBuilder::new();
    let mut mqtt_topic = StringViewBuilder::new();
    let mut client_id = StringViewBuilder::new();
    let mut reason = StringViewBuilder::new();
    let mut detail = StringViewBuilder::new();
    let mut received_at = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut payload = BinaryBuilder::new();
    let mut payload_text = StringViewBuilder::new();
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

    /// A canonical traffic reading of device `tc-{i}` as the gateway writes it.
    fn traffic_json(i: usize, ms: i64, vehicles: i64) -> String {
        let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let t = polis_telemetry::reading::format_time(t);
        format!(
            r#"{{"device_id":"tc-{i}","district":"centre","observed_at":"{t}","ingested_at":"{t}","lane_id":null,"vehicles":{vehicles},"occupancy_ratio":0.5,"average_speed_kmh":40.0,"congested":null}}"#
        )
    }

    /// A traffic batch with one row per (event time ms, vehicles).
    pub(crate) fn traffic_batch(rows: &[(i64, i64)]) -> RecordBatch {
        let records: Vec<ConsumedRecord> = rows
            .iter()
            .enumerate()
            .map(|(i, (ms, vehicles))| {
                consumed(
                    "telemetry.traffic",
                    i as i64,
                    &traffic_json(i, *ms, *vehicles),
                )
            })
            .collect();
        decode("traffic", &records.iter().collect::<Vec<_>>())
            .unwrap()
            .batch
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
    fn bad_records_are_handed_back_beside_the_good_ones() {
        let records = [
            consumed("telemetry.traffic", 4, &traffic_json(4, 1_000, 7)),
            consumed("telemetry.traffic", 5, "{not json"),
            consumed("telemetry.traffic", 6, r#"{"device_id":"x"}"#),
        ];
        let decoded = decode("traffic", &records.iter().collect::<Vec<_>>()).unwrap();
        let offsets = decoded
            .batch
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![4]);
        let bad: Vec<i64> = decoded.undecodable.iter().map(|(r, _)| r.offset).collect();
        assert_eq!(bad, vec![5, 6]);
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
        let batch = decode("deadletter", &[&consumed]).unwrap().batch;
        assert_eq!(
            batch
                .column_by_name("reason")
                .unwrap()
                .as_string_view()
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
                .as_string_view()
                .value(0),
            "tc-1"
        );
    }
}
