//! Behaviour tests of [`PartitionLog`] through its public API, with batches
//! built by kafka-protocol's encoder as a client would send them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;

struct B {
    pid: i64,
    epoch: i16,
    seq: i32,
    txn: bool,
    compression: Compression,
}

fn plain() -> B {
    B {
        pid: -1,
        epoch: -1,
        seq: -1,
        txn: false,
        compression: Compression::None,
    }
}
fn idem(pid: i64, epoch: i16, seq: i32) -> B {
    B {
        pid,
        epoch,
        seq,
        txn: false,
        compression: Compression::None,
    }
}
fn txn(pid: i64, epoch: i16, seq: i32) -> B {
    B {
        pid,
        epoch,
        seq,
        txn: true,
        compression: Compression::None,
    }
}

/// One batch of (key, value, timestamp) records, offsets from 0 as a client sends them.
fn batch(b: &B, recs: &[(Option<&str>, Option<&str>, i64)]) -> Vec<u8> {
    let records: Vec<Record> = recs
        .iter()
        .enumerate()
        .map(|(i, (k, v, ts))| Record {
            transactional: b.txn,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: b.pid,
            producer_epoch: b.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder groups records into one batch while offset - sequence is constant.
            sequence: b.seq + i as i32,
            timestamp: *ts,
            key: k.map(|s| Bytes::copy_from_slice(s.as_bytes())),
            value: v.map(|s| Bytes::copy_from_slice(s.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: b.compression,
        },
    )
    .unwrap();
    buf.to_vec()
}

fn values(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Append one plain batch with values `v` (keyed by themselves), timestamp `ts`.
fn append_values(log: &mut PartitionLog, v: &[String], ts: i64) -> Appended {
    let recs: Vec<(Option<&str>, Option<&str>, i64)> =
        v.iter().map(|s| (Some(s.as_str()), Some(s.as_str()), ts)).collect();
    log.append(&batch(&plain(), &recs), ts).unwrap()
}

/// Decode fetched bytes to (offset, key, value) triples, control batches skipped.
fn decode(bytes: &Bytes) -> Vec<(i64, Option<String>, Option<String>)> {
    let mut buf = bytes.clone();
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut buf).unwrap() {
        for r in set.records {
            if r.control {
                continue;
            }
            let s = |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
            out.push((r.offset, s(r.key), s(r.value)));
        }
    }
    out
}

fn all(log: &PartitionLog) -> Vec<(i64, Option<String>, Option<String>)> {
    decode(&log.read(log.start_offset(), usize::MAX, i64::MAX).unwrap())
}

fn small(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_and_read_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(400)).unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let v = values(3, &format!("b{i}-"));
        let a = append_values(&mut log, &v, 1000 + i);
        assert_eq!((a.base_offset, a.last_offset), (i * 3, i * 3 + 2));
        assert_eq!(a.max_timestamp, 1000 + i);
        assert!(!a.duplicate);
        for (j, s) in v.iter().enumerate() {
            expected.push((i * 3 + j as i64, Some(s.clone()), Some(s.clone())));
        }
    }
    assert_eq!(log.end_offset(), 60);
    assert!(log.segment_bases().len() > 3, "segments: {:?}", log.segment_bases());
    assert_eq!(all(&log), expected);
    // From the middle of a batch: the whole batch containing it comes first.
    let got = decode(&log.read(31, usize::MAX, i64::MAX).unwrap());
    assert_eq!(got, expected[30..].to_vec());
    // Upper bound (exclusive) stops at a batch boundary.
    let got = decode(&log.read(0, usize::MAX, 9).unwrap());
    assert_eq!(got, expected[..9].to_vec());
    // At the end: empty, beyond: out of range.
    assert!(log.read(60, 1000, i64::MAX).unwrap().is_empty());
    assert!(matches!(
        log.read(61, 1000, i64::MAX),
        Err(LogError::OffsetOutOfRange {
            offset: 61,
            start: 0,
            end: 60,
            ..
        })
    ));
}

#[test]
fn read_max_bytes_returns_whole_batches_and_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let b0 = batch(&plain(), &[(Some("k"), Some("a-long-value-in-a-big-batch"), 1)]);
    let b1 = batch(&plain(), &[(Some("k"), Some("b"), 2)]);
    let b2 = batch(&plain(), &[(Some("k"), Some("c"), 3)]);
    for b in [&b0, &b1, &b2] {
        log.append(b, 0).unwrap();
    }
    // max_bytes smaller than the first batch still gets exactly that batch.
    let r = log.read(0, 1, i64::MAX).unwrap();
    assert_eq!(r.len(), b0.len());
    assert_eq!(
        decode(&r),
        vec![(0, Some("k".into()), Some("a-long-value-in-a-big-batch".into()))]
    );
    // Exactly two batches fit; a byte less is one batch.
    assert_eq!(
        log.read(0, b0.len() + b1.len(), i64::MAX).unwrap().len(),
        b0.len() + b1.len()
    );
    assert_eq!(log.read(0, b0.len() + b1.len() - 1, i64::MAX).unwrap().len(), b0.len());
    // Stored bytes are the produced ones with the base offset rewritten.
    // Stored bytes are the produced ones with base offset and leader epoch (outside the CRC) set.
    let r = log.read(2, usize::MAX, i64::MAX).unwrap();
    assert_eq!(r.len(), b2.len());
    assert_eq!(&r[16..], &b2[16..]);
    assert_eq!(i64::from_be_bytes(r[0..8].try_into().unwrap()), 2);
    assert_eq!(i32::from_be_bytes(r[12..16].try_into().unwrap()), 0);
}

#[test]
fn reopen_keeps_everything_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let mut log = PartitionLog::open(dir.path(), small(300)).unwrap();
        for i in 0..10 {
            append_values(&mut log, &values(2, &format!("r{i}-")), i);
        }
        expected = all(&log);
        assert!(log.segment_bases().len() > 2);
    }
    let mut log = PartitionLog::open(dir.path(), small(300)).unwrap();
    assert_eq!(log.end_offset(), 20);
    assert_eq!(all(&log), expected);
    let a = append_values(&mut log, &values(1, "after"), 99);
    assert_eq!(a.base_offset, 20);
    assert_eq!(log.offset_for_timestamp(5).unwrap(), Some((10, 5)));
}

#[test]
fn torn_tail_is_cut_off_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let third_len;
    {
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append_values(&mut log, &values(2, "a"), 1);
        append_values(&mut log, &values(2, "b"), 2);
        let b = batch(&plain(), &[(Some("c"), Some("c"), 3)]);
        third_len = b.len() as u64;
        log.append(&b, 3).unwrap();
        assert_eq!(log.end_offset(), 5);
    }
    let file = log_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    // A torn write: half of the last batch made it.
    OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - third_len / 2)
        .unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), 4);
    assert_eq!(fs::metadata(&file).unwrap().len(), len - third_len);
    let a = append_values(&mut log, &values(1, "d"), 4);
    assert_eq!(a.base_offset, 4);
    let got: Vec<i64> = all(&log).iter().map(|r| r.0).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    drop(log);

    // Garbage after the last batch.
    OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(&[0xAB; 100])
        .unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), 5);
    assert_eq!(append_values(&mut log, &values(1, "e"), 5).base_offset, 5);
    assert_eq!(all(&log).len(), 6);
}

#[test]
fn corrupt_last_batch_fails_crc_and_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append_values(&mut log, &values(2, "a"), 1);
        append_values(&mut log, &values(2, "b"), 2);
    }
    let file = log_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    fs::write(&file, &bytes).unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), 2);
    assert_eq!(all(&log).len(), 2);
}

#[test]
fn missing_or_bad_index_of_closed_segment_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let mut log = PartitionLog::open(dir.path(), small(2000)).unwrap();
        for i in 0..40 {
            append_values(&mut log, &values(2, &format!("x{i}-")), i);
        }
        expected = all(&log);
    }
    let indexes: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    assert!(indexes.len() >= 2);
    let mut sorted = indexes.clone();
    sorted.sort();
    fs::remove_file(&sorted[0]).unwrap();
    fs::write(&sorted[1], [0xFFu8; 16]).unwrap(); // points past the file
    let log = PartitionLog::open(dir.path(), small(2000)).unwrap();
    assert_eq!(all(&log), expected);
    for off in [0, 7, 33, 61, 79] {
        assert_eq!(decode(&log.read(off, 1, i64::MAX).unwrap())[0].0, off - off % 2);
    }
    assert!(sorted[0].exists());
}

#[test]
fn duplicate_idempotent_batch_returns_original_offsets_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    append_values(&mut log, &values(1, "other"), 1);
    let first = batch(
        &idem(7, 0, 0),
        &[
            (Some("a"), Some("1"), 10),
            (Some("b"), Some("2"), 11),
            (Some("c"), Some("3"), 12),
        ],
    );
    let second = batch(&idem(7, 0, 3), &[(Some("d"), Some("4"), 13)]);
    let a1 = log.append(&first, 0).unwrap();
    let a2 = log.append(&second, 0).unwrap();
    assert_eq!((a1.base_offset, a1.last_offset, a2.base_offset), (1, 3, 4));
    let size = log.size_bytes();
    let dup = log.append(&first, 0).unwrap();
    assert_eq!(
        dup,
        Appended {
            base_offset: 1,
            last_offset: 3,
            max_timestamp: 12,
            duplicate: true,
            log_start_offset: 0
        }
    );
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.end_offset(), 5);
    // Still detected after a reopen (state rebuilt from the log).
    drop(log);
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let dup = log.append(&second, 0).unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.base_offset, dup.last_offset), (4, 4));
    assert_eq!(
        log.append(&batch(&idem(7, 0, 4), &[(Some("e"), Some("5"), 14)]), 0)
            .unwrap()
            .base_offset,
        5
    );
}

#[test]
fn sequence_gap_and_stale_epoch_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.append(
        &batch(&idem(3, 1, 0), &[(Some("a"), Some("1"), 1), (Some("b"), Some("2"), 1)]),
        0,
    )
    .unwrap();
    let gap = log.append(&batch(&idem(3, 1, 5), &[(Some("c"), Some("3"), 1)]), 0);
    assert!(
        matches!(
            gap,
            Err(LogError::OutOfOrderSequence {
                producer_id: 3,
                first_seq: 5,
                expected: 2,
                ..
            })
        ),
        "{gap:?}"
    );
    let stale = log.append(&batch(&idem(3, 0, 2), &[(Some("c"), Some("3"), 1)]), 0);
    assert!(
        matches!(
            stale,
            Err(LogError::InvalidProducerEpoch {
                producer_id: 3,
                epoch: 0,
                current: 1,
                ..
            })
        ),
        "{stale:?}"
    );
    let msg = stale.unwrap_err().to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    // A newer epoch must restart at sequence 0.
    assert!(matches!(
        log.append(&batch(&idem(3, 2, 2), &[(Some("c"), Some("3"), 1)]), 0),
        Err(LogError::OutOfOrderSequence { expected: 0, .. })
    ));
    assert_eq!(
        log.append(&batch(&idem(3, 2, 0), &[(Some("c"), Some("3"), 1)]), 0)
            .unwrap()
            .base_offset,
        2
    );
    assert_eq!(log.end_offset(), 3);
}

#[test]
fn corrupt_or_invalid_batches_are_rejected_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut b = batch(&plain(), &[(Some("a"), Some("1"), 1)]);
    let n = b.len();
    b[n - 1] ^= 1;
    assert!(matches!(log.append(&b, 0), Err(LogError::CorruptBatch { .. })));
    let good = batch(&plain(), &[(Some("a"), Some("1"), 1)]);
    assert!(matches!(
        log.append(&good[..n - 3], 0),
        Err(LogError::CorruptBatch { .. })
    ));
    let marker = batch::encode_marker(0, 1, 0, true, 0, 0, 0);
    assert!(matches!(log.append(&marker, 0), Err(LogError::InvalidRecord { .. })));
    assert_eq!(log.end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    // Compacted topics need keys.
    log.set_config(LogConfig {
        compact: true,
        ..LogConfig::default()
    });
    assert!(matches!(
        log.append(&batch(&plain(), &[(None, Some("v"), 1)]), 0),
        Err(LogError::InvalidRecord { .. })
    ));
}

#[test]
fn transaction_abort_is_indexed_lso_advances_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(500);
    {
        let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        append_values(&mut log, &values(2, "n"), 1); // 0..1
        let a = log
            .append(
                &batch(&txn(5, 0, 0), &[(Some("t"), Some("1"), 2), (Some("t"), Some("2"), 2)]),
                0,
            )
            .unwrap();
        assert_eq!(a.base_offset, 2); // 2..3
        assert_eq!(log.last_stable_offset(), 2);
        assert_eq!(log.open_transactions(), vec![(5, 2)]);
        append_values(&mut log, &values(1, "m"), 3); // 4
        log.append(&batch(&txn(5, 0, 2), &[(Some("t"), Some("3"), 4)]), 0)
            .unwrap(); // 5
        assert_eq!(log.last_stable_offset(), 2);
        // Reads bounded by the LSO stop before the open transaction.
        assert_eq!(
            decode(&log.read(0, usize::MAX, log.last_stable_offset()).unwrap()).len(),
            2
        );
        // A non-transactional write from a producer in a transaction is refused.
        assert!(matches!(
            log.append(&batch(&idem(5, 0, 3), &[(Some("x"), Some("x"), 4)]), 0),
            Err(LogError::InvalidTxnState { producer_id: 5, .. })
        ));
        let marker = log.append_marker(5, 0, false, 1, 50).unwrap();
        assert_eq!(marker, 6);
        assert_eq!(log.end_offset(), 7);
        assert_eq!(log.last_stable_offset(), 7);
        assert!(log.open_transactions().is_empty());
        assert_eq!(
            log.aborted_transactions(0, 7),
            vec![AbortedTxn {
                producer_id: 5,
                first_offset: 2
            }]
        );
        // A committed transaction of another producer is not listed.
        log.append(&batch(&txn(6, 0, 0), &[(Some("u"), Some("1"), 5)]), 0)
            .unwrap(); // 7
        assert_eq!(log.last_stable_offset(), 7);
        assert_eq!(log.append_marker(6, 0, true, 1, 60).unwrap(), 8);
        assert_eq!(log.last_stable_offset(), 9);
        // A fenced coordinator and an old epoch are refused.
        assert!(matches!(
            log.append_marker(6, 0, true, 0, 60),
            Err(LogError::CoordinatorFenced { .. })
        ));
        // Another open transaction left for the restart.
        log.append(&batch(&txn(9, 3, 0), &[(Some("v"), Some("1"), 6)]), 0)
            .unwrap(); // 9
    }
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(
        log.aborted_transactions(0, 10),
        vec![AbortedTxn {
            producer_id: 5,
            first_offset: 2
        }]
    );
    assert!(log.aborted_transactions(7, 10).is_empty()); // marker at 6 is before `from`
    assert!(log.aborted_transactions(0, 2).is_empty()); // transaction starts at `to`
    assert_eq!(
        log.aborted_transactions(6, 7),
        vec![AbortedTxn {
            producer_id: 5,
            first_offset: 2
        }]
    );
    assert_eq!(log.open_transactions(), vec![(9, 9)]);
    assert_eq!(log.last_stable_offset(), 9);
    assert_eq!(log.end_offset(), 10);
    // The transaction's producer continues its sequence across the marker (same epoch).
    assert!(matches!(
        log.append(&batch(&txn(5, 0, 0), &[(Some("t"), Some("x"), 7)]), 0),
        Err(LogError::OutOfOrderSequence { expected: 3, .. })
    ));
    assert!(matches!(
        log.append_marker(9, 2, false, 1, 70),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
    assert_eq!(log.append_marker(9, 3, false, 1, 70).unwrap(), 10);
    assert_eq!(log.aborted_transactions(0, 11).len(), 2);
    drop(log);

    // Lose every aborted-transaction file and every snapshot: both are rebuilt from the log.
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "txnindex" || e == "snapshot") {
            fs::remove_file(p).unwrap();
        }
    }
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(
        log.aborted_transactions(0, 11),
        vec![
            AbortedTxn {
                producer_id: 5,
                first_offset: 2
            },
            AbortedTxn {
                producer_id: 9,
                first_offset: 9
            }
        ]
    );
    assert_eq!(log.last_stable_offset(), 11);
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(300)).unwrap();
    // Timestamps not monotonic across records within a batch.
    log.append(
        &batch(
            &plain(),
            &[
                (Some("a"), Some("1"), 100),
                (Some("b"), Some("2"), 300),
                (Some("c"), Some("3"), 200),
            ],
        ),
        0,
    )
    .unwrap();
    for i in 0..10 {
        append_values(&mut log, &values(2, &format!("z{i}")), 1000 + i * 10);
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 100)));
    assert_eq!(log.offset_for_timestamp(150).unwrap(), Some((1, 300)));
    assert_eq!(log.offset_for_timestamp(300).unwrap(), Some((1, 300)));
    assert_eq!(log.offset_for_timestamp(301).unwrap(), Some((3, 1000)));
    assert_eq!(log.offset_for_timestamp(1045).unwrap(), Some((13, 1050)));
    assert_eq!(log.offset_for_timestamp(1090).unwrap(), Some((21, 1090)));
    assert_eq!(log.offset_for_timestamp(1091).unwrap(), None);
}

#[test]
fn retention_by_time_deletes_only_whole_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: Some(1000),
        ..small(300)
    };
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..12 {
        append_values(&mut log, &values(2, &format!("t{i}-")), i * 100);
    }
    let bases = log.segment_bases();
    assert!(bases.len() >= 4, "{bases:?}");
    // Batch i holds offsets 2i, 2i+1 with timestamp 100 i, so a closed segment
    // [b_j, b_j+1) has largest timestamp 100 * ((b_j+1 - 1) / 2). At now = 1550
    // a segment expires when that is below 550; the expired prefix goes.
    let expired = (0..bases.len() - 1)
        .take_while(|&j| 100 * ((bases[j + 1] - 1) / 2) < 550)
        .count();
    assert!(expired >= 1 && expired < bases.len() - 1, "{bases:?}");
    log.enforce_retention(1550).unwrap();
    let start = log.start_offset();
    assert_eq!(start, bases[expired]);
    assert_eq!(log.segment_bases(), bases[expired..].to_vec());
    assert_eq!(all(&log)[0].0, start);
    assert!(matches!(
        log.read(0, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange { offset: 0, .. })
    ));
    // Far in the future: everything but the active segment goes.
    log.enforce_retention(1_000_000).unwrap();
    assert_eq!(log.segment_bases().len(), 1);
    assert_eq!(log.start_offset(), *log.segment_bases().last().unwrap());
    assert_eq!(log.end_offset(), 24);
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(log.segment_bases().len(), 1);
    assert_eq!(log.end_offset(), 24);
}

#[test]
fn retention_by_size_keeps_at_least_retention_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(
        dir.path(),
        LogConfig {
            retention_ms: None,
            ..small(300)
        },
    )
    .unwrap();
    for i in 0..12 {
        append_values(&mut log, &values(2, &format!("s{i}-")), i);
    }
    let before = log.size_bytes();
    let limit = before / 2;
    log.set_config(LogConfig {
        retention_ms: None,
        retention_bytes: Some(limit),
        ..small(300)
    });
    log.enforce_retention(0).unwrap();
    assert!(log.size_bytes() >= limit);
    assert!(log.size_bytes() < before);
    assert_eq!(log.start_offset(), log.segment_bases()[0]);
    assert_eq!(all(&log).last().unwrap().0, 23);
    // Compacted logs are not subject to retention.
    let bases = log.segment_bases();
    log.set_config(LogConfig {
        retention_bytes: Some(0),
        compact: true,
        ..small(300)
    });
    log.enforce_retention(i64::MAX).unwrap();
    assert_eq!(log.segment_bases(), bases);
}

#[test]
fn delete_records_moves_start_offset_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(300)).unwrap();
    for i in 0..10 {
        append_values(&mut log, &values(2, &format!("d{i}-")), i);
    }
    assert_eq!(log.delete_records_before(7).unwrap(), 7);
    assert_eq!(log.start_offset(), 7);
    assert!(log.segment_bases()[0] <= 7);
    assert!(matches!(
        log.read(6, 100, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(decode(&log.read(7, 1, i64::MAX).unwrap())[0].0, 6); // whole batch 6..7
    assert_eq!(log.delete_records_before(3).unwrap(), 7);
    assert!(matches!(
        log.delete_records_before(21),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let mut log = PartitionLog::open(dir.path(), small(300)).unwrap();
    assert_eq!(log.start_offset(), 7);
    assert_eq!(log.delete_records_before(20).unwrap(), 20);
    assert_eq!(log.start_offset(), 20);
    assert!(log.read(20, 100, i64::MAX).unwrap().is_empty());
    assert_eq!(append_values(&mut log, &values(1, "n"), 0).log_start_offset, 20);
}

#[test]
fn compaction_keeps_latest_per_key_with_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        compact: true,
        ..small(400)
    };
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    let now = 10_000_000;
    // 30 single-key batches cycling keys k0..k4, then a 3-record batch with mixed survivors.
    for i in 0..30i64 {
        let k = format!("k{}", i % 5);
        let v = format!("v{i}");
        log.append(&batch(&plain(), &[(Some(&k), Some(&v), now)]), now).unwrap();
    }
    log.append(
        &batch(
            &plain(),
            &[
                (Some("k0"), Some("old"), now),
                (Some("m"), Some("m1"), now),
                (Some("k0"), Some("new"), now),
            ],
        ),
        now,
    )
    .unwrap(); // 30..32
               // A tombstone for k1, old enough to be dropped, and one for k2, young.
    log.append(
        &batch(&plain(), &[(Some("k1"), None, now - 2 * DEFAULT_DELETE_RETENTION_MS)]),
        now,
    )
    .unwrap(); // 33
    log.append(&batch(&plain(), &[(Some("k2"), None, now)]), now).unwrap(); // 34
                                                                            // Make sure everything above is in closed segments.
    let pad: Vec<u8> = batch(&plain(), &[(Some("pad"), Some(&"p".repeat(500)), now)]);
    log.append(&pad, now).unwrap(); // 35
    log.append(&batch(&plain(), &[(Some("k3"), Some("active"), now)]), now)
        .unwrap(); // 36 in the active segment
    let active_base = *log.segment_bases().last().unwrap();
    assert!(active_base > 34, "{:?}", log.segment_bases());
    let before = log.size_bytes();

    let stats = log.compact(now).unwrap();
    assert!(stats.segments_cleaned > 0);
    assert!(log.size_bytes() < before);
    let expected: Vec<(i64, Option<String>, Option<String>)> = vec![
        (28, Some("k3".into()), Some("v28".into())), // superseded only in the active segment
        (29, Some("k4".into()), Some("v29".into())),
        (31, Some("m".into()), Some("m1".into())),
        (32, Some("k0".into()), Some("new".into())),
        (34, Some("k2".into()), None),
        (35, Some("pad".into()), Some("p".repeat(500))),
        (36, Some("k3".into()), Some("active".into())),
    ];
    assert_eq!(all(&log), expected);
    // 36 records were cleanable (offsets 0..=35); 6 of them are kept.
    assert_eq!(stats.records_read, 36);
    assert_eq!(stats.records_removed, 30);
    // Reading from an offset that was compacted away yields the next record.
    assert_eq!(decode(&log.read(5, 1, i64::MAX).unwrap())[0].0, 28);
    assert_eq!(log.end_offset(), 37);
    // Idempotent: a second pass changes nothing.
    assert_eq!(log.compact(now).unwrap().segments_cleaned, 0);
    drop(log);
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(all(&log), expected);
    assert_eq!(
        log.append(&batch(&plain(), &[(Some("z"), Some("z"), now)]), now)
            .unwrap()
            .base_offset,
        37
    );
    assert!(fs::read_dir(dir.path())
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".cleaned")));
}

#[test]
fn compaction_drops_aborted_records_and_stops_at_the_lso() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        compact: true,
        ..small(200)
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    log.append(&batch(&plain(), &[(Some("a"), Some("1"), 1)]), 0).unwrap(); // 0
    log.append(&batch(&txn(4, 0, 0), &[(Some("a"), Some("aborted"), 1)]), 0)
        .unwrap(); // 1
    log.append_marker(4, 0, false, 0, 1).unwrap(); // 2
    log.append(&batch(&txn(4, 0, 1), &[(Some("b"), Some("open"), 1)]), 0)
        .unwrap(); // 3, stays open
    for i in 0..6 {
        log.append(&batch(&plain(), &[(Some("b"), Some(&format!("later{i}")), 1)]), 0)
            .unwrap(); // 4..9
    }
    assert_eq!(log.last_stable_offset(), 3);
    log.compact(1).unwrap();
    let got = all(&log);
    // "a"=1 survives (the aborted later value does not count), the aborted record is gone,
    // and nothing from the LSO on was touched.
    assert_eq!(got[0], (0, Some("a".into()), Some("1".into())));
    assert!(got.iter().all(|r| r.0 != 1));
    assert_eq!(got.iter().filter(|r| r.0 >= 3).count(), 7);
    assert_eq!(
        log.aborted_transactions(0, 10),
        vec![AbortedTxn {
            producer_id: 4,
            first_offset: 1
        }]
    );
}

#[test]
fn compressed_batches_round_trip_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        compact: true,
        ..small(300)
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    for c in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = B {
            compression: c,
            ..plain()
        };
        log.append(
            &batch(
                &b,
                &[
                    (Some("x"), Some("1"), 5),
                    (Some("y"), Some("2"), 5),
                    (Some("x"), Some("3"), 5),
                ],
            ),
            0,
        )
        .unwrap();
    }
    log.append(&batch(&plain(), &[(Some("pad"), Some(&"p".repeat(400)), 5)]), 0)
        .unwrap();
    log.append(&batch(&plain(), &[(Some("q"), Some("q"), 5)]), 0).unwrap();
    assert_eq!(all(&log).len(), 14);
    log.compact(0).unwrap();
    let got = all(&log);
    assert_eq!(
        got,
        vec![
            (10, Some("y".into()), Some("2".into())),
            (11, Some("x".into()), Some("3".into())),
            (12, Some("pad".into()), Some("p".repeat(400))),
            (13, Some("q".into()), Some("q".into())),
        ]
    );
    // The re-encoded zstd batch still spans offsets 9..11 and kept its codec.
    let raw = log.read(10, 1, i64::MAX).unwrap();
    let h = batch::BatchHeader::parse(&raw).unwrap();
    assert_eq!(
        (h.base_offset, h.last_offset(), h.compression()),
        (10, 11, Compression::Zstd)
    );
    assert!(batch::crc_ok(&raw[..h.size]));
}

#[test]
fn several_batches_in_one_append_and_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut req = batch(
        &idem(2, 0, 0),
        &[(Some("a"), Some("1"), 50), (Some("b"), Some("2"), 70)],
    );
    req.extend(batch(&idem(2, 0, 2), &[(Some("c"), Some("3"), 60)]));
    let a = log.append(&req, 0).unwrap();
    assert_eq!(
        (a.base_offset, a.last_offset, a.max_timestamp, a.duplicate),
        (0, 2, 70, false)
    );
    assert_eq!(all(&log).iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    // Resending both is a duplicate of both; resending one plus a new one is refused.
    let dup = log.append(&req, 0).unwrap();
    assert_eq!((dup.base_offset, dup.last_offset, dup.duplicate), (0, 2, true));
    let mut mixed = batch(&idem(2, 0, 2), &[(Some("c"), Some("3"), 60)]);
    mixed.extend(batch(&idem(2, 0, 3), &[(Some("d"), Some("4"), 60)]));
    assert!(matches!(
        log.append(&mixed, 0),
        Err(LogError::DuplicateSequence { producer_id: 2, .. })
    ));
    assert_eq!(log.end_offset(), 3);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((1, 70)));
}

#[test]
fn producer_state_comes_back_from_snapshot_plus_replay() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(300);
    {
        let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        for seq in 0..20 {
            log.append(&batch(&idem(11, 4, seq), &[(Some("k"), Some("v"), seq as i64)]), 0)
                .unwrap();
        }
        assert!(log.segment_bases().len() > 2);
        log.append(&batch(&txn(12, 0, 0), &[(Some("t"), Some("v"), 0)]), 0)
            .unwrap(); // 20, open
        log.flush().unwrap();
        log.append(&batch(&idem(11, 4, 20), &[(Some("k"), Some("v"), 0)]), 0)
            .unwrap(); // 21, after the flush snapshot
    }
    let snapshots = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".snapshot"))
        .count();
    assert_eq!(snapshots, 2);
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(log.open_transactions(), vec![(12, 20)]);
    assert_eq!(log.last_stable_offset(), 20);
    let dup = log
        .append(&batch(&idem(11, 4, 20), &[(Some("k"), Some("v"), 0)]), 0)
        .unwrap();
    assert_eq!((dup.base_offset, dup.duplicate), (21, true));
    let dup = log
        .append(&batch(&idem(11, 4, 17), &[(Some("k"), Some("v"), 0)]), 0)
        .unwrap();
    assert_eq!((dup.base_offset, dup.duplicate), (17, true));
    assert!(matches!(
        log.append(&batch(&idem(11, 4, 15), &[(Some("k"), Some("v"), 0)]), 0), // older than the last five
        Err(LogError::OutOfOrderSequence { expected: 21, .. })
    ));
    assert_eq!(
        log.append(&batch(&idem(11, 4, 21), &[(Some("k"), Some("v"), 0)]), 0)
            .unwrap()
            .base_offset,
        22
    );
}
