//! The consumer group coordinator: Kafka's classic group membership protocol
//! (JoinGroup, SyncGroup, Heartbeat, LeaveGroup; KIP-345 static membership,
//! KIP-394 member ids) and committed offsets (OffsetCommit, OffsetFetch,
//! TxnOffsetCommit), for the one node this broker is.
//!
//! * `state`: one group's membership state machine and its timers.
//! * `membership`: the membership and admin requests, on all groups.
//! * `commit`: offset commits and fetches, transactional ones included.
//! * `offsets`: the crash-safe file of committed offsets.
//! * `protocol`: which assignor a generation uses, and member ids.
//!
//! Only committed offsets survive a restart. Group membership (generations,
//! members, assignments) lives in memory: Kafka would persist it too, but for
//! a development broker a restart simply makes the clients rejoin, which they
//! do on their own when they see UNKNOWN_MEMBER_ID. Groups that have offsets
//! reappear after a restart as `Empty`.
//!
//! The consumer protocol of KIP-848 (ConsumerGroupHeartbeat) is not
//! implemented; clients fall back to the classic protocol.

mod commit;
mod membership;
mod offsets;
mod protocol;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use commit::PendingTxnOffsets;
use offsets::OffsetStore;
use state::{Group, JoinResult, SyncResult};

pub use state::GroupState;

/// The coordinator's settings (Kafka's `group.*` broker configs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long a group that starts from
    /// empty waits for more members before its first generation. Kafka
    /// defaults to 3 s; zero suits tests and single-consumer development.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`: shorter sessions are refused.
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`: longer sessions are refused.
    pub max_session_timeout: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            min_session_timeout: Duration::from_millis(6_000),
            max_session_timeout: Duration::from_millis(1_800_000),
        }
    }
}

/// Why the coordinator could not open.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("cannot open the committed offsets in {dir}: {source}")]
    Open {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The group coordinator, shared by every connection (cloning shares it).
///
/// Each request method returns the response to encode at the request's
/// version, with errors as codes; none panics on bad input. JoinGroup and
/// SyncGroup may wait (asynchronously) for other members.
#[derive(Clone)]
pub struct GroupCoordinator {
    inner: Arc<Inner>,
}

struct Inner {
    config: GroupConfig,
    core: Mutex<Core>,
    shutdown: AtomicBool,
    wake: Arc<Notify>,
}

/// Everything behind the coordinator's lock. It is a std mutex, never held
/// across an await; commits write to the offsets file under it (one small
/// write per request, which is what makes a commit durable before its answer).
pub(crate) struct Core {
    groups: HashMap<String, Group>,
    store: OffsetStore,
    txn: PendingTxnOffsets,
}

/// A request either answered now or parked until another member's action or
/// a timer answers it.
pub(crate) enum Pending<T> {
    Ready(T),
    Wait(oneshot::Receiver<T>),
}

/// The background sweep wakes at least this often, so it notices that the
/// coordinator was dropped.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl GroupCoordinator {
    /// Opens the coordinator, loading committed offsets persisted under `dir`
    /// (created if missing).
    pub fn open(dir: &Path, config: GroupConfig) -> Result<GroupCoordinator, GroupError> {
        let store = OffsetStore::open(dir).map_err(|source| GroupError::Open {
            dir: dir.to_path_buf(),
            source,
        })?;
        let groups = store.groups().map(|g| (g.clone(), Group::new(g.clone()))).collect();
        Ok(GroupCoordinator {
            inner: Arc::new(Inner {
                config,
                core: Mutex::new(Core {
                    groups,
                    store,
                    txn: PendingTxnOffsets::default(),
                }),
                shutdown: AtomicBool::new(false),
                wake: Arc::new(Notify::new()),
            }),
        })
    }

    /// Spawns, on the current tokio runtime, the task that expires members
    /// whose session lapsed (and fires the other group timers even when no
    /// request is waiting). It ends after [`GroupCoordinator::shutdown`] or
    /// when the last handle to the coordinator is dropped.
    pub fn spawn_expiry(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let wake = self.inner.wake.clone();
        tokio::spawn(async move {
            loop {
                let next = {
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.shutdown.load(Ordering::Acquire) {
                        return;
                    }
                    let now = Instant::now();
                    let core = lock(&inner.core);
                    let next = core.groups.values().filter_map(Group::next_deadline).min();
                    next.unwrap_or(now + MAX_SWEEP_INTERVAL).min(now + MAX_SWEEP_INTERVAL)
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = wake.notified() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                if inner.shutdown.load(Ordering::Acquire) {
                    return;
                }
                let now = Instant::now();
                let mut core = lock(&inner.core);
                for group in core.groups.values_mut() {
                    group.tick(now, &inner.config);
                }
            }
        });
    }

    /// Stops the expiry task.
    pub fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.inner.core)
    }

    /// Waits for a parked request's answer, firing the group's timers when
    /// they are due (so rebalance timeouts resolve even without the expiry
    /// task). `None` if the coordinator dropped the request.
    async fn wait<T>(&self, group_id: &str, mut rx: oneshot::Receiver<T>) -> Option<T> {
        loop {
            let deadline = {
                let core = self.core();
                core.groups.get(group_id).and_then(Group::next_deadline)
            };
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                r = &mut rx => return r.ok(),
                _ = timer => {
                    let now = Instant::now();
                    let mut core = self.core();
                    if let Some(group) = core.groups.get_mut(group_id) {
                        group.tick(now, &self.inner.config);
                    }
                }
            }
        }
    }

    pub async fn join_group(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        let group_id = req.group_id.0.to_string();
        let pending = {
            let mut core = self.core();
            core.join(
                &req,
                version,
                client_id,
                client_host,
                Instant::now(),
                &self.inner.config,
            )
        };
        let result = match pending {
            Pending::Ready(r) => r,
            Pending::Wait(rx) => self.wait(&group_id, rx).await.unwrap_or_else(|| {
                JoinResult::error(
                    &req.member_id,
                    state::code(kafka_protocol::error::ResponseError::UnknownMemberId),
                )
            }),
        };
        membership::join_response(result, version)
    }

    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let group_id = req.group_id.0.to_string();
        let pending = {
            let mut core = self.core();
            core.sync(&req, version, Instant::now())
        };
        let result = match pending {
            Pending::Ready(r) => r,
            Pending::Wait(rx) => self.wait(&group_id, rx).await.unwrap_or_else(|| {
                SyncResult::error(state::code(kafka_protocol::error::ResponseError::RebalanceInProgress))
            }),
        };
        membership::sync_response(result, version)
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest, version: i16) -> HeartbeatResponse {
        self.core().heartbeat(&req, version, Instant::now())
    }

    pub async fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        self.core().leave(&req, version, Instant::now(), &self.inner.config)
    }

    /// Commits offsets after Kafka's generation and member checks
    /// (generation -1 = a standalone commit, allowed while the group is
    /// Empty). The commit reaches the offsets file before the answer.
    pub async fn offset_commit(&self, req: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
        self.core().offset_commit(&req, version, Instant::now())
    }

    /// v0-7 fetch one group, v8+ the `groups` array; unknown partitions
    /// answer offset -1; null topics = every committed partition.
    pub async fn offset_fetch(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        self.core().offset_fetch(&req, version)
    }

    pub async fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        self.core().list_groups(&req, version)
    }

    pub async fn describe_groups(&self, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
        self.core().describe_groups(&req, version)
    }

    /// Deletes groups that are Empty (with their offsets); NON_EMPTY_GROUP otherwise.
    pub async fn delete_groups(&self, req: DeleteGroupsRequest, version: i16) -> DeleteGroupsResponse {
        self.core().delete_groups(&req, version)
    }

    /// Stores offsets pending for the request's producer (KIP-98). They are
    /// invisible to OffsetFetch until [`GroupCoordinator::complete_txn`]
    /// commits them; OffsetFetch with `require_stable` answers
    /// UNSTABLE_OFFSET_COMMIT for those partitions meanwhile.
    pub async fn txn_offset_commit(&self, req: TxnOffsetCommitRequest, version: i16) -> TxnOffsetCommitResponse {
        self.core().txn_offset_commit(&req, version)
    }

    /// The transaction coordinator ends `producer_id`'s transaction: its
    /// pending offsets for `group_ids` are committed (persisted) or dropped.
    /// An empty `group_ids` means every group the producer has offsets for.
    pub async fn complete_txn(&self, producer_id: i64, group_ids: &[String], commit: bool) {
        self.core().complete_txn(producer_id, group_ids, commit)
    }

    /// A topic was deleted: drop its committed (and pending) offsets.
    pub async fn remove_topic(&self, topic: &str) {
        self.core().remove_topic(topic)
    }
}

fn lock(m: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic under the lock leaves the maps consistent enough to go on
    // serving; refusing every later request would be worse.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds from a request field, negative as zero.
fn millis(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Wall-clock milliseconds, for commit timestamps.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
