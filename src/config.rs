//! The Polis configuration file: one TOML document with a section per tier.
//!
//! Layers, later ones winning: built-in defaults → the file given by `--config` / `POLIS_CONFIG`
//! → `POLIS_DATA_DIR` → command-line flags. `polis config default` prints the defaults.

use std::path::{Path, PathBuf};

use polis_analytics::AnalyticsConfig;
use polis_broker::BrokerConfig;
use polis_dashboard::DashboardConfig;
use polis_gateway::GatewayConfig;
use polis_simulators::SimulatorConfig;
use serde::{Deserialize, Serialize};

/// The archive's folder under `data_dir` when `analytics.archive_dir` is not given.
const ARCHIVE_DIR: &str = "archive";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolisConfig {
    /// Where the log (and everything else Polis keeps) is stored.
    pub data_dir: PathBuf,
    pub broker: BrokerConfig,
    pub gateway: GatewayConfig,
    pub analytics: AnalyticsConfig,
    pub dashboard: DashboardConfig,
    /// The device fleet `polis up --demo` and `polis simulate` run.
    pub simulate: SimulatorConfig,
}

impl Default for PolisConfig {
    fn default() -> Self {
        PolisConfig {
            data_dir: PathBuf::from("polis-data"),
            broker: BrokerConfig::default(),
            gateway: GatewayConfig::default(),
            analytics: AnalyticsConfig::default(),
            dashboard: DashboardConfig::default(),
            simulate: SimulatorConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl PolisConfig {
    /// Defaults, overlaid with `file` when given.
    pub fn load(file: Option<&Path>) -> Result<PolisConfig, ConfigError> {
        let Some(path) = file else {
            return Ok(PolisConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Every problem in every section at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir is empty: give a folder such as \"polis-data\"".to_string());
        }
        problems.extend(self.broker.problems());
        problems.extend(self.gateway.problems());
        problems.extend(self.analytics().problems());
        problems.extend(self.dashboard.problems());
        problems.extend(self.simulate.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The analytics tier's configuration, its archive in `{data_dir}/archive` unless
    /// `analytics.archive_dir` is given.
    pub fn analytics(&self) -> AnalyticsConfig {
        let mut analytics = self.analytics.clone();
        analytics
            .archive_dir
            .get_or_insert_with(|| self.data_dir.join(ARCHIVE_DIR));
        analytics
    }

    /// The configuration as a TOML document.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_lives_in_the_data_dir_unless_given() {
        let mut config = PolisConfig {
            data_dir: PathBuf::from("/srv/polis"),
            ..PolisConfig::default()
        };
        assert_eq!(
            config.analytics().archive_dir,
            Some(PathBuf::from("/srv/polis/archive"))
        );
        config.analytics.archive_dir = Some(PathBuf::from("/mnt/cold"));
        assert_eq!(
            config.analytics().archive_dir,
            Some(PathBuf::from("/mnt/cold"))
        );
    }

    #[test]
    fn the_printed_default_loads_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("polis.toml");
        std::fs::write(&path, PolisConfig::default().to_toml()).unwrap();
        assert_eq!(
            PolisConfig::load(Some(&path)).unwrap(),
            PolisConfig::default()
        );
        PolisConfig::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("polis.toml");
        std::fs::write(&path, "[gateway]\nmqtt_lissen = \"127.0.0.1:1\"\n").unwrap();
        let err = PolisConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("mqtt_lissen"), "{err}");
        std::fs::write(
            &path,
            "[broker]\ntelemetry_partitions = 0\n[analytics]\nquery_timeout = \"0s\"\n",
        )
        .unwrap();
        let err = PolisConfig::load(Some(&path))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker.telemetry_partitions = 0"), "{err}");
        assert!(err.contains("analytics.query_timeout"), "{err}");
    }

    #[test]
    fn an_external_cluster_is_configured_in_broker_external() {
        let text = r#"
            [broker.external]
            bootstrap_servers = "kafka-1:9092,kafka-2:9092"
            request_timeout = "10s"
            [broker.external.extra]
            "security.protocol" = "SASL_SSL"
        "#;
        let config: PolisConfig = toml::from_str(text).unwrap();
        let mut expected = polis_broker::KafkaClientConfig::new("kafka-1:9092,kafka-2:9092");
        expected.request_timeout = std::time::Duration::from_secs(10);
        expected
            .extra
            .insert("security.protocol".into(), "SASL_SSL".into());
        assert_eq!(config.broker.external, Some(expected));
        config.validate().unwrap();
        let printed: PolisConfig = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(printed, config);

        let missing = toml::from_str::<PolisConfig>("[broker.external]\nclient_id = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("bootstrap_servers"), "{missing}");
        let bad: PolisConfig = toml::from_str(
            "[broker.external]\nbootstrap_servers = \"\"\n[broker.external.extra]\nacks = \"1\"\n",
        )
        .unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("broker.external.bootstrap_servers = \"\""),
            "{err}"
        );
        assert!(err.contains("broker.external.extra sets \"acks\""), "{err}");
    }
}
