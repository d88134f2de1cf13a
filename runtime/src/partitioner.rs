//! Kafka's default partitioner, bit for bit.
//!
//! weir writes repartition and output topics with keys, and other Kafka
//! clients (the Java client, Kafka Streams, kcat with `-X
//! partitioner=murmur2_random`) must agree with weir on which partition a key
//! lives in, or two applications sharing a topic would each see only part of
//! a key's records. The Java producer's default is
//! `Utils.toPositive(Utils.murmur2(key)) % numPartitions`, and librdkafka's
//! `murmur2_random` partitioner is the same function; librdkafka's *default*
//! (`consistent_random`, CRC32) is not, which is why
//! `weir_connectors::kafka::ClientSettings::producer_config`
//! sets `partitioner=murmur2_random`.
//!
//! It also decides where each output record of a task goes
//! ([`destination`]): a partition a `StreamPartitioner` chose in the sink
//! (`KStream::to_with_partitioner`, told the partition counts through
//! `ProcessorContext::set_partition_counts`), else the default one by key;
//! and a topic chosen per record (`KStream::to_dynamic`) by name, with
//! [`UNASSIGNED_PARTITION`] so that the producer, which knows that topic's
//! partition count, partitions it.

use weir_topology::{OutRecord, RecordCollector};

use crate::plan::Plan;

/// MurmurHash2 as Kafka's Java client computes it (`Utils.murmur2`): seed
/// `0x9747b28c`, little-endian 4-byte blocks, the tail bytes mixed in the
/// original order, and the result reinterpreted as a signed 32-bit integer.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // The Java code computes `seed ^ length` with an int length; keys are far
    // shorter than 4 GiB, and truncating like Java's int would is what keeps
    // us bit-compatible anyway.
    let mut h: u32 = SEED ^ (data.len() as u32);

    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a non-null `key` among
/// `partitions` partitions: `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// Returns 0 when `partitions` is not positive rather than panicking: a
/// topic always has at least one partition, so a caller passing 0 has a bug
/// that the write to partition 0 of a one-partition topic will not make
/// worse, and a stream thread must not die on it.
pub fn default_partitioner(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The partition given to a record whose partition weir does not know
/// the count of (a topic chosen per record, `KStream::to_dynamic`): the
/// producer's partitioner chooses, as librdkafka's `RD_KAFKA_PARTITION_UA`
/// (weir configures `murmur2_random`, i.e. [`default_partitioner`] for
/// keyed records); the in-memory transport does the same.
pub const UNASSIGNED_PARTITION: i32 = -1;

/// What a producer does with a record's partition: an
/// [`UNASSIGNED_PARTITION`] becomes [`default_partitioner`] of its key
/// among `partitions` (partition 0 for a record with no key), any other
/// partition stays.
pub fn producer_partition(partition: i32, key: Option<&[u8]>, partitions: i32) -> i32 {
    match (partition, key) {
        (UNASSIGNED_PARTITION, Some(k)) => default_partitioner(k, partitions),
        (UNASSIGNED_PARTITION, None) => 0,
        (p, _) => p,
    }
}

/// Where an output record of task partition `task_partition` goes: its
/// topic's name and partition.
///
/// * A topic chosen per record (`OutRecord::topic_name`): by name, in the
///   partition a `StreamPartitioner` chose or [`UNASSIGNED_PARTITION`]
///   (the producer knows the topic's partition count; the plan does not).
/// * A topic of the topology: the partition a `StreamPartitioner` chose
///   (checked against the count when it chose), else
///   [`default_partitioner`] of the key, else (no key) the task's
///   partition modulo the topic's count.
#[inline]
pub fn destination<'a>(
    plan: &'a Plan,
    collector: &'a RecordCollector,
    rec: &OutRecord,
    task_partition: i32,
) -> (&'a str, i32) {
    let chosen = rec.partition.and_then(|p| i32::try_from(p).ok());
    if let Some(name) = collector.topic_name(rec) {
        return (name, chosen.unwrap_or(UNASSIGNED_PARTITION));
    }
    let topic = rec.topic as usize;
    let partitions = plan.topic_partitions[topic].max(1);
    let partition = match (chosen, collector.slice(&rec.key)) {
        (Some(p), _) if p < partitions => p,
        (_, Some(k)) => default_partitioner(k, partitions),
        (_, None) => task_partition % partitions,
    };
    (&plan.topic_names[topic], partition)
}

/// Call `send` with the headers of output record `rec` (those the topology
/// wrote; weir adds none of its own). Allocates only for a record with
/// headers.
#[inline]
pub fn with_headers<R>(collector: &RecordCollector, rec: &OutRecord, send: impl FnOnce(&[(&str, &[u8])]) -> R) -> R {
    if rec.headers.is_empty() {
        return send(&[]);
    }
    let headers: Vec<(&str, &[u8])> = collector.headers(rec).collect();
    send(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From Apache Kafka's own test of the Java client,
    /// `clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java`,
    /// `testMurmur2`.
    #[test]
    fn matches_kafka_utils_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want, "murmur2({:?})", String::from_utf8_lossy(key));
        }
    }

    /// From librdkafka's `src/rdmurmur2.c`, `unittest_murmur2()`, whose
    /// expected values are labelled `java_murmur2_results` (the Java client's
    /// outputs); it covers every tail length and the empty key.
    #[test]
    fn matches_librdkafka_unit_test_vectors() {
        let short_unaligned = "1234";
        let unaligned = "PreAmbleWillBeRemoved,ThePrePartThatIs";
        let cases: [(&str, u32); 11] = [
            ("kafka", 0xd067_cf64),
            ("giberish123456789", 0x8f55_2b0c),
            (short_unaligned, 0x9fc9_7b14),
            (&short_unaligned[1..], 0xe7c0_09ca),
            (&short_unaligned[2..], 0x8739_30da),
            (&short_unaligned[3..], 0x5a4b_5ca1),
            (unaligned, 0x7842_4f1c),
            (&unaligned[1..], 0x4a62_b377),
            (&unaligned[2..], 0xe0e4_e09e),
            (&unaligned[3..], 0x62b8_b43f),
            ("", 0x106e_08d9),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()) as u32, want, "murmur2({key:?})");
        }
    }

    #[test]
    fn partition_is_the_positive_hash_modulo_the_count() {
        // toPositive(-790332482) = 1357151166; 1357151166 % 10 = 6.
        assert_eq!(default_partitioner(b"foobar", 10), 6);
        for n in 1..64 {
            for key in [&b""[..], b"a", b"user-42", b"\xff\xfe\x00"] {
                let p = default_partitioner(key, n);
                assert!((0..n).contains(&p));
            }
        }
    }

    #[test]
    fn non_positive_partition_counts_do_not_panic() {
        assert_eq!(default_partitioner(b"k", 0), 0);
        assert_eq!(default_partitioner(b"k", -3), 0);
    }
}
