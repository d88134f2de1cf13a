//! Coordinator tests through the public API, with kafka-protocol's request
//! structs. Timing tests run on tokio's paused clock: `advance` and the
//! runtime's auto-advance (when every task waits on a timer) move time, so no
//! test sleeps for real.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::time::Instant;

use super::*;

const NONE: i16 = 0;

fn err(e: ResponseError) -> i16 {
    e.code()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Every response must encode at the version it answers.
fn encodes<T: Encodable>(resp: &T, version: i16) {
    let mut buf = BytesMut::new();
    resp.encode(&mut buf, version).expect("response encodes at its version");
}

fn coordinator(dir: &std::path::Path) -> GroupCoordinator {
    GroupCoordinator::open(dir, GroupConfig::default()).unwrap()
}

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn join_req(group: &str, member: &str, protocols: &[(&str, &'static [u8])]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(REBALANCE_MS)
        .with_protocol_type(s("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|(n, m)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(n))
                        .with_metadata(Bytes::from_static(m))
                })
                .collect(),
        )
}

const RANGE: &[(&str, &[u8])] = &[("range", b"meta")];

/// KIP-394 handshake then the real join; waits for the rebalance.
async fn join(c: &GroupCoordinator, group: &str, client: &str, metadata: &'static [u8]) -> JoinGroupResponse {
    let first = c
        .join_group(join_req(group, "", &[("range", metadata)]), 5, client, "/127.0.0.1")
        .await;
    assert_eq!(first.error_code, err(ResponseError::MemberIdRequired));
    let id = first.member_id.to_string();
    rejoin(c, group, &id, metadata).await
}

async fn rejoin(c: &GroupCoordinator, group: &str, id: &str, metadata: &'static [u8]) -> JoinGroupResponse {
    let resp = c
        .join_group(join_req(group, id, &[("range", metadata)]), 5, "client", "/127.0.0.1")
        .await;
    encodes(&resp, 5);
    resp
}

fn spawn_rejoin(
    c: &GroupCoordinator,
    group: &str,
    id: &str,
    metadata: &'static [u8],
) -> tokio::task::JoinHandle<JoinGroupResponse> {
    let (c, group, id) = (c.clone(), group.to_string(), id.to_string());
    tokio::spawn(async move { rejoin(&c, &group, &id, metadata).await })
}

fn sync_req(group: &str, member: &str, generation: i32, assignments: &[(&str, &'static [u8])]) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(generation)
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        )
}

async fn sync(
    c: &GroupCoordinator,
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupResponse {
    let resp = c.sync_group(sync_req(group, member, generation, assignments), 5).await;
    encodes(&resp, 5);
    resp
}

async fn heartbeat(c: &GroupCoordinator, group: &str, member: &str, generation: i32) -> i16 {
    let resp = c
        .heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_member_id(s(member))
                .with_generation_id(generation),
            4,
        )
        .await;
    encodes(&resp, 4);
    resp.error_code
}

fn commit_req(group: &str, member: &str, generation: i32, topic: &str, offsets: &[(i32, i64)]) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                            .with_committed_leader_epoch(2)
                            .with_committed_metadata(Some(s("md")))
                    })
                    .collect(),
            )])
}

/// Commits and returns each partition's error code.
async fn commit(
    c: &GroupCoordinator,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let resp = c
        .offset_commit(commit_req(group, member, generation, topic, offsets), 8)
        .await;
    encodes(&resp, 8);
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// OffsetFetch v7 for one topic: (partition, offset, error) per partition.
async fn fetch(
    c: &GroupCoordinator,
    group: &str,
    topic: &str,
    partitions: &[i32],
    require_stable: bool,
) -> Vec<(i32, i64, i16)> {
    let resp = c
        .offset_fetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(partitions.to_vec())]))
                .with_require_stable(require_stable),
            7,
        )
        .await;
    encodes(&resp, 7);
    assert_eq!(resp.error_code, NONE);
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset, p.error_code))
        })
        .collect()
}

async fn describe(c: &GroupCoordinator, group: &str) -> (String, Vec<String>) {
    let resp = c
        .describe_groups(DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]), 5)
        .await;
    encodes(&resp, 5);
    let g = &resp.groups[0];
    (
        g.group_state.to_string(),
        g.members.iter().map(|m| m.member_id.to_string()).collect(),
    )
}

/// Lets spawned tasks run until they park.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// One member joined, synced and Stable: (member id, generation).
async fn stable_single(c: &GroupCoordinator, group: &str) -> (String, i32) {
    let j = join(c, group, "a", b"A").await;
    let id = j.member_id.to_string();
    let sy = sync(c, group, &id, j.generation_id, &[(&id, b"assign-a")]).await;
    assert_eq!(sy.error_code, NONE);
    (id, j.generation_id)
}

/// Two members, A leader, both synced: (a, b, generation).
async fn stable_pair(c: &GroupCoordinator, group: &str) -> (String, String, i32) {
    let (a, _) = stable_single(c, group).await;
    let first = c.join_group(join_req(group, "", RANGE), 5, "b", "/127.0.0.2").await;
    let b = first.member_id.to_string();
    let jb = spawn_rejoin(c, group, &b, b"B");
    let ja = spawn_rejoin(c, group, &a, b"A");
    let (ja, jb) = (ja.await.unwrap(), jb.await.unwrap());
    let generation = ja.generation_id;
    assert_eq!(jb.generation_id, generation);
    let sb = {
        let c = c.clone();
        let (group, b) = (group.to_string(), b.clone());
        tokio::spawn(async move { sync(&c, &group, &b, generation, &[]).await })
    };
    settle().await;
    let sa = sync(c, group, &a, generation, &[(&a, b"assign-a"), (&b, b"assign-b")]).await;
    assert_eq!(sa.error_code, NONE);
    assert_eq!(sb.await.unwrap().error_code, NONE);
    (a, b, generation)
}

#[tokio::test]
async fn single_member_joins_leads_syncs_heartbeats_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let j = join(&c, "g", "a", b"meta-a").await;
    assert_eq!(j.error_code, NONE);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, j.member_id);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.members[0].metadata, Bytes::from_static(b"meta-a"));
    let id = j.member_id.to_string();
    assert!(id.starts_with("a-"));

    let sy = sync(&c, "g", &id, 1, &[(&id, b"assignment")]).await;
    assert_eq!(sy.error_code, NONE);
    assert_eq!(sy.assignment, Bytes::from_static(b"assignment"));
    assert_eq!(sy.protocol_name.as_deref(), Some("range"));
    assert_eq!(heartbeat(&c, "g", &id, 1).await, NONE);

    assert_eq!(commit(&c, "g", &id, 1, "t", &[(0, 42), (1, 7)]).await, vec![NONE, NONE]);
    assert_eq!(
        fetch(&c, "g", "t", &[0, 1, 2], false).await,
        vec![(0, 42, NONE), (1, 7, NONE), (2, -1, NONE)]
    );

    // v8+: the groups array; null topics = everything committed.
    let resp = c
        .offset_fetch(
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(None),
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("other")))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0])])),
            ]),
            8,
        )
        .await;
    encodes(&resp, 8);
    let g = &resp.groups[0];
    assert_eq!(g.topics.len(), 1);
    let parts: Vec<(i32, i64, i32, String)> = g.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                p.committed_offset,
                p.committed_leader_epoch,
                p.metadata.as_deref().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(parts, vec![(0, 42, 2, "md".to_string()), (1, 7, 2, "md".to_string())]);
    assert_eq!(resp.groups[1].topics[0].partitions[0].committed_offset, -1);

    // Older versions encode too.
    for v in [2, 3, 5, 6] {
        let r = c
            .offset_fetch(
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(None),
                v,
            )
            .await;
        encodes(&r, v);
        assert_eq!(r.topics[0].partitions.len(), 2);
    }
}

#[tokio::test]
async fn member_id_required_from_v4_only() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let first = c.join_group(join_req("g", "", RANGE), 4, "cli", "h").await;
    encodes(&first, 4);
    assert_eq!(first.error_code, err(ResponseError::MemberIdRequired));
    assert_eq!(first.generation_id, -1);
    assert!(first.member_id.starts_with("cli-"));
    assert_eq!(describe(&c, "g").await, ("Empty".to_string(), vec![]));

    // v3 clients join directly.
    let old = c.join_group(join_req("g3", "", RANGE), 3, "cli", "h").await;
    encodes(&old, 3);
    assert_eq!(old.error_code, NONE);
    assert_eq!(old.generation_id, 1);
    assert_eq!(old.leader, old.member_id);

    // A made-up member id is unknown.
    let bogus = c.join_group(join_req("g", "nobody", RANGE), 5, "cli", "h").await;
    assert_eq!(bogus.error_code, err(ResponseError::UnknownMemberId));
    // Bad session timeouts and protocols are refused.
    let short = c
        .join_group(join_req("g", "", RANGE).with_session_timeout_ms(100), 5, "cli", "h")
        .await;
    assert_eq!(short.error_code, err(ResponseError::InvalidSessionTimeout));
    let none = c.join_group(join_req("g", "", &[]), 5, "cli", "h").await;
    assert_eq!(none.error_code, err(ResponseError::InconsistentGroupProtocol));
    let empty_group = c.join_group(join_req("", "", RANGE), 5, "cli", "h").await;
    assert_eq!(empty_group.error_code, err(ResponseError::InvalidGroupId));
}

#[tokio::test]
async fn second_member_triggers_rebalance_and_gets_leaders_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let (a, gen1) = stable_single(&c, "g").await;
    assert_eq!(gen1, 1);

    let first = c.join_group(join_req("g", "", RANGE), 5, "b", "h").await;
    let b = first.member_id.to_string();
    let jb = spawn_rejoin(&c, "g", &b, b"B");
    settle().await;
    assert!(!jb.is_finished(), "B waits for A to rejoin");
    assert_eq!(describe(&c, "g").await.0, "PreparingRebalance");
    assert_eq!(heartbeat(&c, "g", &a, 1).await, err(ResponseError::RebalanceInProgress));

    let ja = rejoin(&c, "g", &a, b"A").await;
    let jb = jb.await.unwrap();
    assert_eq!((ja.error_code, jb.error_code), (NONE, NONE));
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja.leader.as_str(), a);
    assert_eq!(jb.leader.as_str(), a);
    let mut seen: Vec<(String, Bytes)> = ja
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.metadata.clone()))
        .collect();
    seen.sort();
    let mut want = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    want.sort();
    assert_eq!(seen, want);
    assert!(jb.members.is_empty(), "only the leader gets the member list");
    assert_eq!(describe(&c, "g").await.0, "CompletingRebalance");

    // The follower's SyncGroup waits for the leader's.
    let sb = {
        let (c, b) = (c.clone(), b.clone());
        tokio::spawn(async move { sync(&c, "g", &b, 2, &[]).await })
    };
    settle().await;
    assert!(!sb.is_finished());
    let sa = sync(&c, "g", &a, 2, &[(&a, b"for-a"), (&b, b"for-b")]).await;
    assert_eq!(sa.assignment, Bytes::from_static(b"for-a"));
    let sb = sb.await.unwrap();
    assert_eq!(sb.error_code, NONE);
    assert_eq!(sb.assignment, Bytes::from_static(b"for-b"));
    assert_eq!(heartbeat(&c, "g", &b, 2).await, NONE);
    assert_eq!(heartbeat(&c, "g", &a, 1).await, err(ResponseError::IllegalGeneration));
    assert_eq!(describe(&c, "g").await.0, "Stable");
}

#[tokio::test(start_paused = true)]
async fn session_expiry_removes_a_silent_member() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    c.spawn_expiry();
    let (a, b, generation) = stable_pair(&c, "g").await;

    // A heartbeats, B stays silent past its 10 s session.
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(4)).await;
        settle().await;
        let hb = heartbeat(&c, "g", &a, generation).await;
        if hb != NONE {
            assert_eq!(hb, err(ResponseError::RebalanceInProgress));
            break;
        }
    }
    let (state, members) = describe(&c, "g").await;
    assert_eq!(state, "PreparingRebalance");
    assert_eq!(members, vec![a.clone()]);
    assert_eq!(
        heartbeat(&c, "g", &b, generation).await,
        err(ResponseError::UnknownMemberId)
    );

    let ja = rejoin(&c, "g", &a, b"A").await;
    assert_eq!(ja.generation_id, generation + 1);
    assert_eq!(ja.members.len(), 1);
    assert_eq!(ja.leader.as_str(), a);
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn rebalance_timeout_removes_member_that_did_not_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let (a, b, generation) = stable_pair(&c, "g").await;
    // B keeps heartbeating (answered REBALANCE_IN_PROGRESS) but never rejoins,
    // so only the rebalance timeout (30 s) can end A's wait.
    let beats = {
        let (c, b) = (c.clone(), b.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                answers.push(heartbeat(&c, "g", &b, generation).await);
            }
            answers
        })
    };
    let start = Instant::now();
    let ja = c
        .join_group(
            join_req("g", &a, &[("range", b"A")]).with_session_timeout_ms(60_000),
            5,
            "a",
            "h",
        )
        .await;
    assert_eq!(ja.error_code, NONE);
    assert_eq!(start.elapsed(), Duration::from_millis(REBALANCE_MS as u64));
    assert_eq!(ja.generation_id, generation + 1);
    let ids: Vec<String> = ja.members.iter().map(|m| m.member_id.to_string()).collect();
    assert_eq!(ids, vec![a.clone()]);
    let answers = beats.await.unwrap();
    let rebalancing = err(ResponseError::RebalanceInProgress);
    // Heartbeats at 3..27 s see the rebalance; from 30 s on B is gone.
    assert_eq!(answers[..9], [rebalancing; 9]);
    assert_eq!(answers[10..], [err(ResponseError::UnknownMemberId); 2]);
}

#[tokio::test(start_paused = true)]
async fn unused_member_id_expires_after_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let (a, generation) = stable_single(&c, "g").await;
    // A second client gets a member id but never comes back with it.
    let pending = c.join_group(join_req("g", "", RANGE), 5, "b", "h").await;
    assert_eq!(pending.error_code, err(ResponseError::MemberIdRequired));
    // The leader's rejoin starts a rebalance that waits for the pending id...
    let start = Instant::now();
    let ja = c
        .join_group(
            join_req("g", &a, &[("range", b"A")]).with_session_timeout_ms(60_000),
            5,
            "a",
            "h",
        )
        .await;
    // ...until it expires after its session timeout, before the rebalance timeout.
    assert_eq!(start.elapsed(), Duration::from_millis(SESSION_MS as u64));
    assert_eq!(ja.generation_id, generation + 1);
    assert_eq!(ja.members.len(), 1);
    let late = rejoin(&c, "g", &pending.member_id, b"B");
    let late = tokio::time::timeout(Duration::from_secs(1), late).await;
    // The expired id is unknown now.
    assert_eq!(late.unwrap().error_code, err(ResponseError::UnknownMemberId));
}

#[tokio::test(start_paused = true)]
async fn initial_rebalance_delay_gathers_members() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        initial_rebalance_delay: Duration::from_secs(3),
        ..GroupConfig::default()
    };
    let c = GroupCoordinator::open(dir.path(), config).unwrap();
    let start = Instant::now();
    let a = c.join_group(join_req("g", "", RANGE), 3, "a", "h");
    let c2 = c.clone();
    let b = async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c2.join_group(join_req("g", "", RANGE), 3, "b", "h").await
    };
    let (a, b) = tokio::join!(a, b);
    // B arrived 1 s in and extended the 3 s window to 4 s.
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!((a.generation_id, b.generation_id), (1, 1));
    assert_eq!(a.members.len() + b.members.len(), 2);
}

#[tokio::test]
async fn leave_group_triggers_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let (a, b, generation) = stable_pair(&c, "g").await;
    let resp = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(s(&b)),
                    MemberIdentity::default().with_member_id(s("ghost")),
                ]),
            3,
        )
        .await;
    encodes(&resp, 3);
    assert_eq!(resp.error_code, NONE);
    let codes: Vec<i16> = resp.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![NONE, err(ResponseError::UnknownMemberId)]);
    assert_eq!(
        heartbeat(&c, "g", &a, generation).await,
        err(ResponseError::RebalanceInProgress)
    );
    let ja = rejoin(&c, "g", &a, b"A").await;
    assert_eq!(ja.generation_id, generation + 1);
    assert_eq!(ja.members.len(), 1);

    // v0: one member, its error at the top level; the last one leaving empties the group.
    let v0 = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s(&a)),
            0,
        )
        .await;
    encodes(&v0, 0);
    assert_eq!(v0.error_code, NONE);
    assert_eq!(describe(&c, "g").await, ("Empty".to_string(), vec![]));
    let again = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s(&a)),
            1,
        )
        .await;
    assert_eq!(again.error_code, err(ResponseError::UnknownMemberId));
}

#[tokio::test]
async fn leader_leaving_hands_leadership_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let (a, b, generation) = stable_pair(&c, "g").await;
    c.leave_group(
        LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(&a)),
        2,
    )
    .await;
    let jb = rejoin(&c, "g", &b, b"B").await;
    assert_eq!(jb.generation_id, generation + 1);
    assert_eq!(jb.leader.as_str(), b);
    assert_eq!(jb.members.len(), 1);
}

#[tokio::test]
async fn static_member_rejoin_keeps_generation_and_fences_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let static_join =
        |member: &str| join_req("g", member, &[("range", b"S")]).with_group_instance_id(Some(s("instance-1")));
    // Static members need no KIP-394 round trip.
    let j1 = c.join_group(static_join(""), 5, "s", "h").await;
    assert_eq!(j1.error_code, NONE);
    let old = j1.member_id.to_string();
    assert_eq!(j1.members[0].group_instance_id.as_deref(), Some("instance-1"));
    assert_eq!(sync(&c, "g", &old, 1, &[(&old, b"parts")]).await.error_code, NONE);

    // Restarted client: same instance id, no member id.
    let j2 = c.join_group(static_join(""), 5, "s", "h").await;
    encodes(&j2, 5);
    assert_eq!(j2.error_code, NONE);
    let new = j2.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(j2.generation_id, 1, "no rebalance");
    // Before v9 the old leader id is returned so the member does not reassign.
    assert_eq!(j2.leader.as_str(), old);
    assert_eq!(describe(&c, "g").await, ("Stable".to_string(), vec![new.clone()]));

    let hb_old = c
        .heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s(&old))
                .with_generation_id(1)
                .with_group_instance_id(Some(s("instance-1"))),
            4,
        )
        .await;
    assert_eq!(hb_old.error_code, err(ResponseError::FencedInstanceId));
    assert_eq!(heartbeat(&c, "g", &new, 1).await, NONE);
    let sy = c
        .sync_group(
            sync_req("g", &new, 1, &[]).with_group_instance_id(Some(s("instance-1"))),
            5,
        )
        .await;
    assert_eq!(sy.error_code, NONE);
    assert_eq!(sy.assignment, Bytes::from_static(b"parts"), "keeps its assignment");

    // v9: the leader is told it leads but skips the assignment.
    let j3 = c.join_group(static_join(""), 9, "s", "h").await;
    encodes(&j3, 9);
    assert!(j3.skip_assignment);
    assert_eq!(j3.leader, j3.member_id);
    assert_eq!(j3.generation_id, 1);

    // Leaving by instance id alone (KIP-345 batch leave).
    let leave = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_members(vec![MemberIdentity::default()
                    .with_member_id(s(""))
                    .with_group_instance_id(Some(s("instance-1")))]),
            4,
        )
        .await;
    assert_eq!(leave.members[0].error_code, NONE);
    assert_eq!(describe(&c, "g").await.0, "Empty");
}

#[tokio::test]
async fn offsets_survive_reopen_and_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = coordinator(dir.path());
        assert_eq!(
            commit(&c, "g", "", -1, "t", &[(0, 100), (3, 300)]).await,
            vec![NONE, NONE]
        );
        assert_eq!(commit(&c, "g", "", -1, "t", &[(0, 101)]).await, vec![NONE]);
    }
    // A crash in the middle of appending a record.
    let path = dir.path().join("offsets.log");
    let mut data = std::fs::read(&path).unwrap();
    data.extend_from_slice(&[0, 0, 0, 60, 1, 2, 3, 4, 1, 0]);
    std::fs::write(&path, &data).unwrap();

    let c = coordinator(dir.path());
    assert_eq!(
        fetch(&c, "g", "t", &[0, 3], false).await,
        vec![(0, 101, NONE), (3, 300, NONE)]
    );
    let list = c.list_groups(ListGroupsRequest::default(), 4).await;
    encodes(&list, 4);
    assert_eq!(list.groups.len(), 1);
    assert_eq!(list.groups[0].group_state.as_str(), "Empty");
    // Commits after recovery persist as well.
    assert_eq!(commit(&c, "g", "", -1, "t", &[(0, 102)]).await, vec![NONE]);
    drop(c);
    let c = coordinator(dir.path());
    assert_eq!(fetch(&c, "g", "t", &[0], false).await, vec![(0, 102, NONE)]);
}

#[tokio::test]
async fn commit_checks_generation_and_member() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let (a, generation) = stable_single(&c, "g").await;
    let illegal = err(ResponseError::IllegalGeneration);
    let unknown = err(ResponseError::UnknownMemberId);
    assert_eq!(commit(&c, "g", &a, generation - 1, "t", &[(0, 1)]).await, vec![illegal]);
    assert_eq!(
        commit(&c, "g", "stranger", generation, "t", &[(0, 1)]).await,
        vec![unknown]
    );
    // A standalone commit is refused while the group has members.
    assert_eq!(commit(&c, "g", "", -1, "t", &[(0, 1)]).await, vec![unknown]);
    assert_eq!(fetch(&c, "g", "t", &[0], false).await, vec![(0, -1, NONE)]);
    // An unknown group with a real generation is from an old generation.
    assert_eq!(commit(&c, "gone", "m", 3, "t", &[(0, 1)]).await, vec![illegal]);
    assert_eq!(commit(&c, "g", &a, generation, "t", &[(0, 5)]).await, vec![NONE]);

    // Metadata over 4 KiB is refused per partition.
    let mut big = commit_req("g", &a, generation, "t", &[(1, 9)]);
    big.topics[0].partitions[0].committed_metadata = Some(s(&"x".repeat(5000)));
    let resp = c.offset_commit(big, 8).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        err(ResponseError::OffsetMetadataTooLarge)
    );

    // During CompletingRebalance members must finish the rebalance first.
    let first = c.join_group(join_req("g", "", RANGE), 5, "b", "h").await;
    let jb = spawn_rejoin(&c, "g", &first.member_id, b"B");
    let ja = rejoin(&c, "g", &a, b"A").await;
    jb.await.unwrap();
    assert_eq!(
        commit(&c, "g", &a, ja.generation_id, "t", &[(0, 6)]).await,
        vec![err(ResponseError::RebalanceInProgress)]
    );
}

fn txn_req(producer: i64, group: &str, topic: &str, offsets: &[(i32, i64)]) -> TxnOffsetCommitRequest {
    TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s(group)))
        .with_producer_id(ProducerId(producer))
        .with_producer_epoch(0)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                    })
                    .collect(),
            )])
}

#[tokio::test]
async fn transactional_offsets_wait_for_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    assert_eq!(commit(&c, "g", "", -1, "t", &[(0, 10)]).await, vec![NONE]);

    let resp = c.txn_offset_commit(txn_req(7, "g", "t", &[(0, 20), (1, 21)]), 3).await;
    encodes(&resp, 3);
    assert!(resp.topics[0].partitions.iter().all(|p| p.error_code == NONE));
    // Invisible until committed; require_stable reports them unstable.
    assert_eq!(
        fetch(&c, "g", "t", &[0, 1], false).await,
        vec![(0, 10, NONE), (1, -1, NONE)]
    );
    let unstable = err(ResponseError::UnstableOffsetCommit);
    assert_eq!(
        fetch(&c, "g", "t", &[0, 1], true).await,
        vec![(0, -1, unstable), (1, -1, unstable)]
    );

    c.complete_txn(7, &["g".to_string()], true).await;
    assert_eq!(
        fetch(&c, "g", "t", &[0, 1], true).await,
        vec![(0, 20, NONE), (1, 21, NONE)]
    );

    // Aborted: dropped.
    c.txn_offset_commit(txn_req(8, "g", "t", &[(0, 99)]), 0).await;
    c.complete_txn(8, &["g".to_string()], false).await;
    assert_eq!(fetch(&c, "g", "t", &[0], true).await, vec![(0, 20, NONE)]);

    // Committed transactional offsets are persisted like any other.
    drop(c);
    let c = coordinator(dir.path());
    assert_eq!(
        fetch(&c, "g", "t", &[0, 1], false).await,
        vec![(0, 20, NONE), (1, 21, NONE)]
    );
}

#[tokio::test]
async fn describe_and_list_show_states_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let (a, _) = stable_single(&c, "busy").await;
    commit(&c, "idle", "", -1, "t", &[(0, 1)]).await;

    let resp = c
        .describe_groups(
            DescribeGroupsRequest::default().with_groups(vec![
                GroupId(s("busy")),
                GroupId(s("idle")),
                GroupId(s("nope")),
            ]),
            5,
        )
        .await;
    encodes(&resp, 5);
    let busy = &resp.groups[0];
    assert_eq!(busy.group_state.as_str(), "Stable");
    assert_eq!(busy.protocol_type.as_str(), "consumer");
    assert_eq!(busy.protocol_data.as_str(), "range");
    assert_eq!(busy.members.len(), 1);
    assert_eq!(busy.members[0].member_id.as_str(), a);
    assert_eq!(busy.members[0].client_id.as_str(), "client");
    assert_eq!(busy.members[0].member_metadata, Bytes::from_static(b"A"));
    assert_eq!(busy.members[0].member_assignment, Bytes::from_static(b"assign-a"));
    assert_eq!(resp.groups[1].group_state.as_str(), "Empty");
    assert_eq!(resp.groups[2].group_state.as_str(), "Dead");
    assert_eq!(resp.groups[2].error_code, NONE);
    let v6 = c
        .describe_groups(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s("nope"))]),
            6,
        )
        .await;
    encodes(&v6, 6);
    assert_eq!(v6.groups[0].error_code, err(ResponseError::GroupIdNotFound));

    for v in [0, 3, 4, 5] {
        let list = c.list_groups(ListGroupsRequest::default(), v).await;
        encodes(&list, v);
        let ids: Vec<&str> = list.groups.iter().map(|g| g.group_id.0.as_str()).collect();
        assert_eq!(ids, vec!["busy", "idle"]);
    }
    let stable_only = c
        .list_groups(ListGroupsRequest::default().with_states_filter(vec![s("stable")]), 4)
        .await;
    let ids: Vec<&str> = stable_only.groups.iter().map(|g| g.group_id.0.as_str()).collect();
    assert_eq!(ids, vec!["busy"]);
    assert_eq!(stable_only.groups[0].protocol_type.as_str(), "consumer");
}

#[tokio::test]
async fn delete_group_only_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let (a, generation) = stable_single(&c, "g").await;
    commit(&c, "g", &a, generation, "t", &[(0, 5)]).await;
    let del = |name: &str| DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(name))]);

    let r = c.delete_groups(del("g"), 2).await;
    encodes(&r, 2);
    assert_eq!(r.results[0].error_code, err(ResponseError::NonEmptyGroup));
    c.leave_group(
        LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(&a)),
        2,
    )
    .await;
    assert_eq!(c.delete_groups(del("g"), 2).await.results[0].error_code, NONE);
    assert_eq!(fetch(&c, "g", "t", &[0], false).await, vec![(0, -1, NONE)]);
    assert_eq!(
        c.delete_groups(del("g"), 2).await.results[0].error_code,
        err(ResponseError::GroupIdNotFound)
    );
    // The deletion is durable.
    drop(c);
    let c = coordinator(dir.path());
    assert_eq!(fetch(&c, "g", "t", &[0], false).await, vec![(0, -1, NONE)]);
    assert!(c.list_groups(ListGroupsRequest::default(), 4).await.groups.is_empty());
}

#[tokio::test]
async fn removed_topic_loses_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    commit(&c, "g", "", -1, "gone", &[(0, 5)]).await;
    commit(&c, "g", "", -1, "kept", &[(0, 6)]).await;
    c.remove_topic("gone").await;
    assert_eq!(fetch(&c, "g", "gone", &[0], false).await, vec![(0, -1, NONE)]);
    drop(c);
    let c = coordinator(dir.path());
    assert_eq!(fetch(&c, "g", "gone", &[0], false).await, vec![(0, -1, NONE)]);
    assert_eq!(fetch(&c, "g", "kept", &[0], false).await, vec![(0, 6, NONE)]);
}

#[tokio::test]
async fn sync_and_heartbeat_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    assert_eq!(heartbeat(&c, "nope", "m", 1).await, err(ResponseError::UnknownMemberId));
    let (a, generation) = stable_single(&c, "g").await;
    assert_eq!(
        sync(&c, "g", &a, generation + 1, &[]).await.error_code,
        err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        sync(&c, "g", "x", generation, &[]).await.error_code,
        err(ResponseError::UnknownMemberId)
    );
    // Protocols with nothing in common with the group's are refused.
    let other = c.join_group(join_req("g", "", &[("sticky", b"")]), 5, "b", "h").await;
    assert_eq!(other.error_code, err(ResponseError::InconsistentGroupProtocol));
    // Response encodings of old versions.
    let r = c.sync_group(sync_req("g", &a, generation, &[]), 0).await;
    encodes(&r, 0);
    let j = c.join_group(join_req("g", &a, &[("range", b"A")]), 0, "a", "h").await;
    encodes(&j, 0);
}
