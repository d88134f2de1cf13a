//! The membership requests (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and
//! the group admin requests (ListGroups, DescribeGroups, DeleteGroups): the
//! validation Kafka's coordinator does before driving a group's state machine,
//! and the translation to each API version's response.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::protocol::{self, Protocols};
use super::state::{code, Group, GroupState, JoinResult, Member, SyncResult, NEW_MEMBER_JOIN_TIMEOUT, NONE};
use super::{millis, Core, GroupConfig, Pending};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The group type ListGroups v5 reports for classic-protocol groups.
const CLASSIC: &str = "classic";

impl Core {
    pub(crate) fn join(
        &mut self,
        req: &JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
        now: Instant,
        config: &GroupConfig,
    ) -> Pending<JoinResult> {
        let member_id = req.member_id.to_string();
        let fail = |e: ResponseError| Pending::Ready(JoinResult::error(&member_id, code(e)));
        let group_id = req.group_id.0.to_string();
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        let session = req.session_timeout_ms;
        if session < 0 || millis(session) < config.min_session_timeout || millis(session) > config.max_session_timeout {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        let protocol_type = req.protocol_type.to_string();
        let protocols: Protocols = req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        if protocol_type.is_empty() || protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let instance_id = if version >= 5 {
            req.group_instance_id.as_ref().map(|i| i.to_string())
        } else {
            None
        };
        let session_timeout = millis(session);
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        let rebalance_timeout = if version >= 1 && req.rebalance_timeout_ms > 0 {
            millis(req.rebalance_timeout_ms)
        } else {
            session_timeout
        };

        let group = if member_id.is_empty() {
            self.groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(group_id.clone()))
        } else {
            match self.groups.get_mut(&group_id) {
                Some(g) => g,
                None => return fail(ResponseError::UnknownMemberId),
            }
        };
        if group.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !group.supports(&protocol_type, &protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }

        let new_member = |id: String, seq: u64, tx| Member {
            id,
            instance_id: instance_id.clone(),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout,
            rebalance_timeout,
            protocol_type: protocol_type.clone(),
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            seq,
            heartbeat_deadline: now + NEW_MEMBER_JOIN_TIMEOUT,
            is_new: true,
            join_waiter: Some(tx),
            sync_waiter: None,
        };

        if member_id.is_empty() || group.pending_members.contains_key(&member_id) {
            let (id, static_rejoin) = if member_id.is_empty() {
                let id = protocol::new_member_id(client_id);
                match instance_id.as_ref().and_then(|i| group.static_members.get(i)) {
                    Some(old) => {
                        let old = old.clone();
                        (id, Some(old))
                    }
                    None => (id, None),
                }
            } else {
                (member_id.clone(), None)
            };
            if let Some(old_id) = static_rejoin {
                let instance = instance_id.clone().unwrap_or_default();
                return join_static_rejoin(
                    group,
                    JoinUpdate {
                        protocols,
                        session_timeout,
                        rebalance_timeout,
                    },
                    &instance,
                    &old_id,
                    &id,
                    version,
                    now,
                    config,
                );
            }
            if member_id.is_empty() && instance_id.is_none() && version >= 4 {
                // KIP-394: hand out the id first, so a client that retries a
                // timed-out join cannot leave ghost members behind.
                group.pending_members.insert(id.clone(), now + session_timeout);
                return Pending::Ready(JoinResult::error(&id, code(ResponseError::MemberIdRequired)));
            }
            let (tx, rx) = oneshot::channel();
            let seq = group.next_seq();
            group.add_member(new_member(id, seq, tx), now, config);
            group.maybe_prepare_rebalance(now, config);
            group.try_complete_join(now);
            return Pending::Wait(rx);
        }

        if group.is_fenced(instance_id.as_deref(), &member_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        if !group.members.contains_key(&member_id) {
            return fail(ResponseError::UnknownMemberId);
        }
        let update = JoinUpdate {
            protocols,
            session_timeout,
            rebalance_timeout,
        };
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                let rx = park_join(group, &member_id, update, now);
                group.try_complete_join(now);
                Pending::Wait(rx)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let member = &group.members[&member_id];
                let unchanged = member.protocols == update.protocols;
                let is_leader = group.is_leader(&member_id);
                if unchanged && (group.state == GroupState::CompletingRebalance || !is_leader) {
                    // A retried join of the current generation: same answer again.
                    let leader = group.leader.clone().unwrap_or_default();
                    if let Some(m) = group.members.get_mut(&member_id) {
                        m.heartbeat_deadline = now + m.session_timeout;
                    }
                    let with_members = is_leader && group.state == GroupState::CompletingRebalance;
                    Pending::Ready(group.join_result(&member_id, leader, with_members))
                } else {
                    // The leader rejoining (metadata changed) or new protocols: rebalance.
                    let rx = park_join(group, &member_id, update, now);
                    group.prepare_rebalance(now, config);
                    Pending::Wait(rx)
                }
            }
        }
    }

    pub(crate) fn sync(&mut self, req: &SyncGroupRequest, version: i16, now: Instant) -> Pending<SyncResult> {
        let fail = |e: ResponseError| Pending::Ready(SyncResult::error(code(e)));
        let member_id = req.member_id.to_string();
        let instance_id = if version >= 3 {
            req.group_instance_id.as_ref().map(|i| i.to_string())
        } else {
            None
        };
        let Some(group) = self.groups.get_mut(req.group_id.0.as_str()) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if group.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if group.is_fenced(instance_id.as_deref(), &member_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        if !group.members.contains_key(&member_id) {
            return fail(ResponseError::UnknownMemberId);
        }
        if req.generation_id != group.generation {
            return fail(ResponseError::IllegalGeneration);
        }
        if version >= 5 {
            let type_ok = req
                .protocol_type
                .as_ref()
                .is_none_or(|t| Some(t.as_str()) == group.protocol_type.as_deref());
            let name_ok = req
                .protocol_name
                .as_ref()
                .is_none_or(|n| Some(n.as_str()) == group.protocol_name.as_deref());
            if !type_ok || !name_ok {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                group.synced(&member_id);
                let m = group.members.get_mut(&member_id).expect("checked above");
                m.heartbeat_deadline = now + m.session_timeout;
                let assignment = m.assignment.clone();
                Pending::Ready(group.sync_result(NONE, assignment))
            }
            GroupState::CompletingRebalance => {
                group.synced(&member_id);
                let (tx, rx) = oneshot::channel();
                let m = group.members.get_mut(&member_id).expect("checked above");
                m.heartbeat_deadline = now + m.session_timeout;
                if let Some(old) = m.sync_waiter.replace(tx) {
                    let _ = old.send(SyncResult::error(code(ResponseError::RebalanceInProgress)));
                }
                if group.is_leader(&member_id) {
                    let assignments: HashMap<String, Bytes> = req
                        .assignments
                        .iter()
                        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                        .collect();
                    group.complete_sync(assignments);
                }
                Pending::Wait(rx)
            }
        }
    }

    pub(crate) fn heartbeat(&mut self, req: &HeartbeatRequest, version: i16, now: Instant) -> HeartbeatResponse {
        let error = self.heartbeat_error(req, version, now);
        HeartbeatResponse::default().with_error_code(error)
    }

    fn heartbeat_error(&mut self, req: &HeartbeatRequest, version: i16, now: Instant) -> i16 {
        let member_id = req.member_id.as_str();
        let instance_id = if version >= 3 {
            req.group_instance_id.as_deref()
        } else {
            None
        };
        let Some(group) = self.groups.get_mut(req.group_id.0.as_str()) else {
            return code(ResponseError::UnknownMemberId);
        };
        if group.state == GroupState::Dead {
            return code(ResponseError::CoordinatorNotAvailable);
        }
        if group.is_fenced(instance_id, member_id) {
            return code(ResponseError::FencedInstanceId);
        }
        let state = group.state;
        let generation = group.generation;
        let Some(m) = group.members.get_mut(member_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        if req.generation_id != generation {
            return code(ResponseError::IllegalGeneration);
        }
        match state {
            GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.heartbeat_deadline = now + m.session_timeout;
                NONE
            }
            GroupState::PreparingRebalance => {
                m.heartbeat_deadline = now + m.session_timeout;
                code(ResponseError::RebalanceInProgress)
            }
        }
    }

    pub(crate) fn leave(
        &mut self,
        req: &LeaveGroupRequest,
        version: i16,
        now: Instant,
        config: &GroupConfig,
    ) -> LeaveGroupResponse {
        // v0-2 name one member; v3+ a batch (KIP-345), possibly by instance id only.
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|i| i.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.to_string(), None)]
        };
        let group = self.groups.get_mut(req.group_id.0.as_str());
        let mut results = Vec::with_capacity(leaving.len());
        let mut top = NONE;
        match group {
            Some(g) if g.state == GroupState::Dead => top = code(ResponseError::CoordinatorNotAvailable),
            Some(g) => {
                for (member_id, instance_id) in leaving {
                    let error = leave_one(g, &member_id, instance_id.as_deref(), now, config);
                    results.push((member_id, instance_id, error));
                }
            }
            None => {
                for (member_id, instance_id) in leaving {
                    results.push((member_id, instance_id, code(ResponseError::UnknownMemberId)));
                }
            }
        }
        let mut resp = LeaveGroupResponse::default();
        if version >= 3 {
            resp.error_code = top;
            if top == NONE {
                resp.members = results
                    .into_iter()
                    .map(|(member_id, instance_id, error)| {
                        MemberResponse::default()
                            .with_member_id(s(&member_id))
                            .with_group_instance_id(instance_id.map(StrBytes::from_string))
                            .with_error_code(error)
                    })
                    .collect();
            }
        } else {
            resp.error_code = if top != NONE {
                top
            } else {
                results.first().map(|r| r.2).unwrap_or(NONE)
            };
        }
        resp
    }

    /// Every group: those with members and those that only have offsets.
    fn group_ids(&self) -> BTreeSet<String> {
        self.groups.keys().chain(self.store.groups()).cloned().collect()
    }

    pub(crate) fn list_groups(&self, req: &ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let states: Vec<String> = if version >= 4 {
            req.states_filter.iter().map(|s| s.to_lowercase()).collect()
        } else {
            Vec::new()
        };
        let types: Vec<String> = if version >= 5 {
            req.types_filter.iter().map(|s| s.to_lowercase()).collect()
        } else {
            Vec::new()
        };
        let mut groups = Vec::new();
        for id in self.group_ids() {
            let (state, ptype) = match self.groups.get(&id) {
                Some(g) => (g.state, g.protocol_type.clone().unwrap_or_default()),
                None => (GroupState::Empty, String::new()),
            };
            if !states.is_empty() && !states.contains(&state.name().to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t == CLASSIC) {
                continue;
            }
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(s(&id)))
                .with_protocol_type(s(&ptype));
            if version >= 4 {
                listed.group_state = s(state.name());
            }
            if version >= 5 {
                listed.group_type = s(CLASSIC);
            }
            groups.push(listed);
        }
        ListGroupsResponse::default().with_groups(groups)
    }

    pub(crate) fn describe_groups(&self, req: &DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
        let groups = req
            .groups
            .iter()
            .map(|id| {
                let mut d = DescribedGroup::default().with_group_id(id.clone());
                match self.groups.get(id.0.as_str()) {
                    Some(g) => {
                        d.group_state = s(g.state.name());
                        d.protocol_type = s(g.protocol_type.as_deref().unwrap_or(""));
                        // Like Kafka: the protocol, metadata and assignments
                        // only describe a Stable group.
                        let stable = g.state == GroupState::Stable;
                        let protocol = g.protocol_name.clone().unwrap_or_default();
                        if stable {
                            d.protocol_data = s(&protocol);
                        }
                        d.members = g
                            .ordered()
                            .into_iter()
                            .map(|m| {
                                let mut dm = DescribedGroupMember::default()
                                    .with_member_id(s(&m.id))
                                    .with_client_id(s(&m.client_id))
                                    .with_client_host(s(&m.client_host));
                                if version >= 4 {
                                    dm.group_instance_id = m.instance_id.as_deref().map(s);
                                }
                                if stable {
                                    dm.member_metadata = m.metadata(&protocol);
                                    dm.member_assignment = m.assignment.clone();
                                }
                                dm
                            })
                            .collect();
                    }
                    None if self.store.group(id.0.as_str()).is_some() => {
                        d.group_state = s(GroupState::Empty.name());
                    }
                    None => {
                        d.group_state = s(GroupState::Dead.name());
                        if version >= 6 {
                            d.error_code = code(ResponseError::GroupIdNotFound);
                            d.error_message = Some(s(&format!("Group {} not found.", id.0.as_str())));
                        }
                    }
                }
                d
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    pub(crate) fn delete_groups(&mut self, req: &DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
        let results = req
            .groups_names
            .iter()
            .map(|id| {
                let name = id.0.as_str();
                let known = self.groups.get(name).map(|g| g.state == GroupState::Empty);
                let error = match known {
                    Some(false) => code(ResponseError::NonEmptyGroup),
                    None if self.store.group(name).is_none() => code(ResponseError::GroupIdNotFound),
                    _ => match self.store.delete_group(name) {
                        Ok(()) => {
                            self.groups.remove(name);
                            self.txn.drop_group(name);
                            NONE
                        }
                        Err(e) => {
                            tracing::error!(group = name, error = %e, "cannot persist a group deletion");
                            code(ResponseError::KafkaStorageError)
                        }
                    },
                };
                DeletableGroupResult::default()
                    .with_group_id(id.clone())
                    .with_error_code(error)
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }
}

struct JoinUpdate {
    protocols: Protocols,
    session_timeout: std::time::Duration,
    rebalance_timeout: std::time::Duration,
}

/// Parks an existing member's JoinGroup with its (possibly new) protocols.
fn park_join(group: &mut Group, member_id: &str, update: JoinUpdate, now: Instant) -> oneshot::Receiver<JoinResult> {
    let (tx, rx) = oneshot::channel();
    if let Some(m) = group.members.get_mut(member_id) {
        m.protocols = update.protocols;
        m.session_timeout = update.session_timeout;
        m.rebalance_timeout = update.rebalance_timeout;
        if !m.is_new {
            m.heartbeat_deadline = now + m.session_timeout;
        }
        if let Some(old) = m.join_waiter.replace(tx) {
            // A duplicate join (the client retried): the older one rejoins again.
            let _ = old.send(JoinResult::error(member_id, code(ResponseError::RebalanceInProgress)));
        }
    }
    rx
}

/// A static member rejoining with an unknown member id (KIP-345): it takes
/// over its instance under a new member id, fencing the old one. In a Stable
/// group whose protocol would not change, no rebalance happens: the member
/// gets the current generation and will fetch its old assignment with
/// SyncGroup.
#[allow(clippy::too_many_arguments)]
fn join_static_rejoin(
    group: &mut Group,
    update: JoinUpdate,
    instance_id: &str,
    old_id: &str,
    new_id: &str,
    version: i16,
    now: Instant,
    config: &GroupConfig,
) -> Pending<JoinResult> {
    let old_leader = group.leader.clone().unwrap_or_default();
    group.replace_static_member(instance_id, old_id, new_id);
    let rx = park_join(group, new_id, update, now);
    if let Some(m) = group.members.get_mut(new_id) {
        m.heartbeat_deadline = now + m.session_timeout;
    }
    match group.state {
        GroupState::Stable => {
            if group.select_protocol() == group.protocol_name {
                let is_leader = group.is_leader(new_id);
                let result = if version >= 9 {
                    // The leader learns it leads but must not reassign.
                    let mut r = group.join_result(new_id, group.leader.clone().unwrap_or_default(), is_leader);
                    r.skip_assignment = is_leader;
                    r
                } else {
                    // The old leader id: the member will not run an assignment
                    // the Stable group would ignore.
                    group.join_result(new_id, old_leader, false)
                };
                if let Some(m) = group.members.get_mut(new_id) {
                    m.join_waiter = None;
                }
                Pending::Ready(result)
            } else {
                group.prepare_rebalance(now, config);
                Pending::Wait(rx)
            }
        }
        GroupState::CompletingRebalance => {
            // The leader may be assigning for the old member id: redo the round.
            group.prepare_rebalance(now, config);
            Pending::Wait(rx)
        }
        GroupState::PreparingRebalance => {
            group.try_complete_join(now);
            Pending::Wait(rx)
        }
        GroupState::Empty | GroupState::Dead => {
            group.maybe_prepare_rebalance(now, config);
            Pending::Wait(rx)
        }
    }
}

fn leave_one(group: &mut Group, member_id: &str, instance_id: Option<&str>, now: Instant, config: &GroupConfig) -> i16 {
    if member_id.is_empty() {
        let Some(id) = instance_id.and_then(|i| group.static_members.get(i)).cloned() else {
            return code(ResponseError::UnknownMemberId);
        };
        group.remove_member(&id, now, config);
        return NONE;
    }
    if group.is_fenced(instance_id, member_id) {
        return code(ResponseError::FencedInstanceId);
    }
    if group.remove_pending_member(member_id, now) {
        return NONE;
    }
    if !group.members.contains_key(member_id) {
        return code(ResponseError::UnknownMemberId);
    }
    tracing::info!(group = %group.id, member = member_id, "member left");
    group.remove_member(member_id, now, config);
    NONE
}

pub(crate) fn join_response(r: JoinResult, version: i16) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_leader(s(&r.leader))
        .with_member_id(s(&r.member_id));
    if version >= 7 {
        resp.protocol_type = r.protocol_type.as_deref().map(s);
        resp.protocol_name = r.protocol_name.as_deref().map(s);
    } else {
        // Not nullable before v7.
        resp.protocol_name = Some(s(r.protocol_name.as_deref().unwrap_or("")));
    }
    if version >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    resp.members = r
        .members
        .into_iter()
        .map(|m| {
            let mut jm = JoinGroupResponseMember::default()
                .with_member_id(s(&m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                jm.group_instance_id = m.instance_id.as_deref().map(s);
            }
            jm
        })
        .collect();
    resp
}

pub(crate) fn sync_response(r: SyncResult, version: i16) -> SyncGroupResponse {
    let mut resp = SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_assignment(r.assignment);
    if version >= 5 {
        resp.protocol_type = r.protocol_type.as_deref().map(s);
        resp.protocol_name = r.protocol_name.as_deref().map(s);
    }
    resp
}
