//! The deployment files in `deploy/` stay true as the configuration evolves: every container
//! configuration loads and validates, listens on all interfaces on the ports the image exposes,
//! sets every secret a reachable Polis needs (marked as a placeholder to change), and agrees with
//! the Dockerfile, the compose file and the kustomization; the health probe they all use answers
//! without a token. (The YAML files are not parsed here: the workspace has no YAML parser.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use polis::{Platform, PolisConfig};

/// How long the health request may take before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// How a configuration reaches its log.
enum Log {
    /// The embedded log, its Kafka listener advertised as this `host:port`.
    Embedded { advertised: &'static str },
    /// An external cluster at these bootstrap servers.
    External { bootstrap: &'static str },
}

/// Every configuration file under `deploy/`, by path from the repository root.
const CONFIGS: [(&str, Log); 3] = [
    (
        "deploy/polis.toml",
        Log::Embedded {
            advertised: "localhost:9092",
        },
    ),
    (
        "deploy/polis-redpanda.toml",
        Log::External {
            bootstrap: "redpanda:9092",
        },
    ),
    (
        "deploy/kubernetes/polis.toml",
        Log::Embedded {
            advertised: "polis:9092",
        },
    ),
];

/// What marks a secret in a deploy file as a placeholder that must be changed.
const PLACEHOLDER: &str = "CHANGE-ME";

/// The health probe path of the Dockerfile, the compose file and the StatefulSet.
const HEALTH: &str = "/api/health";

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The configuration in `relative`, which must load and validate.
fn load(relative: &str) -> PolisConfig {
    let config =
        PolisConfig::load(Some(&path(relative))).unwrap_or_else(|e| panic!("{relative}: {e}"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("{relative}: {e}"));
    config
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every `*.toml` under `dir`, by path from the repository root.
fn toml_files(dir: &str, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(path(dir)).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{dir}/{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            toml_files(&name, found);
        } else if name.ends_with(".toml") {
            found.push(name);
        }
    }
}

#[test]
fn every_config_under_deploy_is_checked_here() {
    let mut found = Vec::new();
    toml_files("deploy", &mut found);
    found.sort();
    let mut checked: Vec<String> = CONFIGS.iter().map(|(f, _)| f.to_string()).collect();
    checked.sort();
    assert_eq!(found, checked);
}

#[test]
fn every_config_validates_and_listens_on_all_interfaces() {
    for (file, log) in &CONFIGS {
        let config = load(file);
        assert_eq!(config.data_dir, Path::new("/var/lib/polis"), "{file}");
        assert_eq!(config.gateway.mqtt_listen, addr("0.0.0.0:1883"), "{file}");
        assert!(config.gateway.bridge.is_none(), "{file}");
        assert_eq!(config.analytics.pg_listen, addr("0.0.0.0:5433"), "{file}");
        assert_eq!(config.dashboard.listen, addr("0.0.0.0:8080"), "{file}");
        match log {
            Log::Embedded { advertised } => {
                assert_eq!(config.broker.external, None, "{file}");
                assert_eq!(config.broker.kafka_listen, addr("0.0.0.0:9092"), "{file}");
                assert_eq!(
                    config.broker.advertised_listener.as_deref(),
                    Some(*advertised),
                    "{file}"
                );
            }
            Log::External { bootstrap } => {
                let external = config.broker.external.as_ref();
                assert_eq!(
                    external.map(|e| e.bootstrap_servers.as_str()),
                    Some(*bootstrap),
                    "{file}"
                );
            }
        }
    }
}

#[test]
fn every_secret_is_set_and_marked_as_a_placeholder() {
    for (file, _) in &CONFIGS {
        let config = load(file);
        for (key, secret) in [
            ("analytics.pg_password", &config.analytics.pg_password),
            ("dashboard.viewer_token", &config.dashboard.viewer_token),
            ("dashboard.operator_token", &config.dashboard.operator_token),
        ] {
            let secret = secret
                .as_deref()
                .unwrap_or_else(|| panic!("{file} does not set {key}"));
            assert!(
                secret.starts_with(PLACEHOLDER),
                "{file}: {key} = {secret:?} is not marked {PLACEHOLDER}"
            );
        }
    }
}

#[test]
fn the_dockerfile_matches_the_configs() {
    let dockerfile = read("deploy/Dockerfile");
    let line = |instruction: &str| {
        dockerfile
            .lines()
            .find(|l| l.starts_with(instruction))
            .unwrap_or_else(|| panic!("deploy/Dockerfile has no {instruction}"))
            .to_string()
    };
    let exposed: Vec<u16> = line("EXPOSE ")
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    let config = load("deploy/polis.toml");
    let listened = [
        config.gateway.mqtt_listen.port(),
        config.dashboard.listen.port(),
        config.broker.kafka_listen.port(),
        config.analytics.pg_listen.port(),
    ];
    assert_eq!(exposed, listened);
    assert!(
        dockerfile.contains("POLIS_DATA_DIR=/var/lib/polis")
            && dockerfile.contains("POLIS_CONFIG=/etc/polis/polis.toml"),
        "{dockerfile}"
    );
    assert_eq!(line("VOLUME "), "VOLUME /var/lib/polis");
    assert_eq!(line("ENTRYPOINT "), r#"ENTRYPOINT ["polis", "up"]"#);
    let health = format!(
        "http://127.0.0.1:{}{HEALTH}",
        config.dashboard.listen.port()
    );
    assert!(
        dockerfile.contains(&health),
        "no {health} in the Dockerfile"
    );
}

#[test]
fn compose_and_kubernetes_mount_the_configs_and_probe_health() {
    let compose = read("deploy/compose.yaml");
    for mount in [
        "./polis.toml:/etc/polis/polis.toml:ro",
        "./polis-redpanda.toml:/etc/polis/polis.toml:ro",
        ":/var/lib/polis",
        "http://127.0.0.1:8080/api/health",
        // The advertised address the bootstrap servers of polis-redpanda.toml lead to.
        "internal://redpanda:9092",
    ] {
        assert!(compose.contains(mount), "no {mount} in deploy/compose.yaml");
    }
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    assert!(kustomization.contains("- polis.toml"), "{kustomization}");
    let statefulset = read("deploy/kubernetes/statefulset.yaml");
    assert_eq!(
        statefulset.matches(&format!("path: {HEALTH}")).count(),
        3,
        "startup, readiness and liveness probes"
    );
    for mount in [
        "mountPath: /var/lib/polis",
        "mountPath: /etc/polis",
        "secretName: polis-config",
    ] {
        assert!(statefulset.contains(mount), "no {mount} in the StatefulSet");
    }
}

/// The probes send no token: the health endpoint of a platform with the container's tokens set
/// must answer without one.
#[tokio::test]
async fn the_health_probe_needs_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = load("deploy/polis.toml");
    config.data_dir = dir.path().to_path_buf();
    // rumqttd cannot report a port the OS picked: take one that was free a moment ago.
    let mqtt_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    config.gateway.mqtt_listen = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
    config.dashboard.listen = addr("127.0.0.1:0");
    config.broker.kafka_listen = addr("127.0.0.1:0");
    config.analytics.pg_listen = addr("127.0.0.1:0");
    let platform = Platform::start(config).await.unwrap();
    let response = reqwest::Client::new()
        .get(format!("http://{}{HEALTH}", platform.http_addr()))
        .timeout(LIMIT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    platform.shutdown().await;
}
