//! The connection task: drives rumqttc's event loop against the external broker — connecting
//! and reconnecting with backoff, subscribing on every connection, handing each received
//! message to the forwarder with the [`Delivery`] to acknowledge it by.
//!
//! The event loop is the only thing that reads and writes the socket, so it is polled here and
//! nowhere else, and a poll is never cancelled (rumqttc does not promise that is safe). Before
//! each poll the task takes a slot in the bounded channel to the forwarder: when the forwarder
//! holds `gateway.bridge.max_inflight` messages, the task stops reading and TCP flow control
//! holds the broker back.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, Outgoing, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::session::{Delivery, Session};
use crate::source::MqttMessage;
use crate::stats::GatewayStats;

const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// One message from the broker, and how to acknowledge it (QoS 0 messages need nothing).
pub(crate) struct Received {
    pub message: MqttMessage,
    pub delivery: Option<Delivery>,
}

pub(crate) struct Connection {
    pub eventloop: EventLoop,
    pub session: Arc<Session>,
    pub received: mpsc::Sender<Received>,
    /// `$share/{group}/city/#` or `city/#`.
    pub filter: String,
    /// For log lines: the broker's URL and the gateway's client id.
    pub url: String,
    pub client_id: String,
    pub max_reconnect_delay: Duration,
    pub stats: Arc<GatewayStats>,
    pub shutdown: CancellationToken,
}

impl Connection {
    /// Runs until the forwarder closes the session, or until shutdown while there is no
    /// connection. After the final DISCONNECT it keeps reading until the broker closes the
    /// connection: closing a socket with unread data in it resets the connection, and the
    /// broker's kernel would then throw away the last PUBACKs before the broker read them.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(self.max_reconnect_delay);
        let mut generation = 0;
        loop {
            // No slot once the forwarder stopped its intake: what arrives then is not
            // acknowledged, so the broker delivers it again later.
            let slot = self.received.reserve().await.ok();
            let polled = self.eventloop.poll().await;
            if self.session.take_reset() {
                self.session.lost(&mut self.eventloop);
                tracing::warn!(url = %self.url, "reconnecting to the MQTT broker so that it delivers the unacknowledged messages again");
                continue;
            }
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    if self.session.is_closing() {
                        return;
                    }
                    generation = self.session.connected();
                    tracing::info!(url = %self.url, client_id = %self.client_id, session_present = connack.session_present, "connected to the MQTT broker");
                    if let Err(e) = self
                        .session
                        .client()
                        .try_subscribe(&self.filter, QoS::AtLeastOnce)
                    {
                        tracing::error!(error = %e, filter = %self.filter, "cannot queue the subscription; reconnecting");
                        self.session.lost(&mut self.eventloop);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    if suback
                        .return_codes
                        .iter()
                        .all(|code| matches!(code, SubscribeReasonCode::Success(_)))
                    {
                        backoff.reset();
                        self.stats.record_broker_session();
                        tracing::info!(filter = %self.filter, "subscribed at the MQTT broker");
                    } else {
                        tracing::error!(filter = %self.filter, client_id = %self.client_id, "the MQTT broker refused the subscription: its ACL must grant the gateway's user read access to city/#, and it must support shared subscriptions (else set gateway.bridge.shared = false)");
                        self.session.lost(&mut self.eventloop);
                        if !wait(backoff.next(), &self.shutdown).await {
                            return;
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Some(slot) = slot else { continue };
                    let delivery = (publish.qos != QoS::AtMostOnce).then_some(Delivery {
                        generation,
                        pkid: publish.pkid,
                    });
                    slot.send(Received {
                        message: MqttMessage {
                            topic: publish.topic,
                            payload: publish.payload,
                        },
                        delivery,
                    });
                }
                Ok(Event::Outgoing(Outgoing::PubAck(_))) => self.stats.record_acknowledged(),
                Ok(_) => {}
                Err(e) => {
                    self.session.lost(&mut self.eventloop);
                    if self.session.is_closing() {
                        tracing::info!(url = %self.url, "disconnected from the MQTT broker");
                        return;
                    }
                    let delay = backoff.next();
                    log_failure(&e, &self.url, &self.client_id, delay);
                    if !wait(delay, &self.shutdown).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Waits `delay`; false when shutdown came first.
async fn wait(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

fn log_failure(error: &ConnectionError, url: &str, client_id: &str, retry_in: Duration) {
    match error {
        ConnectionError::ConnectionRefused(code) => tracing::error!(
            url,
            client_id,
            code = ?code,
            ?retry_in,
            "the MQTT broker refused the gateway's CONNECT: check gateway.bridge.username and password, and that the broker admits this client id"
        ),
        error => tracing::warn!(
            url,
            client_id,
            %error,
            ?retry_in,
            "no connection to the MQTT broker; messages wait there until the gateway reconnects"
        ),
    }
}

/// Reconnection delays: 100 ms, doubling up to a maximum, back to 100 ms once subscribed.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            next: FIRST_RECONNECT_DELAY,
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = (delay * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = FIRST_RECONNECT_DELAY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_double_up_to_the_maximum_and_start_over_once_subscribed() {
        let mut backoff = Backoff::new(Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next(), FIRST_RECONNECT_DELAY);
    }
}
