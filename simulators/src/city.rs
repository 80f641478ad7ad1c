//! The fictional city the simulators live in: six districts around 40.4° N, 3.7° W and six
//! bus and tram lines that cross them.

use crate::geo::LatLon;

/// What drives a district's electricity demand over the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadProfile {
    /// Homes: a small morning peak and a large evening peak.
    Residential,
    /// Shops, offices and lecture halls: busy during business hours.
    Commercial,
    /// Plants running in shifts: heavy all day, lighter at night.
    Industrial,
}

/// A named part of the city; the second level of its devices' MQTT topics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct District {
    /// Topic-safe name (`A-Z a-z 0-9 - _`).
    pub name: &'static str,
    pub centre: LatLon,
    /// Road traffic relative to the busiest district (1.0).
    pub traffic_weight: f64,
    /// Typical demand of one metered site in kW before the daily curve is applied.
    pub base_load_kw: f64,
    pub profile: LoadProfile,
}

/// A bus or tram line: the polyline its vehicles shuttle along, end to end and back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    /// Topic-safe line id, `L1`…`L6`.
    pub id: &'static str,
    pub waypoints: &'static [LatLon],
}

pub static DISTRICTS: [District; 6] = [
    District {
        name: "old-town",
        centre: LatLon::new(40.4150, -3.7070),
        traffic_weight: 1.0,
        base_load_kw: 45.0,
        profile: LoadProfile::Commercial,
    },
    District {
        name: "harbour",
        centre: LatLon::new(40.3900, -3.6750),
        traffic_weight: 0.8,
        base_load_kw: 90.0,
        profile: LoadProfile::Commercial,
    },
    District {
        name: "university",
        centre: LatLon::new(40.4450, -3.7280),
        traffic_weight: 0.7,
        base_load_kw: 60.0,
        profile: LoadProfile::Commercial,
    },
    District {
        name: "riverside",
        centre: LatLon::new(40.3980, -3.7200),
        traffic_weight: 0.6,
        base_load_kw: 25.0,
        profile: LoadProfile::Residential,
    },
    District {
        name: "industrial",
        centre: LatLon::new(40.3700, -3.6900),
        traffic_weight: 0.9,
        base_load_kw: 300.0,
        profile: LoadProfile::Industrial,
    },
    District {
        name: "north-hills",
        centre: LatLon::new(40.4650, -3.6900),
        traffic_weight: 0.4,
        base_load_kw: 18.0,
        profile: LoadProfile::Residential,
    },
];

pub static ROUTES: [Route; 6] = [
    Route {
        id: "L1",
        waypoints: &[
            LatLon::new(40.4450, -3.7280),
            LatLon::new(40.4300, -3.7180),
            LatLon::new(40.4150, -3.7070),
            LatLon::new(40.4030, -3.6900),
            LatLon::new(40.3900, -3.6750),
        ],
    },
    Route {
        id: "L2",
        waypoints: &[
            LatLon::new(40.4650, -3.6900),
            LatLon::new(40.4480, -3.6980),
            LatLon::new(40.4300, -3.7030),
            LatLon::new(40.4150, -3.7070),
            LatLon::new(40.4050, -3.7150),
            LatLon::new(40.3980, -3.7200),
        ],
    },
    Route {
        id: "L3",
        waypoints: &[
            LatLon::new(40.3980, -3.7200),
            LatLon::new(40.3850, -3.7080),
            LatLon::new(40.3700, -3.6900),
            LatLon::new(40.3800, -3.6800),
            LatLon::new(40.3900, -3.6750),
        ],
    },
    Route {
        id: "L4",
        waypoints: &[
            LatLon::new(40.4450, -3.7280),
            LatLon::new(40.4550, -3.7150),
            LatLon::new(40.4620, -3.7000),
            LatLon::new(40.4650, -3.6900),
        ],
    },
    Route {
        id: "L5",
        waypoints: &[
            LatLon::new(40.4150, -3.7070),
            LatLon::new(40.4000, -3.7000),
            LatLon::new(40.3850, -3.6950),
            LatLon::new(40.3700, -3.6900),
        ],
    },
    Route {
        id: "L6",
        waypoints: &[
            LatLon::new(40.3900, -3.6750),
            LatLon::new(40.4100, -3.6780),
            LatLon::new(40.4300, -3.6820),
            LatLon::new(40.4500, -3.6860),
            LatLon::new(40.4650, -3.6900),
        ],
    },
];

/// The district whose centre is closest to `position`.
pub fn nearest_district(position: LatLon) -> &'static District {
    DISTRICTS
        .iter()
        .min_by(|a, b| {
            position
                .distance_m(a.centre)
                .total_cmp(&position.distance_m(b.centre))
        })
        .expect("the city has districts")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn topic_safe(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn names_are_unique_and_topic_safe() {
        let districts: HashSet<_> = DISTRICTS.iter().map(|d| d.name).collect();
        let routes: HashSet<_> = ROUTES.iter().map(|r| r.id).collect();
        assert_eq!(districts.len(), DISTRICTS.len());
        assert_eq!(routes.len(), ROUTES.len());
        assert!(districts.iter().chain(&routes).all(|s| topic_safe(s)));
    }

    #[test]
    fn each_centre_is_nearest_to_itself() {
        for district in &DISTRICTS {
            assert_eq!(nearest_district(district.centre).name, district.name);
        }
    }

    #[test]
    fn every_route_crosses_at_least_two_districts() {
        for route in &ROUTES {
            let crossed: HashSet<_> = route
                .waypoints
                .iter()
                .map(|&p| nearest_district(p).name)
                .collect();
            assert!(crossed.len() >= 2, "{} stays in {crossed:?}", route.id);
        }
    }

    #[test]
    fn the_industrial_district_draws_the_most_power() {
        let heaviest = DISTRICTS
            .iter()
            .max_by(|a, b| a.base_load_kw.total_cmp(&b.base_load_kw));
        assert_eq!(heaviest.map(|d| d.profile), Some(LoadProfile::Industrial));
    }
}
