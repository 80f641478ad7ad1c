//! One registered device, and the checks on the names it is known by.

use std::fmt;

use chrono::{DateTime, Utc};
use polis_telemetry::DeviceKind;
use polis_telemetry::topics::MAX_SEGMENT_LEN;
use serde::{Deserialize, Serialize};

use super::error::RegistryError;

/// A device as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Its MQTT client id and user name, and the last level of its topics.
    pub id: String,
    pub kind: DeviceKind,
    /// The district it belongs to (the second level of its topics).
    pub district: String,
    /// The Argon2id hash of its secret as a PHC string (it records its own parameters and salt).
    pub secret_hash: String,
    pub added_at: DateTime<Utc>,
}

/// A device to register, with its secret in clear: the registry stores only its hash.
#[derive(Clone)]
pub struct NewDevice {
    pub id: String,
    pub kind: DeviceKind,
    pub district: String,
    pub secret: String,
}

impl fmt::Debug for NewDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDevice")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("district", &self.district)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Checks that `value` can stand in an MQTT topic level: 1-64 characters of `A-Z a-z 0-9 - _`,
/// the same rule the gateway applies to device topics.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), RegistryError> {
    let valid = !value.is_empty()
        && value.len() <= MAX_SEGMENT_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(RegistryError::InvalidName {
            what,
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_topic_charset() {
        for ok in ["tc-42", "EM_7", "a", &"x".repeat(64)] {
            check_name("device id", ok).unwrap();
        }
        for bad in ["", "tc 42", "tc/42", "tc+", "#", "é", &"x".repeat(65)] {
            let err = check_name("device id", bad).unwrap_err().to_string();
            assert!(err.contains("1-64 characters"), "{err}");
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let device = NewDevice {
            id: "tc-1".into(),
            kind: DeviceKind::Traffic,
            district: "harbour".into(),
            secret: "correct-horse-battery".into(),
        };
        let shown = format!("{device:?}");
        assert!(!shown.contains("correct-horse"), "{shown}");
    }
}
