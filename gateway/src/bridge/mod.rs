//! Bridge mode: the gateway as a client of an external MQTT broker, the [`Source`] the forwarder
//! reads instead of the embedded rumqttd.
//!
//! The gateway subscribes at QoS 1 to `$share/{group}/city/#` (or `city/#`) with a persistent
//! session (clean_session = false, a stable client id) and manual acknowledgements: a message
//! is PUBACKed only once the forwarder has appended it durably, to its telemetry topic or to the
//! dead letters. A message whose append fails is not acknowledged; the gateway reconnects,
//! resuming its session, and the broker delivers it again. So delivery is at least once from
//! the broker's acknowledgement of the device to the log; a message can be stored twice when
//! the connection is lost between its append and its PUBACK. Authentication and per-device ACLs
//! are the broker's job.
//!
//! [`connection`] drives rumqttc's event loop on a tokio task; [`session`] makes sure a PUBACK
//! goes out only on the connection its message came in on.

mod config;
mod connection;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio_util::sync::CancellationToken;

pub use config::BridgeConfig;
use connection::{Connection, Received};
use session::{Delivery, Session};

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::source::{Batch, Source};
use crate::stats::GatewayStats;

/// Requests rumqttc queues besides PUBACKs: the subscription and the final DISCONNECT.
const CONTROL_REQUESTS: usize = 8;
/// Largest packet the gateway sends (it sends only control packets).
const MAX_OUTGOING_PACKET: usize = 64 * 1024;
/// Longest the connection task may take to send its last PUBACKs and DISCONNECT at shutdown.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct BridgeSource {
    received: mpsc::Receiver<Received>,
    session: Arc<Session>,
    connection: tokio::task::JoinHandle<()>,
    runtime: Handle,
    shutdown: CancellationToken,
}

impl BridgeSource {
    /// Starts connecting to the broker `bridge` names, in the background: an unreachable broker
    /// is retried with backoff, never an error here.
    pub fn start(
        bridge: &BridgeConfig,
        gateway: &GatewayConfig,
        stats: Arc<GatewayStats>,
        shutdown: CancellationToken,
    ) -> Result<BridgeSource, GatewayError> {
        let address = bridge.address().map_err(GatewayError::Config)?;
        let mut options = MqttOptions::new(&bridge.client_id, address.host, address.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(bridge.keep_alive)
            .set_max_packet_size(
                gateway.max_packet_size.as_u64() as usize,
                MAX_OUTGOING_PACKET,
            );
        if let Some(username) = &bridge.username {
            options.set_credentials(username, bridge.password.as_deref().unwrap_or(""));
        }
        // Room for a PUBACK for every message the forwarder can hold plus one batch being
        // acknowledged; should the queue fill anyway, the session resets rather than block.
        let requests = bridge.max_inflight + gateway.max_batch + CONTROL_REQUESTS;
        let (client, eventloop) = AsyncClient::new(options, requests);
        let session = Arc::new(Session::new(client));
        let (sender, received) = mpsc::channel(bridge.max_inflight);
        let runtime = Handle::current();
        let connection = runtime.spawn(
            Connection {
                eventloop,
                session: session.clone(),
                received: sender,
                filter: bridge.topic_filter(),
                url: bridge.url.clone(),
                client_id: bridge.client_id.clone(),
                max_reconnect_delay: bridge.max_reconnect_delay,
                stats,
                shutdown: shutdown.clone(),
            }
            .run(),
        );
        tracing::info!(url = %bridge.url, client_id = %bridge.client_id, filter = %bridge.topic_filter(), "bridge mode: the embedded MQTT server is not started; devices connect to the external broker, which authenticates them");
        Ok(BridgeSource {
            received,
            session,
            connection,
            runtime,
            shutdown,
        })
    }
}

fn take(received: Received, batch: &mut Batch<Vec<Delivery>>) {
    batch.messages.push(received.message);
    batch.receipt.extend(received.delivery);
}

impl Source for BridgeSource {
    type Receipt = Vec<Delivery>;

    fn next_batch(
        &mut self,
        max: usize,
        deadline: Instant,
    ) -> Result<Batch<Vec<Delivery>>, GatewayError> {
        let mut batch = Batch {
            messages: Vec::new(),
            overwritten: 0,
            receipt: Vec::new(),
        };
        let first = self.runtime.block_on(async {
            tokio::time::timeout_at(deadline.into(), self.received.recv()).await
        });
        match first {
            Err(_elapsed) => return Ok(batch),
            Ok(None) if self.shutdown.is_cancelled() => return Ok(batch),
            Ok(None) => return Err(GatewayError::BridgeStopped),
            Ok(Some(received)) => take(received, &mut batch),
        }
        while batch.messages.len() < max {
            match self.received.try_recv() {
                Ok(received) => take(received, &mut batch),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        Ok(batch)
    }

    fn stored(&mut self, receipt: Vec<Delivery>) {
        let done = self.session.acknowledge(&receipt);
        if done.skipped > 0 {
            tracing::debug!(
                skipped = done.skipped,
                "stored messages of an earlier connection are not acknowledged; the broker sends them again"
            );
        }
    }

    fn not_stored(&mut self, receipt: Vec<Delivery>) {
        tracing::warn!(
            messages = receipt.len(),
            "not acknowledging messages the log did not take; the broker will deliver them again"
        );
        self.session.reset();
    }

    fn stop_intake(&mut self) {
        self.received.close();
    }

    fn finish(self) {
        if self.session.close() {
            // Queued behind every PUBACK, so those go out first.
            let client = self.session.client().clone();
            if self.runtime.block_on(client.disconnect()).is_err() {
                tracing::debug!("the MQTT connection task had already stopped");
            }
        }
        let abort = self.connection.abort_handle();
        let connection = self.connection;
        let finished = self
            .runtime
            .block_on(async { tokio::time::timeout(FINISH_TIMEOUT, connection).await });
        if finished.is_err() {
            abort.abort();
            tracing::warn!(
                "the MQTT bridge connection did not close within {FINISH_TIMEOUT:?}; unacknowledged messages will be delivered again"
            );
        }
    }
}
