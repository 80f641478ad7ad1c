//! The threshold state machine: closed windows of metric rows in, alarm records out. Pure and
//! deterministic: the same windows and operator actions always give the same records.
//!
//! Per rule and entity it counts consecutive windows of the rule's metric domain where the
//! condition holds (or not; an entity without a row in a window does not hold), raises after
//! `raise_after` and clears after `clear_after`. Only revision-0 rows count. Operator actions
//! (acknowledge, clear) are matched to the alarm by `alert_id` and `raised_at`, so replaying the
//! log after a restart applies them to the same alarm. After an operator clear at `T` the rule
//! raises again for that entity only once the condition has not held in a window ending after
//! `T` and then held for `raise_after` windows.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use polis_telemetry::{AlertRecord, AlertState, MetricRecord};

use super::rules::{Condition, ThresholdRule, number, render};
use super::{Actions, is_operator_clear};

#[derive(Default)]
struct Track {
    entity_kind: String,
    holding: u32,
    not_holding: u32,
    last_value: f64,
    active: Option<AlertRecord>,
    /// Set by an operator clear: no new alarm until a non-holding window ends after this.
    suppressed_since: Option<DateTime<Utc>>,
}

impl Track {
    fn idle(&self) -> bool {
        self.active.is_none() && self.suppressed_since.is_none() && self.holding == 0
    }
}

/// Threshold rules over closed windows.
pub struct Engine {
    rules: Vec<ThresholdRule>,
    tracks: BTreeMap<(usize, String), Track>,
    actions: Actions,
}

impl Engine {
    pub fn new(rules: Vec<ThresholdRule>) -> Engine {
        Engine {
            rules,
            tracks: BTreeMap::new(),
            actions: HashMap::new(),
        }
    }

    /// Evaluates one closed window: `rows` are the metric rows of one domain's window (other
    /// revisions are ignored). Returns the alarm changes, ordered by rule then entity.
    pub fn window(&mut self, rows: &[MetricRecord]) -> Vec<AlertRecord> {
        let rows: Vec<&MetricRecord> = rows.iter().filter(|r| r.revision == 0).collect();
        let Some(first) = rows.first() else {
            return Vec::new();
        };
        let (domain, end) = (first.domain().to_string(), first.window_end);
        let mut out = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.domain() != domain {
                continue;
            }
            let mut values: BTreeMap<String, (&str, f64)> = BTreeMap::new();
            for r in &rows {
                if r.metric == rule.metric && rule.entity.as_ref().is_none_or(|e| *e == r.entity) {
                    values.insert(r.entity.clone(), (r.entity_kind.as_str(), r.value));
                }
            }
            for (entity, (kind, _)) in &values {
                let track = self.tracks.entry((index, entity.clone())).or_default();
                track.entity_kind = kind.to_string();
            }
            let entities: Vec<String> = self
                .tracks
                .range((index, String::new())..)
                .take_while(|((i, _), _)| *i == index)
                .map(|((_, e), _)| e.clone())
                .collect();
            for entity in entities {
                let value = values.get(&entity).map(|(_, v)| *v);
                let track = self
                    .tracks
                    .get_mut(&(index, entity.clone()))
                    .expect("listed");
                step(rule, &entity, track, value, end, &self.actions, &mut out);
                if track.idle() {
                    self.tracks.remove(&(index, entity));
                }
            }
        }
        out
    }

    /// Takes an operator's acknowledgement or clear (from the API or the `alerts` topic); returns
    /// whether it is about one of this engine's rules.
    pub fn operator(&mut self, action: &AlertRecord) -> bool {
        let Some(index) = self.rules.iter().position(|r| r.name == action.rule) else {
            return false;
        };
        self.actions
            .entry((action.alert_id.clone(), action.raised_at))
            .or_default()
            .push(action.clone());
        if let Some(track) = self.tracks.get_mut(&(index, action.entity.clone()))
            && track
                .active
                .as_ref()
                .is_some_and(|a| a.raised_at == action.raised_at)
        {
            apply(track, action);
        }
        true
    }
}

fn step(
    rule: &ThresholdRule,
    entity: &str,
    track: &mut Track,
    value: Option<f64>,
    end: DateTime<Utc>,
    actions: &Actions,
    out: &mut Vec<AlertRecord>,
) {
    if let Some(v) = value {
        track.last_value = v;
    }
    if value.is_some_and(|v| rule.condition.holds(v)) {
        track.holding += 1;
        track.not_holding = 0;
    } else {
        track.not_holding += 1;
        track.holding = 0;
        if track.suppressed_since.is_some_and(|t| end > t) {
            track.suppressed_since = None;
        }
    }
    let fields = |value: f64| {
        [
            ("rule", rule.name.clone()),
            ("entity", entity.to_string()),
            ("metric", rule.metric.clone()),
            ("value", number(value)),
            ("threshold", number(rule.condition.threshold())),
        ]
    };
    if track.active.is_none()
        && track.suppressed_since.is_none()
        && track.holding >= rule.raise_after
    {
        let f = fields(track.last_value);
        let raised = AlertRecord {
            alert_id: AlertRecord::id(&rule.name, entity),
            rule: rule.name.clone(),
            severity: rule.severity,
            state: AlertState::Raised,
            entity_kind: track.entity_kind.clone(),
            entity: entity.to_string(),
            metric: rule.metric.clone(),
            value: track.last_value,
            threshold: rule.condition.threshold(),
            message: render(&rule.message, f.each_ref().map(|(k, v)| (*k, v.as_str()))),
            raised_at: end,
            changed_at: end,
            acknowledged_by: None,
        };
        out.push(raised.clone());
        track.active = Some(raised.clone());
        for action in actions
            .get(&(raised.alert_id.clone(), end))
            .into_iter()
            .flatten()
        {
            apply(track, action);
        }
    } else if track.not_holding >= rule.clear_after
        && let Some(active) = track.active.take()
    {
        let side = match rule.condition {
            Condition::Above(_) => "above",
            Condition::Below(_) => "below",
        };
        out.push(AlertRecord {
            state: AlertState::Cleared,
            value: track.last_value,
            message: format!(
                "cleared: {} not {side} {} in {entity} for {} windows",
                rule.metric,
                number(rule.condition.threshold()),
                rule.clear_after
            ),
            changed_at: end,
            ..active
        });
    }
}

fn apply(track: &mut Track, action: &AlertRecord) {
    if is_operator_clear(action) {
        track.active = None;
        track.suppressed_since = Some(action.changed_at);
    } else if let Some(active) = track.active.as_mut() {
        active.state = AlertState::Acknowledged;
        active.acknowledged_by = action.acknowledged_by.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::operator_record;
    use polis_telemetry::Severity;

    fn rule(raise_after: u32, clear_after: u32) -> ThresholdRule {
        ThresholdRule {
            name: "congestion".into(),
            metric: "traffic.congestion_index".into(),
            condition: Condition::Above(0.7),
            severity: Severity::Major,
            raise_after,
            clear_after,
            entity: None,
            message: "congestion index {value} above {threshold} in {entity}".into(),
        }
    }

    fn at(window: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + window * 10, 0).unwrap()
    }

    fn row(window: i64, entity: &str, value: f64, revision: u32) -> MetricRecord {
        MetricRecord {
            metric: "traffic.congestion_index".into(),
            entity_kind: "district".into(),
            entity: entity.into(),
            window_start: at(window - 1),
            window_end: at(window),
            value,
            revision,
            emitted_at: at(window),
        }
    }

    /// Feeds one window per value of `centre` (`None`: absent, a `harbour` row keeps the window)
    /// and lists the changes as `(window, state)`.
    fn run(engine: &mut Engine, values: &[Option<f64>]) -> Vec<(i64, AlertState)> {
        let mut changes = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let w = i as i64 + 1;
            let mut rows = vec![row(w, "harbour", 0.1, 0)];
            rows.extend(value.map(|v| row(w, "centre", v, 0)));
            for r in engine.window(&rows) {
                assert_eq!(r.changed_at, at(w));
                changes.push((w, r.state));
            }
        }
        changes
    }

    #[test]
    fn raises_after_n_and_clears_after_m_consecutive_windows() {
        let mut engine = Engine::new(vec![rule(2, 2)]);
        let changes = run(
            &mut engine,
            &[
                Some(0.8),
                Some(0.5),
                Some(0.8),
                Some(0.9),
                Some(0.95),
                Some(0.1),
                Some(0.9),
                Some(0.1),
                Some(0.1),
            ],
        );
        assert_eq!(
            changes,
            [(4, AlertState::Raised), (9, AlertState::Cleared)],
            "one active alarm while the condition keeps holding"
        );
    }

    #[test]
    fn records_carry_the_window_end_value_and_message() {
        let mut engine = Engine::new(vec![rule(1, 1)]);
        let raised = engine.window(&[row(1, "centre", 0.823, 0)]);
        assert_eq!(raised.len(), 1);
        let r = &raised[0];
        assert_eq!(r.alert_id, "congestion/centre");
        assert_eq!((r.raised_at, r.value, r.threshold), (at(1), 0.823, 0.7));
        assert_eq!(r.message, "congestion index 0.82 above 0.7 in centre");
        assert_eq!(r.entity_kind, "district");
        let cleared = engine.window(&[row(2, "centre", 0.2, 0)]);
        assert_eq!(cleared[0].state, AlertState::Cleared);
        assert_eq!(cleared[0].raised_at, at(1));
        assert_eq!(
            cleared[0].message,
            "cleared: traffic.congestion_index not above 0.7 in centre for 1 windows"
        );
    }

    #[test]
    fn an_absent_entity_does_not_hold() {
        let mut engine = Engine::new(vec![rule(1, 2)]);
        let changes = run(&mut engine, &[Some(0.9), None, None]);
        assert_eq!(changes, [(1, AlertState::Raised), (3, AlertState::Cleared)]);
        let mut engine = Engine::new(vec![rule(2, 1)]);
        assert!(run(&mut engine, &[Some(0.9), None, Some(0.9)]).is_empty());
    }

    #[test]
    fn only_first_revisions_count() {
        let mut engine = Engine::new(vec![rule(1, 1)]);
        assert!(engine.window(&[row(1, "centre", 0.9, 1)]).is_empty());
        let changes = engine.window(&[row(2, "centre", 0.2, 0), row(2, "centre", 0.9, 1)]);
        assert!(changes.is_empty());
    }

    #[test]
    fn other_domains_and_filtered_entities_are_not_evaluated() {
        let mut filtered = rule(1, 1);
        filtered.entity = Some("harbour".into());
        let mut engine = Engine::new(vec![filtered]);
        assert!(engine.window(&[row(1, "centre", 0.9, 0)]).is_empty());
        let mut energy = row(2, "harbour", 0.9, 0);
        energy.metric = "energy.congestion_index".into();
        assert!(engine.window(&[energy]).is_empty());
        assert_eq!(engine.window(&[row(3, "harbour", 0.9, 0)]).len(), 1);
    }

    #[test]
    fn acknowledgements_carry_into_the_clear_and_operator_clears_suppress() {
        let mut engine = Engine::new(vec![rule(1, 1)]);
        let raised = engine.window(&[row(1, "centre", 0.9, 0)]).remove(0);
        let ack = operator_record(&raised, AlertState::Acknowledged, "ana", at(1));
        assert!(engine.operator(&ack));
        let cleared = engine.window(&[row(2, "centre", 0.1, 0)]).remove(0);
        assert_eq!(cleared.acknowledged_by.as_deref(), Some("ana"));

        let raised = engine.window(&[row(3, "centre", 0.9, 0)]).remove(0);
        let clear = operator_record(&raised, AlertState::Cleared, "ana", at(4));
        engine.operator(&clear);
        let still = [Some(0.9), Some(0.9), Some(0.9), Some(0.1), Some(0.9)];
        let changes: Vec<_> = still
            .iter()
            .enumerate()
            .flat_map(|(i, v)| {
                let w = i as i64 + 4;
                engine.window(&[row(w, "centre", v.unwrap(), 0)])
            })
            .map(|r| (r.state, r.raised_at))
            .collect();
        assert_eq!(changes, [(AlertState::Raised, at(8))]);
    }

    #[test]
    fn replayed_actions_apply_to_the_same_alarm() {
        let mut live = Engine::new(vec![rule(1, 2)]);
        let raised = live.window(&[row(1, "centre", 0.9, 0)]).remove(0);
        let ack = operator_record(&raised, AlertState::Acknowledged, "ana", at(1));
        live.operator(&ack);
        let mut replay = Engine::new(vec![rule(1, 2)]);
        replay.operator(&ack);
        assert_eq!(replay.window(&[row(1, "centre", 0.9, 0)]), [raised]);
        let mut outputs = Vec::new();
        for engine in [&mut live, &mut replay] {
            let mut out = Vec::new();
            for w in 2..=4 {
                out.extend(engine.window(&[row(w, "centre", 0.1, 0)]));
            }
            outputs.push(out);
        }
        assert_eq!(outputs[0], outputs[1]);
        assert_eq!(outputs[0][0].acknowledged_by.as_deref(), Some("ana"));
        assert!(!live.operator(&AlertRecord {
            rule: "other".into(),
            ..ack
        }));
    }
}
