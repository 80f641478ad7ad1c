//! Device presence: the latest connect or disconnect event of every device read from the
//! `devices` topic, which says whether it is online and when it was last seen.

use std::collections::BTreeMap;

use polis_telemetry::PresenceRecord;

/// Devices kept at most; events of further devices are refused.
const MAX_DEVICES: usize = 100_000;

/// What [`DevicePresence::apply`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PresenceApplied {
    /// The device's latest event changed.
    Changed,
    /// The stored event is newer (for example from another gateway).
    Older,
    /// The record would add a device beyond [`MAX_DEVICES`].
    Limit,
}

/// Per device id, its latest presence event.
#[derive(Default)]
pub(crate) struct DevicePresence {
    by_device: BTreeMap<String, PresenceRecord>,
    online: usize,
}

impl DevicePresence {
    /// Keeps `record` unless the device's stored event happened later.
    pub(crate) fn apply(&mut self, record: PresenceRecord) -> PresenceApplied {
        let known = self.by_device.get(&record.device_id);
        if known.is_some_and(|known| known.at > record.at) {
            return PresenceApplied::Older;
        }
        if known.is_none() && self.by_device.len() >= MAX_DEVICES {
            return PresenceApplied::Limit;
        }
        let was_online = known.is_some_and(PresenceRecord::is_online);
        match (was_online, record.is_online()) {
            (false, true) => self.online += 1,
            (true, false) => self.online -= 1,
            _ => {}
        }
        self.by_device.insert(record.device_id.clone(), record);
        PresenceApplied::Changed
    }

    /// Every known device's latest event, by device id.
    pub(crate) fn devices(&self) -> impl Iterator<Item = &PresenceRecord> {
        self.by_device.values()
    }

    /// Devices whose latest event is a connect.
    pub(crate) fn online(&self) -> usize {
        self.online
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use polis_telemetry::PresenceEvent;

    use super::*;

    fn event(device: &str, event: PresenceEvent, at: i64) -> PresenceRecord {
        PresenceRecord {
            device_id: device.to_string(),
            event,
            at: DateTime::from_timestamp(1_700_000_000 + at, 0).unwrap(),
            gateway: "gw-1".to_string(),
            detail: None,
        }
    }

    #[test]
    fn the_latest_event_decides_whether_a_device_is_online() {
        let mut presence = DevicePresence::default();
        use PresenceEvent::*;
        for record in [
            event("tc-1", Connected, 0),
            event("tc-2", Connected, 1),
            event("em-1", Connected, 2),
            event("tc-2", ConnectionLost, 5),
            event("em-1", Disconnected, 6),
            event("em-1", Connected, 7),
        ] {
            assert_eq!(presence.apply(record), PresenceApplied::Changed);
        }
        assert_eq!(presence.online(), 2);
        let states: Vec<(&str, bool)> = presence
            .devices()
            .map(|d| (d.device_id.as_str(), d.is_online()))
            .collect();
        assert_eq!(
            states,
            vec![("em-1", true), ("tc-1", true), ("tc-2", false)]
        );
    }

    #[test]
    fn an_older_event_does_not_replace_a_newer_one() {
        let mut presence = DevicePresence::default();
        presence.apply(event("tc-1", PresenceEvent::Disconnected, 10));
        assert_eq!(
            presence.apply(event("tc-1", PresenceEvent::Connected, 9)),
            PresenceApplied::Older
        );
        assert_eq!(presence.online(), 0);
    }

    #[test]
    fn devices_beyond_the_limit_are_refused() {
        let mut presence = DevicePresence::default();
        for n in 0..MAX_DEVICES {
            presence.apply(event(&format!("d{n}"), PresenceEvent::Connected, 0));
        }
        assert_eq!(
            presence.apply(event("extra", PresenceEvent::Connected, 0)),
            PresenceApplied::Limit
        );
        assert_eq!(
            presence.apply(event("d0", PresenceEvent::Disconnected, 1)),
            PresenceApplied::Changed
        );
        assert_eq!(presence.online(), MAX_DEVICES - 1);
    }
}
