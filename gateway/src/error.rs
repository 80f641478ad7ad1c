//! Gateway errors.

use std::net::SocketAddr;

use crate::devices::RegistryError;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    #[error("cannot listen for MQTT on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the MQTT listener on {0} did not start accepting connections")]
    NotListening(SocketAddr),
    #[error("the embedded MQTT server refused the gateway's local link: {0}")]
    Link(String),
    #[error("cannot start the MQTT-over-TLS listener: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot read the device registry: {0}")]
    Devices(#[from] RegistryError),
    #[error("the bridge's MQTT connection task stopped before shutdown; restart the gateway")]
    BridgeStopped,
    #[error("cannot start a gateway thread: {0}")]
    Thread(std::io::Error),
}
