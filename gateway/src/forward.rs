//! The forwarder thread: a [`Source`] → validate → durable append, in batches → tell the source.
//!
//! Every source (the embedded rumqttd link, the bridge to an external broker) goes through this
//! one path: [`route_tracked`] each message (validation, then its `seq` against the per-device
//! [`SequenceTracker`]), [`group_by_topic`], append every topic's records with
//! retries, count the batch in [`GatewayStats`], then report the outcome to the source, which
//! acknowledges stored messages or has failed ones delivered again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::Utc;
use polis_broker::{LogClient, Record};
use polis_telemetry::Validator;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::sequence::{SequenceTracker, Verdict};
use crate::source::{MqttMessage, Source};
use crate::stats::{BatchCounts, GatewayStats};
use crate::translate::{group_by_topic, route_tracked};

/// How long one wait for messages lasts before the shutdown flag is checked again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const APPEND_ATTEMPTS: u32 = 5;

/// What the forwarder needs besides its source.
pub(crate) struct Forwarder {
    pub validator: Validator,
    pub max_batch: usize,
    pub log: Arc<dyn LogClient>,
    pub stats: Arc<GatewayStats>,
    pub sequences: Arc<Mutex<SequenceTracker>>,
    pub shutdown: CancellationToken,
}

impl Forwarder {
    /// Runs on its own thread until shutdown, when it stops the source's intake, stores what the
    /// source still holds and lets the source finish.
    pub fn spawn<S: Source>(self, source: S) -> Result<JoinHandle<()>, GatewayError> {
        let runtime = Handle::current();
        thread::Builder::new()
            .name("gateway-forwarder".into())
            .spawn(move || self.run(source, &runtime))
            .map_err(GatewayError::Thread)
    }

    fn run<S: Source>(self, mut source: S, runtime: &Handle) {
        let mut stopping = false;
        loop {
            if !stopping && self.shutdown.is_cancelled() {
                stopping = true;
                source.stop_intake();
            }
            let deadline = if stopping {
                Instant::now()
            } else {
                Instant::now() + POLL_INTERVAL
            };
            let batch = match source.next_batch(self.max_batch, deadline) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "the MQTT side failed; the gateway stops forwarding");
                    break;
                }
            };
            if batch.overwritten > 0 {
                tracing::error!(
                    lost = batch.overwritten,
                    "rumqttd overwrote messages before the gateway read them; raise gateway.mqtt_buffer"
                );
                self.stats.record_overwritten(batch.overwritten);
            }
            if batch.messages.is_empty() {
                if stopping {
                    break;
                }
                continue;
            }
            if self.store(&batch.messages, runtime) {
                source.stored(batch.receipt);
            } else {
                source.not_stored(batch.receipt);
            }
        }
        source.finish();
    }

    /// Validates, checks sequence numbers and appends one batch; true once every record of it
    /// is durable. The sequence tracker keeps the batch's changes only then.
    fn store(&self, messages: &[MqttMessage], runtime: &Handle) -> bool {
        let taken = Instant::now();
        let now = Utc::now();
        let received = messages.len() as u64;
        let (mut gaps, mut restarts) = (0, 0);
        let mut sequences = self.sequences.lock().expect("sequence tracker lock");
        sequences.begin();
        let routed: Vec<_> = messages
            .iter()
            .map(|m| {
                let (routed, verdict) = route_tracked(
                    &self.validator,
                    &mut sequences,
                    &m.topic,
                    &m.payload,
                    None,
                    now,
                );
                match verdict {
                    Verdict::New { gap } => gaps += gap,
                    Verdict::Restart { .. } => restarts += 1,
                    Verdict::Late | Verdict::Duplicate { .. } => {}
                }
                routed
            })
            .collect();
        // Only this thread changes the tracker; the status API may read it during the append.
        drop(sequences);
        let rejected: Vec<_> = routed.iter().filter_map(|r| r.rejected).collect();
        let accepted = received - rejected.len() as u64;
        let stored = runtime.block_on(append(self.log.as_ref(), group_by_topic(routed)));
        let mut sequences = self.sequences.lock().expect("sequence tracker lock");
        if stored {
            sequences.commit();
            self.stats.record_batch(BatchCounts {
                received,
                accepted,
                rejected: &rejected,
                bytes: messages.iter().map(|m| m.payload.len() as u64).sum(),
                gaps,
                restarts,
                latency: taken.elapsed(),
            });
            true
        } else {
            sequences.rollback();
            self.stats.record_append_failure(received);
            false
        }
    }
}

/// Appends every topic's records concurrently, retrying a failed topic with backoff.
async fn append(log: &dyn LogClient, by_topic: BTreeMap<&'static str, Vec<Record>>) -> bool {
    let appends = by_topic.into_iter().map(|(topic, records)| async move {
        let count = records.len();
        for attempt in 1..=APPEND_ATTEMPTS {
            match log.produce(topic, records.clone()).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::error!(topic, count, attempt, error = %e, "appending to the log failed");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        false
    });
    futures::future::join_all(appends)
        .await
        .into_iter()
        .all(|ok| ok)
}
