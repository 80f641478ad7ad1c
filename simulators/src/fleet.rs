//! The simulated fleet: every device a configuration asks for, built without any network.

use chrono::{DateTime, Utc};
use polis_telemetry::DeviceTopic;

use crate::city::{DISTRICTS, ROUTES};
use crate::config::SimulatorConfig;
use crate::energy::EnergyMeter;
use crate::sample::{Stream, seeded_rng};
use crate::traffic::TrafficCounter;
use crate::transport::TransitVehicle;

/// One simulated device of any kind.
#[derive(Debug, Clone)]
pub enum Device {
    Traffic(TrafficCounter),
    Energy(EnergyMeter),
    Transport(TransitVehicle),
}

impl Device {
    /// The device id: its MQTT client id and the last level of its topic.
    pub fn id(&self) -> &str {
        match self {
            Device::Traffic(d) => d.id(),
            Device::Energy(d) => d.id(),
            Device::Transport(d) => d.id(),
        }
    }

    /// The topic and JSON payload of the device's reading at `now`.
    pub fn next(&mut self, now: DateTime<Utc>) -> (DeviceTopic, Vec<u8>) {
        match self {
            Device::Traffic(d) => d.next(now),
            Device::Energy(d) => d.next(now),
            Device::Transport(d) => d.next(now),
        }
    }
}

/// Every device `config` asks for: traffic counters, then energy meters, then vehicles. Counters
/// and meters go round-robin over the districts, vehicles round-robin over the lines, spread
/// evenly along their line's round trip. Ids are numbered from 1 within each district or line.
pub fn fleet(config: &SimulatorConfig) -> Vec<Device> {
    let traffic = (0..config.traffic_counters).map(|i| {
        let district = &DISTRICTS[i % DISTRICTS.len()];
        let rng = seeded_rng(config.seed, Stream::Traffic, i);
        Device::Traffic(TrafficCounter::new(
            district,
            i / DISTRICTS.len() + 1,
            config.interval,
            rng,
        ))
    });
    let energy = (0..config.energy_meters).map(|i| {
        let district = &DISTRICTS[i % DISTRICTS.len()];
        let rng = seeded_rng(config.seed, Stream::Energy, i);
        Device::Energy(EnergyMeter::new(district, i / DISTRICTS.len() + 1, rng))
    });
    let transport = (0..config.vehicles).map(|i| {
        let line = i % ROUTES.len();
        let place = i / ROUTES.len();
        let on_line =
            config.vehicles / ROUTES.len() + usize::from(line < config.vehicles % ROUTES.len());
        let rng = seeded_rng(config.seed, Stream::Transport, i);
        let start = place as f64 / on_line as f64;
        Device::Transport(TransitVehicle::new(&ROUTES[line], place + 1, start, rng))
    });
    traffic.chain(energy).chain(transport).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use polis_telemetry::fiware::{AcMeasurement, TrafficFlowObserved, Vehicle};
    use polis_telemetry::{DeviceKind, Validator};

    use super::*;

    fn midnight() -> DateTime<Utc> {
        "2026-11-25T00:00:00Z".parse().unwrap()
    }

    /// Runs the default fleet through a day in ten-minute steps, handing every reading to `check`.
    fn simulate_day(mut check: impl FnMut(&str, DateTime<Utc>, &DeviceTopic, &[u8])) {
        let mut devices = fleet(&SimulatorConfig::default());
        for step in 0..24 * 6 {
            let now = midnight() + chrono::Duration::minutes(10 * step);
            for device in &mut devices {
                let (topic, payload) = device.next(now);
                check(device.id(), now, &topic, &payload);
            }
        }
    }

    #[test]
    fn builds_the_configured_devices_with_unique_topic_safe_ids() {
        let devices = fleet(&SimulatorConfig::default());
        let count = |kind: fn(&Device) -> bool| devices.iter().filter(|d| kind(d)).count();
        assert_eq!(count(|d| matches!(d, Device::Traffic(_))), 400);
        assert_eq!(count(|d| matches!(d, Device::Energy(_))), 400);
        assert_eq!(count(|d| matches!(d, Device::Transport(_))), 200);
        let ids: HashSet<_> = devices.iter().map(Device::id).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.contains("tc-old-town-1")
                && ids.contains("em-north-hills-66")
                && ids.contains("bus-L6-33")
        );
        assert!(
            ids.iter()
                .all(|id| DeviceTopic::parse(&format!("city/x/traffic/{id}")).is_ok())
        );
    }

    #[test]
    fn every_reading_of_a_day_passes_the_gateway_validation() {
        let validator = Validator::default();
        let mut readings = 0;
        simulate_day(|id, now, topic, payload| {
            assert_eq!(topic.device_id, id);
            if let Err(refused) = validator.validate(&topic.mqtt_topic(), payload, now) {
                panic!(
                    "{} refused: {}\n{}",
                    topic.mqtt_topic(),
                    refused.rejection,
                    String::from_utf8_lossy(payload)
                );
            }
            readings += 1;
        });
        assert_eq!(readings, 1000 * 144);
    }

    #[test]
    fn traffic_is_heavier_at_eight_than_at_three() {
        let vehicles_at = |hour: i64| -> i64 {
            let now = midnight() + chrono::Duration::hours(hour);
            fleet(&SimulatorConfig::default())
                .iter_mut()
                .filter_map(|d| match d {
                    Device::Traffic(counter) => Some(
                        serde_json::from_slice::<TrafficFlowObserved>(&counter.next(now).1)
                            .unwrap()
                            .intensity,
                    ),
                    _ => None,
                })
                .sum()
        };
        let (rush, night) = (vehicles_at(8), vehicles_at(3));
        assert!(
            rush > 5 * night,
            "{rush} vehicles at 08:00, {night} at 03:00"
        );
    }

    #[test]
    fn vehicles_stay_on_the_map_and_face_a_compass_bearing() {
        let points = ROUTES.iter().flat_map(|r| r.waypoints);
        let lat = points
            .clone()
            .map(|p| p.lat)
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let lon = points
            .map(|p| p.lon)
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let mut districts = HashSet::new();
        simulate_day(|_, _, topic, payload| {
            if topic.kind != DeviceKind::Transport {
                return;
            }
            let vehicle: Vehicle = serde_json::from_slice(payload).unwrap();
            let [x, y] = vehicle.location.coordinates;
            assert!(
                lon.0 - 1e-6 <= x && x <= lon.1 + 1e-6,
                "longitude {x} outside {lon:?}"
            );
            assert!(
                lat.0 - 1e-6 <= y && y <= lat.1 + 1e-6,
                "latitude {y} outside {lat:?}"
            );
            assert!((0.0..=360.0).contains(&vehicle.bearing.unwrap()));
            assert_eq!(vehicle.service_status.as_deref(), Some("onRoute"));
            districts.insert(topic.district.clone());
        });
        assert_eq!(
            districts.len(),
            DISTRICTS.len(),
            "vehicles visited {districts:?}"
        );
    }

    #[test]
    fn energy_import_never_decreases() {
        let mut last = HashMap::new();
        simulate_day(|id, _, topic, payload| {
            if topic.kind != DeviceKind::Energy {
                return;
            }
            let meter: AcMeasurement = serde_json::from_slice(payload).unwrap();
            let imported = meter.total_active_energy_import.unwrap();
            if let Some(before) = last.insert(id.to_string(), imported) {
                assert!(imported >= before, "{id}: {before} kWh then {imported} kWh");
            }
        });
        assert_eq!(last.len(), 400);
    }

    #[test]
    fn the_seed_decides_every_reading() {
        let config = SimulatorConfig {
            traffic_counters: 12,
            energy_meters: 12,
            vehicles: 12,
            ..SimulatorConfig::default()
        };
        let readings = |config: &SimulatorConfig| -> Vec<_> {
            fleet(config)
                .iter_mut()
                .map(|d| d.next(midnight() + chrono::Duration::hours(9)))
                .collect()
        };
        assert_eq!(readings(&config), readings(&config));
        assert_ne!(
            readings(&config),
            readings(&SimulatorConfig {
                seed: 2,
                ..config.clone()
            })
        );
    }
}
