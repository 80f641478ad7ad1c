//! Broker configuration: the `[broker]` section of the Polis config file.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// How the log stores partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// A segment file is closed and a new one started once it grows past this size.
    pub segment_size: ByteSize,
    /// `true`: every produce is fsynced before it is acknowledged (a crash loses nothing that was
    /// acknowledged). `false`: the OS flushes when it likes (a crash of the machine, not of the
    /// process, can lose the last seconds of acknowledged records).
    pub fsync: bool,
    /// Partitions of each `telemetry.*` topic.
    pub telemetry_partitions: i32,
    /// Partitions of the `metrics`, `alerts` and `devices` topics.
    pub derived_partitions: i32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            segment_size: ByteSize::mib(64),
            fsync: true,
            telemetry_partitions: 12,
            derived_partitions: 3,
        }
    }
}

impl BrokerConfig {
    /// Every problem with the configuration, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.segment_size.as_u64() < 4096 {
            problems.push(format!(
                "broker.segment_size = {} is too small: use at least 4 KiB",
                self.segment_size
            ));
        }
        for (key, value) in [
            ("telemetry_partitions", self.telemetry_partitions),
            ("derived_partitions", self.derived_partitions),
        ] {
            if !(1..=1024).contains(&value) {
                problems.push(format!(
                    "broker.{key} = {value} is out of range: use 1 to 1024"
                ));
            }
        }
        problems
    }
}

/// A topic to create at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}
