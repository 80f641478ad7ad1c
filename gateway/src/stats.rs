//! Gateway counters: every received message is accepted, dead-lettered, or (only when the log
//! itself fails) counted as failed; every CONNECT the gateway decides on is authenticated or
//! refused for one [`Refusal`] cause. In bridge mode, stored messages are also counted as they
//! are acknowledged to the external broker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use polis_telemetry::RejectReason;

use crate::auth::Refusal;

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
}

impl GatewayStats {
    pub(crate) fn record_batch(&self, received: u64, accepted: u64, rejected: &[RejectReason]) {
        self.received.fetch_add(received, Ordering::Relaxed);
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.dead_lettered
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        let mut by_reason = self.rejected.lock().expect("stats lock");
        for reason in rejected {
            *by_reason.entry(*reason).or_default() += 1;
        }
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
}
