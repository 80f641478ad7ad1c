//! How demand changes over the day. The simulated city keeps UTC: the hour of a reading is the
//! UTC hour of its observation time.

use chrono::{DateTime, Timelike, Utc};

use crate::city::LoadProfile;

/// Hours since midnight, `0.0..24.0`.
pub(crate) fn hour_of_day(t: DateTime<Utc>) -> f64 {
    f64::from(t.num_seconds_from_midnight()) / 3600.0
}

/// Road demand: about 0.06 at night, 1.1 in the morning rush at 08:00 and 1.0 in the evening rush
/// at 17:45, with a midday shoulder.
pub(crate) fn traffic_demand(hour: f64) -> f64 {
    0.06 + bump(hour, 8.0, 1.2) + 0.85 * bump(hour, 17.75, 1.6) + 0.4 * bump(hour, 13.0, 2.5)
}

/// Electricity demand relative to a district's base load, between about 0.3 and 1.1.
pub(crate) fn load_factor(profile: LoadProfile, hour: f64) -> f64 {
    match profile {
        LoadProfile::Residential => {
            0.35 + 0.3 * bump(hour, 7.5, 1.2)
                + 0.65 * bump(hour, 20.0, 2.0)
                + 0.15 * bump(hour, 13.0, 3.0)
        }
        LoadProfile::Commercial => 0.3 + 0.75 * plateau(hour, 8.0, 19.0),
        LoadProfile::Industrial => 0.7 + 0.35 * plateau(hour, 6.0, 22.0),
    }
}

/// A bell curve peaking at 1 at `centre` o'clock, `width` hours wide, wrapping around midnight.
fn bump(hour: f64, centre: f64, width: f64) -> f64 {
    let apart = (hour - centre).rem_euclid(24.0);
    let apart = apart.min(24.0 - apart);
    (-0.5 * (apart / width).powi(2)).exp()
}

/// Close to 1 between `start` and `end` o'clock and close to 0 outside, with soft shoulders.
fn plateau(hour: f64, start: f64, end: f64) -> f64 {
    logistic((hour - start) / 0.5) * logistic((end - hour) / 0.5)
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> impl Iterator<Item = f64> {
        (0..24 * 12).map(|i| f64::from(i) / 12.0)
    }

    #[test]
    fn traffic_peaks_in_the_rush_hours_and_sleeps_at_night() {
        assert!(traffic_demand(8.0) > 10.0 * traffic_demand(3.0));
        assert!(traffic_demand(17.75) > 5.0 * traffic_demand(23.5));
        assert!(traffic_demand(8.0) > traffic_demand(11.0));
        assert!(hours().all(|h| (0.05..1.2).contains(&traffic_demand(h))));
    }

    #[test]
    fn load_curves_follow_their_profile() {
        use LoadProfile::*;
        assert!(load_factor(Residential, 20.0) > 1.5 * load_factor(Residential, 3.0));
        assert!(load_factor(Commercial, 12.0) > 2.0 * load_factor(Commercial, 2.0));
        assert!(load_factor(Industrial, 3.0) >= 0.7);
        for profile in [Residential, Commercial, Industrial] {
            assert!(hours().all(|h| (0.29..1.15).contains(&load_factor(profile, h))));
        }
    }

    #[test]
    fn reads_the_hour_from_utc() {
        let t = DateTime::parse_from_rfc3339("2026-11-25T08:30:00+02:00").unwrap();
        assert_eq!(hour_of_day(t.with_timezone(&Utc)), 6.5);
    }
}
