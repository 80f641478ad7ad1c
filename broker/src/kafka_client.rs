//! `KafkaLog`: the [`LogClient`] of an external Kafka cluster (Apache Kafka, Redpanda, or another
//! Polis broker over TCP), through librdkafka.
//!
//! Records leave through one idempotent producer with `acks=all` and Java's murmur2 partitioner,
//! so a key lands in the partition the embedded log and Java clients pick. They come back through
//! consumers that join no group ([`fetch`]). Partition counts come from the cluster's metadata and
//! are cached. `[broker.external]` in the Polis configuration is a [`KafkaClientConfig`].

mod fetch;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};

use crate::client::{FetchRequest, FetchedPartition, LogClient};
use crate::config::parse_host_port;
use crate::error::LogError;
use crate::record::Record;

/// librdkafka properties Polis sets itself, because [`KafkaLog`] behaves as documented only with
/// its own values.
const RESERVED: [&str; 10] = [
    "bootstrap.servers",
    "client.id",
    "acks",
    "enable.idempotence",
    "partitioner",
    "message.timeout.ms",
    "allow.auto.create.topics",
    "group.id",
    "enable.auto.commit",
    "auto.offset.reset",
];
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The Kafka cluster every tier uses instead of the embedded log: `[broker.external]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaClientConfig {
    /// Brokers to bootstrap from: `host:port`, comma-separated, e.g. `"kafka-1:9092,kafka-2:9092"`.
    pub bootstrap_servers: String,
    /// The client id the cluster sees in its logs, metrics and quotas.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Longest a produce (retries included), a metadata or offset lookup, or a topic creation may
    /// take before it fails; an unreachable cluster is reported after it.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Further librdkafka properties, such as `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanism"` or `"compression.type" = "zstd"` (librdkafka's CONFIGURATION.md lists
    /// them). The ones Polis sets itself (`acks`, `enable.idempotence`, `partitioner`, …) are refused.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

fn default_client_id() -> String {
    "polis".to_string()
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

impl KafkaClientConfig {
    /// The cluster at `bootstrap_servers`, with the default client id and request timeout.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaClientConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: default_client_id(),
            request_timeout: default_request_timeout(),
            extra: BTreeMap::new(),
        }
    }

    /// Every problem with the settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self
            .bootstrap_servers
            .split(',')
            .any(|server| parse_host_port(server.trim()).is_none())
        {
            problems.push(format!(
                "broker.external.bootstrap_servers = {:?} is not a list of host:port: use e.g. \"kafka-1:9092,kafka-2:9092\"",
                self.bootstrap_servers
            ));
        }
        if !(MIN_REQUEST_TIMEOUT..=MAX_REQUEST_TIMEOUT).contains(&self.request_timeout) {
            problems.push(format!(
                "broker.external.request_timeout = {:?} is out of range: use 1s to 10m",
                self.request_timeout
            ));
        }
        for key in self.extra.keys().filter(|k| RESERVED.contains(&k.as_str())) {
            problems.push(format!(
                "broker.external.extra sets {key:?}, which Polis sets itself: remove it"
            ));
        }
        problems
    }

    /// librdkafka settings: the cluster and client id, `defaults` that `extra` may override,
    /// `extra`, then `fixed`.
    fn client_config(&self, defaults: &[(&str, &str)], fixed: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        for (key, value) in fixed {
            config.set(*key, *value);
        }
        config
    }

    /// `source`, met trying to `action`, as a [`LogError`] naming the cluster.
    fn error(&self, action: impl Into<String>, source: KafkaError) -> LogError {
        let servers = self.bootstrap_servers.clone();
        if unreachable(&source) {
            LogError::KafkaUnreachable {
                servers,
                timeout: self.request_timeout,
                source: Box::new(source),
            }
        } else {
            LogError::Kafka {
                servers,
                action: action.into(),
                source: Box::new(source),
            }
        }
    }
}

/// A client librdkafka refused to create with the settings given.
fn invalid_settings(error: KafkaError) -> LogError {
    LogError::KafkaConfig(Box::new(error))
}

/// Whether `error` means the cluster did not answer; librdkafka keeps reconnecting meanwhile.
fn unreachable(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
        )
    )
}

/// A [`LogClient`] of an external Kafka cluster. Clones share the producer and the consumers.
#[derive(Clone)]
pub struct KafkaLog(Arc<Shared>);

struct Shared {
    config: KafkaClientConfig,
    producer: FutureProducer,
    /// Partition counts by topic, as the cluster's metadata reported them.
    partitions: Mutex<HashMap<String, i32>>,
    readers: fetch::Readers,
}

impl KafkaLog {
    /// A client of the cluster `config` names. It connects in the background: the first request
    /// reports an unreachable cluster, after `request_timeout`.
    pub fn new(config: KafkaClientConfig) -> Result<KafkaLog, LogError> {
        let message_timeout = config.request_timeout.as_millis().to_string();
        let producer = config
            .client_config(
                &[],
                &[
                    ("acks", "all"),
                    ("enable.idempotence", "true"),
                    // Java's partitioner, which the embedded log implements too.
                    ("partitioner", "murmur2_random"),
                    ("message.timeout.ms", &message_timeout),
                    // A produce to a missing topic fails, as on the embedded log.
                    ("allow.auto.create.topics", "false"),
                ],
            )
            .create()
            .map_err(invalid_settings)?;
        Ok(KafkaLog(Arc::new(Shared {
            config,
            producer,
            partitions: Mutex::default(),
            readers: fetch::Readers::default(),
        })))
    }

    /// The brokers this client bootstraps from, as configured.
    pub fn bootstrap_servers(&self) -> &str {
        &self.0.config.bootstrap_servers
    }

    /// Creates each `(name, partitions)` topic the cluster lacks, with the cluster's default
    /// replication factor, and checks that the others have as many partitions.
    pub async fn ensure_topics(&self, topics: &[(&str, i32)]) -> Result<(), LogError> {
        let config = &self.0.config;
        let admin: AdminClient<DefaultClientContext> = config
            .client_config(&[], &[])
            .create()
            .map_err(invalid_settings)?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|&(name, partitions)| NewTopic::new(name, partitions, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new().request_timeout(Some(config.request_timeout));
        let results = admin
            .create_topics(&new, &options)
            .await
            .map_err(|e| config.error("create topics", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(
                        config.error(format!("create topic `{topic}`"), KafkaError::AdminOp(code))
                    );
                }
            }
        }
        for &(topic, requested) in topics {
            let existing = self.0.clone().known_partitions(topic).await?;
            if existing != requested {
                return Err(LogError::PartitionCountMismatch {
                    topic: topic.to_string(),
                    existing,
                    requested,
                });
            }
        }
        Ok(())
    }

    /// Waits until every record handed to the producer is acknowledged, up to `request_timeout`.
    /// Blocks.
    pub fn flush(&self) -> Result<(), LogError> {
        let config = &self.0.config;
        self.0
            .producer
            .flush(config.request_timeout)
            .map_err(|e| config.error("deliver the last records", e))
    }
}

impl Shared {
    /// The partition count of `topic`, from the cache or else the cluster's metadata. Blocks on
    /// a cache miss.
    fn partition_count(&self, topic: &str) -> Result<i32, LogError> {
        if let Some(&count) = self.partitions.lock().expect("partitions lock").get(topic) {
            return Ok(count);
        }
        let action = || format!("read the metadata of topic `{topic}`");
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.config.request_timeout)
            .map_err(|e| self.config.error(action(), e))?;
        let described = metadata.topics().iter().find(|t| t.name() == topic);
        match described.map(|t| (t.error().map(RDKafkaErrorCode::from), t.partitions().len())) {
            None | Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), _)) => {
                Err(LogError::UnknownTopic(topic.to_string()))
            }
            Some((Some(code), _)) => {
                Err(self.config.error(action(), KafkaError::MetadataFetch(code)))
            }
            Some((None, count)) => {
                let count = count as i32;
                self.partitions
                    .lock()
                    .expect("partitions lock")
                    .insert(topic.to_string(), count);
                Ok(count)
            }
        }
    }

    /// [`Shared::partition_count`], looking the metadata up on a blocking thread.
    async fn known_partitions(self: Arc<Self>, topic: &str) -> Result<i32, LogError> {
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || self.partition_count(&topic))
            .await
            .map_err(|_| LogError::Closed)?
    }

    /// Fetches on a consumer positioned at `requests`, or a new one. Blocks.
    fn fetch(
        &self,
        requests: &[FetchRequest],
        max_bytes: usize,
        max_wait: Duration,
        abandoned: &AtomicBool,
    ) -> Result<Vec<FetchedPartition>, LogError> {
        let mut reader = match self.readers.checkout(requests) {
            Some(reader) => reader,
            None => fetch::Reader::open(&self.config)?,
        };
        let fetched = reader.fetch(self, requests, max_bytes, max_wait, abandoned)?;
        self.readers.give_back(reader);
        Ok(fetched)
    }
}

impl LogClient for KafkaLog {
    fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> BoxFuture<'static, Result<Vec<(i32, i64)>, LogError>> {
        let (shared, topic) = (self.0.clone(), topic.to_string());
        Box::pin(async move {
            shared.clone().known_partitions(&topic).await?;
            let config = &shared.config;
            let deliveries = records
                .iter()
                .map(|record| {
                    shared
                        .producer
                        .send_result(future_record(&topic, record))
                        .map_err(|(e, _)| config.error(format!("queue records for `{topic}`"), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut placed = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(delivered)) => placed.push((delivered.partition, delivered.offset)),
                    Ok(Err((e, _))) => {
                        return Err(config.error(format!("append records to `{topic}`"), e));
                    }
                    Err(_) => return Err(LogError::Closed),
                }
            }
            Ok(placed)
        })
    }

    /// Blocks while the metadata of a topic not seen before is looked up.
    fn partition_count(&self, topic: &str) -> Result<i32, LogError> {
        self.0.partition_count(topic)
    }

    fn fetch(
        &self,
        requests: Vec<FetchRequest>,
        max_bytes_per_partition: usize,
        max_wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<FetchedPartition>, LogError>> {
        let shared = self.0.clone();
        Box::pin(async move {
            if requests.is_empty() {
                tokio::time::sleep(max_wait).await;
                return Ok(Vec::new());
            }
            let abandoned = Arc::new(AtomicBool::new(false));
            let _abandon = fetch::Abandon(abandoned.clone());
            tokio::task::spawn_blocking(move || {
                shared.fetch(&requests, max_bytes_per_partition, max_wait, &abandoned)
            })
            .await
            .map_err(|_| LogError::Closed)?
        })
    }
}

fn future_record<'a>(topic: &'a str, record: &'a Record) -> FutureRecord<'a, [u8], [u8]> {
    let headers = record
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(KafkaHeader {
                key,
                value: Some(&value[..]),
            })
        });
    let out = FutureRecord::to(topic)
        .payload(&record.value[..])
        .timestamp(record.timestamp_ms)
        .headers(headers);
    match &record.key {
        Some(key) => out.key(&key[..]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_polis_relies_on_cannot_be_overridden() {
        assert_eq!(
            KafkaClientConfig::new("kafka-1:9092, kafka-2:9092").problems(),
            Vec::<String>::new()
        );
        let mut config = KafkaClientConfig::new("kafka-1");
        config.request_timeout = Duration::from_millis(10);
        config
            .extra
            .insert("partitioner".into(), "consistent".into());
        config
            .extra
            .insert("compression.type".into(), "zstd".into());
        let problems = config.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("broker.external.bootstrap_servers = \"kafka-1\""));
        assert!(problems[1].starts_with("broker.external.request_timeout = 10ms"));
        assert_eq!(
            problems[2],
            "broker.external.extra sets \"partitioner\", which Polis sets itself: remove it"
        );
    }
}
