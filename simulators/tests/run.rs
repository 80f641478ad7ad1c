//! `run` against a tiny in-test MQTT 3.1.1 server: real sockets, real packets, no external
//! broker. The server answers CONNECT, PUBLISH (QoS 0 and 1), PINGREQ and DISCONNECT and reports
//! what it saw.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use polis_simulators::{SimulatorConfig, SimulatorError, fleet, run};
use polis_telemetry::{DeviceTopic, Validator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Long enough for any step of these tests on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug)]
enum Seen {
    Connect {
        client_id: String,
        keep_alive_s: u16,
        username: Option<String>,
        password: Option<String>,
    },
    Publish {
        client_id: String,
        topic: String,
        qos: u8,
        payload: Vec<u8>,
    },
    Disconnect {
        client_id: String,
    },
}

struct Server {
    port: u16,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Server {
    /// Starts the server on an ephemeral port. With `drop_first`, it closes each client's first
    /// connection right after accepting it.
    async fn start(drop_first: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, seen) = mpsc::unbounded_channel();
        let dropped = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, dropped) = (tx.clone(), Arc::clone(&dropped));
                tokio::spawn(async move {
                    let _closed = serve(stream, tx, drop_first.then_some(dropped)).await;
                });
            }
        });
        Server { port, seen }
    }

    async fn next(&mut self) -> Seen {
        timeout(PATIENCE, self.seen.recv())
            .await
            .expect("the server saw nothing in time")
            .unwrap()
    }

    fn config(&self) -> SimulatorConfig {
        SimulatorConfig {
            mqtt_port: self.port,
            traffic_counters: 2,
            energy_meters: 2,
            vehicles: 2,
            interval: Duration::from_millis(200),
            connect_per_second: 100,
            ..SimulatorConfig::default()
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    seen: mpsc::UnboundedSender<Seen>,
    drop_first: Option<Arc<Mutex<HashSet<String>>>>,
) -> io::Result<()> {
    let (header, body) = read_packet(&mut stream).await?;
    assert_eq!(header >> 4, 1, "the first packet must be CONNECT");
    let connect = parse_connect(&body);
    let Seen::Connect { client_id, .. } = &connect else {
        unreachable!()
    };
    let client_id = client_id.clone();
    seen.send(connect).unwrap();
    stream.write_all(&[0x20, 0x02, 0x00, 0x00]).await?;
    if drop_first.is_some_and(|dropped| dropped.lock().unwrap().insert(client_id.clone())) {
        return Ok(());
    }
    loop {
        let (header, body) = read_packet(&mut stream).await?;
        match header >> 4 {
            3 => {
                let qos = (header >> 1) & 0b11;
                let mut at = 0;
                let topic = string(&body, &mut at);
                if qos == 1 {
                    stream
                        .write_all(&[0x40, 0x02, body[at], body[at + 1]])
                        .await?;
                    at += 2;
                }
                let payload = body[at..].to_vec();
                seen.send(Seen::Publish {
                    client_id: client_id.clone(),
                    topic,
                    qos,
                    payload,
                })
                .unwrap();
            }
            12 => stream.write_all(&[0xD0, 0x00]).await?,
            14 => {
                seen.send(Seen::Disconnect { client_id }).unwrap();
                return Ok(());
            }
            other => panic!("unexpected MQTT packet type {other}"),
        }
    }
}

async fn read_packet(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let header = stream.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let byte = stream.read_u8().await?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok((header, body))
}

fn string(body: &[u8], at: &mut usize) -> String {
    let len = usize::from(u16::from_be_bytes([body[*at], body[*at + 1]]));
    let s = String::from_utf8(body[*at + 2..*at + 2 + len].to_vec()).unwrap();
    *at += 2 + len;
    s
}

fn parse_connect(body: &[u8]) -> Seen {
    let mut at = 0;
    assert_eq!(string(body, &mut at), "MQTT");
    assert_eq!(body[at], 4, "protocol level 4 is MQTT 3.1.1");
    let flags = body[at + 1];
    let keep_alive_s = u16::from_be_bytes([body[at + 2], body[at + 3]]);
    at += 4;
    let client_id = string(body, &mut at);
    assert_eq!(flags & 0x04, 0, "the simulators set no last will");
    let username = (flags & 0x80 != 0).then(|| string(body, &mut at));
    let password = (flags & 0x40 != 0).then(|| string(body, &mut at));
    Seen::Connect {
        client_id,
        keep_alive_s,
        username,
        password,
    }
}

#[tokio::test]
async fn every_device_connects_as_itself_publishes_valid_readings_and_disconnects() {
    let mut server = Server::start(false).await;
    let config = SimulatorConfig {
        username: Some("simulator".into()),
        password: Some("secret".into()),
        ..server.config()
    };
    let ids: HashSet<String> = fleet(&config).iter().map(|d| d.id().to_string()).collect();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(config, shutdown.clone()));

    let validator = Validator::default();
    let mut connected = HashSet::new();
    let mut published: HashMap<String, usize> = HashMap::new();
    while published.len() < ids.len() || published.values().any(|&n| n < 3) {
        match server.next().await {
            Seen::Connect {
                client_id,
                keep_alive_s,
                username,
                password,
            } => {
                assert_eq!(keep_alive_s, 30);
                assert_eq!(
                    (username.as_deref(), password.as_deref()),
                    (Some("simulator"), Some("secret"))
                );
                assert!(connected.insert(client_id), "one connection per device");
            }
            Seen::Publish {
                client_id,
                topic,
                qos,
                payload,
            } => {
                assert_eq!(qos, 1);
                assert_eq!(DeviceTopic::parse(&topic).unwrap().device_id, client_id);
                if let Err(refused) = validator.validate(&topic, &payload, chrono::Utc::now()) {
                    panic!("{topic} refused: {}", refused.rejection);
                }
                *published.entry(client_id).or_default() += 1;
            }
            Seen::Disconnect { client_id } => panic!("{client_id} disconnected early"),
        }
    }
    assert_eq!(connected, ids);

    shutdown.cancel();
    let stats = timeout(PATIENCE, running).await.unwrap().unwrap().unwrap();
    assert_eq!(stats.connected, 6);
    assert_eq!(stats.errors, 0);
    let mut acknowledged: usize = published.values().sum();
    let mut disconnected = HashSet::new();
    while disconnected.len() < ids.len() {
        match server.next().await {
            Seen::Disconnect { client_id } => assert!(disconnected.insert(client_id)),
            Seen::Publish { .. } => acknowledged += 1,
            Seen::Connect { client_id, .. } => panic!("{client_id} connected again"),
        }
    }
    assert_eq!(disconnected, ids);
    assert_eq!(
        stats.published, acknowledged as u64,
        "every reading the server acknowledged is counted"
    );
}

#[tokio::test]
async fn a_device_whose_connection_drops_reconnects_and_publishes_again() {
    let mut server = Server::start(true).await;
    let config = SimulatorConfig {
        traffic_counters: 1,
        energy_meters: 0,
        vehicles: 0,
        qos: 0,
        ..server.config()
    };
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(config, shutdown.clone()));

    let mut connects = 0;
    loop {
        match server.next().await {
            Seen::Connect {
                client_id,
                username,
                ..
            } => {
                assert_eq!((client_id.as_str(), username), ("tc-old-town-1", None));
                connects += 1;
            }
            Seen::Publish { qos, .. } if connects == 2 => {
                assert_eq!(qos, 0);
                break;
            }
            other => panic!("unexpected before the reconnection: {other:?}"),
        }
    }

    shutdown.cancel();
    let stats = timeout(PATIENCE, running).await.unwrap().unwrap().unwrap();
    assert_eq!(stats.connected, 1);
    assert!(stats.errors >= 1 && stats.published >= 1, "{stats:?}");
}

#[tokio::test]
async fn devices_without_a_broker_keep_retrying_until_shutdown() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = SimulatorConfig {
        mqtt_port: port,
        traffic_counters: 3,
        energy_meters: 0,
        vehicles: 0,
        ..SimulatorConfig::default()
    };
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(config, shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    shutdown.cancel();
    let stats = timeout(PATIENCE, running).await.unwrap().unwrap().unwrap();
    assert_eq!((stats.connected, stats.published), (0, 0));
    assert!(
        stats.errors >= 3,
        "each device failed at least once: {stats:?}"
    );
}

#[tokio::test]
async fn refuses_an_invalid_configuration_before_connecting() {
    let config = SimulatorConfig {
        interval: Duration::ZERO,
        qos: 2,
        ..SimulatorConfig::default()
    };
    let Err(SimulatorError::InvalidConfig(problems)) = run(config, CancellationToken::new()).await
    else {
        panic!("an invalid configuration must be refused");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("simulate.interval = 0s is too short"));
    assert!(problems[1].starts_with("simulate.qos = 2"));
}
