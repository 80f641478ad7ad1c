//! Flat-earth geometry, accurate to a few metres inside one city: distances, bearings and
//! positions along a polyline.

/// Mean Earth radius in metres.
const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// A WGS 84 position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

impl LatLon {
    pub const fn new(lat: f64, lon: f64) -> Self {
        LatLon { lat, lon }
    }

    /// Metres east and north from `self` to `other`.
    fn offset_m(self, other: LatLon) -> (f64, f64) {
        let mean_lat = ((self.lat + other.lat) / 2.0).to_radians();
        let east = (other.lon - self.lon).to_radians() * mean_lat.cos() * EARTH_RADIUS_M;
        let north = (other.lat - self.lat).to_radians() * EARTH_RADIUS_M;
        (east, north)
    }

    /// Distance in metres.
    pub fn distance_m(self, other: LatLon) -> f64 {
        let (east, north) = self.offset_m(other);
        east.hypot(north)
    }

    /// Compass bearing from `self` towards `other`: 0 = north, 90 = east, in `0..360`.
    pub fn bearing_deg(self, other: LatLon) -> f64 {
        let (east, north) = self.offset_m(other);
        east.atan2(north).to_degrees().rem_euclid(360.0)
    }

    fn lerp(self, other: LatLon, fraction: f64) -> LatLon {
        LatLon::new(
            self.lat + (other.lat - self.lat) * fraction,
            self.lon + (other.lon - self.lon) * fraction,
        )
    }
}

/// A path through two or more waypoints, measured in metres from the first one.
#[derive(Debug, Clone)]
pub(crate) struct Polyline {
    waypoints: Vec<LatLon>,
    /// Distance from the first waypoint to each waypoint.
    cumulative_m: Vec<f64>,
}

impl Polyline {
    /// A path through `waypoints`; it needs at least two.
    pub(crate) fn new(waypoints: &[LatLon]) -> Self {
        assert!(
            waypoints.len() >= 2,
            "a polyline needs at least two waypoints"
        );
        let mut cumulative_m = vec![0.0];
        for pair in waypoints.windows(2) {
            let last = cumulative_m[cumulative_m.len() - 1];
            cumulative_m.push(last + pair[0].distance_m(pair[1]));
        }
        Polyline {
            waypoints: waypoints.to_vec(),
            cumulative_m,
        }
    }

    pub(crate) fn length_m(&self) -> f64 {
        self.cumulative_m[self.cumulative_m.len() - 1]
    }

    /// The point `distance_m` along the path (clamped to its ends) and the bearing of the segment
    /// it lies on, in the direction of travel from the first waypoint.
    pub(crate) fn at(&self, distance_m: f64) -> (LatLon, f64) {
        let distance_m = distance_m.clamp(0.0, self.length_m());
        let segment = self
            .cumulative_m
            .partition_point(|&c| c <= distance_m)
            .clamp(1, self.waypoints.len() - 1)
            - 1;
        let (from, to) = (self.waypoints[segment], self.waypoints[segment + 1]);
        let start = self.cumulative_m[segment];
        let span = self.cumulative_m[segment + 1] - start;
        let fraction = if span > 0.0 {
            (distance_m - start) / span
        } else {
            0.0
        };
        (from.lerp(to, fraction), from.bearing_deg(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearings_follow_the_compass() {
        let origin = LatLon::new(40.4, -3.7);
        let north = LatLon::new(40.41, -3.7);
        let east = LatLon::new(40.4, -3.69);
        assert!(origin.bearing_deg(north).abs() < 1e-9);
        assert!((origin.bearing_deg(east) - 90.0).abs() < 1e-6);
        assert!((north.bearing_deg(origin) - 180.0).abs() < 1e-9);
        assert!((east.bearing_deg(origin) - 270.0).abs() < 1e-6);
    }

    #[test]
    fn a_hundredth_of_a_degree_of_latitude_is_about_1112_metres() {
        let d = LatLon::new(40.40, -3.7).distance_m(LatLon::new(40.41, -3.7));
        assert!((d - 1112.0).abs() < 1.0, "{d}");
    }

    #[test]
    fn walks_a_polyline_segment_by_segment() {
        let a = LatLon::new(40.40, -3.70);
        let b = LatLon::new(40.41, -3.70);
        let c = LatLon::new(40.41, -3.69);
        let line = Polyline::new(&[a, b, c]);
        let first = a.distance_m(b);
        assert!((line.length_m() - first - b.distance_m(c)).abs() < 1e-6);
        assert_eq!(line.at(0.0), (a, a.bearing_deg(b)));
        let (middle, bearing) = line.at(first / 2.0);
        assert!((middle.lat - 40.405).abs() < 1e-9);
        assert!(bearing.abs() < 1e-9);
        let (end, bearing) = line.at(line.length_m() + 100.0);
        assert!((end.lat - c.lat).abs() < 1e-12 && (end.lon - c.lon).abs() < 1e-12);
        assert!((bearing - 90.0).abs() < 0.1);
    }
}
