//! `--guarantee exactly-once` on brokers with real Kafka transactions:
//! weir's own broker (`weir dev-broker`, `_on_weir_broker`) and noida-db
//! (`_on_noida`). Whatever SIGKILLs, SIGSTOPs and restarts happen, a
//! `read_committed` reader (kcat, a client nobody here wrote) sees every
//! output once, in order, and exact, and every input record repartitioned
//! exactly once; a `read_uncommitted` reader of the same topics sees the
//! records of the aborted transactions too, which shows the check can
//! tell.
//!
//! Two defects of noida-db 0.2.3 keep its crash and zombie tests from
//! running in CI (they are `#[ignore]`d with the reason, for `--ignored`
//! on a broker without them): a `read_committed` fetch that starts past
//! an abort marker still lists that aborted transaction, so clients skip
//! the same producer's later *committed* batches
//! (`connectors/examples/aborted_fetch_repro.rs` shows it in three
//! transactions); and a member that stops heartbeating is never expired.
//! The commit protocol itself is crash-tested at every operation in
//! memory (`runtime/tests/exactly_once.rs`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use rand::Rng;

use crate::harness::*;
use crate::scenario_emoji;
use crate::user_clicks::{
    input_committed_summary, instance_view, moment_rng, paced_chunks, produce_paced, total_records, wait_for_progress,
    Clicks, APP, INPUT, OUTPUT, REPARTITION,
};

/// How long the final answer may take after the last restart.
const ANSWER: Duration = Duration::from_secs(120);

fn eos_args(instance: &str) -> Vec<&str> {
    vec!["--guarantee", "exactly-once", "--instance-id", instance]
}

/// One line per record of `topic` in kcat's `format`, reading from the
/// beginning to the end of every partition with `isolation.level`
/// `isolation` (`read_committed` stops at the last stable offset).
fn kcat(brokers: &str, topic: &str, isolation: &str, format: &str) -> Vec<u8> {
    let out = Command::new("kcat")
        .args(["-b", brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-q"])
        .args(["-X", &format!("isolation.level={isolation}"), "-f", format])
        .output()
        .expect("kcat (installed by .ci/run)");
    assert!(
        out.status.success(),
        "kcat {topic} {isolation}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The values of `topic`'s records (see [`kcat`]).
fn kcat_values(brokers: &str, topic: &str, isolation: &str) -> Vec<String> {
    String::from_utf8(kcat(brokers, topic, isolation, "%s\\n"))
        .expect("utf-8 values")
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many records of `topic` a reader at `isolation` sees, counted by
/// offset: repartition values are binary envelopes, not lines of text.
fn kcat_count(brokers: &str, topic: &str, isolation: &str) -> usize {
    String::from_utf8_lossy(&kcat(brokers, topic, isolation, "%o\\n"))
        .lines()
        .count()
}

/// Per user, the counts in `User U has clicked N times.` values, in the
/// order read (one partition per user: offset order).
fn counts_by_user(values: &[String]) -> BTreeMap<u32, Vec<u64>> {
    let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for v in values {
        let w: Vec<&str> = v.split(' ').collect();
        assert!(
            w.len() == 6 && w[0] == "User" && w[2] == "has" && w[3] == "clicked",
            "not an aggregation: {v:?}"
        );
        let (user, count) = (w[1].parse().expect("user"), w[4].parse().expect("count"));
        out.entry(user).or_default().push(count);
    }
    out
}

/// (records repeating an earlier (user, count), counts lower than the
/// user's previous one).
fn repeats(seen: &BTreeMap<u32, Vec<u64>>) -> (usize, usize) {
    let mut repeated = 0;
    let mut backwards = 0;
    for counts in seen.values() {
        let mut had = std::collections::BTreeSet::new();
        for (i, c) in counts.iter().enumerate() {
            if !had.insert(*c) {
                repeated += 1;
            }
            if i > 0 && *c < counts[i - 1] {
                backwards += 1;
            }
        }
    }
    (repeated, backwards)
}

/// Why what a `read_committed` reader saw is not exactly once: every
/// user's counts must strictly increase (no repeat, nothing backwards) and
/// end at the truth.
fn not_exactly_once(seen: &BTreeMap<u32, Vec<u64>>, truth: &BTreeMap<u32, u64>) -> Option<String> {
    let (repeated, backwards) = repeats(seen);
    if repeated + backwards > 0 {
        return Some(format!(
            "{repeated} repeated (user, count) records, {backwards} counts going backwards"
        ));
    }
    for (user, n) in truth {
        let last = seen.get(user).and_then(|c| c.last());
        if last != Some(n) {
            return Some(format!("user {user}: ends at {last:?}, want {n}"));
        }
    }
    None
}

/// The true count per user.
fn truth(clicks: &Clicks) -> BTreeMap<u32, u64> {
    clicks
        .answer()
        .keys()
        .map(|u| {
            let user: u32 = u.parse().expect("user");
            let text = &clicks.answer()[u];
            let n = text.split(' ').nth(4).and_then(|n| n.parse().ok()).expect("count");
            (user, n)
        })
        .collect()
}

/// Waits until a `read_committed` reader sees every user's final count.
fn wait_for_final_counts(brokers: &str, truth: &BTreeMap<u32, u64>, daemons: &mut [&mut Daemon]) -> Vec<String> {
    wait_for("every user's final count to be committed", ANSWER, || {
        for d in daemons.iter_mut() {
            d.assert_running();
        }
        let values = kcat_values(brokers, OUTPUT, "read_committed");
        let seen = counts_by_user(&values);
        let behind = truth
            .iter()
            .filter(|(u, n)| seen.get(u).and_then(|c| c.last()) != Some(n))
            .count();
        if behind == 0 {
            Ok(values)
        } else {
            Err(format!("{behind} users behind, {} committed outputs", values.len()))
        }
    })
}

/// Produces a burst of 40,000 clicks and waits until the daemon has
/// written repartition records for it (it is working on the burst).
fn burst_begins(addr: &str, daemon: &mut Daemon, clicks: &mut Clicks) {
    let mark = total_records(addr, REPARTITION);
    produce(addr, INPUT, &clicks.lines(40_000));
    wait_for_repartitioning(addr, daemon, mark);
}

/// Waits until the repartition topic holds more than `mark` records (to
/// read_uncommitted readers): the daemon is working on new input.
fn wait_for_repartitioning(addr: &str, daemon: &mut Daemon, mark: i64) {
    wait_for("repartition records to be written", Duration::from_secs(60), || {
        daemon.assert_running();
        let now = total_records(addr, REPARTITION);
        if now > mark {
            Ok(())
        } else {
            Err(format!("{now} repartition records, {mark} before"))
        }
    });
}

/// Waits (up to 5 s, then gives up: the final assertion reports a run
/// whose kills all missed) until the broker holds repartition records of
/// an open transaction.
fn wait_for_open_transaction(addr: &str, daemon: &mut Daemon) {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        daemon.assert_running();
        if open_transaction_records(addr, REPARTITION) > 0 {
            return;
        }
    }
}

/// 200,000 user-clicks lines in five bursts of 40,000; the daemon is
/// stopped (SIGTERM) soon after it starts on each burst and restarted:
/// each stop commits the open transaction, so nothing is ever aborted. A
/// `read_committed` reader sees each user's counts once, in order, ending
/// exact; every input record is repartitioned exactly once, for
/// `read_uncommitted` readers as well.
#[test]
fn exactly_once_user_clicks_across_restarts_on_weir_broker() {
    exactly_once_user_clicks_across_restarts(BrokerKind::Dev);
}

#[test]
fn exactly_once_user_clicks_across_restarts_on_noida() {
    exactly_once_user_clicks_across_restarts(BrokerKind::Noida);
}

fn exactly_once_user_clicks_across_restarts(kind: BrokerKind) {
    let _heavy = heavy_test_lock();
    let broker = TestBroker::start(kind, 4);
    let addr = broker.addr();
    broker.create_topic(INPUT, 4);
    let mut clicks = Clicks::new(78);
    let mut daemon = Daemon::new("eos-restarts", addr, &[APP], &eos_args("eos-restarts"));
    daemon.start();
    for _ in 1..=5 {
        burst_begins(addr, &mut daemon, &mut clicks);
        daemon.stop();
        daemon.start();
    }
    let truth = truth(&clicks);
    let committed = wait_for_final_counts(addr, &truth, &mut [&mut daemon]);
    if let Some(why) = not_exactly_once(&counts_by_user(&committed), &truth) {
        panic!("read_committed: {why}");
    }
    for isolation in ["read_committed", "read_uncommitted"] {
        let n = kcat_count(addr, REPARTITION, isolation);
        assert_eq!(n, 200_000, "records in {REPARTITION} for {isolation}");
    }
    let http = daemon_http_addr(daemon.proc());
    let aborted = metric_sum(&http, "weir_transactions_aborted_total", &[("topology", APP)]).expect("metrics");
    assert_eq!(aborted, 0.0, "transactions aborted without a failure");
    daemon.stop();
}

/// 200,000 user-clicks lines in five bursts of 40,000; the daemon is
/// SIGKILLed at a random moment soon after it starts on each burst and
/// restarted with the same `--instance-id`: a `read_committed` reader sees
/// each user's counts once, in order, ending exact, and each input record
/// repartitioned exactly once; a `read_uncommitted` reader sees the
/// repartition records of the aborted transactions as well.
#[test]
fn exactly_once_user_clicks_across_five_sigkills_on_weir_broker() {
    exactly_once_user_clicks_across_five_sigkills(
        BrokerKind::Dev,
        "exactly_once_user_clicks_across_five_sigkills_on_weir_broker",
    );
}

#[test]
#[ignore = "noida-db 0.2.3 hides committed records fetched past an abort marker \
            (connectors/examples/aborted_fetch_repro.rs); run with --ignored on a fixed broker"]
fn exactly_once_user_clicks_across_five_sigkills_on_noida() {
    exactly_once_user_clicks_across_five_sigkills(
        BrokerKind::Noida,
        "exactly_once_user_clicks_across_five_sigkills_on_noida",
    );
}

fn exactly_once_user_clicks_across_five_sigkills(kind: BrokerKind, test: &str) {
    let _heavy = heavy_test_lock();
    let mut moments = moment_rng(test);
    let broker = TestBroker::start(kind, 4);
    let addr = broker.addr();
    broker.create_topic(INPUT, 4);
    let mut clicks = Clicks::new(77);
    let mut daemon = Daemon::new("eos-kills", addr, &[APP], &eos_args("eos-kills"));
    daemon.start();
    let mut mid_processing = 0;
    for round in 1..=5 {
        // The burst arrives over ~400 ms (40 chunks, 10 ms apart), so the
        // kill lands while input still arrives, however fast the broker
        // and the daemon are. Repartition records show (to
        // read_uncommitted) as soon as the transaction holding them is
        // open; a kill soon after finds it unfinished.
        let chunks: Vec<Vec<u8>> = (0..40).map(|_| clicks.lines(1_000)).collect();
        let mark = total_records(addr, REPARTITION);
        let delay = Duration::from_millis(moments.gen_range(0..30));
        std::thread::scope(|s| {
            let producer = s.spawn(|| produce_paced(addr, &chunks, Duration::from_millis(10)));
            wait_for_repartitioning(addr, &mut daemon, mark);
            std::thread::sleep(delay);
            // Kill while a transaction with repartition records is open, so
            // that the kill leaves something to abort (a kill right after
            // a commit would show nothing; that happened under CI load).
            wait_for_open_transaction(addr, &mut daemon);
            daemon.kill9();
            producer.join().expect("producer thread");
        });
        // Mid-processing: the committed counts did not reach the input's.
        let seen = counts_by_user(&kcat_values(addr, OUTPUT, "read_committed"));
        let behind = truth(&clicks)
            .iter()
            .filter(|(u, n)| seen.get(u).and_then(|c| c.last()) != Some(n))
            .count();
        if behind > 0 {
            mid_processing += 1;
        }
        eprintln!(
            "{test}: SIGKILL {round} {delay:?} after repartitioning began; {behind} users' counts behind; {}",
            input_committed_summary(addr)
        );
        daemon.start();
    }
    assert!(
        mid_processing >= 3,
        "only {mid_processing} of 5 kills came before the burst's counts were committed"
    );
    let truth = truth(&clicks);
    let committed = wait_for_final_counts(addr, &truth, &mut [&mut daemon]);
    if let Some(why) = not_exactly_once(&counts_by_user(&committed), &truth) {
        panic!("read_committed: {why}");
    }
    let repartitioned = kcat_count(addr, REPARTITION, "read_committed");
    assert_eq!(repartitioned, 200_000, "records in {REPARTITION} for read_committed");
    let uncommitted = kcat_count(addr, REPARTITION, "read_uncommitted");
    let outputs = kcat_values(addr, OUTPUT, "read_uncommitted");
    let (repeated, backwards) = repeats(&counts_by_user(&outputs));
    eprintln!(
        "{test}: read_committed: {} outputs, {repartitioned} repartitioned; read_uncommitted: {} outputs \
         ({repeated} repeated, {backwards} backwards), {uncommitted} repartitioned",
        committed.len(),
        outputs.len()
    );
    assert!(
        uncommitted > 200_000,
        "read_uncommitted saw no repartition record of an aborted transaction: the kills show nothing"
    );
    daemon.stop();
}

/// emoji-stream's windows across three SIGKILLs: each closed window's
/// aggregate is committed exactly once, with its exact count.
#[test]
fn exactly_once_emoji_windows_across_sigkills_on_weir_broker() {
    exactly_once_emoji_windows_across_sigkills(
        BrokerKind::Dev,
        "exactly_once_emoji_windows_across_sigkills_on_weir_broker",
    );
}

#[test]
#[ignore = "noida-db 0.2.3 hides committed records fetched past an abort marker \
            (connectors/examples/aborted_fetch_repro.rs); run with --ignored on a fixed broker"]
fn exactly_once_emoji_windows_across_sigkills_on_noida() {
    exactly_once_emoji_windows_across_sigkills(
        BrokerKind::Noida,
        "exactly_once_emoji_windows_across_sigkills_on_noida",
    );
}

fn exactly_once_emoji_windows_across_sigkills(kind: BrokerKind, test: &str) {
    use scenario_emoji::{aggregate, reaction, T0};
    const WINDOWS: i64 = 240;
    const EMOJIS: [&str; 3] = ["🔥", "😂", "👍"];
    let _heavy = heavy_test_lock();
    let mut moments = moment_rng(test);
    let broker = TestBroker::start(kind, 1);
    let addr = broker.addr();
    broker.create_topic("emoji-events", 1);
    // In window w, emoji e gets 1 + (7w + 13e) % 40 reactions, in time
    // order; ten windows per chunk.
    let mut expected = Vec::new();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for w in 0..WINDOWS {
        if w % 10 == 0 {
            chunks.push(Vec::new());
        }
        let start = T0 + w * 2000;
        let mut events = Vec::new();
        for (e, emoji) in EMOJIS.iter().enumerate() {
            let n = 1 + (7 * w as u64 + 13 * e as u64) % 40;
            for i in 0..n {
                events.push((start + (i as i64 * 1999) / n as i64, *emoji));
            }
            expected.push(aggregate(emoji, start, n, 1000));
        }
        events.sort();
        let chunk = chunks.last_mut().expect("chunk");
        for (i, (ms, emoji)) in events.into_iter().enumerate() {
            chunk.extend_from_slice(reaction(&format!("u{i}"), emoji, ms).as_bytes());
            chunk.push(b'\n');
        }
    }
    // Past every window's end and grace: they all close.
    let mut last = Vec::new();
    for emoji in EMOJIS {
        last.extend_from_slice(reaction("u-last", emoji, T0 + (WINDOWS + 1) * 2000 + 1000).as_bytes());
        last.push(b'\n');
    }
    chunks.push(last);
    expected.sort();

    let mut args = eos_args("eos-emoji");
    // Event times are in the past: stream time must move with records only.
    args.extend(["--idle-advance-ms", "0"]);
    let mut daemon = Daemon::new("eos-emoji", addr, &["emoji-stream"], &args);
    daemon.start();
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let p = LineProducer::new(addr, "emoji-events");
            for c in &chunks {
                p.send_lines(c);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        for round in 1..=3 {
            let mark = total_records(addr, "emoji-aggregated");
            wait_for("the emoji aggregates to grow", Duration::from_secs(60), || {
                daemon.assert_running();
                let now = total_records(addr, "emoji-aggregated");
                if now > mark {
                    Ok(())
                } else {
                    Err(format!("{now} records"))
                }
            });
            let delay = Duration::from_millis(moments.gen_range(0..700));
            std::thread::sleep(delay);
            daemon.kill9();
            eprintln!("{test}: SIGKILL {round} {delay:?} after the aggregates grew");
            daemon.start();
        }
        producer.join().expect("producer thread");
    });
    let committed = wait_for("every window's aggregate to be committed", ANSWER, || {
        daemon.assert_running();
        let mut values = kcat_values(addr, "emoji-aggregated", "read_committed");
        values.sort();
        let missing = expected.iter().filter(|e| values.binary_search(e).is_err()).count();
        if missing == 0 {
            Ok(values)
        } else {
            Err(format!("{missing} of {} windows missing", expected.len()))
        }
    });
    assert_eq!(
        committed, expected,
        "read_committed must hold each closed window once, with its exact count"
    );
    let uncommitted = kcat_values(addr, "emoji-aggregated", "read_uncommitted");
    eprintln!(
        "{test}: read_committed {} aggregates; read_uncommitted {}",
        committed.len(),
        uncommitted.len()
    );
    daemon.stop();
}

/// A zombie: instance A is SIGSTOPped mid-processing for longer than its
/// session timeout, instance B (another instance id) takes every task
/// over, then A is let go on (SIGCONT). A's stale transaction must never
/// become visible: it is fenced (its group generation is over), aborts,
/// and rejoins or exits; the committed counts stay exactly once.
#[test]
fn exactly_once_zombie_is_fenced_on_weir_broker() {
    exactly_once_zombie_is_fenced(BrokerKind::Dev, "exactly_once_zombie_is_fenced_on_weir_broker");
}

#[test]
#[ignore = "noida-db 0.2.3 never expires a member that stops heartbeating, so B's JoinGroup \
            waits for the stopped A for ever; run with --ignored on a broker that does"]
fn exactly_once_zombie_is_fenced_on_noida() {
    exactly_once_zombie_is_fenced(BrokerKind::Noida, "exactly_once_zombie_is_fenced_on_noida");
}

fn exactly_once_zombie_is_fenced(kind: BrokerKind, test: &str) {
    let _heavy = heavy_test_lock();
    let broker = TestBroker::start(kind, 4);
    let addr = broker.addr();
    broker.create_topic(INPUT, 4);
    let mut clicks = Clicks::new(91);
    let chunks = paced_chunks(&mut clicks);
    let mut a = Daemon::new("zombie-a", addr, &[APP], &eos_args("zombie-a"));
    a.start();
    let ha = daemon_http_addr(a.proc());
    wait_ready(&ha, a.proc());
    let mut b = Daemon::new("zombie-b", addr, &[APP], &eos_args("zombie-b"));
    std::thread::scope(|s| {
        let producer = s.spawn(|| produce_paced(addr, &chunks, Duration::from_millis(100)));
        wait_for_progress(addr, &mut a, 0);
        a.proc().signal(libc::SIGSTOP);
        eprintln!("{test}: A stopped; {} output records", total_records(addr, OUTPUT));
        b.start();
        let hb = daemon_http_addr(b.proc());
        wait_for("B to own every task", Duration::from_secs(120), || {
            b.assert_running();
            let view = instance_view(&hb)?;
            if view.tasks.len() == 8 {
                Ok(())
            } else {
                Err(format!("B has {:?}", view.tasks))
            }
        });
        eprintln!("{test}: B owns every task; A goes on");
        a.proc().signal(libc::SIGCONT);
        producer.join().expect("producer thread");
    });
    let truth = truth(&clicks);
    let committed = wait_for_final_counts(addr, &truth, &mut [&mut b]);
    if let Some(why) = not_exactly_once(&counts_by_user(&committed), &truth) {
        panic!("read_committed: {why}");
    }
    match a.proc().try_status() {
        None => {
            eprintln!("{test}: A rejoined and runs on");
            a.stop();
        }
        Some(status) => {
            let stderr = a.proc().stderr();
            let last = stderr.lines().last().unwrap_or_default().to_string();
            eprintln!("{test}: A exited with {status}: {last}");
            assert!(
                last.contains("fenced"),
                "A exited without saying it was fenced: {stderr}"
            );
        }
    }
    b.stop();
}
