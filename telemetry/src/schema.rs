//! Arrow schemas of the SQL tables.
//!
//! `value_schema` is the shape of the JSON record values on a topic; `table_schema` adds the
//! columns every table has: the log `_partition` and `_offset` of the row.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Column with the log partition a row was read from.
pub const PARTITION_COLUMN: &str = "_partition";
/// Column with the log offset of the row.
pub const OFFSET_COLUMN: &str = "_offset";

/// The SQL tables and the topic each is read from.
pub const TABLES: [(&str, &str); 7] = [
    ("traffic", crate::topics::TRAFFIC),
    ("energy", crate::topics::ENERGY),
    ("transport", crate::topics::TRANSPORT),
    ("metrics", crate::topics::METRICS),
    ("alerts", crate::topics::ALERTS),
    ("devices", crate::topics::DEVICES),
    ("deadletter", crate::topics::DEADLETTER),
];

/// The event-time column of each table: what windows and time buckets are computed on.
pub fn event_time_column(table: &str) -> &'static str {
    match table {
        "metrics" => "window_start",
        "alerts" => "changed_at",
        "devices" => "at",
        "deadletter" => "received_at",
        _ => "observed_at",
    }
}

/// The type of every string column: views, which the Parquet reader fills without copying short
/// strings twice and which DataFusion groups and compares by their inline 16 bytes.
pub fn text() -> DataType {
    DataType::Utf8View
}

pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

/// Columns of a table's record values, or `None` for an unknown table.
pub fn value_schema(table: &str) -> Option<SchemaRef> {
    let ts = timestamp;
    let fields = match table {
        "traffic" => vec![
            field("device_id", text(), false),
            field("district", text(), false),
            field("observed_at", ts(), false),
            field("ingested_at", ts(), false),
            field("lane_id", DataType::Int64, true),
            field("vehicles", DataType::Int64, false),
            field("occupancy_ratio", DataType::Float64, false),
            field("average_speed_kmh", DataType::Float64, false),
            field("congested", DataType::Boolean, true),
            field("sequence", DataType::Int64, true),
        ],
        "energy" => vec![
            field("device_id", text(), false),
            field("district", text(), false),
            field("observed_at", ts(), false),
            field("ingested_at", ts(), false),
            field("active_power_kw", DataType::Float64, false),
            field("energy_import_kwh", DataType::Float64, true),
            field("voltage_v", DataType::Float64, false),
            field("current_a", DataType::Float64, true),
            field("power_factor", DataType::Float64, true),
            field("sequence", DataType::Int64, true),
        ],
        "transport" => vec![
            field("device_id", text(), false),
            field("district", text(), false),
            field("observed_at", ts(), false),
            field("ingested_at", ts(), false),
            field("route_id", text(), false),
            field("latitude_deg", DataType::Float64, false),
            field("longitude_deg", DataType::Float64, false),
            field("speed_kmh", DataType::Float64, false),
            field("bearing_deg", DataType::Float64, true),
            field("service_status", text(), true),
            field("delay_s", DataType::Float64, false),
            field("occupancy_ratio", DataType::Float64, true),
            field("sequence", DataType::Int64, true),
        ],
        "metrics" => vec![
            field("metric", text(), false),
            field("entity_kind", text(), false),
            field("entity", text(), false),
            field("window_start", ts(), false),
            field("window_end", ts(), false),
            field("value", DataType::Float64, false),
            field("revision", DataType::UInt32, false),
            field("emitted_at", ts(), false),
        ],
        "alerts" => vec![
            field("alert_id", text(), false),
            field("rule", text(), false),
            field("severity", text(), false),
            field("state", text(), false),
            field("entity_kind", text(), false),
            field("entity", text(), false),
            field("metric", text(), false),
            field("value", DataType::Float64, false),
            field("threshold", DataType::Float64, false),
            field("message", text(), false),
            field("raised_at", ts(), false),
            field("changed_at", ts(), false),
            field("acknowledged_by", text(), true),
        ],
        "devices" => vec![
            field("device_id", text(), false),
            field("event", text(), false),
            field("at", ts(), false),
            field("gateway", text(), false),
            field("detail", text(), true),
        ],
        "deadletter" => vec![
            field("device_id", text(), true),
            field("mqtt_topic", text(), false),
            field("client_id", text(), true),
            field("reason", text(), false),
            field("detail", text(), false),
            field("received_at", ts(), false),
            field("payload", DataType::Binary, false),
            field("payload_text", text(), true),
        ],
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

/// A table's full schema: the value columns then `_partition` and `_offset`.
pub fn table_schema(table: &str) -> Option<SchemaRef> {
    let values = value_schema(table)?;
    let mut fields: Vec<Field> = values.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(field(PARTITION_COLUMN, DataType::Int32, false));
    fields.push(field(OFFSET_COLUMN, DataType::Int64, false));
    Some(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_a_schema_with_system_columns_and_its_event_time() {
        for (table, _) in TABLES {
            let schema = table_schema(table).unwrap();
            assert!(schema.field_with_name(PARTITION_COLUMN).is_ok());
            assert!(schema.field_with_name(OFFSET_COLUMN).is_ok());
            assert_eq!(
                schema
                    .field_with_name(event_time_column(table))
                    .unwrap()
                    .data_type(),
                &timestamp()
            );
        }
        assert!(table_schema("nope").is_none());
    }

    #[test]
    fn alarm_and_presence_records_have_exactly_their_tables_columns() {
        use crate::{AlertRecord, AlertState, PresenceEvent, PresenceRecord, Severity};
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let alert = AlertRecord {
            alert_id: AlertRecord::id("low_voltage", "harbour"),
            rule: "low_voltage".into(),
            severity: Severity::Major,
            state: AlertState::Raised,
            entity_kind: "district".into(),
            entity: "harbour".into(),
            metric: "energy.min_voltage_v".into(),
            value: 201.5,
            threshold: 207.0,
            message: "minimum voltage 201.5 V below 207 V in harbour".into(),
            raised_at: at,
            changed_at: at,
            acknowledged_by: None,
        };
        let presence = PresenceRecord {
            device_id: "meter-1".into(),
            event: PresenceEvent::ConnectionLost,
            at,
            gateway: "127.0.0.1:1883".into(),
            detail: Some("keep-alive timeout".into()),
        };
        for (table, json) in [
            ("alerts", serde_json::to_value(&alert).unwrap()),
            ("devices", serde_json::to_value(&presence).unwrap()),
        ] {
            let keys: Vec<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut columns: Vec<String> = value_schema(table)
                .unwrap()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            columns.sort();
            assert_eq!(keys, columns, "{table}");
        }
        assert_eq!(serde_json::to_value(&alert).unwrap()["severity"], "major");
        assert_eq!(
            serde_json::to_value(&presence).unwrap()["event"],
            "connection_lost"
        );
    }
}
