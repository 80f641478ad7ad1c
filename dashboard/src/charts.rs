//! The live charts: one line chart per domain over the history, drawn as SVG once per update and
//! shared by every viewer; the PNG of a chart is drawn on its first download and kept with that
//! update, so every later download of the same update reuses it.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};

use crate::draw::{self, BACKGROUND, Chart, ChartSpec, Line, SPECS, TEXT, css_color};
use crate::state::MetricHistory;

/// Pixel size of a chart; the page scales it through the SVG view box.
const SIZE: (u32, u32) = (960, 300);
/// What a chart without data says.
const WAITING: &str = "waiting for data";

/// The charts of one update: the three SVG documents, cheap to clone and share, and what the PNG
/// downloads of this update are drawn from.
#[derive(Clone)]
pub(crate) struct Charts {
    pub(crate) traffic: Arc<str>,
    pub(crate) energy: Arc<str>,
    pub(crate) transport: Arc<str>,
    bitmaps: Arc<Bitmaps>,
}

/// The lines of each chart (in [`SPECS`] order), each with its PNG once it was asked for.
struct Bitmaps {
    drawn_at: DateTime<Utc>,
    charts: [LazyPng; 3],
}

struct LazyPng {
    spec: &'static ChartSpec,
    lines: Vec<Line>,
    png: OnceLock<Result<Arc<[u8]>, String>>,
}

/// A chart as PNG, with the time its update was drawn (for the download's file name).
pub(crate) struct PngChart {
    pub(crate) bytes: Arc<[u8]>,
    pub(crate) drawn_at: DateTime<Utc>,
}

impl Charts {
    /// Renders every chart from `history` as SVG; a chart without data says it is waiting for data.
    pub(crate) fn render(history: &MetricHistory) -> Charts {
        let [traffic, energy, transport] = SPECS.each_ref().map(|spec| LazyPng {
            spec,
            lines: lines_from(spec, history),
            png: OnceLock::new(),
        });
        Charts {
            traffic: traffic.svg().into(),
            energy: energy.svg().into(),
            transport: transport.svg().into(),
            bitmaps: Arc::new(Bitmaps {
                drawn_at: Utc::now(),
                charts: [traffic, energy, transport],
            }),
        }
    }

    /// The SVG chart of `domain` (`traffic`, `energy` or `transport`).
    pub(crate) fn of_domain(&self, domain: &str) -> Option<&Arc<str>> {
        match domain {
            "traffic" => Some(&self.traffic),
            "energy" => Some(&self.energy),
            "transport" => Some(&self.transport),
            _ => None,
        }
    }

    /// The PNG chart of `domain`, drawn now unless this update's was drawn before; `None` for
    /// an unknown domain. Blocks for the drawing: call it off the async workers.
    pub(crate) fn png(&self, domain: &str) -> Option<Result<PngChart, String>> {
        let chart = self
            .bitmaps
            .charts
            .iter()
            .find(|chart| chart.spec.domain == domain)?;
        let drawn = chart.png.get_or_init(|| {
            draw::png(&chart.drawing())
                .map(Arc::from)
                .map_err(|error| format!("could not draw the {domain} chart as PNG: {error}"))
        });
        Some(drawn.clone().map(|bytes| PngChart {
            bytes,
            drawn_at: self.bitmaps.drawn_at,
        }))
    }
}

impl LazyPng {
    fn drawing(&self) -> LiveChart<'_> {
        LiveChart(Chart {
            spec: self.spec,
            lines: &self.lines,
            x_range: None,
            empty: WAITING,
        })
    }

    /// The SVG document, or a plain panel saying the chart is unavailable if plotters fails.
    fn svg(&self) -> String {
        draw::svg(&self.drawing()).unwrap_or_else(|error| {
            tracing::warn!(metric = self.spec.metric, %error, "could not render a dashboard chart");
            fallback_svg(self.spec.caption)
        })
    }
}

/// One live chart at [`SIZE`].
struct LiveChart<'a>(Chart<'a>);

impl draw::Drawing for LiveChart<'_> {
    fn size(&self) -> (u32, u32) {
        SIZE
    }

    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), plotters::prelude::DrawingAreaErrorKind<DB::ErrorType>> {
        self.0.draw_on(root)
    }
}

fn lines_from(spec: &ChartSpec, history: &MetricHistory) -> Vec<Line> {
    history
        .series_of(spec.metric)
        .map(|(entity, windows)| Line {
            entity: entity.to_string(),
            points: windows
                .map(|r| (r.window_end.timestamp_millis(), r.value))
                .collect(),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeDelta, Utc};
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
            charts.traffic.matches(r#"stroke-width="2" d="M"#).count(),
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
        for route in 0..draw::LEGEND_ROWS + 4 {
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
    fn a_png_is_drawn_once_per_update_and_reused_by_every_download() {
        let mut history = MetricHistory::new(Duration::from_secs(1800));
        for window in 0..6 {
            history.apply(record("energy.load_kw", "Uptown", window, 900.0));
        }
        let charts = Charts::render(&history);
        let first = charts.png("energy").unwrap().unwrap();
        let again = charts.clone().png("energy").unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first.bytes, &again.bytes),
            "the same update reuses its PNG"
        );
        assert_eq!(first.drawn_at, again.drawn_at);

        let decoder = png::Decoder::new(std::io::Cursor::new(first.bytes.to_vec()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), SIZE);
        assert_eq!(info.color_type, png::ColorType::Rgb);

        let next = Charts::render(&history).png("energy").unwrap().unwrap();
        assert!(
            !Arc::ptr_eq(&first.bytes, &next.bytes),
            "a new update draws anew"
        );
        assert!(Charts::render(&history).png("weather").is_none());
    }

    #[test]
    fn a_chart_without_data_still_has_a_png() {
        let charts = Charts::render(&MetricHistory::new(Duration::from_secs(60)));
        let png = charts.png("transport").unwrap().unwrap();
        assert!(png.bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn the_fallback_panel_is_an_svg_in_the_page_colours() {
        let svg = fallback_svg(SPECS[0].caption);
        assert_well_formed(&svg);
        assert!(svg.contains("#121a26"));
    }
}
