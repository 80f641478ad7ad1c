//! The JSON messages viewers receive over the WebSocket, each serialized once for all viewers.
//!
//! ```text
//! {"type": "snapshot",
//!  "metrics": [MetricRecord, …],        the last windows of every (metric, entity)
//!  "charts": {"traffic": "<svg…", "energy": "<svg…", "transport": "<svg…"},
//!  "map": {"congestion": "<svg…", "load": "<svg…"},   the district map, one SVG per layer
//!  "alarms": [AlertRecord, …],          every active alarm, most severe first, newest first
//!  "devices": [Device, …],              every device with a presence event, by device id
//!  "active_alarms": 3, "devices_online": 42,
//!  "latest_window_end": "2024-05-01T12:00:10Z"}   (null before the first record)
//! {"type": "update",
//!  "metrics": [MetricRecord, …],        the records this batch stored
//!  "charts": {…}, "map": {…},           only when metrics changed (absent otherwise)
//!  "alarms": [AlertRecord, …],          alarms that changed, cleared ones included: the page
//!                                       replaces its record of each `alert_id`, and drops the
//!                                       alarm when its `state` is `cleared`
//!  "devices": [Device, …],              devices whose presence changed
//!  "active_alarms": 3, "devices_online": 42, "latest_window_end": "…"}
//! ```
//!
//! A `Device` is its latest `PresenceRecord` (`device_id`, `event`, `at`, `gateway`, `detail`)
//! plus `"online": true|false`; `at` is when the device was last seen connecting or leaving.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use polis_telemetry::{AlertRecord, MetricRecord, PresenceRecord};
use serde::Serialize;

use crate::charts::Charts;
use crate::map::DistrictMap;
use crate::state::{Change, City};

/// Windows per series a snapshot carries: enough for the page to tell the latest complete window
/// from one still arriving, to show a trend against the window before, and to show the latest
/// values. Older windows are in the charts.
pub(crate) const SNAPSHOT_WINDOWS_PER_SERIES: usize = 6;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ViewerMessage<'a> {
    Snapshot {
        metrics: Vec<&'a MetricRecord>,
        charts: ChartMarkup<'a>,
        map: MapMarkup<'a>,
        alarms: Vec<&'a AlertRecord>,
        devices: Vec<Device<'a>>,
        active_alarms: usize,
        devices_online: usize,
        latest_window_end: Option<DateTime<Utc>>,
    },
    Update {
        metrics: &'a [MetricRecord],
        #[serde(skip_serializing_if = "Option::is_none")]
        charts: Option<ChartMarkup<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        map: Option<MapMarkup<'a>>,
        alarms: &'a [AlertRecord],
        devices: Vec<Device<'a>>,
        active_alarms: usize,
        devices_online: usize,
        latest_window_end: Option<DateTime<Utc>>,
    },
}

#[derive(Serialize)]
struct ChartMarkup<'a> {
    traffic: &'a str,
    energy: &'a str,
    transport: &'a str,
}

impl<'a> From<&'a Charts> for ChartMarkup<'a> {
    fn from(charts: &'a Charts) -> Self {
        ChartMarkup {
            traffic: &charts.traffic,
            energy: &charts.energy,
            transport: &charts.transport,
        }
    }
}

#[derive(Serialize)]
struct MapMarkup<'a> {
    congestion: &'a str,
    load: &'a str,
}

impl<'a> From<&'a DistrictMap> for MapMarkup<'a> {
    fn from(map: &'a DistrictMap) -> Self {
        MapMarkup {
            congestion: &map.congestion,
            load: &map.load,
        }
    }
}

#[derive(Serialize)]
struct Device<'a> {
    #[serde(flatten)]
    presence: &'a PresenceRecord,
    online: bool,
}

impl<'a> From<&'a PresenceRecord> for Device<'a> {
    fn from(presence: &'a PresenceRecord) -> Self {
        Device {
            presence,
            online: presence.is_online(),
        }
    }
}

/// The whole state: the recent windows of every series, the charts, the map, the active alarms,
/// every device's presence and the newest window end.
pub(crate) fn snapshot(city: &City) -> Result<Arc<str>, serde_json::Error> {
    encode(&ViewerMessage::Snapshot {
        metrics: city.history.recent(SNAPSHOT_WINDOWS_PER_SERIES),
        charts: (&city.charts).into(),
        map: (&city.map).into(),
        alarms: city.alarms.active(),
        devices: city.presence.devices().map(Device::from).collect(),
        active_alarms: city.alarms.len(),
        devices_online: city.presence.online(),
        latest_window_end: city.history.newest_window_end(),
    })
}

/// A change: the records just applied, with the charts and map redrawn when metrics changed.
pub(crate) fn update(change: &Change, city: &City) -> Result<Arc<str>, serde_json::Error> {
    let redrawn = !change.metrics.is_empty();
    encode(&ViewerMessage::Update {
        metrics: &change.metrics,
        charts: redrawn.then(|| (&city.charts).into()),
        map: redrawn.then(|| (&city.map).into()),
        alarms: &change.alarms,
        devices: change.devices.iter().map(Device::from).collect(),
        active_alarms: city.alarms.len(),
        devices_online: city.presence.online(),
        latest_window_end: city.history.newest_window_end(),
    })
}

fn encode(message: &ViewerMessage<'_>) -> Result<Arc<str>, serde_json::Error> {
    serde_json::to_string(message).map(Arc::from)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;
    use polis_telemetry::{AlertState, PresenceEvent, Severity};
    use serde_json::{Value, json};

    use super::*;
    use crate::state::MetricHistory;

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn city() -> City {
        City::new(MetricHistory::new(Duration::from_secs(60)))
    }

    fn load(entity: &str, value: f64) -> MetricRecord {
        MetricRecord {
            metric: "energy.load_kw".to_string(),
            entity_kind: "district".to_string(),
            entity: entity.to_string(),
            window_start: start(),
            window_end: start() + TimeDelta::seconds(10),
            value,
            revision: 1,
            emitted_at: start() + TimeDelta::seconds(11),
        }
    }

    fn alarm(entity: &str, state: AlertState) -> AlertRecord {
        AlertRecord {
            alert_id: AlertRecord::id("silence", entity),
            rule: "silence".to_string(),
            severity: Severity::Critical,
            state,
            entity_kind: "device".to_string(),
            entity: entity.to_string(),
            metric: "device.silence_s".to_string(),
            value: 120.0,
            threshold: 60.0,
            message: format!("{entity} silent for 120 s"),
            raised_at: start(),
            changed_at: start(),
            acknowledged_by: None,
        }
    }

    fn presence(device: &str, event: PresenceEvent) -> PresenceRecord {
        PresenceRecord {
            device_id: device.to_string(),
            event,
            at: start(),
            gateway: "gw-1".to_string(),
            detail: None,
        }
    }

    fn decode(message: Arc<str>) -> Value {
        serde_json::from_str(&message).unwrap()
    }

    #[test]
    fn an_empty_snapshot_has_every_field_the_page_reads() {
        let message = decode(snapshot(&city()).unwrap());
        assert_eq!(message["type"], "snapshot");
        assert_eq!(message["metrics"], json!([]));
        assert_eq!(message["alarms"], json!([]));
        assert_eq!(message["devices"], json!([]));
        assert_eq!(message["active_alarms"], 0);
        assert_eq!(message["devices_online"], 0);
        assert_eq!(message["latest_window_end"], Value::Null);
        for domain in ["traffic", "energy", "transport"] {
            assert!(
                message["charts"][domain]
                    .as_str()
                    .unwrap()
                    .starts_with("<svg")
            );
        }
        for layer in ["congestion", "load"] {
            assert!(message["map"][layer].as_str().unwrap().starts_with("<svg"));
        }
    }

    #[test]
    fn the_snapshot_holds_the_active_alarms_and_every_device() {
        let mut city = city();
        city.alarms.apply(alarm("em-1", AlertState::Raised));
        city.alarms.apply(alarm("em-2", AlertState::Raised));
        city.alarms.apply(alarm("em-2", AlertState::Cleared));
        city.presence
            .apply(presence("tc-1", PresenceEvent::Connected));
        city.presence
            .apply(presence("em-1", PresenceEvent::ConnectionLost));
        let message = decode(snapshot(&city).unwrap());
        let alarms: Vec<AlertRecord> = serde_json::from_value(message["alarms"].clone()).unwrap();
        assert_eq!(alarms, vec![alarm("em-1", AlertState::Raised)]);
        assert_eq!(message["active_alarms"], 1);
        assert_eq!(
            message["devices"],
            json!([
                {"device_id": "em-1", "event": "connection_lost", "at": "2023-11-14T22:13:20.000Z",
                 "gateway": "gw-1", "detail": null, "online": false},
                {"device_id": "tc-1", "event": "connected", "at": "2023-11-14T22:13:20.000Z",
                 "gateway": "gw-1", "detail": null, "online": true},
            ])
        );
        assert_eq!(message["devices_online"], 1);
    }

    #[test]
    fn a_metrics_update_carries_its_records_and_the_redrawn_charts_and_map() {
        let mut city = city();
        let record = load("port", 1234.5);
        city.history.apply(record.clone());
        city.redraw();
        let change = Change {
            metrics: vec![record.clone()],
            ..Change::default()
        };
        let message = decode(update(&change, &city).unwrap());
        assert_eq!(message["type"], "update");
        let metrics: Vec<MetricRecord> =
            serde_json::from_value(message["metrics"].clone()).unwrap();
        assert_eq!(metrics, vec![record.clone()]);
        assert_eq!(
            message["latest_window_end"],
            serde_json::to_value(record.window_end).unwrap()
        );
        assert!(
            message["charts"]["energy"]
                .as_str()
                .unwrap()
                .contains("port")
        );
        assert!(
            message["map"]["load"]
                .as_str()
                .unwrap()
                .contains(r#"data-district="port""#)
        );
    }

    #[test]
    fn an_alarm_or_presence_update_carries_the_changes_without_redrawing() {
        let mut city = city();
        let cleared = alarm("em-1", AlertState::Cleared);
        let online = presence("tc-1", PresenceEvent::Connected);
        city.presence.apply(online.clone());
        let change = Change {
            alarms: vec![cleared.clone()],
            devices: vec![online],
            ..Change::default()
        };
        let message = decode(update(&change, &city).unwrap());
        assert!(message.get("charts").is_none() && message.get("map").is_none());
        let alarms: Vec<AlertRecord> = serde_json::from_value(message["alarms"].clone()).unwrap();
        assert_eq!(alarms, vec![cleared]);
        assert_eq!(message["devices"][0]["device_id"], "tc-1");
        assert_eq!(message["devices"][0]["online"], true);
        assert_eq!(message["devices_online"], 1);
        assert_eq!(message["active_alarms"], 0);
    }
}
