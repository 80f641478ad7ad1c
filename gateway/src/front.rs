//! The embedded mode's front doors: TCP relays on `gateway.mqtt_listen` (plain MQTT) and
//! `gateway.tls.listen` (MQTT over TLS, terminated here) in front of rumqttd, so the gateway
//! sees each device session begin and end, and acknowledges QoS 1 publishes only once they
//! are stored.
//!
//! rumqttd 0.20 tells an embedder about connects only through the auth handler, and about
//! disconnects not at all (its alerts are `CursorJump` and `BadPublish`; its meters count
//! connections; the disconnect itself is only a log line). The relay copies bytes both ways
//! unchanged and reads just enough MQTT framing on the way: the CONNECT's client id, a
//! DISCONNECT and each QoS 1 PUBLISH from the device, and the CONNACK's return code and each
//! PUBACK from rumqttd. A PUBACK (and what rumqttd sends after it) waits until the
//! forwarder has stored its message ([`crate::ack`]); if the log refuses it, or it is not
//! stored within `gateway.ack_timeout`, the connection closes without that PUBACK and the
//! device sends the message again when it reconnects. A session whose
//! CONNACK accepted it is reported `connected`; when it ends, `disconnected` if the device sent
//! DISCONNECT, else `connection_lost` with why. rumqttd itself listens on a loopback port
//! chosen at start; it still authenticates every CONNECT, whichever door it came through. On
//! shutdown the listeners close (new connections are refused); open sessions go on until the
//! process ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use polis_telemetry::PresenceEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckGate, Outcome, Ticket, fingerprint};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::presence::PresenceSink;
use crate::stats::GatewayStats;

/// Bytes one read relays. Each device session holds two (one each way) for as long as it is
/// open, so this is most of what an idle connection costs; a device's QoS 1 window of ~200-byte
/// readings fits several times over, and a longer packet simply takes several reads.
const BUFFER: usize = 4 * 1024;
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const DISCONNECT: u8 = 14;
/// Bytes of an MQTT 3.1.1 PUBACK: header, remaining length 2, packet id.
const PUBACK_LEN: usize = 4;

pub(crate) struct Front {
    pub backend: SocketAddr,
    pub presence: PresenceSink,
    pub stats: Arc<GatewayStats>,
    pub acks: Arc<AckGate>,
    /// `gateway.max_packet_size`: longer packets are not read (rumqttd closes their connection).
    pub max_packet: usize,
    /// `gateway.ack_timeout`.
    pub ack_timeout: Duration,
}

/// How devices come in through one listener.
#[derive(Clone)]
pub(crate) enum Door {
    Plain,
    Tls {
        acceptor: TlsAcceptor,
        handshake_timeout: Duration,
    },
}

/// One bound front door and the address it took (the OS picks the port when configured as 0).
pub(crate) struct Listener {
    pub socket: TcpListener,
    pub door: Door,
    pub addr: SocketAddr,
}

/// Binds the embedded mode's listeners: plain MQTT unless `plain_mqtt` is off, and TLS when
/// `[gateway.tls]` is set.
pub(crate) fn listeners(config: &GatewayConfig) -> Result<Vec<Listener>, GatewayError> {
    let mut listeners = Vec::new();
    if config.plain_mqtt {
        listeners.push(listen(
            "gateway.mqtt_listen",
            config.mqtt_listen,
            Door::Plain,
        )?);
    }
    if let Some(tls) = &config.tls {
        let door = Door::Tls {
            acceptor: tls.acceptor()?,
            handshake_timeout: tls.handshake_timeout,
        };
        listeners.push(listen("gateway.tls.listen", tls.listen, door)?);
    }
    Ok(listeners)
}

/// Binds one listener, configured by `key`.
fn listen(key: &'static str, addr: SocketAddr, door: Door) -> Result<Listener, GatewayError> {
    let socket = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std)
        .map_err(|source| GatewayError::Bind { key, addr, source })?;
    let addr = socket
        .local_addr()
        .map_err(|source| GatewayError::Bind { key, addr, source })?;
    Ok(Listener { socket, door, addr })
}

impl Front {
    /// Accepts on `listener` until `shutdown`, relaying each connection to the backend.
    pub fn spawn(self: &Arc<Self>, listener: Listener, shutdown: CancellationToken) {
        let Listener {
            socket: listener,
            door,
            ..
        } = listener;
        let front = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = shutdown.cancelled() => break,
                };
                match accepted {
                    Ok((device, peer)) => {
                        tokio::spawn(front.clone().admit(device, peer, door.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "accepting an MQTT connection failed"),
                }
            }
        });
    }

    async fn admit(self: Arc<Self>, device: TcpStream, peer: SocketAddr, door: Door) {
        device.set_nodelay(true).ok();
        match door {
            Door::Plain => {
                let (rx, tx) = device.into_split();
                self.relay(rx, tx).await;
            }
            Door::Tls {
                acceptor,
                handshake_timeout,
            } => {
                let failure =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(device)).await {
                        Ok(Ok(stream)) => {
                            let (rx, tx) = tokio::io::split(stream);
                            self.relay(rx, tx).await;
                            return;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no handshake within {handshake_timeout:?}"),
                    };
                self.stats.record_tls_handshake_failure();
                tracing::debug!(%peer, error = failure, "TLS handshake failed");
            }
        }
    }

    async fn relay<R, W>(&self, device_rx: R, device_tx: W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let server = match TcpStream::connect(self.backend).await {
            Ok(server) => server,
            Err(e) => {
                tracing::error!(error = %e, backend = %self.backend, "the embedded MQTT server refused a relayed connection");
                return;
            }
        };
        server.set_nodelay(true).ok();
        let session = Session::default();
        let (server_rx, server_tx) = server.into_split();
        let ended = tokio::select! {
            ended = upstream(device_rx, server_tx, &session, self) => ended,
            ended = downstream(server_rx, device_tx, &session, self) => ended,
        };
        if !session.connected.load(Ordering::Relaxed) {
            return;
        }
        let device_id = session.client_id.lock().expect("session lock").clone();
        let (event, detail) = if session.disconnect_sent.load(Ordering::Relaxed) {
            (PresenceEvent::Disconnected, None)
        } else {
            (PresenceEvent::ConnectionLost, Some(ended))
        };
        self.stats.record_connection_closed();
        self.presence.report(&device_id, event, detail);
    }
}

/// What the two directions of one relayed connection learn.
#[derive(Default)]
struct Session {
    client_id: Mutex<String>,
    connected: AtomicBool,
    disconnect_sent: AtomicBool,
    /// QoS 1 publishes passed to rumqttd whose PUBACK is held until they are stored, by
    /// packet id.
    held: Mutex<HashMap<u16, Held>>,
}

struct Held {
    ticket: Ticket,
    since: Instant,
}

/// Device → rumqttd until either side fails; says why it ended. Every QoS 1 publish gets its
/// ticket before rumqttd can see it.
async fn upstream(
    mut rx: impl AsyncRead + Unpin,
    mut tx: impl AsyncWrite + Unpin,
    session: &Session,
    front: &Front,
) -> String {
    let mut buffer = vec![0; BUFFER];
    let mut framer = Framer::new(kept_upstream, front.max_packet);
    loop {
        let n = match rx.read(&mut buffer).await {
            Ok(0) => return "the device closed the connection without DISCONNECT".to_string(),
            Ok(n) => n,
            Err(e) => return format!("network error reading from the device: {e}"),
        };
        for packet in framer.feed(&buffer[..n]) {
            match (packet.header >> 4, packet.body) {
                (CONNECT, Some(body)) => {
                    *session.client_id.lock().expect("session lock") =
                        connect_client_id(&body).unwrap_or_default();
                }
                (DISCONNECT, _) => session.disconnect_sent.store(true, Ordering::Relaxed),
                (PUBLISH, Some(body)) => {
                    if let Some((packet_id, fingerprint)) = held_publish(&body) {
                        let held = Held {
                            ticket: front.acks.expect(fingerprint),
                            since: Instant::now(),
                        };
                        session
                            .held
                            .lock()
                            .expect("session lock")
                            .insert(packet_id, held);
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = tx.write_all(&buffer[..n]).await {
            return format!("the embedded MQTT server's connection failed: {e}");
        }
    }
}

/// rumqttd → device until either side fails; reports `connected` on an accepting CONNACK, and
/// passes each held PUBACK on only once its message is stored.
async fn downstream(
    mut rx: impl AsyncRead + Unpin,
    mut tx: impl AsyncWrite + Unpin,
    session: &Session,
    front: &Front,
) -> String {
    let mut buffer = vec![0; BUFFER];
    let mut framer = Framer::new(kept_downstream, 2);
    loop {
        let n = match rx.read(&mut buffer).await {
            Ok(0) => {
                return "the MQTT server closed the connection (keep-alive timeout, refused CONNECT, protocol error or a packet over gateway.max_packet_size)".to_string();
            }
            Ok(n) => n,
            Err(e) => return format!("network error reading from the embedded MQTT server: {e}"),
        };
        let mut from = 0;
        for packet in framer.feed(&buffer[..n]) {
            match (packet.header >> 4, packet.body.as_deref()) {
                // CONNACK: flags, return code 0 = accepted.
                (CONNACK, Some([_, 0])) => {
                    session.connected.store(true, Ordering::Relaxed);
                    front.stats.record_connection_opened();
                    let device_id = session.client_id.lock().expect("session lock").clone();
                    front
                        .presence
                        .report(&device_id, PresenceEvent::Connected, None);
                }
                (PUBACK, Some(&[high, low])) => {
                    let packet_id = u16::from_be_bytes([high, low]);
                    let held = session
                        .held
                        .lock()
                        .expect("session lock")
                        .remove(&packet_id);
                    let Some(held) = held else { continue };
                    // What precedes this PUBACK goes now (of the PUBACK itself at most the
                    // bytes an earlier read already passed on).
                    let start = packet.end.saturating_sub(PUBACK_LEN).max(from);
                    if let Err(e) = send(&mut tx, &buffer[from..start]).await {
                        return format!("network error writing to the device: {e}");
                    }
                    from = start;
                    if let Err(why) = front.release(held).await {
                        return why;
                    }
                }
                _ => {}
            }
        }
        if let Err(e) = send(&mut tx, &buffer[from..n]).await {
            return format!("network error writing to the device: {e}");
        }
    }
}

/// Writes and flushes: a TLS stream sends what it buffered only on flush.
async fn send(tx: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    tx.write_all(bytes).await?;
    tx.flush().await
}

impl Front {
    /// Waits until the held message is stored; says why the connection must close if it was
    /// not, so that the device sends the message again.
    async fn release(&self, held: Held) -> Result<(), String> {
        let deadline = held.since + self.ack_timeout;
        match tokio::time::timeout_at(deadline.into(), held.ticket.outcome()).await {
            Ok(Outcome::Stored) => {
                self.stats.record_durable_ack(held.since.elapsed());
                Ok(())
            }
            Ok(Outcome::NotStored) => Err(
                "the log refused a QoS 1 message (see append_failures_total); closed without PUBACK so the device sends it again"
                    .to_string(),
            ),
            Err(_) => {
                self.stats.record_ack_timeout();
                Err(format!(
                    "a QoS 1 message was not stored within gateway.ack_timeout = {:?}; closed without PUBACK so the device sends it again",
                    self.ack_timeout
                ))
            }
        }
    }
}

/// The upstream packets the relay reads: CONNECT for the client id, QoS 1 PUBLISH to hold its
/// PUBACK.
fn kept_upstream(header: u8) -> bool {
    match header >> 4 {
        CONNECT => true,
        PUBLISH => (header >> 1) & 0b11 == 1,
        _ => false,
    }
}

/// The downstream packets the relay reads: CONNACK and PUBACK.
fn kept_downstream(header: u8) -> bool {
    matches!(header >> 4, CONNACK | PUBACK)
}

/// The packet id and fingerprint of an MQTT 3.1.1 QoS 1 PUBLISH body (topic, packet id,
/// payload) whose PUBACK is held: one on a topic rumqttd gives the gateway's link (any not
/// starting with `$`).
fn held_publish(body: &[u8]) -> Option<(u16, u64)> {
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = body.get(2..2 + topic_len)?;
    let packet_id = body.get(2 + topic_len..4 + topic_len)?;
    if topic.first() == Some(&b'$') {
        return None;
    }
    let payload = &body[4 + topic_len..];
    Some((
        u16::from_be_bytes([packet_id[0], packet_id[1]]),
        fingerprint(topic, payload),
    ))
}

/// One MQTT packet found in a byte stream.
#[derive(Debug, PartialEq, Eq)]
struct Packet {
    /// The fixed header's first byte: type << 4 | flags.
    header: u8,
    /// The body, for the packet types the framer keeps and no longer than its limit.
    body: Option<Vec<u8>>,
    /// Where the packet ends in the bytes whose feeding completed it.
    end: usize,
}

/// Finds MQTT packet boundaries in a byte stream: a fixed header (type and flags, then the
/// remaining length as a 1–4 byte varint), then that many bytes.
#[derive(Debug)]
struct Framer {
    /// Which packets (by the header's first byte) to keep the body of.
    keep: fn(u8) -> bool,
    /// Longest body kept; rumqttd closes connections that send longer ones.
    max_body: usize,
    header: Vec<u8>,
    first: u8,
    left: usize,
    in_body: bool,
    body: Option<Vec<u8>>,
    /// The stream stopped making sense; rumqttd will close it, the relay only copies.
    lost: bool,
}

impl Framer {
    fn new(keep: fn(u8) -> bool, max_body: usize) -> Framer {
        Framer {
            keep,
            max_body,
            header: Vec::with_capacity(5),
            first: 0,
            left: 0,
            in_body: false,
            body: None,
            lost: false,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Vec<Packet> {
        let mut packets = Vec::new();
        let mut at = 0;
        while at < data.len() && !self.lost {
            if !self.in_body {
                self.header.push(data[at]);
                at += 1;
                let Some(length) = self.remaining_length() else {
                    continue;
                };
                self.first = self.header[0];
                self.header.clear();
                self.left = length;
                self.in_body = true;
                self.body = ((self.keep)(self.first) && length <= self.max_body)
                    .then(|| Vec::with_capacity(length));
            } else {
                let n = self.left.min(data.len() - at);
                if let Some(body) = &mut self.body {
                    body.extend_from_slice(&data[at..at + n]);
                }
                self.left -= n;
                at += n;
            }
            if self.in_body && self.left == 0 {
                self.in_body = false;
                packets.push(Packet {
                    header: self.first,
                    body: self.body.take(),
                    end: at,
                });
            }
        }
        packets
    }

    /// The remaining length once the header's varint is complete.
    fn remaining_length(&mut self) -> Option<usize> {
        let varint = &self.header[1..];
        let last = *varint.last()?;
        if last & 0x80 != 0 {
            if varint.len() == 4 {
                self.lost = true;
            }
            return None;
        }
        Some(
            varint
                .iter()
                .enumerate()
                .map(|(i, b)| usize::from(b & 0x7f) << (7 * i))
                .sum(),
        )
    }
}

/// The client id of a CONNECT body: protocol name, level, flags, keep-alive, then the id.
fn connect_client_id(body: &[u8]) -> Option<String> {
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let at = 2 + name_len + 4;
    let id_len = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let id = body.get(at + 2..at + 2 + id_len)?;
    Some(String::from_utf8_lossy(id).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(client_id: &str) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
        body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend(body);
        packet
    }

    fn publish_qos1(topic: &str, packet_id: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&packet_id.to_be_bytes());
        body.extend_from_slice(payload);
        let mut packet = vec![0x32, body.len() as u8];
        packet.extend(body);
        packet
    }

    /// The packets of `stream` fed in chunks of `chunk`, with `end` as an offset into the
    /// whole stream.
    fn frame(framer: &mut Framer, stream: &[u8], chunk: usize) -> Vec<Packet> {
        let mut packets = Vec::new();
        for (i, piece) in stream.chunks(chunk).enumerate() {
            packets.extend(framer.feed(piece).into_iter().map(|p| Packet {
                end: p.end + i * chunk,
                ..p
            }));
        }
        packets
    }

    #[test]
    fn keeps_the_connect_and_qos1_publishes_however_the_stream_is_cut() {
        let mut stream = connect("tc-harbour-1");
        let connect_end = stream.len();
        // A QoS 0 PUBLISH with a two-byte remaining length (200), not kept.
        stream.extend_from_slice(&[0x30, 0xc8, 0x01]);
        stream.extend(std::iter::repeat_n(0xe0, 200));
        let qos0_end = stream.len();
        let publish = publish_qos1("city/harbour/traffic/tc-harbour-1", 7, b"{}");
        stream.extend_from_slice(&publish);
        let publish_end = stream.len();
        stream.extend_from_slice(&[0xe0, 0x00]);
        let expected = vec![
            Packet {
                header: 0x10,
                body: Some(connect("tc-harbour-1")[2..].to_vec()),
                end: connect_end,
            },
            Packet {
                header: 0x30,
                body: None,
                end: qos0_end,
            },
            Packet {
                header: 0x32,
                body: Some(publish[2..].to_vec()),
                end: publish_end,
            },
            Packet {
                header: 0xe0,
                body: None,
                end: stream.len(),
            },
        ];
        for chunk in [1, 2, 3, 7, stream.len()] {
            let mut framer = Framer::new(kept_upstream, 1024);
            assert_eq!(
                frame(&mut framer, &stream, chunk),
                expected,
                "chunks of {chunk}"
            );
        }
        let client_id = connect_client_id(expected[0].body.as_ref().unwrap());
        assert_eq!(client_id.as_deref(), Some("tc-harbour-1"));
        let (packet_id, print) = held_publish(expected[2].body.as_ref().unwrap()).unwrap();
        assert_eq!(packet_id, 7);
        assert_eq!(
            print,
            fingerprint(b"city/harbour/traffic/tc-harbour-1", b"{}")
        );
    }

    #[test]
    fn a_body_over_the_limit_is_not_kept() {
        let publish = publish_qos1("city/a", 1, &[b'x'; 100]);
        let mut framer = Framer::new(kept_upstream, 50);
        let packets = framer.feed(&publish);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].body, None);
    }

    #[test]
    fn system_topics_are_not_held() {
        let publish = publish_qos1("$SYS/x", 1, b"{}");
        assert_eq!(held_publish(&publish[2..]), None);
        assert_eq!(held_publish(&[0, 9, b'c']), None, "truncated");
    }

    #[test]
    fn a_malformed_length_stops_the_framing() {
        let mut framer = Framer::new(kept_upstream, 1024);
        assert_eq!(framer.feed(&[0x30, 0xff, 0xff, 0xff, 0xff, 0xe0, 0x00]), []);
        assert!(framer.lost);
    }
}
