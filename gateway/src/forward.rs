//! The forwarder thread: local link → validate → durable append, in batches.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::Utc;
use polis_broker::LogClient;
use polis_telemetry::Validator;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::mqtt::EmbeddedMqtt;
use crate::stats::GatewayStats;
use crate::translate::{group_by_topic, route};

/// How long one wait for messages lasts before the shutdown flag is checked again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const APPEND_ATTEMPTS: u32 = 5;

pub(crate) fn spawn(
    mut link: EmbeddedMqtt,
    config: GatewayConfig,
    log: Arc<dyn LogClient>,
    stats: Arc<GatewayStats>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, GatewayError> {
    let runtime = Handle::current();
    let validator = Validator::new(config.limits());
    thread::Builder::new()
        .name("gateway-forwarder".into())
        .spawn(move || {
            loop {
                let stopping = shutdown.is_cancelled();
                let deadline = if stopping { Instant::now() } else { Instant::now() + POLL_INTERVAL };
                let batch = match link.next_batch(config.max_batch, deadline) {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::error!(error = %e, "the MQTT link failed; the gateway stops forwarding");
                        return;
                    }
                };
                if batch.overwritten > 0 {
                    tracing::error!(lost = batch.overwritten, "rumqttd overwrote messages before the gateway read them; raise gateway.mqtt_buffer");
                    stats.record_overwritten(batch.overwritten);
                }
                if batch.messages.is_empty() {
                    if stopping {
                        return;
                    }
                    continue;
                }
                let now = Utc::now();
                let received = batch.messages.len() as u64;
                let routed: Vec<_> = batch.messages.iter().map(|m| route(&validator, &m.topic, &m.payload, None, now)).collect();
                let rejected: Vec<_> = routed.iter().filter_map(|r| r.rejected).collect();
                let accepted = received - rejected.len() as u64;
                if runtime.block_on(append(log.as_ref(), group_by_topic(routed))) {
                    stats.record_batch(received, accepted, &rejected);
                } else {
                    stats.record_append_failure(received);
                }
            }
        })
        .map_err(GatewayError::Thread)
}

/// Appends every topic's records concurrently, retrying a failed topic with backoff.
async fn append(
    log: &dyn LogClient,
    by_topic: std::collections::BTreeMap<&'static str, Vec<polis_broker::Record>>,
) -> bool {
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
