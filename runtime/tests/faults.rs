//! Fault injection on the in-memory cluster: a member crashes at every
//! operation of a phase (processing and commits, a restore, a revoke), a
//! new member takes over, and the result must be exact.
//!
//! A crash is a `SIGKILL`: the [`Member`] is dropped without a revoke, a
//! close or a commit. The [`MemoryCluster`] keeps what was delivered (a
//! crash inside a flush delivers the first half of the pending records
//! first), the state directory keeps what sled wrote. The next member
//! has a new transport without crash injection, on the same state
//! directory or on a fresh one (local state lost: everything comes back
//! from the changelogs), and runs until idle.
//!
//! Each test first runs its phase without a crash to learn its operation
//! count `N`, then crashes at every `n` in `1..=N` (on a fresh cluster
//! each time), so that a crash lands between every pair of commit steps,
//! inside every drain and flush, between restore steps, and so on. It
//! asserts that the crash happened for every `n`. Failures are collected
//! over all crash points and reported together, each naming its crash
//! point (`crash at operation n of N`). The phases:
//!
//! 1. processing and commits, the input arriving as the member runs; the
//!    recovery on the crashed member's state directory or a fresh one;
//! 2. a restore (assignment, restore, processing) on a fresh state
//!    directory after a clean first member; the recovery on a fresh state
//!    directory or on the partially restored one;
//! 3. a revoke with uncommitted work in every task;
//! 4. processing, asserting that an upstream replay really duplicates
//!    repartition records (exactly those delivered past the upstream's
//!    checkpoint) and that the downstream counts stay exact;
//! 5. processing, then a short-lived recovery, then a restore across the
//!    changelog records of the commit that never finished, asserting that
//!    skipping them matters.
//!
//! Inputs are deterministic (fixed-seed generator), and so are the runs:
//! no sleeps, no clocks (punctuation gets a fixed "now").
//!
//! The topology has three sub-topologies and two repartition topics:
//!
//! ```text
//! words ─▶ [0] select_key(word) ─▶ by-word-repartition
//!       ─▶ [1] count per word (store word-counts) ─▶ counts
//!          [1] select_key(first letter) ─▶ letter-counts-repartition
//!       ─▶ [2] count per letter (store letter-counts) ─▶ letters
//! ```
//!
//! so that sub-topology 1 both consumes and produces repartition records
//! (a replay of 0 must be skipped by 1, a replay of 1 by 2).
//!
//! Exactness is checked twice: the latest value per key of the output
//! topics, and the committed contents of the stores of the running tasks.
//! The stores are read with `TaskState::scan_kv`, which returns what sled
//! holds (committed data, what a restart would see; the write cache is
//! bypassed): keys are `Serdes::string()` (the UTF-8 bytes of the word or
//! letter), and a count's aggregate serde is `Serdes::u64()` (8 bytes
//! big-endian; see `topology/src/serde.rs` and `KGroupedStream::count`). A
//! scan rather than per-key reads, so that an extra key is caught as well
//! as a wrong or missing one. Every run ends with `run_until_idle`, whose
//! last poll commits, so the committed contents are the final ones.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use weir_runtime::manager::{parse_checkpoint_pointer, unwrap_repartition_value, TaskListener, ORIGIN_HEADER};
use weir_runtime::memory::{Member, MemoryCluster};
use weir_runtime::partitioner::default_partitioner;
use weir_runtime::{RuntimeError, TaskCheckpoint, TaskConfig, TaskId, Transport};
use weir_state::StateDb;
use weir_topology::prelude::*;

const APP: &str = "faults";
/// Wall-clock "now" for punctuation (the topology has no windows).
const NOW: i64 = 5_000;
const WORDS: &str = "words";
const COUNTS: &str = "counts";
const LETTERS: &str = "letters";
const WORD_STORE: &str = "word-counts";
const LETTER_STORE: &str = "letter-counts";
/// 3 sub-topologies × 2 partitions.
const TASKS: usize = 6;
/// The changelog records `Member::poll` restores per step.
const RESTORE_BUDGET: usize = 1000;

fn by_word_topic() -> String {
    format!("{APP}-by-word-repartition")
}

fn by_letter_topic() -> String {
    format!("{APP}-{LETTER_STORE}-repartition")
}

fn topology() -> Topology {
    let mut b = StreamsBuilder::new();
    let by_word = b
        .stream::<String, String>(WORDS, Serdes::string(), Serdes::string())
        .select_key(|_, w| w.clone())
        .repartition("by-word", Serdes::string(), Serdes::string());
    by_word
        .clone()
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named(WORD_STORE))
        .to_stream()
        .map_values(|_, n| n.to_string())
        .to(COUNTS, Serdes::string(), Serdes::string());
    by_word
        .select_key(|w, _| w[..1].to_string())
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named(LETTER_STORE))
        .to_stream()
        .map_values(|_, n| n.to_string())
        .to(LETTERS, Serdes::string(), Serdes::string());
    b.build().unwrap()
}

// ---------------------------------------------------------------------
// Inputs and their exact counts.

/// A small vocabulary with skewed weights. Its words spread over both
/// partitions of the repartition topic (fox fig bee dog: 0; ant apple cat
/// duck: 1) and so do their first letters (a b c: 0; f d: 1).
const VOCAB: [(&str, u64); 8] = [
    ("ant", 30),
    ("fox", 20),
    ("apple", 14),
    ("fig", 10),
    ("bee", 9),
    ("dog", 8),
    ("cat", 5),
    ("duck", 4),
];

/// A fixed-seed LCG: deterministic input.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `n` (partition, word) pairs drawn from [`VOCAB`], alternating over the
/// 2 partitions of `words`.
fn words(n: usize, seed: u64) -> Vec<(i32, String)> {
    let total: u64 = VOCAB.iter().map(|(_, w)| w).sum();
    let mut rng = Lcg(seed);
    (0..n)
        .map(|i| {
            let mut r = rng.below(total);
            let (word, _) = VOCAB
                .iter()
                .find(|(_, w)| {
                    let hit = r < *w;
                    r = r.saturating_sub(*w);
                    hit
                })
                .expect("r < total");
            ((i % 2) as i32, word.to_string())
        })
        .collect()
}

/// `n` distinct words (a letter of VOCAB's and a number), alternating over
/// the 2 partitions of `words`, that all go to partition 0 of the
/// repartition topic: each is a changelog record of its own in partition
/// 0 of `word-counts`, so that restoring it takes several steps (without
/// making partition 1 as expensive to build).
fn distinct_words(n: usize, seed: u64) -> Vec<(i32, String)> {
    let mut rng = Lcg(seed);
    (0..)
        .map(|i: usize| format!("{}{i:05}", ["a", "b", "c", "d", "f"][rng.below(5) as usize]))
        .filter(|w| default_partitioner(w.as_bytes(), 2) == 0)
        .take(n)
        .enumerate()
        .map(|(i, w)| ((i % 2) as i32, w))
        .collect()
}

/// The exact counts of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Truth {
    words: BTreeMap<String, u64>,
    letters: BTreeMap<String, u64>,
    records: usize,
}

impl Truth {
    fn of(input: &[(i32, String)]) -> Truth {
        let mut words = BTreeMap::new();
        let mut letters = BTreeMap::new();
        for (_, w) in input {
            *words.entry(w.clone()).or_insert(0) += 1;
            *letters.entry(w[..1].to_string()).or_insert(0) += 1;
        }
        Truth {
            words,
            letters,
            records: input.len(),
        }
    }
}

// ---------------------------------------------------------------------
// A cluster, its input, members and their state directories.

/// How input arrives while a member runs: `chunk` records at a time, each
/// followed by one poll of at most `every` records and a commit. The poll
/// loop reads topics in topic order and a poll's repartition records are
/// read by the next one, so `every` = 3 × `chunk` lets every commit carry
/// work of every sub-topology (with the whole input there at once, the
/// downstream sub-topologies would only start once the input is consumed).
#[derive(Clone, Copy)]
struct Feed {
    chunk: usize,
    every: usize,
}

/// A cluster, the input that arrives on it, and how much has arrived
/// (the producer goes on while a member is down).
struct World {
    cluster: MemoryCluster,
    input: Vec<(i32, String)>,
    produced: usize,
}

impl World {
    /// A cluster with the external topics (2 partitions each) and no
    /// input yet.
    fn new(input: Vec<(i32, String)>) -> World {
        let cluster = MemoryCluster::new();
        cluster.create_topic(WORDS, 2);
        cluster.create_topic(COUNTS, 2);
        cluster.create_topic(LETTERS, 2);
        World {
            cluster,
            input,
            produced: 0,
        }
    }

    /// Produce the input up to (not including) record `end`.
    fn produce_up_to(&mut self, end: usize) {
        for i in self.produced..end {
            let (p, w) = &self.input[i];
            self.cluster
                .produce(WORDS, *p, Some(b"k"), Some(w.as_bytes()), 1_000 + i as i64);
        }
        self.produced = self.produced.max(end);
    }

    /// The rest of the input, chunk by chunk with a poll (and commit)
    /// after each, then processing until idle.
    fn feed(&mut self, m: &mut Member, feed: Feed) -> Result<(), RuntimeError> {
        while self.produced < self.input.len() {
            self.produce_up_to((self.produced + feed.chunk).min(self.input.len()));
            m.poll(feed.every, NOW, true)?;
        }
        m.run_until_idle(feed.every, NOW)
    }

    /// Assignment, then [`feed`](Self::feed).
    fn run(&mut self, m: &mut Member, feed: Feed) -> Result<(), RuntimeError> {
        m.assign_all()?;
        self.feed(m, feed)
    }
}

/// A state directory (removed when dropped) and its database.
struct Dir {
    db: Arc<StateDb>,
    _dir: tempfile::TempDir,
}

fn fresh_dir() -> Dir {
    // On tmpfs where there is one: the tests open a couple of thousand
    // sled databases, and on disk sled's file writes cost a third of the
    // time.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new().prefix("weir-faults-").tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    Dir {
        db: Arc::new(StateDb::open(dir.path()).unwrap()),
        _dir: dir,
    }
}

fn member(cluster: &MemoryCluster, dir: &Dir) -> Member {
    Member::new(cluster, &topology(), APP, dir.db.clone(), TaskConfig::default(), None).unwrap()
}

/// Counts the changelog records each task applied in its restores.
#[derive(Clone, Default)]
struct Restores(Rc<RefCell<BTreeMap<TaskId, u64>>>);

impl TaskListener for Restores {
    fn restore_done(&mut self, id: TaskId, records: u64) {
        *self.0.borrow_mut().entry(id).or_insert(0) += records;
    }
}

fn listened_member(cluster: &MemoryCluster, dir: &Dir, restores: &Restores) -> Member {
    let listener: Box<dyn TaskListener> = Box::new(restores.clone());
    Member::new(
        cluster,
        &topology(),
        APP,
        dir.db.clone(),
        TaskConfig::default(),
        Some(listener),
    )
    .unwrap()
}

// ---------------------------------------------------------------------
// Checks.

/// The last value per key of a topic (a key always lands in the same
/// partition, so partition-by-partition order keeps each key's order).
fn latest(cluster: &MemoryCluster, topic: &str) -> BTreeMap<String, u64> {
    cluster
        .all_records(topic)
        .into_iter()
        .map(|r| {
            let key = String::from_utf8(r.key.expect("keyed")).unwrap();
            let value = String::from_utf8(r.value.expect("a count")).unwrap();
            (key, value.parse().expect("a decimal count"))
        })
        .collect()
}

/// The committed contents of `store` over the running tasks.
fn store(m: &Member, store: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for (id, t) in m.manager.running() {
        if !t.stores().iter().any(|(n, _)| n == store) {
            continue;
        }
        let entries = t
            .state()
            .scan_kv(store, Bound::Unbounded, Bound::Unbounded)
            .map_err(|e| format!("task {id}: scanning {store}: {e}"))?;
        for (k, v) in entries {
            let key = String::from_utf8(k).map_err(|e| format!("task {id}: {store}: key: {e}"))?;
            let bytes: [u8; 8] = v
                .try_into()
                .map_err(|v: Vec<u8>| format!("task {id}: {store}[{key}]: {} bytes, not a u64", v.len()))?;
            if out.insert(key.clone(), u64::from_be_bytes(bytes)).is_some() {
                return Err(format!("{store}: key {key:?} is in two tasks"));
            }
        }
    }
    Ok(out)
}

/// Which keys differ between `want` and `got`.
fn diff(what: &str, want: &BTreeMap<String, u64>, got: &BTreeMap<String, u64>) -> Option<String> {
    let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let wrong: Vec<String> = keys
        .into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| format!("{k}: want {:?}, got {:?}", want.get(k), got.get(k)))
        .collect();
    match wrong.len() {
        0 => None,
        n if n > 8 => Some(format!("{what}: {n} keys wrong: {} ...", wrong[..8].join(", "))),
        _ => Some(format!("{what}: {}", wrong.join(", "))),
    }
}

/// Every task runs, and the outputs and the stores hold the exact counts.
fn check(cluster: &MemoryCluster, m: &Member, truth: &Truth) -> Result<(), String> {
    if m.manager.is_restoring() || m.manager.running().len() != TASKS {
        return Err(format!(
            "{} tasks running (want {TASKS}), restoring: {}",
            m.manager.running().len(),
            m.manager.is_restoring()
        ));
    }
    let problems: Vec<String> = [
        diff("output counts", &truth.words, &latest(cluster, COUNTS)),
        diff("output letters", &truth.letters, &latest(cluster, LETTERS)),
        diff("store word-counts", &truth.words, &store(m, WORD_STORE)?),
        diff("store letter-counts", &truth.letters, &store(m, LETTER_STORE)?),
    ]
    .into_iter()
    .flatten()
    .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Runs `scenario(n)` for every crash point `n` in `1..=total`; panics
/// with every failure (a panic inside a scenario counts as one).
fn every_crash_point(phase: &str, total: u64, mut scenario: impl FnMut(u64) -> Result<(), String>) {
    assert!(total > 0, "{phase}: no operations to crash at");
    let started = Instant::now();
    let mut failures = Vec::new();
    for n in 1..=total {
        let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| scenario(n))) {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("panicked: {text}")
            }
        };
        failures.push(format!("{phase}: crash at operation {n} of {total}: {failure}"));
    }
    println!("{phase}: {total} crash points in {:.2?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {total} crash points of the {phase} phase failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Asserts that the injected crash happened, then drops the member as it
/// is (SIGKILL: no revoke, close or commit).
fn crashed(m: Member, result: Result<(), RuntimeError>) -> Result<(), String> {
    if !m.transport.crashed() {
        return Err(format!("the crash did not happen (result: {result:?})"));
    }
    drop(m);
    Ok(())
}

/// The state directory of the member after a crash: the crashed one's, or
/// a fresh one (local state lost).
fn next_dir(crashed: Dir, keep_local_state: bool) -> Dir {
    if keep_local_state {
        crashed
    } else {
        drop(crashed);
        fresh_dir()
    }
}

/// A new member on `dir` takes over, the rest of the input arrives, and
/// the result is exact.
fn recover(w: &mut World, dir: &Dir, feed: Feed, truth: &Truth) -> Result<(), String> {
    let mut m = member(&w.cluster, dir);
    w.run(&mut m, feed).map_err(|e| format!("recovery failed: {e}"))?;
    check(&w.cluster, &m, truth)
}

/// One more member, on a fresh state directory, rebuilds every store from
/// what the crash and the recovery left in the changelogs and checkpoints
/// topic, and holds the exact counts: the ranges of commits that never
/// finished are skipped by restores to come, not only by the recovery.
fn rebuild(w: &mut World, truth: &Truth) -> Result<(), String> {
    let dir = fresh_dir();
    let mut m = member(&w.cluster, &dir);
    w.run(&mut m, Feed { chunk: 1, every: 1 })
        .map_err(|e| format!("rebuild from the changelogs failed: {e}"))?;
    check(&w.cluster, &m, truth).map_err(|e| format!("rebuild from the changelogs: {e}"))
}

// ---------------------------------------------------------------------
// 1. A crash while processing and committing.

/// 200 records, 20 at a time, a commit after each poll (10 commits while
/// input arrives, then a few while the pipeline drains).
const PROCESS_RECORDS: usize = 200;
const PROCESS_FEED: Feed = Feed { chunk: 20, every: 60 };

/// A member processes the input as it arrives and crashes at operation
/// `n`; a new member (on the same state directory, or a fresh one) takes
/// over while the rest arrives.
fn crash_during_processing(keep_local_state: bool) {
    let input = words(PROCESS_RECORDS, 7);
    let truth = Truth::of(&input);
    let total = {
        let mut w = World::new(input.clone());
        let dir = fresh_dir();
        let mut m = member(&w.cluster, &dir);
        w.run(&mut m, PROCESS_FEED).unwrap();
        check(&w.cluster, &m, &truth).unwrap();
        m.transport.operations()
    };
    every_crash_point("processing", total, |n| {
        let mut w = World::new(input.clone());
        let dir = fresh_dir();
        let mut m = member(&w.cluster, &dir);
        m.transport.crash_at(n);
        let r = w.run(&mut m, PROCESS_FEED);
        crashed(m, r)?;
        recover(&mut w, &next_dir(dir, keep_local_state), PROCESS_FEED, &truth)?;
        // The recovery ran on the local state: its checkpoints must hold
        // up for a restore from the changelogs too.
        if keep_local_state {
            rebuild(&mut w, &truth)?;
        }
        Ok(())
    });
}

#[test]
fn crash_at_every_operation_of_processing_then_recover_with_the_local_state() {
    crash_during_processing(true);
}

#[test]
fn crash_at_every_operation_of_processing_then_recover_from_the_changelogs() {
    crash_during_processing(false);
}

// ---------------------------------------------------------------------
// 2. A crash while restoring.

/// Distinct words, so that partition 0 of the `word-counts` changelog
/// has more than [`RESTORE_BUDGET`] records: restoring it takes two steps,
/// and a crash can fall between them.
const RESTORE_DISTINCT: usize = 1_050;
/// And some of the vocabulary, for partition 1.
const RESTORE_FIRST: usize = 100;
/// What the first member runs with: few, big commits.
const RESTORE_FIRST_FEED: Feed = Feed {
    chunk: RESTORE_DISTINCT + RESTORE_FIRST,
    every: RESTORE_DISTINCT + RESTORE_FIRST,
};
/// Arriving while the second member restores.
const RESTORE_SECOND: usize = 12;
const RESTORE_FEED: Feed = Feed { chunk: 4, every: 12 };

/// A cluster where a first member processed [`distinct_words`] and some of
/// the vocabulary and committed cleanly (revoke, close); then more input
/// is on its way.
fn restore_setup() -> World {
    let mut w = World::new([distinct_words(RESTORE_DISTINCT, 11), words(RESTORE_FIRST, 29)].concat());
    let dir = fresh_dir();
    let mut m = member(&w.cluster, &dir);
    w.run(&mut m, RESTORE_FIRST_FEED).unwrap();
    m.revoke_all().unwrap();
    m.manager.close_all();
    w.input.extend(words(RESTORE_SECOND, 13));
    w
}

/// A second member with a fresh state directory restores every task
/// (while the rest of the input arrives) and crashes at operation `n`; a
/// third one takes over on a fresh state directory, or on the second's
/// partially restored one.
fn crash_during_restore(reuse_partial_state: bool) {
    let (total, truth, full) = {
        let mut w = restore_setup();
        let truth = Truth::of(&w.input);
        let changelog = w.cluster.records(&format!("{APP}-{WORD_STORE}-changelog"), 0).len();
        assert!(changelog > RESTORE_BUDGET, "changelog partition 0: {changelog} records");
        let dir = fresh_dir();
        let restores = Restores::default();
        let mut m = listened_member(&w.cluster, &dir, &restores);
        m.assign_all().unwrap();
        assert!(
            m.manager.is_restoring() && m.manager.running().is_empty(),
            "every task restores"
        );
        w.feed(&mut m, RESTORE_FEED).unwrap();
        check(&w.cluster, &m, &truth).unwrap();
        let full = restores.0.borrow().clone();
        (m.transport.operations(), truth, full)
    };
    // Crash points after which the third member resumed a store of the
    // second's half-way (reuse_partial_state only).
    let mut resumed = Vec::new();
    every_crash_point("restore", total, |n| {
        let mut w = restore_setup();
        let dir = fresh_dir();
        let mut m = member(&w.cluster, &dir);
        m.transport.crash_at(n);
        let r = w.run(&mut m, RESTORE_FEED);
        crashed(m, r)?;
        let dir = next_dir(dir, reuse_partial_state);
        let restores = Restores::default();
        let mut m = listened_member(&w.cluster, &dir, &restores);
        w.run(&mut m, RESTORE_FEED)
            .map_err(|e| format!("recovery failed: {e}"))?;
        check(&w.cluster, &m, &truth)?;
        // A store the second member restored half-way (its checkpoint
        // stands between the two steps) is resumed: fewer records than a
        // restore from scratch.
        if restores.0.borrow().iter().any(|(id, r)| *r > 0 && *r < full[id]) {
            resumed.push(n);
        }
        Ok(())
    });
    if reuse_partial_state {
        println!("crash points whose partial restore was resumed: {resumed:?}");
        assert!(!resumed.is_empty(), "no crash point left a store half restored");
    }
}

#[test]
fn crash_at_every_operation_of_a_restore_then_recover_with_a_fresh_state_dir() {
    crash_during_restore(false);
}

#[test]
fn crash_at_every_operation_of_a_restore_then_recover_on_the_partially_restored_state() {
    crash_during_restore(true);
}

// ---------------------------------------------------------------------
// 3. A crash while revoking.

const REVOKE_FIRST: usize = 100;
const REVOKE_SECOND: usize = 42;
const REVOKE_FEED: Feed = Feed { chunk: 16, every: 48 };

/// A member that processed a first part of the input with commits, then
/// more without: every task has uncommitted work (records processed,
/// store changes and table outputs in the write caches; outputs sent but
/// perhaps not delivered), as asserted.
fn revoke_setup(dir: &Dir) -> (World, Member) {
    let input = [words(REVOKE_FIRST, 17), words(REVOKE_SECOND, 19)].concat();
    let mut w = World::new(input);
    let mut m = member(&w.cluster, dir);
    w.produce_up_to(REVOKE_FIRST);
    m.assign_all().unwrap();
    m.run_until_idle(REVOKE_FEED.every, NOW).unwrap();
    // The poll loop reads topics in topic order and a poll's repartition
    // records are read by the next poll: a pipeline of three parts.
    let third = REVOKE_SECOND / 3;
    let (a, b, c) = (
        REVOKE_FIRST + third,
        REVOKE_FIRST + 2 * third,
        REVOKE_FIRST + REVOKE_SECOND,
    );
    w.produce_up_to(a);
    m.poll(third, NOW, true).unwrap(); // a → by-word
    m.poll(usize::MAX, NOW, true).unwrap(); // by-word(a) → letters
    w.produce_up_to(b);
    m.poll(third, NOW, true).unwrap(); // b → by-word
    w.produce_up_to(c);
    // c, by-word(b) and letters(a): processed, not committed.
    let n = m.poll(usize::MAX, NOW, false).unwrap();
    assert_eq!(m.manager.uncommitted() as usize, n);
    let idle: Vec<String> = m
        .manager
        .running()
        .iter()
        .filter(|(_, t)| !t.has_changes())
        .map(|(id, _)| id.to_string())
        .collect();
    assert!(
        idle.is_empty() && m.manager.running().len() == TASKS,
        "tasks without uncommitted work: {idle:?}"
    );
    (w, m)
}

/// The member of [`revoke_setup`] loses its partitions and crashes at
/// operation `n` of the revoke; a new member takes over.
fn crash_during_revoke(keep_local_state: bool) {
    let (total, truth) = {
        let dir = fresh_dir();
        let (mut w, mut m) = revoke_setup(&dir);
        let truth = Truth::of(&w.input);
        let before = m.transport.operations();
        m.revoke_all().unwrap();
        let total = m.transport.operations() - before;
        m.manager.close_all();
        drop(m);
        recover(&mut w, &dir, REVOKE_FEED, &truth).unwrap();
        (total, truth)
    };
    every_crash_point("revoke", total, |n| {
        let dir = fresh_dir();
        let (mut w, mut m) = revoke_setup(&dir);
        m.transport.crash_at(m.transport.operations() + n);
        let r = m.revoke_all();
        crashed(m, r)?;
        recover(&mut w, &next_dir(dir, keep_local_state), REVOKE_FEED, &truth)?;
        rebuild(&mut w, &truth)
    });
}

#[test]
fn crash_at_every_operation_of_a_revoke_then_recover_with_the_local_state() {
    crash_during_revoke(true);
}

#[test]
fn crash_at_every_operation_of_a_revoke_then_recover_from_the_changelogs() {
    crash_during_revoke(false);
}

// ---------------------------------------------------------------------
// 4. Repartition de-duplication matters.

const DEDUP_RECORDS: usize = 48;
const DEDUP_FEED: Feed = Feed { chunk: 6, every: 18 };

/// Per partition of a repartition topic: the origin of each record as
/// (upstream partition, upstream input offset, index).
fn origins(cluster: &MemoryCluster, topic: &str) -> Vec<Vec<(i32, i64, u32)>> {
    (0..cluster.partitions(topic).expect("repartition topic"))
        .map(|p| {
            cluster
                .records(topic, p)
                .iter()
                .map(|r| {
                    assert!(
                        r.headers.iter().all(|(k, _)| k != ORIGIN_HEADER),
                        "the origin is in the value, not a header"
                    );
                    let (o, _) = unwrap_repartition_value(r.value.as_deref()).expect("a value envelope");
                    let o = o.expect("a repartition record has an origin");
                    // The upstream key folds the source topic index into
                    // bits 20.. (manager/records.rs).
                    (o.upstream_partition & 0xF_FFFF, o.offset, o.index)
                })
                .collect()
        })
        .collect()
}

/// The group's committed next offset of each partition of `topic` (0 if
/// none).
fn committed(cluster: &MemoryCluster, topic: &str) -> Vec<i64> {
    let partitions: Vec<(String, i32)> = (0..cluster.partitions(topic).unwrap())
        .map(|p| (topic.to_string(), p))
        .collect();
    cluster
        .transport()
        .committed(&partitions)
        .unwrap()
        .into_iter()
        .map(|g| g.offset.unwrap_or(0))
        .collect()
}

/// Records of a repartition topic whose origin lies at or past the
/// upstream task's committed input offset: delivered, but not covered by
/// the upstream checkpoint the group points at, so the upstream replays
/// them.
fn uncovered(origins: &[Vec<(i32, i64, u32)>], upstream_committed: &[i64]) -> usize {
    origins
        .iter()
        .flatten()
        .filter(|(up, offset, _)| *offset >= upstream_committed[*up as usize])
        .count()
}

/// Records of a repartition topic that repeat an origin already in it.
fn duplicates(origins: &[Vec<(i32, i64, u32)>]) -> usize {
    origins
        .iter()
        .map(|p| p.len() - p.iter().collect::<BTreeSet<_>>().len())
        .sum()
}

/// What a downstream count without de-duplication would hold after the
/// recovery: every record of the repartition topic counted once.
fn naive_counts(cluster: &MemoryCluster, topic: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in cluster.all_records(topic) {
        *out.entry(String::from_utf8(r.key.unwrap()).unwrap()).or_insert(0) += 1;
    }
    out
}

/// Crashes at every operation and recovers from the changelogs (a fresh
/// state directory: the new owner starts exactly at the checkpoints the
/// group's offsets point at, so the replay is predictable). Where an
/// upstream task's repartition records were delivered but its checkpoint
/// was not (or its offsets, which point at it, were not committed), the
/// upstream replays them: the repartition topic then holds exactly those
/// records twice. Asserted for both repartition topics, with exact counts
/// downstream.
///
/// Without de-duplication the downstream task, back at its own
/// checkpoint (which precedes every duplicate: duplicates are appended by
/// the recovery), would apply every record of the topic past it: its
/// counts would be [`naive_counts`], which differ from the truth wherever
/// there are duplicates (asserted), so `check` would fail.
#[test]
fn an_upstream_replay_duplicates_repartition_records_and_downstream_skips_them() {
    let input = words(DEDUP_RECORDS, 23);
    let truth = Truth::of(&input);
    let total = {
        let mut w = World::new(input.clone());
        let dir = fresh_dir();
        let mut m = member(&w.cluster, &dir);
        w.run(&mut m, DEDUP_FEED).unwrap();
        check(&w.cluster, &m, &truth).unwrap();
        assert_eq!(duplicates(&origins(&w.cluster, &by_word_topic())), 0);
        m.transport.operations()
    };
    let topics = [by_word_topic(), by_letter_topic()];
    // Per repartition topic: the crash points that left duplicates in it.
    let mut replayed: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    every_crash_point("dedup", total, |n| {
        let mut w = World::new(input.clone());
        let dir = fresh_dir();
        let mut m = member(&w.cluster, &dir);
        m.transport.crash_at(n);
        let r = w.run(&mut m, DEDUP_FEED);
        crashed(m, r)?;
        // Delivered but uncovered: sub-topology 0's records past its
        // committed `words` offsets, sub-topology 1's past its committed
        // by-word offsets.
        let uncovered_before = [
            uncovered(&origins(&w.cluster, &topics[0]), &committed(&w.cluster, WORDS)),
            uncovered(&origins(&w.cluster, &topics[1]), &committed(&w.cluster, &topics[0])),
        ];
        recover(&mut w, &next_dir(dir, false), DEDUP_FEED, &truth)?;
        for (i, topic) in topics.iter().enumerate() {
            let o = origins(&w.cluster, topic);
            let distinct: usize = o.iter().map(|p| p.iter().collect::<BTreeSet<_>>().len()).sum();
            if distinct != truth.records {
                return Err(format!("{topic}: {distinct} distinct origins, want {}", truth.records));
            }
            let dups = duplicates(&o);
            if dups != uncovered_before[i] {
                return Err(format!(
                    "{topic}: {dups} duplicates after the recovery, but {} records were delivered past the upstream checkpoint",
                    uncovered_before[i]
                ));
            }
            if dups > 0 {
                let naive = naive_counts(&w.cluster, topic);
                let want = if i == 0 { &truth.words } else { &truth.letters };
                if naive.values().sum::<u64>() != (truth.records + dups) as u64 || &naive == want {
                    return Err(format!("{topic}: counting every record would give {naive:?}"));
                }
                replayed[i].push(n);
            }
        }
        Ok(())
    });
    println!(
        "crash points that left duplicates ({total} operations): {} {:?}, {} {:?}",
        topics[0], replayed[0], topics[1], replayed[1]
    );
    for (topic, points) in topics.iter().zip(&replayed) {
        assert!(
            !points.is_empty(),
            "no crash point left duplicates in {topic}: the test proves nothing"
        );
    }
}

// ---------------------------------------------------------------------
// 5. Restores skip the changelog records of commits that never finished.

/// All there from the start, so that the crashed member consumes the
/// input first and its later commits are sub-topology 1's and 2's: the
/// second member's single-record polls then reach their tasks at once.
const SKIP_RECORDS: usize = 48;
const SKIP_FEED: Feed = Feed {
    chunk: SKIP_RECORDS,
    every: 6,
};
/// Polls of the short-lived second member once its restores are done, one
/// record and a commit each: too few to rewrite every key.
const SKIP_POLLS: usize = 2;

/// The checkpoint that the group's offsets of `(topic, partition)` point
/// at, if any.
fn pointed_checkpoint(cluster: &MemoryCluster, topic: &str, partition: i32) -> Option<TaskCheckpoint> {
    let offset = cluster
        .transport()
        .committed(&[(topic.to_string(), partition)])
        .unwrap()
        .remove(0);
    let at = parse_checkpoint_pointer(&offset.metadata)?;
    let record = cluster.records(&format!("{APP}-checkpoints"), 0).remove(at as usize);
    Some(TaskCheckpoint::decode(&record.value?).expect("a checkpoint"))
}

/// A store as a restore from its changelog partition up to `position`
/// would build it, skipping `skips` or not.
fn replay(
    cluster: &MemoryCluster,
    store: &str,
    partition: i32,
    position: i64,
    skips: &[(i64, i64)],
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let records = cluster.records(&format!("{APP}-{store}-changelog"), partition);
    for (offset, r) in records.iter().enumerate().take(position as usize) {
        let offset = offset as i64;
        if skips.iter().any(|(a, b)| (*a..*b).contains(&offset)) {
            continue;
        }
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        match &r.value {
            Some(v) => out.insert(key, u64::from_be_bytes(v.as_slice().try_into().unwrap())),
            None => out.remove(&key),
        };
    }
    out
}

/// Crashes at every operation; a second member takes over (on the same
/// state directory: local state; or a fresh one: restore), restores if
/// need be, commits two single records and is killed in turn; a third one (fresh state
/// directory) restores the second's checkpoints and runs until idle: the
/// result is exact.
///
/// Where the crashed commit had written changelog records past the
/// checkpoint the second member starts from (records of a commit that
/// never finished), the second member's checkpoints name them as ranges to
/// skip, and the third member's restore reads across them. Asserted to
/// matter: for some crash points, a restore that did not skip them would
/// build other counts than the checkpoint stands for (the single-record
/// commits rewrite too few keys to hide them), so `check` would fail.
fn a_later_restore_skips(keep_local_state: bool) {
    let input = words(SKIP_RECORDS, 31);
    let truth = Truth::of(&input);
    let total = {
        let mut w = World::new(input.clone());
        let dir = fresh_dir();
        let mut m = member(&w.cluster, &dir);
        w.run(&mut m, SKIP_FEED).unwrap();
        m.transport.operations()
    };
    let mut matters = Vec::new();
    every_crash_point("skip", total, |n| {
        let mut w = World::new(input.clone());
        let dir = fresh_dir();
        let mut m = member(&w.cluster, &dir);
        m.transport.crash_at(n);
        let r = w.run(&mut m, SKIP_FEED);
        crashed(m, r)?;
        let dir = next_dir(dir, keep_local_state);
        let mut m = member(&w.cluster, &dir);
        let mut short = || -> Result<(), RuntimeError> {
            m.assign_all()?;
            while m.manager.is_restoring() {
                m.poll(1, NOW, true)?;
            }
            for _ in 0..SKIP_POLLS {
                m.poll(1, NOW, true)?;
            }
            Ok(())
        };
        short().map_err(|e| format!("second member: {e}"))?;
        drop(m);
        drop(dir);
        let mut skipped = false;
        for (store, topic) in [(WORD_STORE, by_word_topic()), (LETTER_STORE, by_letter_topic())] {
            for p in 0..2 {
                let Some(cp) = pointed_checkpoint(&w.cluster, &topic, p) else {
                    continue;
                };
                let Some((_, position)) = cp.changelog.iter().find(|(s, _)| s == store) else {
                    continue;
                };
                let skips: Vec<(i64, i64)> = cp
                    .changelog_skips
                    .iter()
                    .filter(|(s, _, _)| s == store)
                    .map(|(_, a, b)| (*a, *b))
                    .collect();
                if replay(&w.cluster, store, p, *position, &skips) != replay(&w.cluster, store, p, *position, &[]) {
                    skipped = true;
                }
            }
        }
        if skipped {
            matters.push(n);
        }
        recover(&mut w, &fresh_dir(), SKIP_FEED, &truth)
    });
    println!("crash points whose skipped changelog ranges matter ({total} operations): {matters:?}");
    assert!(
        !matters.is_empty(),
        "no crash point left a changelog range to skip: the test proves nothing"
    );
}

#[test]
fn a_restore_after_a_recovery_on_the_local_state_skips_the_records_of_the_unfinished_commit() {
    a_later_restore_skips(true);
}

#[test]
fn a_restore_after_a_recovery_from_the_changelogs_skips_the_records_of_the_unfinished_commit() {
    a_later_restore_skips(false);
}
