//! The magic-2 record batch header, read straight from bytes.
//!
//! The log never decodes records on its hot paths: offsets, producer state,
//! transactions, the index and time lookups all come from the fixed 61-byte
//! header, which is also what Kafka's own log layer relies on. Layout (big
//! endian): baseOffset i64 @0, batchLength i32 @8 (bytes after this field),
//! partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17 (CRC-32C of bytes
//! 21..end), attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27,
//! maxTimestamp i64 @35, producerId i64 @43, producerEpoch i16 @51,
//! baseSequence i32 @53, recordCount i32 @57, records @61.
//!
//! Base offset and leader epoch lie outside the CRC, so the broker can assign
//! offsets by overwriting bytes 0..8 without re-checksumming.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Size of the header up to and including the record count.
pub(crate) const HEADER_LEN: usize = 61;
/// baseOffset + batchLength: the bytes not counted by batchLength.
pub(crate) const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

const ATTR_COMPRESSION_MASK: i16 = 0x7;
const ATTR_TIMESTAMP_TYPE: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// The parsed fixed header of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub base_offset: i64,
    /// Whole batch size in bytes, LOG_OVERHEAD included.
    pub size: usize,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parse the header from the first `HEADER_LEN` bytes of `b`. Checks only
    /// what the header alone can tell: the length field and the magic byte.
    pub fn parse(b: &[u8]) -> Result<BatchHeader, String> {
        if b.len() < HEADER_LEN {
            return Err(format!(
                "{} bytes is shorter than a batch header ({HEADER_LEN})",
                b.len()
            ));
        }
        let length = be_i32(b, 8);
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(format!(
                "batch length {length} is below the minimum {}",
                HEADER_LEN - LOG_OVERHEAD
            ));
        }
        let magic = b[16] as i8;
        if magic != 2 {
            return Err(format!("magic {magic} is not supported (only record batch v2)"));
        }
        Ok(BatchHeader {
            base_offset: be_i64(b, 0),
            size: length as usize + LOG_OVERHEAD,
            crc: u32::from_be_bytes(b[17..21].try_into().expect("4 bytes")),
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            record_count: be_i32(b, 57),
        })
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }
    pub fn compression(&self) -> Compression {
        match self.attributes & ATTR_COMPRESSION_MASK {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
    }
    /// Last sequence number of the batch; sequences wrap from i32::MAX to 0 as in Kafka.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }

    /// The checks Kafka's LogValidator makes on a client batch: offsets and
    /// count agree and the attributes name a known codec.
    pub fn validate_for_append(&self) -> Result<(), String> {
        if self.last_offset_delta < 0 {
            return Err(format!("negative last offset delta {}", self.last_offset_delta));
        }
        if self.record_count <= 0 {
            return Err(format!("invalid record count {}", self.record_count));
        }
        if self.record_count as i64 != self.last_offset_delta as i64 + 1 {
            return Err(format!(
                "inconsistent batch offset range: {} records but last offset delta {}",
                self.record_count, self.last_offset_delta
            ));
        }
        if self.attributes & ATTR_COMPRESSION_MASK > 4 {
            return Err(format!(
                "unknown compression codec {}",
                self.attributes & ATTR_COMPRESSION_MASK
            ));
        }
        Ok(())
    }
}

/// True when the CRC-32C stored in the header matches the batch bytes.
pub(crate) fn crc_ok(batch: &[u8]) -> bool {
    batch.len() >= HEADER_LEN
        && crc32c::crc32c(&batch[CRC_START..]) == u32::from_be_bytes(batch[17..21].try_into().unwrap())
}

/// Rewrite the CRC after header fields inside the checksummed range changed.
pub(crate) fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

pub(crate) fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[0..8].copy_from_slice(&offset.to_be_bytes());
}

pub(crate) fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Split a Produce partition's bytes into batches, checking framing and CRC of
/// each. Returns (start, header) for every batch.
pub(crate) fn split_batches(bytes: &[u8]) -> Result<Vec<(usize, BatchHeader)>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let header = BatchHeader::parse(rest).map_err(|e| format!("batch at byte {pos}: {e}"))?;
        if header.size > rest.len() {
            return Err(format!(
                "batch at byte {pos} declares {} bytes but only {} remain",
                header.size,
                rest.len()
            ));
        }
        if !crc_ok(&rest[..header.size]) {
            let actual = crc32c::crc32c(&rest[CRC_START..header.size]);
            return Err(format!(
                "batch at byte {pos}: CRC {:#010x} does not match contents ({actual:#010x})",
                header.crc
            ));
        }
        out.push((pos, header));
        pos += header.size;
    }
    if out.is_empty() {
        return Err("no record batches".to_string());
    }
    Ok(out)
}

/// Control record type of a control batch: `Some(true)` for COMMIT, `Some(false)`
/// for ABORT, None when it is not a transaction marker (or has no records).
pub(crate) fn control_type(batch: &[u8]) -> Option<bool> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut buf).ok()?;
    let key = set.records.first()?.key.clone()?;
    if key.len() < 4 {
        return None;
    }
    match be_i16(&key, 2) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Encode a transaction marker: a transactional control batch with one record
/// whose key is (version 0, type) and value (version 0, coordinator epoch).
pub(crate) fn encode_marker(
    offset: i64,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
    leader_epoch: i32,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&(commit as i16).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: leader_epoch,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encoding a one-record uncompressed control batch cannot fail");
    buf.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_through_header_and_control_type() {
        let b = encode_marker(42, 7, 3, false, 9, 1000, 0);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.size, b.len());
        assert!(h.is_control() && h.is_transactional());
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (7, 3, -1));
        assert!(crc_ok(&b));
        assert_eq!(control_type(&b), Some(false));
        assert_eq!(control_type(&encode_marker(1, 7, 3, true, 9, 1000, 0)), Some(true));
    }

    #[test]
    fn split_rejects_bad_crc_and_short_batches() {
        let mut b = encode_marker(0, 1, 0, true, 0, 0, 0);
        assert_eq!(split_batches(&b).unwrap().len(), 1);
        assert!(split_batches(&b[..b.len() - 1]).unwrap_err().contains("remain"));
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(split_batches(&b).unwrap_err().contains("CRC"));
        // base offset is outside the CRC
        let mut c = encode_marker(0, 1, 0, true, 0, 0, 0);
        set_base_offset(&mut c, 99);
        set_leader_epoch(&mut c, 5);
        assert_eq!(split_batches(&c).unwrap()[0].1.base_offset, 99);
    }

    #[test]
    fn last_sequence_wraps() {
        let mut h = BatchHeader::parse(&encode_marker(0, 1, 0, true, 0, 0, 0)).unwrap();
        h.base_sequence = i32::MAX - 1;
        h.last_offset_delta = 3;
        assert_eq!(h.last_sequence(), 1);
        h.base_sequence = 5;
        assert_eq!(h.last_sequence(), 8);
    }
}
