//! Protocol selection and member ids: the two small decisions the
//! coordinator makes on the clients' behalf.
//!
//! Kafka's classic protocol leaves the assignment to the group leader, but the
//! broker picks *which* assignor (protocol name) the generation uses, so that
//! every member can decode the leader's assignment. It also mints member ids
//! (KIP-394: the broker, not the client, names a member).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// One member's supported protocols, most preferred first, as sent in JoinGroup.
pub(crate) type Protocols = Vec<(String, Bytes)>;

/// The protocols every member supports, in the order `first` lists them.
///
/// A protocol can only be chosen if all members can run it; `first` fixes the
/// order so that ties in [`select_protocol`] are broken deterministically.
pub(crate) fn common_protocols<'a>(first: &'a Protocols, all: &[&'a Protocols]) -> Vec<&'a str> {
    first
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| all.iter().all(|p| p.iter().any(|(n, _)| n == name)))
        .collect()
}

/// Chooses the generation's protocol as Kafka does: among the protocols all
/// members support, each member votes for the first one in its own preference
/// list, and the most voted wins. Ties go to the protocol listed first by the
/// earliest member (Kafka breaks them arbitrarily). `None` when no protocol is
/// common, which JoinGroup validation prevents.
pub(crate) fn select_protocol(members: &[&Protocols]) -> Option<String> {
    let first = members.first()?;
    let candidates = common_protocols(first, members);
    if candidates.is_empty() {
        return None;
    }
    let mut votes = vec![0usize; candidates.len()];
    for member in members {
        if let Some(pos) = member
            .iter()
            .find_map(|(name, _)| candidates.iter().position(|c| c == name))
        {
            votes[pos] += 1;
        }
    }
    // max_by_key returns the last maximum; iterate in reverse so the first wins.
    let best = (0..candidates.len()).rev().max_by_key(|&i| votes[i])?;
    Some(candidates[best].to_string())
}

/// Whether a joining member's protocols are compatible with the current
/// members': some protocol must be supported by everyone, the joiner included.
/// With no members yet, any non-empty list is acceptable.
pub(crate) fn supports(members: &[&Protocols], joining: &Protocols) -> bool {
    if joining.is_empty() {
        return false;
    }
    let Some(first) = members.first() else {
        return true;
    };
    common_protocols(first, members)
        .iter()
        .any(|c| joining.iter().any(|(n, _)| n == c))
}

/// Mints member ids `"{client_id}-{uuid-like}"`, the shape Kafka uses, so that
/// operators can tell which client a member is from its id. Randomness comes
/// from std's per-process random hasher keys: ids must not repeat across broker
/// restarts (an old client could otherwise impersonate a new member), but need
/// not be cryptographic.
pub(crate) fn new_member_id(client_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let word = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        h.finish()
    };
    let (a, b) = (word(1), word(2));
    format!(
        "{client_id}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(names: &[&str]) -> Protocols {
        names.iter().map(|n| (n.to_string(), Bytes::new())).collect()
    }

    #[test]
    fn selects_most_voted_common_protocol() {
        let a = p(&["range", "roundrobin", "sticky"]);
        let b = p(&["sticky", "roundrobin"]);
        let c = p(&["roundrobin", "sticky"]);
        // Common: roundrobin, sticky. Votes: a->roundrobin, b->sticky, c->roundrobin.
        assert_eq!(select_protocol(&[&a, &b, &c]).as_deref(), Some("roundrobin"));
    }

    #[test]
    fn tie_goes_to_first_members_preference() {
        let a = p(&["range", "sticky"]);
        let b = p(&["sticky", "range"]);
        assert_eq!(select_protocol(&[&a, &b]).as_deref(), Some("range"));
        assert_eq!(select_protocol(&[&b, &a]).as_deref(), Some("sticky"));
    }

    #[test]
    fn no_common_protocol() {
        let a = p(&["range"]);
        let b = p(&["sticky"]);
        assert_eq!(select_protocol(&[&a, &b]), None);
        assert!(!supports(&[&a], &b));
        assert!(supports(&[&a], &p(&["sticky", "range"])));
        assert!(supports(&[], &b));
        assert!(!supports(&[], &p(&[])));
    }

    #[test]
    fn member_ids_are_unique_and_prefixed() {
        let a = new_member_id("client");
        let b = new_member_id("client");
        assert_ne!(a, b);
        assert!(a.starts_with("client-"));
        assert_eq!(a.len(), "client-".len() + 36);
    }
}
