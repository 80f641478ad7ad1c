//! Chart rendering cost: what one metrics update costs the dashboard (the three SVG charts, drawn
//! once per update), what the first PNG download of a chart costs (later downloads of the same
//! update reuse it), and what `polis report` costs for the stacked image.
//!
//!     cargo bench -p polis-dashboard --bench chart_render -- [RENDERS]
//!
//! The history is 30 minutes of 10-second windows (180 windows) of every shipped traffic and
//! energy metric for 12 districts and every transport metric for 12 routes, at revision 0, as
//! the analytics tier emits them. Each chart is drawn by the same routine as the live page
//! (`polis_dashboard::report::render_chart` over the 30 minutes) `RENDERS` times (default 200);
//! the median and the 99th percentile of the wall-clock time per render are printed.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use polis_dashboard::report::{self, Format, Period};
use polis_telemetry::MetricRecord;

const WINDOWS: i64 = 180;
const WINDOW: TimeDelta = TimeDelta::seconds(10);
const DISTRICTS: usize = 12;
const ROUTES: usize = 12;
const DOMAINS: [&str; 3] = ["traffic", "energy", "transport"];

fn main() {
    let renders: usize = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .map(|arg| arg.parse().expect("RENDERS is a number of renders"))
        .unwrap_or(200);
    let start = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("a valid instant");
    let records = history(start);
    let period = Period {
        from: start,
        to: start + WINDOW * WINDOWS as i32,
    };
    println!(
        "{} metric windows ({WINDOWS} windows x {DISTRICTS} districts / {ROUTES} routes), {renders} renders each",
        records.len()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "what", "median", "p99", "bytes"
    );

    let mut size = 0;
    let update = measure(renders, || {
        size = DOMAINS
            .iter()
            .map(|domain| draw(domain, &records, period, Format::Svg))
            .sum();
    });
    print_row("update: 3 SVG charts", update, size);
    for domain in DOMAINS {
        let mut size = 0;
        let png = measure(renders, || {
            size = draw(domain, &records, period, Format::Png)
        });
        print_row(&format!("PNG chart {domain} (960x300)"), png, size);
    }
    for (name, format) in [
        ("report PNG (960x940)", Format::Png),
        ("report SVG", Format::Svg),
    ] {
        let mut size = 0;
        let times = measure(renders, || {
            size = report::render(&records, period, format)
                .expect("the report renders")
                .len();
        });
        print_row(name, times, size);
    }
}

fn draw(domain: &str, records: &[MetricRecord], period: Period, format: Format) -> usize {
    report::render_chart(domain, records, period, format)
        .expect("the chart renders")
        .len()
}

/// Wall-clock time of each of `renders` runs of `render`, sorted, after one warm-up run.
fn measure(renders: usize, mut render: impl FnMut()) -> Vec<Duration> {
    render();
    let mut times: Vec<Duration> = (0..renders)
        .map(|_| {
            let began = Instant::now();
            render();
            began.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn print_row(what: &str, sorted: Vec<Duration>, bytes: usize) {
    let at = |quantile: f64| sorted[((sorted.len() - 1) as f64 * quantile).round() as usize];
    println!(
        "{what:<34} {:>8.2}ms {:>8.2}ms {bytes:>10}",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
}

/// Every shipped metric of the traffic, energy and transport domains over 30 minutes.
fn history(start: DateTime<Utc>) -> Vec<MetricRecord> {
    let mut records = Vec::new();
    for window in 0..WINDOWS {
        let window_start = start + WINDOW * window as i32;
        let wave = |phase: usize| ((window as f64 / 12.0 + phase as f64).sin() + 1.0) / 2.0;
        let mut push = |metric: &str, kind: &str, entity: String, value: f64| {
            records.push(MetricRecord {
                metric: metric.to_string(),
                entity_kind: kind.to_string(),
                entity,
                window_start,
                window_end: window_start + WINDOW,
                value,
                revision: 0,
                emitted_at: window_start + WINDOW + TimeDelta::seconds(2),
            });
        };
        for d in 0..DISTRICTS {
            let district = || format!("district-{d:02}");
            push(
                "traffic.vehicles",
                "district",
                district(),
                100.0 + 80.0 * wave(d),
            );
            push(
                "traffic.average_speed_kmh",
                "district",
                district(),
                30.0 + 20.0 * wave(d),
            );
            push("traffic.occupancy_ratio", "district", district(), wave(d));
            push(
                "traffic.congestion_index",
                "district",
                district(),
                wave(d + 7),
            );
            push(
                "energy.load_kw",
                "district",
                district(),
                2_000.0 + 900.0 * wave(d),
            );
            push(
                "energy.min_voltage_v",
                "district",
                district(),
                220.0 + 5.0 * wave(d),
            );
            push(
                "energy.average_voltage_v",
                "district",
                district(),
                229.0 + wave(d),
            );
            push("energy.meters_reporting", "district", district(), 40.0);
        }
        for r in 0..ROUTES {
            let route = || format!("route-{r:02}");
            push("transport.active_vehicles", "route", route(), 10.0);
            push(
                "transport.average_delay_s",
                "route",
                route(),
                60.0 * wave(r),
            );
            push("transport.max_delay_s", "route", route(), 240.0 * wave(r));
            push("transport.occupancy_ratio", "route", route(), wave(r + 3));
        }
    }
    records
}
