//! Continuous metrics: SQL files evaluated over each window's rows.
//!
//! A definition is a query over the tables `traffic`, `energy` and `transport`, which during
//! evaluation hold only the rows of one window, and `metric_window`, one row describing that
//! window (`window_start`, `window_end`, `size_s`). It returns the columns `entity_kind` and `entity`
//! and one numeric column per measure; each non-null cell becomes a [`MetricRecord`] named
//! `{file stem}.{column}`. The shipped definitions live in `analytics/metrics/`; files in
//! `analytics.metrics_dir` are added to them, and one with a shipped name replaces it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, TimestampMillisecondArray,
};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{DataType, Float64Type};
use chrono::{DateTime, Utc};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use polis_telemetry::{MetricRecord, schema};

use crate::duplicates;
use crate::error::AnalyticsError;
use crate::store::HotStore;

/// The tables a metric definition can read.
const WINDOW_TABLES: [&str; 3] = ["traffic", "energy", "transport"];

/// The one-row table of the window being computed: `window_start`, `window_end`, `size_s`.
const WINDOW_TABLE: &str = "metric_window";

const SHIPPED: [(&str, &str); 4] = [
    ("traffic", include_str!("../metrics/traffic.sql")),
    ("energy", include_str!("../metrics/energy.sql")),
    ("transport", include_str!("../metrics/transport.sql")),
    ("city", include_str!("../metrics/city.sql")),
];

/// One continuous metric query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDefinition {
    pub name: String,
    pub sql: String,
    /// What the file's `-- window:` line sets; the rest comes from the `[analytics]` defaults.
    pub window: WindowSettings,
}

/// The window settings a definition may give in one comment line, each optional:
/// `-- window: size=1m slide=10s lateness=5s horizon=2m`. `slide` below `size` makes the
/// window hopping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowSettings {
    pub size: Option<Duration>,
    pub slide: Option<Duration>,
    pub lateness: Option<Duration>,
    pub horizon: Option<Duration>,
}

impl WindowSettings {
    const PREFIX: &str = "-- window:";

    /// Reads the `-- window:` line of `sql`, if there is one.
    fn parse(name: &str, sql: &str) -> Result<WindowSettings, AnalyticsError> {
        let mut settings = WindowSettings::default();
        let Some(line) = sql
            .lines()
            .find_map(|l| l.trim().strip_prefix(Self::PREFIX))
        else {
            return Ok(settings);
        };
        let refuse = |reason: String| AnalyticsError::MetricDefinition {
            name: name.to_string(),
            reason,
        };
        for item in line.split_whitespace() {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                refuse(format!(
                    "`{item}` in the window line is not key=value, e.g. `-- window: size=1m slide=10s`"
                ))
            })?;
            let duration = humantime_serde::re::humantime::parse_duration(value).map_err(|e| {
                refuse(format!(
                    "window {key} = `{value}` is not a duration like 10s or 1m: {e}"
                ))
            })?;
            let slot = match key {
                "size" => &mut settings.size,
                "slide" => &mut settings.slide,
                "lateness" => &mut settings.lateness,
                "horizon" => &mut settings.horizon,
                _ => {
                    return Err(refuse(format!(
                        "unknown window setting `{key}`: use size, slide, lateness or horizon"
                    )));
                }
            };
            *slot = Some(duration);
        }
        Ok(settings)
    }
}

/// The shipped definitions plus those in `dir`.
pub fn load(dir: Option<&Path>) -> Result<Vec<MetricDefinition>, AnalyticsError> {
    let mut definitions: Vec<MetricDefinition> = SHIPPED
        .iter()
        .map(|(name, sql)| {
            Ok(MetricDefinition {
                name: name.to_string(),
                sql: sql.to_string(),
                window: WindowSettings::parse(name, sql)?,
            })
        })
        .collect::<Result<_, AnalyticsError>>()?;
    if let Some(dir) = dir {
        let io = |source| AnalyticsError::MetricsDir {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(AnalyticsError::MetricDefinition {
                    name,
                    reason: format!(
                        "file {} must be named with a-z, 0-9 and _ only",
                        path.display()
                    ),
                });
            }
            let sql = std::fs::read_to_string(&path).map_err(io)?;
            definitions.retain(|d| d.name != name);
            let window = WindowSettings::parse(&name, &sql)?;
            definitions.push(MetricDefinition { name, sql, window });
        }
    }
    Ok(definitions)
}

/// Evaluates every definition over the rows of the window `[start, end)`, as its `revision`.
pub(crate) async fn evaluate(
    definitions: &[&MetricDefinition],
    store: &HotStore,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    revision: u32,
    emitted_at: DateTime<Utc>,
) -> Result<Vec<MetricRecord>, AnalyticsError> {
    let ctx = window_context(start, end)?;
    for table in WINDOW_TABLES {
        let rows = duplicates::first_readings(
            store.range(table, start.timestamp_millis(), end.timestamp_millis()),
            schema::event_time_column(table),
        )?;
        ctx.register_table(
            table,
            Arc::new(MemTable::try_new(store.schema(table), vec![rows])?),
        )?;
    }
    let mut records = Vec::new();
    for definition in definitions {
        let batches = ctx
            .sql(&definition.sql)
            .await
            .map_err(|e| invalid(definition, e))?
            .collect()
            .await?;
        for batch in &batches {
            records.extend(rows_to_metrics(
                definition, batch, start, end, revision, emitted_at,
            )?);
        }
    }
    Ok(records)
}

/// Checks that every definition plans against the tables and returns `entity_kind`, `entity`
/// and numeric measures, so a broken definition stops start-up instead of failing every window.
pub(crate) async fn check(
    definitions: &[MetricDefinition],
    store: &HotStore,
) -> Result<(), AnalyticsError> {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    for definition in definitions {
        let ctx = window_context(epoch, epoch + chrono::Duration::seconds(10))?;
        for table in WINDOW_TABLES {
            ctx.register_table(
                table,
                Arc::new(MemTable::try_new(store.schema(table), vec![vec![]])?),
            )?;
        }
        let schema = ctx
            .sql(&definition.sql)
            .await
            .map_err(|e| invalid(definition, e))?
            .schema()
            .as_arrow()
            .clone();
        for required in ["entity_kind", "entity"] {
            if schema.field_with_name(required).is_err() {
                return Err(AnalyticsError::MetricDefinition {
                    name: definition.name.clone(),
                    reason: format!("the query must return a column `{required}`"),
                });
            }
        }
        for field in schema
            .fields()
            .iter()
            .filter(|f| !matches!(f.name().as_str(), "entity_kind" | "entity"))
        {
            if !can_cast_types(field.data_type(), &DataType::Float64) {
                return Err(AnalyticsError::MetricDefinition {
                    name: definition.name.clone(),
                    reason: format!(
                        "measure column `{}` is {}, not a number",
                        field.name(),
                        field.data_type()
                    ),
                });
            }
        }
        if schema.fields().len() < 3 {
            return Err(AnalyticsError::MetricDefinition {
                name: definition.name.clone(),
                reason: "the query returns no measure column besides entity_kind and entity".into(),
            });
        }
    }
    Ok(())
}

/// A session with the `metric_window` table of `[start, end)` registered.
fn window_context(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<SessionContext, AnalyticsError> {
    let time = |t: DateTime<Utc>| {
        Arc::new(TimestampMillisecondArray::from(vec![t.timestamp_millis()]).with_timezone("UTC"))
            as ArrayRef
    };
    let window = RecordBatch::try_from_iter([
        ("window_start", time(start)),
        ("window_end", time(end)),
        (
            "size_s",
            Arc::new(Float64Array::from(vec![(end - start).as_seconds_f64()])) as ArrayRef,
        ),
    ])?;
    let ctx = SessionContext::new();
    ctx.register_table(
        WINDOW_TABLE,
        Arc::new(MemTable::try_new(window.schema(), vec![vec![window]])?),
    )?;
    Ok(ctx)
}

fn invalid(definition: &MetricDefinition, e: datafusion::error::DataFusionError) -> AnalyticsError {
    AnalyticsError::MetricDefinition {
        name: definition.name.clone(),
        reason: e.to_string(),
    }
}

fn rows_to_metrics(
    definition: &MetricDefinition,
    batch: &RecordBatch,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    revision: u32,
    emitted_at: DateTime<Utc>,
) -> Result<Vec<MetricRecord>, AnalyticsError> {
    let text = |name: &str| -> Result<_, AnalyticsError> {
        let column = batch.column_by_name(name).expect("checked at start-up");
        Ok(cast(column, &DataType::Utf8)?)
    };
    let (kinds, entities) = (text("entity_kind")?, text("entity")?);
    let (kinds, entities) = (kinds.as_string::<i32>(), entities.as_string::<i32>());
    let mut records = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(field.name().as_str(), "entity_kind" | "entity") {
            continue;
        }
        let values =
            cast(column, &DataType::Float64).map_err(|e| AnalyticsError::MetricDefinition {
                name: definition.name.clone(),
                reason: format!("column `{}` is not numeric: {e}", field.name()),
            })?;
        let values = values.as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            if values.is_null(row) || entities.is_null(row) {
                continue;
            }
            records.push(MetricRecord {
                metric: format!("{}.{}", definition.name, field.name()),
                entity_kind: kinds.value(row).to_string(),
                entity: entities.value(row).to_string(),
                window_start: start,
                window_end: end,
                value: values.value(row),
                revision,
                emitted_at,
            });
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::traffic_batch;

    fn store() -> HotStore {
        HotStore::new(Duration::from_secs(10), Duration::from_secs(3600), 1 << 30)
    }

    #[tokio::test]
    async fn shipped_definitions_are_valid_and_sum_one_window_only() {
        let definitions = load(None).unwrap();
        let store = store();
        check(&definitions, &store).await.unwrap();
        store
            .insert(
                "traffic",
                traffic_batch(&[(10_000, 4), (15_000, 6), (25_000, 100)]),
            )
            .unwrap();
        let at = |ms| DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
        let all: Vec<&MetricDefinition> = definitions.iter().collect();
        let rows = evaluate(&all, &store, at(10_000), at(20_000), 0, at(30_000))
            .await
            .unwrap();
        let vehicles: Vec<_> = rows
            .iter()
            .filter(|m| m.metric == "traffic.vehicles")
            .collect();
        assert_eq!(vehicles.len(), 1);
        assert_eq!(
            (vehicles[0].entity.as_str(), vehicles[0].value),
            ("centre", 10.0)
        );
        assert_eq!(vehicles[0].entity_kind, "district");
        assert!(
            rows.iter()
                .all(|m| m.window_start == at(10_000) && m.window_end == at(20_000))
        );
        assert!(
            rows.iter()
                .all(|m| ["traffic", "city"].contains(&m.domain())),
            "no energy or transport rows without data"
        );
        let city: Vec<(&str, f64)> = rows
            .iter()
            .filter(|m| m.domain() == "city")
            .map(|m| (m.metric.as_str(), m.value))
            .collect();
        assert_eq!(
            city,
            vec![
                ("city.vehicles_per_min", 60.0),
                ("city.average_speed_kmh", 40.0),
                ("city.devices_reporting", 2.0),
            ],
            "10 vehicles from two counters in 10 s; no energy or transport data, so no load or punctuality"
        );
    }

    #[tokio::test]
    async fn operator_definitions_are_added_and_bad_ones_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("busiest.sql"),
            "SELECT 'city' AS entity_kind, 'all' AS entity, MAX(vehicles) AS peak FROM traffic",
        )
        .unwrap();
        let definitions = load(Some(dir.path())).unwrap();
        assert_eq!(
            definitions
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>(),
            vec!["traffic", "energy", "transport", "city", "busiest"]
        );
        check(&definitions, &store()).await.unwrap();

        std::fs::write(
            dir.path().join("broken.sql"),
            "SELECT district AS entity, AVG(vehicles) AS v FROM traffic GROUP BY district",
        )
        .unwrap();
        let err = check(&load(Some(dir.path())).unwrap(), &store())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken") && err.contains("entity_kind"),
            "{err}"
        );
    }

    #[test]
    fn a_window_line_sets_the_window_of_its_definition() {
        let sql = "-- Busiest lane.\n-- window: size=1m slide=10s horizon=2m\nSELECT 1";
        assert_eq!(
            WindowSettings::parse("busiest", sql).unwrap(),
            WindowSettings {
                size: Some(Duration::from_secs(60)),
                slide: Some(Duration::from_secs(10)),
                lateness: None,
                horizon: Some(Duration::from_secs(120)),
            }
        );
        assert_eq!(
            WindowSettings::parse("plain", "SELECT 1").unwrap(),
            WindowSettings::default()
        );
        for (line, expected) in [
            (
                "-- window: size=ten",
                "window size = `ten` is not a duration",
            ),
            ("-- window: width=10s", "unknown window setting `width`"),
            (
                "-- window: 10s",
                "`10s` in the window line is not key=value",
            ),
        ] {
            let err = WindowSettings::parse("bad", line).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
