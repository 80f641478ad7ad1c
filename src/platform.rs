//! The whole platform in one process: log, gateway, analytics and dashboard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use polis_analytics::Analytics;
use polis_broker::{EmbeddedLog, Log, LogClient, LogError};
use polis_gateway::{Gateway, GatewayStats};
use polis_telemetry::topics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::PolisConfig;

/// How long each tier may take to stop before it is abandoned.
const GRACE: Duration = Duration::from_secs(10);

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
    #[error("cannot listen for HTTP on {addr} (dashboard.listen): {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running platform.
pub struct Platform {
    mqtt_addr: SocketAddr,
    http_addr: SocketAddr,
    log: Arc<dyn LogClient>,
    gateway: (Gateway, CancellationToken),
    analytics: (Analytics, CancellationToken),
    dashboard: (JoinHandle<()>, CancellationToken),
}

impl Platform {
    /// Validates the configuration and starts every tier; returns once all of them accept work.
    pub async fn start(config: PolisConfig) -> Result<Platform, PlatformError> {
        config.validate()?;
        let log = open_log(&config)?;
        let http_listener = tokio::net::TcpListener::bind(config.dashboard.listen)
            .await
            .map_err(|source| PlatformError::HttpBind {
                addr: config.dashboard.listen,
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| PlatformError::HttpBind {
                addr: config.dashboard.listen,
                source,
            })?;

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
        let gateway_token = CancellationToken::new();
        let gateway =
            match Gateway::start(config.gateway.clone(), log.clone(), gateway_token.clone()) {
                Ok(gateway) => gateway,
                Err(e) => {
                    dashboard_token.cancel();
                    analytics_token.cancel();
                    return Err(e.into());
                }
            };
        Ok(Platform {
            mqtt_addr: config.gateway.mqtt_listen,
            http_addr,
            log,
            gateway: (gateway, gateway_token),
            analytics: (analytics, analytics_token),
            dashboard: (dashboard, dashboard_token),
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn log(&self) -> Arc<dyn LogClient> {
        self.log.clone()
    }

    pub fn gateway_stats(&self) -> Arc<GatewayStats> {
        self.gateway.0.stats()
    }

    /// Stops in data-flow order: the gateway appends what it holds, then analytics and the
    /// dashboard stop. Every append was already fsynced, so nothing is left to flush.
    pub async fn shutdown(self) {
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
        let (dashboard, token) = self.dashboard;
        token.cancel();
        if tokio::time::timeout(GRACE, dashboard).await.is_err() {
            tracing::warn!("the dashboard did not stop within {GRACE:?}");
        }
    }
}

fn open_log(config: &PolisConfig) -> Result<Arc<dyn LogClient>, PlatformError> {
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
    Ok(Arc::new(EmbeddedLog(log)))
}
