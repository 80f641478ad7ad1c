//! Continuous metrics: telemetry through the window clocks, metric rows out to `metrics`.
//!
//! Definitions that share a window (size, slide, lateness, horizon) share one [`WindowClock`].
//! Every fetched batch goes into the hot store, then each row (unless the checkpoint says it was
//! already counted) through every clock; a row no clock can count any more is dead-lettered
//! `late_record`. The windows the clocks release — first emissions and corrections — are computed
//! and appended in one batch to `metrics`, carrying the new [`Checkpoint`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use chrono::{DateTime, Utc};
use polis_broker::{ConsumedRecord, LogClient, Record, TopicReader};
use polis_telemetry::reading::format_time;
use polis_telemetry::{RejectReason, schema, topics};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, Checkpoint};
use crate::config::AnalyticsConfig;
use crate::error::AnalyticsError;
use crate::ingest::{dead_letter, insert, next, retrying};
use crate::metrics::{self, MetricDefinition};
use crate::store::{HotStore, event_times};
use crate::windows::{Emission, Fate, WindowClock, WindowSpec};

/// One window clock and the definitions computed over its windows.
pub(crate) struct WindowGroup {
    clock: WindowClock,
    definitions: Vec<MetricDefinition>,
}

/// Groups `definitions` by their window, filling what a file leaves unset from `config`, and
/// restores each clock from `checkpoint`.
pub(crate) fn window_groups(
    config: &AnalyticsConfig,
    definitions: Vec<MetricDefinition>,
    checkpoint: &Checkpoint,
) -> Result<Vec<WindowGroup>, AnalyticsError> {
    let ms = |d: Duration| d.as_millis() as i64;
    let bucket = ms(config.window);
    let mut by_spec: BTreeMap<WindowSpec, Vec<MetricDefinition>> = BTreeMap::new();
    for definition in definitions {
        let w = &definition.window;
        let size = w.size.map_or(bucket, ms);
        let spec = WindowSpec {
            size_ms: size,
            slide_ms: w.slide.map_or(size, ms),
            lateness_ms: ms(w.lateness.unwrap_or(config.allowed_lateness)),
            horizon_ms: ms(w.horizon.unwrap_or(config.update_horizon)),
        };
        let refuse = |reason: String| AnalyticsError::MetricDefinition {
            name: definition.name.clone(),
            reason,
        };
        for (what, value) in [("size", spec.size_ms), ("slide", spec.slide_ms)] {
            if value <= 0 || value % bucket != 0 {
                return Err(refuse(format!(
                    "window {what} = {value} ms must be a positive multiple of analytics.window = {bucket} ms"
                )));
            }
        }
        if spec.slide_ms > spec.size_ms {
            return Err(refuse(format!(
                "window slide = {} ms is longer than its size = {} ms: rows between windows would be skipped",
                spec.slide_ms, spec.size_ms
            )));
        }
        by_spec.entry(spec).or_default().push(definition);
    }
    Ok(by_spec
        .into_iter()
        .map(|(spec, definitions)| {
            let state = checkpoint
                .clocks
                .get(&spec.key())
                .cloned()
                .unwrap_or_default();
            WindowGroup {
                clock: WindowClock::new(spec, config.idle_partition_timeout, state),
                definitions,
            }
        })
        .collect())
}

/// Follows the telemetry topics and emits windows until shutdown.
pub(crate) struct Continuous {
    pub reader: TopicReader,
    pub groups: Vec<WindowGroup>,
    pub checkpoint: Checkpoint,
    /// `{topic}/{partition}/{offset}` of every record already dead-lettered.
    pub dead_lettered: HashSet<String>,
    pub log: Arc<dyn LogClient>,
    pub store: Arc<HotStore>,
}

impl Continuous {
    pub async fn run(mut self, shutdown: CancellationToken) {
        while let Some(records) = next(&mut self.reader, &shutdown).await {
            let now = Instant::now();
            let inserted = insert(&self.store, &records);
            let mut letters: Vec<(String, Record)> = inserted
                .undecodable
                .iter()
                .filter_map(|(r, error)| {
                    let source = source(r);
                    let detail = format!(
                        "record {source} is {error}; telemetry topics hold the gateway's canonical readings, so publish over MQTT or produce records of the table's columns"
                    );
                    self.letter(r, source, RejectReason::UndecodableRecord, detail)
                })
                .collect();
            let late = self.observe(&inserted.batches, now);
            letters.extend(records.iter().filter(|r| late.contains(&(&*r.topic, r.partition, r.offset))).filter_map(|r| {
                let source = source(r);
                let detail = format!(
                    "record {source} came after every window that could count it was final (the watermark had passed their end by the update horizon, analytics.update_horizon); it stays in {} but no metric counts it",
                    r.topic
                );
                self.letter(r, source, RejectReason::LateRecord, detail)
            }));
            if !self.dead_letter(letters, &shutdown).await {
                return;
            }
            for (caught_up, position) in self.reader.caught_up().zip(self.reader.positions()) {
                let partition = format!("{}/{}", position.topic, position.partition);
                for group in &mut self.groups {
                    group.clock.set_caught_up(&partition, caught_up, now);
                }
            }
            if !self.emit(now, &shutdown).await {
                return;
            }
        }
        for group in &self.groups {
            tracing::info!(
                window = group.clock.spec().key(),
                late_records = group.clock.late_records(),
                "analytics stopped following telemetry"
            );
        }
    }

    /// The dead letter of `r`, unless an earlier run already wrote it.
    fn letter(
        &self,
        r: &ConsumedRecord,
        source: String,
        reason: RejectReason,
        detail: String,
    ) -> Option<(String, Record)> {
        (!self.dead_lettered.contains(&source)).then(|| {
            let letter = dead_letter(r, &source, reason, &detail);
            (source, letter)
        })
    }

    /// Feeds the rows not yet counted through every clock; returns the rows no clock counts.
    fn observe<'b>(
        &mut self,
        batches: &'b [(&'static str, RecordBatch)],
        now: Instant,
    ) -> HashSet<(&'b str, i32, i64)> {
        let mut late = HashSet::new();
        for (table, batch) in batches {
            let topic = schema::TABLES
                .iter()
                .find(|(t, _)| t == table)
                .map(|(_, topic)| *topic)
                .expect("a table of a known topic");
            let time_column = batch
                .schema()
                .index_of(schema::event_time_column(table))
                .expect("event time column");
            let partitions = batch
                .column_by_name(schema::PARTITION_COLUMN)
                .expect("partition column")
                .as_primitive::<Int32Type>();
            let offsets = batch
                .column_by_name(schema::OFFSET_COLUMN)
                .expect("offset column")
                .as_primitive::<Int64Type>();
            // The partition of the rows being read, and the offset its uncounted rows start at.
            let mut run: Option<(i32, i64)> = None;
            let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
            for (row, event_ms) in event_times(batch, time_column).enumerate() {
                let (partition, offset) = (partitions.value(row), offsets.value(row));
                let counted_below = match run {
                    Some((p, below)) if p == partition => below,
                    _ => {
                        let below = self
                            .checkpoint
                            .counted_below(&format!("{topic}/{partition}"));
                        run = Some((partition, below));
                        below
                    }
                };
                if offset < counted_below {
                    continue;
                }
                newest
                    .entry(partition)
                    .and_modify(|n| *n = (*n).max(event_ms))
                    .or_insert(event_ms);
                let mut counted = false;
                for group in &mut self.groups {
                    counted |= group.clock.count(event_ms) == Fate::Counted;
                }
                if !counted {
                    late.insert((topic, partition, offset));
                }
            }
            for (partition, newest_ms) in newest {
                let key = format!("{topic}/{partition}");
                for group in &mut self.groups {
                    group.clock.note(&key, newest_ms, now);
                }
            }
        }
        late
    }

    async fn dead_letter(
        &mut self,
        letters: Vec<(String, Record)>,
        shutdown: &CancellationToken,
    ) -> bool {
        if letters.is_empty() {
            return true;
        }
        tracing::warn!(
            records = letters.len(),
            "dead-lettering telemetry records that do not decode or came too late"
        );
        let records: Vec<Record> = letters.iter().map(|(_, r)| r.clone()).collect();
        let log = self.log.clone();
        let produced = retrying("dead-lettering telemetry records", shutdown, || {
            let (records, log) = (records.clone(), log.clone());
            async move {
                log.produce(topics::DEADLETTER, records).await?;
                Ok(())
            }
        })
        .await;
        self.dead_lettered
            .extend(letters.into_iter().map(|(source, _)| source));
        produced
    }

    /// Computes every window the clocks release and appends the rows with a new checkpoint,
    /// retrying until it succeeds (`true`) or shutdown (`false`).
    async fn emit(&mut self, now: Instant, shutdown: &CancellationToken) -> bool {
        let released: Vec<(usize, Emission)> = self
            .groups
            .iter_mut()
            .enumerate()
            .flat_map(|(i, g)| g.clock.ready(now).into_iter().map(move |e| (i, e)))
            .collect();
        if released.is_empty() {
            return true;
        }
        let next_checkpoint = Checkpoint {
            seq: self.checkpoint.seq + 1,
            offsets: self
                .reader
                .positions()
                .iter()
                .map(|p| (format!("{}/{}", p.topic, p.partition), p.offset))
                .collect(),
            clocks: self
                .groups
                .iter()
                .map(|g| (g.clock.spec().key(), g.clock.state().clone()))
                .collect(),
        };
        let (groups, store, log) = (&self.groups, &self.store, &self.log);
        let emitted = retrying("emitting windows", shutdown, || async {
            let emitted_at = Utc::now();
            let mut rows = Vec::new();
            for (group, emission) in &released {
                let group = &groups[*group];
                let start = DateTime::<Utc>::from_timestamp_millis(emission.start_ms)
                    .expect("window start in range");
                let end = start + chrono::Duration::milliseconds(group.clock.spec().size_ms);
                let definitions: Vec<&MetricDefinition> = group.definitions.iter().collect();
                rows.extend(
                    metrics::evaluate(
                        &definitions,
                        store,
                        start,
                        end,
                        emission.revision,
                        emitted_at,
                    )
                    .await?,
                );
            }
            let mut records: Vec<Record> = rows
                .iter()
                .map(|m| {
                    Record::new(
                        Some(m.key()),
                        serde_json::to_vec(m).expect("metric rows serialize"),
                        m.window_end.timestamp_millis(),
                    )
                })
                .collect();
            if let Some(first) = records.first_mut() {
                first.headers.push((
                    checkpoint::HEADER.to_string(),
                    next_checkpoint.encode().into(),
                ));
                log.produce(topics::METRICS, records).await?;
            }
            tracing::debug!(
                windows = released.len(),
                rows = rows.len(),
                at = format_time(emitted_at),
                "emitted windows"
            );
            Ok(())
        })
        .await;
        if emitted {
            self.checkpoint = next_checkpoint;
        }
        emitted
    }
}

fn source(r: &ConsumedRecord) -> String {
    format!("{}/{}/{}", r.topic, r.partition, r.offset)
}
