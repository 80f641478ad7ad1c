//! The TCP loop: accept within the connection limit, then per connection read frames and write
//! each response before handling the next request.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dispatch::{self, Context};
use super::frame::next_frame;
use crate::config::BrokerConfig;
use crate::log::Log;

/// Serves Kafka clients on `listener` until `shutdown`, then waits for open connections to end
/// their current request (JoinGroup and SyncGroup answers that are still waiting get
/// NOT_COORDINATOR). Returns at once, logging why, if the coordinator's state in
/// `{data_dir}/coordinator` cannot be opened.
pub async fn serve(
    listener: TcpListener,
    log: Arc<Log>,
    config: BrokerConfig,
    shutdown: CancellationToken,
) {
    let bound = listener
        .local_addr()
        .expect("a bound listener has an address");
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let advertised = config.advertised(bound);
    let ctx = match Context::open(log, config, advertised) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            tracing::error!(error = %e, "cannot open the consumer-group offsets and producer ids; the Kafka listener is not started");
            return;
        }
    };
    let timers = tokio::spawn({
        let (groups, shutdown) = (ctx.groups.clone(), shutdown.clone());
        async move { groups.run_timers(shutdown).await }
    });
    tracing::info!(%bound, advertised = %format!("{}:{}", ctx.advertised.0, ctx.advertised.1), "Kafka listener ready");
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a Kafka connection failed");
                    continue;
                }
            },
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    ctx.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(_) => {
                tracing::warn!(%peer, limit = ctx.config.max_connections, "refusing a Kafka connection: broker.max_connections reached")
            }
        }
    }
    connections.close();
    connections.wait().await;
    if let Err(e) = timers.await {
        tracing::error!(error = %e, "the consumer-group timer task failed");
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let max_frame = ctx.config.max_frame_size.as_u64() as usize;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    stream.set_nodelay(true).ok();
    loop {
        loop {
            let frame = match next_frame(&mut buf, max_frame) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing Kafka connection");
                    return;
                }
            };
            match dispatch::handle(&ctx, peer, frame).await {
                Ok(Some(response)) => {
                    if let Err(e) = stream.write_all(&response).await {
                        tracing::debug!(%peer, error = %e, "Kafka client went away");
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing Kafka connection");
                    return;
                }
            }
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            read = stream.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "Kafka connection failed");
                return;
            }
        }
    }
}
