//! The Kafka tools README.md shows, run as a user would against the broker: kcat (Debian's
//! package) lists, produces with zstd and consumes; kafka-python (idempotent producer, consumer
//! group) and confluent-kafka (consumer group) from PyPI read the same records back.
//! `scripts/test.sh` installs all three.

mod common;

use std::process::{Command, Output, Stdio};

use common::{LIMIT, start};

/// Runs `program` with `args` and `stdin`, off the async runtime, and returns what it printed;
/// fails the test unless it succeeds within [`LIMIT`].
async fn run(program: &str, args: Vec<String>, stdin: &'static str) -> String {
    let name = program.to_string();
    let output = tokio::task::spawn_blocking(move || -> std::io::Result<Output> {
        let mut child = Command::new(&name)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(&mut child.stdin.take().expect("piped"), stdin.as_bytes())?;
        child.wait_with_output()
    });
    let output = tokio::time::timeout(LIMIT, output)
        .await
        .unwrap_or_else(|_| panic!("{program} finishes within {LIMIT:?}"))
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/test.sh installs it): {e}"));
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn kcat(addr: &str, args: &[&str]) -> Vec<String> {
    ["-b", addr]
        .iter()
        .chain(args)
        .map(|a| a.to_string())
        .collect()
}

fn python(script: String) -> Vec<String> {
    vec!["-c".to_string(), script]
}

#[tokio::test]
async fn kcat_kafka_python_and_confluent_kafka_work_as_the_readme_shows() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let addr = broker.addr.to_string();

    run(
        "kcat",
        kcat(&addr, &["-P", "-t", "city.notes", "-K:", "-z", "zstd"]),
        "k1:hello\nk2:world\n",
    )
    .await;
    let consumed = run(
        "kcat",
        kcat(
            &addr,
            &[
                "-C",
                "-t",
                "city.notes",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k %s\n",
            ],
        ),
        "",
    )
    .await;
    assert_eq!(consumed, "k1 hello\nk2 world\n");
    let listing = run("kcat", kcat(&addr, &["-L"]), "").await;
    assert!(
        listing.contains("topic \"city.notes\" with 1 partitions"),
        "{listing}"
    );

    let kafka_python = format!(
        r#"
import time
from kafka import KafkaProducer, KafkaConsumer
KafkaProducer(bootstrap_servers="{addr}").send("city.notes", b"hi").get(10)
c = KafkaConsumer("city.notes", bootstrap_servers="{addr}", group_id="ops", auto_offset_reset="earliest")
got, deadline = [], time.time() + 50
while len(got) < 3 and time.time() < deadline:
    for records in c.poll(timeout_ms=1000).values():
        got.extend(m.value.decode() for m in records)
print(" ".join(got))
"#
    );
    let read = run("python3", python(kafka_python), "").await;
    assert_eq!(read.trim(), "hello world hi");

    let confluent = format!(
        r#"
import time
from confluent_kafka import Consumer
c = Consumer({{"bootstrap.servers": "{addr}", "group.id": "ops-2", "auto.offset.reset": "earliest"}})
c.subscribe(["city.notes"])
got, deadline = [], time.time() + 50
while len(got) < 3 and time.time() < deadline:
    m = c.poll(1)
    if m is not None and m.error() is None:
        got.append(m.value().decode())
c.close()
print(" ".join(got))
"#
    );
    let read = run("python3", python(confluent), "").await;
    assert_eq!(read.trim(), "hello world hi");

    // Stored once each, kafka-python's idempotent producer included.
    let stored = broker.log.read("city.notes", 0, 0, usize::MAX).unwrap().0;
    assert_eq!(stored.len(), 3);
    broker.stop().await;
}
