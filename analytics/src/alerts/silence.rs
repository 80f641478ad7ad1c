//! Silent devices, by event time: pure and deterministic like the [engine](super::engine).
//!
//! Per device kind the watermark is the highest event time seen of that kind. A device last seen
//! at `L` is silent once the watermark passes `L + silent_after`; the alarm is raised at that
//! moment (`raised_at = L + silent_after`) and cleared at the event time of the device's next
//! reading. A device whose next reading is more than `silent_after` after `L` was silent even if
//! no other device moved the watermark meanwhile, so it gets the same raise and clear: the
//! records do not depend on how readings interleave across partitions.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use polis_telemetry::{AlertRecord, AlertState, DeviceKind};

use super::rules::{SilenceRule, number, render};
use super::{Actions, is_operator_clear};

/// One reading's device and event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub kind: DeviceKind,
    pub device_id: String,
    pub at: DateTime<Utc>,
}

#[derive(Default, Clone)]
struct PerRule {
    active: Option<AlertRecord>,
    /// The last-seen time whose silence was already raised, so it is raised once.
    raised_for: Option<DateTime<Utc>>,
}

struct Device {
    last: DateTime<Utc>,
    rules: Vec<PerRule>,
}

/// Silence rules over device sightings.
pub struct Silence {
    rules: Vec<SilenceRule>,
    devices: BTreeMap<(DeviceKind, String), Device>,
    watermarks: HashMap<DeviceKind, DateTime<Utc>>,
    actions: Actions,
}

impl Silence {
    pub fn new(rules: Vec<SilenceRule>) -> Silence {
        Silence {
            rules,
            devices: BTreeMap::new(),
            watermarks: HashMap::new(),
            actions: HashMap::new(),
        }
    }

    /// The device kinds some rule watches.
    pub fn kinds(&self) -> Vec<DeviceKind> {
        let mut kinds: Vec<DeviceKind> = self.rules.iter().map(|r| r.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Takes one batch of sightings (each device's in the order it sent them); returns the alarm
    /// changes.
    pub fn observe(&mut self, sightings: &[Sighting]) -> Vec<AlertRecord> {
        let mut out = Vec::new();
        for s in sightings {
            if !self.rules.iter().any(|r| r.kind == s.kind) {
                continue;
            }
            let watermark = self.watermarks.entry(s.kind).or_insert(s.at);
            *watermark = (*watermark).max(s.at);
            let key = (s.kind, s.device_id.clone());
            let Some(device) = self.devices.get_mut(&key) else {
                self.devices.insert(
                    key,
                    Device {
                        last: s.at,
                        rules: vec![PerRule::default(); self.rules.len()],
                    },
                );
                continue;
            };
            if s.at <= device.last {
                continue;
            }
            for (i, rule) in self.rules.iter().enumerate() {
                if rule.kind != s.kind {
                    continue;
                }
                let state = &mut device.rules[i];
                if s.at - device.last > silent_after(rule) && state.raised_for != Some(device.last)
                {
                    raise(
                        rule,
                        &s.device_id,
                        device.last,
                        state,
                        &self.actions,
                        &mut out,
                    );
                }
                if let Some(active) = state.active.take() {
                    let silent_s = (s.at - device.last).num_milliseconds() as f64 / 1000.0;
                    out.push(AlertRecord {
                        state: AlertState::Cleared,
                        value: silent_s,
                        message: format!(
                            "cleared: {} reported again after {} s",
                            s.device_id,
                            number(silent_s)
                        ),
                        changed_at: s.at,
                        ..active
                    });
                }
            }
            device.last = s.at;
        }
        for ((kind, device_id), device) in &mut self.devices {
            let watermark = self.watermarks[kind];
            for (i, rule) in self.rules.iter().enumerate() {
                let state = &mut device.rules[i];
                if rule.kind == *kind
                    && watermark - device.last > silent_after(rule)
                    && state.raised_for != Some(device.last)
                {
                    raise(rule, device_id, device.last, state, &self.actions, &mut out);
                }
            }
        }
        out
    }

    /// Takes an operator's acknowledgement or clear; returns whether it is about one of these
    /// rules.
    pub fn operator(&mut self, action: &AlertRecord) -> bool {
        let Some(index) = self.rules.iter().position(|r| r.name == action.rule) else {
            return false;
        };
        self.actions
            .entry((action.alert_id.clone(), action.raised_at))
            .or_default()
            .push(action.clone());
        let key = (self.rules[index].kind, action.entity.clone());
        if let Some(device) = self.devices.get_mut(&key) {
            let state = &mut device.rules[index];
            if state
                .active
                .as_ref()
                .is_some_and(|a| a.raised_at == action.raised_at)
            {
                apply(state, action);
            }
        }
        true
    }
}

fn silent_after(rule: &SilenceRule) -> chrono::Duration {
    chrono::Duration::from_std(rule.silent_after).expect("silent_after fits chrono")
}

fn raise(
    rule: &SilenceRule,
    device_id: &str,
    last: DateTime<Utc>,
    state: &mut PerRule,
    actions: &Actions,
    out: &mut Vec<AlertRecord>,
) {
    let at = last + silent_after(rule);
    let threshold = rule.silent_after.as_secs_f64();
    let metric = format!("{}.silent_s", rule.kind);
    let message = render(
        &rule.message,
        [
            ("rule", &rule.name),
            ("entity", device_id),
            ("metric", &metric),
            ("value", &number(threshold)),
            ("threshold", &number(threshold)),
        ],
    );
    let raised = AlertRecord {
        alert_id: AlertRecord::id(&rule.name, device_id),
        rule: rule.name.clone(),
        severity: rule.severity,
        state: AlertState::Raised,
        entity_kind: "device".into(),
        entity: device_id.to_string(),
        metric,
        value: threshold,
        threshold,
        message,
        raised_at: at,
        changed_at: at,
        acknowledged_by: None,
    };
    out.push(raised.clone());
    state.raised_for = Some(last);
    state.active = Some(raised.clone());
    for action in actions.get(&(raised.alert_id, at)).into_iter().flatten() {
        apply(state, action);
    }
}

fn apply(state: &mut PerRule, action: &AlertRecord) {
    if is_operator_clear(action) {
        state.active = None;
    } else if let Some(active) = state.active.as_mut() {
        active.state = AlertState::Acknowledged;
        active.acknowledged_by = action.acknowledged_by.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::operator_record;
    use polis_telemetry::Severity;
    use std::time::Duration;

    fn silence() -> Silence {
        Silence::new(vec![SilenceRule {
            name: "silent_meter".into(),
            kind: DeviceKind::Energy,
            silent_after: Duration::from_secs(60),
            severity: Severity::Major,
            message: "meter {entity} silent for more than {threshold} s".into(),
        }])
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn seen(kind: DeviceKind, id: &str, s: i64) -> Sighting {
        Sighting {
            kind,
            device_id: id.into(),
            at: at(s),
        }
    }

    fn energy(id: &str, s: i64) -> Sighting {
        seen(DeviceKind::Energy, id, s)
    }

    #[test]
    fn a_device_behind_the_watermark_raises_and_clears_when_it_reports() {
        let mut silence = silence();
        assert!(
            silence
                .observe(&[energy("m1", 0), energy("m2", 0)])
                .is_empty()
        );
        assert!(
            silence.observe(&[energy("m2", 60)]).is_empty(),
            "60 s is not more than 60 s"
        );
        let raised = silence.observe(&[energy("m2", 61)]);
        assert_eq!(raised.len(), 1);
        let r = &raised[0];
        assert_eq!(
            (r.alert_id.as_str(), r.state, r.raised_at, r.changed_at),
            ("silent_meter/m1", AlertState::Raised, at(60), at(60))
        );
        assert_eq!(
            (r.entity_kind.as_str(), r.metric.as_str()),
            ("device", "energy.silent_s")
        );
        assert_eq!(r.message, "meter m1 silent for more than 60 s");
        assert!(
            silence.observe(&[energy("m2", 90)]).is_empty(),
            "raised once"
        );
        let cleared = silence.observe(&[energy("m1", 95)]);
        assert_eq!(cleared.len(), 1);
        assert_eq!(
            (cleared[0].state, cleared[0].changed_at),
            (AlertState::Cleared, at(95))
        );
        assert_eq!(cleared[0].value, 95.0);
    }

    #[test]
    fn the_records_do_not_depend_on_how_readings_interleave() {
        let mut one = silence();
        let mut first = one.observe(&[energy("m1", 0), energy("m2", 0), energy("m2", 100)]);
        first.extend(one.observe(&[energy("m1", 120)]));
        let mut other = silence();
        let mut second = other.observe(&[energy("m1", 0), energy("m1", 120), energy("m2", 0)]);
        second.extend(other.observe(&[energy("m2", 100)]));
        let states = |records: &[AlertRecord]| {
            let mut s: Vec<_> = records
                .iter()
                .map(|r| (r.alert_id.clone(), r.state, r.changed_at))
                .collect();
            s.sort_by_key(|(id, _, t)| (id.clone(), *t));
            s
        };
        assert_eq!(states(&first), states(&second));
        assert_eq!(
            states(&first),
            [
                ("silent_meter/m1".to_string(), AlertState::Raised, at(60)),
                ("silent_meter/m1".to_string(), AlertState::Cleared, at(120)),
                ("silent_meter/m2".to_string(), AlertState::Raised, at(60)),
                ("silent_meter/m2".to_string(), AlertState::Cleared, at(100)),
            ]
        );
    }

    #[test]
    fn other_kinds_are_ignored_and_an_operator_clear_ends_the_alarm() {
        let mut silence = silence();
        assert_eq!(silence.kinds(), [DeviceKind::Energy]);
        silence.observe(&[energy("m1", 0), seen(DeviceKind::Traffic, "tc", 500)]);
        let raised = silence.observe(&[energy("m2", 100)]).remove(0);
        let clear = operator_record(&raised, AlertState::Cleared, "ana", at(101));
        assert!(silence.operator(&clear));
        assert!(silence.observe(&[energy("m1", 130)]).is_empty());
    }
}
