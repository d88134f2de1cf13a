//! Where each stream thread stands, for readiness checks (`/readyz`) and
//! progress reports: which tasks it runs, which it is still restoring.

use std::collections::BTreeMap;
use std::sync::Mutex;

use weir_state::StoreReader;

/// One stream thread's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadStatus {
    /// True once the thread's current assignment is restored and running
    /// (and before its first assignment: false).
    pub ready: bool,
    /// Tasks ("0_1") the thread runs.
    pub tasks: Vec<String>,
    /// Tasks being restored right now.
    pub restoring: Vec<String>,
    /// Changelog records restored by this thread so far.
    pub restored_records: u64,
    /// Per restoring task ("1_0"), per store: changelog records still to
    /// read.
    pub restore_remaining: BTreeMap<String, BTreeMap<String, i64>>,
    /// Why the thread's work does not flow right now (the cluster is
    /// unreachable, a commit waits for delivery); not ready meanwhile.
    pub problem: Option<String>,
}

/// The status of every stream thread of a `run`, by thread name.
#[derive(Default)]
pub struct RunStatus {
    threads: Mutex<BTreeMap<String, ThreadStatus>>,
    /// The stores this instance hosts: (application, store, partition) →
    /// a reader of their committed data, for interactive queries.
    stores: Mutex<BTreeMap<(String, String, i32), StoreReader>>,
}

impl std::fmt::Debug for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStatus").field("threads", &self.snapshot()).finish()
    }
}

impl RunStatus {
    pub(crate) fn register(&self, thread: &str) {
        self.threads
            .lock()
            .expect("status lock")
            .entry(thread.to_string())
            .or_default();
    }

    /// Change `thread`'s status (adding it if new). The stream threads call
    /// this; tests of what reads the status may too.
    pub fn update(&self, thread: &str, f: impl FnOnce(&mut ThreadStatus)) {
        f(self
            .threads
            .lock()
            .expect("status lock")
            .entry(thread.to_string())
            .or_default());
    }

    /// Record that this instance now hosts `stores` of `application` on
    /// `partition`, readable through `reader`.
    pub fn host(&self, application: &str, partition: i32, stores: &[String], reader: &StoreReader) {
        let mut map = self.stores.lock().expect("status lock");
        for s in stores {
            map.insert((application.to_string(), s.clone(), partition), reader.clone());
        }
    }

    /// Forget the stores of `application` on `partition` (the task left).
    pub fn unhost(&self, application: &str, partition: i32, stores: &[String]) {
        let mut map = self.stores.lock().expect("status lock");
        for s in stores {
            map.remove(&(application.to_string(), s.clone(), partition));
        }
    }

    /// The readers of every local partition of `store`: (application,
    /// partition, reader).
    pub fn store_readers(&self, store: &str) -> Vec<(String, i32, StoreReader)> {
        self.stores
            .lock()
            .expect("status lock")
            .iter()
            .filter(|((_, s, _), _)| s == store)
            .map(|((app, _, p), r)| (app.clone(), *p, r.clone()))
            .collect()
    }

    /// Ready when every thread has finished restoring its assignment and
    /// none has a problem reaching the cluster.
    pub fn is_ready(&self) -> bool {
        let threads = self.threads.lock().expect("status lock");
        !threads.is_empty() && threads.values().all(|t| t.ready && t.problem.is_none())
    }

    /// A copy of every thread's status.
    pub fn snapshot(&self) -> BTreeMap<String, ThreadStatus> {
        self.threads.lock().expect("status lock").clone()
    }
}

/// Reports one stream thread's tasks in a [`RunStatus`]: which run and
/// which restore (with the records each store has left), and the stores
/// it serves to queries.
pub struct StatusListener {
    pub status: std::sync::Arc<RunStatus>,
    pub thread: String,
    pub application: String,
}

impl weir_runtime::manager::TaskListener for StatusListener {
    fn tasks_changed(&mut self, running: &[weir_runtime::TaskId], restoring: &[weir_runtime::TaskId]) {
        let mut all: Vec<weir_runtime::TaskId> = running.iter().chain(restoring).copied().collect();
        all.sort();
        self.status.update(&self.thread, |t| {
            t.tasks = all.iter().map(|i| i.to_string()).collect();
            t.restoring = restoring.iter().map(|i| i.to_string()).collect();
            t.ready = restoring.is_empty();
        });
    }

    fn hosted(&mut self, id: weir_runtime::TaskId, stores: &[String], reader: &StoreReader) {
        self.status.host(&self.application, id.partition, stores, reader);
    }

    fn unhosted(&mut self, id: weir_runtime::TaskId, stores: &[String]) {
        self.status.unhost(&self.application, id.partition, stores);
    }

    fn restore_progress(&mut self, id: weir_runtime::TaskId, store: &str, remaining: i64) {
        self.status.update(&self.thread, |t| {
            let stores = t.restore_remaining.entry(id.to_string()).or_default();
            stores.insert(store.to_string(), remaining);
        });
    }

    fn restore_done(&mut self, id: weir_runtime::TaskId, records: u64) {
        self.status.update(&self.thread, |t| {
            t.restore_remaining.remove(&id.to_string());
            t.restored_records += records;
        });
    }
}
