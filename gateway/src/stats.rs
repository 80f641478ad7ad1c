//! Gateway counters: every received message is accepted, dead-lettered, or (only when the log
//! itself fails) counted as failed; every CONNECT the gateway decides on is authenticated or
//! refused for one [`Refusal`] cause. In bridge mode, stored messages are also counted as they
//! are acknowledged to the external broker. Sequence gaps and restarts come from
//! [`crate::sequence`]; the append latency histogram feeds `/metrics` ([`crate::metrics`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use polis_telemetry::RejectReason;

use crate::auth::Refusal;
use crate::histogram::{Histogram, HistogramSnapshot};

#[derive(Debug, Default)]
pub struct GatewayStats {
    received: AtomicU64,
    accepted: AtomicU64,
    dead_lettered: AtomicU64,
    append_failures: AtomicU64,
    /// Messages rumqttd overwrote in its buffer before the gateway read them.
    overwritten: AtomicU64,
    rejected: Mutex<HashMap<RejectReason, u64>>,
    authenticated: AtomicU64,
    refused: Mutex<HashMap<Refusal, u64>>,
    broker_sessions: AtomicU64,
    acknowledged: AtomicU64,
    bytes_received: AtomicU64,
    sequence_gaps: AtomicU64,
    sequence_restarts: AtomicU64,
    /// Embedded mode: device connections open now, and ever admitted (CONNACK accepted).
    connections_open: AtomicU64,
    connections_admitted: AtomicU64,
    /// Embedded mode: connections to the TLS listener that failed or timed out their handshake.
    tls_handshake_failures: AtomicU64,
    /// From the forwarder taking a message to the end of its durable append.
    append_latency: Histogram,
    /// Embedded mode: from a QoS 1 PUBLISH reaching the relay to its PUBACK going to the device.
    durable_ack_latency: Histogram,
    /// Embedded mode: connections closed because a message was not stored within
    /// `gateway.ack_timeout`.
    ack_timeouts: AtomicU64,
}

/// What one stored batch adds to the counters.
#[derive(Debug, Default)]
pub(crate) struct BatchCounts<'a> {
    pub received: u64,
    pub accepted: u64,
    pub rejected: &'a [RejectReason],
    pub bytes: u64,
    pub gaps: u64,
    pub restarts: u64,
    pub latency: std::time::Duration,
}

impl GatewayStats {
    pub(crate) fn record_batch(&self, batch: BatchCounts<'_>) {
        self.received.fetch_add(batch.received, Ordering::Relaxed);
        self.accepted.fetch_add(batch.accepted, Ordering::Relaxed);
        self.dead_lettered
            .fetch_add(batch.rejected.len() as u64, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(batch.bytes, Ordering::Relaxed);
        self.sequence_gaps.fetch_add(batch.gaps, Ordering::Relaxed);
        self.sequence_restarts
            .fetch_add(batch.restarts, Ordering::Relaxed);
        self.append_latency.observe(batch.latency, batch.received);
        let mut by_reason = self.rejected.lock().expect("stats lock");
        for reason in batch.rejected {
            *by_reason.entry(*reason).or_default() += 1;
        }
    }

    pub(crate) fn record_connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_admitted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_tls_handshake_failure(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_durable_ack(&self, latency: std::time::Duration) {
        self.durable_ack_latency.observe(latency, 1);
    }

    pub(crate) fn record_ack_timeout(&self) {
        self.ack_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn record_append_failure(&self, messages: u64) {
        self.append_failures.fetch_add(messages, Ordering::Relaxed);
    }

    pub(crate) fn record_overwritten(&self, messages: u64) {
        self.overwritten.fetch_add(messages, Ordering::Relaxed);
    }

    pub(crate) fn record_authenticated(&self) {
        self.authenticated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_refused(&self, cause: Refusal) {
        *self
            .refused
            .lock()
            .expect("stats lock")
            .entry(cause)
            .or_default() += 1;
    }

    pub(crate) fn record_broker_session(&self) {
        self.broker_sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_acknowledged(&self) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    pub fn append_failures(&self) -> u64 {
        self.append_failures.load(Ordering::Relaxed)
    }

    pub fn overwritten(&self) -> u64 {
        self.overwritten.load(Ordering::Relaxed)
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected
            .lock()
            .expect("stats lock")
            .get(&reason)
            .copied()
            .unwrap_or(0)
    }

    /// CONNECTs admitted after checking the device registry.
    pub fn authenticated(&self) -> u64 {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// CONNECTs refused for `cause`.
    pub fn refused(&self, cause: Refusal) -> u64 {
        self.refused
            .lock()
            .expect("stats lock")
            .get(&cause)
            .copied()
            .unwrap_or(0)
    }

    /// Bridge mode: connections to the external broker whose subscription it confirmed.
    pub fn broker_sessions(&self) -> u64 {
        self.broker_sessions.load(Ordering::Relaxed)
    }

    /// Bridge mode: stored messages whose PUBACK was sent to the external broker.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Payload bytes of the messages counted in [`Self::received`].
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// Messages dead-lettered as duplicates of an earlier `seq`.
    pub fn duplicates(&self) -> u64 {
        self.rejected(RejectReason::Duplicate)
    }

    /// Sequence numbers skipped by devices: messages that never arrived (or not yet).
    pub fn sequence_gaps(&self) -> u64 {
        self.sequence_gaps.load(Ordering::Relaxed)
    }

    /// Devices that started numbering again.
    pub fn sequence_restarts(&self) -> u64 {
        self.sequence_restarts.load(Ordering::Relaxed)
    }

    /// Embedded mode: device connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Embedded mode: connections to the TLS listener whose handshake failed or timed out.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.tls_handshake_failures.load(Ordering::Relaxed)
    }

    /// Embedded mode: device connections admitted since start.
    pub fn connections_admitted(&self) -> u64 {
        self.connections_admitted.load(Ordering::Relaxed)
    }

    pub fn append_latency(&self) -> HistogramSnapshot {
        self.append_latency.snapshot()
    }

    /// Embedded mode: how long QoS 1 publishes waited for their PUBACK (stored in the log).
    pub fn durable_ack_latency(&self) -> HistogramSnapshot {
        self.durable_ack_latency.snapshot()
    }

    /// Embedded mode: connections closed because a message was not stored within
    /// `gateway.ack_timeout`.
    pub fn ack_timeouts(&self) -> u64 {
        self.ack_timeouts.load(Ordering::Relaxed)
    }
}
