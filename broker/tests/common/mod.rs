//! A broker serving Kafka clients on 127.0.0.1:0 over a data directory, for the real-client tests.
//! Each test binary uses only some of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use polis_broker::{BrokerConfig, Log};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any one wait for the broker or a client may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(60);

pub struct Broker {
    pub addr: SocketAddr,
    pub log: Arc<Log>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Opens the log in `dir` (recovering what is there) and serves it.
pub async fn start(dir: &Path) -> Broker {
    start_with(dir, BrokerConfig::default()).await
}

/// [`start`] with `config`.
pub async fn start_with(dir: &Path, config: BrokerConfig) -> Broker {
    let log = Log::open(dir, config.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(polis_broker::kafka::serve(
        listener,
        log.clone(),
        config,
        stop.clone(),
    ));
    Broker {
        addr,
        log,
        stop,
        task,
    }
}

impl Broker {
    /// Stops serving and waits until every connection is closed.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the broker stops")
            .unwrap();
    }
}
