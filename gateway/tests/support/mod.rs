//! Harness for the bridge-mode tests: a real Mosquitto 2.0 process per test (password file,
//! per-device ACL, persistence, all in a temporary folder, on a free port), device clients,
//! the gateway's embedded log, and waiting for conditions with a deadline.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use polis_broker::{
    BrokerConfig, EmbeddedLog, FetchRequest, FetchedPartition, Log, LogClient, LogError, Record,
};
use polis_gateway::{BridgeConfig, DeviceRegistry, Gateway, GatewayConfig, GatewayStats};
use polis_telemetry::fiware::{AcMeasurement, GeoPoint, PhaseValues, TrafficFlowObserved, Vehicle};
use polis_telemetry::reading::format_time;
use polis_telemetry::topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// How long any one wait may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(60);
pub const GATEWAY_USER: &str = "polis-gateway";
pub const GATEWAY_PASSWORD: &str = "gateway-password-0123456789";
const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
const START_ATTEMPTS: usize = 5;

/// The secret of device `id` in these tests.
pub fn secret_of(id: &str) -> String {
    format!("secret-of-{id}")
}

/// A Mosquitto broker that devices and the gateway log in to; killed when dropped.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto with the gateway's user and one user per device (password
    /// [`secret_of`]); each device may publish only to `city/+/+/{its id}`, the gateway may
    /// read `city/#`.
    pub fn start(devices: &[&str]) -> Mosquitto {
        let mut dir = tempfile::tempdir().unwrap();
        let passwords = dir.path().join("passwords");
        add_user(&passwords, GATEWAY_USER, GATEWAY_PASSWORD, true);
        for device in devices {
            add_user(&passwords, device, &secret_of(device), false);
        }
        let acl = dir.path().join("acl");
        std::fs::write(
            &acl,
            format!("pattern write city/+/+/%u\n\nuser {GATEWAY_USER}\ntopic read city/#\n"),
        )
        .unwrap();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let config = write_config(dir.path(), port, &passwords, &acl);
            let child = spawn(&config);
            let mut mosquitto = Mosquitto { child, port, dir };
            if mosquitto.wait_until_listening() {
                return mosquitto;
            }
            last_log = mosquitto.log();
            dir = mosquitto.stop();
        }
        panic!("mosquitto did not start in {START_ATTEMPTS} attempts; its last log:\n{last_log}");
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// What Mosquitto logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Kills Mosquitto (SIGKILL: what it had not saved is gone) and starts it again on the
    /// same port with the same configuration.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.dir.path().join("mosquitto.conf"));
        assert!(
            self.wait_until_listening(),
            "mosquitto did not start again on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    /// True once the port accepts connections; false if Mosquitto exited (say, the port was
    /// taken meanwhile) or did not listen within the limit.
    fn wait_until_listening(&mut self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the process and hands back its folder.
    fn stop(mut self) -> TempDir {
        self.kill();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(config: &Path) -> Child {
    Command::new(MOSQUITTO)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed (Debian package mosquitto)")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn add_user(file: &Path, user: &str, password: &str, create: bool) {
    let mut command = Command::new(MOSQUITTO_PASSWD);
    command.arg("-b");
    if create {
        command.arg("-c");
    }
    let output = command
        .arg(file)
        .arg(user)
        .arg(password)
        .output()
        .expect("mosquitto_passwd is installed (Debian package mosquitto)");
    assert!(
        output.status.success(),
        "mosquitto_passwd: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The configuration README.md recommends, on `port` and in `dir`.
fn write_config(dir: &Path, port: u16, passwords: &Path, acl: &Path) -> PathBuf {
    let path = dir.join("mosquitto.conf");
    let text = format!(
        "user root\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous false\n\
         password_file {passwords}\n\
         acl_file {acl}\n\
         persistence true\n\
         persistence_location {dir}/\n\
         max_inflight_messages 1000\n\
         max_queued_messages 100000\n\
         log_dest file {dir}/mosquitto.log\n\
         log_type all\n",
        passwords = passwords.display(),
        acl = acl.display(),
        dir = dir.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An embedded log with every telemetry topic (4 partitions each), and its folder.
pub fn open_log() -> (Arc<Log>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
    for topic in topics::TELEMETRY_TOPICS {
        log.create_topic(topic, 4).unwrap();
    }
    (log, dir)
}

/// Every record of `topic`, partition by partition.
pub fn records(log: &Log, topic: &str) -> Vec<Record> {
    let mut all = Vec::new();
    for partition in 0..log.partition_count(topic).unwrap() {
        let mut offset = 0;
        while offset < log.high_watermark(topic, partition).unwrap() {
            let (read, _) = log.read(topic, partition, offset, 1 << 20).unwrap();
            offset = read.last().unwrap().offset + 1;
            all.extend(read.into_iter().map(|stored| stored.record));
        }
    }
    all
}

/// Records in every telemetry topic.
pub fn stored_count(log: &Log) -> usize {
    topics::TELEMETRY_TOPICS
        .iter()
        .map(|topic| records(log, topic).len())
        .sum()
}

/// The embedded log, except that every append fails until the gateway has counted one failed
/// batch (set `stats` once the gateway is started).
pub struct FailingUntilCounted {
    pub inner: EmbeddedLog,
    pub stats: OnceLock<Arc<GatewayStats>>,
}

impl LogClient for FailingUntilCounted {
    fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> BoxFuture<'static, Result<Vec<(i32, i64)>, LogError>> {
        let counted = self.stats.get().is_some_and(|s| s.append_failures() > 0);
        if counted {
            self.inner.produce(topic, records)
        } else {
            Box::pin(async { Err(LogError::Closed) })
        }
    }

    fn partition_count(&self, topic: &str) -> Result<i32, LogError> {
        self.inner.partition_count(topic)
    }

    fn fetch(
        &self,
        requests: Vec<FetchRequest>,
        max_bytes_per_partition: usize,
        max_wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<FetchedPartition>, LogError>> {
        self.inner
            .fetch(requests, max_bytes_per_partition, max_wait)
    }
}

/// A running bridge-mode gateway with its own shutdown token.
pub struct RunningGateway {
    pub gateway: Gateway,
    token: CancellationToken,
}

impl RunningGateway {
    /// Starts a gateway bridged to `mosquitto` as `client_id`, appending to `log`, and waits
    /// until its subscription is confirmed.
    pub async fn start(mosquitto: &Mosquitto, client_id: &str, log: &Arc<Log>) -> RunningGateway {
        Self::start_with(mosquitto, client_id, Arc::new(EmbeddedLog(log.clone()))).await
    }

    /// [`RunningGateway::start`] with any log client.
    pub async fn start_with(
        mosquitto: &Mosquitto,
        client_id: &str,
        client: Arc<dyn LogClient>,
    ) -> RunningGateway {
        let mut bridge = BridgeConfig::new(mosquitto.url());
        bridge.client_id = client_id.to_string();
        bridge.username = Some(GATEWAY_USER.to_string());
        bridge.password = Some(GATEWAY_PASSWORD.to_string());
        let config = GatewayConfig {
            bridge: Some(bridge),
            ..GatewayConfig::default()
        };
        let registry_dir = tempfile::tempdir().unwrap();
        let token = CancellationToken::new();
        let gateway = Gateway::start(
            config,
            DeviceRegistry::in_data_dir(registry_dir.path()),
            client,
            token.clone(),
        )
        .unwrap();
        let stats = gateway.stats();
        eventually("the gateway's subscription", || {
            (stats.broker_sessions() == 1).then_some(())
        })
        .await;
        RunningGateway { gateway, token }
    }

    /// Shuts the gateway down and waits until it has stored and acknowledged what it held.
    pub async fn stop(self) {
        self.token.cancel();
        let gateway = self.gateway;
        tokio::time::timeout(LIMIT, tokio::task::spawn_blocking(move || gateway.join()))
            .await
            .expect("the gateway stops within the limit")
            .unwrap();
    }
}

/// A device logged in to Mosquitto as itself; counts the PUBACKs it gets.
pub struct Device {
    pub id: String,
    client: AsyncClient,
    /// Polls the device's connection until its DISCONNECT is out; panics if it fails first.
    connection: tokio::task::JoinHandle<()>,
    acked: Arc<AtomicU64>,
    sent: u64,
}

impl Device {
    pub async fn connect(mosquitto: &Mosquitto, id: &str) -> Device {
        let mut options = MqttOptions::new(id, "127.0.0.1", mosquitto.port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_credentials(id, secret_of(id));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let acked = Arc::new(AtomicU64::new(0));
        let counter = acked.clone();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let mut connected_tx = Some(connected_tx);
        let connection = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            tx.send(()).ok();
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => panic!("device connection failed: {e}"),
                }
            }
        });
        tokio::time::timeout(LIMIT, connected)
            .await
            .expect("the device connects within the limit")
            .unwrap();
        Device {
            id: id.to_string(),
            client,
            connection,
            acked,
            sent: 0,
        }
    }

    /// The topic the device owns.
    pub fn own_topic(&self, kind: &str) -> String {
        format!("city/harbour/{kind}/{}", self.id)
    }

    /// Publishes at QoS 1 without waiting for the PUBACK.
    pub async fn send(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.sent += 1;
    }

    /// Waits until Mosquitto has acknowledged everything sent so far.
    pub async fn wait_for_acks(&self) {
        let (acked, sent) = (self.acked.clone(), self.sent);
        eventually("the device's PUBACKs", || {
            (acked.load(Ordering::SeqCst) == sent).then_some(())
        })
        .await;
    }

    /// Sends DISCONNECT and waits until it is out.
    pub async fn disconnect(self) {
        self.client.disconnect().await.unwrap();
        tokio::time::timeout(LIMIT, self.connection)
            .await
            .expect("the device disconnects within the limit")
            .expect("the device's connection did not fail");
    }
}

/// A valid traffic reading whose vehicle count is `sequence`: ids survive translation.
pub fn traffic(sequence: i64) -> Vec<u8> {
    serde_json::to_vec(&TrafficFlowObserved {
        date_observed: format_time(Utc::now()),
        intensity: sequence,
        occupancy: 0.25,
        average_vehicle_speed: 40.0,
        lane_id: Some(1),
        congested: None,
    })
    .unwrap()
}

pub fn energy(kilowatts: f64) -> Vec<u8> {
    serde_json::to_vec(&AcMeasurement {
        date_observed: format_time(Utc::now()),
        total_active_power: kilowatts,
        total_active_energy_import: None,
        phase_voltage: PhaseValues::Single(230.0),
        current: None,
        power_factor: None,
    })
    .unwrap()
}

pub fn transport(delay: f64) -> Vec<u8> {
    serde_json::to_vec(&Vehicle {
        observation_date_time: format_time(Utc::now()),
        location: GeoPoint::new(-3.7, 40.41),
        speed: 24.0,
        bearing: None,
        service_status: None,
        route_id: "L1".to_string(),
        delay,
        occupancy: None,
    })
    .unwrap()
}

/// The vehicle count of a stored traffic record (the sequence number [`traffic`] put there).
pub fn sequence(record: &Record) -> i64 {
    let value: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    value["vehicles"].as_i64().unwrap()
}

/// How often each sequence number is stored in `telemetry.traffic`.
pub fn traffic_sequences(log: &Log) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for record in records(log, topics::TRAFFIC) {
        *seen.entry(sequence(&record)).or_default() += 1;
    }
    seen
}

/// Polls `check` until it returns `Some`, failing the test after [`LIMIT`].
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
