//! The whole platform in one process: log, gateway, analytics and dashboard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use polis_analytics::Analytics;
use polis_broker::{EmbeddedLog, Log, LogClient, LogError};
use polis_gateway::devices::{RegistryError, secret};
use polis_gateway::{DeviceRegistry, Gateway, GatewayStats};
use polis_simulators::SimulatorConfig;
use polis_telemetry::{DeviceTopic, topics};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::PolisConfig;

/// How long each tier may take to stop before it is abandoned.
const GRACE: Duration = Duration::from_secs(10);
/// The file in the data dir that keeps the secret the demo fleet shares, unless
/// `simulate.password` sets one.
const DEMO_SECRET_FILE: &str = "demo-secret";

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open the log in {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        source: LogError,
    },
    #[error(transparent)]
    Gateway(#[from] polis_gateway::GatewayError),
    #[error(transparent)]
    Analytics(#[from] polis_analytics::AnalyticsError),
    #[error(
        "cannot register the demo fleet (its shared secret is simulate.password when set): {0}"
    )]
    DemoDevices(#[source] RegistryError),
    #[error(
        "simulate.username = {0:?} cannot log in the demo fleet: each simulated device logs in as itself, so remove simulate.username"
    )]
    DemoUsername(String),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds `addr`, configured by `key`; returns the listener and the address it got.
async fn bind(
    addr: SocketAddr,
    key: &'static str,
) -> Result<(TcpListener, SocketAddr), PlatformError> {
    let error = |source| PlatformError::Bind { key, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// A running platform.
pub struct Platform {
    mqtt_addr: SocketAddr,
    http_addr: SocketAddr,
    pg_addr: SocketAddr,
    kafka_addr: SocketAddr,
    store: Arc<Log>,
    log: Arc<dyn LogClient>,
    kafka: (JoinHandle<()>, CancellationToken),
    gateway: (Gateway, CancellationToken),
    analytics: (Analytics, CancellationToken),
    postgres: (JoinHandle<()>, CancellationToken),
    dashboard: (JoinHandle<()>, CancellationToken),
}

impl Platform {
    /// Validates the configuration and starts every tier; returns once all of them accept work.
    pub async fn start(config: PolisConfig) -> Result<Platform, PlatformError> {
        config.validate()?;
        let embedded = open_log(&config)?;
        let log: Arc<dyn LogClient> = Arc::new(EmbeddedLog(embedded.clone()));
        let (kafka_listener, kafka_addr) =
            bind(config.broker.kafka_listen, "broker.kafka_listen").await?;
        let (http_listener, http_addr) = bind(config.dashboard.listen, "dashboard.listen").await?;
        let (pg_listener, pg_addr) =
            bind(config.analytics.pg_listen, "analytics.pg_listen").await?;

        let analytics_token = CancellationToken::new();
        let analytics = Analytics::start(
            config.analytics.clone(),
            log.clone(),
            analytics_token.clone(),
        )
        .await?;
        let dashboard_token = CancellationToken::new();
        let api = polis_analytics::http::router(analytics.sql());
        let dashboard = tokio::spawn({
            let (config, log, token) = (
                config.dashboard.clone(),
                log.clone(),
                dashboard_token.clone(),
            );
            async move {
                if let Err(e) = polis_dashboard::serve(http_listener, config, log, api, token).await
                {
                    tracing::error!(error = %e, "the dashboard stopped");
                }
            }
        });
        let postgres_token = CancellationToken::new();
        let postgres = tokio::spawn(
            polis_analytics::pg::PgServer::new(&config.analytics, analytics.sql())
                .serve(pg_listener, postgres_token.clone()),
        );
        let kafka_token = CancellationToken::new();
        let kafka = tokio::spawn(polis_broker::kafka::serve(
            kafka_listener,
            embedded.clone(),
            config.broker.clone(),
            kafka_token.clone(),
        ));
        let gateway_token = CancellationToken::new();
        let gateway = match Gateway::start(
            config.gateway.clone(),
            DeviceRegistry::in_data_dir(&config.data_dir),
            log.clone(),
            gateway_token.clone(),
        ) {
            Ok(gateway) => gateway,
            Err(e) => {
                kafka_token.cancel();
                dashboard_token.cancel();
                postgres_token.cancel();
                analytics_token.cancel();
                return Err(e.into());
            }
        };
        Ok(Platform {
            mqtt_addr: config.gateway.mqtt_listen,
            http_addr,
            pg_addr,
            kafka_addr,
            store: embedded,
            log,
            kafka: (kafka, kafka_token),
            gateway: (gateway, gateway_token),
            analytics: (analytics, analytics_token),
            postgres: (postgres, postgres_token),
            dashboard: (dashboard, dashboard_token),
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where PostgreSQL clients connect.
    pub fn pg_addr(&self) -> SocketAddr {
        self.pg_addr
    }

    /// Where Kafka clients connect.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }

    pub fn log(&self) -> Arc<dyn LogClient> {
        self.log.clone()
    }

    pub fn gateway_stats(&self) -> Arc<GatewayStats> {
        self.gateway.0.stats()
    }

    /// Stops in data-flow order: the Kafka listener and the gateway finish what they hold, then analytics, the
    /// PostgreSQL listener and the dashboard stop; last the log is flushed and marked clean.
    pub async fn shutdown(self) {
        let (kafka, token) = self.kafka;
        token.cancel();
        if tokio::time::timeout(GRACE, kafka).await.is_err() {
            tracing::warn!("the Kafka listener did not stop within {GRACE:?}");
        }
        let (gateway, token) = self.gateway;
        token.cancel();
        let joined = tokio::task::spawn_blocking(move || gateway.join());
        if tokio::time::timeout(GRACE, joined).await.is_err() {
            tracing::warn!("the gateway did not stop within {GRACE:?}");
        }
        let (analytics, token) = self.analytics;
        token.cancel();
        if tokio::time::timeout(GRACE, analytics.join()).await.is_err() {
            tracing::warn!("analytics did not stop within {GRACE:?}");
        }
        let (postgres, token) = self.postgres;
        token.cancel();
        if tokio::time::timeout(GRACE, postgres).await.is_err() {
            tracing::warn!("the PostgreSQL listener did not stop within {GRACE:?}");
        }
        let (dashboard, token) = self.dashboard;
        token.cancel();
        if tokio::time::timeout(GRACE, dashboard).await.is_err() {
            tracing::warn!("the dashboard did not stop within {GRACE:?}");
        }
        let store = self.store;
        let closed =
            tokio::task::spawn_blocking(move || store.close().map_err(|e| e.to_string())).await;
        match closed.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(()) => tracing::info!("log closed cleanly"),
            Err(e) => {
                tracing::error!(error = %e, "closing the log failed; the next start validates it")
            }
        }
    }
}

/// Registers the fleet `config.simulate` describes so that it can log in: every device under its
/// own id, all sharing one secret (`simulate.password`, or one generated once and kept in
/// `{data_dir}/demo-secret`). Returns the simulator settings with that secret as password.
pub fn provision_demo(config: &PolisConfig) -> Result<SimulatorConfig, PlatformError> {
    let mut simulate = config.simulate.clone();
    if let Some(username) = &simulate.username {
        return Err(PlatformError::DemoUsername(username.clone()));
    }
    let secret = match &simulate.password {
        Some(password) => password.clone(),
        None => secret::stored_or_generated(&config.data_dir.join(DEMO_SECRET_FILE))
            .map_err(PlatformError::DemoDevices)?,
    };
    // A vehicle is registered in the district it is in now; its kind never changes.
    let devices: Vec<DeviceTopic> = polis_simulators::fleet(&simulate)
        .into_iter()
        .map(|mut device| device.next(SystemTime::now().into()).0)
        .collect();
    let provisioned = DeviceRegistry::in_data_dir(&config.data_dir)
        .provision(&devices, &secret)
        .map_err(PlatformError::DemoDevices)?;
    tracing::info!(
        added = provisioned.added,
        updated = provisioned.updated,
        unchanged = provisioned.unchanged,
        "demo fleet registered"
    );
    simulate.password = Some(secret);
    Ok(simulate)
}

fn open_log(config: &PolisConfig) -> Result<Arc<Log>, PlatformError> {
    let path = config.data_dir.clone();
    let err = |source| PlatformError::Log {
        path: path.clone(),
        source,
    };
    let log = Log::open(&config.data_dir, config.broker.clone()).map_err(err)?;
    for topic in topics::TELEMETRY_TOPICS {
        log.create_topic(topic, config.broker.telemetry_partitions)
            .map_err(err)?;
    }
    for topic in topics::DERIVED_TOPICS {
        log.create_topic(topic, config.broker.derived_partitions)
            .map_err(err)?;
    }
    Ok(log)
}
