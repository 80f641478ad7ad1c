//! The load generator: one MQTT connection per device, opened at a bounded rate, each device
//! publishing once per interval at its own phase, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use rand::Rng;
use rumqttc::QoS;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::backoff::Backoff;
use crate::config::SimulatorConfig;
use crate::error::SimulatorError;
use crate::fleet::fleet;
use crate::link::{Link, mqtt_options};
use crate::sample::{Stream, seeded_rng};
use crate::stats::{Counters, SimulationStats};

/// How often a running simulation logs its totals.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Runs every configured device against the MQTT broker until `shutdown` is cancelled, then
/// disconnects them and returns the totals.
///
/// Devices connect at `connect_per_second`; each publishes every `interval`, starting at a random
/// point within its first interval so the broker sees an even stream. A device whose connection
/// fails retries with backoff on its own; it never stops the others. The only error is a
/// configuration with problems, reported before anything connects.
pub async fn run(
    config: SimulatorConfig,
    shutdown: CancellationToken,
) -> Result<SimulationStats, SimulatorError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(SimulatorError::InvalidConfig(problems));
    }
    let qos = if config.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let counters = Arc::new(Counters::default());
    let mut phases = seeded_rng(config.seed, Stream::Phase, 0);
    let mut to_start = fleet(&config).into_iter().enumerate();
    let mut devices = JoinSet::new();
    let mut ramp = time::interval(Duration::from_secs(1) / config.connect_per_second);
    ramp.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut progress = time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut ramping = true;
    info!(
        devices = config.devices(),
        broker = %format!("{}:{}", config.mqtt_host, config.mqtt_port),
        interval = %format_duration(config.interval),
        "simulators starting"
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ramp.tick(), if ramping => match to_start.next() {
                Some((index, device)) => {
                    let link = Link {
                        options: mqtt_options(&config, device.id()),
                        device,
                        qos,
                        first_reading: Instant::now() + config.interval.mul_f64(phases.random()),
                        interval: config.interval,
                        backoff: Backoff::new(seeded_rng(config.seed, Stream::Backoff, index)),
                        counters: Arc::clone(&counters),
                        seq: 0,
                    };
                    devices.spawn(link.run(shutdown.clone()));
                }
                None => {
                    ramping = false;
                    info!(devices = devices.len(), "every device started");
                }
            },
            _ = progress.tick() => {
                let stats = counters.snapshot();
                info!(published = stats.published, errors = stats.errors, connected = stats.connected, "simulators running");
            }
            Some(ended) = devices.join_next() => device_ended(ended, &counters),
        }
    }
    let connected = counters.snapshot().connected;
    while let Some(ended) = devices.join_next().await {
        device_ended(ended, &counters);
    }
    let stats = SimulationStats {
        connected,
        ..counters.snapshot()
    };
    info!(
        published = stats.published,
        errors = stats.errors,
        "simulators stopped"
    );
    Ok(stats)
}

/// Device tasks only end at shutdown; one that panicked is logged and counted, and the rest run on.
fn device_ended(ended: Result<(), JoinError>, counters: &Counters) {
    if let Err(failure) = ended {
        counters.error();
        error!(%failure, "a simulated device stopped unexpectedly; the others carry on");
    }
}
