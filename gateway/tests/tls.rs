//! MQTT over TLS in embedded mode, with Debian's `mosquitto_pub` as the device and certificates
//! made by `openssl`: a trusting client's messages are authenticated and stored, the plain
//! listener can be turned off, and clients that do not trust the certificate, speak plain MQTT
//! to the TLS port or give a wrong secret get nothing in.

#[allow(dead_code)]
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use polis_broker::{EmbeddedLog, Log};
use polis_gateway::devices::NewDevice;
use polis_gateway::{DeviceRegistry, Gateway, GatewayConfig, GatewayError, TlsConfig};
use polis_telemetry::{DeviceKind, topics};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use support::{eventually, free_port, open_log, records, secret_of, traffic};

const DEVICE: &str = "tc-harbour-1";
const TOPIC: &str = "city/harbour/traffic/tc-harbour-1";

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext"])
        .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (Debian package openssl)");
    assert!(made.status.success(), "{made:?}");
    (cert, key)
}

struct Running {
    gateway: Gateway,
    log: Arc<Log>,
    token: CancellationToken,
    tls_port: u16,
    plain_port: u16,
    _dirs: (TempDir, TempDir),
}

/// A gateway serving only MQTT over TLS with `cert` and `key`, and one registered device.
fn start_tls_only(cert: PathBuf, key: PathBuf) -> Result<Running, GatewayError> {
    let (log, log_dir) = open_log();
    log.create_topic(topics::DEVICES, 1).unwrap();
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = DeviceRegistry::in_data_dir(registry_dir.path());
    registry
        .add(NewDevice {
            id: DEVICE.into(),
            kind: DeviceKind::Traffic,
            district: "harbour".into(),
            secret: secret_of(DEVICE),
        })
        .unwrap();
    let plain_port = free_port();
    let config = GatewayConfig {
        mqtt_listen: format!("127.0.0.1:{plain_port}").parse().unwrap(),
        plain_mqtt: false,
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..TlsConfig::new(cert, key)
        }),
        ..GatewayConfig::default()
    };
    let token = CancellationToken::new();
    let gateway = Gateway::start(
        config,
        registry,
        Arc::new(EmbeddedLog(log.clone())),
        token.clone(),
    )?;
    Ok(Running {
        tls_port: gateway.tls_addr().expect("a TLS listener").port(),
        gateway,
        log,
        token,
        plain_port,
        _dirs: (log_dir, registry_dir),
    })
}

/// `mosquitto_pub` publishing `payload` once at QoS 1 as the test device, with `extra`
/// arguments (the CA file, or none); given 30 s to finish.
async fn mosquitto_pub(port: u16, password: &str, extra: Vec<String>, payload: Vec<u8>) -> Output {
    let mut command = Command::new("timeout");
    command
        .args(["30", "mosquitto_pub", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args([
            "-i", DEVICE, "-u", DEVICE, "-P", password, "-q", "1", "-t", TOPIC,
        ])
        .args(extra)
        .arg("-m")
        .arg(String::from_utf8(payload).unwrap());
    tokio::task::spawn_blocking(move || command.output().expect("mosquitto_pub runs"))
        .await
        .unwrap()
}

fn trusting(ca: &Path) -> Vec<String> {
    vec!["--cafile".into(), ca.display().to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_trusts_the_certificate_publishes_over_tls_with_plain_mqtt_off() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path(), "server");
    let running = start_tls_only(cert.clone(), key).unwrap();
    let published = mosquitto_pub(
        running.tls_port,
        &secret_of(DEVICE),
        trusting(&cert),
        traffic(17),
    )
    .await;
    assert!(published.status.success(), "{published:?}");

    let stored = eventually("the reading in telemetry.traffic", || {
        let stored = records(&running.log, topics::TRAFFIC);
        (!stored.is_empty()).then_some(stored)
    })
    .await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key.as_deref(), Some(DEVICE.as_bytes()));
    assert_eq!(support::sequence(&stored[0]), 17);
    let sessions = eventually("connected and disconnected presence records", || {
        let events = records(&running.log, topics::DEVICES);
        (events.len() == 2).then_some(events)
    })
    .await;
    let events: Vec<String> = sessions
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.value).unwrap()["event"].to_string()
        })
        .collect();
    assert_eq!(events, ["\"connected\"", "\"disconnected\""]);
    let stats = running.gateway.stats();
    assert_eq!(
        (stats.authenticated(), stats.tls_handshake_failures()),
        (1, 0)
    );
    // Nothing listens on the plain port: it is free to bind.
    assert_eq!(running.gateway.mqtt_addr(), None);
    TcpListener::bind(("127.0.0.1", running.plain_port))
        .expect("gateway.plain_mqtt = false leaves gateway.mqtt_listen unbound");
    running.token.cancel();
    running.gateway.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusting_plain_and_unauthenticated_clients_get_nothing_in() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path(), "server");
    let running = start_tls_only(cert.clone(), key).unwrap();
    let (stranger, _) = certificate(certs.path(), "stranger");

    let mut debug = trusting(&stranger);
    debug.push("-d".into());
    let untrusting = mosquitto_pub(running.tls_port, &secret_of(DEVICE), debug, traffic(1)).await;
    assert!(!untrusting.status.success(), "{untrusting:?}");
    let said = String::from_utf8_lossy(&untrusting.stdout);
    assert!(said.contains("certificate verify failed"), "{untrusting:?}");

    let plain = mosquitto_pub(running.tls_port, &secret_of(DEVICE), vec![], traffic(2)).await;
    assert!(!plain.status.success(), "{plain:?}");

    let stats = running.gateway.stats();
    eventually("two failed handshakes counted", || {
        (stats.tls_handshake_failures() == 2).then_some(())
    })
    .await;

    let wrong_secret = mosquitto_pub(
        running.tls_port,
        "not-the-secret",
        trusting(&cert),
        traffic(3),
    )
    .await;
    assert!(!wrong_secret.status.success(), "{wrong_secret:?}");
    assert_eq!(
        stats.refused(polis_gateway::Refusal::WrongSecret),
        1,
        "the CONNECT inside TLS is authenticated like a plain one"
    );

    assert_eq!(stats.received(), 0);
    assert_eq!(stats.authenticated(), 0);
    assert_eq!(records(&running.log, topics::DEVICES), []);
    running.token.cancel();
    running.gateway.join();
}

#[test]
fn a_missing_certificate_stops_start_up_with_the_file_named() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path(), "server");
    std::fs::remove_file(&cert).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let Err(error) = start_tls_only(cert, key) else {
        panic!("the gateway started without its certificate");
    };
    let message = error.to_string();
    assert!(
        message
            .starts_with("cannot start the MQTT-over-TLS listener: cannot read gateway.tls.cert ")
            && message.contains("server.crt"),
        "{message}"
    );
}
