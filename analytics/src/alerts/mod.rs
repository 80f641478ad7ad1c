//! Alarms: rules over the metric rows and device sightings, records out to the `alerts` topic.
//!
//! Threshold rules ([`rules`]) run through the [`engine`] on each closed window of the `metrics`
//! topic; silence rules through [`silence`] on the telemetry topics' event times. Both are pure;
//! the tasks that feed them ([`follow`]) and the operator API ([`http`]) share one [`AlertService`].
//! On start the `alerts` topic is read first: its records are not appended again when the
//! recomputation from the beginning of the log finds them, and the operators' acknowledgements and
//! clears in it are re-applied to the same alarms.

pub mod engine;
mod follow;
mod http;
pub mod rules;
pub mod silence;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use polis_broker::{LogClient, LogError, Record, TopicReader};
use polis_telemetry::{AlertRecord, AlertState, topics};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use engine::Engine;
pub use http::router;
pub use rules::Rules;
pub use silence::{Sighting, Silence};

use crate::error::AnalyticsError;

/// The message of an operator's clear starts with this; an engine's clear never does.
const OPERATOR_CLEAR: &str = "cleared by operator ";

/// Operator actions by the alarm they are about: `(alert_id, raised_at)`.
type Actions = HashMap<(String, DateTime<Utc>), Vec<AlertRecord>>;

/// Whether `record` is an operator clearing an alarm (not the rule clearing it).
pub fn is_operator_clear(record: &AlertRecord) -> bool {
    record.state == AlertState::Cleared && record.message.starts_with(OPERATOR_CLEAR)
}

/// Whether `record` was written by an operator (an acknowledgement or an operator clear).
fn is_operator_action(record: &AlertRecord) -> bool {
    record.state == AlertState::Acknowledged || is_operator_clear(record)
}

/// The record of an operator acknowledging (`Acknowledged`) or clearing (`Cleared`) `active`.
pub fn operator_record(
    active: &AlertRecord,
    state: AlertState,
    by: &str,
    now: DateTime<Utc>,
) -> AlertRecord {
    let mut record = AlertRecord {
        state,
        changed_at: now,
        ..active.clone()
    };
    match state {
        AlertState::Cleared => {
            record.message = format!("{OPERATOR_CLEAR}{by}: {}", active.message);
        }
        _ => record.acknowledged_by = Some(by.to_string()),
    }
    record
}

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("no active alarm `{alert_id}`; active now: {active} (GET /api/alerts lists them)")]
    NotActive { alert_id: String, active: String },
    #[error("alarm `{alert_id}` was already acknowledged by {by}")]
    AlreadyAcknowledged { alert_id: String, by: String },
    #[error("cannot append to the alerts topic: {0}")]
    Log(#[from] LogError),
}

/// The engines and what the `alerts` topic holds.
pub(crate) struct Book {
    engine: Engine,
    silence: Silence,
    /// The latest record of each alarm.
    latest: BTreeMap<String, AlertRecord>,
    /// Every record on the topic, as `(alert_id, state, changed_at)`.
    present: HashSet<(String, AlertState, DateTime<Utc>)>,
}

impl Book {
    fn note(&mut self, record: AlertRecord) {
        self.present
            .insert((record.alert_id.clone(), record.state, record.changed_at));
        self.latest.insert(record.alert_id.clone(), record);
    }

    fn operator(&mut self, action: &AlertRecord) {
        if !self.engine.operator(action) && !self.silence.operator(action) {
            tracing::warn!(
                alert_id = action.alert_id,
                "an operator action on the alerts topic is about a rule no longer defined"
            );
        }
    }

    /// `records` without those already on the topic.
    fn fresh(&self, records: Vec<AlertRecord>) -> Vec<AlertRecord> {
        records
            .into_iter()
            .filter(|r| {
                !self
                    .present
                    .contains(&(r.alert_id.clone(), r.state, r.changed_at))
            })
            .collect()
    }
}

/// The alarms as the API sees them; cheap to clone.
#[derive(Clone)]
pub struct AlertService {
    book: Arc<Mutex<Book>>,
    log: Arc<dyn LogClient>,
}

impl AlertService {
    /// The active alarms, by `alert_id`.
    pub async fn active(&self) -> Vec<AlertRecord> {
        let book = self.book.lock().await;
        book.latest
            .values()
            .filter(|r| r.state.is_active())
            .cloned()
            .collect()
    }

    /// Acknowledges (`Acknowledged`) or clears (`Cleared`) the active alarm `alert_id` for `by`.
    pub async fn act(
        &self,
        alert_id: &str,
        state: AlertState,
        by: &str,
    ) -> Result<AlertRecord, ActError> {
        let mut book = self.book.lock().await;
        let Some(active) = book.latest.get(alert_id).filter(|r| r.state.is_active()) else {
            let ids: Vec<&str> = book
                .latest
                .values()
                .filter(|r| r.state.is_active())
                .map(|r| r.alert_id.as_str())
                .collect();
            return Err(ActError::NotActive {
                alert_id: alert_id.to_string(),
                active: if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                },
            });
        };
        if state == AlertState::Acknowledged && active.state == AlertState::Acknowledged {
            return Err(ActError::AlreadyAcknowledged {
                alert_id: alert_id.to_string(),
                by: active.acknowledged_by.clone().unwrap_or_default(),
            });
        }
        let record = operator_record(active, state, by, Utc::now());
        self.log
            .produce(topics::ALERTS, vec![encode(&record)])
            .await?;
        book.operator(&record);
        book.note(record.clone());
        Ok(record)
    }
}

fn encode(record: &AlertRecord) -> Record {
    Record::new(
        Some(record.alert_id.clone()),
        serde_json::to_vec(record).expect("alarm records serialize"),
        record.changed_at.timestamp_millis(),
    )
}

/// Reads the `alerts` topic to its end, then starts the threshold and silence tasks.
pub(crate) async fn start(
    rules: Rules,
    log: Arc<dyn LogClient>,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> Result<AlertService, AnalyticsError> {
    let silence = Silence::new(rules.silence);
    let kinds = silence.kinds();
    let mut book = Book {
        engine: Engine::new(rules.threshold),
        silence,
        latest: BTreeMap::new(),
        present: HashSet::new(),
    };
    let mut reader = TopicReader::from_beginning(log.clone(), &[topics::ALERTS])?;
    loop {
        let records = reader.poll(Duration::ZERO).await?;
        if records.is_empty() {
            break;
        }
        for r in records {
            match serde_json::from_slice::<AlertRecord>(&r.record.value) {
                Ok(record) => {
                    if is_operator_action(&record) {
                        book.operator(&record);
                    }
                    book.note(record);
                }
                Err(e) => tracing::error!(
                    partition = r.partition,
                    offset = r.offset,
                    error = %e,
                    "skipping a record on the alerts topic that is not an alarm record"
                ),
            }
        }
    }
    let service = AlertService {
        book: Arc::new(Mutex::new(book)),
        log: log.clone(),
    };
    let metrics = TopicReader::from_beginning(log.clone(), &[topics::METRICS])?;
    tasks.spawn(follow::metrics(metrics, service.clone(), shutdown.clone()));
    if !kinds.is_empty() {
        let topics: Vec<&str> = kinds.iter().map(|k| k.topic()).collect();
        let telemetry = TopicReader::from_beginning(log, &topics)?;
        tasks.spawn(follow::sightings(telemetry, service.clone(), shutdown));
    }
    Ok(service)
}
