//! Kafka Streams' `AbstractJoinIntegrationTest.input`, shared by the join
//! tests that transcribe its expected results (unversioned and versioned
//! tables).

/// Which input topic a record goes to.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Left,
    Right,
}
use Side::{Left, Right};

/// `AbstractJoinIntegrationTest.input`: (topic, value, timestamp).
pub const INPUT: [(Side, Option<&str>, i64); 23] = [
    (Left, None, 1),
    (Right, None, 2),
    (Left, Some("A"), 3),
    (Right, Some("a"), 4),
    (Left, Some("B"), 5),
    (Right, Some("b"), 6),
    (Left, None, 7),
    (Right, None, 8),
    (Left, Some("C"), 9),
    (Right, Some("c"), 10),
    (Right, None, 11),
    (Left, None, 12),
    (Right, None, 13),
    (Right, Some("d"), 7), // out of order, a tombstone is the latest
    (Left, Some("D"), 6),
    (Left, None, 2),
    (Right, None, 3),
    (Right, Some("e"), 14),
    (Left, Some("E"), 15),
    (Left, None, 10), // out of order, a value is the latest
    (Right, None, 9),
    (Left, Some("F"), 4),
    (Right, Some("f"), 3),
];
