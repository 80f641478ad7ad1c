//! The Polis broker: a durable, partitioned, append-only log in the Kafka model.
//!
//! Data enters through [`LogClient::produce`] (records are placed by Kafka's murmur2 hash of their
//! key, written as Kafka RecordBatch v2 bytes to segment files and fsynced before the call returns)
//! and leaves through [`LogClient::fetch`] (reads from any offset, long-polling for new appends).
//! [`TopicReader`] follows a set of topics from the start, the way every tier consumes.
//!
//! On disk, under `{data_dir}/log/`: `topics.json` (topic names and partition counts) and one
//! folder `{topic}-{partition}` per partition holding segments named by their 20-digit base offset
//! (`00000000000000000000.log`). Opening a log validates every batch (length, magic, CRC-32C) and
//! truncates a segment at the first torn or corrupt one, so a crash mid-write loses only the
//! unacknowledged tail.

pub mod batch;
mod client;
mod config;
mod durable_file;
mod error;
pub mod kafka;
mod log;
mod offsets;
mod partition;
pub mod partitioner;
mod producers;
mod reader;
mod record;

pub use client::{EmbeddedLog, FetchRequest, FetchedPartition, LogClient};
pub use config::{BrokerConfig, FlushPolicy, TopicSpec};
pub use error::LogError;
pub use log::{Log, PartitionRead};
pub use reader::{ConsumedRecord, TopicReader};
pub use record::{Header, Record, StoredRecord};
