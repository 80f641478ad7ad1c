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

/// A viewer whose socket accepts nothing for this long is disconnected; its browser reconnects
/// and starts again from a snapshot.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the close handshake may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) async fn serve_viewer(
    socket: WebSocket,
    mut viewer: Viewer,
    snapshot: Arc<str>,
    shutdown: CancellationToken,
) {
    let (mut outgoing, mut incoming) = socket.split();
    let mut message = snapshot;
    loop {
        if !send(&mut outgoing, &message, &shutdown).await {
            return;
        }
        message = loop {
            tokio::select! {
                () = shutdown.cancelled() => return say_goodbye(&mut outgoing).await,
                next = viewer.next_message() => match next {
                    Some(next) => break next,
                    None => return,
                },
                received = incoming.next() => match received {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
            }
        };
    }
}

/// Sends one text message; false when the viewer is gone, stopped reading or the dashboard is
/// shutting down meanwhile.
async fn send(
    outgoing: &mut SplitSink<WebSocket, Message>,
    message: &str,
    shutdown: &CancellationToken,
) -> bool {
    let text = Message::Text(message.to_string());
    let sent = tokio::select! {
        () = shutdown.cancelled() => return false,
        sent = tokio::time::timeout(SEND_TIMEOUT, outgoing.send(text)) => sent,
    };
    match sent {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "a dashboard viewer went away");
            false
        }
        Err(_) => {
            tracing::info!(
                timeout = ?SEND_TIMEOUT,
                "disconnected a dashboard viewer that stopped reading"
            );
            false
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
