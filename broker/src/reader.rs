//! `TopicReader`: follows every partition of a set of topics, the way each tier consumes.

use std::sync::Arc;
use std::time::Duration;

use crate::client::{FetchRequest, LogClient};
use crate::error::LogError;
use crate::record::Record;

/// Bytes read per partition per fetch.
const MAX_BYTES_PER_PARTITION: usize = 1 << 20;

/// A record with where it came from. The records of one fetch share their topic's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

/// Reads topics from given offsets onwards, remembering its position in each partition.
pub struct TopicReader {
    client: Arc<dyn LogClient>,
    positions: Vec<FetchRequest>,
    /// Each position's partition high watermark as of the last fetch; `None` before the first.
    high_watermarks: Option<Vec<i64>>,
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
        Ok(TopicReader {
            client,
            positions,
            high_watermarks: None,
        })
    }

    /// The next records, waiting up to `max_wait` when there are none yet; empty on time-out.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, LogError> {
        let fetched = self
            .client
            .fetch(self.positions.clone(), MAX_BYTES_PER_PARTITION, max_wait)
            .await?;
        let mut out = Vec::new();
        let highs = self
            .high_watermarks
            .get_or_insert_with(|| vec![0; self.positions.len()]);
        for ((position, high), part) in self.positions.iter_mut().zip(highs).zip(fetched) {
            *high = part.high_watermark;
            let topic: Arc<str> = part.topic.into();
            for stored in part.records {
                position.offset = stored.offset + 1;
                out.push(ConsumedRecord {
                    topic: topic.clone(),
                    partition: part.partition,
                    offset: stored.offset,
                    record: stored.record,
                });
            }
        }
        Ok(out)
    }

    /// The next offset to read of every partition.
    pub fn positions(&self) -> &[FetchRequest] {
        &self.positions
    }

    /// Whether each partition (in [`positions`](Self::positions) order) had been read to its end
    /// at the last fetch; all false before the first.
    pub fn caught_up(&self) -> impl Iterator<Item = bool> + '_ {
        let highs = self.high_watermarks.as_deref();
        self.positions
            .iter()
            .enumerate()
            .map(move |(i, p)| highs.is_some_and(|h| p.offset >= h[i]))
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
