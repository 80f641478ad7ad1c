//! The dashboard's view of the city: a bounded history of metric windows, the active alarms and
//! the presence of devices, kept current by one task per followed topic (`metrics`, `alerts`,
//! `devices`) that publishes each change to the viewers. The charts and the district map are
//! drawn from the history once per metrics change and kept with it.

mod alarms;
mod follow;
mod history;
mod presence;

use polis_telemetry::{AlertRecord, MetricRecord, PresenceRecord};

pub(crate) use alarms::{ActiveAlarms, AlarmApplied};
pub(crate) use follow::{FollowStats, follow};
pub(crate) use history::MetricHistory;
pub(crate) use presence::{DevicePresence, PresenceApplied};

use crate::charts::Charts;
use crate::map::DistrictMap;

/// Everything viewers are shown, shared by the follower tasks behind one lock.
pub(crate) struct City {
    pub(crate) history: MetricHistory,
    pub(crate) alarms: ActiveAlarms,
    pub(crate) presence: DevicePresence,
    /// Drawn from `history` at its latest change.
    pub(crate) charts: Charts,
    pub(crate) map: DistrictMap,
}

impl City {
    pub(crate) fn new(history: MetricHistory) -> City {
        let charts = Charts::render(&history);
        let map = DistrictMap::render(&history);
        City {
            history,
            alarms: ActiveAlarms::default(),
            presence: DevicePresence::default(),
            charts,
            map,
        }
    }

    /// Draws the charts and the map again from the history.
    pub(crate) fn redraw(&mut self) {
        self.charts = Charts::render(&self.history);
        self.map = DistrictMap::render(&self.history);
    }
}

/// What one batch of records changed, in the order it was read.
#[derive(Default)]
pub(crate) struct Change {
    /// Metric windows stored (new, or a higher revision).
    pub(crate) metrics: Vec<MetricRecord>,
    /// Alarm records that changed an alarm, the cleared ones included.
    pub(crate) alarms: Vec<AlertRecord>,
    /// Presence events that changed a device's state.
    pub(crate) devices: Vec<PresenceRecord>,
}

impl Change {
    pub(crate) fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.alarms.is_empty() && self.devices.is_empty()
    }
}
