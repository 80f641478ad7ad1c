//! `TopicReader`: follows every partition of a set of topics, the way each tier consumes.

use std::sync::Arc;
use std::time::Duration;

use crate::client::{FetchRequest, LogClient};
use crate::error::LogError;
use crate::record::Record;

/// Bytes read per partition per fetch.
const MAX_BYTES_PER_PARTITION: usize = 1 << 20;

/// A record with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

/// Reads topics from given offsets onwards, remembering its position in each partition.
pub struct TopicReader {
    client: Arc<dyn LogClient>,
    positions: Vec<FetchRequest>,
}

impl TopicReader {
    /// A reader of every partition of `topics`, from the first record.
    pub fn from_beginning(client: Arc<dyn LogClient>, topics: &[&str]) -> Result<Self, LogError> {
        let mut positions = Vec::new();
        for topic in topics {
            for partition in 0..client.partition_count(topic)? {
                positions.push(FetchRequest {
                    topic: topic.to_string(),
                    partition,
                    offset: 0,
                });
            }
        }
        Ok(TopicReader { client, positions })
    }

    /// The next records, waiting up to `max_wait` when there are none yet; empty on time-out.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, LogError> {
        let fetched = self
            .client
            .fetch(self.positions.clone(), MAX_BYTES_PER_PARTITION, max_wait)
            .await?;
        let mut out = Vec::new();
        for (position, part) in self.positions.iter_mut().zip(fetched) {
            for stored in part.records {
                position.offset = stored.offset + 1;
                out.push(ConsumedRecord {
                    topic: part.topic.clone(),
                    partition: part.partition,
                    offset: stored.offset,
                    record: stored.record,
                });
            }
        }
        Ok(out)
    }

    /// True when every partition has been read up to the given high watermarks' current values.
    pub fn positions(&self) -> &[FetchRequest] {
        &self.positions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::EmbeddedLog;
    use crate::config::BrokerConfig;
    use crate::log::Log;

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), BrokerConfig::default()).unwrap();
        log.create_topic("t", 3).unwrap();
        let client: Arc<dyn LogClient> = Arc::new(EmbeddedLog(log.clone()));
        let mut reader = TopicReader::from_beginning(client.clone(), &["t"]).unwrap();
        assert!(
            reader
                .poll(Duration::from_millis(10))
                .await
                .unwrap()
                .is_empty()
        );
        let waiting =
            tokio::spawn(async move { reader.poll(Duration::from_secs(30)).await.unwrap() });
        client
            .produce("t", vec![Record::new(Some("k"), "hello", 1)])
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by the append")
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].record.value[..], b"hello");
    }
}
