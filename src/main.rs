//! `polis`: the one binary. Parses the command line, sets up tracing, loads configuration and
//! reads signals; everything else is in the tier crates.

mod sql_client;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use polis::{Platform, PolisConfig};
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
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POLIS_LOG")
                .unwrap_or_else(|_| "info,rumqttd=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
        Command::Sql { query, url, format } => {
            sql_client::run(&url, &query, matches!(format, Format::Json)).await
        }
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", PolisConfig::default().to_toml());
            Ok(())
        }
    }
}

async fn up(
    demo: bool,
    data_dir: Option<PathBuf>,
    config_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut config = PolisConfig::load(config_file.as_deref())?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    let simulate = config.simulate.clone();
    let platform = Platform::start(config.clone()).await?;
    println!("Polis is up. Data in {}", config.data_dir.display());
    println!("  dashboard   http://{}/", platform.http_addr());
    println!(
        "  SQL         POST http://{}/api/sql   (or: polis sql \"SELECT ...\")",
        platform.http_addr()
    );
    println!(
        "  MQTT        mqtt://{}   topics city/{{district}}/{{traffic|energy|transport}}/{{device_id}}",
        platform.mqtt_addr()
    );
    let shutdown = CancellationToken::new();
    let simulators = demo.then(|| {
        let mut sim = simulate;
        sim.mqtt_host = platform.mqtt_addr().ip().to_string();
        sim.mqtt_port = platform.mqtt_addr().port();
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
