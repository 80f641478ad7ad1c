//! Kafka RecordBatch v2 (magic 2), the unit of storage and transfer.
//!
//! Layout of the 61-byte header: baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch i32
//! @12, magic i8 @16, crc u32 @17 (CRC-32C of bytes 21..end), attributes i16 @21,
//! lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35, producerId i64 @43,
//! producerEpoch i16 @51, baseSequence i32 @53, recordCount i32 @57. Records follow, each a
//! varint-length-prefixed body of zigzag varints. Batches written here are uncompressed.
//! Rewriting the base offset does not change the CRC, so stored batches stay valid byte for byte.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::LogError;
use crate::record::{Record, StoredRecord};

pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength themselves.
pub const LOG_OVERHEAD: usize = 12;
const MAGIC: i8 = 2;
const CRC_START: usize = 21;
const COMPRESSION_MASK: i16 = 0x07;

/// What a batch header says, read without touching the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    /// Size of the whole batch in bytes, header included.
    pub size: usize,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub record_count: i32,
}

impl BatchInfo {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
}

/// Encodes `records` (at least one) as an uncompressed batch starting at `base_offset`.
pub fn encode(base_offset: i64, records: &[Record]) -> Bytes {
    assert!(
        !records.is_empty(),
        "a record batch holds at least one record"
    );
    let base_timestamp = records[0].timestamp_ms;
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(base_timestamp);
    let mut buf = BytesMut::with_capacity(
        HEADER_LEN + records.iter().map(Record::approximate_size).sum::<usize>(),
    );
    buf.put_i64(base_offset);
    buf.put_i32(0); // batchLength, patched below
    buf.put_i32(0); // partitionLeaderEpoch
    buf.put_i8(MAGIC);
    buf.put_u32(0); // crc, patched below
    buf.put_i16(0); // attributes: no compression, CreateTime, not transactional
    buf.put_i32(records.len() as i32 - 1);
    buf.put_i64(base_timestamp);
    buf.put_i64(max_timestamp);
    buf.put_i64(-1); // producerId
    buf.put_i16(-1); // producerEpoch
    buf.put_i32(-1); // baseSequence
    buf.put_i32(records.len() as i32);
    let mut body = BytesMut::new();
    for (delta, record) in records.iter().enumerate() {
        body.clear();
        body.put_i8(0); // record attributes
        put_varlong(&mut body, record.timestamp_ms - base_timestamp);
        put_varint(&mut body, delta as i32);
        put_bytes(&mut body, record.key.as_deref());
        put_bytes(&mut body, Some(&record.value));
        put_varint(&mut body, record.headers.len() as i32);
        for (name, value) in &record.headers {
            put_bytes(&mut body, Some(name.as_bytes()));
            put_bytes(&mut body, Some(value));
        }
        put_varint(&mut buf, body.len() as i32);
        buf.put_slice(&body);
    }
    let batch_length = (buf.len() - LOG_OVERHEAD) as i32;
    buf[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

/// Reads a batch header (the first [`HEADER_LEN`] bytes of `buf`) and checks its length and magic,
/// without touching the records. Returns `Ok(None)` when `buf` is shorter than a header.
pub fn parse_header(buf: &[u8]) -> Result<Option<BatchInfo>, LogError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let batch_length = i32::from_be_bytes(buf[8..12].try_into().expect("4 bytes"));
    if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(LogError::CorruptBatch(format!(
            "batch length {batch_length} is shorter than a batch header"
        )));
    }
    let magic = buf[16] as i8;
    if magic != MAGIC {
        return Err(LogError::CorruptBatch(format!(
            "magic byte is {magic}; only record batch v2 (magic 2) is stored"
        )));
    }
    let info = BatchInfo {
        base_offset: i64::from_be_bytes(buf[0..8].try_into().expect("8 bytes")),
        size: LOG_OVERHEAD + batch_length as usize,
        last_offset_delta: i32::from_be_bytes(buf[23..27].try_into().expect("4 bytes")),
        max_timestamp: i64::from_be_bytes(buf[35..43].try_into().expect("8 bytes")),
        record_count: i32::from_be_bytes(buf[57..61].try_into().expect("4 bytes")),
    };
    if info.last_offset_delta < 0 || info.record_count < 0 {
        return Err(LogError::CorruptBatch(
            "negative record count or offset delta".into(),
        ));
    }
    Ok(Some(info))
}

/// Reads the header of the batch at the start of `buf` and checks its size, magic and CRC.
///
/// Returns `Ok(None)` when `buf` holds only part of a batch (a torn write at the end of a file).
pub fn check(buf: &[u8]) -> Result<Option<BatchInfo>, LogError> {
    let Some(info) = parse_header(buf)? else {
        return Ok(None);
    };
    if buf.len() < info.size {
        return Ok(None);
    }
    let stored_crc = u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes"));
    let crc = crc32c::crc32c(&buf[CRC_START..info.size]);
    if stored_crc != crc {
        return Err(LogError::CorruptBatch(format!(
            "CRC-32C mismatch: header says {stored_crc:#010x}, data is {crc:#010x}"
        )));
    }
    Ok(Some(info))
}

/// Decodes every record of one complete, checked batch.
pub fn decode(batch: &Bytes) -> Result<Vec<StoredRecord>, LogError> {
    let info = check(batch)?.ok_or_else(|| LogError::CorruptBatch("truncated batch".into()))?;
    let attributes = i16::from_be_bytes(batch[21..23].try_into().expect("2 bytes"));
    if attributes & COMPRESSION_MASK != 0 {
        return decode_compressed(batch);
    }
    let base_timestamp = i64::from_be_bytes(batch[27..35].try_into().expect("8 bytes"));
    let mut cursor = Cursor {
        buf: batch.slice(HEADER_LEN..info.size),
        pos: 0,
    };
    let mut records = Vec::with_capacity(info.record_count as usize);
    for _ in 0..info.record_count {
        let length = cursor.varint()? as usize;
        let end = cursor.pos + length;
        cursor.skip(1)?; // record attributes
        let timestamp_ms = base_timestamp + cursor.varlong()?;
        let offset = info.base_offset + i64::from(cursor.varint()?);
        let key = cursor.bytes()?;
        let value = cursor.bytes()?.unwrap_or_default();
        let header_count = cursor.varint()?;
        let mut headers = Vec::with_capacity(header_count.max(0) as usize);
        for _ in 0..header_count {
            let name = cursor.bytes()?.unwrap_or_default();
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| LogError::CorruptBatch("header name is not UTF-8".into()))?;
            headers.push((name, cursor.bytes()?.unwrap_or_default()));
        }
        if cursor.pos != end {
            return Err(LogError::CorruptBatch(format!(
                "record at offset {offset} has a wrong length prefix"
            )));
        }
        records.push(StoredRecord {
            offset,
            record: Record {
                key,
                value,
                timestamp_ms,
                headers,
            },
        });
    }
    Ok(records)
}

/// Decodes a batch a producer compressed (gzip, snappy, lz4 or zstd), skipping control records.
fn decode_compressed(batch: &Bytes) -> Result<Vec<StoredRecord>, LogError> {
    let mut buf = batch.clone();
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
        .map_err(|e| LogError::CorruptBatch(format!("cannot decompress the batch: {e}")))?;
    Ok(set
        .records
        .into_iter()
        .filter(|r| !r.control)
        .map(|r| StoredRecord {
            offset: r.offset,
            record: Record {
                key: r.key,
                value: r.value.unwrap_or_default(),
                timestamp_ms: r.timestamp,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.unwrap_or_default()))
                    .collect(),
            },
        })
        .collect())
}

fn put_varint(buf: &mut BytesMut, v: i32) {
    put_unsigned(buf, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_unsigned(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_unsigned(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_bytes(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}

struct Cursor {
    buf: Bytes,
    pos: usize,
}

impl Cursor {
    fn unsigned(&mut self) -> Result<u64, LogError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| LogError::CorruptBatch("record ends inside a varint".into()))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(LogError::CorruptBatch("varint longer than 10 bytes".into()))
    }

    fn varint(&mut self) -> Result<i32, LogError> {
        let v = self.unsigned()? as u32;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, LogError> {
        let v = self.unsigned()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn skip(&mut self, n: usize) -> Result<(), LogError> {
        if self.pos + n > self.buf.len() {
            return Err(LogError::CorruptBatch("record is truncated".into()));
        }
        self.pos += n;
        Ok(())
    }

    fn bytes(&mut self) -> Result<Option<Bytes>, LogError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        let start = self.pos;
        self.skip(len as usize)?;
        Ok(Some(self.buf.slice(start..self.pos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(key: Option<&str>, value: &str, ts: i64) -> Record {
        let mut r = Record::new(
            key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            Bytes::copy_from_slice(value.as_bytes()),
            ts,
        );
        r.headers
            .push(("reason".into(), Bytes::from_static(b"bad_topic")));
        r
    }

    #[test]
    fn header_fields_sit_where_kafka_puts_them() {
        let batch = encode(
            42,
            &[record(Some("k"), "v1", 1_000), record(None, "v2", 900)],
        );
        let info = check(&batch).unwrap().unwrap();
        assert_eq!(
            info,
            BatchInfo {
                base_offset: 42,
                size: batch.len(),
                last_offset_delta: 1,
                max_timestamp: 1_000,
                record_count: 2
            }
        );
        assert_eq!(batch[16], 2, "magic");
        assert_eq!(
            i64::from_be_bytes(batch[43..51].try_into().unwrap()),
            -1,
            "producer id"
        );
    }

    #[test]
    fn a_flipped_bit_fails_the_crc_and_a_short_buffer_is_torn() {
        let batch = encode(0, &[record(Some("k"), "value", 5)]);
        let mut corrupt = batch.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(matches!(check(&corrupt), Err(LogError::CorruptBatch(_))));
        assert_eq!(check(&batch[..batch.len() - 1]).unwrap(), None);
        assert_eq!(check(&batch[..10]).unwrap(), None);
    }

    proptest! {
        #[test]
        fn any_records_round_trip(
            base in 0i64..1_000_000_000,
            items in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                 proptest::collection::vec(any::<u8>(), 0..300),
                 -1_000_000i64..1_000_000,
                 proptest::collection::vec(("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..20)), 0..3)),
                1..20),
        ) {
            let records: Vec<Record> = items.into_iter().map(|(key, value, ts, headers)| Record {
                key: key.map(Bytes::from),
                value: Bytes::from(value),
                timestamp_ms: 1_700_000_000_000 + ts,
                headers: headers.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect(),
            }).collect();
            let decoded = decode(&encode(base, &records)).unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (stored, original)) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(stored.offset, base + i as i64);
                prop_assert_eq!(&stored.record, original);
            }
        }
    }
}
