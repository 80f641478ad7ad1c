//! Broker configuration: the `[broker]` section of the Polis config file.

use std::net::SocketAddr;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::kafka_client::KafkaClientConfig;

/// How the log stores partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// A segment file is closed and a new one started once it grows past this size…
    pub segment_size: ByteSize,
    /// …or once it has been open this long.
    #[serde(with = "humantime_serde")]
    pub segment_age: std::time::Duration,
    /// Closed segments whose newest record is older than this are deleted; none when unset.
    #[serde(with = "humantime_serde")]
    pub retention: Option<std::time::Duration>,
    /// The oldest closed segments are deleted while a partition is larger than this; no size limit
    /// when unset.
    pub retention_bytes: Option<ByteSize>,
    /// When appended records reach the disk; see [`FlushPolicy`].
    pub flush: FlushPolicy,
    /// Partitions of each `telemetry.*` topic.
    pub telemetry_partitions: i32,
    /// Partitions of the `metrics`, `alerts` and `devices` topics.
    pub derived_partitions: i32,
    /// Most partitions one topic may have.
    pub max_partitions: i32,
    /// Address of the Kafka wire-protocol listener.
    pub kafka_listen: SocketAddr,
    /// `host:port` Kafka clients are told to connect to; defaults to `kafka_listen`. Set it when
    /// listening on 0.0.0.0 or behind a proxy.
    pub advertised_listener: Option<String>,
    /// Largest Kafka request accepted; a larger one closes its connection.
    pub max_frame_size: ByteSize,
    /// Most simultaneous Kafka client connections.
    pub max_connections: usize,
    /// Create a topic the first time a Kafka client asks for it, as Kafka does by default.
    pub auto_create_topics: bool,
    /// Partitions of a topic created automatically or with the default count.
    pub default_partitions: i32,
    /// Shortest session timeout a consumer-group member may ask for (Kafka's
    /// `group.min.session.timeout.ms`); a shorter one is refused with INVALID_SESSION_TIMEOUT.
    #[serde(with = "humantime_serde")]
    pub group_min_session_timeout: std::time::Duration,
    /// Longest session timeout a member may ask for (`group.max.session.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub group_max_session_timeout: std::time::Duration,
    /// How long the first rebalance of an empty group waits for more members to join, each new
    /// member extending the wait up to the rebalance timeout (`group.initial.rebalance.delay.ms`).
    /// Zero completes it as soon as every known member has joined.
    #[serde(with = "humantime_serde")]
    pub group_initial_rebalance_delay: std::time::Duration,
    /// Most consumer groups with members, and separately most groups with committed offsets. A
    /// JoinGroup or OffsetCommit that would start one more is refused with POLICY_VIOLATION.
    pub max_groups: usize,
    /// Most members of one group, counting members that were given an id but have not joined yet;
    /// the next JoinGroup gets GROUP_MAX_SIZE_REACHED (Kafka's `group.max.size`).
    pub max_group_members: usize,
    /// Largest metadata string committed with an offset (`offset.metadata.max.bytes`); a larger
    /// one is refused with OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_max_bytes: ByteSize,
    /// Idempotent producers whose last batches are remembered per partition. Beyond it the least
    /// recently active producer is forgotten, and its next batch is accepted at any sequence number,
    /// as Kafka does once a producer's state has expired.
    pub max_producers_per_partition: usize,
    /// After a restart, how many of a partition's latest records are scanned (on the first
    /// idempotent produce to it) to recover producers' sequence numbers, so a retry of a batch
    /// written just before the restart is still recognised as a duplicate.
    pub producer_state_recovery_records: i64,
    /// An external Kafka cluster (Apache Kafka, Redpanda, or another Polis broker) that every
    /// tier uses instead of this embedded broker, e.g.
    /// `[broker.external]` `bootstrap_servers = "kafka-1:9092,kafka-2:9092"`. When set, the
    /// embedded log is not opened and `kafka_listen` is not served; the missing topics are
    /// created on the cluster with `telemetry_partitions` and `derived_partitions`, and the
    /// other settings of this section do not apply. Unset by default.
    pub external: Option<KafkaClientConfig>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            segment_size: ByteSize::mib(64),
            segment_age: std::time::Duration::from_secs(3600),
            retention: Some(std::time::Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            flush: FlushPolicy::Always,
            telemetry_partitions: 12,
            derived_partitions: 3,
            max_partitions: 1024,
            kafka_listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_listener: None,
            max_frame_size: ByteSize::mib(64),
            max_connections: 1_000,
            auto_create_topics: true,
            default_partitions: 1,
            group_min_session_timeout: std::time::Duration::from_secs(6),
            group_max_session_timeout: std::time::Duration::from_secs(30 * 60),
            group_initial_rebalance_delay: std::time::Duration::from_secs(3),
            max_groups: 10_000,
            max_group_members: 1_000,
            offset_metadata_max_bytes: ByteSize::kib(4),
            max_producers_per_partition: 1_000,
            producer_state_recovery_records: 100_000,
            external: None,
        }
    }
}

impl BrokerConfig {
    /// Every problem with the configuration, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // Index entries hold 32-bit positions: a segment plus one batch must stay below 4 GiB.
        if !(ByteSize::kib(4)..=ByteSize::gib(1)).contains(&self.segment_size) {
            problems.push(format!(
                "broker.segment_size = {} is out of range: use 4 KiB to 1 GiB",
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
        if let FlushPolicy::Every(interval) = self.flush
            && (interval.is_zero() || interval > std::time::Duration::from_secs(3600))
        {
            problems.push(format!("broker.flush = {{ every = {interval:?} }}: use an interval between 1ms and 1h, or \"always\""));
        }
        if !(ByteSize::kib(64)..=ByteSize::gib(1)).contains(&self.max_frame_size) {
            problems.push(format!(
                "broker.max_frame_size = {} is out of range: Kafka clients need at least 64 KiB, and a request above 1 GiB is refused",
                self.max_frame_size
            ));
        }
        if self.max_connections == 0 {
            problems.push(
                "broker.max_connections = 0 would refuse every Kafka client: use at least 1"
                    .to_string(),
            );
        }
        match &self.advertised_listener {
            Some(advertised) if parse_host_port(advertised).is_none() => problems.push(format!(
                "broker.advertised_listener = {advertised:?} is not host:port, e.g. \"kafka.example.org:9092\""
            )),
            None if self.kafka_listen.ip().is_unspecified() => problems.push(format!(
                "broker.kafka_listen = {} listens on every interface: set broker.advertised_listener to the host:port clients should use",
                self.kafka_listen
            )),
            _ => {}
        }
        problems.extend(self.group_problems());
        problems.extend(self.external.iter().flat_map(KafkaClientConfig::problems));
        problems
    }

    /// Problems with the consumer-group and idempotent-producer settings.
    fn group_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let (min, max) = (
            self.group_min_session_timeout,
            self.group_max_session_timeout,
        );
        if min.is_zero() || min > max {
            problems.push(format!(
                "broker.group_min_session_timeout = {min:?} and broker.group_max_session_timeout = {max:?}: the minimum must be above zero and at most the maximum"
            ));
        }
        if self.group_initial_rebalance_delay > std::time::Duration::from_secs(300) {
            problems.push(format!(
                "broker.group_initial_rebalance_delay = {:?} would hold every new group's first rebalance: use at most 5m",
                self.group_initial_rebalance_delay
            ));
        }
        for (key, value) in [
            ("max_groups", self.max_groups),
            ("max_group_members", self.max_group_members),
            (
                "max_producers_per_partition",
                self.max_producers_per_partition,
            ),
        ] {
            if value == 0 {
                problems.push(format!(
                    "broker.{key} = 0 would refuse every client: use at least 1"
                ));
            }
        }
        if self.offset_metadata_max_bytes > ByteSize::mib(1) {
            problems.push(format!(
                "broker.offset_metadata_max_bytes = {} is larger than offset metadata needs: use at most 1 MiB",
                self.offset_metadata_max_bytes
            ));
        }
        if self.producer_state_recovery_records < 0 {
            problems.push(format!(
                "broker.producer_state_recovery_records = {} is negative: use 0 (no recovery) or more",
                self.producer_state_recovery_records
            ));
        }
        problems
    }

    /// The host and port Kafka clients are told to connect to.
    pub fn advertised(&self, bound: SocketAddr) -> (String, u16) {
        self.advertised_listener
            .as_deref()
            .and_then(parse_host_port)
            .unwrap_or_else(|| (bound.ip().to_string(), bound.port()))
    }
}

pub(crate) fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| {
        (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        )
    })
}

/// When appended records are fsynced.
///
/// Either way a crash of the Polis *process* loses nothing acknowledged: every write is in the
/// operating system's page cache before it is acknowledged. The policies differ on a crash of the
/// *machine* (power loss, kernel panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushPolicy {
    /// `flush = "always"`: every append is fsynced before it is acknowledged; concurrent appends
    /// share one fsync per partition (group commit). A machine crash loses nothing acknowledged.
    Always,
    /// `flush = { every = "1s" }`: appends are acknowledged once written and fsynced in the
    /// background at this interval. A machine crash can lose up to one interval of acknowledged
    /// records; throughput no longer waits for the disk.
    Every(#[serde(with = "humantime_serde")] std::time::Duration),
}

/// A topic: its name, partition count and the stable id Kafka clients see (Metadata v10+).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub id: uuid::Uuid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_producer_settings_are_checked_by_key() {
        assert_eq!(BrokerConfig::default().problems(), Vec::<String>::new());
        let bad = BrokerConfig {
            group_min_session_timeout: std::time::Duration::from_secs(60),
            group_max_session_timeout: std::time::Duration::from_secs(10),
            group_initial_rebalance_delay: std::time::Duration::from_secs(600),
            max_groups: 0,
            max_group_members: 0,
            max_producers_per_partition: 0,
            offset_metadata_max_bytes: ByteSize::mib(2),
            producer_state_recovery_records: -1,
            ..BrokerConfig::default()
        };
        let problems = bad.problems();
        for key in [
            "group_min_session_timeout",
            "group_initial_rebalance_delay",
            "max_groups",
            "max_group_members",
            "max_producers_per_partition",
            "offset_metadata_max_bytes",
            "producer_state_recovery_records",
        ] {
            let named = format!("broker.{key} ");
            assert!(
                problems.iter().any(|p| p.contains(&named)),
                "{key} not named in {problems:?}"
            );
        }
    }
}
