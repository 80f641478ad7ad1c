//! Misbehaving Kafka connections over real TCP: an oversized, negative, malformed or unknown
//! request closes that connection without an answer, and a half-sent one just waits, while a
//! real client (librdkafka) on the same broker goes on producing undisturbed.

mod common;

use std::time::Duration;

use common::{LIMIT, start};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn send(producer: &FutureProducer, value: &str) -> i64 {
    producer
        .send(
            FutureRecord::<(), _>::to("events").payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap()
        .offset
}

/// Sends `bytes` on a new connection and returns what the broker answered before closing it.
async fn answer_before_close(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut answer))
        .await
        .expect("the broker closes the connection")
        .unwrap();
    answer
}

#[tokio::test]
async fn bad_requests_close_only_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr.to_string())
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    assert_eq!(send(&producer, "before").await, 0);

    // A request announced but never finished holds only its own connection.
    let mut half_sent = TcpStream::connect(broker.addr).await.unwrap();
    half_sent
        .write_all(&[0, 0, 0, 100, 0, 18, 0, 3])
        .await
        .unwrap();

    let unknown_api = [0, 0, 0, 10, 0x03, 0xE7, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF];
    let cases: [(&str, &[u8]); 4] = [
        (
            "larger than broker.max_frame_size",
            &[0x7F, 0xFF, 0xFF, 0xFF],
        ),
        ("negative length", &[0xFF, 0xFF, 0xFF, 0xFF]),
        ("shorter than a request header", &[0, 0, 0, 2, 0, 3]),
        ("unknown API key 999", &unknown_api),
    ];
    for (case, bytes) in cases {
        assert_eq!(
            answer_before_close(broker.addr, bytes).await,
            Vec::<u8>::new(),
            "a request {case} is not answered"
        );
    }

    assert_eq!(send(&producer, "after").await, 1);
    let stored = broker.log.read("events", 0, 0, usize::MAX).unwrap().0;
    let values: Vec<&[u8]> = stored.iter().map(|r| &r.record.value[..]).collect();
    assert_eq!(values, [&b"before"[..], &b"after"[..]]);
    drop(half_sent);
    drop(producer);
    broker.stop().await;
}
