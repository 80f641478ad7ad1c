//! Consumer groups with real clients: librdkafka consumers (through rdkafka) subscribed to one
//! topic split its partitions, the survivor takes them all when the other leaves, and a group
//! resumes exactly from its committed offsets after the broker restarts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use common::{LIMIT, start};
use polis_broker::Record;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Publishes the partitions librdkafka assigned after each rebalance.
struct Assignment(watch::Sender<BTreeSet<i32>>);

impl ClientContext for Assignment {}

impl ConsumerContext for Assignment {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.0.send_replace(
                    partitions
                        .elements()
                        .iter()
                        .map(|p| p.partition())
                        .collect(),
                );
            }
            Rebalance::Revoke(_) => {
                self.0.send_replace(BTreeSet::new());
            }
            Rebalance::Error(_) => {}
        }
    }
}

/// A subscribed group member: its assignment as it changes, and the (partition, offset) of every
/// message it receives (a task keeps polling it, which also runs its rebalances).
struct Member {
    consumer: Arc<StreamConsumer<Assignment>>,
    assigned: watch::Receiver<BTreeSet<i32>>,
    received: mpsc::UnboundedReceiver<(i32, i64)>,
    reader: JoinHandle<()>,
}

fn join(addr: SocketAddr, group: &str, topic: &str) -> Member {
    let (assignment, assigned) = watch::channel(BTreeSet::new());
    let consumer: StreamConsumer<Assignment> = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create_with_context(Assignment(assignment))
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let consumer = Arc::new(consumer);
    let (sender, received) = mpsc::unbounded_channel();
    let reader = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            loop {
                if let Ok(message) = consumer.recv().await
                    && sender
                        .send((message.partition(), message.offset()))
                        .is_err()
                {
                    return;
                }
            }
        }
    });
    Member {
        consumer,
        assigned,
        received,
        reader,
    }
}

impl Member {
    /// Closes the consumer, which leaves the group (LeaveGroup) before it returns.
    async fn leave(self) {
        self.reader.abort();
        let _aborted = self.reader.await;
        let consumer = self.consumer;
        tokio::task::spawn_blocking(move || drop(consumer))
            .await
            .unwrap();
    }

    /// The first offset received from each of `partitions`.
    async fn first_offsets(&mut self, partitions: usize) -> BTreeMap<i32, i64> {
        let mut first = BTreeMap::new();
        let read = async {
            while first.len() < partitions {
                let (partition, offset) = self.received.recv().await.expect("the reader runs");
                first.entry(partition).or_insert(offset);
            }
        };
        tokio::time::timeout(LIMIT, read)
            .await
            .expect("a message from every partition");
        first
    }
}

/// Waits until the members' assignments satisfy `done`.
async fn assignments_until(members: &mut [&mut Member], done: impl Fn(&[BTreeSet<i32>]) -> bool) {
    let wait = async {
        loop {
            let current: Vec<BTreeSet<i32>> = members
                .iter()
                .map(|m| m.assigned.borrow().clone())
                .collect();
            if done(&current) {
                return;
            }
            let changes = members.iter_mut().map(|m| Box::pin(m.assigned.changed()));
            let (changed, _, _) = futures::future::select_all(changes).await;
            changed.expect("the consumer is alive");
        }
    };
    tokio::time::timeout(LIMIT, wait)
        .await
        .expect("the group reaches the expected assignment");
}

/// Appends records with 40 different keys, so every partition of a small topic gets some.
fn fill(log: &polis_broker::Log, topic: &str) {
    let records = (0..40)
        .map(|i| {
            Record::new(
                Some(format!("device-{i}")),
                format!("reading-{i}"),
                1_000 + i,
            )
        })
        .collect();
    log.produce(topic, records).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_split_the_partitions_and_the_survivor_takes_all_when_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("shared", 4).unwrap();
    fill(&broker.log, "shared");
    let all: BTreeSet<i32> = (0..4).collect();

    let mut a = join(broker.addr, "splitters", "shared");
    let mut b = join(broker.addr, "splitters", "shared");
    assignments_until(&mut [&mut a, &mut b], |now| {
        now[0].len() == 2
            && now[1].len() == 2
            && now[0].union(&now[1]).copied().collect::<BTreeSet<i32>>() == all
    })
    .await;

    b.leave().await;
    assignments_until(&mut [&mut a], |now| now[0] == all).await;
    let first = a.first_offsets(4).await;
    assert_eq!(
        first.keys().copied().collect::<BTreeSet<i32>>(),
        all,
        "the survivor reads every partition"
    );
    a.leave().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_from_its_committed_offsets_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    broker.log.create_topic("resume", 2).unwrap();
    fill(&broker.log, "resume");
    for p in 0..2 {
        assert!(
            broker.log.high_watermark("resume", p).unwrap() > 6,
            "partition {p} has enough records for the test"
        );
    }

    let mut reader = join(broker.addr, "resumers", "resume");
    assignments_until(&mut [&mut reader], |now| now[0].len() == 2).await;
    assert_eq!(
        reader.first_offsets(2).await,
        BTreeMap::from([(0, 0), (1, 0)]),
        "a new group starts at the beginning"
    );
    let mut positions = TopicPartitionList::new();
    positions
        .add_partition_offset("resume", 0, Offset::Offset(3))
        .unwrap();
    positions
        .add_partition_offset("resume", 1, Offset::Offset(5))
        .unwrap();
    let consumer = reader.consumer.clone();
    tokio::task::spawn_blocking(move || consumer.commit(&positions, CommitMode::Sync))
        .await
        .unwrap()
        .unwrap();
    reader.leave().await;
    broker.stop().await;

    let broker = start(dir.path()).await;
    let mut resumed = join(broker.addr, "resumers", "resume");
    assert_eq!(
        resumed.first_offsets(2).await,
        BTreeMap::from([(0, 3), (1, 5)]),
        "exactly where the group committed"
    );
    resumed.leave().await;
    broker.stop().await;
}
