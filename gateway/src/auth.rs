//! Device authentication: the decision on every MQTT CONNECT.
//!
//! rumqttd hands each CONNECT's client id, user name and password to
//! [`Authenticator::authenticate`]. A device is admitted when client id = user name = the id of a
//! registered device and the password is that device's secret; every refusal is counted in
//! [`GatewayStats`] by [`Refusal`] cause and logged as one structured line (never with the
//! password). A CONNECT that carries neither user name nor password is refused by rumqttd itself
//! before it asks, so such a refusal is logged by rumqttd ("Error while handling MQTT connect
//! packet … InvalidAuth") and not counted here; one with a password but no user name is counted
//! as [`Refusal::Anonymous`].
//!
//! Argon2 verification is CPU work: it runs on tokio's blocking pool, at most one per core at a
//! time, so the listener's single thread keeps accepting while devices are verified and the
//! memory hashing takes stays bounded.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::GatewayConfig;
use crate::devices::{DeviceRegistry, LiveDevices, RegistryError, secret};
use crate::stats::GatewayStats;

/// Longest client id or user name written to the log (they come from the network).
const MAX_LOGGED_LEN: usize = 64;

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No user name (a password alone).
    Anonymous,
    /// The client id is not the user name.
    ClientIdMismatch,
    /// The user name is no registered device.
    UnknownDevice,
    /// The password is not the device's secret.
    WrongSecret,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Anonymous => "anonymous",
            Refusal::ClientIdMismatch => "client_id_mismatch",
            Refusal::UnknownDevice => "unknown_device",
            Refusal::WrongSecret => "wrong_secret",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) struct Authenticator {
    devices: LiveDevices,
    stats: Arc<GatewayStats>,
    verifications: Arc<Semaphore>,
}

impl Authenticator {
    /// The authenticator `config` asks for: none when `allow_anonymous` turns authentication
    /// off, otherwise one reading `devices`.
    pub fn for_config(
        config: &GatewayConfig,
        devices: DeviceRegistry,
        stats: Arc<GatewayStats>,
    ) -> Result<Option<Authenticator>, RegistryError> {
        if config.allow_anonymous {
            tracing::warn!(
                "gateway.allow_anonymous = true: device authentication is off, every MQTT CONNECT is admitted"
            );
            return Ok(None);
        }
        let path = devices.path().to_path_buf();
        let live = LiveDevices::open(devices)?;
        if live.is_empty() {
            tracing::warn!(path = %path.display(), "no device is registered yet: every MQTT CONNECT is refused until one is added with `polis devices add`");
        }
        Ok(Some(Authenticator::new(live, stats)))
    }

    pub fn new(devices: LiveDevices, stats: Arc<GatewayStats>) -> Authenticator {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Authenticator {
            devices,
            stats,
            verifications: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Whether to admit this CONNECT; counts and logs a refusal.
    pub async fn authenticate(
        self: Arc<Self>,
        client_id: String,
        username: String,
        password: String,
    ) -> bool {
        let Ok(_permit) = self.verifications.clone().acquire_owned().await else {
            return false;
        };
        let this = self.clone();
        let decided = tokio::task::spawn_blocking(move || {
            let decision = this.decide(&client_id, &username, &password);
            this.record(&client_id, &username, decision)
        });
        decided.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "device authentication failed; the connection is refused");
            false
        })
    }

    /// The decision alone: `Ok` with nothing to report, or why not.
    fn decide(&self, client_id: &str, username: &str, password: &str) -> Result<(), Refusal> {
        if username.is_empty() {
            return Err(Refusal::Anonymous);
        }
        if client_id != username {
            return Err(Refusal::ClientIdMismatch);
        }
        let device = self.devices.get(username).ok_or(Refusal::UnknownDevice)?;
        if secret::verify(password, &device.secret_hash) {
            Ok(())
        } else {
            Err(Refusal::WrongSecret)
        }
    }

    fn record(&self, client_id: &str, username: &str, decision: Result<(), Refusal>) -> bool {
        match decision {
            Ok(()) => {
                self.stats.record_authenticated();
                tracing::debug!(device = username, "device authenticated");
                true
            }
            Err(cause) => {
                self.stats.record_refused(cause);
                tracing::warn!(
                    cause = cause.as_str(),
                    client_id = ?shorten(client_id),
                    username = ?shorten(username),
                    "MQTT connection refused"
                );
                false
            }
        }
    }
}

/// At most [`MAX_LOGGED_LEN`] characters of a name that came from the network.
fn shorten(name: &str) -> &str {
    name.char_indices()
        .nth(MAX_LOGGED_LEN)
        .map_or(name, |(end, _)| &name[..end])
}

#[cfg(test)]
mod tests {
    use polis_telemetry::DeviceKind;

    use super::*;
    use crate::devices::{DeviceRegistry, NewDevice};

    const SECRET: &str = "secret-of-tc-harbour-1";

    fn authenticator(dir: &std::path::Path) -> Authenticator {
        let registry = DeviceRegistry::in_data_dir(dir);
        registry
            .add(NewDevice {
                id: "tc-harbour-1".into(),
                kind: DeviceKind::Traffic,
                district: "harbour".into(),
                secret: SECRET.into(),
            })
            .unwrap();
        Authenticator::new(LiveDevices::open(registry).unwrap(), Arc::default())
    }

    #[test]
    fn admits_a_registered_device_logging_in_as_itself_only() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path());
        let id = "tc-harbour-1";
        assert_eq!(auth.decide(id, id, SECRET), Ok(()));
        for (client_id, username, password, cause) in [
            (id, "", SECRET, Refusal::Anonymous),
            ("", "", SECRET, Refusal::Anonymous),
            ("someone-else", id, SECRET, Refusal::ClientIdMismatch),
            (
                "tc-harbour-2",
                "tc-harbour-2",
                SECRET,
                Refusal::UnknownDevice,
            ),
            (id, id, "secret-of-tc-harbour-2", Refusal::WrongSecret),
            (id, id, "", Refusal::WrongSecret),
        ] {
            assert_eq!(
                auth.decide(client_id, username, password),
                Err(cause),
                "{client_id}/{username}"
            );
        }
    }

    #[tokio::test]
    async fn counts_each_decision_by_cause() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(authenticator(dir.path()));
        let id = "tc-harbour-1".to_string();
        assert!(
            auth.clone()
                .authenticate(id.clone(), id.clone(), SECRET.into())
                .await
        );
        assert!(
            !auth
                .clone()
                .authenticate(id.clone(), id.clone(), "wrong-secret-guess".into())
                .await
        );
        assert!(
            !auth
                .clone()
                .authenticate("x".into(), "y".into(), SECRET.into())
                .await
        );
        assert_eq!(auth.stats.authenticated(), 1);
        assert_eq!(auth.stats.refused(Refusal::WrongSecret), 1);
        assert_eq!(auth.stats.refused(Refusal::ClientIdMismatch), 1);
        assert_eq!(auth.stats.refused(Refusal::UnknownDevice), 0);
    }

    #[test]
    fn long_names_are_shortened_for_the_log() {
        assert_eq!(shorten("tc-1"), "tc-1");
        assert_eq!(shorten(&"é".repeat(100)).chars().count(), MAX_LOGGED_LEN);
    }
}
