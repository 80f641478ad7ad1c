//! One viewer's WebSocket: the snapshot, then whatever the hub has for it, until either side
//! closes or the dashboard shuts down. Client messages are ignored except Close (Pings are
//! answered by the WebSocket layer).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::hub::Viewer;

/// How long the close handshake may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a viewer's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The viewer closed it or went away.
    ByViewer,
    /// The viewer accepted nothing for `dashboard.viewer_send_timeout` and was disconnected.
    Stalled,
    /// The dashboard is shutting down.
    Shutdown,
}

pub(crate) async fn serve_viewer(
    socket: WebSocket,
    mut viewer: Viewer,
    snapshot: Arc<str>,
    send_timeout: Duration,
    shutdown: CancellationToken,
) -> Ended {
    let (mut outgoing, mut incoming) = socket.split();
    let mut message = snapshot;
    loop {
        if let Err(ended) = send(&mut outgoing, &message, send_timeout, &shutdown).await {
            return ended;
        }
        message = loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    say_goodbye(&mut outgoing).await;
                    return Ended::Shutdown;
                }
                next = viewer.next_message() => match next {
                    Some(next) => break next,
                    None => return Ended::Shutdown,
                },
                received = incoming.next() => match received {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return Ended::ByViewer,
                    Some(Ok(_)) => {}
                },
            }
        };
    }
}

/// Sends one text message, unless the viewer is gone, accepts nothing for `timeout` (its
/// browser reconnects and starts again from a snapshot) or the dashboard shuts down meanwhile.
async fn send(
    outgoing: &mut SplitSink<WebSocket, Message>,
    message: &str,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), Ended> {
    let text = Message::Text(message.to_string());
    let sent = tokio::select! {
        () = shutdown.cancelled() => return Err(Ended::Shutdown),
        sent = tokio::time::timeout(timeout, outgoing.send(text)) => sent,
    };
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::debug!(%error, "a dashboard viewer went away");
            Err(Ended::ByViewer)
        }
        Err(_) => {
            tracing::info!(
                ?timeout,
                "disconnected a dashboard viewer that stopped reading (dashboard.viewer_send_timeout)"
            );
            Err(Ended::Stalled)
        }
    }
}

/// Tells the viewer that the dashboard is going away, without waiting long for it to listen.
async fn say_goodbye(outgoing: &mut SplitSink<WebSocket, Message>) {
    let going_away = CloseFrame {
        code: close_code::AWAY,
        reason: "the dashboard is shutting down".into(),
    };
    let closing = outgoing.send(Message::Close(Some(going_away)));
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::debug!("a dashboard viewer did not take its close frame in time");
    }
}
