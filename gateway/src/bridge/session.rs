//! Which connection a message came in on, so that a PUBACK only ever goes out on that one.
//!
//! MQTT packet ids belong to one session. After a reconnect a broker that kept the session
//! sends every unacknowledged message again; a broker that lost it starts numbering afresh, and
//! an old id acknowledged there could stand for a message the gateway has never seen. So each
//! connection gets a generation number, every delivery carries the generation it arrived in,
//! and an acknowledgement is queued only while that same connection is up. The forwarder thread
//! queues acknowledgements through rumqttc's request channel while the connection task polls
//! the event loop; both go through [`Session`]'s lock, and when the connection is lost the
//! connection task empties the request channel under that lock, so no stale PUBACK survives.

use std::sync::Mutex;

use bytes::Bytes;
use rumqttc::{AsyncClient, EventLoop, Publish, QoS};

/// Where to acknowledge one QoS 1 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub generation: u64,
    pub pkid: u16,
}

#[derive(Debug, Default)]
struct State {
    /// Counts connections; the current one, when `connected`.
    generation: u64,
    connected: bool,
    /// The forwarder asked for the connection to be dropped and made again.
    reset_requested: bool,
    /// Shutdown: no new connection is wanted.
    closing: bool,
}

pub(crate) struct Session {
    client: AsyncClient,
    state: Mutex<State>,
}

/// What [`Session::acknowledge`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Acknowledged {
    /// PUBACKs queued for the current connection.
    pub queued: usize,
    /// Deliveries of an earlier connection (the broker sends those again), or left over when
    /// the request queue was full.
    pub skipped: usize,
}

impl Session {
    pub fn new(client: AsyncClient) -> Session {
        Session {
            client,
            state: Mutex::default(),
        }
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("bridge session lock")
    }

    /// A CONNACK arrived: a new connection, whose generation is returned.
    pub fn connected(&self) -> u64 {
        let mut state = self.state();
        state.generation += 1;
        state.connected = true;
        state.reset_requested = false;
        state.generation
    }

    /// The connection is gone (or being dropped): from now on nothing is acknowledged on it,
    /// and whatever rumqttc still holds for it — queued requests, events read but not yet
    /// yielded — is discarded.
    pub fn lost(&self, eventloop: &mut EventLoop) {
        let mut state = self.state();
        state.connected = false;
        state.reset_requested = false;
        eventloop.clean();
        eventloop.pending.clear();
        eventloop.state.events.clear();
    }

    /// Queues a PUBACK for every delivery of the current connection. If rumqttc's request
    /// queue is full, the rest are skipped and the connection is reset, so the broker delivers
    /// them again.
    pub fn acknowledge(&self, deliveries: &[Delivery]) -> Acknowledged {
        let mut state = self.state();
        let mut done = Acknowledged::default();
        for delivery in deliveries {
            if !state.connected || delivery.generation != state.generation {
                done.skipped += 1;
                continue;
            }
            match self.client.try_ack(&puback_for(delivery.pkid)) {
                Ok(()) => done.queued += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot queue a PUBACK; reconnecting so the broker delivers the unacknowledged messages again");
                    self.request_reset(&mut state);
                    done.skipped += 1;
                }
            }
        }
        done
    }

    /// Asks the connection task to drop the current connection and connect again (resuming
    /// the session), so that the broker delivers every unacknowledged message again.
    pub fn reset(&self) {
        let mut state = self.state();
        if state.connected {
            self.request_reset(&mut state);
        }
    }

    fn request_reset(&self, state: &mut State) {
        state.connected = false;
        state.reset_requested = true;
        // The DISCONNECT wakes the connection task. When the request queue is full the task has
        // work queued anyway and sees the flag after its next event.
        if self.client.try_disconnect().is_err() {
            tracing::debug!("the request queue is full; the reset happens after the next event");
        }
    }

    /// Whether a reset was asked for since the last call.
    pub fn take_reset(&self) -> bool {
        std::mem::take(&mut self.state().reset_requested)
    }

    /// Shutdown: acknowledges nothing more and wants no new connection. True when a connection
    /// is up, which the caller should then close with a DISCONNECT (queued after every PUBACK).
    pub fn close(&self) -> bool {
        let mut state = self.state();
        state.closing = true;
        std::mem::take(&mut state.connected)
    }

    pub fn is_closing(&self) -> bool {
        self.state().closing
    }
}

/// rumqttc acknowledges a publish by its packet id and QoS alone.
fn puback_for(pkid: u16) -> Publish {
    let mut publish = Publish::new("", QoS::AtLeastOnce, Bytes::new());
    publish.pkid = pkid;
    publish
}

#[cfg(test)]
mod tests {
    use rumqttc::MqttOptions;

    use super::*;

    /// A session whose rumqttc request queue holds `capacity` requests (nothing connects).
    fn session(capacity: usize) -> (Session, EventLoop) {
        let options = MqttOptions::new("gw", "127.0.0.1", 1);
        let (client, eventloop) = AsyncClient::new(options, capacity);
        (Session::new(client), eventloop)
    }

    fn delivery(generation: u64, pkid: u16) -> Delivery {
        Delivery { generation, pkid }
    }

    #[test]
    fn only_deliveries_of_the_current_connection_are_acknowledged() {
        let (session, mut eventloop) = session(10);
        assert_eq!(
            session.acknowledge(&[delivery(0, 1)]),
            Acknowledged {
                queued: 0,
                skipped: 1
            },
            "nothing is acknowledged before the first connection"
        );
        let first = session.connected();
        assert_eq!(session.acknowledge(&[delivery(first, 1)]).queued, 1);
        session.lost(&mut eventloop);
        assert_eq!(session.acknowledge(&[delivery(first, 2)]).skipped, 1);
        let second = session.connected();
        assert_eq!(second, first + 1);
        assert_eq!(
            session.acknowledge(&[delivery(first, 2), delivery(second, 7)]),
            Acknowledged {
                queued: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn a_lost_connection_takes_its_queued_acknowledgements_with_it() {
        let (session, mut eventloop) = session(1);
        let first = session.connected();
        assert_eq!(session.acknowledge(&[delivery(first, 1)]).queued, 1);
        session.lost(&mut eventloop);
        let second = session.connected();
        assert_eq!(
            session.acknowledge(&[delivery(second, 1)]),
            Acknowledged {
                queued: 1,
                skipped: 0
            },
            "the one-request queue was emptied of the first connection's PUBACK"
        );
    }

    #[test]
    fn a_reset_stops_acknowledging_until_the_next_connection() {
        let (session, _eventloop) = session(10);
        let generation = session.connected();
        session.reset();
        assert!(session.take_reset());
        assert!(!session.take_reset(), "a reset is taken once");
        assert_eq!(session.acknowledge(&[delivery(generation, 3)]).skipped, 1);
        assert_eq!(session.connected(), generation + 1);
        assert!(!session.take_reset());
    }

    #[test]
    fn a_full_request_queue_resets_instead_of_blocking() {
        let (session, _eventloop) = session(2);
        let generation = session.connected();
        let deliveries: Vec<_> = (1..=3).map(|pkid| delivery(generation, pkid)).collect();
        assert_eq!(
            session.acknowledge(&deliveries),
            Acknowledged {
                queued: 2,
                skipped: 1
            }
        );
        assert!(session.take_reset());
    }

    #[test]
    fn closing_asks_for_a_disconnect_only_when_connected() {
        let (session, _eventloop) = session(10);
        assert!(!session.is_closing());
        session.connected();
        assert!(session.close());
        assert!(session.is_closing());
        assert!(!session.close(), "the DISCONNECT is asked for once");
        assert_eq!(session.acknowledge(&[delivery(1, 1)]).skipped, 1);
    }
}
