//! A traffic counter: one induction loop on one lane, reporting FIWARE TrafficFlowObserved.
//!
//! The lane's load (flow relative to its capacity) follows the daily rhythm scaled by the
//! district's traffic weight and how busy the street is, plus slow drift and noise. Occupancy
//! grows with the square of the load and speed falls as occupancy grows, so a reading with more
//! vehicles also has a fuller detector and slower traffic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use polis_telemetry::fiware::TrafficFlowObserved;
use polis_telemetry::reading::format_time;
use polis_telemetry::{DeviceKind, DeviceTopic};
use rand::Rng;
use rand::rngs::StdRng;

use crate::city::District;
use crate::daily;
use crate::sample::{Drift, jitter, round_to, stochastic_round};

/// Vehicles per hour one urban lane carries at saturation.
const LANE_CAPACITY_VPH: f64 = 1800.0;
/// Highest load reached (queues back up beyond capacity).
const MAX_LOAD: f64 = 1.3;
/// Occupancy above which a lane reports itself congested.
const CONGESTED_OCCUPANCY: f64 = 0.5;

/// A simulated traffic counter, `tc-{district}-{n}`.
#[derive(Debug, Clone)]
pub struct TrafficCounter {
    topic: DeviceTopic,
    district: &'static District,
    period_h: f64,
    lane_id: i64,
    /// How busy this street is compared with its district, 0.6–1.2.
    street_factor: f64,
    free_flow_kmh: f64,
    busy: Drift,
    rng: StdRng,
}

impl TrafficCounter {
    /// Counter number `number` of `district`, counting vehicles over each `period`.
    pub fn new(
        district: &'static District,
        number: usize,
        period: Duration,
        mut rng: StdRng,
    ) -> Self {
        TrafficCounter {
            topic: DeviceTopic {
                district: district.name.to_string(),
                kind: DeviceKind::Traffic,
                device_id: format!("tc-{}-{number}", district.name),
            },
            district,
            period_h: period.as_secs_f64() / 3600.0,
            lane_id: rng.random_range(1..=3),
            street_factor: rng.random_range(0.6..1.2),
            free_flow_kmh: rng.random_range(40.0..60.0),
            busy: Drift::new(0.15, 0.03),
            rng,
        }
    }

    pub fn id(&self) -> &str {
        &self.topic.device_id
    }

    /// The observation for the period ending at `now`.
    pub fn next(&mut self, now: DateTime<Utc>) -> (DeviceTopic, Vec<u8>) {
        let demand = daily::traffic_demand(daily::hour_of_day(now))
            * self.district.traffic_weight
            * self.street_factor;
        let variation = 1.0 + self.busy.advance(&mut self.rng) + jitter(&mut self.rng, 0.1);
        let load = (demand * variation).clamp(0.0, MAX_LOAD);
        let intensity = stochastic_round(&mut self.rng, LANE_CAPACITY_VPH * load * self.period_h);
        let occupancy = round_to(
            (0.02 + 0.55 * load * load + jitter(&mut self.rng, 0.02)).clamp(0.0, 1.0),
            3,
        );
        let speed =
            (self.free_flow_kmh * (1.0 - 0.8 * occupancy) + jitter(&mut self.rng, 2.0)).max(3.0);
        let payload = TrafficFlowObserved {
            date_observed: format_time(now),
            intensity,
            occupancy,
            average_vehicle_speed: round_to(speed, 1),
            lane_id: Some(self.lane_id),
            congested: Some(occupancy > CONGESTED_OCCUPANCY),
        };
        let json = serde_json::to_vec(&payload).expect("a TrafficFlowObserved always serializes");
        (self.topic.clone(), json)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::city::DISTRICTS;

    fn at(hour: u32) -> DateTime<Utc> {
        format!("2026-11-25T{hour:02}:00:00Z").parse().unwrap()
    }

    fn observe(counter: &mut TrafficCounter, now: DateTime<Utc>) -> TrafficFlowObserved {
        serde_json::from_slice(&counter.next(now).1).unwrap()
    }

    fn counters() -> Vec<TrafficCounter> {
        (0..60)
            .map(|i| {
                let rng = StdRng::seed_from_u64(i);
                TrafficCounter::new(
                    &DISTRICTS[i as usize % 6],
                    i as usize,
                    Duration::from_secs(300),
                    rng,
                )
            })
            .collect()
    }

    #[test]
    fn names_itself_after_its_district() {
        let counter = &counters()[7];
        assert_eq!(counter.id(), "tc-harbour-7");
        assert_eq!(
            counter.clone().next(at(8)).0.mqtt_topic(),
            "city/harbour/traffic/tc-harbour-7"
        );
    }

    #[test]
    fn more_vehicles_mean_fuller_detectors_and_slower_traffic() {
        let mut readings: Vec<_> = counters()
            .iter_mut()
            .flat_map(|c| [3, 8, 13, 18].map(|h| observe(c, at(h))))
            .collect();
        readings.sort_by_key(|r| r.intensity);
        let (quiet, busy) = readings.split_at(readings.len() / 2);
        let mean = |rs: &[TrafficFlowObserved], f: fn(&TrafficFlowObserved) -> f64| {
            rs.iter().map(f).sum::<f64>() / rs.len() as f64
        };
        assert!(mean(busy, |r| r.occupancy) > mean(quiet, |r| r.occupancy) + 0.1);
        assert!(
            mean(busy, |r| r.average_vehicle_speed)
                < mean(quiet, |r| r.average_vehicle_speed) - 5.0
        );
        for r in &readings {
            assert_eq!(r.congested, Some(r.occupancy > CONGESTED_OCCUPANCY));
        }
    }

    #[test]
    fn same_seed_same_readings() {
        let (mut a, mut b) = (counters(), counters());
        for (a, b) in a.iter_mut().zip(&mut b) {
            assert_eq!(a.next(at(9)), b.next(at(9)));
        }
    }
}
