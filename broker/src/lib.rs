//! The Polis broker: a durable, partitioned, append-only log in the Kafka model.
//!
//! Data enters through [`LogClient::produce`] (records are placed by Kafka's murmur2 hash of their
//! key, written as Kafka RecordBatch v2 bytes to segment files and fsynced before the call returns)
//! and leaves through [`LogClient::fetch`] (reads from any offset, long-polling for new appends).
//! [`TopicReader`] follows a set of topics from the start, the way every tier consumes.
//! [`EmbeddedLog`] is that seam in-process; [`KafkaLog`] is the same seam over an external Kafka
//! cluster (`[broker.external]`), so every tier runs unchanged against either.
//!
//! On disk, under `{data_dir}/log/`: `topics.json` (topic names and partition counts) and one
//! folder `{topic}-{partition}` per partition holding segments named by their 20-digit base offset:
//! `00000000000000000000.log` (the batches) beside its sparse `.index` and `.timeindex`. After an
//! unclean stop, opening the log validates every batch of each active segment (length, magic,
//! CRC-32C, offsets) and truncates it at the first torn or corrupt one, so a crash mid-write loses
//! only the unacknowledged tail; missing or damaged indexes are rebuilt from the batches.

pub mod batch;
mod client;
mod config;
mod durable_file;
mod error;
mod index;
pub mod kafka;
mod kafka_client;
mod log;
mod offsets;
mod partition;
pub mod partitioner;
mod producers;
mod reader;
mod record;
mod segment;

pub use client::{EmbeddedLog, FetchRequest, FetchedPartition, LogClient};
pub use config::{BrokerConfig, FlushPolicy, TopicSpec};
pub use error::LogError;
pub use kafka_client::{KafkaClientConfig, KafkaLog};
pub use log::{Log, PartitionRead};
pub use reader::{ConsumedRecord, TopicReader};
pub use record::{Header, Record, StoredRecord};
