//! How a task's sled tree is laid out.
//!
//! All stores of a task share one tree so that one sled batch can write
//! them and the task's checkpoint atomically (sled batches are per tree).
//! Each store's keys therefore carry a store prefix: the name's length as
//! one byte, then the name. Length-prefixing makes the prefixes of distinct
//! names never prefixes of one another, so stores cannot see each other's
//! keys. The checkpoint lives under the single byte `0x00`, which no store
//! key can start with because store names are never empty.

use std::ops::Bound;

use weir_topology::store::{StoreError, StoreResult};

/// Key of the task's checkpoint in its tree.
pub(crate) const CHECKPOINT_KEY: &[u8] = &[0];

/// Version byte in front of the encoded checkpoint, so that a future format
/// can be told apart (and an unknown one refused) rather than misread.
const CHECKPOINT_FORMAT: u8 = 1;

/// The key prefix of store `name`, or an error naming the store if the name
/// cannot be encoded.
pub(crate) fn store_prefix(name: &str) -> StoreResult<Vec<u8>> {
    if name.is_empty() {
        return Err(StoreError::new(name, "store names must not be empty"));
    }
    let len = u8::try_from(name.len()).map_err(|_| {
        StoreError::new(
            name,
            format!("store name is {} bytes long; the limit is 255", name.len()),
        )
    })?;
    let mut prefix = Vec::with_capacity(1 + name.len());
    prefix.push(len);
    prefix.extend_from_slice(name.as_bytes());
    Ok(prefix)
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` if there is none (the prefix is all `0xFF`).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < u8::MAX {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

fn prefixed(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + key.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(key);
    out
}

/// Sled bounds covering the store keys within `(lo, hi)` of the store with
/// `prefix`.
pub(crate) fn sled_bounds(prefix: &[u8], lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lo = match lo {
        Bound::Included(k) => Bound::Included(prefixed(prefix, k)),
        Bound::Excluded(k) => Bound::Excluded(prefixed(prefix, k)),
        Bound::Unbounded => Bound::Included(prefix.to_vec()),
    };
    let hi = match hi {
        Bound::Included(k) => Bound::Included(prefixed(prefix, k)),
        Bound::Excluded(k) => Bound::Excluded(prefixed(prefix, k)),
        Bound::Unbounded => match prefix_successor(prefix) {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        },
    };
    (lo, hi)
}

/// True if no key lies within the bounds. Checked before scanning because
/// `BTreeSet::range` panics on inverted bounds, and a caller's empty range
/// should simply come back empty.
pub(crate) fn range_is_empty(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// The checkpoint's sled value: a format byte, then the runtime's bytes
/// (weir-runtime's `TaskCheckpoint` codec, versioned on its own; this
/// crate does not look inside).
pub(crate) fn encode_checkpoint(checkpoint: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + checkpoint.len());
    out.push(CHECKPOINT_FORMAT);
    out.extend_from_slice(checkpoint);
    out
}

pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Option<Vec<u8>> {
    match bytes.split_first() {
        Some((&CHECKPOINT_FORMAT, body)) => Some(body.to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_length_prefixed_and_validated() {
        assert_eq!(store_prefix("ab").unwrap(), vec![2, b'a', b'b']);
        assert!(store_prefix("").is_err());
        let long = "x".repeat(256);
        let err = store_prefix(&long).unwrap_err();
        assert_eq!(err.store, long);
        assert!(store_prefix(&"x".repeat(255)).is_ok());
        // No store key can collide with the checkpoint key.
        assert_ne!(store_prefix("a").unwrap()[0], CHECKPOINT_KEY[0]);
    }

    #[test]
    fn successor_carries_over_ff() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }

    #[test]
    fn empty_ranges() {
        use Bound::*;
        let (a, b): (&[u8], &[u8]) = (b"a", b"b");
        assert!(!range_is_empty(Included(a), Included(a)));
        assert!(range_is_empty(Included(a), Excluded(a)));
        assert!(range_is_empty(Excluded(a), Included(a)));
        assert!(range_is_empty(Included(b), Included(a)));
        assert!(!range_is_empty(Excluded(a), Excluded(b)));
        assert!(!range_is_empty(Unbounded, Excluded(a)));
    }

    #[test]
    fn checkpoint_round_trip_and_corruption() {
        let cp = b"any bytes".to_vec();
        assert_eq!(decode_checkpoint(&encode_checkpoint(&cp)), Some(cp));
        assert_eq!(decode_checkpoint(&[]), None);
        assert_eq!(decode_checkpoint(&[9, 0, 0, 0, 0]), None, "unknown format");
    }
}
