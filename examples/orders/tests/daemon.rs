//! Two instances of the example daemon share the work of one application:
//! the first runs the embedded broker, the second joins it with
//! `--brokers`; the foreign-key join and the global-table join give
//! exactly the expected records, whichever instance holds which task.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir::connectors::kafka::{produce_lines, tail_with, Admin, ClientSettings, TailLimit, TopicSpec};

const BIN: &str = env!("CARGO_BIN_EXE_orders");
const DEADLINE: Duration = Duration::from_secs(60);
/// Sub-topology 0 (customers, 3 partitions), 1 (orders, 3), 2 (payments, 2).
const TASKS: usize = 3 + 3 + 2;

/// Kills a daemon on every path.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon and the lines of its stdout and stderr.
struct Daemon {
    _guard: Running,
    lines: mpsc::Receiver<String>,
}

fn spawn(args: &[&str]) -> Daemon {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    Daemon {
        _guard: Running(child),
        lines: rx,
    }
}

impl Daemon {
    /// The text after each of `prefixes` in the daemon's output.
    fn wait_for(&self, prefixes: &[&str]) -> Vec<String> {
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        let deadline = Instant::now() + DEADLINE;
        while found.iter().any(Option::is_none) {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the daemon never printed {prefixes:?}"));
            for (p, f) in prefixes.iter().zip(&mut found) {
                if let Some(rest) = line.strip_prefix(p) {
                    *f = Some(rest.to_string());
                }
            }
        }
        found.into_iter().map(Option::unwrap).collect()
    }
}

/// Creates the input topics in the broker's data directory before the first
/// daemon opens it (the daemon would create a missing source topic with
/// the embedded broker's default of 3 partitions).
fn create_topics(broker_dir: &Path) {
    let broker = weir_broker::Broker::start(weir_broker::BrokerConfig {
        dir: broker_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        settings: weir_broker::BrokerSettings {
            default_partitions: 3,
            ..Default::default()
        },
    })
    .unwrap();
    {
        let admin = Admin::connect(&broker.addr().to_string()).unwrap();
        admin
            .ensure_topics(&[
                TopicSpec::new("customers", 3),
                TopicSpec::new("orders", 3),
                TopicSpec::new("currencies", 3),
                TopicSpec::new("payments", 2),
            ])
            .unwrap();
        let topics = admin.topics().unwrap();
        assert_eq!(topics.get("payments"), Some(&2));
        assert_eq!(topics.get("currencies"), Some(&3));
    }
    broker.stop();
}

#[test]
fn two_instances_join_orders_with_customers_and_payments_with_rates() {
    let started = Instant::now();
    let broker_dir = tempfile::tempdir().unwrap();
    let state1 = tempfile::tempdir().unwrap();
    let state2 = tempfile::tempdir().unwrap();
    create_topics(broker_dir.path());

    let first = spawn(&[
        "run",
        "orders",
        "--broker-listen",
        "127.0.0.1:0",
        "--broker-dir",
        broker_dir.path().to_str().unwrap(),
        "--state-dir",
        state1.path().to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--instance-id",
        "orders-a",
        "--commit-interval-ms",
        "100",
    ]);
    let [brokers, http1]: [String; 2] = first
        .wait_for(&["embedded Kafka broker at ", "HTTP on http://"])
        .try_into()
        .unwrap();
    let second = spawn(&[
        "run",
        "orders",
        "--brokers",
        &brokers,
        "--state-dir",
        state2.path().to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--instance-id",
        "orders-b",
        "--commit-interval-ms",
        "100",
    ]);
    let [http2]: [String; 1] = second.wait_for(&["HTTP on http://"]).try_into().unwrap();

    // Produce only once the tasks are shared out: a rebalance while records
    // are in flight could write some outputs twice (at-least-once).
    let (a, b) = wait_until("both instances hold tasks", || {
        let (a, b) = (ready_tasks(&http1)?, ready_tasks(&http2)?);
        let all: BTreeSet<&String> = a.iter().chain(&b).collect();
        let shared = !a.is_empty() && !b.is_empty() && all.len() == TASKS && a.len() + b.len() == TASKS;
        shared.then_some((a, b))
    });
    eprintln!("tasks: first instance {a:?}, second {b:?}");

    produce(&brokers, "customers", "c1\tAlice\nc2\tBob\n");
    produce(
        &brokers,
        "orders",
        "o1\t{\"customer\": \"c1\", \"amount\": 12}\n\
         o2\t{\"customer\": \"c2\", \"amount\": 5}\n\
         o3\t{\"customer\": \"c1\", \"amount\": 7}\n",
    );
    produce(&brokers, "currencies", "EUR\t1.10\nGBP\t1.25\n");
    // Payments only once both instances see the rates (an unknown currency
    // drops the payment).
    wait_for_rate(&[&http1, &http2], "GBP", "1.25");
    wait_for_rate(&[&http1, &http2], "EUR", "1.10");
    produce(&brokers, "payments", "p1\tEUR 100\np2\tGBP 10\n");

    let mut enriched = vec![("o1", "c1 Alice 12"), ("o2", "c2 Bob 5"), ("o3", "c1 Alice 7")];
    let mut converted = vec![("p1", "EUR 100 * 1.10 = 110.00"), ("p2", "GBP 10 * 1.25 = 12.50")];
    expect(&brokers, "orders-enriched", &enriched);
    expect(&brokers, "payments-converted", &converted);

    // A renamed customer re-emits every one of its orders, and only those.
    produce(&brokers, "customers", "c1\tAlicia\n");
    enriched.extend([("o1", "c1 Alicia 12"), ("o3", "c1 Alicia 7")]);
    expect(&brokers, "orders-enriched", &enriched);

    // A new rate is used by the next payment, whichever instance converts it.
    produce(&brokers, "currencies", "EUR\t1.20\n");
    wait_for_rate(&[&http1, &http2], "EUR", "1.20");
    produce(&brokers, "payments", "p3\tEUR 100\n");
    converted.push(("p3", "EUR 100 * 1.20 = 120.00"));
    expect(&brokers, "payments-converted", &converted);

    // Still exactly those: no late duplicate of the joins' earlier records.
    expect(&brokers, "orders-enriched", &enriched);
    eprintln!("the two daemons gave the expected records in {:?}", started.elapsed());
}

fn produce(brokers: &str, topic: &str, lines: &str) {
    let n = produce_lines(brokers, topic, lines.as_bytes(), true).unwrap();
    assert_eq!(n, lines.lines().count() as u64, "records produced to {topic}");
}

/// Waits until `topic` holds exactly `expected` (in any order across
/// partitions; records of one key in the order given).
fn expect(brokers: &str, topic: &str, expected: &[(&str, &str)]) {
    let mut want: Vec<(String, String)> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    want.sort();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let records = read_all(brokers, topic);
        let mut got: Vec<(String, String)> = records.iter().map(|(_, _, k, v)| (k.clone(), v.clone())).collect();
        got.sort();
        if got == want {
            // Same key, same partition: its records in offset order are in
            // the order they were expected in.
            for (key, _) in expected {
                let in_log: Vec<&str> = records.iter().filter(|r| r.2 == *key).map(|r| r.3.as_str()).collect();
                let in_expected: Vec<&str> = expected.iter().filter(|(k, _)| k == key).map(|(_, v)| *v).collect();
                assert_eq!(in_log, in_expected, "the records of {key} in {topic}");
            }
            return;
        }
        assert!(
            got.len() <= want.len(),
            "{topic} holds more than expected:\n got {got:?}\nwant {want:?}"
        );
        assert!(
            Instant::now() < deadline,
            "{topic} never held the expected records:\n got {got:?}\nwant {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record of `topic` now: (partition, offset, key, value), sorted by
/// partition and offset.
fn read_all(brokers: &str, topic: &str) -> Vec<(i32, i64, String, String)> {
    let mut records = Vec::new();
    let limit = TailLimit {
        max_records: None,
        timeout: Some(Duration::from_secs(10)),
        ..TailLimit::default()
    };
    tail_with(&ClientSettings::new(brokers), topic, true, Some(limit), |r| match r {
        Some(r) => {
            let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            records.push((r.partition, r.offset, text(r.key), text(r.value)));
            true
        }
        // A poll interval without a record: everything there is was read.
        None => false,
    })
    .unwrap();
    records.sort();
    records
}

/// The tasks of an instance whose every stream thread is ready; `None`
/// while one is not.
fn ready_tasks(http: &str) -> Option<Vec<String>> {
    let (status, body) = get(http, "/readyz");
    if status != 200 {
        return None;
    }
    let mut tasks = Vec::new();
    // `"tasks": ["0_1", "2_0"]` per thread.
    for part in body.split("\"tasks\":").skip(1) {
        let list = &part[..part.find(']')?];
        tasks.extend(list.split('"').filter(|t| t.contains('_')).map(str::to_string));
    }
    Some(tasks)
}

/// Waits until the global store `currencies` of every instance holds `rate`
/// for `code`.
fn wait_for_rate(https: &[&str], code: &str, rate: &str) {
    for http in https {
        wait_until(&format!("{http} sees {code} at {rate}"), || {
            let (status, body) = get(http, &format!("/stores/currencies?key={code}"));
            (status == 200 && body.contains(&format!("\"{rate}\""))).then_some(())
        });
    }
}

/// Polls `done` until it gives a value.
fn wait_until<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(t) = done() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Status code and body of `GET path`.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
