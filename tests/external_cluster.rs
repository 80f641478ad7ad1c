//! The platform on an external Kafka cluster (`broker.external`), played by a standalone Polis
//! broker over TCP: the platform creates its topics there and opens no log nor Kafka listener of
//! its own; readings published over MQTT become SQL rows in exact numbers, a malformed message
//! is dead-lettered with its headers, and every record is in the cluster's log where murmur2 puts
//! its key.

#[path = "../broker/tests/common/mod.rs"]
mod cluster;
mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use common::{LIMIT, count, counts_by, eventually, publish, sql, test_config};
use polis::Platform;
use polis_broker::partitioner::partition_for_key;
use polis_broker::{KafkaClientConfig, Log, StoredRecord};
use polis_telemetry::deadletter::HEADER_REASON;
use polis_telemetry::fiware::{AcMeasurement, PhaseValues, TrafficFlowObserved};
use polis_telemetry::reading::format_time;
use polis_telemetry::topics;

/// Every record of `topic` in the cluster's log, by partition.
fn stored(log: &Log, topic: &str) -> Vec<Vec<StoredRecord>> {
    (0..log.partition_count(topic).unwrap())
        .map(|p| log.read(topic, p, 0, 1 << 20).unwrap().0)
        .collect()
}

/// Each record's key and timestamp, checking it sits in the partition murmur2 picks for its key.
fn placed(partitions: &[Vec<StoredRecord>]) -> BTreeSet<(String, i64)> {
    let mut keys = BTreeSet::new();
    for (partition, records) in partitions.iter().enumerate() {
        for stored in records {
            let key = stored.record.key.as_ref().expect("a keyed record");
            let count = partitions.len() as i32;
            assert_eq!(partition as i32, partition_for_key(key, count), "{key:?}");
            let key = String::from_utf8(key.to_vec()).unwrap();
            assert!(
                keys.insert((key, stored.record.timestamp_ms)),
                "stored twice"
            );
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_platform_runs_on_an_external_cluster() {
    let cluster_dir = tempfile::tempdir().unwrap();
    let cluster = cluster::start(cluster_dir.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.gateway.allow_anonymous = true;
    config.broker.external = Some(KafkaClientConfig::new(cluster.addr.to_string()));
    // The cluster holds this port: serving the embedded log on it would fail the start.
    config.broker.kafka_listen = cluster.addr;
    let platform = Platform::start(config).await.unwrap();
    let http = platform.http_addr();
    assert_eq!(platform.kafka_addr(), cluster.addr.to_string());
    assert!(
        !dir.path().join("log").exists(),
        "the embedded log was opened"
    );
    for topic in topics::TELEMETRY_TOPICS {
        assert_eq!(cluster.log.partition_count(topic).unwrap(), 4, "{topic}");
    }
    for topic in topics::DERIVED_TOPICS {
        assert_eq!(cluster.log.partition_count(topic).unwrap(), 3, "{topic}");
    }

    let base = Utc::now().timestamp() - 60;
    let at = |s: i64| DateTime::from_timestamp(base + s, 0).unwrap();
    let mut messages = Vec::new();
    let mut traffic = BTreeSet::new();
    let mut energy = BTreeSet::new();
    for device in 0..6 {
        let (district, id) = (["harbour", "old-town"][device % 2], format!("tc-{device}"));
        for reading in 0..2 {
            let observed = at(device as i64 * 2 + reading);
            let payload = TrafficFlowObserved {
                date_observed: format_time(observed),
                intensity: 5 + reading,
                occupancy: 0.2,
                average_vehicle_speed: 40.0,
                lane_id: None,
                congested: None,
            };
            let topic = format!("city/{district}/traffic/{id}");
            messages.push((topic, serde_json::to_vec(&payload).unwrap()));
            traffic.insert((id.clone(), observed.timestamp_millis()));
        }
    }
    for meter in 0..3 {
        let id = format!("em-{meter}");
        for reading in 0..2 {
            let observed = at(20 + meter * 2 + reading);
            let payload = AcMeasurement {
                date_observed: format_time(observed),
                total_active_power: 12.5,
                total_active_energy_import: None,
                phase_voltage: PhaseValues::Single(230.0),
                current: None,
                power_factor: None,
            };
            let topic = format!("city/industrial/energy/{id}");
            messages.push((topic, serde_json::to_vec(&payload).unwrap()));
            energy.insert((id.clone(), observed.timestamp_millis()));
        }
    }
    let malformed = b"{\"intensity\": 3,".to_vec();
    let malformed_topic = "city/harbour/traffic/tc-bad";
    messages.push((malformed_topic.to_string(), malformed.clone()));
    publish(
        platform.mqtt_addr().unwrap(),
        "external-publisher",
        &messages,
    )
    .await;

    for (table, expected) in [
        ("traffic", traffic.len() as i64),
        ("energy", energy.len() as i64),
        ("deadletter", 1),
    ] {
        eventually(
            &format!("{expected} rows in {table}"),
            LIMIT,
            || async move {
                (count(http, &format!("SELECT count(*) AS n FROM {table}")).await == expected)
                    .then_some(())
            },
        )
        .await;
    }
    let per_device = counts_by(
        http,
        "device_id",
        "SELECT device_id, count(*) AS n FROM traffic GROUP BY device_id",
    )
    .await;
    let every_device_twice: BTreeMap<String, i64> =
        (0..6).map(|d| (format!("tc-{d}"), 2)).collect();
    assert_eq!(per_device, every_device_twice);
    let dead = sql(
        http,
        "SELECT reason, mqtt_topic, payload_text FROM deadletter",
    )
    .await;
    assert_eq!(dead[0]["reason"], "malformed_json");
    assert_eq!(dead[0]["mqtt_topic"], malformed_topic);
    assert_eq!(
        dead[0]["payload_text"].as_str().unwrap().as_bytes(),
        &malformed[..]
    );

    assert_eq!(placed(&stored(&cluster.log, topics::TRAFFIC)), traffic);
    assert_eq!(placed(&stored(&cluster.log, topics::ENERGY)), energy);
    let letters: Vec<StoredRecord> = stored(&cluster.log, topics::DEADLETTER)
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(&letters[0].record.value[..], &malformed[..]);
    assert_eq!(
        letters[0].record.header(HEADER_REASON).map(|v| &v[..]),
        Some(&b"malformed_json"[..])
    );

    platform.shutdown().await;
    cluster.stop().await;
}
