//! After a failure under exactly-once: the open transaction was aborted,
//! so nothing the tasks did since their last committed transaction is
//! visible anywhere, and their local state (written only after a
//! transaction commits) is exactly that transaction's. The tasks are
//! closed as they are and created again from it, as at an assignment, and
//! the member goes on; the poll loop moves the consumer back to the
//! offsets the recreated tasks name. Kafka Streams does the same with a
//! `TaskCorruptedException` (close dirty, revive).
//!
//! A member that was fenced (another one owns its tasks now), or whose
//! abort failed as well, cannot recover: its owner gives the tasks up.
//!
//! Also here: a revoke whose partitions were *lost* (the member's session
//! expired) closes the tasks without committing, in either guarantee:
//! their partitions are another member's already.

use std::collections::BTreeMap;

use super::{Assignment, Guarantee, TaskManager};
use crate::task::{Task, TaskId};
use crate::transport::Transport;
use crate::RuntimeError;

impl TaskManager {
    /// Whether [`recover`](Self::recover) can undo the failure: under
    /// exactly-once, once the transaction of the failed work is aborted.
    pub fn can_recover(&self) -> bool {
        self.failed.is_some() && self.cfg.guarantee == Guarantee::ExactlyOnce && !self.unrecoverable && !self.in_txn
    }

    /// Why the manager failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Rewinds every task to its last committed transaction (see the
    /// module docs) and clears the failure. Returns where the consumer
    /// must go on, as [`assign`](Self::assign) does.
    pub fn recover(&mut self, t: &mut dyn Transport) -> Result<Assignment, RuntimeError> {
        if !self.can_recover() {
            return Err(RuntimeError::CommitRefused(format!(
                "cannot go back to the last committed transaction after: {}",
                self.failed.as_deref().unwrap_or("nothing failed")
            )));
        }
        let ids: Vec<TaskId> = self.running.keys().chain(self.restoring.keys()).copied().collect();
        let partitions: Vec<(u32, i32)> = ids.iter().flat_map(|id| self.cfg.plan.partitions_of(*id)).collect();
        tracing::warn!(member = %self.cfg.name, why = self.failed.as_deref().unwrap_or_default(), tasks = ids.len(),
            "transaction aborted; going back to the last committed state");
        self.close_uncommitted();
        self.failed = None;
        self.assign(t, &partitions)
    }

    /// The partitions were lost (the member's session expired; another
    /// member may have them already): close every task without a commit,
    /// aborting the open transaction. Nothing is lost: the next owner
    /// replays what was not committed.
    pub fn revoke_lost(&mut self, t: &mut dyn Transport) {
        let n = self.running.len() + self.restoring.len();
        tracing::warn!(member = %self.cfg.name, tasks = n, "partitions lost; closing the tasks without a commit");
        self.abort_txn(t);
        self.close_uncommitted();
        let suspended = std::mem::take(&mut self.suspended);
        self.close_tasks(suspended);
        self.rebalance_started.get_or_insert_with(std::time::Instant::now);
        if self.cfg.guarantee == Guarantee::ExactlyOnce && !self.unrecoverable {
            // Nothing of the failed work survives: the next assignment
            // starts clean.
            self.failed = None;
        }
        self.report_tasks();
    }

    /// Closes the running and restoring tasks as they are.
    fn close_uncommitted(&mut self) {
        let running = std::mem::take(&mut self.running);
        self.cfg.metrics.active_tasks.sub(running.len() as i64);
        let restoring: BTreeMap<TaskId, Task> = std::mem::take(&mut self.restoring)
            .into_iter()
            .map(|(id, r)| (id, r.into_task()))
            .collect();
        self.cfg.metrics.restoring_tasks.sub(restoring.len() as i64);
        let mut all = running;
        all.extend(restoring);
        self.close_tasks(all);
        self.uncommitted = 0;
        self.current_origin = None;
    }
}
