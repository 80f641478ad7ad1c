//! Operators' SQL clients against a running platform, over a known set of traffic readings:
//! HTTP in every output format, a PostgreSQL driver (tokio-postgres, simple and extended
//! protocol, Grafana's and psql's catalog queries) and psql itself; writes are refused, and the
//! time and memory limits stop a query with a clear error while other queries go on.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use bytesize::ByteSize;
use common::{count, eventually, test_config};
use polis::{Platform, PolisConfig};
use polis_broker::Record;
use polis_telemetry::topics;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const LIMIT: Duration = Duration::from_secs(60);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// `(device_id, district, ms after 2025-03-01T08:00:00Z, vehicles, average_speed_kmh, lane_id,
/// congested)`.
type Reading = (
    &'static str,
    &'static str,
    u64,
    i64,
    f64,
    Option<i64>,
    Option<bool>,
);

const READINGS: [Reading; 4] = [
    ("tc-1", "harbour", 1_000, 12, 38.5, Some(1), Some(false)),
    ("tc-2", "harbour", 2_250, 7, 22.25, None, None),
    ("tc-3", "old-town", 3_500, 30, 12.5, Some(2), Some(true)),
    ("tc-4", "university", 4_750, 3, 50.75, None, Some(false)),
];

const QUERY: &str = "SELECT device_id, district, observed_at, vehicles, average_speed_kmh, lane_id, congested FROM traffic ORDER BY device_id";

/// Sums 10¹¹ numbers: far past the time limit.
const SLOW: &str = "SELECT sum(value % 7) FROM generate_series(1, 100000000000)";

/// Needs a hash table of a million groups: far past `analytics.query_memory`.
const BIG: &str = "SELECT value % 1000000 AS k, count(*) AS n FROM generate_series(1, 1500000) GROUP BY value % 1000000 ORDER BY n DESC LIMIT 1";

fn observed_at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_740_816_000_000 + ms)
}

fn config(dir: &std::path::Path) -> PolisConfig {
    let mut config = test_config(dir);
    config.analytics.query_timeout = QUERY_TIMEOUT;
    config.analytics.query_memory = ByteSize::mib(8);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_query_over_http_postgres_and_psql() {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(config(dir.path())).await.unwrap();
    seed(&platform).await;

    http_formats(platform.http_addr()).await;
    http_limits(platform.http_addr()).await;
    let pg = platform.pg_addr();
    postgres_rows(pg).await;
    postgres_catalog(pg).await;
    postgres_refusals(pg).await;
    postgres_limits(pg).await;
    psql(pg).await;

    platform.shutdown().await;
    assert!(
        connect(pg).await.is_err(),
        "the PostgreSQL listener stops with the platform"
    );
}

/// Appends the readings to the log as the gateway would, and waits until SQL sees them.
async fn seed(platform: &Platform) {
    let records = READINGS
        .iter()
        .map(|(device, district, ms, vehicles, speed, lane, congested)| {
            let at = polis_telemetry::reading::format_time(observed_at(*ms).into());
            let value = serde_json::json!({
                "device_id": device, "district": district, "observed_at": at, "ingested_at": at,
                "lane_id": lane, "vehicles": vehicles, "occupancy_ratio": 0.5,
                "average_speed_kmh": speed, "congested": congested,
            });
            Record::new(Some(*device), value.to_string(), 0)
        })
        .collect();
    platform
        .log()
        .produce(topics::TRAFFIC, records)
        .await
        .unwrap();
    let http = platform.http_addr();
    eventually("the readings to be queryable", LIMIT, || async move {
        (count(http, "SELECT count(*) AS n FROM traffic").await == 4).then_some(())
    })
    .await;
}

async fn post(
    http: SocketAddr,
    path_and_query: &str,
    accept: Option<&str>,
    sql: &str,
) -> (u16, String, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{http}{path_and_query}"))
        .body(sql.to_string());
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

async fn http_formats(http: SocketAddr) {
    let rows = [
        r#"{"device_id":"tc-1","district":"harbour","observed_at":"2025-03-01T08:00:01Z","vehicles":12,"average_speed_kmh":38.5,"lane_id":1,"congested":false}"#,
        r#"{"device_id":"tc-2","district":"harbour","observed_at":"2025-03-01T08:00:02.250Z","vehicles":7,"average_speed_kmh":22.25,"lane_id":null,"congested":null}"#,
        r#"{"device_id":"tc-3","district":"old-town","observed_at":"2025-03-01T08:00:03.500Z","vehicles":30,"average_speed_kmh":12.5,"lane_id":2,"congested":true}"#,
        r#"{"device_id":"tc-4","district":"university","observed_at":"2025-03-01T08:00:04.750Z","vehicles":3,"average_speed_kmh":50.75,"lane_id":null,"congested":false}"#,
    ];
    let json = format!("[{}]", rows.join(","));
    let ndjson: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let csv = "device_id,district,observed_at,vehicles,average_speed_kmh,lane_id,congested\n\
               tc-1,harbour,2025-03-01T08:00:01Z,12,38.5,1,false\n\
               tc-2,harbour,2025-03-01T08:00:02.250Z,7,22.25,,\n\
               tc-3,old-town,2025-03-01T08:00:03.500Z,30,12.5,2,true\n\
               tc-4,university,2025-03-01T08:00:04.750Z,3,50.75,,false\n";
    for (path, accept, content_type, body) in [
        ("/api/sql", None, "application/json", json.as_str()),
        (
            "/api/sql?format=json",
            None,
            "application/json",
            json.as_str(),
        ),
        ("/api/sql?format=csv", None, "text/csv", csv),
        ("/api/sql", Some("text/csv"), "text/csv", csv),
        (
            "/api/sql?format=ndjson",
            None,
            "application/x-ndjson",
            &ndjson,
        ),
        (
            "/api/sql",
            Some("application/x-ndjson"),
            "application/x-ndjson",
            &ndjson,
        ),
    ] {
        let (status, actual_type, actual) = post(http, path, accept, QUERY).await;
        assert_eq!(status, 200, "{path} {accept:?}");
        assert_eq!(actual_type, content_type, "{path} {accept:?}");
        assert_eq!(
            String::from_utf8(actual).unwrap(),
            body,
            "{path} {accept:?}"
        );
    }
    let parsed: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        serde_json::Value::Array(parsed)
    );

    for (path, accept) in [
        ("/api/sql?format=arrow", None),
        ("/api/sql", Some("application/vnd.apache.arrow.stream")),
    ] {
        let (status, content_type, bytes) = post(http, path, accept, QUERY).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "application/vnd.apache.arrow.stream")
        );
        let reader = arrow::ipc::reader::StreamReader::try_new(&bytes[..], None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_arrow_rows(&batch);
    }

    let (status, _, body) = post(http, "/api/sql?format=xml", None, QUERY).await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("json, csv, ndjson or arrow"), "{body}");
    let (status, _, body) = post(http, "/api/sql", Some("text/html"), QUERY).await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 406, "{body}");
    assert!(body.contains("text/csv"), "{body}");
}

fn assert_arrow_rows(batch: &RecordBatch) {
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "device_id",
            "district",
            "observed_at",
            "vehicles",
            "average_speed_kmh",
            "lane_id",
            "congested"
        ]
    );
    assert_eq!(
        batch.column(2).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    let text = |i: usize| -> Vec<String> {
        let column = arrow::compute::cast(batch.column(i), &DataType::Utf8).unwrap();
        column
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap().to_string())
            .collect()
    };
    assert_eq!(text(0), ["tc-1", "tc-2", "tc-3", "tc-4"]);
    assert_eq!(text(1), ["harbour", "harbour", "old-town", "university"]);
    assert_eq!(
        batch
            .column(3)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec(),
        [12, 7, 30, 3]
    );
    assert_eq!(
        batch
            .column(4)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec(),
        [38.5, 22.25, 12.5, 50.75]
    );
    let lanes = batch.column(5).as_primitive::<Int64Type>();
    assert_eq!(
        (0..4)
            .map(|i| lanes.is_valid(i).then(|| lanes.value(i)))
            .collect::<Vec<_>>(),
        [Some(1), None, Some(2), None]
    );
    let congested = batch.column(6).as_boolean();
    assert_eq!(
        (0..4)
            .map(|i| congested.is_valid(i).then(|| congested.value(i)))
            .collect::<Vec<_>>(),
        [Some(false), None, Some(true), Some(false)]
    );
}

async fn http_limits(http: SocketAddr) {
    let (status, _, body) = post(http, "/api/sql", None, BIG).await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("analytics.query_memory"), "{body}");
    let (status, _, body) = post(
        http,
        "/api/sql",
        None,
        "INSERT INTO traffic SELECT * FROM traffic",
    )
    .await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("INSERT is refused: Polis SQL is read-only"),
        "{body}"
    );
}

async fn connect(pg: SocketAddr) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port())
        .user("polis")
        .password("polis")
        .dbname("polis")
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn postgres_rows(pg: SocketAddr) {
    let client = connect(pg).await.unwrap();
    type Row = (
        String,
        String,
        SystemTime,
        i64,
        f64,
        Option<i64>,
        Option<bool>,
    );
    let rows: Vec<Row> = client
        .query(QUERY, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get("device_id"),
                row.get("district"),
                row.get("observed_at"),
                row.get("vehicles"),
                row.get("average_speed_kmh"),
                row.get("lane_id"),
                row.get("congested"),
            )
        })
        .collect();
    let expected: Vec<Row> = READINGS
        .iter()
        .map(
            |&(device, district, ms, vehicles, speed, lane, congested)| {
                let at = observed_at(ms);
                (
                    device.into(),
                    district.into(),
                    at,
                    vehicles,
                    speed,
                    lane,
                    congested,
                )
            },
        )
        .collect();
    assert_eq!(rows, expected);

    let busy: Vec<String> = client
        .query(
            "SELECT device_id FROM traffic WHERE vehicles > $1 AND district <> $2 ORDER BY device_id",
            &[&5i64, &"old-town"],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(busy, ["tc-1", "tc-2"]);

    let text: Vec<Vec<Option<String>>> = simple_rows(
        &client,
        "SELECT device_id, vehicles, average_speed_kmh, lane_id, congested FROM traffic ORDER BY device_id",
    )
    .await;
    let some = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
    assert_eq!(
        text,
        [
            some(&[Some("tc-1"), Some("12"), Some("38.5"), Some("1"), Some("f")]),
            some(&[Some("tc-2"), Some("7"), Some("22.25"), None, None]),
            some(&[Some("tc-3"), Some("30"), Some("12.5"), Some("2"), Some("t")]),
            some(&[Some("tc-4"), Some("3"), Some("50.75"), None, Some("f")]),
        ]
    );
}

async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Grafana's version probe, table list and column list (its `getVersion`, `showTables` and
/// `getSchema` meta queries), a panel query with its macros (`$__timeGroupAlias`,
/// `$__timeFilter`) expanded, and the query psql sends for `\dt`. Grafana lists the tables
/// schema-qualified (`public.traffic`), as it does for any schema outside its search path.
async fn postgres_catalog(pg: SocketAddr) {
    let client = connect(pg).await.unwrap();
    let version = client
        .query(
            "SELECT current_setting('server_version_num')::int/100 as version",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(version[0].get::<_, i64>("version"), 1600);
    let search_path = r#"quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"#;
    let grafana_tables = format!(
        r#"SELECT
    CASE WHEN {search_path}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {search_path} THEN 0 ELSE 1 END, 1"#
    );
    let tables: Vec<String> = client
        .query(&grafana_tables, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("table"))
        .collect();
    assert_eq!(
        tables,
        [
            "public.alerts",
            "public.deadletter",
            "public.devices",
            "public.energy",
            "public.metrics",
            "public.traffic",
            "public.transport"
        ]
    );

    let grafana_columns = format!(
        r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('public.traffic'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('public.traffic'))[1]
          AND quote_ident(table_name) = (parse_ident('public.traffic'))[2]
        ELSE quote_ident(table_name) = 'public.traffic'
          AND {search_path}
      END"#
    );
    let columns: Vec<String> = client
        .query(&grafana_columns, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("column"))
        .collect();
    assert!(
        columns.contains(&"vehicles".to_string()) && columns.contains(&"observed_at".to_string()),
        "{columns:?}"
    );

    let panel = "SELECT floor(extract(epoch from observed_at)/60)*60 AS \"time\", sum(vehicles) AS vehicles FROM traffic WHERE observed_at BETWEEN '2025-03-01T07:55:00Z' AND '2025-03-01T08:05:00Z' GROUP BY 1 ORDER BY 1";
    let series: Vec<(f64, i64)> = client
        .query(panel, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get("time"), row.get("vehicles")))
        .collect();
    assert_eq!(series, [(1_740_816_000.0, 52)]);

    let psql_dt = r#"SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"#;
    let listed: Vec<Vec<Option<String>>> = simple_rows(&client, psql_dt).await;
    let names: Vec<(String, String, String)> = listed
        .into_iter()
        .map(|row| {
            (
                row[0].clone().unwrap(),
                row[1].clone().unwrap(),
                row[2].clone().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        "alerts",
        "deadletter",
        "devices",
        "energy",
        "metrics",
        "traffic",
        "transport",
    ]
    .into_iter()
    .map(|t| ("public".into(), t.into(), "table".into()))
    .collect();
    assert_eq!(names, expected);
}

async fn postgres_refusals(pg: SocketAddr) {
    let client = connect(pg).await.unwrap();
    for (statement, command) in [
        ("CREATE TABLE parking (spaces INT)", "CREATE TABLE"),
        ("INSERT INTO traffic SELECT * FROM traffic", "INSERT"),
        ("DROP TABLE traffic", "DROP TABLE"),
    ] {
        for simple in [true, false] {
            let err = if simple {
                client.simple_query(statement).await.unwrap_err()
            } else {
                client.query(statement, &[]).await.unwrap_err()
            };
            let db = err
                .as_db_error()
                .unwrap_or_else(|| panic!("{statement}: {err:?}"));
            assert_eq!(
                db.code(),
                &SqlState::READ_ONLY_SQL_TRANSACTION,
                "{statement}"
            );
            assert_eq!(
                db.message(),
                format!(
                    "{command} is refused: Polis SQL is read-only: use SELECT, WITH, SHOW or EXPLAIN"
                )
            );
        }
    }
    let err = client
        .simple_query("SELECT nope FROM traffic")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("nope"),
        "{err}"
    );
    assert_eq!(
        simple_rows(&client, "SELECT count(*) FROM traffic").await,
        [[Some("4".to_string())]],
        "the connection is still usable after errors"
    );
}

/// A query past the time limit is cancelled while a query on another connection completes; one
/// past the memory limit fails while a small one succeeds.
async fn postgres_limits(pg: SocketAddr) {
    let slow_client = connect(pg).await.unwrap();
    let slow = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let result = slow_client.query(SLOW, &[]).await;
        (result, started.elapsed(), slow_client)
    });
    let other = connect(pg).await.unwrap();
    let rows = other
        .query("SELECT sum(vehicles) AS v FROM traffic", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>("v"), 52);
    assert!(
        !slow.is_finished(),
        "the other query finished while the slow one still ran"
    );
    let (result, took, slow_client) = slow.await.unwrap();
    let err = result.unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code(), &SqlState::QUERY_CANCELED);
    assert!(
        db.message().contains("analytics.query_timeout"),
        "{}",
        db.message()
    );
    assert!(
        took < QUERY_TIMEOUT + Duration::from_secs(5),
        "cancelled after {took:?}"
    );
    assert_eq!(
        simple_rows(&slow_client, "SELECT 1").await,
        [[Some("1".to_string())]]
    );

    let err = other.query(BIG, &[]).await.unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code(), &SqlState::OUT_OF_MEMORY);
    assert!(
        db.message().contains("analytics.query_memory"),
        "{}",
        db.message()
    );
    let small = other
        .query(
            "SELECT value % 10 AS k, count(*) AS n FROM generate_series(1, 1000) GROUP BY value % 10 ORDER BY k LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(small[0].get::<_, i64>("n"), 100);
}

/// The real psql: a query's table as psql prints it, `\d traffic` and `\dt`.
async fn psql(pg: SocketAddr) {
    let run = |command: &'static str| {
        let port = pg.port().to_string();
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new("psql")
                .args([
                    "-X",
                    "-w",
                    "-P",
                    "pager=off",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                ])
                .args(["-U", "polis", "polis", "-c", command])
                .output()
                .expect("psql is installed (postgresql-client, see scripts/test.sh)");
            let stderr = String::from_utf8(output.stderr).unwrap();
            assert!(output.status.success(), "psql -c {command:?}: {stderr}");
            String::from_utf8(output.stdout).unwrap()
        })
    };
    assert_eq!(
        run("SELECT device_id, district, vehicles FROM traffic ORDER BY device_id")
            .await
            .unwrap(),
        " device_id |  district  | vehicles \n\
         -----------+------------+----------\n \
         tc-1      | harbour    |       12\n \
         tc-2      | harbour    |        7\n \
         tc-3      | old-town   |       30\n \
         tc-4      | university |        3\n\
         (4 rows)\n\n"
    );
    let described = run("\\d traffic").await.unwrap();
    for column in ["device_id", "observed_at", "vehicles", "congested"] {
        assert!(described.contains(&format!(" {column} ")), "{described}");
    }
    let tables = run("\\dt").await.unwrap();
    for table in [
        "alerts",
        "deadletter",
        "devices",
        "energy",
        "metrics",
        "traffic",
        "transport",
    ] {
        assert!(
            tables.contains(&format!(" public | {table:<10} | table |")),
            "{tables}"
        );
    }
}
