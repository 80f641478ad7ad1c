//! The JSON messages viewers receive over the WebSocket, each serialized once for all viewers.
//!
//! ```text
//! {"type": "snapshot",
//!  "metrics": [MetricWindows, …],       the last windows of every (metric, entity)
//!  "charts": {"traffic": "<svg…", "energy": "<svg…", "transport": "<svg…"},
//!  "map": {"congestion": "<svg…", "load": "<svg…"},   the district map, one SVG per layer
//!  "alarms": [AlertRecord, …],          every active alarm, most severe first, newest first
//!  "devices": [Device, …],              every device with a presence event, by device id
//!  "active_alarms": 3, "devices_online": 42,
//!  "latest_window_end": "2024-05-01T12:00:10Z"}   (null before the first record)
//! {"type": "update",
//!  "metrics": [MetricWindows, …],       the records this batch stored
//!  "charts": {…}, "map": {…},           only when metrics changed (absent otherwise)
//!  "alarms": [AlertRecord, …],          alarms that changed, cleared ones included: the page
//!                                       replaces its record of each `alert_id`, and drops the
//!                                       alarm when its `state` is `cleared`
//!  "devices": [Device, …],              devices whose presence changed
//!  "active_alarms": 3, "devices_online": 42, "latest_window_end": "…"}
//! ```
//!
//! A [`MetricWindows`] is the metric records that share all but their entity and value:
//! `{"metric", "entity_kind", "window_start", "window_end", "revision", "emitted_at",
//! "values": [["district-01", 12.5], …]}`, in the order the records came. An update carries a few
//! of them where it would carry hundreds of records, each repeating every field name.
//!
//! A `Device` is its latest `PresenceRecord` (`device_id`, `event`, `at`, `gateway`, `detail`)
//! plus `"online": true|false`; `at` is when the device was last seen connecting or leaving.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use polis_telemetry::{AlertRecord, MetricRecord, PresenceRecord};
use serde::{Deserialize, Serialize};

use crate::charts::Charts;
use crate::map::DistrictMap;
use crate::state::{Change, City};

/// Windows per series a snapshot carries: enough for the page to tell the latest complete window
/// from one still arriving, to show a trend against the window before, and to show the latest
/// values. Older windows are in the charts.
pub(crate) const SNAPSHOT_WINDOWS_PER_SERIES: usize = 6;

/// Metric records of one metric, window, revision and emission, as viewers receive them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricWindows {
    pub metric: String,
    pub entity_kind: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub revision: u32,
    pub emitted_at: DateTime<Utc>,
    /// `(entity, value)` of each record, in the order the records came.
    pub values: Vec<(String, f64)>,
}

impl MetricWindows {
    /// `records` grouped, each group where its first record was.
    pub fn group<'a>(records: impl IntoIterator<Item = &'a MetricRecord>) -> Vec<MetricWindows> {
        let mut groups: Vec<MetricWindows> = Vec::new();
        let mut index = HashMap::new();
        for r in records {
            let key = (
                r.metric.as_str(),
                r.entity_kind.as_str(),
                r.window_start,
                r.window_end,
                r.revision,
                r.emitted_at,
            );
            let at = *index.entry(key).or_insert_with(|| {
                groups.push(MetricWindows {
                    metric: r.metric.clone(),
                    entity_kind: r.entity_kind.clone(),
                    window_start: r.window_start,
                    window_end: r.window_end,
                    revision: r.revision,
                    emitted_at: r.emitted_at,
                    values: Vec::new(),
                });
                groups.len() - 1
            });
            groups[at].values.push((r.entity.clone(), r.value));
        }
        groups
    }

    /// The records again, one per value.
    pub fn records(&self) -> impl Iterator<Item = MetricRecord> + '_ {
        self.values.iter().map(|(entity, value)| MetricRecord {
            metric: self.metric.clone(),
            entity_kind: self.entity_kind.clone(),
            entity: entity.clone(),
            window_start: self.window_start,
            window_end: self.window_end,
            value: *value,
            revision: self.revision,
            emitted_at: self.emitted_at,
        })
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ViewerMessage<'a> {
    Snapshot {
        metrics: Vec<MetricWindows>,
        charts: ChartMarkup<'a>,
        map: MapMarkup<'a>,
        alarms: Vec<&'a AlertRecord>,
        devices: Vec<Device<'a>>,
        active_alarms: usize,
        devices_online: usize,
        latest_window_end: Option<DateTime<Utc>>,
    },
    Update {
        metrics: Vec<MetricWindows>,
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
        metrics: MetricWindows::group(city.history.recent(SNAPSHOT_WINDOWS_PER_SERIES)),
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
        metrics: MetricWindows::group(&change.metrics),
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
        let metrics: Vec<MetricWindows> =
            serde_json::from_value(message["metrics"].clone()).unwrap();
        assert_eq!(metrics, MetricWindows::group([&record]));
        assert_eq!(metrics[0].values, vec![("port".to_string(), 1234.5)]);
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
    fn records_are_grouped_by_everything_but_entity_and_value_and_come_back_unchanged() {
        let later = MetricRecord {
            window_start: start() + TimeDelta::seconds(10),
            window_end: start() + TimeDelta::seconds(20),
            ..load("port", 3.0)
        };
        let revised = MetricRecord {
            revision: 2,
            ..load("port", 4.0)
        };
        let records = [
            load("port", 1.0),
            later.clone(),
            load("centre", 2.0),
            revised.clone(),
        ];
        let groups = MetricWindows::group(&records);
        let values: Vec<Vec<(String, f64)>> = groups.iter().map(|g| g.values.clone()).collect();
        assert_eq!(
            values,
            vec![
                vec![("port".to_string(), 1.0), ("centre".to_string(), 2.0)],
                vec![("port".to_string(), 3.0)],
                vec![("port".to_string(), 4.0)],
            ]
        );
        let back: Vec<MetricRecord> = groups.iter().flat_map(MetricWindows::records).collect();
        assert_eq!(
            back,
            vec![load("port", 1.0), load("centre", 2.0), later, revised]
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
