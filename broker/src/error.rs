//! Errors of the log, classified so callers can act on them.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic `{0}` does not exist; the topics are created at start-up (see [broker.topics])")]
    UnknownTopic(String),
    #[error("topic `{topic}` has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        topic: String,
        partition: i32,
        partitions: i32,
    },
    #[error(
        "topic `{topic}` already exists with {existing} partitions; it cannot be re-created with {requested}"
    )]
    PartitionCountMismatch {
        topic: String,
        existing: i32,
        requested: i32,
    },
    #[error("topic `{topic}` already exists with {existing} partitions")]
    TopicExists { topic: String, existing: i32 },
    #[error(
        "a topic needs 1 to {max} partitions (broker.max_partitions); {requested} were asked for"
    )]
    InvalidPartitionCount { requested: i32, max: i32 },
    #[error("invalid topic name `{0}`: use 1-249 characters of A-Z, a-z, 0-9, '.', '_' or '-'")]
    InvalidTopicName(String),
    #[error(
        "offset {offset} is out of range for {topic}-{partition}: valid offsets are {start}..={end}"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        start: i64,
        end: i64,
    },
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("the log is shutting down")]
    Closed,
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid metadata file {path}: {source}")]
    Metadata {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "cannot reach Kafka at {servers} within {timeout:?} ({source}): check broker.external.bootstrap_servers and that the cluster is up"
    )]
    KafkaUnreachable {
        servers: String,
        timeout: Duration,
        source: Box<KafkaError>,
    },
    #[error("Kafka at {servers} failed to {action}: {source}")]
    Kafka {
        servers: String,
        action: String,
        source: Box<KafkaError>,
    },
    #[error("invalid Kafka client settings in broker.external: {0}")]
    KafkaConfig(#[source] Box<KafkaError>),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}
