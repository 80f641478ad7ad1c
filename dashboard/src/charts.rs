//! Server-side charts: one SVG line chart per domain over the history, rendered once per update
//! and shared by every viewer.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::state::MetricHistory;

/// Pixel size of a chart; the page scales it through the SVG view box.
const SIZE: (u32, u32) = (960, 300);
/// Width of the legend column at the right of the plot.
const LEGEND_WIDTH: u32 = 170;
/// The x axis spans at least this much time, so a few windows do not fill the whole width.
const MIN_SPAN: TimeDelta = TimeDelta::minutes(1);
/// Legend entries shown; further entities are summed up as "+N more".
const LEGEND_ROWS: usize = 11;
/// Longest entity name shown in full in the legend.
const LEGEND_NAME_CHARS: usize = 18;

/// The colours of the page (`assets/style.css`): panel background, grid, axes and text.
const BACKGROUND: RGBColor = RGBColor(0x12, 0x1a, 0x26);
const GRID: RGBColor = RGBColor(0x24, 0x31, 0x42);
const AXIS: RGBColor = RGBColor(0x5b, 0x6b, 0x80);
const TEXT: RGBColor = RGBColor(0xc9, 0xd4, 0xe3);
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
struct ChartSpec {
    metric: &'static str,
    caption: &'static str,
    unit: &'static str,
}

const TRAFFIC: ChartSpec = ChartSpec {
    metric: "traffic.vehicles",
    caption: "Traffic: vehicles per window by district (vehicles)",
    unit: "vehicles",
};
const ENERGY: ChartSpec = ChartSpec {
    metric: "energy.load_kw",
    caption: "Energy: load by district (kW)",
    unit: "kW",
};
const TRANSPORT: ChartSpec = ChartSpec {
    metric: "transport.average_delay_s",
    caption: "Transport: average delay by route (s)",
    unit: "s",
};

/// The three charts as SVG documents, cheap to clone and share.
#[derive(Clone)]
pub(crate) struct Charts {
    pub(crate) traffic: Arc<str>,
    pub(crate) energy: Arc<str>,
    pub(crate) transport: Arc<str>,
}

impl Charts {
    /// Renders every chart from `history`; a chart without data says it is waiting for data.
    pub(crate) fn render(history: &MetricHistory) -> Charts {
        Charts {
            traffic: render_chart(&TRAFFIC, history).into(),
            energy: render_chart(&ENERGY, history).into(),
            transport: render_chart(&TRANSPORT, history).into(),
        }
    }

    /// The chart of `domain` (`traffic`, `energy` or `transport`).
    pub(crate) fn of_domain(&self, domain: &str) -> Option<&Arc<str>> {
        match domain {
            "traffic" => Some(&self.traffic),
            "energy" => Some(&self.energy),
            "transport" => Some(&self.transport),
            _ => None,
        }
    }
}

/// One line per entity: (window end in ms since the epoch, value).
struct Line {
    entity: String,
    points: Vec<(i64, f64)>,
}

type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn render_chart(spec: &ChartSpec, history: &MetricHistory) -> String {
    let lines: Vec<Line> = history
        .series_of(spec.metric)
        .map(|(entity, windows)| Line {
            entity: entity.to_string(),
            points: windows
                .map(|r| (r.window_end.timestamp_millis(), r.value))
                .collect(),
        })
        .collect();
    // plotters panics on some degenerate ranges; a chart is not worth the task that draws it.
    let drawn = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut svg = String::new();
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        if lines.is_empty() {
            draw_waiting(spec, &root)
        } else {
            draw_lines(spec, &lines, &root)
        }
        .and_then(|()| root.present())
        .map_err(|error| error.to_string())?;
        drop(root);
        Ok::<_, String>(svg)
    }));
    match drawn {
        Ok(Ok(svg)) => svg,
        Ok(Err(error)) => {
            tracing::warn!(metric = spec.metric, %error, "could not render a dashboard chart");
            fallback_svg(spec.caption)
        }
        Err(_) => {
            tracing::warn!(
                metric = spec.metric,
                "plotters panicked rendering a dashboard chart"
            );
            fallback_svg(spec.caption)
        }
    }
}

fn draw_waiting(spec: &ChartSpec, root: &DrawingArea<SVGBackend, Shift>) -> DrawResult {
    root.fill(&BACKGROUND)?;
    let body = root
        .margin(10, 10, 10, 10)
        .titled(spec.caption, ("sans-serif", 18).into_font().color(&TEXT))?;
    let (width, height) = body.dim_in_pixel();
    let centred = ("sans-serif", 16)
        .into_font()
        .color(&MUTED)
        .pos(Pos::new(HPos::Center, VPos::Center));
    body.draw(&Text::new(
        "waiting for data",
        (width as i32 / 2, height as i32 / 2),
        centred,
    ))
}

fn draw_lines(
    spec: &ChartSpec,
    lines: &[Line],
    root: &DrawingArea<SVGBackend, Shift>,
) -> DrawResult {
    root.fill(&BACKGROUND)?;
    let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let (x_range, y_range) = ranges(lines);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(spec.caption, ("sans-serif", 18).into_font().color(&TEXT))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS)
        .label_style(("sans-serif", 13).into_font().color(&MUTED))
        .axis_desc_style(("sans-serif", 13).into_font().color(&MUTED))
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|ms| clock_time(*ms))
        .y_label_formatter(&|value| axis_value(*value))
        .x_desc("time (UTC)")
        .y_desc(spec.unit)
        .draw()?;
    for (line, color) in lines.iter().zip(PALETTE.iter().cycle()) {
        chart.draw_series(LineSeries::new(
            line.points.iter().copied(),
            color.stroke_width(2),
        ))?;
    }
    draw_legend(lines, &legend_area)
}

fn draw_legend(lines: &[Line], area: &DrawingArea<SVGBackend, Shift>) -> DrawResult {
    let font = ("sans-serif", 13)
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
fn ranges(lines: &[Line]) -> (std::ops::Range<i64>, std::ops::Range<f64>) {
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

/// `HH:MM:SS` of a UTC instant given in milliseconds since the epoch.
fn clock_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S").to_string())
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

/// A plain panel with the caption, for the unlikely case that plotters fails to lay a chart out.
fn fallback_svg(caption: &str) -> String {
    let (width, height) = SIZE;
    format!(
        concat!(
            r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" "#,
            r#"xmlns="http://www.w3.org/2000/svg">"#,
            r#"<rect width="{w}" height="{h}" fill="{bg}"/>"#,
            r#"<text x="{x}" y="{y}" text-anchor="middle" fill="{text}" font-family="sans-serif">"#,
            "{caption}: chart unavailable</text></svg>\n"
        ),
        w = width,
        h = height,
        x = width / 2,
        y = height / 2,
        bg = css_color(BACKGROUND),
        text = css_color(TEXT),
        caption = caption,
    )
}

fn css_color(RGBColor(red, green, blue): RGBColor) -> String {
    format!("#{red:02x}{green:02x}{blue:02x}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use polis_telemetry::MetricRecord;

    use super::*;

    fn record(metric: &str, entity: &str, window: i64, value: f64) -> MetricRecord {
        let start = DateTime::<Utc>::from_timestamp(1_700_000_000 + window * 10, 0).unwrap();
        MetricRecord {
            metric: metric.to_string(),
            entity_kind: "district".to_string(),
            entity: entity.to_string(),
            window_start: start,
            window_end: start + TimeDelta::seconds(10),
            value,
            revision: 0,
            emitted_at: start + TimeDelta::seconds(12),
        }
    }

    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert_eq!(svg.matches("<svg").count(), 1);
    }

    #[test]
    fn without_data_every_chart_is_waiting_for_data() {
        let charts = Charts::render(&MetricHistory::new(Duration::from_secs(1800)));
        for domain in ["traffic", "energy", "transport"] {
            let svg = charts.of_domain(domain).unwrap();
            assert_well_formed(svg);
            assert!(svg.contains("waiting for data"), "{domain}: {svg}");
        }
        assert!(charts.of_domain("weather").is_none());
    }

    #[test]
    fn a_chart_draws_one_named_line_per_entity_of_its_metric() {
        let mut history = MetricHistory::new(Duration::from_secs(1800));
        for window in 0..6 {
            history.apply(record(
                "traffic.vehicles",
                "Old Town",
                window,
                40.0 + window as f64,
            ));
            history.apply(record("traffic.vehicles", "Harbour & Docks", window, 12.0));
            history.apply(record("energy.load_kw", "Uptown", window, 900.0));
        }
        let charts = Charts::render(&history);
        assert_well_formed(&charts.traffic);
        assert!(charts.traffic.contains("Old Town"));
        assert!(
            charts.traffic.contains("Harbour &amp; Docks"),
            "entity names are escaped"
        );
        assert!(
            !charts.traffic.contains("Uptown"),
            "energy entities stay out of the traffic chart"
        );
        assert_eq!(
            charts.traffic.matches(r#"stroke-width="2" points"#).count(),
            2,
            "one line per district"
        );
        assert!(
            charts.traffic.contains("(vehicles)"),
            "the caption names the unit"
        );
        assert!(
            charts.traffic.contains("\n22:13:30\n"),
            "the x axis is labelled with UTC clock times"
        );
        assert!(charts.energy.contains("Uptown"));
        assert!(charts.transport.contains("waiting for data"));
    }

    #[test]
    fn the_legend_sums_up_entities_beyond_its_rows() {
        let mut history = MetricHistory::new(Duration::from_secs(1800));
        for route in 0..LEGEND_ROWS + 4 {
            history.apply(record(
                "transport.average_delay_s",
                &format!("route-{route:02}"),
                0,
                route as f64,
            ));
        }
        let svg = Charts::render(&history).transport;
        assert_well_formed(&svg);
        assert!(svg.contains("+4 more"), "{svg}");
    }

    #[test]
    fn clock_times_are_utc_hours_minutes_seconds() {
        assert_eq!(clock_time(1_700_000_000_000), "22:13:20");
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
    fn the_fallback_panel_is_an_svg_in_the_page_colours() {
        let svg = fallback_svg(TRAFFIC.caption);
        assert_well_formed(&svg);
        assert!(svg.contains("#121a26"));
    }
}
