//! Acknowledge after the durable append, in embedded mode.
//!
//! rumqttd PUBACKs a QoS 1 publish as soon as the message is in its memory. The front relay
//! ([`crate::front`]) sees every PUBLISH on its way in and every PUBACK on its way out, so it
//! holds each PUBACK back until the forwarder ([`crate::forward`]) reports that message stored
//! (accepted or dead-lettered) in the fsynced log. The two sides meet here, by the message's
//! [`fingerprint`] (its topic and payload: rumqttd's local link yields nothing else):
//!
//! - the relay calls [`AckGate::expect`] before it passes the PUBLISH on, and waits on the
//!   [`Ticket`] when rumqttd's PUBACK for that packet id comes back;
//! - the forwarder calls [`AckGate::settle`] with the fingerprints of each batch it appended,
//!   or failed to append; each settles the oldest ticket waiting for that fingerprint.
//!
//! Two identical messages on one topic are interchangeable, so settling the older of them
//! first acknowledges no message whose content is not stored. A ticket dropped unsettled (its
//! connection ended) withdraws itself.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// What became of a message the relay is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// In the log, fsynced: the PUBACK may go to the device.
    Stored,
    /// The append failed: no PUBACK, so the device sends the message again.
    NotStored,
}

/// Identifies a message by its topic and payload.
pub(crate) fn fingerprint(topic: &[u8], payload: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write_usize(topic.len());
    hasher.write(topic);
    hasher.write(payload);
    hasher.finish()
}

#[derive(Default)]
pub(crate) struct AckGate {
    waiting: Mutex<HashMap<u64, VecDeque<Waiter>>>,
    next_ticket: AtomicU64,
}

struct Waiter {
    ticket: u64,
    outcome: oneshot::Sender<Outcome>,
}

impl AckGate {
    /// A ticket for the message with `fingerprint`, which is about to reach rumqttd.
    pub fn expect(self: &Arc<Self>, fingerprint: u64) -> Ticket {
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (outcome, receiver) = oneshot::channel();
        self.waiting
            .lock()
            .expect("ack gate lock")
            .entry(fingerprint)
            .or_default()
            .push_back(Waiter {
                ticket: id,
                outcome,
            });
        Ticket {
            gate: self.clone(),
            fingerprint,
            id,
            receiver: Some(receiver),
        }
    }

    /// Settles, for each fingerprint, the oldest ticket waiting for it; a fingerprint nobody
    /// waits for (a QoS 0 publish) settles nothing.
    pub fn settle(&self, fingerprints: &[u64], outcome: Outcome) {
        let mut waiting = self.waiting.lock().expect("ack gate lock");
        for fingerprint in fingerprints {
            let Entry::Occupied(mut queue) = waiting.entry(*fingerprint) else {
                continue;
            };
            if let Some(waiter) = queue.get_mut().pop_front() {
                // The receiver is gone only if its ticket is being dropped right now.
                waiter.outcome.send(outcome).ok();
            }
            if queue.get().is_empty() {
                queue.remove();
            }
        }
    }

    /// Tickets not settled yet.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .expect("ack gate lock")
            .values()
            .map(VecDeque::len)
            .sum()
    }

    fn withdraw(&self, fingerprint: u64, ticket: u64) {
        let mut waiting = self.waiting.lock().expect("ack gate lock");
        if let Entry::Occupied(mut queue) = waiting.entry(fingerprint) {
            queue.get_mut().retain(|w| w.ticket != ticket);
            if queue.get().is_empty() {
                queue.remove();
            }
        }
    }
}

/// The relay's claim on the outcome of one message.
pub(crate) struct Ticket {
    gate: Arc<AckGate>,
    fingerprint: u64,
    id: u64,
    /// `None` once the outcome was received.
    receiver: Option<oneshot::Receiver<Outcome>>,
}

impl Ticket {
    /// Waits until the forwarder settles this message.
    pub async fn outcome(mut self) -> Outcome {
        let receiver = self.receiver.take().expect("a ticket is awaited once");
        // The gate outlives every ticket, so the sender is dropped only after sending.
        receiver.await.unwrap_or(Outcome::NotStored)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.receiver.is_some() {
            self.gate.withdraw(self.fingerprint, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_settled_fingerprint_releases_the_oldest_ticket_waiting_for_it() {
        let gate = Arc::new(AckGate::default());
        let a = fingerprint(b"city/harbour/traffic/tc-1", b"{\"seq\":1}");
        let b = fingerprint(b"city/harbour/traffic/tc-1", b"{\"seq\":2}");
        assert_ne!(a, b);
        let (first_a, second_a, only_b) = (gate.expect(a), gate.expect(a), gate.expect(b));
        gate.settle(&[a, fingerprint(b"city/x", b"qos 0")], Outcome::Stored);
        assert_eq!(first_a.outcome().await, Outcome::Stored);
        assert_eq!(gate.waiting(), 2);
        gate.settle(&[b], Outcome::NotStored);
        assert_eq!(only_b.outcome().await, Outcome::NotStored);
        drop(second_a);
        assert_eq!(gate.waiting(), 0);
    }

    #[test]
    fn the_topic_and_payload_boundary_is_part_of_the_fingerprint() {
        assert_ne!(fingerprint(b"city/a", b"b"), fingerprint(b"city/", b"ab"));
    }
}
