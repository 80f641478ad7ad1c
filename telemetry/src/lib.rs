//! The shared data model of Polis.
//!
//! Everything that more than one tier must agree on lives here and nowhere else: the device kinds,
//! the MQTT topic scheme (`city/{district}/{kind}/{device_id}`), the FIWARE payloads devices send,
//! the canonical snake_case records the gateway writes to the log, the reasons a message is
//! dead-lettered, the metric and alarm records analytics emits, the presence events of devices, the log topic names and the Arrow schemas of
//! the SQL tables. This crate does no I/O and depends on no other Polis crate.

pub mod alert;
pub mod deadletter;
pub mod fiware;
pub mod kind;
pub mod metric;
pub mod presence;
pub mod reading;
pub mod schema;
pub mod topics;
pub mod validate;

pub use alert::{AlertRecord, AlertState, Severity};
pub use deadletter::{DeadLetter, RejectReason, Rejection};
pub use kind::DeviceKind;
pub use metric::MetricRecord;
pub use presence::{PresenceEvent, PresenceRecord};
pub use reading::{EnergyReading, Reading, TrafficReading, TransportReading};
pub use topics::DeviceTopic;
pub use validate::{Limits, Validator};
