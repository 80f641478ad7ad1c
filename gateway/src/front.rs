//! The embedded mode's front doors: TCP relays on `gateway.mqtt_listen` (plain MQTT) and
//! `gateway.tls.listen` (MQTT over TLS, terminated here) in front of rumqttd, so the gateway
//! sees each device session begin and end.
//!
//! rumqttd 0.20 tells an embedder about connects only through the auth handler, and about
//! disconnects not at all (its alerts are `CursorJump` and `BadPublish`; its meters count
//! connections; the disconnect itself is only a log line). The relay copies bytes both ways
//! unchanged and reads just enough MQTT framing on the way: the CONNECT's client id, a
//! DISCONNECT from the device, and the CONNACK's return code from rumqttd. A session whose
//! CONNACK accepted it is reported `connected`; when it ends, `disconnected` if the device sent
//! DISCONNECT, else `connection_lost` with why. rumqttd itself listens on a loopback port
//! chosen at start; it still authenticates every CONNECT, whichever door it came through. On
//! shutdown the listeners close (new connections are refused); open sessions go on until the
//! process ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use polis_telemetry::PresenceEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::presence::PresenceSink;
use crate::stats::GatewayStats;

const BUFFER: usize = 16 * 1024;
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const DISCONNECT: u8 = 14;
/// Longest CONNECT the relay reads the client id from (rumqttd enforces the packet limit).
const MAX_CONNECT: usize = 64 * 1024;

pub(crate) struct Front {
    pub backend: SocketAddr,
    pub presence: PresenceSink,
    pub stats: Arc<GatewayStats>,
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

/// Binds the embedded mode's listeners: plain MQTT unless `plain_mqtt` is off, and TLS when
/// `[gateway.tls]` is set.
pub(crate) fn listeners(config: &GatewayConfig) -> Result<Vec<(TcpListener, Door)>, GatewayError> {
    let mut listeners = Vec::new();
    if config.plain_mqtt {
        listeners.push((
            listen("gateway.mqtt_listen", config.mqtt_listen)?,
            Door::Plain,
        ));
    }
    if let Some(tls) = &config.tls {
        let door = Door::Tls {
            acceptor: tls.acceptor()?,
            handshake_timeout: tls.handshake_timeout,
        };
        listeners.push((listen("gateway.tls.listen", tls.listen)?, door));
    }
    Ok(listeners)
}

/// Binds one listener, configured by `key`.
fn listen(key: &'static str, addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std)
        .map_err(|source| GatewayError::Bind { key, addr, source })
}

impl Front {
    /// Accepts on `listener` until `shutdown`, relaying each connection to the backend.
    pub fn spawn(self: &Arc<Self>, listener: TcpListener, door: Door, shutdown: CancellationToken) {
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
            ended = upstream(device_rx, server_tx, &session) => ended,
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
}

/// Device → rumqttd until either side fails; says why it ended.
async fn upstream(
    mut rx: impl AsyncRead + Unpin,
    mut tx: impl AsyncWrite + Unpin,
    session: &Session,
) -> String {
    let mut buffer = vec![0; BUFFER];
    let mut framer = Framer::default();
    loop {
        let n = match rx.read(&mut buffer).await {
            Ok(0) => return "the device closed the connection without DISCONNECT".to_string(),
            Ok(n) => n,
            Err(e) => return format!("network error reading from the device: {e}"),
        };
        for frame in framer.feed(&buffer[..n]) {
            match frame {
                Frame::Connect { client_id } => {
                    *session.client_id.lock().expect("session lock") = client_id;
                }
                Frame::Disconnect => session.disconnect_sent.store(true, Ordering::Relaxed),
            }
        }
        if let Err(e) = tx.write_all(&buffer[..n]).await {
            return format!("the embedded MQTT server's connection failed: {e}");
        }
    }
}

/// rumqttd → device until either side fails; reports `connected` on an accepting CONNACK.
async fn downstream(
    mut rx: impl AsyncRead + Unpin,
    mut tx: impl AsyncWrite + Unpin,
    session: &Session,
    front: &Front,
) -> String {
    let mut buffer = vec![0; BUFFER];
    let mut head: Vec<u8> = Vec::with_capacity(4);
    loop {
        let n = match rx.read(&mut buffer).await {
            Ok(0) => {
                return "the MQTT server closed the connection (keep-alive timeout, refused CONNECT, protocol error or a packet over gateway.max_packet_size)".to_string();
            }
            Ok(n) => n,
            Err(e) => return format!("network error reading from the embedded MQTT server: {e}"),
        };
        if head.len() < 4 {
            let take = (4 - head.len()).min(n);
            head.extend_from_slice(&buffer[..take]);
            // CONNACK: type 2, remaining length 2, flags, return code 0 = accepted.
            if head.len() == 4 && head[0] >> 4 == CONNACK && head[1] == 2 && head[3] == 0 {
                session.connected.store(true, Ordering::Relaxed);
                front.stats.record_connection_opened();
                let device_id = session.client_id.lock().expect("session lock").clone();
                front
                    .presence
                    .report(&device_id, PresenceEvent::Connected, None);
            }
        }
        // A TLS stream sends what it buffered only on flush.
        if let Err(e) = async {
            tx.write_all(&buffer[..n]).await?;
            tx.flush().await
        }
        .await
        {
            return format!("network error writing to the device: {e}");
        }
    }
}

/// What the relay cares about in the device's packet stream.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Connect { client_id: String },
    Disconnect,
}

/// Finds MQTT packet boundaries in a byte stream: a fixed header (type, then the remaining
/// length as a 1–4 byte varint), then that many bytes. Only the first CONNECT is kept whole.
#[derive(Debug, Default)]
struct Framer {
    header: Vec<u8>,
    kind: u8,
    left: usize,
    in_body: bool,
    connect: Option<Vec<u8>>,
    seen_connect: bool,
    /// The stream stopped making sense; rumqttd will close it, the relay only copies.
    lost: bool,
}

impl Framer {
    fn feed(&mut self, mut data: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !data.is_empty() && !self.lost {
            if !self.in_body {
                self.header.push(data[0]);
                data = &data[1..];
                let Some(length) = self.remaining_length() else {
                    continue;
                };
                self.kind = self.header[0] >> 4;
                self.header.clear();
                self.left = length;
                self.in_body = true;
                if self.kind == CONNECT && !self.seen_connect {
                    self.seen_connect = true;
                    self.connect = Some(Vec::with_capacity(length.min(MAX_CONNECT)));
                }
            } else {
                let n = self.left.min(data.len());
                if let Some(connect) = &mut self.connect
                    && connect.len() + n <= MAX_CONNECT
                {
                    connect.extend_from_slice(&data[..n]);
                }
                self.left -= n;
                data = &data[n..];
            }
            if self.in_body && self.left == 0 {
                self.in_body = false;
                match self.kind {
                    CONNECT => {
                        if let Some(body) = self.connect.take() {
                            frames.push(Frame::Connect {
                                client_id: connect_client_id(&body).unwrap_or_default(),
                            });
                        }
                    }
                    DISCONNECT => frames.push(Frame::Disconnect),
                    _ => {}
                }
            }
        }
        frames
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

    #[test]
    fn finds_the_connect_and_the_disconnect_however_the_stream_is_cut() {
        let mut stream = connect("tc-harbour-1");
        // A PUBLISH with a two-byte remaining length (200), then DISCONNECT.
        stream.extend_from_slice(&[0x30, 0xc8, 0x01]);
        stream.extend(std::iter::repeat_n(0xe0, 200));
        stream.extend_from_slice(&[0xe0, 0x00]);
        let expected = vec![
            Frame::Connect {
                client_id: "tc-harbour-1".into(),
            },
            Frame::Disconnect,
        ];
        for chunk in [1, 2, 3, 7, stream.len()] {
            let mut framer = Framer::default();
            let frames: Vec<Frame> = stream.chunks(chunk).flat_map(|c| framer.feed(c)).collect();
            assert_eq!(frames, expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_malformed_length_stops_the_framing() {
        let mut framer = Framer::default();
        assert_eq!(framer.feed(&[0x30, 0xff, 0xff, 0xff, 0xff, 0xe0, 0x00]), []);
        assert!(framer.lost);
    }
}
