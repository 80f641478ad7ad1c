//! Reports: the three domain charts of the page over a chosen period, stacked into one image
//! under a title naming the period, as PNG or SVG (`polis report`). The caller fetches the metric
//! windows (the metrics in [`METRICS`], e.g. from the `metrics` SQL table) and hands them over;
//! each window is drawn at its highest revision.

use std::path::Path;

use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use polis_telemetry::MetricRecord;

use crate::DashboardError;
use crate::draw::{self, BACKGROUND, Chart, ChartSpec, Drawing, SPECS, TEXT};

/// Pixel size of one chart of a report, the size of the page's charts.
const CHART_SIZE: (u32, u32) = (960, 300);
/// Height of the title band above the charts.
const TITLE_HEIGHT: u32 = 40;
/// Pixel size of a whole report: the title band and the three charts below each other.
pub const REPORT_SIZE: (u32, u32) = (CHART_SIZE.0, TITLE_HEIGHT + 3 * CHART_SIZE.1);
/// The metrics a report draws, one per chart: traffic, energy, transport.
pub const METRICS: [&str; 3] = [SPECS[0].metric, SPECS[1].metric, SPECS[2].metric];
/// What a chart without windows in the period says.
const NO_DATA: &str = "no data in this period";

/// The image format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    /// The format named by `path`'s extension (`.png` or `.svg`, in any case), if any.
    pub fn of_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?;
        if extension.eq_ignore_ascii_case("png") {
            Some(Format::Png)
        } else if extension.eq_ignore_ascii_case("svg") {
            Some(Format::Svg)
        } else {
            None
        }
    }
}

/// The time span a report covers: windows that start at `from` or later and before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The report of `records` over `period`, [`REPORT_SIZE`] pixels, as PNG bytes or an SVG
/// document. Records of other metrics are ignored; a chart without records says so.
pub fn render(
    records: &[MetricRecord],
    period: Period,
    format: Format,
) -> Result<Vec<u8>, DashboardError> {
    check_period(period)?;
    let lines = SPECS.each_ref().map(|spec| draw::lines_of(spec, records));
    let report = Report {
        period,
        charts: [0, 1, 2].map(|i| chart(&SPECS[i], &lines[i], period)),
    };
    encode(&report, format, "the report")
}

/// The chart of one `domain` (`traffic`, `energy` or `transport`) over `period`, drawn as on the
/// page at 960×300 pixels: what the page's downloads and reports are made of.
pub fn render_chart(
    domain: &str,
    records: &[MetricRecord],
    period: Period,
    format: Format,
) -> Result<Vec<u8>, DashboardError> {
    check_period(period)?;
    let spec = draw::spec_of(domain).ok_or_else(|| {
        DashboardError::Render(format!(
            "a chart of `{domain}`: the domains are traffic, energy and transport"
        ))
    })?;
    let lines = draw::lines_of(spec, records);
    encode(
        &OneChart(chart(spec, &lines, period)),
        format,
        &format!("the {domain} chart"),
    )
}

fn check_period(period: Period) -> Result<(), DashboardError> {
    if period.to <= period.from {
        return Err(DashboardError::Render(format!(
            "a report from {} to {}: the end must be after the start",
            period.from, period.to
        )));
    }
    Ok(())
}

fn chart<'a>(spec: &'a ChartSpec, lines: &'a [draw::Line], period: Period) -> Chart<'a> {
    Chart {
        spec,
        lines,
        x_range: Some(period.from.timestamp_millis()..period.to.timestamp_millis()),
        empty: NO_DATA,
    }
}

fn encode(drawing: &impl Drawing, format: Format, what: &str) -> Result<Vec<u8>, DashboardError> {
    match format {
        Format::Png => draw::png(drawing),
        Format::Svg => draw::svg(drawing).map(String::into_bytes),
    }
    .map_err(|error| DashboardError::Render(format!("{what}: {error}")))
}

/// The three charts under the title band.
struct Report<'a> {
    period: Period,
    charts: [Chart<'a>; 3],
}

impl Drawing for Report<'_> {
    fn size(&self) -> (u32, u32) {
        REPORT_SIZE
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&BACKGROUND)?;
        let (title, body) = root.split_vertically(TITLE_HEIGHT);
        let format = "%Y-%m-%d %H:%M:%S";
        title.draw(&Text::new(
            format!(
                "Polis city report, {} to {} UTC",
                self.period.from.format(format),
                self.period.to.format(format)
            ),
            (12, TITLE_HEIGHT as i32 / 2),
            ("sans-serif", 20)
                .into_font()
                .color(&TEXT)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        for (chart, area) in self.charts.iter().zip(body.split_evenly((3, 1))) {
            chart.draw_on(&area)?;
        }
        Ok(())
    }
}

/// One chart on its own.
struct OneChart<'a>(Chart<'a>);

impl Drawing for OneChart<'_> {
    fn size(&self) -> (u32, u32) {
        CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        self.0.draw_on(root)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use chrono::TimeDelta;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn record(metric: &str, entity: &str, window: i64, value: f64) -> MetricRecord {
        MetricRecord {
            metric: metric.to_string(),
            entity_kind: "district".to_string(),
            entity: entity.to_string(),
            window_start: at(window * 10),
            window_end: at(window * 10 + 10),
            value,
            revision: 0,
            emitted_at: at(window * 10 + 12),
        }
    }

    fn city() -> Vec<MetricRecord> {
        let mut records = Vec::new();
        for window in 0..36 {
            let w = window as f64;
            records.push(record("traffic.vehicles", "harbour", window, 40.0 + w));
            records.push(record("traffic.vehicles", "old-town", window, 12.0));
            records.push(record("energy.load_kw", "industrial", window, 900.0 - w));
            records.push(record("transport.average_delay_s", "L2", window, 30.0));
            records.push(record("traffic.average_speed_kmh", "uptown", window, 50.0));
        }
        records
    }

    fn hour() -> Period {
        Period {
            from: at(0),
            to: at(0) + TimeDelta::hours(1),
        }
    }

    #[test]
    fn a_png_report_is_the_three_charts_stacked() {
        let png = render(&city(), hour(), Format::Png).unwrap();
        let decoder = png::Decoder::new(Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let info = reader.info().clone();
        assert_eq!((info.width, info.height), (960, 940));
        assert_eq!(REPORT_SIZE, (960, 940));
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        let background = [0x12, 0x1a, 0x26];
        assert_eq!(
            &pixels[..3],
            &background,
            "the corner is the page background"
        );
        let drawn = pixels
            .chunks(3)
            .filter(|pixel| *pixel != background)
            .count();
        assert!(
            drawn > 10_000,
            "lines and text are drawn: {drawn} pixels differ from the background"
        );
    }

    #[test]
    fn an_svg_report_names_every_domain_and_entity_and_the_period() {
        let svg = String::from_utf8(render(&city(), hour(), Format::Svg).unwrap()).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains(r#"width="960" height="940""#), "{svg}");
        for spec in &SPECS {
            assert!(svg.contains(spec.caption), "{}: {svg}", spec.caption);
        }
        for entity in ["harbour", "old-town", "industrial", "L2"] {
            assert!(svg.contains(&format!(">\n{entity}\n<")), "{entity}: {svg}");
        }
        assert!(
            !svg.contains("uptown"),
            "only the charted metrics are drawn"
        );
        assert!(
            svg.contains("Polis city report, 2023-11-14 22:13:20 to 2023-11-14 23:13:20 UTC"),
            "{svg}"
        );
        assert!(
            svg.contains("\n23:13:20\n") || svg.contains("\n23:03:20\n"),
            "the x axis spans the whole period, not just the data"
        );
    }

    #[test]
    fn a_domain_without_windows_says_so() {
        let records: Vec<MetricRecord> = city()
            .into_iter()
            .filter(|r| r.metric != "energy.load_kw")
            .collect();
        let svg = String::from_utf8(render(&records, hour(), Format::Svg).unwrap()).unwrap();
        assert_eq!(svg.matches(NO_DATA).count(), 1, "{svg}");
    }

    #[test]
    fn one_chart_is_drawn_at_the_page_size() {
        let png = render_chart("transport", &city(), hour(), Format::Png).unwrap();
        let info = png::Decoder::new(Cursor::new(png))
            .read_info()
            .unwrap()
            .info()
            .clone();
        assert_eq!((info.width, info.height), (960, 300));
        let error = render_chart("weather", &city(), hour(), Format::Svg)
            .unwrap_err()
            .to_string();
        assert!(error.contains("traffic, energy and transport"), "{error}");
    }

    #[test]
    fn an_empty_period_is_refused() {
        let period = Period {
            from: at(60),
            to: at(60),
        };
        let error = render(&city(), period, Format::Png)
            .unwrap_err()
            .to_string();
        assert!(error.contains("the end must be after the start"), "{error}");
    }

    #[test]
    fn the_format_follows_the_file_extension() {
        assert_eq!(Format::of_path(Path::new("city.png")), Some(Format::Png));
        assert_eq!(
            Format::of_path(Path::new("out/City.SVG")),
            Some(Format::Svg)
        );
        assert_eq!(Format::of_path(Path::new("city.jpg")), None);
        assert_eq!(Format::of_path(Path::new("city")), None);
    }
}
