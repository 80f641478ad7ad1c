//! The operator page in a real headless Chromium, driven over the DevTools protocol, against the
//! whole platform fed by the simulators: the KPIs go live and change, a district drills down to
//! its metrics and devices, an alarm is acknowledged with its button, and a SQL query typed into
//! the console shows its rows and plots a column. Screenshots of each step go to
//! `target/screenshots/`. Every wait has a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cdp::{Browser, Page};
use common::{Fleet, eventually, sql, test_config};
use polis::Platform;
use polis_telemetry::AlertRecord;
use serde_json::{Value, json};

/// An operator rule that raises at once on any district with traffic, and stays raised.
const BUSY_RULE: &str = "busy_district";
const BUSY_RULES: &str = r#"
[[threshold]]
name = "busy_district"
metric = "traffic.vehicles"
above = 0
severity = "minor"
raise_after = 1
clear_after = 1000
message = "{value} vehicles in {entity}"
"#;

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// The text of the element with `id`.
async fn text_of(page: &mut Page, id: &str) -> String {
    page.eval(&format!("document.getElementById('{id}').textContent"))
        .await
        .as_str()
        .unwrap()
        .to_string()
}

/// `SELECT` rows as a sorted list of one string column.
fn column(rows: &[Value], name: &str) -> Vec<String> {
    let mut values: Vec<String> = rows
        .iter()
        .map(|r| r[name].as_str().unwrap().to_string())
        .collect();
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_follows_the_city_and_handles_an_alarm_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.analytics.window = Duration::from_secs(2);
    config.analytics.allowed_lateness = Duration::from_secs(1);
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("busy.toml"), BUSY_RULES).unwrap();
    config.analytics.rules_dir = Some(rules);
    let data_dir = config.data_dir.clone();
    let platform = Platform::start(config).await.unwrap();
    let http = platform.http_addr();

    let fleet = Fleet::start(&platform, &data_dir, (8, 8, 4));

    let shots = screenshots();
    let browser = Browser::launch(1366, 768).await;
    let mut page = browser.new_page().await;
    page.navigate(&format!("http://{http}/")).await;
    page.screenshot(&shots, "01-page-loaded").await;

    // The KPI tiles fill in from the live stream, and change with the next windows.
    let first = page
        .wait_for(
            "the vehicles KPI",
            "(() => { const v = document.getElementById('kpi-vehicles').textContent; \
             return v !== '–' && v; })()",
        )
        .await;
    page.wait_for(
        "the load and speed KPIs",
        "document.getElementById('kpi-load').textContent !== '–' && \
         document.getElementById('kpi-speed').textContent !== '–'",
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('live').dataset.state")
            .await,
        "live"
    );
    assert_eq!(text_of(&mut page, "live-label").await, "live");
    page.wait_for(
        "the vehicles KPI to change",
        &format!("document.getElementById('kpi-vehicles').textContent !== {first}"),
    )
    .await;
    page.wait_for(
        "a trend arrow against the previous window",
        "['▲', '▼', '▶'].includes(document.getElementById('kpi-vehicles-trend').textContent)",
    )
    .await;
    page.screenshot(&shots, "02-kpis-live").await;

    // A click on a district in the map drills down to its metrics and its devices.
    let districts = column(
        &sql(http, "SELECT DISTINCT district FROM traffic").await,
        "district",
    );
    let district = districts[0].clone();
    let cell = format!(r#"#district-map [data-district="{district}"] rect"#);
    page.wait_for(
        "the district map",
        &format!("document.querySelector({}) !== null", json!(cell)),
    )
    .await;
    let colour = page
        .eval(&format!(
            "document.querySelector({}).getAttribute('class')",
            json!(cell)
        ))
        .await;
    assert!(
        colour.as_str().unwrap().starts_with("cell "),
        "a coloured cell: {colour}"
    );
    page.click(&cell).await;
    page.wait_for(
        "the district drill-down",
        &format!(
            "!document.getElementById('drill').hidden && \
             document.getElementById('drill-title').textContent === {}",
            json!(format!("District {district}"))
        ),
    )
    .await;
    page.wait_for(
        "the district's traffic metrics",
        "document.querySelector('#drill-metrics tr[data-metric=\"traffic.vehicles\"]') !== null",
    )
    .await;
    let query = format!(
        "SELECT DISTINCT device_id FROM traffic WHERE district = '{district}' \
         UNION SELECT DISTINCT device_id FROM energy WHERE district = '{district}' \
         UNION SELECT DISTINCT device_id FROM transport WHERE district = '{district}'"
    );
    let expected = column(&sql(http, &query).await, "device_id");
    assert!(!expected.is_empty());
    page.wait_for(
        "the district's devices",
        &format!(
            "JSON.stringify([...document.querySelectorAll('#drill-devices tr[data-device]')] \
             .map((r) => r.dataset.device).sort()) === {}",
            json!(json!(expected).to_string())
        ),
    )
    .await;
    assert_eq!(
        text_of(&mut page, "crumb-district").await,
        district,
        "the breadcrumb names the district"
    );
    page.screenshot(&shots, "03-district-drill-down").await;

    // The last hour of the district comes from the metrics table, then a device's readings.
    page.eval(
        "(() => { const r = document.getElementById('range'); r.value = '1h'; \
         r.dispatchEvent(new Event('change')); })()",
    )
    .await;
    page.wait_for(
        "the last hour from SQL",
        "document.getElementById('drill-status').textContent.includes('rows from the metrics table') && \
         document.querySelector('#drill-metrics tr[data-metric=\"traffic.vehicles\"]') !== null",
    )
    .await;
    let device = &expected[0];
    page.click(&format!(r#"#drill-devices tr[data-device="{device}"]"#))
        .await;
    page.wait_for(
        "the device's readings",
        "document.querySelectorAll('#drill-readings tbody tr').length > 0",
    )
    .await;
    assert_eq!(text_of(&mut page, "crumb-device").await, *device);
    page.screenshot(&shots, "04-device-drill-down").await;

    // The operator rule raises an alarm on every district with traffic; the clicked district's
    // alarm reaches the list, and its Acknowledge button acknowledges it.
    let alert_id = AlertRecord::id(BUSY_RULE, &district);
    let row = format!(r#"#alarm-list tr[data-alert-id="{}"]"#, alert_id);
    page.wait_for(
        "the alarm in the list",
        &format!(
            "(() => {{ const r = document.querySelector({}); return r !== null && \
             r.querySelector('.state').dataset.state === 'raised' && \
             r.querySelector('.severity').textContent === 'minor'; }})()",
            json!(row)
        ),
    )
    .await;
    page.screenshot(&shots, "05-alarm-raised").await;
    page.click(&format!("{row} button.alarm-ack")).await;
    page.wait_for(
        "the alarm to be acknowledged",
        &format!(
            "(() => {{ const r = document.querySelector({}); \
             if (!document.getElementById('alarm-error').hidden) \
               throw new Error(document.getElementById('alarm-error').textContent); \
             return r !== null && r.querySelector('.state').dataset.state === 'acknowledged'; }})()",
            json!(row)
        ),
    )
    .await;
    let active = eventually("the active alarms", common::LIMIT, || async {
        let alarms: Vec<Value> = reqwest::get(format!("http://{http}/api/alerts"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(alarms.len())
    })
    .await;
    assert!(active >= 1, "the acknowledged alarm is still active");
    page.wait_for(
        "the alarms tile to count the active alarms",
        &format!("document.getElementById('kpi-alarms').textContent === '{active}'"),
    )
    .await;
    let stored = eventually("the acknowledgement in SQL", common::LIMIT, || async {
        let rows = sql(
            http,
            &format!(
                "SELECT state, acknowledged_by FROM alerts WHERE alert_id = '{}' \
                 ORDER BY changed_at DESC, _offset DESC LIMIT 1",
                alert_id
            ),
        )
        .await;
        rows.into_iter()
            .next()
            .filter(|row| row["state"] == "acknowledged")
    })
    .await;
    assert_eq!(stored["acknowledged_by"], "operator");
    page.screenshot(&shots, "06-alarm-acknowledged").await;

    // A query typed into the SQL console shows its rows, and a numeric column plots as a line.
    let console = "SELECT district, length(district) AS name_length \
                   FROM (SELECT DISTINCT district FROM traffic) ORDER BY district";
    page.type_into("#sql-text", console).await;
    page.click("#sql-run").await;
    page.wait_for(
        "the SQL rows",
        &format!(
            "document.getElementById('sql-status').dataset.rows === '{}'",
            districts.len()
        ),
    )
    .await;
    let shown = page
        .eval(
            "[...document.querySelectorAll('#sql-table tbody tr')] \
             .map((r) => [r.cells[0].textContent, Number(r.cells[1].textContent)])",
        )
        .await;
    let expected_rows: Vec<Value> = districts
        .iter()
        .map(|d| json!([d, d.chars().count()]))
        .collect();
    assert_eq!(shown, Value::Array(expected_rows));
    page.eval("document.getElementById('sql-plot-column').value = 'name_length'")
        .await;
    page.click("#sql-plot-button").await;
    page.wait_for(
        "the plotted column",
        &format!(
            "document.getElementById('sql-plot').dataset.points === '{}' && \
             document.querySelector('#sql-plot polyline') !== null",
            districts.len()
        ),
    )
    .await;
    page.screenshot(&shots, "07-sql-console").await;

    // The same page on a 1920 × 1080 screen.
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    page.eval("window.scrollTo(0, 0)").await;
    page.screenshot(&shots, "08-full-hd").await;

    drop(page);
    drop(browser);
    fleet.stop().await;
    platform.shutdown().await;
}
