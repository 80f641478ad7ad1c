//! A bus or tram on its line, reporting FIWARE Vehicle readings.
//!
//! The vehicle shuttles along its route's polyline, end to end and back, at a cruising speed that
//! drops when the roads are busy. Its delay is a bounded random walk pulled towards a target that
//! grows with road demand, so buses fall behind in the rush hours and recover at night. The
//! district of each reading is the one whose centre is nearest to the vehicle.

use chrono::{DateTime, Utc};
use polis_telemetry::fiware::{GeoPoint, Vehicle};
use polis_telemetry::reading::format_time;
use polis_telemetry::{DeviceKind, DeviceTopic};
use rand::Rng;
use rand::rngs::StdRng;

use crate::city::{Route, nearest_district};
use crate::daily;
use crate::geo::{LatLon, Polyline};
use crate::sample::{Drift, jitter, round_to};

/// Chance that a reading finds the vehicle standing at a stop or a light.
const STOPPED_SHARE: f64 = 0.15;
/// Delay bounds in seconds: a little early at most, never more than 20 minutes late.
const DELAY_RANGE_S: (f64, f64) = (-120.0, 1200.0);
/// Delay the timetable cannot absorb at a road demand of 1, in seconds.
const PEAK_DELAY_S: f64 = 240.0;
/// Share of the gap between delay and its target closed per minute.
const DELAY_PULL_PER_MIN: f64 = 0.05;

/// A simulated transit vehicle, `bus-{route}-{n}`.
#[derive(Debug, Clone)]
pub struct TransitVehicle {
    id: String,
    route_id: &'static str,
    path: Polyline,
    /// Metres travelled since the first waypoint; the vehicle turns back at each end.
    travelled_m: f64,
    previous: Option<DateTime<Utc>>,
    cruise_kmh: f64,
    delay_s: f64,
    /// How popular this run is, 0.7–1.1.
    ridership: f64,
    crowd: Drift,
    rng: StdRng,
}

impl TransitVehicle {
    /// Vehicle number `number` of `route`, starting `start_fraction` (0–1) of the way through a
    /// round trip.
    pub fn new(route: &Route, number: usize, start_fraction: f64, mut rng: StdRng) -> Self {
        let path = Polyline::new(route.waypoints);
        TransitVehicle {
            id: format!("bus-{}-{number}", route.id),
            route_id: route.id,
            travelled_m: start_fraction.clamp(0.0, 1.0) * 2.0 * path.length_m(),
            path,
            previous: None,
            cruise_kmh: rng.random_range(22.0..30.0),
            delay_s: rng.random_range(0.0..60.0),
            ridership: rng.random_range(0.7..1.1),
            crowd: Drift::new(0.1, 0.03),
            rng,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The vehicle's state at `now`, after moving on from its previous reading.
    pub fn next(&mut self, now: DateTime<Utc>) -> (DeviceTopic, Vec<u8>) {
        let demand = daily::traffic_demand(daily::hour_of_day(now));
        let elapsed_s = self.previous.map_or(0.0, |then| {
            (now - then).num_milliseconds().max(0) as f64 / 1000.0
        });
        self.previous = Some(now);

        let moving_kmh = self.cruise_kmh * (1.0 - 0.35 * demand.min(1.0));
        self.travelled_m += moving_kmh * (1.0 - STOPPED_SHARE) / 3.6 * elapsed_s;
        let (position, bearing) = self.locate();
        let speed = if self.rng.random_bool(STOPPED_SHARE) {
            0.0
        } else {
            (moving_kmh + jitter(&mut self.rng, 4.0)).max(0.0)
        };

        let minutes = elapsed_s / 60.0;
        let pull = (DELAY_PULL_PER_MIN * minutes).min(1.0);
        let step = pull * (PEAK_DELAY_S * demand - self.delay_s)
            + jitter(&mut self.rng, 15.0) * minutes.sqrt();
        self.delay_s = (self.delay_s + step).clamp(DELAY_RANGE_S.0, DELAY_RANGE_S.1);

        let occupancy =
            0.1 + 0.75 * demand.min(1.0) * self.ridership + self.crowd.advance(&mut self.rng);
        let payload = Vehicle {
            observation_date_time: format_time(now),
            location: GeoPoint::new(round_to(position.lon, 6), round_to(position.lat, 6)),
            speed: round_to(speed, 1),
            bearing: Some(round_to(bearing, 1) % 360.0),
            service_status: Some("onRoute".to_string()),
            route_id: self.route_id.to_string(),
            delay: self.delay_s.round(),
            occupancy: Some(round_to(occupancy.clamp(0.0, 1.0), 2)),
        };
        let topic = DeviceTopic {
            district: nearest_district(position).name.to_string(),
            kind: DeviceKind::Transport,
            device_id: self.id.clone(),
        };
        let json = serde_json::to_vec(&payload).expect("a Vehicle always serializes");
        (topic, json)
    }

    /// Where the vehicle is on its round trip and which way it faces.
    fn locate(&self) -> (LatLon, f64) {
        let length = self.path.length_m();
        let along = self.travelled_m.rem_euclid(2.0 * length);
        if along <= length {
            self.path.at(along)
        } else {
            let (position, outbound) = self.path.at(2.0 * length - along);
            (position, (outbound + 180.0) % 360.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::city::ROUTES;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        format!("2026-11-25T{hour:02}:{minute:02}:00Z")
            .parse()
            .unwrap()
    }

    fn report(bus: &mut TransitVehicle, now: DateTime<Utc>) -> (DeviceTopic, Vehicle) {
        let (topic, json) = bus.next(now);
        (topic, serde_json::from_slice(&json).unwrap())
    }

    fn position(reading: &Vehicle) -> LatLon {
        let [lon, lat] = reading.location.coordinates;
        LatLon::new(lat, lon)
    }

    #[test]
    fn moves_along_its_route_at_a_plausible_speed() {
        let route = &ROUTES[0];
        let mut bus = TransitVehicle::new(route, 1, 0.0, StdRng::seed_from_u64(5));
        let (topic, start) = report(&mut bus, at(11, 0));
        assert_eq!(topic.mqtt_topic(), "city/university/transport/bus-L1-1");
        assert!(position(&start).distance_m(route.waypoints[0]) < 0.5);
        let (_, later) = report(&mut bus, at(11, 5));
        let moved_km = position(&later).distance_m(route.waypoints[0]) / 1000.0;
        assert!(
            (0.8..2.5).contains(&moved_km),
            "moved {moved_km} km in 5 minutes"
        );
    }

    #[test]
    fn turns_back_at_the_end_of_the_line() {
        let route = &ROUTES[3];
        let mut bus = TransitVehicle::new(route, 1, 0.25, StdRng::seed_from_u64(6));
        let (_, outbound) = report(&mut bus, at(3, 0));
        let mut bus = TransitVehicle::new(route, 2, 0.75, StdRng::seed_from_u64(6));
        let (_, inbound) = report(&mut bus, at(3, 0));
        assert!(position(&outbound).distance_m(position(&inbound)) < 0.5);
        let turned = (inbound.bearing.unwrap() - outbound.bearing.unwrap()).rem_euclid(360.0);
        assert!((turned - 180.0).abs() < 0.2, "{turned}");
    }

    #[test]
    fn falls_behind_in_the_rush_hour_and_recovers_at_night() {
        let mean_delay = |hour: u32| -> f64 {
            (0..30)
                .map(|i| {
                    let mut bus = TransitVehicle::new(
                        &ROUTES[i % 6],
                        i,
                        0.0,
                        StdRng::seed_from_u64(i as u64),
                    );
                    (0..=60)
                        .step_by(5)
                        .map(|m| {
                            report(&mut bus, at(hour, 0) + chrono::Duration::minutes(m))
                                .1
                                .delay
                        })
                        .last()
                        .unwrap()
                })
                .sum::<f64>()
                / 30.0
        };
        assert!(mean_delay(7) > mean_delay(2) + 60.0);
    }
}
