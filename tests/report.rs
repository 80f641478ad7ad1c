//! `polis report` as an operator runs it: the real binary against a running platform fed by the
//! simulators, writing the last hour's charts as PNG and SVG; and its clear refusals of a file
//! type it cannot write and of times it cannot read.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Fleet, LIMIT, count, eventually, test_config};
use polis::Platform;
use polis_dashboard::report::REPORT_SIZE;

fn report(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polis"))
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_hour_is_drawn_as_png_and_svg_from_a_running_platform() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.analytics.window = Duration::from_secs(2);
    config.analytics.allowed_lateness = Duration::from_secs(1);
    let data_dir = config.data_dir.clone();
    let platform = Platform::start(config).await.unwrap();
    let http = platform.http_addr();
    let fleet = Fleet::start(&platform, &data_dir, (4, 4, 4));

    let metrics = "'traffic.vehicles', 'energy.load_kw', 'transport.average_delay_s'";
    eventually("a window of each charted metric", LIMIT, || async {
        let query =
            format!("SELECT count(DISTINCT metric) AS n FROM metrics WHERE metric IN ({metrics})");
        (count(http, &query).await == 3).then_some(())
    })
    .await;
    fleet.stop().await;
    let districts = common::sql(
        http,
        "SELECT DISTINCT entity FROM metrics WHERE metric = 'traffic.vehicles' ORDER BY entity",
    )
    .await;
    let district = districts[0]["entity"].as_str().unwrap().to_string();

    let url = format!("http://{http}");
    let png = dir.path().join("city.png");
    let output = report(&[
        "--from",
        "-1h",
        "--out",
        png.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed.starts_with(&format!("wrote {}", png.display())),
        "{printed}"
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), REPORT_SIZE);

    let svg = dir.path().join("city.svg");
    let output = report(&[
        "--from",
        "-1h",
        "--to",
        "now",
        "--out",
        svg.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let document = std::fs::read_to_string(&svg).unwrap();
    assert!(document.starts_with("<svg"), "{}", &document[..80]);
    assert!(
        document.contains(&district),
        "the legend names district {district}"
    );
    assert!(!document.contains("no data in this period"));

    // A period with no windows is drawn, and says so.
    let empty = dir.path().join("empty.svg");
    let output = report(&[
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        "2020-01-01T01:00:00Z",
        "--out",
        empty.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let document = std::fs::read_to_string(&empty).unwrap();
    assert_eq!(document.matches("no data in this period").count(), 3);

    platform.shutdown().await;
}

#[test]
fn unreadable_arguments_are_refused_with_what_would_be_right() {
    let dir = tempfile::tempdir().unwrap();
    let jpg = dir.path().join("city.jpg");
    let output = report(&[
        "--out",
        jpg.to_str().unwrap(),
        "--url",
        "http://127.0.0.1:1",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("name the file *.png or *.svg"),
        "{}",
        stderr(&output)
    );
    assert!(!jpg.exists());

    let output = report(&["--from", "yesterday", "--out", "x.png"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--from: `yesterday` is not a time"),
        "{}",
        stderr(&output)
    );

    let output = report(&[
        "--from",
        "-1h",
        "--to",
        "-2h",
        "--out",
        "x.svg",
        "--url",
        "http://127.0.0.1:1",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("must be after --from"),
        "{}",
        stderr(&output)
    );

    let output = report(&["--out", "x.svg", "--url", "http://127.0.0.1:1"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot reach Polis"),
        "{}",
        stderr(&output)
    );
}
