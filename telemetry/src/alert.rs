//! Alarm records: the state changes of one alarm, as analytics writes them to the `alerts` topic.
//!
//! An alarm belongs to one rule and one entity (`alert_id` = `{rule}/{entity}`); at most one is
//! active per rule and entity. Its life is `raised` → (`acknowledged`) → `cleared`, each step one
//! record, so the latest record per `alert_id` is the alarm's current state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::reading::rfc3339_ms;

/// How urgent an alarm is, most urgent first (the X.733 levels operators know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Major,
    Minor,
    Warning,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Critical,
        Severity::Major,
        Severity::Minor,
        Severity::Warning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
        }
    }
}

/// Where an alarm is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition held for the rule's `raise_after` windows.
    Raised,
    /// An operator has seen it; it stays active until it clears.
    Acknowledged,
    /// The condition has not held for the rule's `clear_after` windows; the alarm is over.
    Cleared,
}

impl AlertState {
    /// Whether the alarm is still active in this state.
    pub fn is_active(self) -> bool {
        self != AlertState::Cleared
    }
}

/// One state change of one alarm (JSON on the `alerts` topic, keyed by `alert_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// `{rule}/{entity}`: one active alarm per rule and entity.
    pub alert_id: String,
    /// The rule's name, e.g. `congestion`.
    pub rule: String,
    pub severity: Severity,
    pub state: AlertState,
    /// What the alarm is about: `district`, `route`, `device` or `city`.
    pub entity_kind: String,
    pub entity: String,
    /// The metric the rule watches, e.g. `traffic.congestion_index`.
    pub metric: String,
    /// The metric's value in the window that caused this change.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// A sentence for the operator, e.g. "congestion index 0.82 above 0.7 in centre".
    pub message: String,
    /// End of the window (event time) in which the alarm was raised.
    #[serde(with = "rfc3339_ms")]
    pub raised_at: DateTime<Utc>,
    /// When this change happened: the window end for raise and clear, wall time for acknowledge.
    #[serde(with = "rfc3339_ms")]
    pub changed_at: DateTime<Utc>,
    /// Who acknowledged it, once someone has.
    pub acknowledged_by: Option<String>,
}

impl AlertRecord {
    /// The id of the alarm of `rule` about `entity`.
    pub fn id(rule: &str, entity: &str) -> String {
        format!("{rule}/{entity}")
    }
}
