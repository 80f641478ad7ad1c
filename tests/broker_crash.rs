//! Kafka's "hard bounce", on Polis: a producer with acks=all streams records into a `polis up`
//! process, the process is killed with SIGKILL mid-stream and restarted on the same data dir, and
//! every acknowledged record is read back at the offset it was acknowledged with.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, free_port};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "crash.test";

fn start_polis(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_polis"))
        .args(["up", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_for_kafka(port: u16) {
    eventually(
        "the Kafka listener",
        Duration::from_secs(60),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_record_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let kafka_port = free_port();
    let config = dir.path().join("polis.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[gateway]\nmqtt_listen = \"127.0.0.1:0\"\n[dashboard]\nlisten = \"127.0.0.1:0\"\n\
             [analytics]\npg_listen = \"127.0.0.1:0\"\n[broker]\nkafka_listen = \"127.0.0.1:{kafka_port}\"\n",
            dir.path().join("data"),
        ),
    )
    .unwrap();
    // Taken when the process is killed, a third of the way through the sends.
    let mut running = Some(start_polis(&config));
    wait_for_kafka(kafka_port).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{kafka_port}"))
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000")
        .create()
        .unwrap();
    let acked: Arc<Mutex<BTreeMap<i64, String>>> = Arc::default();
    let mut sends = Vec::new();
    for i in 0..20_000 {
        let (producer, record_ack) = (producer.clone(), acked.clone());
        sends.push(tokio::spawn(async move {
            let value = format!("record-{i}");
            let delivered = producer
                .send(
                    FutureRecord::to(TOPIC).key("one-key").payload(&value),
                    Duration::from_secs(5),
                )
                .await;
            if let Ok(delivery) = delivered {
                record_ack.lock().unwrap().insert(delivery.offset, value);
            }
        }));
        if i == 5_000 {
            eventually(
                "a first thousand acknowledgements",
                Duration::from_secs(60),
                || {
                    let acked = acked.clone();
                    async move { (acked.lock().unwrap().len() >= 1_000).then_some(()) }
                },
            )
            .await;
            let mut polis = running.take().expect("killed once");
            polis.kill().unwrap();
            polis.wait().unwrap();
        }
    }
    for send in sends {
        send.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1_000,
        "only {} records were acknowledged",
        acked.len()
    );

    let mut polis = start_polis(&config);
    wait_for_kafka(kafka_port).await;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{kafka_port}"))
        .set("group.id", "crash-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let last_acked = *acked.keys().next_back().unwrap();
    let mut stored = BTreeMap::new();
    let read = async {
        while stored.keys().next_back().is_none_or(|o| *o < last_acked) {
            let m = consumer.recv().await.unwrap();
            stored.insert(
                m.offset(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the log reaches the last acknowledged offset");
    for (offset, value) in &acked {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "acknowledged record at offset {offset} is missing or different"
        );
    }
    polis.kill().unwrap();
    polis.wait().unwrap();
}
