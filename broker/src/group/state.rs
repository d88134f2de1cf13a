//! One consumer group's membership state machine (Kafka's classic protocol).
//!
//! ```text
//!            join                     all joined / rebalance timeout
//!   Empty ──────────▶ PreparingRebalance ─────────────────▶ CompletingRebalance
//!     ▲                  ▲         ▲                             │ leader's SyncGroup
//!     │ last member      │ member  │ join/leave/expiry           ▼
//!     └── leaves ────────┘ leaves  └──────────────────────── Stable
//! ```
//!
//! `Dead` exists for DescribeGroups' answer about unknown groups; a deleted
//! group is removed from the coordinator rather than kept as `Dead`.
//!
//! Long-polling requests (JoinGroup while a rebalance is in progress, a
//! follower's SyncGroup until the leader's assignment arrives) are parked as
//! oneshot senders on the member; the transitions below answer them. All
//! timing is passed in as `now` (tokio's clock), so the timers are plain
//! deadlines checked by [`Group::tick`]: session expiry, the rebalance timeout,
//! the initial rebalance delay, pending-member expiry and pending-sync expiry.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::protocol::{self, Protocols};
use super::GroupConfig;

/// How long a brand-new member may wait in a rebalance before it is dropped
/// (Kafka's `NewMemberJoinTimeoutMs`): it has no member id yet to heartbeat
/// with, and a client that disconnected would otherwise hold the rebalance.
pub(crate) const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) const NONE: i16 = 0;

pub(crate) fn code(e: ResponseError) -> i16 {
    e.code()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's tools print (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Clone, Debug)]
pub(crate) struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to one JoinGroup, independent of the API version.
#[derive(Clone, Debug)]
pub(crate) struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// Every member with its metadata; only the leader gets it.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(member_id: &str, error: i16) -> JoinResult {
        JoinResult {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// The answer to one SyncGroup.
#[derive(Clone, Debug)]
pub(crate) struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: i16) -> SyncResult {
        SyncResult {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Protocols,
    pub assignment: Bytes,
    /// Join order: the leader is the earliest member, and listings follow it.
    pub seq: u64,
    pub heartbeat_deadline: Instant,
    /// Not yet part of a completed generation.
    pub is_new: bool,
    /// Set while the member's JoinGroup is parked (it has "rejoined").
    pub join_waiter: Option<oneshot::Sender<JoinResult>>,
    /// Set while the member's SyncGroup waits for the leader's assignment.
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub fn awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }

    /// The metadata the member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Session expiry applies unless the member is parked in a rebalance,
    /// where it cannot heartbeat (new members excepted: see
    /// [`NEW_MEMBER_JOIN_TIMEOUT`]).
    fn expirable(&self) -> bool {
        self.is_new || (self.join_waiter.is_none() && self.sync_waiter.is_none())
    }

    fn answer_join(&mut self, result: JoinResult) {
        if let Some(tx) = self.join_waiter.take() {
            let _ = tx.send(result);
        }
    }

    fn answer_sync(&mut self, result: SyncResult) {
        if let Some(tx) = self.sync_waiter.take() {
            let _ = tx.send(result);
        }
    }
}

pub(crate) struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: HashMap<String, Member>,
    /// group.instance.id -> member id (KIP-345).
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), with their
    /// expiry: the rebalance waits for them as for members.
    pub pending_members: HashMap<String, Instant>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pub pending_sync: HashSet<String>,
    join_deadline: Option<Instant>,
    delay_until: Option<Instant>,
    delay_limit: Option<Instant>,
    sync_deadline: Option<Instant>,
    next_seq: u64,
}

impl Group {
    pub fn new(id: String) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: HashMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            pending_sync: HashSet::new(),
            join_deadline: None,
            delay_until: None,
            delay_limit: None,
            sync_deadline: None,
            next_seq: 0,
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Members in join order.
    pub fn ordered(&self) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_by_key(|m| m.seq);
        v
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    /// A static member whose instance id is now held by another member id.
    pub fn is_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|current| current != member_id)
    }

    /// The longest rebalance timeout of the members: the rebalance waits that
    /// long for everyone to rejoin.
    pub fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    pub fn supports(&self, protocol_type: &str, protocols: &Protocols) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        let all: Vec<&Protocols> = self.ordered().into_iter().map(|m| &m.protocols).collect();
        self.protocol_type.as_deref() == Some(protocol_type) && protocol::supports(&all, protocols)
    }

    /// The protocol the next generation would use.
    pub fn select_protocol(&self) -> Option<String> {
        let all: Vec<&Protocols> = self.ordered().into_iter().map(|m| &m.protocols).collect();
        protocol::select_protocol(&all)
    }

    /// The leader's view of the members, with metadata for `protocol`.
    pub fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.ordered()
            .into_iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata(&protocol),
            })
            .collect()
    }

    /// The current generation's JoinGroup answer for `member_id`.
    pub fn join_result(&self, member_id: &str, leader: String, with_members: bool) -> JoinResult {
        JoinResult {
            error: NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: if with_members {
                self.joined_members()
            } else {
                Vec::new()
            },
        }
    }

    pub fn sync_result(&self, error: i16, assignment: Bytes) -> SyncResult {
        SyncResult {
            error,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    /// Adds a new member (the caller has checked protocol compatibility).
    pub fn add_member(&mut self, member: Member, now: Instant, config: &GroupConfig) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        if let Some(instance) = &member.instance_id {
            self.static_members.insert(instance.clone(), member.id.clone());
        }
        // New members arriving during the initial delay extend it (up to the
        // rebalance timeout), so a burst of starting consumers forms one generation.
        if self.state == GroupState::PreparingRebalance {
            if let (Some(_), Some(limit)) = (self.delay_until, self.delay_limit) {
                self.delay_until = Some((now + config.initial_rebalance_delay).min(limit));
            }
        }
        self.pending_members.remove(&member.id);
        self.members.insert(member.id.clone(), member);
    }

    /// Hands a static member's instance to a new member id, fencing the old
    /// one: its parked requests are answered FENCED_INSTANCE_ID.
    pub fn replace_static_member(&mut self, instance_id: &str, old_id: &str, new_id: &str) {
        let Some(mut member) = self.members.remove(old_id) else {
            return;
        };
        let fenced = code(ResponseError::FencedInstanceId);
        member.answer_join(JoinResult::error(old_id, fenced));
        member.answer_sync(SyncResult::error(fenced));
        member.id = new_id.to_string();
        if self.is_leader(old_id) {
            self.leader = Some(new_id.to_string());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.to_string());
        }
        self.static_members.insert(instance_id.to_string(), new_id.to_string());
        self.members.insert(new_id.to_string(), member);
    }

    pub fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        )
    }

    pub fn maybe_prepare_rebalance(&mut self, now: Instant, config: &GroupConfig) {
        if self.can_rebalance() {
            self.prepare_rebalance(now, config);
        }
    }

    /// Starts a rebalance: everyone must rejoin within the rebalance timeout.
    pub fn prepare_rebalance(&mut self, now: Instant, config: &GroupConfig) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for the leader's assignment must rejoin instead.
            let error = code(ResponseError::RebalanceInProgress);
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                m.answer_sync(SyncResult::error(error));
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let timeout = self.rebalance_timeout();
        let delay = config.initial_rebalance_delay;
        if self.state == GroupState::Empty && !delay.is_zero() {
            // group.initial.rebalance.delay.ms: only for a group starting from empty.
            let limit = now + timeout.max(delay);
            self.delay_until = Some(now + delay);
            self.delay_limit = Some(limit);
            self.join_deadline = Some(limit);
        } else {
            self.delay_until = None;
            self.delay_limit = None;
            self.join_deadline = Some(now + timeout);
        }
        self.state = GroupState::PreparingRebalance;
        tracing::debug!(group = %self.id, generation = self.generation, "preparing rebalance");
        self.try_complete_join(now);
    }

    /// Every member has rejoined and no KIP-394 member id is outstanding.
    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(Member::awaiting_join)
    }

    /// Completes the join phase if it is due: all rejoined, or the rebalance
    /// timeout (or the initial delay) has passed.
    pub fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let due = match self.delay_until {
            Some(until) => now >= until,
            None => self.all_joined() || self.join_deadline.is_some_and(|d| now >= d),
        };
        if due {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Dynamic members that did not rejoin in time leave; static members
        // stay (they are expected back) until their session expires.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %self.id, member = %id, "removing member that did not rejoin in time");
            self.detach(&id);
        }
        let leader_joined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(Member::awaiting_join);
        if !leader_joined {
            let next = self
                .ordered()
                .into_iter()
                .find(|m| m.awaiting_join())
                .map(|m| m.id.clone());
            match next {
                Some(id) => self.leader = Some(id),
                None if !self.members.is_empty() => {
                    // Only absent static members remain: wait another round
                    // for them to return or for their sessions to expire.
                    self.delay_until = None;
                    self.join_deadline = Some(now + self.rebalance_timeout());
                    return;
                }
                None => self.leader = None,
            }
        }
        self.delay_until = None;
        self.delay_limit = None;
        self.join_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            tracing::debug!(group = %self.id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let all = self.joined_members();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let mut result = self.join_result(&id, leader.clone(), false);
            if id == leader {
                result.members = all.clone();
            }
            let m = self.members.get_mut(&id).expect("member listed above");
            m.answer_join(result);
            m.heartbeat_deadline = now + m.session_timeout;
            m.is_new = false;
            self.pending_sync.insert(id);
        }
        self.sync_deadline = Some(now + self.rebalance_timeout());
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = self.protocol_name.as_deref().unwrap_or(""),
            "rebalance complete"
        );
    }

    /// The leader's SyncGroup: store everyone's assignment, become Stable and
    /// answer the parked followers.
    pub fn complete_sync(&mut self, assignments: HashMap<String, Bytes>) {
        let mut assignments = assignments;
        for m in self.members.values_mut() {
            m.assignment = assignments.remove(&m.id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        let (ptype, pname) = (self.protocol_type.clone(), self.protocol_name.clone());
        for m in self.members.values_mut() {
            let result = SyncResult {
                error: NONE,
                protocol_type: ptype.clone(),
                protocol_name: pname.clone(),
                assignment: m.assignment.clone(),
            };
            m.answer_sync(result);
        }
    }

    pub fn synced(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline = None;
        }
    }

    /// Removes a member without any state transition; its parked requests
    /// are answered UNKNOWN_MEMBER_ID.
    fn detach(&mut self, member_id: &str) -> bool {
        self.pending_members.remove(member_id);
        self.pending_sync.remove(member_id);
        let Some(mut member) = self.members.remove(member_id) else {
            return false;
        };
        let unknown = code(ResponseError::UnknownMemberId);
        member.answer_join(JoinResult::error("", unknown));
        member.answer_sync(SyncResult::error(unknown));
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).is_some_and(|id| id == member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.is_leader(member_id) {
            self.leader = self.ordered().first().map(|m| m.id.clone());
        }
        true
    }

    /// A member leaves (LeaveGroup, session expiry): the others rebalance.
    pub fn remove_member(&mut self, member_id: &str, now: Instant, config: &GroupConfig) {
        if !self.detach(member_id) {
            return;
        }
        match self.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => self.maybe_prepare_rebalance(now, config),
            GroupState::PreparingRebalance => self.try_complete_join(now),
        }
    }

    /// A KIP-394 member id that will not be used (left or expired).
    pub fn remove_pending_member(&mut self, member_id: &str, now: Instant) -> bool {
        let removed = self.pending_members.remove(member_id).is_some();
        if removed {
            self.try_complete_join(now);
        }
        removed
    }

    /// Fires every timer that is due at `now`.
    pub fn tick(&mut self, now: Instant, config: &GroupConfig) {
        let stale: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, d)| now >= **d)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            tracing::debug!(group = %self.id, member = %id, "pending member id expired");
            self.remove_pending_member(&id, now);
        }

        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.expirable() && now >= m.heartbeat_deadline)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now, config);
        }

        self.try_complete_join(now);

        let sync_due = self.sync_deadline.is_some_and(|d| now >= d);
        if sync_due && matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable) {
            self.sync_deadline = None;
            let missing: Vec<String> = self.pending_sync.drain().collect();
            if !missing.is_empty() {
                for id in &missing {
                    tracing::info!(group = %self.id, member = %id, "member did not send SyncGroup in time");
                    self.detach(id);
                }
                self.prepare_rebalance(now, config);
            }
        }
    }

    /// The earliest instant at which [`Group::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let members = self
            .members
            .values()
            .filter(|m| m.expirable())
            .map(|m| m.heartbeat_deadline);
        let pending = self.pending_members.values().copied();
        let join = match self.state {
            GroupState::PreparingRebalance => self.delay_until.or(self.join_deadline),
            _ => None,
        };
        let sync = self.sync_deadline.filter(|_| !self.pending_sync.is_empty());
        members.chain(pending).chain(join).chain(sync).min()
    }

    /// Whether the validation of an OffsetCommit (or TxnOffsetCommit) passes,
    /// following Kafka's classic-group rules: generation -1 from a non-member
    /// (admin tools, standalone consumers) may commit only while the group is
    /// Empty; otherwise the member and generation must be current.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        transactional: bool,
    ) -> Result<(), i16> {
        if self.state == GroupState::Dead {
            return Err(code(ResponseError::CoordinatorNotAvailable));
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            if self.is_fenced(instance_id, member_id) {
                return Err(code(ResponseError::FencedInstanceId));
            }
            if !self.members.contains_key(member_id) {
                return Err(code(ResponseError::UnknownMemberId));
            }
            if generation != self.generation {
                return Err(code(ResponseError::IllegalGeneration));
            }
        } else if !transactional && self.state != GroupState::Empty {
            return Err(code(ResponseError::UnknownMemberId));
        }
        if !transactional && self.state == GroupState::CompletingRebalance {
            return Err(code(ResponseError::RebalanceInProgress));
        }
        Ok(())
    }
}
