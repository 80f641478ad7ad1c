//! Presence records to the `devices` topic: one task appends what the MQTT side reports.
//!
//! Embedded mode reports connects and disconnects from the gateway's front listener
//! ([`crate::front`]). Bridge mode reports nothing: the external broker does not tell one client
//! about other clients' sessions.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use polis_broker::{LogClient, Record};
use polis_telemetry::{PresenceEvent, PresenceRecord, topics};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const APPEND_ATTEMPTS: u32 = 5;

/// Where the MQTT side reports what happened to a device's session.
#[derive(Clone)]
pub(crate) struct PresenceSink {
    gateway: String,
    tx: mpsc::UnboundedSender<PresenceRecord>,
}

impl PresenceSink {
    pub fn report(&self, device_id: &str, event: PresenceEvent, detail: Option<String>) {
        let record = PresenceRecord {
            device_id: device_id.to_string(),
            event,
            at: Utc::now(),
            gateway: self.gateway.clone(),
            detail,
        };
        if self.tx.send(record).is_err() {
            tracing::warn!(
                device = device_id,
                "the presence writer has stopped; event not recorded"
            );
        }
    }
}

/// Starts the writer: batches of up to `max_batch` records appended to `devices` keyed by
/// device id, until `shutdown`, after which what was already reported is still appended.
pub(crate) fn start(
    gateway: String,
    log: Arc<dyn LogClient>,
    max_batch: usize,
    shutdown: CancellationToken,
) -> PresenceSink {
    let (tx, mut rx) = mpsc::unbounded_channel::<PresenceRecord>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(max_batch);
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, max_batch) => n,
                () = shutdown.cancelled() => {
                    while let Ok(record) = rx.try_recv() {
                        batch.push(record);
                    }
                    append(log.as_ref(), std::mem::take(&mut batch)).await;
                    break;
                }
            };
            if received == 0 {
                break;
            }
            append(log.as_ref(), std::mem::take(&mut batch)).await;
        }
    });
    PresenceSink { gateway, tx }
}

async fn append(log: &dyn LogClient, records: Vec<PresenceRecord>) {
    if records.is_empty() {
        return;
    }
    let records: Vec<Record> = records
        .iter()
        .map(|r| {
            Record::new(
                Some(r.device_id.clone()),
                serde_json::to_vec(r).expect("presence records serialize"),
                r.at.timestamp_millis(),
            )
        })
        .collect();
    for attempt in 1..=APPEND_ATTEMPTS {
        match log.produce(topics::DEVICES, records.clone()).await {
            Ok(_) => return,
            Err(e) => {
                tracing::error!(count = records.len(), attempt, error = %e, "appending presence events failed");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    tracing::error!(
        count = records.len(),
        "presence events lost after {APPEND_ATTEMPTS} attempts"
    );
}
