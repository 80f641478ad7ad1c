//! The district map: one rounded cell per district seen in the metrics, laid out in a grid in name
//! order (so a district keeps its place as long as the set of districts does), coloured by the
//! district's latest congestion index or energy load. Drawn as two SVG documents, one per layer,
//! once per metrics update and shared by every viewer.
//!
//! Each cell is a `<g class="district" data-district="NAME">` whose `<rect>` carries the colour
//! class `level-0` (best) … `level-4` (worst), or `no-data`; the page styles the classes and
//! turns a click on a cell into the district's drill-down.

use std::fmt::Write;
use std::sync::Arc;

use crate::state::MetricHistory;

/// The metric of the congestion layer, from 0 (free flow) to 1 (standstill).
pub(crate) const CONGESTION_METRIC: &str = "traffic.congestion_index";
/// The metric of the load layer, in kW.
pub(crate) const LOAD_METRIC: &str = "energy.load_kw";
/// Districts drawn at most; further ones are summed up as "+N more districts".
const MAX_DISTRICTS: usize = 200;
/// Colour levels: `level-0` … `level-{LEVELS - 1}`.
const LEVELS: usize = 5;
/// Cell size and the gap between cells, in SVG units; the page scales the map to its panel.
const CELL: (usize, usize) = (150, 64);
const GAP: usize = 8;
/// Cells per row at most, so a large city stays readable.
const MAX_COLUMNS: usize = 8;
/// Longest district name shown in full in a cell.
const NAME_CHARS: usize = 16;

/// The two layers of the map as SVG documents, cheap to clone and share.
#[derive(Clone)]
pub(crate) struct DistrictMap {
    pub(crate) congestion: Arc<str>,
    pub(crate) load: Arc<str>,
}

impl DistrictMap {
    /// Draws both layers from the latest window of every district in `history`.
    pub(crate) fn render(history: &MetricHistory) -> DistrictMap {
        let districts: Vec<&str> = history.entities_of_kind("district").into_iter().collect();
        let latest = |metric: &str| -> Vec<Option<f64>> {
            districts
                .iter()
                .map(|district| history.latest(metric, district).map(|r| r.value))
                .collect()
        };
        let congestion = latest(CONGESTION_METRIC);
        let load = latest(LOAD_METRIC);
        let highest_load = load.iter().flatten().copied().fold(0.0, f64::max);
        DistrictMap {
            congestion: draw(&districts, &congestion, "congestion", |v| {
                (level(v), format!("{v:.2}"))
            })
            .into(),
            load: draw(&districts, &load, "load", |v| {
                let share = if highest_load > 0.0 {
                    v / highest_load
                } else {
                    0.0
                };
                (level(share), format!("{v:.0} kW"))
            })
            .into(),
        }
    }
}

/// The colour level of a value from 0 to 1; values outside are clamped.
fn level(value: f64) -> usize {
    let scaled = (value.clamp(0.0, 1.0) * LEVELS as f64) as usize;
    scaled.min(LEVELS - 1)
}

/// One layer: every district with its value, coloured and labelled by `shade`.
fn draw(
    districts: &[&str],
    values: &[Option<f64>],
    layer: &str,
    shade: impl Fn(f64) -> (usize, String),
) -> String {
    let shown = districts.len().min(MAX_DISTRICTS);
    let columns = columns(shown);
    let rows = shown.div_ceil(columns).max(1);
    let overflow_row = usize::from(districts.len() > MAX_DISTRICTS);
    let width = columns * CELL.0 + (columns + 1) * GAP;
    let height = (rows + overflow_row) * CELL.1 + (rows + overflow_row + 1) * GAP;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="district-map" data-layer="{layer}" viewBox="0 0 {width} {height}" width="{width}" height="{height}">"#
    );
    if districts.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" class="empty" text-anchor="middle">waiting for districts</text>"#,
            x = width / 2,
            y = height / 2 + 4,
        );
    }
    for (index, (district, value)) in districts.iter().zip(values).take(shown).enumerate() {
        let x = GAP + (index % columns) * (CELL.0 + GAP);
        let y = GAP + (index / columns) * (CELL.1 + GAP);
        let (class, label) = match value {
            Some(value) => {
                let (level, label) = shade(*value);
                (format!("level-{level}"), label)
            }
            None => ("no-data".to_string(), "no data".to_string()),
        };
        let name = escape(district);
        let _ = write!(
            svg,
            concat!(
                r#"<g class="district" data-district="{name}" data-value="{label}">"#,
                "<title>{name}: {layer} {label}</title>",
                r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="10" class="cell {class}"/>"#,
                r#"<text x="{tx}" y="{ny}" class="name">{short}</text>"#,
                r#"<text x="{tx}" y="{vy}" class="value">{label}</text></g>"#,
            ),
            name = name,
            label = escape(&label),
            layer = layer,
            x = x,
            y = y,
            w = CELL.0,
            h = CELL.1,
            class = class,
            tx = x + 12,
            ny = y + 24,
            vy = y + 50,
            short = escape(&short_name(district)),
        );
    }
    if overflow_row == 1 {
        let _ = write!(
            svg,
            r#"<text x="{GAP}" y="{y}" class="more">+{more} more districts</text>"#,
            y = height - GAP - CELL.1 / 2,
            more = districts.len() - MAX_DISTRICTS,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Columns of the grid: about twice as wide as tall, at most [`MAX_COLUMNS`].
fn columns(districts: usize) -> usize {
    let square = (districts as f64 * 2.0).sqrt().ceil() as usize;
    square.clamp(1, MAX_COLUMNS).min(districts.max(1))
}

fn short_name(name: &str) -> String {
    if name.chars().count() <= NAME_CHARS {
        return name.to_string();
    }
    let mut short: String = name.chars().take(NAME_CHARS - 1).collect();
    short.push('…');
    short
}

/// `text` safe inside SVG text and attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, TimeDelta};
    use polis_telemetry::MetricRecord;

    use super::*;

    fn record(metric: &str, entity: &str, value: f64) -> MetricRecord {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        MetricRecord {
            metric: metric.to_string(),
            entity_kind: if metric.starts_with("transport.") {
                "route"
            } else {
                "district"
            }
            .to_string(),
            entity: entity.to_string(),
            window_start: start,
            window_end: start + TimeDelta::seconds(10),
            value,
            revision: 0,
            emitted_at: start + TimeDelta::seconds(11),
        }
    }

    /// The `<g>` of `district` in `svg`.
    fn cell<'a>(svg: &'a str, district: &str) -> &'a str {
        let start = svg
            .find(&format!(r#"data-district="{district}""#))
            .unwrap_or_else(|| panic!("no cell for {district}: {svg}"));
        let end = start + svg[start..].find("</g>").unwrap();
        &svg[start..end]
    }

    #[test]
    fn every_district_gets_a_cell_coloured_by_its_latest_value() {
        let mut history = MetricHistory::new(Duration::from_secs(600));
        for (district, congestion, load) in [
            ("centre", 0.95, 2000.0),
            ("harbour", 0.1, 500.0),
            ("old-town", 0.5, 1000.0),
        ] {
            history.apply(record(CONGESTION_METRIC, district, congestion));
            history.apply(record(LOAD_METRIC, district, load));
        }
        history.apply(record("traffic.vehicles", "uptown", 12.0));
        history.apply(record("transport.average_delay_s", "route-7", 30.0));
        let map = DistrictMap::render(&history);

        assert!(map.congestion.starts_with("<svg") && map.congestion.ends_with("</svg>"));
        assert!(map.congestion.contains(r#"data-layer="congestion""#));
        assert!(cell(&map.congestion, "centre").contains(r#"class="cell level-4""#));
        assert!(cell(&map.congestion, "harbour").contains(r#"class="cell level-0""#));
        assert!(cell(&map.congestion, "old-town").contains(r#"class="cell level-2""#));
        assert!(cell(&map.congestion, "old-town").contains(">0.50<"));
        assert!(cell(&map.congestion, "uptown").contains(r#"class="cell no-data""#));
        assert!(
            !map.congestion.contains("route-7"),
            "routes are not districts"
        );
        assert_eq!(map.congestion.matches(r#"class="district""#).count(), 4);

        assert!(map.load.contains(r#"data-layer="load""#));
        assert!(cell(&map.load, "centre").contains(r#"class="cell level-4""#));
        assert!(cell(&map.load, "harbour").contains(r#"class="cell level-1""#));
        assert!(cell(&map.load, "old-town").contains(r#"class="cell level-2""#));
        assert!(cell(&map.load, "centre").contains(">2000 kW<"));
        assert!(cell(&map.load, "uptown").contains(r#"class="cell no-data""#));
    }

    #[test]
    fn cells_keep_name_order_and_names_are_escaped() {
        let mut history = MetricHistory::new(Duration::from_secs(600));
        for district in ["b", "a", "Docks & <Quay>"] {
            history.apply(record(CONGESTION_METRIC, district, 0.3));
        }
        let svg = DistrictMap::render(&history).congestion;
        let position = |name: &str| svg.find(&format!(r#"data-district="{name}""#)).unwrap();
        assert!(position("Docks &amp; &lt;Quay&gt;") < position("a"));
        assert!(position("a") < position("b"));
        assert!(!svg.contains("<Quay>"));
    }

    #[test]
    fn without_districts_the_map_is_waiting() {
        let map = DistrictMap::render(&MetricHistory::new(Duration::from_secs(600)));
        assert!(map.congestion.contains("waiting for districts"));
        assert!(map.load.contains("waiting for districts"));
    }

    #[test]
    fn districts_beyond_the_limit_are_summed_up() {
        let mut history = MetricHistory::new(Duration::from_secs(600));
        for n in 0..MAX_DISTRICTS + 3 {
            history.apply(record(CONGESTION_METRIC, &format!("d-{n:03}"), 0.2));
        }
        let svg = DistrictMap::render(&history).congestion;
        assert_eq!(svg.matches(r#"class="district""#).count(), MAX_DISTRICTS);
        assert!(svg.contains("+3 more districts"));
    }

    #[test]
    fn levels_split_zero_to_one_in_five_and_clamp() {
        assert_eq!(
            [-1.0, 0.0, 0.19, 0.2, 0.59, 0.8, 1.0, 7.0].map(level),
            [0, 0, 0, 1, 2, 4, 4, 4]
        );
    }
}
