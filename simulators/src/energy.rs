//! An electricity meter: one three-phase metered site, reporting ACMeasurement-style readings.
//!
//! Active power follows the district's daily load curve scaled by the site's size, with slow
//! drift and noise. Imported energy accumulates power × elapsed time (trapezoidal), so it never
//! decreases. Phase voltages stay within ±3 % of 230 V and phase currents are the ones the
//! power, voltage and power factor imply.

use chrono::{DateTime, Utc};
use polis_telemetry::fiware::{AcMeasurement, PhaseValues};
use polis_telemetry::reading::format_time;
use polis_telemetry::{DeviceKind, DeviceTopic};
use rand::Rng;
use rand::rngs::StdRng;

use crate::city::District;
use crate::daily;
use crate::sample::{Drift, jitter, round_to};

/// Nominal phase-to-neutral voltage.
const NOMINAL_V: f64 = 230.0;
/// Lowest power a site draws (standby), kW.
const STANDBY_KW: f64 = 0.05;

/// A simulated electricity meter, `em-{district}-{n}`.
#[derive(Debug, Clone)]
pub struct EnergyMeter {
    topic: DeviceTopic,
    district: &'static District,
    /// Site size relative to the district's base load, 0.5–1.5.
    size: f64,
    imported_kwh: f64,
    /// Time and power of the previous reading.
    previous: Option<(DateTime<Utc>, f64)>,
    load: Drift,
    /// Per-phase steady deviation from nominal voltage, V.
    voltage_offsets: [f64; 3],
    /// Per-phase share of the load relative to an even split.
    imbalance: [f64; 3],
    power_factor: f64,
    rng: StdRng,
}

impl EnergyMeter {
    /// Meter number `number` of `district`.
    pub fn new(district: &'static District, number: usize, mut rng: StdRng) -> Self {
        let size = rng.random_range(0.5..1.5);
        let a = jitter(&mut rng, 0.04);
        let b = jitter(&mut rng, 0.04);
        EnergyMeter {
            topic: DeviceTopic {
                district: district.name.to_string(),
                kind: DeviceKind::Energy,
                device_id: format!("em-{}-{number}", district.name),
            },
            district,
            size,
            imported_kwh: rng.random_range(1_000.0..50_000.0) * size,
            previous: None,
            load: Drift::new(0.1, 0.02),
            voltage_offsets: [(); 3].map(|()| jitter(&mut rng, 2.5)),
            imbalance: [a, b, -a - b],
            power_factor: rng.random_range(0.88..0.97),
            rng,
        }
    }

    pub fn id(&self) -> &str {
        &self.topic.device_id
    }

    /// The measurement at `now`.
    pub fn next(&mut self, now: DateTime<Utc>) -> (DeviceTopic, Vec<u8>) {
        let curve = daily::load_factor(self.district.profile, daily::hour_of_day(now));
        let variation = 1.0 + self.load.advance(&mut self.rng) + jitter(&mut self.rng, 0.02);
        let power_kw = (self.district.base_load_kw * self.size * curve * variation).max(STANDBY_KW);
        if let Some((then, before_kw)) = self.previous {
            let hours = (now - then).num_milliseconds().max(0) as f64 / 3_600_000.0;
            self.imported_kwh += (before_kw + power_kw) / 2.0 * hours;
        }
        self.previous = Some((now, power_kw));

        let power_factor = (self.power_factor + jitter(&mut self.rng, 0.02)).clamp(0.85, 0.99);
        let volts =
            [0, 1, 2].map(|i| NOMINAL_V + self.voltage_offsets[i] + jitter(&mut self.rng, 3.5));
        let amps = [0, 1, 2].map(|i| {
            power_kw * 1000.0 / 3.0 * (1.0 + self.imbalance[i]) / (volts[i] * power_factor)
        });
        let phases = |v: [f64; 3], decimals| PhaseValues::Phases {
            l1: round_to(v[0], decimals),
            l2: round_to(v[1], decimals),
            l3: round_to(v[2], decimals),
        };
        let payload = AcMeasurement {
            date_observed: format_time(now),
            total_active_power: round_to(power_kw, 3),
            total_active_energy_import: Some(round_to(self.imported_kwh, 3)),
            phase_voltage: phases(volts, 1),
            current: Some(phases(amps, 2)),
            power_factor: Some(round_to(power_factor, 3)),
        };
        let json = serde_json::to_vec(&payload).expect("an AcMeasurement always serializes");
        (self.topic.clone(), json)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::city::{DISTRICTS, LoadProfile};

    fn at(hour: u32) -> DateTime<Utc> {
        format!("2026-11-25T{hour:02}:00:00Z").parse().unwrap()
    }

    fn measure(meter: &mut EnergyMeter, now: DateTime<Utc>) -> AcMeasurement {
        serde_json::from_slice(&meter.next(now).1).unwrap()
    }

    fn phases(values: &PhaseValues) -> [f64; 3] {
        match *values {
            PhaseValues::Phases { l1, l2, l3 } => [l1, l2, l3],
            PhaseValues::Single(v) => [v; 3],
        }
    }

    #[test]
    fn current_matches_power_voltage_and_power_factor() {
        let mut meter = EnergyMeter::new(&DISTRICTS[0], 1, StdRng::seed_from_u64(3));
        assert_eq!(meter.id(), "em-old-town-1");
        for hour in 0..24 {
            let m = measure(&mut meter, at(hour));
            let (volts, amps) = (
                phases(&m.phase_voltage),
                phases(m.current.as_ref().unwrap()),
            );
            assert!(
                volts.iter().all(|v| (223.1..=236.9).contains(v)),
                "{volts:?}"
            );
            let pf = m.power_factor.unwrap();
            assert!((0.85..=0.99).contains(&pf));
            let watts: f64 = (0..3).map(|i| volts[i] * amps[i] * pf).sum();
            let expected = m.total_active_power * 1000.0;
            assert!(
                (watts - expected).abs() <= expected * 0.01 + 5.0,
                "{watts} W vs {expected} W"
            );
        }
    }

    #[test]
    fn import_is_power_integrated_over_time() {
        let mut meter = EnergyMeter::new(&DISTRICTS[1], 1, StdRng::seed_from_u64(4));
        let first = measure(&mut meter, at(10));
        let second = measure(&mut meter, at(11));
        let mean_kw = (first.total_active_power + second.total_active_power) / 2.0;
        let gained =
            second.total_active_energy_import.unwrap() - first.total_active_energy_import.unwrap();
        assert!(
            (gained - mean_kw).abs() < 0.01,
            "{gained} kWh in an hour at {mean_kw} kW"
        );
    }

    #[test]
    fn industry_draws_more_than_homes() {
        let industrial = DISTRICTS
            .iter()
            .find(|d| d.profile == LoadProfile::Industrial)
            .unwrap();
        let residential = DISTRICTS
            .iter()
            .find(|d| d.profile == LoadProfile::Residential)
            .unwrap();
        let total = |district: &'static District| -> f64 {
            (0..20)
                .map(|i| {
                    measure(
                        &mut EnergyMeter::new(district, i, StdRng::seed_from_u64(i as u64)),
                        at(12),
                    )
                })
                .map(|m| m.total_active_power)
                .sum()
        };
        assert!(total(industrial) > 3.0 * total(residential));
    }
}
