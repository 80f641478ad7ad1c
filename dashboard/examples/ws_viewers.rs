//! WebSocket fan-out benchmark: many viewers at one metric update per second, with the latency
//! from metric emission to receipt by each viewer, next to a bare tokio-tungstenite broadcast of
//! messages of the same size to the same number of clients in the same run (the floor this
//! machine sets for pushing those bytes through loopback WebSockets).
//!
//!     cargo run --release -p polis-dashboard --example ws_viewers -- [VIEWERS] [SECONDS]
//!
//! Each second a batch of metric windows (every traffic and energy metric of 12 districts, every
//! transport metric of 20 routes, the city KPIs) is produced to the `metrics` topic of an embedded
//! log with `emitted_at` = now, as the analytics tier does; the dashboard follows the topic,
//! redraws its charts and map once and pushes the update to every viewer. A viewer takes the time
//! a message is complete, then reads the `emitted_at` of its first metric. The dashboard starts
//! with 30 minutes of history, so every update redraws full charts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use polis_broker::{BrokerConfig, EmbeddedLog, Log, LogClient, Record};
use polis_dashboard::{DashboardConfig, serve};
use polis_telemetry::MetricRecord;
use polis_telemetry::topics::METRICS;
use std::sync::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const WINDOW: TimeDelta = TimeDelta::seconds(10);
const HISTORY_WINDOWS: i64 = 180;
const WARMUP: Duration = Duration::from_secs(3);

fn runtime(threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

fn record(metric: &str, entity: &str, start: DateTime<Utc>, value: f64) -> MetricRecord {
    MetricRecord {
        metric: metric.to_string(),
        entity_kind: match metric.split('.').next() {
            Some("transport") => "route",
            Some("city") => "city",
            _ => "district",
        }
        .to_string(),
        entity: entity.to_string(),
        window_start: start,
        window_end: start + WINDOW,
        value,
        revision: 0,
        // Stamped when produced.
        emitted_at: start + WINDOW,
    }
}

/// One window of every shipped metric, as the analytics tier emits it.
fn window(index: i64, origin: DateTime<Utc>) -> Vec<MetricRecord> {
    let start = origin + WINDOW * index as i32;
    let wave = |phase: i64| ((index + phase) % 30) as f64 / 30.0;
    let mut records = Vec::new();
    for d in 0..12 {
        let district = format!("district-{d:02}");
        records.push(record(
            "traffic.vehicles",
            &district,
            start,
            100.0 + 80.0 * wave(d),
        ));
        records.push(record(
            "traffic.average_speed_kmh",
            &district,
            start,
            30.0 + 20.0 * wave(d),
        ));
        records.push(record("traffic.occupancy_ratio", &district, start, wave(d)));
        records.push(record(
            "traffic.congestion_index",
            &district,
            start,
            wave(d + 7),
        ));
        records.push(record(
            "energy.load_kw",
            &district,
            start,
            2_000.0 + 900.0 * wave(d),
        ));
        records.push(record(
            "energy.min_voltage_v",
            &district,
            start,
            220.0 + 5.0 * wave(d),
        ));
        records.push(record(
            "energy.average_voltage_v",
            &district,
            start,
            229.0 + wave(d),
        ));
        records.push(record("energy.meters_reporting", &district, start, 40.0));
    }
    for r in 0..20 {
        let route = format!("route-{r:02}");
        records.push(record("transport.active_vehicles", &route, start, 10.0));
        records.push(record(
            "transport.average_delay_s",
            &route,
            start,
            60.0 * wave(r),
        ));
        records.push(record(
            "transport.max_delay_s",
            &route,
            start,
            240.0 * wave(r),
        ));
        records.push(record(
            "transport.occupancy_ratio",
            &route,
            start,
            wave(r + 3),
        ));
    }
    for (metric, value) in [
        ("city.vehicles_per_min", 7_000.0),
        ("city.average_speed_kmh", 38.0),
        ("city.load_mw", 30.0),
        ("city.buses_on_time_ratio", 0.9),
        ("city.devices_reporting", 1_000.0),
    ] {
        records.push(record(metric, "city", start, value));
    }
    records
}

/// Produces `records` as one emission, all stamped `emitted_at` = now, as the analytics tier does.
async fn produce(log: &Arc<dyn LogClient>, mut records: Vec<MetricRecord>) {
    let emitted_at = Utc::now();
    for r in &mut records {
        r.emitted_at = emitted_at;
    }
    let encoded = records
        .iter()
        .map(|r| {
            Record::new(
                Some(r.key()),
                serde_json::to_vec(r).unwrap(),
                r.emitted_at.timestamp_millis(),
            )
        })
        .collect();
    log.produce(METRICS, encoded).await.unwrap();
}

/// The `emitted_at` of the first metric in a viewer message, if it has one.
fn emitted_at(text: &str) -> Option<DateTime<Utc>> {
    const KEY: &str = "\"emitted_at\":\"";
    let start = text.find(KEY)? + KEY.len();
    let end = start + text[start..].find('"')?;
    text[start..end].parse().ok()
}

/// What the viewers measured.
#[derive(Default)]
struct Receipts {
    latencies_us: Mutex<Vec<u64>>,
    messages: AtomicU64,
    snapshots: AtomicU64,
    bytes: AtomicU64,
    closed: AtomicU64,
    /// The first update received, for the size of the bare broadcast's messages.
    sample: Mutex<Option<String>>,
}

impl Receipts {
    fn summary(&self, viewers: usize, seconds: u64) -> String {
        let mut latencies = self.latencies_us.lock().unwrap().clone();
        latencies.sort_unstable();
        let at = |q: f64| -> f64 {
            if latencies.is_empty() {
                return f64::NAN;
            }
            let index = ((latencies.len() - 1) as f64 * q).round() as usize;
            latencies[index] as f64 / 1000.0
        };
        let messages = self.messages.load(Ordering::Relaxed).max(1);
        format!(
            "{viewers} viewers, {seconds} s: {} receipts (expected ~{}), latency ms p50 {:.1} p90 {:.1} \
             p99 {:.1} max {:.1}; {} lag snapshots, {} closed, {:.0} KiB per message, {:.1} MB/s to viewers",
            latencies.len(),
            viewers as u64 * seconds,
            at(0.50),
            at(0.90),
            at(0.99),
            at(1.0),
            self.snapshots.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed) as f64 / messages as f64 / 1024.0,
            self.bytes.load(Ordering::Relaxed) as f64 / seconds as f64 / 1e6,
        )
    }
}

/// Connects `count` viewers to `url` and records every message they receive while `measuring`.
async fn viewers(
    url: String,
    count: usize,
    receipts: Arc<Receipts>,
    measuring: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let receipts = receipts.clone();
        let measuring = measuring.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => break,
                    message = socket.next() => message,
                };
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        receipts.closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                let received = Utc::now();
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let snapshot = text.starts_with("{\"type\":\"snapshot\"");
                if snapshot {
                    receipts.snapshots.fetch_add(1, Ordering::Relaxed);
                }
                receipts.messages.fetch_add(1, Ordering::Relaxed);
                receipts
                    .bytes
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
                if let (false, Some(emitted)) = (snapshot, emitted_at(&text)) {
                    let micros = (received - emitted).num_microseconds().unwrap_or(0).max(0);
                    receipts.latencies_us.lock().unwrap().push(micros as u64);
                    receipts
                        .sample
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| text.to_string());
                }
            }
            socket.close(None).await.ok();
        }));
    }
    tasks
}

/// Runs the viewers against `url` for `seconds` while `tick` sends one update per second.
/// Runs the viewers, returning the first update they received.
fn measure<F>(
    name: &str,
    url: String,
    count: usize,
    seconds: u64,
    clients: &Runtime,
    server: &Runtime,
    mut tick: F,
) -> Option<String>
where
    F: FnMut(i64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
{
    let receipts = Arc::new(Receipts::default());
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = CancellationToken::new();
    let connected = Instant::now();
    let tasks = clients.block_on(viewers(
        url,
        count,
        receipts.clone(),
        measuring.clone(),
        stop.clone(),
    ));
    println!(
        "{name}: {count} viewers connected in {:.1} s",
        connected.elapsed().as_secs_f64()
    );
    server.block_on(async {
        let mut next = tokio::time::Instant::now();
        let warmup_ticks = WARMUP.as_secs() as i64;
        for tick_index in 0..warmup_ticks + seconds as i64 {
            if tick_index == warmup_ticks {
                measuring.store(true, Ordering::Relaxed);
            }
            tick(tick_index).await;
            next += Duration::from_secs(1);
            tokio::time::sleep_until(next).await;
        }
    });
    measuring.store(false, Ordering::Relaxed);
    stop.cancel();
    clients.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    println!("{name}: {}", receipts.summary(count, seconds));
    receipts.sample.lock().unwrap().take()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(1000, |a| a.parse().expect("VIEWERS"));
    let seconds: u64 = args.next().map_or(30, |a| a.parse().expect("SECONDS"));
    let server = runtime(2);
    let clients = runtime(2);

    let data = tempfile::tempdir_in(".").unwrap();
    let log = Log::open(data.path(), BrokerConfig::default()).unwrap();
    log.create_topic(METRICS, 1).unwrap();
    let log: Arc<dyn LogClient> = Arc::new(EmbeddedLog(log));
    // Windows start on multiples of their length, as the analytics tier's do.
    let now_ms = Utc::now().timestamp_millis();
    let aligned = DateTime::from_timestamp_millis(now_ms - now_ms % WINDOW.num_milliseconds())
        .expect("now is a valid time");
    let origin = aligned - WINDOW * HISTORY_WINDOWS as i32;
    server.block_on(async {
        for index in 0..HISTORY_WINDOWS {
            produce(&log, window(index, origin)).await;
        }
    });
    let listener = server.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = DashboardConfig {
        max_viewers: count + 1,
        ..DashboardConfig::default()
    };
    let dashboard = server.spawn(serve(
        listener,
        config,
        log.clone(),
        axum::Router::new(),
        shutdown.clone(),
    ));
    let update = measure(
        "dashboard",
        format!("ws://{address}/ws"),
        count,
        seconds,
        &clients,
        &server,
        |tick| {
            let log = log.clone();
            Box::pin(async move {
                produce(&log, window(HISTORY_WINDOWS + tick, origin)).await;
            })
        },
    )
    .expect("the viewers received updates");
    shutdown.cancel();
    server.block_on(dashboard).unwrap().unwrap();

    let (bare_url, broadcast) = server.block_on(bare_broadcast(count));
    println!(
        "bare broadcast of {:.0} KiB messages (the size of a dashboard update):",
        update.len() as f64 / 1024.0
    );
    measure("bare", bare_url, count, seconds, &clients, &server, |_| {
        let broadcast = broadcast.clone();
        let update = update.clone();
        Box::pin(async move {
            let stamp = format!("{{\"emitted_at\":\"{}\"}}", Utc::now().to_rfc3339());
            let padding = " ".repeat(update.len().saturating_sub(stamp.len()));
            let message: Arc<str> = format!("{stamp}{padding}").into();
            broadcast.send(message).ok();
        })
    });
}

/// A minimal tokio-tungstenite server that sends every message of its channel to every client.
async fn bare_broadcast(count: usize) -> (String, broadcast::Sender<Arc<str>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (sender, _) = broadcast::channel::<Arc<str>>(16);
    let subscribe = sender.clone();
    tokio::spawn(async move {
        for _ in 0..count {
            let (stream, _) = listener.accept().await.unwrap();
            let mut messages = subscribe.subscribe();
            tokio::spawn(async move {
                let mut socket = accept(stream).await;
                while let Ok(message) = messages.recv().await {
                    if socket
                        .send(Message::Text(message.to_string()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (url, sender)
}

async fn accept(stream: TcpStream) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    tokio_tungstenite::accept_async(stream).await.unwrap()
}
