//! The gateway's HTTP routes: Prometheus `GET /metrics` (text exposition format 0.0.4) and
//! `GET /api/devices/status[?after=ID][&limit=N]` (per-device sequence tracking as JSON, by
//! device id, [`DEFAULT_STATUS_PAGE`] devices unless `limit` says otherwise), merged into the
//! dashboard's server by the platform.
//!
//! Metrics, all prefixed `polis_gateway_`:
//! - `connections` (gauge, embedded mode: device connections open now),
//!   `connections_admitted_total`, `connections_refused_total{cause}`,
//!   `tls_handshake_failures_total`;
//! - `messages_received_total`, `messages_accepted_total`, `messages_rejected_total{reason}`
//!   (accepted + Σ rejected = received), `messages_append_failed_total`,
//!   `messages_overwritten_total`, `bytes_received_total`;
//! - `duplicates_total`, `sequence_gaps_total` (numbers skipped), `sequence_restarts_total`,
//!   `tracked_devices`;
//! - `ack_timeouts_total` (embedded mode: connections closed because a message was not stored
//!   within `gateway.ack_timeout`);
//! - `append_latency_seconds` (histogram: from the forwarder taking a message from the MQTT side
//!   to the end of its durable append), `durable_ack_latency_seconds` (histogram, embedded mode:
//!   from a QoS 1 PUBLISH reaching the gateway to its PUBACK, sent once the message is stored).

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use polis_telemetry::RejectReason;
use serde::Deserialize;

use crate::auth::Refusal;
use crate::histogram::HistogramSnapshot;
use crate::sequence::SequenceTracker;
use crate::stats::GatewayStats;

/// Devices per `/api/devices/status` response unless `?limit=` says otherwise.
pub const DEFAULT_STATUS_PAGE: usize = 1_000;
/// Most devices per `/api/devices/status` response; page on with `?after=` the last id.
pub const MAX_STATUS_PAGE: usize = 100_000;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const REFUSALS: [Refusal; 4] = [
    Refusal::Anonymous,
    Refusal::ClientIdMismatch,
    Refusal::UnknownDevice,
    Refusal::WrongSecret,
];

/// What the routes read: the gateway's counters and its sequence tracker.
#[derive(Clone)]
pub struct GatewayMonitor {
    pub(crate) stats: Arc<GatewayStats>,
    pub(crate) sequences: Arc<Mutex<SequenceTracker>>,
}

impl GatewayMonitor {
    /// Empty counters and a tracker of at most `max_tracked_devices` devices.
    pub fn new(max_tracked_devices: usize) -> GatewayMonitor {
        GatewayMonitor {
            stats: Arc::default(),
            sequences: Arc::new(Mutex::new(SequenceTracker::new(max_tracked_devices))),
        }
    }

    pub fn stats(&self) -> Arc<GatewayStats> {
        self.stats.clone()
    }

    /// `GET /metrics` and `GET /api/devices/status`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/api/devices/status", get(devices_status))
            .with_state(self.clone())
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let tracked = self.sequences.lock().expect("sequence tracker lock").len();
        render(&self.stats, tracked)
    }
}

async fn metrics(State(monitor): State<GatewayMonitor>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], monitor.render())
}

/// `?after=ID&limit=N`: a page of the devices, by id.
#[derive(Debug, Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

async fn devices_status(
    State(monitor): State<GatewayMonitor>,
    Query(page): Query<Page>,
) -> impl IntoResponse {
    let limit = page
        .limit
        .unwrap_or(DEFAULT_STATUS_PAGE)
        .min(MAX_STATUS_PAGE);
    let status = monitor
        .sequences
        .lock()
        .expect("sequence tracker lock")
        .status_page(page.after.as_deref(), limit);
    axum::Json(status)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP polis_gateway_{name} {help}");
    let _ = writeln!(out, "# TYPE polis_gateway_{name} {kind}");
}

fn sample(out: &mut String, name: &str, value: u64) {
    family_sample(out, name, "", value);
}

fn family_sample(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "polis_gateway_{name}{labels} {value}");
}

/// Renders `stats` (and the number of tracked devices) in the text exposition format 0.0.4.
pub fn render(stats: &GatewayStats, tracked_devices: usize) -> String {
    let mut out = String::new();
    let simple: [(&str, &str, &str, u64); 14] = [
        (
            "connections",
            "gauge",
            "Device MQTT connections open now (embedded mode).",
            stats.connections_open(),
        ),
        (
            "connections_admitted_total",
            "counter",
            "Device MQTT connections admitted (embedded mode).",
            stats.connections_admitted(),
        ),
        (
            "tls_handshake_failures_total",
            "counter",
            "Connections to the MQTT-over-TLS listener whose handshake failed or timed out.",
            stats.tls_handshake_failures(),
        ),
        (
            "messages_received_total",
            "counter",
            "Device messages received and stored (accepted or dead-lettered).",
            stats.received(),
        ),
        (
            "messages_accepted_total",
            "counter",
            "Messages appended to a telemetry topic.",
            stats.accepted(),
        ),
        (
            "messages_append_failed_total",
            "counter",
            "Messages whose durable append failed.",
            stats.append_failures(),
        ),
        (
            "ack_timeouts_total",
            "counter",
            "Connections closed without a PUBACK because a message was not stored within gateway.ack_timeout.",
            stats.ack_timeouts(),
        ),
        (
            "messages_overwritten_total",
            "counter",
            "Messages the embedded MQTT server overwrote before the gateway read them.",
            stats.overwritten(),
        ),
        (
            "bytes_received_total",
            "counter",
            "Payload bytes of the received messages.",
            stats.bytes_received(),
        ),
        (
            "duplicates_total",
            "counter",
            "Messages dead-lettered as duplicates of an earlier seq.",
            stats.duplicates(),
        ),
        (
            "sequence_gaps_total",
            "counter",
            "Sequence numbers devices skipped (messages missing).",
            stats.sequence_gaps(),
        ),
        (
            "sequence_restarts_total",
            "counter",
            "Times a device started numbering again.",
            stats.sequence_restarts(),
        ),
        (
            "tracked_devices",
            "gauge",
            "Devices whose sequence numbers are tracked.",
            tracked_devices as u64,
        ),
        (
            "bridge_sessions_total",
            "counter",
            "Bridge mode: subscribed connections to the external broker.",
            stats.broker_sessions(),
        ),
    ];
    for (name, kind, help, value) in simple {
        family(&mut out, name, kind, help);
        sample(&mut out, name, value);
    }
    family(
        &mut out,
        "connections_refused_total",
        "counter",
        "MQTT CONNECTs refused, by cause.",
    );
    for cause in REFUSALS {
        let labels = format!("{{cause=\"{cause}\"}}");
        family_sample(
            &mut out,
            "connections_refused_total",
            &labels,
            stats.refused(cause),
        );
    }
    family(
        &mut out,
        "messages_rejected_total",
        "counter",
        "Messages dead-lettered, by reason.",
    );
    for reason in RejectReason::ALL {
        let labels = format!("{{reason=\"{reason}\"}}");
        family_sample(
            &mut out,
            "messages_rejected_total",
            &labels,
            stats.rejected(reason),
        );
    }
    histogram(
        &mut out,
        "append_latency_seconds",
        "From taking a message from the MQTT side to the end of its durable append.",
        &stats.append_latency(),
    );
    histogram(
        &mut out,
        "durable_ack_latency_seconds",
        "Embedded mode: from a QoS 1 PUBLISH reaching the gateway to its PUBACK (message stored).",
        &stats.durable_ack_latency(),
    );
    out
}

fn histogram(out: &mut String, name: &str, help: &str, snapshot: &HistogramSnapshot) {
    family(out, name, "histogram", help);
    for (bound, count) in &snapshot.cumulative {
        let le = if bound.is_infinite() {
            "+Inf".to_string()
        } else {
            bound.to_string()
        };
        let labels = format!("{{le=\"{le}\"}}");
        family_sample(out, &format!("{name}_bucket"), &labels, *count);
    }
    let _ = writeln!(out, "polis_gateway_{name}_sum {}", snapshot.sum_seconds);
    sample(out, &format!("{name}_count"), snapshot.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_type_and_samples_in_order() {
        let text = render(&GatewayStats::default(), 3);
        assert!(text.contains("# TYPE polis_gateway_messages_received_total counter\npolis_gateway_messages_received_total 0\n"));
        assert!(text.contains("polis_gateway_messages_rejected_total{reason=\"duplicate\"} 0\n"));
        assert!(
            text.contains("polis_gateway_connections_refused_total{cause=\"wrong_secret\"} 0\n")
        );
        assert!(text.contains("polis_gateway_tracked_devices 3\n"));
        assert!(text.contains("polis_gateway_append_latency_seconds_bucket{le=\"0.0001\"} 0\n"));
        assert!(text.contains("polis_gateway_append_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("# TYPE polis_gateway_durable_ack_latency_seconds histogram\n"));
        assert!(text.contains("polis_gateway_durable_ack_latency_seconds_count 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("polis_gateway_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
