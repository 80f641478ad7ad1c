//! The whole platform in one process: log, gateway, analytics and dashboard. The log is the
//! embedded one, served to Kafka clients too, or the external cluster of `broker.external`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use polis_analytics::Analytics;
use polis_broker::{
    BrokerConfig, EmbeddedLog, KafkaClientConfig, KafkaLog, Log, LogClient, LogError,
};
use polis_gateway::devices::{RegistryError, secret};
use polis_gateway::{DeviceRegistry, Gateway, GatewayMonitor, GatewayStats};
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
    #[error("cannot use the Kafka cluster of broker.external: {0}")]
    External(LogError),
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

/// The log before the tiers start: the embedded one with its Kafka listener bound but not yet
/// serving, or the external cluster with every topic in place.
enum Opened {
    Embedded(Arc<Log>, TcpListener, SocketAddr),
    External(KafkaLog),
}

impl Opened {
    async fn open(config: &PolisConfig) -> Result<Opened, PlatformError> {
        match &config.broker.external {
            None => {
                let log = open_log(config)?;
                let (listener, addr) =
                    bind(config.broker.kafka_listen, "broker.kafka_listen").await?;
                Ok(Opened::Embedded(log, listener, addr))
            }
            Some(external) => Ok(Opened::External(connect(external, config).await?)),
        }
    }

    fn client(&self) -> Arc<dyn LogClient> {
        match self {
            Opened::Embedded(log, ..) => Arc::new(EmbeddedLog(log.clone())),
            Opened::External(kafka) => Arc::new(kafka.clone()),
        }
    }

    /// Where Kafka clients connect.
    fn kafka_endpoint(&self) -> String {
        match self {
            Opened::Embedded(_, _, addr) => addr.to_string(),
            Opened::External(kafka) => kafka.bootstrap_servers().to_string(),
        }
    }

    /// Starts serving the embedded log to Kafka clients.
    fn serve(self, config: &BrokerConfig) -> Backbone {
        match self {
            Opened::Embedded(log, listener, _) => {
                let token = CancellationToken::new();
                let task = tokio::spawn(polis_broker::kafka::serve(
                    listener,
                    log.clone(),
                    config.clone(),
                    token.clone(),
                ));
                Backbone::Embedded {
                    log,
                    listener: (task, token),
                }
            }
            Opened::External(kafka) => Backbone::External(kafka),
        }
    }
}

/// The log the tiers share, and what stops with it.
enum Backbone {
    /// The embedded log and its Kafka listener.
    Embedded {
        log: Arc<Log>,
        listener: (JoinHandle<()>, CancellationToken),
    },
    /// The cluster of `broker.external`.
    External(KafkaLog),
}

impl Backbone {
    /// Stops the embedded Kafka listener; its connections finish their current request.
    async fn stop_listener(&mut self) {
        if let Backbone::Embedded {
            listener: (task, token),
            ..
        } = self
        {
            token.cancel();
            if tokio::time::timeout(GRACE, task).await.is_err() {
                tracing::warn!("the Kafka listener did not stop within {GRACE:?}");
            }
        }
    }

    /// Flushes the embedded log and marks it clean, or waits until the external cluster has
    /// acknowledged every record produced.
    async fn close(self) {
        match self {
            Backbone::Embedded { log, .. } => match blocking(move || log.close()).await {
                Ok(()) => tracing::info!("log closed cleanly"),
                Err(e) => {
                    tracing::error!(error = %e, "closing the log failed; the next start validates it")
                }
            },
            Backbone::External(kafka) => match blocking(move || kafka.flush()).await {
                Ok(()) => tracing::info!("the Kafka cluster acknowledged every record produced"),
                Err(e) => {
                    tracing::error!(error = %e, "the Kafka cluster did not acknowledge the last records produced")
                }
            },
        }
    }
}

/// Runs `close` on a blocking thread; a panic there is reported as an error too.
async fn blocking(
    close: impl FnOnce() -> Result<(), LogError> + Send + 'static,
) -> Result<(), String> {
    match tokio::task::spawn_blocking(close).await {
        Ok(closed) => closed.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A running platform.
pub struct Platform {
    mqtt_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
    pg_addr: SocketAddr,
    kafka_endpoint: String,
    backbone: Backbone,
    log: Arc<dyn LogClient>,
    gateway: (Gateway, CancellationToken),
    analytics: (Analytics, CancellationToken),
    postgres: (JoinHandle<()>, CancellationToken),
    dashboard: (JoinHandle<()>, CancellationToken),
}

impl Platform {
    /// Validates the configuration and starts every tier; returns once all of them accept work.
    pub async fn start(config: PolisConfig) -> Result<Platform, PlatformError> {
        config.validate()?;
        let opened = Opened::open(&config).await?;
        let log = opened.client();
        let (http_listener, http_addr) = bind(config.dashboard.listen, "dashboard.listen").await?;
        let (pg_listener, pg_addr) =
            bind(config.analytics.pg_listen, "analytics.pg_listen").await?;

        let analytics_token = CancellationToken::new();
        let analytics =
            Analytics::start(config.analytics(), log.clone(), analytics_token.clone()).await?;
        let dashboard_token = CancellationToken::new();
        let gateway_monitor = GatewayMonitor::new(config.gateway.max_tracked_devices);
        let api = polis_analytics::http::router(analytics.sql())
            .merge(polis_analytics::alerts::router(analytics.alerts()))
            .merge(gateway_monitor.router());
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
        let gateway_token = CancellationToken::new();
        let gateway = match Gateway::start_monitored(
            config.gateway.clone(),
            DeviceRegistry::in_data_dir(&config.data_dir),
            log.clone(),
            gateway_token.clone(),
            gateway_monitor,
        ) {
            Ok(gateway) => gateway,
            Err(e) => {
                dashboard_token.cancel();
                postgres_token.cancel();
                analytics_token.cancel();
                return Err(e.into());
            }
        };
        Ok(Platform {
            mqtt_addr: gateway.mqtt_addr(),
            tls_addr: gateway.tls_addr(),
            http_addr,
            pg_addr,
            kafka_endpoint: opened.kafka_endpoint(),
            backbone: opened.serve(&config.broker),
            log,
            gateway: (gateway, gateway_token),
            analytics: (analytics, analytics_token),
            postgres: (postgres, postgres_token),
            dashboard: (dashboard, dashboard_token),
        })
    }

    /// Where devices connect with plain MQTT; `None` in bridge mode or with `plain_mqtt = false`.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// Where devices connect with MQTT over TLS; `None` without `[gateway.tls]` or in bridge mode.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where PostgreSQL clients connect.
    pub fn pg_addr(&self) -> SocketAddr {
        self.pg_addr
    }

    /// Where Kafka clients connect: the embedded listener's `host:port`, or
    /// `broker.external.bootstrap_servers`.
    pub fn kafka_addr(&self) -> &str {
        &self.kafka_endpoint
    }

    pub fn log(&self) -> Arc<dyn LogClient> {
        self.log.clone()
    }

    pub fn gateway_stats(&self) -> Arc<GatewayStats> {
        self.gateway.0.stats()
    }

    /// Stops in data-flow order: the embedded Kafka listener and the gateway finish what they
    /// hold, then analytics, the PostgreSQL listener and the dashboard stop; last the embedded log
    /// is flushed and marked clean, or the external cluster acknowledges every record produced.
    pub async fn shutdown(self) {
        let mut backbone = self.backbone;
        backbone.stop_listener().await;
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
        backbone.close().await;
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
    for (topic, partitions) in topic_specs(config) {
        log.create_topic(topic, partitions).map_err(err)?;
    }
    Ok(log)
}

/// A client of the cluster `broker.external` names, with every topic in place.
async fn connect(
    external: &KafkaClientConfig,
    config: &PolisConfig,
) -> Result<KafkaLog, PlatformError> {
    let kafka = KafkaLog::new(external.clone()).map_err(PlatformError::External)?;
    kafka
        .ensure_topics(&topic_specs(config))
        .await
        .map_err(PlatformError::External)?;
    Ok(kafka)
}

/// Every topic the tiers use, with its partition count.
fn topic_specs(config: &PolisConfig) -> Vec<(&'static str, i32)> {
    let telemetry = topics::TELEMETRY_TOPICS.map(|t| (t, config.broker.telemetry_partitions));
    let derived = topics::DERIVED_TOPICS.map(|t| (t, config.broker.derived_partitions));
    telemetry.into_iter().chain(derived).collect()
}
