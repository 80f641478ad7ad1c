//! MQTT message → log record: a canonical reading on `telemetry.{kind}`, or a dead letter
//! (refused by validation, or a duplicate by its `seq`, see [`crate::sequence`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use polis_broker::Record;
use polis_telemetry::validate::Refused;
use polis_telemetry::{DeadLetter, Reading, RejectReason, Rejection, Validator, topics};

use crate::sequence::{SequenceTracker, Verdict};

/// Where one message goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub topic: &'static str,
    pub record: Record,
    /// `None` when accepted.
    pub rejected: Option<RejectReason>,
}

/// Validates one message received at `now` and builds the record that stores it.
pub fn route(
    validator: &Validator,
    mqtt_topic: &str,
    payload: &Bytes,
    client_id: Option<&str>,
    now: DateTime<Utc>,
) -> Routed {
    match validator.validate(mqtt_topic, payload, now) {
        Ok(reading) => accepted(&reading),
        Err(Refused { topic, rejection }) => dead_letter(
            mqtt_topic,
            payload,
            client_id,
            topic.map(|t| t.device_id),
            rejection,
            now,
        ),
    }
}

/// [`route`], then checks the reading's `seq` against `tracker`: a duplicate is dead-lettered
/// as `duplicate`. Also yields the gap (sequence numbers skipped) the message revealed and
/// whether it was a restart.
pub fn route_tracked(
    validator: &Validator,
    tracker: &mut SequenceTracker,
    mqtt_topic: &str,
    payload: &Bytes,
    client_id: Option<&str>,
    now: DateTime<Utc>,
) -> (Routed, Verdict) {
    let reading = match validator.validate(mqtt_topic, payload, now) {
        Ok(reading) => reading,
        Err(Refused { topic, rejection }) => {
            let routed = dead_letter(
                mqtt_topic,
                payload,
                client_id,
                topic.map(|t| t.device_id),
                rejection,
                now,
            );
            return (routed, Verdict::New { gap: 0 });
        }
    };
    let seq = reading.sequence().map(|s| s as u64);
    let verdict = tracker.observe(reading.device_id(), seq, now);
    let routed = match (verdict, seq) {
        (Verdict::Duplicate { highest }, Some(seq)) => dead_letter(
            mqtt_topic,
            payload,
            client_id,
            Some(reading.device_id().to_string()),
            Rejection::new(
                RejectReason::Duplicate,
                format!(
                    "`seq` = {seq} was already received from this device (highest so far {highest}); \
                     send each message once with the next number, or restart numbering at 0"
                ),
            ),
            now,
        ),
        _ => accepted(&reading),
    };
    (routed, verdict)
}

fn accepted(reading: &Reading) -> Routed {
    Routed {
        topic: reading.kind().topic(),
        record: Record::new(
            Some(reading.device_id().to_string()),
            reading.to_json(),
            reading.observed_at().timestamp_millis(),
        ),
        rejected: None,
    }
}

fn dead_letter(
    mqtt_topic: &str,
    payload: &Bytes,
    client_id: Option<&str>,
    device_id: Option<String>,
    rejection: Rejection,
    now: DateTime<Utc>,
) -> Routed {
    let reason = rejection.reason;
    let letter = DeadLetter {
        mqtt_topic: mqtt_topic.to_string(),
        client_id: client_id.map(str::to_string),
        device_id,
        rejection,
        received_at: now,
        payload: payload.to_vec(),
    };
    let mut record = Record::new(
        letter.device_id.clone(),
        payload.clone(),
        now.timestamp_millis(),
    );
    record.headers = letter
        .headers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), Bytes::from(v)))
        .collect();
    Routed {
        topic: topics::DEADLETTER,
        record,
        rejected: Some(reason),
    }
}

/// Records grouped by destination topic, in arrival order within each topic.
pub fn group_by_topic(routed: Vec<Routed>) -> BTreeMap<&'static str, Vec<Record>> {
    let mut by_topic: BTreeMap<&'static str, Vec<Record>> = BTreeMap::new();
    for r in routed {
        by_topic.entry(r.topic).or_default().push(r.record);
    }
    by_topic
}

#[cfg(test)]
mod tests {
    use super::*;
    use polis_telemetry::deadletter::{HEADER_DETAIL, HEADER_MQTT_TOPIC, HEADER_REASON};

    fn now() -> DateTime<Utc> {
        "2026-11-25T16:00:00Z".parse().unwrap()
    }

    #[test]
    fn accepted_readings_are_keyed_by_device_and_stamped_with_event_time() {
        let payload = Bytes::from_static(br#"{"dateObserved":"2026-11-25T15:59:00Z","intensity":3,"occupancy":0.1,"averageVehicleSpeed":50}"#);
        let routed = route(
            &Validator::default(),
            "city/centre/traffic/tc-9",
            &payload,
            None,
            now(),
        );
        assert_eq!(routed.topic, topics::TRAFFIC);
        assert_eq!(routed.rejected, None);
        assert_eq!(routed.record.key.as_deref(), Some(&b"tc-9"[..]));
        assert_eq!(
            routed.record.timestamp_ms,
            "2026-11-25T15:59:00Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
                .timestamp_millis()
        );
        let value: serde_json::Value = serde_json::from_slice(&routed.record.value).unwrap();
        assert_eq!(value["vehicles"], 3);
    }

    #[test]
    fn dead_letters_keep_the_original_bytes_and_say_why() {
        let payload = Bytes::from_static(b"\xff\x00 not json");
        let routed = route(
            &Validator::default(),
            "city/centre/traffic/tc-9",
            &payload,
            None,
            now(),
        );
        assert_eq!(routed.topic, topics::DEADLETTER);
        assert_eq!(routed.rejected, Some(RejectReason::MalformedJson));
        assert_eq!(routed.record.value, payload);
        assert_eq!(routed.record.key.as_deref(), Some(&b"tc-9"[..]));
        assert_eq!(
            routed.record.header(HEADER_REASON).unwrap(),
            &Bytes::from_static(b"malformed_json")
        );
        assert_eq!(
            routed.record.header(HEADER_MQTT_TOPIC).unwrap(),
            &Bytes::from_static(b"city/centre/traffic/tc-9")
        );
        assert!(!routed.record.header(HEADER_DETAIL).unwrap().is_empty());
    }
}
