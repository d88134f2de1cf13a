//! The user-clicks scenario through `weir dev-broker` and `weir run`, with a
//! known answer: exact counts after a clean run, after SIGKILLs, after a
//! wiped state directory, with two instances sharing the work, and with
//! malformed lines going to the dead-letter topic. The core ones run on a
//! real broker too (`noida-db`, the tests ending in `_on_noida`), from the
//! same body.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use weir_connectors::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use weir_connectors::kafka::rdkafka::{Offset, TopicPartitionList};
use weir_connectors::kafka::ClientSettings;

use crate::harness::*;

pub(crate) const APP: &str = "user-clicks";
pub(crate) const INPUT: &str = "user_clickstream";
pub(crate) const OUTPUT: &str = "user_click_aggregation";
pub(crate) const REPARTITION: &str = "user-clicks-clicks-per-user-repartition";
const DLQ: &str = "user-clicks-dlq";

/// How long the daemon may take to reach the final answer: bounds a hang.
const ANSWER: Duration = Duration::from_secs(60);
/// How long it may take to show output after a (re)start, which includes a
/// consumer-group rebalance and, after a wipe, a restore.
const PROGRESS: Duration = Duration::from_secs(40);

/// Deterministic click lines with a known answer: users 1..=100, pages
/// 1..=10, times increasing by a millisecond per line (SplitMix64).
pub(crate) struct Clicks {
    state: u64,
    index: u64,
    counts: BTreeMap<u32, u64>,
}

impl Clicks {
    pub(crate) fn new(seed: u64) -> Clicks {
        Clicks {
            state: seed,
            index: 0,
            counts: BTreeMap::new(),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next valid line (and counts it).
    fn click(&mut self) -> String {
        let r = self.next_u64();
        let user = (r % 100) as u32 + 1;
        let page = (r >> 32) % 10 + 1;
        let (secs, millis) = (1_763_719_200 + self.index / 1000, self.index % 1000);
        self.index += 1;
        *self.counts.entry(user).or_default() += 1;
        format!("User {user} clicked on /page{page} at {secs}.{millis:03}")
    }

    /// `n` valid lines, newline-terminated.
    pub(crate) fn lines(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * 48);
        for _ in 0..n {
            out.extend_from_slice(self.click().as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// The final output text per user key, as the daemon must leave it.
    pub(crate) fn answer(&self) -> BTreeMap<String, String> {
        self.counts
            .iter()
            .map(|(u, n)| (u.to_string(), format!("User {u} has clicked {n} times.")))
            .collect()
    }
}

/// Compares the latest output per key with the answer.
pub(crate) fn check_answer(reader: &TopicReader, answer: &BTreeMap<String, String>) -> Result<(), String> {
    let latest = reader.latest_by_key()?;
    let mut wrong: Vec<String> = Vec::new();
    for (user, want) in answer {
        match latest.get(user) {
            Some(got) if got == want => {}
            Some(got) => wrong.push(format!("user {user}: {got:?}, want {want:?}")),
            None => wrong.push(format!("user {user}: no output yet, want {want:?}")),
        }
    }
    for (user, got) in &latest {
        if !answer.contains_key(user) {
            wrong.push(format!("unexpected key {user:?}: {got:?}"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} users differ ({} output records read), e.g. {}",
            wrong.len(),
            answer.len(),
            reader.records.len(),
            wrong[..wrong.len().min(3)].join("; ")
        ))
    }
}

/// Records in `topic` so far (0 if it does not exist yet).
pub(crate) fn total_records(brokers: &str, topic: &str) -> i64 {
    match topic_exists(brokers, topic) {
        true => watermarks(brokers, topic).iter().map(|(_, _, high)| high).sum(),
        false => 0,
    }
}

fn topic_exists(brokers: &str, topic: &str) -> bool {
    let c: BaseConsumer = ClientSettings::new(brokers)
        .standalone_consumer_config()
        .create()
        .expect("consumer");
    c.fetch_metadata(Some(topic), Duration::from_secs(10))
        .map(|md| {
            md.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
        .unwrap_or(false)
}

/// `(topic, partition, committed offset or -1, high watermark)` of every
/// partition of `topics`, for the application's consumer group.
fn committed_positions(brokers: &str, topics: &[&str]) -> Result<Vec<(String, i32, i64, i64)>, String> {
    let group: BaseConsumer = ClientSettings::new(brokers)
        .with("client.id", "weir-e2e-offsets")
        .consumer_config(APP)
        .create()
        .expect("group consumer");
    let mut tpl = TopicPartitionList::new();
    let mut highs = BTreeMap::new();
    for &topic in topics {
        if !topic_exists(brokers, topic) {
            return Err(format!("{topic} does not exist yet"));
        }
        for (p, _, high) in watermarks(brokers, topic) {
            tpl.add_partition(topic, p);
            highs.insert((topic.to_string(), p), high);
        }
    }
    let committed = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| format!("fetching committed offsets: {e}"))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (
                e.topic().to_string(),
                e.partition(),
                at,
                highs[&(e.topic().to_string(), e.partition())],
            )
        })
        .collect())
}

/// `Ok` when the application's consumer group has committed every input
/// record (source and repartition topics at their high watermarks): after
/// that, nothing will be replayed and the output is final.
pub(crate) fn all_input_committed(brokers: &str) -> Result<(), String> {
    let behind: Vec<String> = committed_positions(brokers, &[INPUT, REPARTITION])?
        .into_iter()
        // An empty partition (keyless input may leave one empty) has
        // nothing to commit: no offset (-1) is as good as 0 there.
        .filter(|(_, _, at, high)| at != high && !(*high == 0 && *at < 0))
        .map(|(t, p, at, high)| format!("{t}/{p} committed {at} of {high}"))
        .collect();
    if behind.is_empty() {
        Ok(())
    } else {
        Err(behind.join(", "))
    }
}

/// "committed C of H input records", for logs.
pub(crate) fn input_committed_summary(brokers: &str) -> String {
    match committed_positions(brokers, &[INPUT]) {
        Ok(positions) => {
            let committed: i64 = positions.iter().map(|(_, _, at, _)| (*at).max(0)).sum();
            let high: i64 = positions.iter().map(|(_, _, _, high)| high).sum();
            format!("committed {committed} of {high} input records")
        }
        Err(e) => e,
    }
}

/// Waits until the output shows the exact answer and every input record is
/// committed, then checks the answer once more (the output written before
/// that commit is complete, and nothing will be replayed any more).
pub(crate) fn wait_for_exact_answer(brokers: &str, answer: &BTreeMap<String, String>, daemons: &mut [&mut Daemon]) {
    let mut reader = TopicReader::open(brokers, OUTPUT, PROGRESS);
    wait_for(
        "every user's latest count in user_click_aggregation to be exact",
        ANSWER,
        || {
            for d in daemons.iter_mut() {
                d.assert_running();
            }
            reader.catch_up(Duration::from_secs(30));
            check_answer(&reader, answer)
        },
    );
    wait_for("the application to commit all its input", ANSWER, || {
        for d in daemons.iter_mut() {
            d.assert_running();
        }
        all_input_committed(brokers)
    });
    reader.catch_up(Duration::from_secs(30));
    if let Err(e) = check_answer(&reader, answer) {
        panic!("the answer changed after all input was committed: {e}");
    }
}

/// Waits until `daemon` has written more output than `mark` records, or
/// has committed all input there is so far (when its predecessor had
/// committed everything before it was killed, a restarted daemon has
/// nothing to write until more input arrives).
pub(crate) fn wait_for_progress(brokers: &str, daemon: &mut Daemon, mark: i64) -> i64 {
    wait_for("the daemon's output to grow", PROGRESS, || {
        daemon.assert_running();
        let now = total_records(brokers, OUTPUT);
        if now > mark {
            return Ok(now);
        }
        match all_input_committed(brokers) {
            Ok(()) => Ok(now),
            Err(behind) => Err(format!("{now} output records, {mark} before; {behind}")),
        }
    })
}

/// A random seed for the moments of kills, printed so that a failing run
/// can be repeated (`WEIR_E2E_SEED=...`).
pub(crate) fn moment_rng(test: &str) -> SmallRng {
    let seed = std::env::var("WEIR_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    eprintln!("{test}: kill moments from seed {seed} (WEIR_E2E_SEED={seed} repeats them)");
    SmallRng::seed_from_u64(seed)
}

#[test]
fn user_clicks_counts_200k_lines_exactly() {
    counts_200k_lines_exactly(BrokerKind::Dev);
}

#[test]
fn user_clicks_counts_200k_lines_exactly_on_noida() {
    counts_200k_lines_exactly(BrokerKind::Noida);
}

fn counts_200k_lines_exactly(kind: BrokerKind) {
    let _heavy = heavy_test_lock();
    let broker = TestBroker::start(kind, 4);
    let addr = broker.addr();
    broker.create_topic(INPUT, 4);
    let mut clicks = Clicks::new(1);
    produce(addr, INPUT, &clicks.lines(200_000));
    assert_topic_holds(addr, INPUT, 200_000);

    let mut daemon = Daemon::new("user-clicks", addr, &[APP], &[]);
    daemon.start();
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    daemon.stop();
    assert_topic_holds(addr, INPUT, 200_000);
}

/// Produces `chunks` one after the other with `pause` between them, so
/// that input keeps arriving while the test kills and restarts daemons.
pub(crate) fn produce_paced(brokers: &str, chunks: &[Vec<u8>], pause: Duration) {
    let producer = LineProducer::new(brokers, INPUT);
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        producer.send_lines(chunk);
    }
}

/// 200,000 clicks in 200 chunks.
pub(crate) fn paced_chunks(clicks: &mut Clicks) -> Vec<Vec<u8>> {
    (0..200).map(|_| clicks.lines(1_000)).collect()
}

/// Kills the daemon with SIGKILL `kills` times at random moments while
/// input arrives (each time once its output has grown since its last
/// start), restarting it each time, optionally with its state directory
/// deleted; then checks the counts are exact.
///
/// On noida the daemon runs with `--instance-id` (static membership) and
/// each restart keeps it: noida never expires the membership of a killed
/// consumer, so a new dynamic member would wait for its JoinGroup for
/// minutes, while a static member that comes back replaces its old self at
/// once (as on Kafka within the session timeout).
fn user_clicks_with_kills(test: &str, kind: BrokerKind, seed: u64, kills: usize, wipe_state: bool) {
    let mut moments = moment_rng(test);
    let broker = TestBroker::start(kind, 4);
    let addr = broker.addr();
    broker.create_topic(INPUT, 4);
    let mut clicks = Clicks::new(seed);
    let chunks = paced_chunks(&mut clicks);
    // Input arrives continuously and commits are a second apart, so a kill
    // finds processed but uncommitted records (and, at times, a commit in
    // progress) to be replayed.
    let static_membership: &[&str] = match kind {
        BrokerKind::Dev => &[],
        BrokerKind::Noida => &["--instance-id", "user-clicks-kills"],
    };
    let mut daemon = Daemon::new("user-clicks", addr, &[APP], static_membership);
    daemon.start();
    std::thread::scope(|s| {
        let producer = s.spawn(|| produce_paced(addr, &chunks, Duration::from_millis(60)));
        let mut mark = 0;
        for round in 1..=kills {
            wait_for_progress(addr, &mut daemon, mark);
            let delay = Duration::from_millis(moments.gen_range(0..1000));
            std::thread::sleep(delay);
            daemon.kill9();
            eprintln!(
                "{test}: SIGKILL {round} {delay:?} after the output grew; {}",
                input_committed_summary(addr)
            );
            if wipe_state {
                assert!(
                    daemon.state_dir().exists(),
                    "the daemon keeps its state under --state-dir"
                );
                daemon.wipe_state();
            }
            mark = total_records(addr, OUTPUT);
            daemon.start();
        }
        producer.join().expect("producer thread");
    });
    assert_topic_holds(addr, INPUT, 200_000);
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    daemon.stop();
}

#[test]
fn user_clicks_exact_after_three_sigkills() {
    let _heavy = heavy_test_lock();
    user_clicks_with_kills("user_clicks_exact_after_three_sigkills", BrokerKind::Dev, 2, 3, false);
}

#[test]
fn user_clicks_exact_after_three_sigkills_on_noida() {
    let _heavy = heavy_test_lock();
    user_clicks_with_kills(
        "user_clicks_exact_after_three_sigkills_on_noida",
        BrokerKind::Noida,
        2,
        3,
        false,
    );
}

#[test]
fn user_clicks_restores_a_deleted_state_dir_from_the_changelog() {
    let _heavy = heavy_test_lock();
    user_clicks_with_kills(
        "user_clicks_restores_a_deleted_state_dir_from_the_changelog",
        BrokerKind::Dev,
        3,
        1,
        true,
    );
}

#[test]
fn user_clicks_restores_a_deleted_state_dir_from_the_changelog_on_noida() {
    let _heavy = heavy_test_lock();
    user_clicks_with_kills(
        "user_clicks_restores_a_deleted_state_dir_from_the_changelog_on_noida",
        BrokerKind::Noida,
        3,
        1,
        true,
    );
}

#[test]
fn user_clicks_two_instances_one_stopped_mid_run() {
    let _heavy = heavy_test_lock();
    let mut moments = moment_rng("user_clicks_two_instances_one_stopped_mid_run");
    let broker = DevBroker::start(4);
    let addr = broker.addr();
    let mut clicks = Clicks::new(4);
    let chunks = paced_chunks(&mut clicks);
    let mut a = Daemon::new("instance-a", addr, &[APP], &[]);
    let mut b = Daemon::new("instance-b", addr, &[APP], &[]);
    a.start();
    b.start();
    std::thread::scope(|s| {
        let producer = s.spawn(|| produce_paced(addr, &chunks, Duration::from_millis(40)));
        // B must have had a share of the work before it leaves.
        wait_until("instance B to be assigned tasks", PROGRESS, || {
            a.assert_running();
            b.assert_running();
            b.proc()
                .stderr()
                .lines()
                .any(|l| l.contains("partitions assigned") && !l.contains("tasks=[]"))
        });
        let mark = total_records(addr, OUTPUT);
        wait_for_progress(addr, &mut b, mark);
        std::thread::sleep(Duration::from_millis(moments.gen_range(0..1000)));
        // B leaves mid-run; A takes over its tasks, restores their state and
        // counts the rest.
        b.stop();
        eprintln!("instance B stopped; {}", input_committed_summary(addr));
        producer.join().expect("producer thread");
    });
    assert_topic_holds(addr, INPUT, 200_000);
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut a]);
    a.stop();
}

/// A malformed line of one of several kinds, unique by `i`, and a part of
/// the error the daemon must give for it.
fn malformed(i: usize) -> (Vec<u8>, &'static str) {
    match i % 5 {
        0 => (format!("garbage line {i}").into_bytes(), "not a click line"),
        1 => (
            format!("User 0 clicked on /page1 at {i}.5").into_bytes(),
            "out of range",
        ),
        2 => (
            format!("User 17 clicked on page3 at {i}").into_bytes(),
            "does not start with '/'",
        ),
        3 => (
            format!("User x{i} clicked on /page3 at 1.0").into_bytes(),
            "not a decimal number",
        ),
        _ => {
            let mut line = b"\xff\xfe not utf-8 ".to_vec();
            line.extend_from_slice(i.to_string().as_bytes());
            (line, "UTF-8")
        }
    }
}

#[test]
fn user_clicks_malformed_lines_go_to_the_dlq_with_their_offsets() {
    malformed_lines_go_to_the_dlq_with_their_offsets(BrokerKind::Dev);
}

#[test]
fn user_clicks_malformed_lines_go_to_the_dlq_with_their_offsets_on_noida() {
    malformed_lines_go_to_the_dlq_with_their_offsets(BrokerKind::Noida);
}

fn malformed_lines_go_to_the_dlq_with_their_offsets(kind: BrokerKind) {
    let _heavy = heavy_test_lock();
    let broker = TestBroker::start(kind, 3);
    let addr = broker.addr();
    broker.create_topic(INPUT, 3);
    let mut clicks = Clicks::new(5);
    let mut bad: BTreeMap<Vec<u8>, &'static str> = BTreeMap::new();
    let mut input = Vec::new();
    for i in 0..40_000usize {
        if i % 97 == 13 {
            let (line, why) = malformed(bad.len());
            input.extend_from_slice(&line);
            bad.insert(line, why);
        } else {
            input.extend_from_slice(clicks.click().as_bytes());
        }
        input.push(b'\n');
    }
    produce(addr, INPUT, &input);
    assert_topic_holds(addr, INPUT, 40_000);

    // Where each malformed line landed.
    let mut expected: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    for r in read_topic(addr, INPUT) {
        let value = r.value.clone().unwrap_or_default();
        if bad.contains_key(&value) {
            expected.insert((r.partition, r.offset), value);
        }
    }
    assert_eq!(expected.len(), bad.len(), "every malformed line was produced");

    let mut daemon = Daemon::new("user-clicks", addr, &[APP], &[]);
    daemon.start();
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);

    let mut dlq = TopicReader::open(addr, DLQ, PROGRESS);
    dlq.catch_up(Duration::from_secs(30));
    daemon.stop();
    let mut seen: BTreeSet<(i32, i64)> = BTreeSet::new();
    for r in &dlq.records {
        let header = |name: &str| {
            r.header(name)
                .unwrap_or_else(|| panic!("DLQ record {r:?} has no {name:?} header"))
        };
        assert_eq!(header("topic"), INPUT, "{r:?}");
        let partition: i32 = header("partition")
            .parse()
            .expect("partition header is a decimal number");
        let offset: i64 = header("offset").parse().expect("offset header is a decimal number");
        let want = expected
            .get(&(partition, offset))
            .unwrap_or_else(|| panic!("DLQ record for {INPUT}/{partition}@{offset}, which is no malformed line"));
        assert_eq!(r.value.as_deref(), Some(&want[..]), "the DLQ keeps the raw value");
        let error = header("error");
        let why = bad[want];
        assert!(
            error.contains(why),
            "error {error:?} for {:?} should say {why:?}",
            r.value_str()
        );
        assert!(
            seen.insert((partition, offset)),
            "{INPUT}/{partition}@{offset} dead-lettered twice"
        );
    }
    let missing: Vec<_> = expected.keys().filter(|k| !seen.contains(k)).collect();
    assert!(missing.is_empty(), "malformed lines missing from {DLQ}: {missing:?}");
}

#[test]
fn run_without_brokers_starts_an_embedded_broker_and_prints_its_address() {
    // No --brokers and no --state-dir: the embedded broker, and
    // ./weir-state in the process's (temporary) working directory. The
    // generator, on by default on the embedded broker, is off: its clicks
    // would land on the same users as the test's lines, and the answer is
    // exact only for the lines the test produces.
    let mut daemon = Proc::spawn("run-embedded", &["run", APP, "--no-generate"]);
    let line = wait_for("the daemon to print the embedded broker's address", STARTUP, || {
        daemon.assert_running();
        let out = daemon.stdout();
        match out.split_once('\n') {
            Some((first, _)) => Ok(first.to_string()),
            None => Err(format!("stdout so far: {out:?}")),
        }
    });
    let addr = line
        .strip_prefix("embedded Kafka broker at ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let mut clicks = Clicks::new(6);
    produce(addr, INPUT, &clicks.lines(2_000));
    let mut reader = TopicReader::open(addr, OUTPUT, PROGRESS);
    wait_for(
        "every user's latest count in user_click_aggregation to be exact",
        ANSWER,
        || {
            daemon.assert_running();
            reader.catch_up(Duration::from_secs(30));
            check_answer(&reader, &clicks.answer())
        },
    );
    daemon.stop();
}

/// `weir run` on its embedded broker, stopped and restarted on the same
/// `--state-dir` and `--broker-dir`, keeps every store and every topic:
/// the second run needs no restore, its counts go on from the first run's,
/// and the output topic still holds the first run's records; after a
/// SIGKILL too. (On librdkafka's in-memory mock, a restart lost every
/// topic and then wiped the stores as "ahead of their changelog".)
#[test]
fn a_restart_on_the_same_directories_keeps_every_store_and_topic() {
    let dirs = tempfile::tempdir().expect("temp dir");
    let state = dirs.path().join("state");
    let broker = dirs.path().join("broker");
    let args = [
        "run",
        APP,
        "--no-generate",
        "--state-dir",
        state.to_str().expect("utf-8"),
        "--broker-dir",
        broker.to_str().expect("utf-8"),
    ];
    let start = |n: usize| {
        let mut daemon = Proc::spawn(&format!("run-embedded-restart#{n}"), &args);
        let addr = embedded_broker_addr(&mut daemon);
        (daemon, addr)
    };
    let exact = |daemon: &mut Proc, addr: &str, clicks: &Clicks| {
        let mut reader = TopicReader::open(addr, OUTPUT, PROGRESS);
        wait_for("every user's latest count to be exact", ANSWER, || {
            daemon.assert_running();
            reader.catch_up(Duration::from_secs(30));
            check_answer(&reader, &clicks.answer())
        });
        reader.records.len()
    };
    let mut clicks = Clicks::new(12);

    let (mut first, addr) = start(1);
    produce(&addr, INPUT, &clicks.lines(2_000));
    let outputs = exact(&mut first, &addr, &clicks);
    first.stop();

    let (mut second, addr) = start(2);
    let http = daemon_http_addr(&mut second);
    wait_ready(&http, &mut second);
    assert!(
        !second.stderr().contains("restoring state from changelog"),
        "a clean restart on the same state dir needs no restore:\n{}",
        second.logs()
    );
    assert!(
        total_records(&addr, OUTPUT) >= outputs as i64,
        "the output topic keeps the first run's records"
    );
    produce(&addr, INPUT, &clicks.lines(1_000));
    exact(&mut second, &addr, &clicks);
    second.kill9();

    let (mut third, addr) = start(3);
    produce(&addr, INPUT, &clicks.lines(1_000));
    exact(&mut third, &addr, &clicks);
    third.stop();
}

/// A malformed line of any size the producer accepts is dead-lettered,
/// counted, and processing goes on: the daemon must not stop on it, and
/// must not commit past it without its dead letter. A 510,000-byte line
/// once made the dead letter (value plus an `error` header quoting the
/// whole line) too large to produce: the daemon exited and, since the
/// revoke on the way out committed, the line was lost.
#[test]
fn huge_malformed_lines_are_dead_lettered_and_processing_goes_on() {
    let _heavy = heavy_test_lock();
    let broker = DevBroker::start(1);
    let addr = broker.addr();
    let mut clicks = Clicks::new(8);
    // The error quotes the line's words: "not a click line: ... got \"...\"".
    let shape = format!("User 5 clicked on /page1 at 1.5 {}", "z".repeat(510_000)).into_bytes();
    // Close to librdkafka's message.max.bytes (1,000,000): the dead letter
    // adds headers to a record that was nearly as large as a record may be.
    let big = format!("garbage {}", "y".repeat(998_000)).into_bytes();
    let mut input = clicks.lines(500);
    for line in [&shape, &big] {
        input.extend_from_slice(line);
        input.push(b'\n');
        input.extend_from_slice(&clicks.lines(500));
    }
    produce(addr, INPUT, &input);
    assert_topic_holds(addr, INPUT, 1_502);

    let mut daemon = Daemon::new("user-clicks-huge", addr, &[APP], &[]);
    daemon.start();
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    let mut dlq = TopicReader::open(addr, DLQ, PROGRESS);
    wait_for("two dead letters", PROGRESS, || {
        dlq.catch_up(Duration::from_secs(10));
        match dlq.records.len() {
            2 => Ok(()),
            n => Err(format!("{n} dead letters")),
        }
    });
    let http = daemon_http_addr(daemon.proc());
    let dlq_total = metric_sum(&http, "weir_dlq_records_total", &[("topology", APP)]).expect("metrics");
    daemon.stop();

    let by_offset: BTreeMap<i64, &Record> = dlq
        .records
        .iter()
        .map(|r| (r.header("offset").expect("offset header").parse().expect("offset"), r))
        .collect();
    assert_eq!(by_offset.keys().copied().collect::<Vec<_>>(), vec![500, 1001]);
    for (offset, line) in [(500, &shape), (1001, &big)] {
        let r = by_offset[&offset];
        assert_eq!(
            r.value.as_deref(),
            Some(&line[..]),
            "the dead letter at {offset} keeps the line whole"
        );
        let error = r.header("error").expect("error header");
        assert!(error.len() <= 1024, "error header of {} bytes", error.len());
        assert!(error.starts_with("not a click line"), "{error:?}");
        assert_eq!(r.header("topic").as_deref(), Some(INPUT));
        assert_eq!(r.header("original-value-size"), None, "nothing was cut");
    }
    assert_eq!(dlq_total, 2.0, "weir_dlq_records_total");
}

/// An idle daemon commits (every commit interval) but writes nothing: no
/// checkpoint records, so the checkpoints topic, which every assignment
/// reads, does not grow with uptime. It once wrote one checkpoint per task
/// per commit, ~17 a second for an idle daemon.
#[test]
fn an_idle_daemon_writes_no_checkpoints() {
    let broker = DevBroker::start(2);
    let addr = broker.addr();
    let mut clicks = Clicks::new(9);
    produce(addr, INPUT, &clicks.lines(1_000));
    let mut daemon = Daemon::new("user-clicks-idle", addr, &[APP], &["--commit-interval-ms", "100"]);
    daemon.start();
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    let http = daemon_http_addr(daemon.proc());
    let labels = [("topology", APP)];
    let metric = |name: &str| metric_sum(&http, name, &labels).expect("metrics");
    let checkpoints_topic = format!("{APP}-checkpoints");
    // Work done: every task has written checkpoints.
    let (commits, written, records) = wait_for("the commit of the last input", PROGRESS, || {
        let written = metric("weir_checkpoints_written_total");
        let records = total_records(addr, &checkpoints_topic);
        if written > 0.0 && records as f64 >= written {
            Ok((metric("weir_commits_total"), written, records))
        } else {
            Err(format!("{written} checkpoints written, {records} on the topic"))
        }
    });
    // Ten more commits with nothing new.
    wait_for("ten idle commits", PROGRESS, || {
        daemon.assert_running();
        match metric("weir_commits_total") {
            n if n >= commits + 10.0 => Ok(()),
            n => Err(format!("{n} commits, {commits} before")),
        }
    });
    assert_eq!(
        metric("weir_checkpoints_written_total"),
        written,
        "checkpoints written while idle"
    );
    assert_eq!(
        total_records(addr, &checkpoints_topic),
        records,
        "records on {checkpoints_topic}"
    );
    // New input is committed as before.
    produce(addr, INPUT, &clicks.lines(10));
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    assert!(metric("weir_checkpoints_written_total") > written);
    daemon.stop();
}

/// A dev broker with 200,000 clicks and a daemon on them; once the first
/// counts are out (most of the input still to do), the broker is stopped
/// (SIGSTOP) and `/readyz` must answer 503 naming the problem. Returns the
/// broker (still stopped), the daemon, its HTTP address and the problem.
fn outage_mid_run(name: &str, clicks: &mut Clicks) -> (DevBroker, Daemon, String, String) {
    let mut broker = DevBroker::start(2);
    let addr = broker.addr().to_string();
    produce(&addr, INPUT, &clicks.lines(200_000));
    let mut daemon = Daemon::new(name, &addr, &[APP], &["--commit-interval-ms", "100"]);
    daemon.start();
    let http = daemon_http_addr(daemon.proc());
    wait_for_progress(&addr, &mut daemon, 0);
    broker.proc.signal(libc::SIGSTOP);
    let reason = wait_for(
        "/readyz to answer 503 with the problem",
        Duration::from_secs(30),
        || {
            daemon.assert_running();
            let (code, body) = http_request(&http, "GET", "/readyz", None)?;
            let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            let problem = v["threads"]
                .as_object()
                .and_then(|threads| threads.values().find_map(|t| t["problem"].as_str().map(str::to_string)));
            match (code, problem) {
                (503, Some(problem)) => Ok(problem),
                _ => Err(format!("{code} {body}")),
            }
        },
    );
    (broker, daemon, http, reason)
}

/// The broker stops answering (SIGSTOP) for longer than a minute while the
/// daemon has work in flight: the daemon stays up, `/readyz` answers 503
/// with the reason during the outage and 200 after it, the log says so
/// once (not once per failed connection attempt), and the counts are
/// exact. A commit once gave up after 60 s of waiting and the daemon exited.
#[test]
fn a_broker_outage_longer_than_a_minute_is_ridden_out() {
    let _heavy = heavy_test_lock();
    let mut clicks = Clicks::new(10);
    let (mut broker, mut daemon, http, reason) = outage_mid_run("user-clicks-outage", &mut clicks);
    let addr = broker.addr().to_string();
    let stopped = Instant::now();
    assert!(
        reason.contains("delivered") || reason.contains("unreachable"),
        "{reason:?}"
    );
    // The outage lasts past the 60 s a commit used to wait before giving
    // up; the daemon must stay up all along.
    while stopped.elapsed() < Duration::from_secs(70) {
        daemon.assert_running();
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.proc.signal(libc::SIGCONT);
    wait_ready(&http, daemon.proc());
    wait_for_exact_answer(&addr, &clicks.answer(), &mut [&mut daemon]);
    let log = daemon.proc().stderr();
    let said = log.lines().filter(|l| l.contains("retrying until it answers")).count();
    assert!(
        (1..=3).contains(&said),
        "the outage should be logged once, not per connection attempt; {said} lines:\n{}",
        daemon.proc().logs()
    );
    daemon.stop();
}

/// A restarted instance finds where each task stands by reading one
/// checkpoint record per task (pointed to by the metadata of the group's
/// committed offsets), not the whole checkpoints topic, however many
/// commits came before; and the state it restores from them is exact.
#[test]
fn an_assignment_reads_one_checkpoint_record_per_task() {
    let _heavy = heavy_test_lock();
    let broker = DevBroker::start(2);
    let addr = broker.addr();
    let mut clicks = Clicks::new(11);
    let mut daemon = Daemon::new("user-clicks-pointers", addr, &[APP], &["--commit-interval-ms", "100"]);
    daemon.start();
    for _ in 0..10 {
        produce(addr, INPUT, &clicks.lines(300));
        wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    }
    daemon.stop();
    let checkpoints_topic = format!("{APP}-checkpoints");
    let written = total_records(addr, &checkpoints_topic);

    // A new instance with no local state: every task restores from the
    // checkpoint its pointer names.
    daemon.wipe_state();
    daemon.start();
    let http = daemon_http_addr(daemon.proc());
    wait_ready(&http, daemon.proc());
    let (_, body) = http_request(&http, "GET", "/readyz", None).expect("/readyz");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let tasks: usize = v["threads"]
        .as_object()
        .expect("threads")
        .values()
        .map(|t| t["tasks"].as_array().map_or(0, Vec::len))
        .sum();
    let read = metric_sum(&http, "weir_checkpoint_records_read_total", &[("topology", APP)]).expect("metrics");
    assert!(
        tasks >= 2 && written > 4 * tasks as i64,
        "{tasks} tasks, {written} checkpoint records"
    );
    assert_eq!(
        read, tasks as f64,
        "checkpoint records read for {tasks} tasks ({written} on the topic)"
    );
    // Every task was restored (a stateless one only takes its checkpoint's
    // input offsets); the count's stores report their progress, now 0.
    let restored = metric_sum(
        &http,
        "weir_task_events_total",
        &[("topology", APP), ("event", "restored")],
    )
    .expect("metrics");
    assert_eq!(restored, tasks as f64, "tasks restored");
    let (_, metrics) = http_request(&http, "GET", "/metrics", None).expect("/metrics");
    let gauges: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weir_restore_remaining_records{"))
        .collect();
    assert_eq!(gauges.len(), tasks / 2, "restore progress gauges: {gauges:?}");
    assert!(gauges.iter().all(|l| l.ends_with(" 0")), "{gauges:?}");
    produce(addr, INPUT, &clicks.lines(300));
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    daemon.stop();
}

/// Changelog records beyond the checkpoint a task restores to were written
/// by a commit that never finished (the process died between producing its
/// changelog records and its checkpoint): they are not part of the state.
/// A later restore from scratch must skip them too, even though the new
/// owner's own changelog records (and checkpoints) come after them. Here
/// such an orphan is written by hand, for user 999, whom no input names.
#[test]
fn changelog_records_of_an_unfinished_commit_never_enter_a_restore() {
    use weir_connectors::kafka::rdkafka::producer::{BaseProducer, BaseRecord};
    let _heavy = heavy_test_lock();
    let broker = DevBroker::start(2);
    let addr = broker.addr();
    let changelog = format!("{APP}-clicks-per-user-changelog");
    let mut clicks = Clicks::new(12);
    let mut daemon = Daemon::new("user-clicks-orphans", addr, &[APP], &["--commit-interval-ms", "100"]);
    daemon.start();
    produce(addr, INPUT, &clicks.lines(1_000));
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    daemon.stop();

    // The orphan: user 999's count, in every changelog partition, with
    // the value bytes of a real record.
    let value = read_topic(addr, &changelog)
        .into_iter()
        .find_map(|r| r.value)
        .expect("a changelog record");
    let producer: BaseProducer = ClientSettings::new(addr).producer_config().create().expect("producer");
    let partitions = watermarks(addr, &changelog).len() as i32;
    let key = 999u32.to_be_bytes();
    for p in 0..partitions {
        producer
            .send(BaseRecord::to(&changelog).partition(p).key(&key[..]).payload(&value))
            .expect("send orphan");
    }
    weir_connectors::kafka::flush_producer(&producer, Duration::from_secs(30)).expect("orphans delivered");

    let store_has_999 = |daemon: &mut Daemon| {
        let http = daemon_http_addr(daemon.proc());
        wait_ready(&http, daemon.proc());
        let (code, body) = http_call(&http, "GET", "/stores/clicks-per-user?key=999", None);
        (code, body)
    };
    // A new owner restores to the checkpoint: no user 999. It processes
    // more input and commits: its changelog records follow the orphans.
    daemon.wipe_state();
    daemon.start();
    let (code, body) = store_has_999(&mut daemon);
    assert_eq!(code, 404, "user 999 after the first restore: {body}");
    produce(addr, INPUT, &clicks.lines(1_000));
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    daemon.stop();
    // Another restore from scratch, up to that owner's checkpoint.
    daemon.wipe_state();
    daemon.start();
    let (code, body) = store_has_999(&mut daemon);
    assert_eq!(code, 404, "user 999 after the second restore: {body}");
    produce(addr, INPUT, &clicks.lines(100));
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    daemon.stop();
}

/// What one instance says of itself: its tasks (from `/readyz`, which must
/// answer 200) and its task lifecycle counters.
#[derive(Debug, Clone)]
pub(crate) struct InstanceView {
    pub(crate) tasks: BTreeSet<String>,
    events: BTreeMap<&'static str, f64>,
}

pub(crate) fn instance_view(http: &str) -> Result<InstanceView, String> {
    let (code, body) = http_request(http, "GET", "/readyz", None)?;
    if code != 200 {
        return Err(format!("{http}/readyz: {code} {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let tasks = v["threads"]
        .as_object()
        .ok_or("no threads")?
        .values()
        .flat_map(|t| t["tasks"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let mut events = BTreeMap::new();
    for event in ["created", "restored", "suspended", "resumed", "closed"] {
        let n = metric_sum(http, "weir_task_events_total", &[("topology", APP), ("event", event)]).unwrap_or(0.0);
        events.insert(event, n);
    }
    Ok(InstanceView { tasks, events })
}

/// Waits until the instances at `https` are all ready and hold `total`
/// distinct tasks between them, each at least one.
pub(crate) fn wait_for_split(https: &[&str], total: usize, daemons: &mut [&mut Daemon]) -> Vec<InstanceView> {
    wait_for("the tasks to be spread over every instance", PROGRESS, || {
        for d in daemons.iter_mut() {
            d.assert_running();
        }
        let views: Vec<InstanceView> = https.iter().map(|h| instance_view(h)).collect::<Result<_, _>>()?;
        let all: BTreeSet<&String> = views.iter().flat_map(|v| &v.tasks).collect();
        let sum: usize = views.iter().map(|v| v.tasks.len()).sum();
        if all.len() == total && sum == total && views.iter().all(|v| !v.tasks.is_empty()) {
            Ok(views)
        } else {
            Err(format!("{:?}", views.iter().map(|v| &v.tasks).collect::<Vec<_>>()))
        }
    })
}

/// Across a rebalance, the tasks an instance kept were resumed (neither
/// closed nor created, so not restored), the ones it got were created and
/// the ones it lost were closed. Returns how many it kept (the range
/// assignor orders members by their random ids, so that may be none).
fn assert_kept_tasks_resumed(name: &str, before: &InstanceView, after: &InstanceView) -> usize {
    let kept = before.tasks.intersection(&after.tasks).count() as f64;
    let got = after.tasks.difference(&before.tasks).count() as f64;
    let lost = before.tasks.difference(&after.tasks).count() as f64;
    let d = |e: &str| after.events[e] - before.events[e];
    eprintln!("{name}: kept {kept}, got {got}, lost {lost}");
    assert_eq!(
        (d("created"), d("closed")),
        (got, lost),
        "{name}: (created, closed) across the rebalance, {before:?} -> {after:?}"
    );
    assert!(
        d("resumed") >= kept && d("suspended") >= kept,
        "{name}: {kept} tasks kept their owner but were not suspended and resumed: {before:?} -> {after:?}"
    );
    assert!(
        d("restored") <= got,
        "{name}: more tasks restored than it got: {before:?} -> {after:?}"
    );
    kept as usize
}

/// Two instances, a third joins, then one stops: every task that stays
/// where it was is suspended at the revoke and resumed at the assignment
/// (no close, no restore), each rebalance's pause is reported, and the
/// counts are exact.
#[test]
fn rebalances_resume_the_tasks_that_keep_their_owner() {
    let _heavy = heavy_test_lock();
    let broker = DevBroker::start(4);
    let addr = broker.addr();
    let mut clicks = Clicks::new(13);
    produce(addr, INPUT, &clicks.lines(20_000));
    let mut a = Daemon::new("rebalance-a", addr, &[APP], &[]);
    let mut b = Daemon::new("rebalance-b", addr, &[APP], &[]);
    a.start();
    b.start();
    let (ha, hb) = (daemon_http_addr(a.proc()), daemon_http_addr(b.proc()));
    wait_for_split(&[&ha, &hb], 8, &mut [&mut a, &mut b]);
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut a, &mut b]);
    let before = wait_for_split(&[&ha, &hb], 8, &mut [&mut a, &mut b]);

    let mut c = Daemon::new("rebalance-c", addr, &[APP], &[]);
    c.start();
    let hc = daemon_http_addr(c.proc());
    let after = wait_for_split(&[&ha, &hb, &hc], 8, &mut [&mut a, &mut b, &mut c]);
    let mut kept = assert_kept_tasks_resumed("a (c joins)", &before[0], &after[0]);
    kept += assert_kept_tasks_resumed("b (c joins)", &before[1], &after[1]);
    produce(addr, INPUT, &clicks.lines(5_000));
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut a, &mut b, &mut c]);

    let before = wait_for_split(&[&ha, &hb, &hc], 8, &mut [&mut a, &mut b, &mut c]);
    b.stop();
    let after = wait_for_split(&[&ha, &hc], 8, &mut [&mut a, &mut c]);
    kept += assert_kept_tasks_resumed("a (b leaves)", &before[0], &after[0]);
    kept += assert_kept_tasks_resumed("c (b leaves)", &before[2], &after[1]);
    eprintln!("{kept} tasks kept their owner across the two rebalances");
    produce(addr, INPUT, &clicks.lines(5_000));
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut a, &mut c]);

    for (name, http) in [("a", &ha), ("c", &hc)] {
        let pauses = metric_sum(http, "weir_rebalance_pause_seconds_count", &[("topology", APP)]).expect("metrics");
        let paused = metric_sum(http, "weir_rebalance_pause_seconds_sum", &[("topology", APP)]).expect("metrics");
        assert!(pauses >= 1.0, "{name}: no rebalance pause reported");
        eprintln!("{name}: {pauses} rebalance pauses, {paused:.2} s in all");
    }
    a.stop();
    c.stop();
}

/// SIGTERM while the broker does not answer and a commit waits for it: the
/// daemon exits within seconds (it does not wait for the cluster), commits
/// nothing past what was delivered, and a restart after the outage gives
/// exact counts.
#[test]
fn sigterm_during_an_outage_exits_at_once_and_loses_nothing() {
    let _heavy = heavy_test_lock();
    let mut clicks = Clicks::new(14);
    let (mut broker, mut daemon, _http, _reason) = outage_mid_run("user-clicks-term", &mut clicks);
    let addr = broker.addr().to_string();
    daemon.proc().signal(libc::SIGTERM);
    let stopped = Instant::now();
    let status = daemon.proc().wait(Duration::from_secs(15));
    eprintln!("exited with {status} {:?} after SIGTERM", stopped.elapsed());
    assert!(
        status.success(),
        "a stop is not a failure: {status}\n{}",
        daemon.proc().logs()
    );
    broker.proc.signal(libc::SIGCONT);
    daemon.start();
    wait_for_exact_answer(&addr, &clicks.answer(), &mut [&mut daemon]);
    daemon.stop();
}

/// `--instance-id` is checked before anything starts. (Static membership
/// itself is tested on noida-db:
/// `noida::a_restarted_static_member_gets_its_tasks_back_without_a_rebalance`;
/// weir's broker's coordinator is tested for it in `broker/src/group/tests.rs`.)
#[test]
fn a_bad_instance_id_stops_the_daemon_with_one_line() {
    let out = Proc::spawn(
        "bad-instance-id",
        &["run", APP, "--instance-id", "a b", "--no-generate"],
    );
    let mut out = out;
    let status = out.wait(Duration::from_secs(30));
    assert!(!status.success());
    let logs = out.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("--instance-id"))
        .unwrap_or_default()
        .trim();
    assert_eq!(
        line, "weir: --instance-id ' ' is not allowed (only ASCII letters, digits, '.', '_' and '-')",
        "{logs}"
    );
}

/// A state database sled cannot open (a kill while it wrote a snapshot:
/// here a snapshot file cut short) is moved aside with one warning, and
/// the daemon restores every task from the changelogs: counts exact.
#[test]
fn a_corrupt_state_database_is_moved_aside_and_rebuilt_from_the_changelogs() {
    let _heavy = heavy_test_lock();
    let broker = TestBroker::start(BrokerKind::Dev, 4);
    let addr = broker.addr();
    let mut clicks = Clicks::new(16);
    produce(addr, INPUT, &clicks.lines(20_000));
    let mut daemon = Daemon::new("user-clicks-corrupt", addr, &[APP], &[]);
    daemon.start();
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    daemon.stop();
    let state = daemon.state_dir();
    std::fs::write(state.join("snap.00000000000000CD"), [0u8, 0, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    produce(addr, INPUT, &clicks.lines(5_000));
    daemon.start();
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut daemon]);
    let logs = daemon.proc().logs();
    assert_eq!(
        logs.matches("the local state database was corrupt; moved it aside")
            .count(),
        1,
        "{logs}"
    );
    let http = daemon_http_addr(daemon.proc());
    let restored = metric_sum(
        &http,
        "weir_task_events_total",
        &[("topology", APP), ("event", "restored")],
    )
    .expect("metrics");
    assert!(restored >= 1.0, "tasks restored from the changelogs: {restored}");
    daemon.stop();
}
