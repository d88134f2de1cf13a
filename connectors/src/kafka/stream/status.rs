//! Where each stream thread stands, for readiness checks (`/readyz`) and
//! progress reports: which tasks it runs, which it is still restoring.

use std::collections::BTreeMap;
use std::sync::Mutex;

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
}

/// The status of every stream thread of a `run`, by thread name.
#[derive(Debug, Default)]
pub struct RunStatus {
    threads: Mutex<BTreeMap<String, ThreadStatus>>,
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

    /// Ready when every thread has finished restoring its assignment.
    pub fn is_ready(&self) -> bool {
        let threads = self.threads.lock().expect("status lock");
        !threads.is_empty() && threads.values().all(|t| t.ready)
    }

    /// A copy of every thread's status.
    pub fn snapshot(&self) -> BTreeMap<String, ThreadStatus> {
        self.threads.lock().expect("status lock").clone()
    }
}
