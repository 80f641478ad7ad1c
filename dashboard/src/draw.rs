//! The one drawing routine of every chart, generic over the plotters backend: the same code draws
//! the live SVG charts of the page, their PNG downloads and the stacked report images.
//!
//! Text is laid out and rasterized with Noto Sans, embedded in the binary (crate
//! `ttf-noto-sans`) and registered with plotters as `sans-serif` before the first drawing, so no
//! system font is needed; SVG output names the family and leaves the glyphs to the browser.

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use polis_telemetry::MetricRecord;

/// Width of the legend column at the right of the plot.
const LEGEND_WIDTH: u32 = 170;
/// The x axis spans at least this much time, so a few windows do not fill the whole width.
const MIN_SPAN: TimeDelta = TimeDelta::minutes(1);
/// Legend entries shown; further entities are summed up as "+N more".
pub(crate) const LEGEND_ROWS: usize = 11;
/// Longest entity name shown in full in the legend.
pub(crate) const LEGEND_NAME_CHARS: usize = 18;
/// The family every text of a chart is set in.
const FAMILY: &str = "sans-serif";

/// The colours of the page (`assets/style.css`): panel background, grid, axes and text.
pub(crate) const BACKGROUND: RGBColor = RGBColor(0x12, 0x1a, 0x26);
const GRID: RGBColor = RGBColor(0x24, 0x31, 0x42);
const AXIS: RGBColor = RGBColor(0x5b, 0x6b, 0x80);
pub(crate) const TEXT: RGBColor = RGBColor(0xc9, 0xd4, 0xe3);
const MUTED: RGBColor = RGBColor(0x7d, 0x8b, 0x9e);
/// Series colours, bright enough on the dark background, in the order entities are named.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4f, 0xc3, 0xf7),
    RGBColor(0xff, 0xb7, 0x4d),
    RGBColor(0x81, 0xc7, 0x84),
    RGBColor(0xe5, 0x73, 0x73),
    RGBColor(0xba, 0x68, 0xc8),
    RGBColor(0xff, 0xf1, 0x76),
    RGBColor(0x4d, 0xd0, 0xe1),
    RGBColor(0xf0, 0x62, 0x92),
    RGBColor(0xae, 0xd5, 0x81),
    RGBColor(0x90, 0xa4, 0xae),
];

/// What one chart shows.
pub(crate) struct ChartSpec {
    pub(crate) domain: &'static str,
    pub(crate) metric: &'static str,
    pub(crate) caption: &'static str,
    unit: &'static str,
}

/// The chart of each domain, in the order the page and the reports show them.
pub(crate) const SPECS: [ChartSpec; 3] = [
    ChartSpec {
        domain: "traffic",
        metric: "traffic.vehicles",
        caption: "Traffic: vehicles per window by district (vehicles)",
        unit: "vehicles",
    },
    ChartSpec {
        domain: "energy",
        metric: "energy.load_kw",
        caption: "Energy: load by district (kW)",
        unit: "kW",
    },
    ChartSpec {
        domain: "transport",
        metric: "transport.average_delay_s",
        caption: "Transport: average delay by route (s)",
        unit: "s",
    },
];

/// The chart spec of `domain` (`traffic`, `energy` or `transport`).
pub(crate) fn spec_of(domain: &str) -> Option<&'static ChartSpec> {
    SPECS.iter().find(|spec| spec.domain == domain)
}

/// One line per entity: (window end in ms since the epoch, value).
pub(crate) struct Line {
    pub(crate) entity: String,
    pub(crate) points: Vec<(i64, f64)>,
}

/// The lines of `spec`'s metric in `records`, one per entity in name order, each window at its
/// highest revision, oldest first.
pub(crate) fn lines_of(spec: &ChartSpec, records: &[MetricRecord]) -> Vec<Line> {
    let mut windows: BTreeMap<&str, BTreeMap<DateTime<Utc>, &MetricRecord>> = BTreeMap::new();
    for record in records.iter().filter(|r| r.metric == spec.metric) {
        let slot = windows
            .entry(record.entity.as_str())
            .or_default()
            .entry(record.window_start)
            .or_insert(record);
        if record.revision > slot.revision {
            *slot = record;
        }
    }
    windows
        .into_iter()
        .map(|(entity, windows)| Line {
            entity: entity.to_string(),
            points: windows
                .values()
                .map(|r| (r.window_end.timestamp_millis(), r.value))
                .collect(),
        })
        .collect()
}

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DrawError {
    #[error("plotters could not draw it: {0}")]
    Plotters(String),
    #[error("plotters panicked drawing it")]
    Panicked,
    #[error("the embedded Noto Sans font was refused by plotters")]
    Font,
    #[error("could not encode it as PNG: {0}")]
    Png(#[from] png::EncodingError),
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something drawn onto any plotters backend, with the pixel size it is drawn at.
pub(crate) trait Drawing {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// `drawing` as an SVG document.
pub(crate) fn svg(drawing: &impl Drawing) -> Result<String, DrawError> {
    let mut svg = String::new();
    guarded(|| {
        let root = SVGBackend::with_string(&mut svg, drawing.size()).into_drawing_area();
        drawing.draw(&root).and_then(|()| root.present())
    })?;
    Ok(crate::compact_svg::compact(&svg))
}

/// `drawing` as a PNG image (8-bit RGB).
pub(crate) fn png(drawing: &impl Drawing) -> Result<Vec<u8>, DrawError> {
    let (width, height) = drawing.size();
    let mut pixels = vec![0; width as usize * height as usize * 3];
    guarded(|| {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        drawing.draw(&root).and_then(|()| root.present())
    })?;
    let mut encoded = Vec::new();
    let mut encoder = png::Encoder::new(&mut encoded, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(encoded)
}

/// Runs one drawing with the font registered, turning plotters' errors and panics (it panics on
/// some degenerate ranges) into a [`DrawError`]: a chart is not worth the task that draws it.
fn guarded<E: std::error::Error + Send + Sync>(
    draw: impl FnOnce() -> Result<(), DrawingAreaErrorKind<E>>,
) -> Result<(), DrawError> {
    register_font()?;
    match panic::catch_unwind(AssertUnwindSafe(draw)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(DrawError::Plotters(error.to_string())),
        Err(_) => Err(DrawError::Panicked),
    }
}

fn register_font() -> Result<(), DrawError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = REGISTERED.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok()
    });
    if *registered {
        Ok(())
    } else {
        Err(DrawError::Font)
    }
}

/// One domain's chart: its lines over `x_range` (ms since the epoch), or over the span of its
/// points when `None`; without lines it shows `empty` in place of the plot.
pub(crate) struct Chart<'a> {
    pub(crate) spec: &'a ChartSpec,
    pub(crate) lines: &'a [Line],
    pub(crate) x_range: Option<Range<i64>>,
    pub(crate) empty: &'a str,
}

impl Chart<'_> {
    /// Draws the chart to fill `area`, whatever its size.
    pub(crate) fn draw_on<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> DrawResult<DB> {
        area.fill(&BACKGROUND)?;
        if self.lines.is_empty() {
            self.draw_empty(area)
        } else {
            self.draw_lines(area)
        }
    }

    fn draw_empty<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = area
            .margin(10, 10, 10, 10)
            .titled(self.spec.caption, (FAMILY, 18).into_font().color(&TEXT))?;
        let (width, height) = body.dim_in_pixel();
        let centred = (FAMILY, 16)
            .into_font()
            .color(&MUTED)
            .pos(Pos::new(HPos::Center, VPos::Center));
        body.draw(&Text::new(
            self.empty,
            (width as i32 / 2, height as i32 / 2),
            centred,
        ))
    }

    fn draw_lines<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let (width, _) = area.dim_in_pixel();
        let (plot_area, legend_area) = area.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
        let (data_x, y_range) = ranges(self.lines);
        let x_range = self.x_range.clone().unwrap_or(data_x);
        let label_format = clock_format(x_range.end - x_range.start);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(self.spec.caption, (FAMILY, 18).into_font().color(&TEXT))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range, y_range)?;
        chart
            .configure_mesh()
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .label_style((FAMILY, 13).into_font().color(&MUTED))
            .axis_desc_style((FAMILY, 13).into_font().color(&MUTED))
            .x_labels(6)
            .y_labels(5)
            .x_label_formatter(&|ms| clock_time(*ms, label_format))
            .y_label_formatter(&|value| axis_value(*value))
            .x_desc("time (UTC)")
            .y_desc(self.spec.unit)
            .draw()?;
        for (line, color) in self.lines.iter().zip(PALETTE.iter().cycle()) {
            chart.draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))?;
        }
        draw_legend(self.lines, &legend_area)
    }
}

fn draw_legend<DB: DrawingBackend>(
    lines: &[Line],
    area: &DrawingArea<DB, Shift>,
) -> DrawResult<DB> {
    let font = (FAMILY, 13)
        .into_font()
        .color(&TEXT)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (row, (line, color)) in lines
        .iter()
        .zip(PALETTE.iter().cycle())
        .take(LEGEND_ROWS)
        .enumerate()
    {
        let y = 44 + 20 * row as i32;
        area.draw(&Rectangle::new([(6, y - 2), (22, y + 2)], color.filled()))?;
        area.draw(&Text::new(short_name(&line.entity), (30, y), font.clone()))?;
    }
    if lines.len() > LEGEND_ROWS {
        let y = 44 + 20 * LEGEND_ROWS as i32;
        area.draw(&Text::new(
            format!("+{} more", lines.len() - LEGEND_ROWS),
            (30, y),
            font.color(&MUTED),
        ))?;
    }
    Ok(())
}

/// The time span of all points (at least [`MIN_SPAN`]) and the value span (including zero, with
/// headroom above the highest line).
fn ranges(lines: &[Line]) -> (Range<i64>, Range<f64>) {
    let points = || lines.iter().flat_map(|line| line.points.iter());
    let last = points().map(|(t, _)| *t).max().unwrap_or_default();
    let first = points()
        .map(|(t, _)| *t)
        .min()
        .unwrap_or_default()
        .min(last - MIN_SPAN.num_milliseconds());
    let low = points().map(|(_, v)| *v).fold(0.0, f64::min);
    let high = points().map(|(_, v)| *v).fold(low, f64::max);
    let headroom = if high > low { (high - low) * 0.1 } else { 1.0 };
    (first..last, low..high + headroom)
}

/// How x axis instants are labelled over a span of `span_ms`: the clock time, with the date
/// once the axis covers more than a day.
fn clock_format(span_ms: i64) -> &'static str {
    if span_ms > TimeDelta::days(1).num_milliseconds() {
        "%m-%d %H:%M"
    } else {
        "%H:%M:%S"
    }
}

/// A UTC instant given in milliseconds since the epoch, in `format`.
pub(crate) fn clock_time(ms: i64, format: &str) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

/// An axis value with as many decimals as its size needs.
fn axis_value(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 || v.fract() == 0.0 => format!("{value:.0}"),
        v if v >= 1.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

fn short_name(entity: &str) -> String {
    if entity.chars().count() <= LEGEND_NAME_CHARS {
        return entity.to_string();
    }
    let mut short: String = entity.chars().take(LEGEND_NAME_CHARS - 1).collect();
    short.push('…');
    short
}

/// `#rrggbb` of a colour.
pub(crate) fn css_color(RGBColor(red, green, blue): RGBColor) -> String {
    format!("#{red:02x}{green:02x}{blue:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(metric: &str, entity: &str, window: i64, value: f64, revision: u32) -> MetricRecord {
        let start = DateTime::<Utc>::from_timestamp(1_700_000_000 + window * 10, 0).unwrap();
        MetricRecord {
            metric: metric.to_string(),
            entity_kind: "district".to_string(),
            entity: entity.to_string(),
            window_start: start,
            window_end: start + TimeDelta::seconds(10),
            value,
            revision,
            emitted_at: start + TimeDelta::seconds(12),
        }
    }

    #[test]
    fn lines_keep_the_highest_revision_of_each_window_in_order() {
        let records = [
            record("traffic.vehicles", "north", 1, 5.0, 0),
            record("traffic.vehicles", "north", 0, 3.0, 1),
            record("traffic.vehicles", "north", 0, 2.0, 0),
            record("traffic.vehicles", "east", 0, 7.0, 0),
            record("energy.load_kw", "north", 0, 900.0, 0),
        ];
        let lines = lines_of(&SPECS[0], &records);
        let shown: Vec<(&str, Vec<(i64, f64)>)> = lines
            .iter()
            .map(|l| (l.entity.as_str(), l.points.clone()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("east", vec![(1_700_000_010_000, 7.0)]),
                (
                    "north",
                    vec![(1_700_000_010_000, 3.0), (1_700_000_020_000, 5.0)]
                ),
            ]
        );
    }

    #[test]
    fn clock_times_are_utc_and_dated_beyond_a_day() {
        let day = TimeDelta::days(1).num_milliseconds();
        assert_eq!(clock_time(1_700_000_000_000, clock_format(day)), "22:13:20");
        assert_eq!(
            clock_time(1_700_000_000_000, clock_format(day + 1)),
            "11-14 22:13"
        );
    }

    #[test]
    fn axis_values_get_the_decimals_their_size_needs() {
        assert_eq!(axis_value(0.0), "0");
        assert_eq!(axis_value(40.0), "40");
        assert_eq!(axis_value(1250.5), "1250");
        assert_eq!(axis_value(-2.5), "-2.5");
        assert_eq!(axis_value(0.125), "0.12");
    }

    #[test]
    fn long_entity_names_are_shortened_in_the_legend() {
        assert_eq!(short_name("north"), "north");
        assert_eq!(
            short_name("a-very-long-district-name").chars().count(),
            LEGEND_NAME_CHARS
        );
    }

    #[test]
    fn every_domain_has_a_chart() {
        for domain in ["traffic", "energy", "transport"] {
            assert_eq!(spec_of(domain).map(|s| s.domain), Some(domain));
        }
        assert!(spec_of("weather").is_none());
    }
}
