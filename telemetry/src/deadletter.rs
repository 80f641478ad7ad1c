//! Why a message was refused, and the dead-letter record that keeps it.
//!
//! A dead letter is stored the way Kafka Connect stores one: the record value is the original
//! payload byte for byte, and the context travels in record headers named by the `HEADER_*`
//! constants. The key is the device id where the topic names one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Header with the MQTT topic the message was published to.
pub const HEADER_MQTT_TOPIC: &str = "mqtt_topic";
/// Header with the publishing MQTT client id, where the transport knows it.
pub const HEADER_CLIENT_ID: &str = "client_id";
/// Header with the machine-readable [`RejectReason`].
pub const HEADER_REASON: &str = "reason";
/// Header with the human-readable explanation of what was wrong and what would be right.
pub const HEADER_DETAIL: &str = "detail";
/// Header with the time the gateway received the message (RFC 3339).
pub const HEADER_RECEIVED_AT: &str = "received_at";
/// Header with where an undecodable log record was found, as `{topic}/{partition}/{offset}`.
pub const HEADER_SOURCE: &str = "source";

/// The machine-readable reason a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The payload is not a JSON object.
    MalformedJson,
    /// A required attribute is absent.
    MissingField,
    /// An attribute has the wrong JSON type.
    WrongType,
    /// A value is outside its physical range.
    OutOfRange,
    /// The observation time cannot be parsed.
    BadTimestamp,
    /// The observation time is further in the future than the allowed clock skew.
    TimestampInFuture,
    /// The observation time is older than the accepted age.
    TimestampTooOld,
    /// The payload exceeds the configured maximum size.
    PayloadTooLarge,
    /// The kind segment of the topic is not traffic, energy or transport.
    UnknownKind,
    /// The topic does not have the shape `city/{district}/{kind}/{device_id}`.
    BadTopic,
    /// A record on a telemetry topic, written there by a Kafka client rather than the gateway,
    /// is not a canonical reading of the topic's kind (found by analytics, not the gateway).
    UndecodableRecord,
    /// A reading that arrived after its event-time windows were final (past the update horizon),
    /// so no metric can count it any more (found by analytics, not the gateway).
    LateRecord,
    /// The device already sent a message with this sequence number (`seq`) recently: a
    /// redelivery or a replay (found by the gateway's per-device sequence tracking).
    Duplicate,
}

impl RejectReason {
    pub const ALL: [RejectReason; 13] = [
        RejectReason::MalformedJson,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::OutOfRange,
        RejectReason::BadTimestamp,
        RejectReason::TimestampInFuture,
        RejectReason::TimestampTooOld,
        RejectReason::PayloadTooLarge,
        RejectReason::UnknownKind,
        RejectReason::BadTopic,
        RejectReason::UndecodableRecord,
        RejectReason::LateRecord,
        RejectReason::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::TimestampInFuture => "timestamp_in_future",
            RejectReason::TimestampTooOld => "timestamp_too_old",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::UnknownKind => "unknown_kind",
            RejectReason::BadTopic => "bad_topic",
            RejectReason::UndecodableRecord => "undecodable_record",
            RejectReason::LateRecord => "late_record",
            RejectReason::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason code plus a sentence saying what was wrong and what would be right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// A refused message with everything needed to understand or replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub mqtt_topic: String,
    pub client_id: Option<String>,
    pub device_id: Option<String>,
    pub rejection: Rejection,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// The record headers that carry the context, in a stable order.
    pub fn headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut headers = vec![
            (HEADER_MQTT_TOPIC, self.mqtt_topic.clone().into_bytes()),
            (
                HEADER_REASON,
                self.rejection.reason.as_str().as_bytes().to_vec(),
            ),
            (HEADER_DETAIL, self.rejection.detail.clone().into_bytes()),
            (
                HEADER_RECEIVED_AT,
                crate::reading::format_time(self.received_at).into_bytes(),
            ),
        ];
        if let Some(client_id) = &self.client_id {
            headers.push((HEADER_CLIENT_ID, client_id.clone().into_bytes()));
        }
        headers
    }
}
