//! `polis`: the one binary. Parses the command line, sets up tracing, loads configuration and
//! reads signals; everything else is in the tier crates.

mod report_client;
mod sql_client;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use polis::{Platform, PolisConfig};
use polis_gateway::devices::{DeviceRegistry, NewDevice, render_table, secret};
use polis_telemetry::DeviceKind;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "polis",
    version,
    about = "Polis: a Smart City telemetry platform in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in this process and print its endpoints.
    Up {
        /// Also run the device simulators (the `[simulate]` section) against the platform.
        #[arg(long)]
        demo: bool,
        /// Where to keep data (overrides `data_dir`).
        #[arg(long, env = "POLIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A TOML configuration file (see `polis config default`).
        #[arg(long, env = "POLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run device simulators against any MQTT endpoint.
    Simulate {
        /// The MQTT server, as mqtt://HOST:PORT.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        mqtt: String,
        /// Traffic counters to simulate.
        #[arg(long)]
        traffic: Option<usize>,
        /// Energy meters to simulate.
        #[arg(long)]
        energy: Option<usize>,
        /// Buses and trams to simulate.
        #[arg(long)]
        vehicles: Option<usize>,
        /// Seconds between two readings of one device, e.g. 5s or 500ms.
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        interval: Option<std::time::Duration>,
        #[arg(long, env = "POLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run one SQL query against a running platform and print the result.
    Sql {
        /// The statement, e.g. "SELECT district, count(*) FROM traffic GROUP BY district".
        query: String,
        /// The platform's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The dashboard's viewer token, when it listens beyond loopback.
        #[arg(long, env = "POLIS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Draw the traffic, energy and transport charts of a period into one PNG or SVG file,
    /// from the metric windows of a running platform.
    Report {
        /// Start of the period: a span back from now (-1h, -30m), now, or an RFC 3339 time.
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        from: String,
        /// End of the period, in the same forms.
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// The image to write: FILE.png or FILE.svg.
        #[arg(long)]
        out: PathBuf,
        /// The platform's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The dashboard's viewer token, when it listens beyond loopback.
        #[arg(long, env = "POLIS_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Register, list and remove the devices allowed to connect over MQTT. A running platform
    /// sees every change at the next connection attempt.
    Devices {
        /// Where data is kept, devices.json included (overrides `data_dir`).
        #[arg(long, env = "POLIS_DATA_DIR", global = true)]
        data_dir: Option<PathBuf>,
        /// A TOML configuration file (see `polis config default`).
        #[arg(long, env = "POLIS_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: DevicesCommand,
    },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// Register a device; a generated secret is printed this once and never again.
    Add {
        /// The device id: its MQTT client id and user name, and the last level of its topics
        /// (1-64 characters of A-Z, a-z, 0-9, '-' or '_').
        id: String,
        /// traffic, energy or transport.
        #[arg(long)]
        kind: DeviceKind,
        /// The district it belongs to, as in its topics.
        #[arg(long)]
        district: String,
        /// Its secret, 16-256 characters (it stays in your shell history). Omit it to have a
        /// random one generated.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Show the registered devices (their secrets are never shown or stored).
    List,
    /// Unregister a device: its next connection attempt is refused.
    Remove {
        /// The device id.
        id: String,
    },
    /// Register every device of a CSV file with the columns id,kind,district,secret (header
    /// line first). If any row is bad, every bad row is reported and nothing is registered.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration as TOML.
    Default,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let heap = polis_analytics::heap::keep_freed_memory();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POLIS_LOG")
                .unwrap_or_else(|_| "info,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tracing::debug!(?heap, "heap thresholds for freed memory");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            demo,
            data_dir,
            config,
        } => up(demo, data_dir, config).await,
        Command::Simulate {
            mqtt,
            traffic,
            energy,
            vehicles,
            interval,
            config,
        } => {
            let mut sim = PolisConfig::load(config.as_deref())?.simulate;
            let (host, port) = parse_mqtt_url(&mqtt)?;
            sim.mqtt_host = host;
            sim.mqtt_port = port;
            sim.traffic_counters = traffic.unwrap_or(sim.traffic_counters);
            sim.energy_meters = energy.unwrap_or(sim.energy_meters);
            sim.vehicles = vehicles.unwrap_or(sim.vehicles);
            sim.interval = interval.unwrap_or(sim.interval);
            let problems = sim.problems();
            anyhow::ensure!(
                problems.is_empty(),
                "invalid simulator settings: {}",
                problems.join("; ")
            );
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let stats = polis_simulators::run(sim, shutdown).await?;
            eprintln!(
                "published {} readings ({} errors)",
                stats.published, stats.errors
            );
            Ok(())
        }
        Command::Sql {
            query,
            url,
            token,
            format,
        } => {
            sql_client::run(
                &url,
                token.as_deref(),
                &query,
                matches!(format, Format::Json),
            )
            .await
        }
        Command::Report {
            from,
            to,
            out,
            url,
            token,
        } => {
            let now = chrono::Utc::now();
            let period = polis_dashboard::report::Period {
                from: report_client::parse_time(&from, now).context("--from")?,
                to: report_client::parse_time(&to, now).context("--to")?,
            };
            let windows = report_client::run(&url, token.as_deref(), period, &out).await?;
            println!(
                "wrote {} ({windows} metric windows from {} to {})",
                out.display(),
                period.from.to_rfc3339(),
                period.to.to_rfc3339()
            );
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", PolisConfig::default().to_toml());
            Ok(())
        }
        Command::Devices {
            data_dir,
            config,
            command,
        } => {
            let config = load_config(config, data_dir)?;
            devices(DeviceRegistry::in_data_dir(&config.data_dir), command)
        }
    }
}

fn devices(registry: DeviceRegistry, command: DevicesCommand) -> anyhow::Result<()> {
    match command {
        DevicesCommand::Add {
            id,
            kind,
            district,
            secret: given,
        } => {
            let generated = given.is_none().then(secret::generate);
            let secret = given.or_else(|| generated.clone()).unwrap_or_default();
            let device = registry.add(NewDevice {
                id,
                kind,
                district,
                secret,
            })?;
            println!(
                "registered {} ({}, {}) in {}",
                device.id,
                device.kind,
                device.district,
                registry.path().display()
            );
            if let Some(secret) = generated {
                println!("secret: {secret}");
                println!(
                    "(shown only now: configure the device with it; Polis keeps only its hash)"
                );
            }
        }
        DevicesCommand::List => print!("{}", render_table(&registry.load()?)),
        DevicesCommand::Remove { id } => {
            registry.remove(&id)?;
            println!("removed {id}");
        }
        DevicesCommand::Import { file } => {
            let count = registry.import_csv(&file)?;
            println!("registered {count} devices from {}", file.display());
        }
    }
    Ok(())
}

/// The configuration from `file` (or the defaults), with `data_dir` overriding its data dir.
fn load_config(file: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<PolisConfig> {
    let mut config = PolisConfig::load(file.as_deref())?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

async fn up(
    demo: bool,
    data_dir: Option<PathBuf>,
    config_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = load_config(config_file, data_dir)?;
    if demo && config.gateway.bridge.is_some() {
        anyhow::bail!(
            "polis up --demo publishes into the embedded MQTT listener, which bridge mode ([gateway.bridge]) does not start: run without --demo and point `polis simulate` at your broker"
        );
    }
    if demo && !config.gateway.plain_mqtt {
        anyhow::bail!(
            "polis up --demo needs the plain MQTT listener (the simulators do not speak TLS), but gateway.plain_mqtt = false: set it to true, or run without --demo"
        );
    }
    let simulate = if demo {
        polis::platform::provision_demo(&config)?
    } else {
        config.simulate.clone()
    };
    let platform = Platform::start(config.clone()).await?;
    println!("Polis is up. Data in {}", config.data_dir.display());
    println!("  dashboard   http://{}/", platform.http_addr());
    println!(
        "  SQL         POST http://{}/api/sql   (or: polis sql \"SELECT ...\")",
        platform.http_addr()
    );
    let topics = "topics city/{district}/{traffic|energy|transport}/{device_id}";
    if let Some(mqtt) = platform.mqtt_addr() {
        println!("  MQTT        mqtt://{mqtt}   {topics}");
    }
    if let Some(tls) = platform.tls_addr() {
        println!("  MQTT (TLS)  mqtts://{tls}   {topics}");
    }
    println!(
        "  PostgreSQL  psql -h {} -p {} -U polis polis",
        platform.pg_addr().ip(),
        platform.pg_addr().port()
    );
    println!(
        "  Kafka       {}   (kcat -b {} -L)",
        platform.kafka_addr(),
        platform.kafka_addr()
    );
    let shutdown = CancellationToken::new();
    let demo_target = platform.mqtt_addr().filter(|_| demo);
    let simulators = demo_target.map(|mqtt| {
        let mut sim = simulate;
        sim.mqtt_host = mqtt.ip().to_string();
        sim.mqtt_port = mqtt.port();
        println!(
            "  demo        {} traffic counters, {} energy meters, {} vehicles publishing every {:?}",
            sim.traffic_counters, sim.energy_meters, sim.vehicles, sim.interval
        );
        tokio::spawn(polis_simulators::run(sim, shutdown.child_token()))
    });
    cancel_on_signal(shutdown.clone()).await;
    eprintln!("shutting down…");
    if let Some(simulators) = simulators {
        match simulators.await.context("the simulators task failed")? {
            Ok(stats) => eprintln!("simulators published {} readings", stats.published),
            Err(e) => eprintln!("simulators: {e}"),
        }
    }
    platform.shutdown().await;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM, then cancels `token`.
async fn cancel_on_signal(token: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    token.cancel();
}

fn parse_mqtt_url(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .with_context(|| format!("`{url}` is not an MQTT URL: use mqtt://HOST:PORT"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .map_or((rest, "1883"), |(h, p)| (h, p));
    let port = port
        .parse()
        .with_context(|| format!("`{port}` in `{url}` is not a port number"))?;
    anyhow::ensure!(
        !host.is_empty(),
        "`{url}` has no host: use mqtt://HOST:PORT"
    );
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_devices_commands() {
        let cli = Cli::try_parse_from([
            "polis",
            "devices",
            "add",
            "tc-42",
            "--kind",
            "traffic",
            "--district",
            "harbour",
            "--data-dir",
            "/tmp/polis",
        ])
        .unwrap();
        let Command::Devices {
            data_dir,
            command:
                DevicesCommand::Add {
                    id,
                    kind,
                    district,
                    secret,
                },
            ..
        } = cli.command
        else {
            panic!("not `devices add`");
        };
        assert_eq!(
            data_dir.as_deref(),
            Some(std::path::Path::new("/tmp/polis"))
        );
        assert_eq!(
            (id.as_str(), kind, district.as_str()),
            ("tc-42", DeviceKind::Traffic, "harbour")
        );
        assert_eq!(secret, None);

        let err = Cli::try_parse_from([
            "polis",
            "devices",
            "add",
            "w-1",
            "--kind",
            "water",
            "--district",
            "x",
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("expected traffic, energy or transport"),
            "{err}"
        );
        assert!(matches!(
            Cli::try_parse_from(["polis", "devices", "import", "fleet.csv"])
                .unwrap()
                .command,
            Command::Devices {
                command: DevicesCommand::Import { .. },
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["polis", "devices", "remove"]).is_err(),
            "an id is required"
        );
    }
}
