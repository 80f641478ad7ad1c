//! Idempotent producers with real clients: librdkafka with `enable.idempotence=true` gets a
//! producer id and stores every record once; a batch sent again with the same producer id, epoch
//! and sequence (a retry, replayed byte for byte over TCP) is answered with its original offset and
//! not stored twice, and a batch that skips sequence numbers is refused.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{LIMIT, start};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PRODUCE_VERSION: i16 = 9;

/// Sends one batch to partition 0 of `topic` as a Produce request and returns the answer.
async fn resend(addr: SocketAddr, topic: &str, batch: Vec<u8>) -> PartitionProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("replay")))
        .encode(&mut frame, ProduceRequest::header_version(PRODUCE_VERSION))
        .unwrap();
    request.encode(&mut frame, PRODUCE_VERSION).unwrap();
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());

    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(&frame).await.unwrap();
        let length = stream.read_i32().await.unwrap();
        let mut body = vec![0; length as usize];
        stream.read_exact(&mut body).await.unwrap();
        Bytes::from(body)
    };
    let mut body = tokio::time::timeout(LIMIT, exchange)
        .await
        .expect("the broker answers");
    let header =
        ResponseHeader::decode(&mut body, ProduceResponse::header_version(PRODUCE_VERSION))
            .unwrap();
    assert_eq!(header.correlation_id, 7);
    let mut response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).unwrap();
    response.responses.remove(0).partition_responses.remove(0)
}

/// `batch` with another base sequence (the CRC is recomputed).
fn with_sequence(batch: &[u8], sequence: i32) -> Vec<u8> {
    let mut batch = batch.to_vec();
    batch[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn field<const N: usize>(batch: &[u8], at: usize) -> [u8; N] {
    batch[at..at + N].try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_stores_each_record_once_even_when_a_batch_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("idem", 1).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr.to_string())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let sends = (0..50).map(|i| {
        let producer = &producer;
        async move {
            let value = format!("reading-{i}");
            let record = FutureRecord::to("idem").key("meter-1").payload(&value);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap()
                .offset
        }
    });
    let mut offsets = futures::future::join_all(sends).await;
    offsets.sort_unstable();
    assert_eq!(offsets, (0..50).collect::<Vec<i64>>());
    producer.flush(Duration::from_secs(30)).unwrap();

    let stored = broker.log.read_batches("idem", 0, 0, usize::MAX).unwrap();
    assert_eq!(stored.high_watermark, 50);
    for batch in &stored.batches {
        assert!(
            i64::from_be_bytes(field(batch, 43)) >= 0,
            "batches carry the producer id from InitProducerId"
        );
    }
    let last = stored.batches.last().unwrap().to_vec();
    let base_offset = i64::from_be_bytes(field(&last, 0));
    let first_sequence = i32::from_be_bytes(field(&last, 53));
    let last_sequence = first_sequence + i32::from_be_bytes(field(&last, 23));

    let retry = resend(broker.addr, "idem", last.clone()).await;
    assert_eq!(
        (retry.error_code, retry.base_offset),
        (0, base_offset),
        "a retry gets its original offset"
    );
    assert_eq!(
        broker.log.high_watermark("idem", 0).unwrap(),
        50,
        "and is not stored twice"
    );

    let gap = resend(broker.addr, "idem", with_sequence(&last, last_sequence + 2)).await;
    assert_eq!(gap.error_code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert_eq!(broker.log.high_watermark("idem", 0).unwrap(), 50);

    let next = resend(broker.addr, "idem", with_sequence(&last, last_sequence + 1)).await;
    assert_eq!(
        (next.error_code, next.base_offset),
        (0, 50),
        "the next sequence is appended"
    );
    broker.stop().await;
}
