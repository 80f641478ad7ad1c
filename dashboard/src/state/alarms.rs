//! The active alarms: the latest record of every alarm read from the `alerts` topic, kept while
//! its state is active and forgotten once it clears.

use std::collections::BTreeMap;

use polis_telemetry::AlertRecord;

/// Active alarms kept at most; records that would raise another one are refused until some clear.
const MAX_ACTIVE_ALARMS: usize = 10_000;

/// What [`ActiveAlarms::apply`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlarmApplied {
    /// The alarm was raised, changed state or cleared: viewers must hear of it.
    Changed,
    /// A clear of an alarm that was not active: nothing to tell.
    Unknown,
    /// The record would raise an alarm beyond [`MAX_ACTIVE_ALARMS`].
    Limit,
}

/// Per `alert_id`, the latest record of each active alarm.
#[derive(Default)]
pub(crate) struct ActiveAlarms {
    by_id: BTreeMap<String, AlertRecord>,
}

impl ActiveAlarms {
    /// Makes `record` its alarm's state: kept while active, the alarm removed once cleared.
    /// Records must come in log order (the `alerts` topic is keyed by `alert_id`).
    pub(crate) fn apply(&mut self, record: AlertRecord) -> AlarmApplied {
        if !record.state.is_active() {
            return match self.by_id.remove(&record.alert_id) {
                Some(_) => AlarmApplied::Changed,
                None => AlarmApplied::Unknown,
            };
        }
        if !self.by_id.contains_key(&record.alert_id) && self.by_id.len() >= MAX_ACTIVE_ALARMS {
            return AlarmApplied::Limit;
        }
        self.by_id.insert(record.alert_id.clone(), record);
        AlarmApplied::Changed
    }

    /// Active alarms, most severe first, then the most recently raised, then by id.
    pub(crate) fn active(&self) -> Vec<&AlertRecord> {
        let mut active: Vec<&AlertRecord> = self.by_id.values().collect();
        active.sort_by(|a, b| {
            (a.severity, b.raised_at, &a.alert_id).cmp(&(b.severity, a.raised_at, &b.alert_id))
        });
        active
    }

    /// How many alarms are active.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta};
    use polis_telemetry::{AlertState, Severity};

    use super::*;

    fn alarm(
        rule: &str,
        entity: &str,
        severity: Severity,
        state: AlertState,
        raised: i64,
    ) -> AlertRecord {
        let raised_at = DateTime::from_timestamp(1_700_000_000 + raised, 0).unwrap();
        AlertRecord {
            alert_id: AlertRecord::id(rule, entity),
            rule: rule.to_string(),
            severity,
            state,
            entity_kind: "district".to_string(),
            entity: entity.to_string(),
            metric: "traffic.congestion_index".to_string(),
            value: 0.9,
            threshold: 0.7,
            message: format!("{rule} in {entity}"),
            raised_at,
            changed_at: raised_at + TimeDelta::seconds(5),
            acknowledged_by: (state == AlertState::Acknowledged).then(|| "operator".to_string()),
        }
    }

    fn ids(alarms: &ActiveAlarms) -> Vec<(&str, AlertState)> {
        alarms
            .active()
            .into_iter()
            .map(|a| (a.alert_id.as_str(), a.state))
            .collect()
    }

    #[test]
    fn the_latest_record_is_the_state_and_a_clear_removes_the_alarm() {
        let mut alarms = ActiveAlarms::default();
        let raised = alarm(
            "congestion",
            "centre",
            Severity::Major,
            AlertState::Raised,
            0,
        );
        assert_eq!(alarms.apply(raised), AlarmApplied::Changed);
        let acknowledged = alarm(
            "congestion",
            "centre",
            Severity::Major,
            AlertState::Acknowledged,
            0,
        );
        assert_eq!(alarms.apply(acknowledged), AlarmApplied::Changed);
        assert_eq!(
            ids(&alarms),
            vec![("congestion/centre", AlertState::Acknowledged)]
        );
        let cleared = alarm(
            "congestion",
            "centre",
            Severity::Major,
            AlertState::Cleared,
            0,
        );
        assert_eq!(alarms.apply(cleared.clone()), AlarmApplied::Changed);
        assert_eq!(alarms.len(), 0);
        assert_eq!(alarms.apply(cleared), AlarmApplied::Unknown);
    }

    #[test]
    fn active_alarms_are_ordered_by_severity_then_newest_first() {
        let mut alarms = ActiveAlarms::default();
        for record in [
            alarm(
                "low-voltage",
                "port",
                Severity::Warning,
                AlertState::Raised,
                50,
            ),
            alarm(
                "congestion",
                "north",
                Severity::Major,
                AlertState::Raised,
                10,
            ),
            alarm(
                "congestion",
                "south",
                Severity::Major,
                AlertState::Raised,
                20,
            ),
            alarm("silence", "em-1", Severity::Critical, AlertState::Raised, 0),
        ] {
            alarms.apply(record);
        }
        let order: Vec<&str> = ids(&alarms).into_iter().map(|(id, _)| id).collect();
        assert_eq!(
            order,
            vec![
                "silence/em-1",
                "congestion/south",
                "congestion/north",
                "low-voltage/port"
            ]
        );
    }

    #[test]
    fn alarms_beyond_the_limit_are_refused_but_known_ones_still_change() {
        let mut alarms = ActiveAlarms::default();
        for n in 0..MAX_ACTIVE_ALARMS {
            let raised = alarm(
                "r",
                &format!("e{n}"),
                Severity::Minor,
                AlertState::Raised,
                0,
            );
            assert_eq!(alarms.apply(raised), AlarmApplied::Changed);
        }
        let one_more = alarm("r", "extra", Severity::Minor, AlertState::Raised, 0);
        assert_eq!(alarms.apply(one_more), AlarmApplied::Limit);
        let known = alarm("r", "e0", Severity::Minor, AlertState::Acknowledged, 0);
        assert_eq!(alarms.apply(known), AlarmApplied::Changed);
        assert_eq!(alarms.len(), MAX_ACTIVE_ALARMS);
    }
}
