//! `polis report`: fetch the metric windows of a period from a running platform over SQL and
//! draw the page's three charts into one PNG or SVG file.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use polis_dashboard::report::{self, Format, Period};
use polis_telemetry::MetricRecord;

/// Draws the report of `period` from the platform at `url` into `out`; returns how many metric
/// windows it drew.
pub async fn run(
    url: &str,
    token: Option<&str>,
    period: Period,
    out: &Path,
) -> anyhow::Result<usize> {
    let format = Format::of_path(out).with_context(|| {
        format!(
            "cannot tell the format of {}: name the file *.png or *.svg",
            out.display()
        )
    })?;
    anyhow::ensure!(
        period.to > period.from,
        "--to {} must be after --from {}",
        period.to.to_rfc3339(),
        period.from.to_rfc3339()
    );
    let body = crate::sql_client::post_sql(url, token, &query(period)).await?;
    let records: Vec<MetricRecord> = serde_json::from_str(&body)
        .context("the server's metric windows do not read as metric records")?;
    let image = report::render(&records, period, format)?;
    std::fs::write(out, image).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(records.len())
}

/// The latest revision of every window of the report's metrics that starts in `period`.
fn query(period: Period) -> String {
    let metrics = report::METRICS.map(|m| format!("'{m}'")).join(", ");
    format!(
        "SELECT metric, entity_kind, entity, window_start, window_end, value, revision, emitted_at \
         FROM (SELECT *, row_number() OVER (PARTITION BY metric, entity, window_start \
         ORDER BY revision DESC) AS latest FROM metrics \
         WHERE metric IN ({metrics}) AND window_start >= TIMESTAMP '{}' AND window_start < TIMESTAMP '{}') \
         WHERE latest = 1 ORDER BY window_start",
        period.from.to_rfc3339(),
        period.to.to_rfc3339()
    )
}

/// A time of the command line: `now`, a span back from `now` such as `-1h` or `-30m`, or an
/// RFC 3339 time such as `2026-12-03T08:00:00Z`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if text == "now" {
        return Ok(now);
    }
    if let Some(back) = text.strip_prefix('-') {
        let span = humantime_serde::re::humantime::parse_duration(back).with_context(|| {
            format!("`{text}` is not a span back from now: use e.g. -1h, -30m or -2h30m")
        })?;
        let span = chrono::TimeDelta::from_std(span).context("that span is too long")?;
        return now
            .checked_sub_signed(span)
            .with_context(|| format!("`{text}` reaches before any representable time"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| {
            format!("`{text}` is not a time: use now, a span back such as -1h, or RFC 3339 such as 2026-12-03T08:00:00Z")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_now_spans_back_or_rfc3339() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("-1h30m", now).unwrap().to_rfc3339(),
            "2026-12-03T08:30:00+00:00"
        );
        assert_eq!(
            parse_time("2026-12-03T09:15:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-12-03T08:15:00+00:00"
        );
        let error = parse_time("yesterday", now).unwrap_err().to_string();
        assert!(error.contains("RFC 3339"), "{error}");
        let error = parse_time("-1 fortnight", now).unwrap_err().to_string();
        assert!(error.contains("-30m"), "{error}");
    }
}
