//! Records as producers write them and consumers read them back.

use bytes::Bytes;

/// A record header: a name and an opaque value.
pub type Header = (String, Bytes);

/// One record to append: Kafka's key, value, timestamp and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Bytes,
    /// Milliseconds since the Unix epoch (the producer's CreateTime).
    pub timestamp_ms: i64,
    pub headers: Vec<Header>,
}

impl Record {
    pub fn new(key: Option<impl Into<Bytes>>, value: impl Into<Bytes>, timestamp_ms: i64) -> Self {
        Record {
            key: key.map(Into::into),
            value: value.into(),
            timestamp_ms,
            headers: Vec::new(),
        }
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Size on the wire, close enough for batching and byte limits.
    pub fn approximate_size(&self) -> usize {
        16 + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
    }
}

/// A record read back from the log, with the offset the log assigned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub record: Record,
}
