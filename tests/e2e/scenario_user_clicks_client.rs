//! `user-clicks` with a Kafka client that is not weir (SCENARIOS.md §5):
//! `weir run user-clicks --no-generate` on its embedded broker, then kcat
//! (Debian package `kcat`) produces click lines to `user_clickstream` and
//! reads `User N has clicked M times.` back from `user_click_aggregation`,
//! as the original system's producer and consumer scripts did.
//!
//! Needs `kcat` on the PATH; without it the test fails and says how to
//! install it (`apt-get install -y kcat`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::harness::*;

const INPUT: &str = "user_clickstream";
const OUTPUT: &str = "user_click_aggregation";
const INSTALL: &str =
    "install it with `apt-get update && apt-get install -y --no-install-recommends kcat` (as .ci/run does)";

/// A kcat process, its output in files; killed (SIGKILL) when dropped, and
/// its output printed if the test is failing.
struct Kcat {
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Kcat {
    fn spawn(dir: &Path, name: &str, args: &[&str]) -> Kcat {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = Command::new("kcat")
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start kcat {args:?}: {e}; {INSTALL}"));
        Kcat {
            child,
            status: None,
            stdout,
            stderr,
        }
    }

    fn out(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn err(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }
}

impl Drop for Kcat {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- kcat stdout ---\n{}--- kcat stderr ---\n{}", self.out(), self.err());
        }
    }
}

/// Fails (never skips) when kcat is missing.
fn require_kcat() {
    match Command::new("kcat").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`kcat -V` failed ({}): {}; {INSTALL}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("this test needs kcat, which cannot be run ({e}): {INSTALL}"),
    }
}

#[test]
fn scenario_user_clicks_through_kcat_on_the_embedded_broker() {
    require_kcat();
    let mut daemon = Proc::spawn("user-clicks-embedded", &["run", "user-clicks", "--no-generate"]);
    let brokers = embedded_broker_addr(&mut daemon);
    let addr = daemon_http_addr(&mut daemon);
    // Ready: the input topic exists (with the daemon's partition count, not
    // whatever a producer's metadata request would auto-create).
    wait_ready(&addr, &mut daemon);

    // 600 clicks of users 1..=40 (user i*7 % 40 + 1), pages 1..=10, and
    // two lines that do not parse (dead-lettered; counting goes on).
    let dir = tempfile::tempdir().unwrap();
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut lines = String::new();
    for i in 0..600u32 {
        let user = i * 7 % 40 + 1;
        *counts.entry(user).or_default() += 1;
        lines.push_str(&format!(
            "User {user} clicked on /page{} at {}.{:03}\n",
            i % 10 + 1,
            1_763_719_200 + i / 1000,
            i % 1000
        ));
        if i == 300 {
            lines.push_str("User seventeen clicked on /page3\nnot a click at all\n");
        }
    }
    let input = dir.path().join("clicks.txt");
    fs::write(&input, &lines).unwrap();
    let mut producer = Kcat::spawn(
        dir.path(),
        "producer",
        &["-b", &brokers, "-t", INPUT, "-P", "-l", input.to_str().unwrap()],
    );
    let status = wait_for("kcat -P to exit", Duration::from_secs(30), || {
        producer.try_status().ok_or_else(|| producer.err())
    });
    assert!(status.success(), "kcat -P exited with {status}: {}", producer.err());
    assert_eq!(topic_total(&brokers, INPUT), 602, "kcat delivered every line");

    // A kcat consumer from the beginning, printing key and value.
    let mut consumer = Kcat::spawn(
        dir.path(),
        "consumer",
        &[
            "-b",
            &brokers,
            "-C",
            "-t",
            OUTPUT,
            "-o",
            "beginning",
            "-u",
            "-q",
            "-f",
            "%k\t%s\n",
        ],
    );
    let want: BTreeMap<String, String> = counts
        .iter()
        .map(|(u, n)| (u.to_string(), format!("User {u} has clicked {n} times.")))
        .collect();
    wait_for(
        "kcat to read the final count of every user",
        Duration::from_secs(40),
        || {
            daemon.assert_running();
            if let Some(status) = consumer.try_status() {
                panic!("kcat -C exited with {status}: {}", consumer.err());
            }
            let mut latest: BTreeMap<String, String> = BTreeMap::new();
            // kcat writes a line in several writes (unbuffered stdout): only
            // lines that have their newline are complete.
            let out = consumer.out();
            let complete = out.rfind('\n').map_or("", |end| &out[..end]);
            for line in complete.lines() {
                let (key, value) = line.split_once('\t').ok_or_else(|| format!("no key in {line:?}"))?;
                let n = value
                    .strip_prefix(&format!("User {key} has clicked "))
                    .and_then(|r| r.strip_suffix(" times."))
                    .and_then(|n| n.parse::<u64>().ok());
                assert!(
                    n.is_some_and(|n| n >= 1),
                    "line {line:?} is not `User {key} has clicked N times.`"
                );
                latest.insert(key.to_string(), value.to_string());
            }
            if latest == want {
                Ok(())
            } else {
                let wrong: Vec<String> = want
                    .iter()
                    .filter(|(k, v)| latest.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k}: want {v:?}, have {:?}", latest.get(k)))
                    .collect();
                Err(format!(
                    "{} of {} users wrong, e.g. {:?}",
                    wrong.len(),
                    want.len(),
                    &wrong[..wrong.len().min(5)]
                ))
            }
        },
    );
    wait_for(
        "the two malformed lines to be dead-lettered",
        Duration::from_secs(30),
        || match metric_sum(&addr, "weir_dlq_records_total", &[("topology", "user-clicks")])? {
            2.0 => Ok(()),
            n => Err(format!("{n}")),
        },
    );
    daemon.assert_running();
}

/// The exercise's own scripts, in the original's style (kafka-python:
/// `KafkaProducer(...).send('user_clickstream', value=...)`, a
/// `KafkaConsumer('user_click_aggregation', ...)` printing values), against
/// `weir run user-clicks` on its embedded broker: kafka-python 2.0.2 (the
/// release the exercise was written for) produces, kafka-python 3.x
/// consumes, neither with an optional codec installed.
#[test]
fn the_exercises_kafka_python_scripts_work_against_the_embedded_broker() {
    let mut daemon = Proc::spawn("user-clicks-kafka-python", &["run", "user-clicks", "--no-generate"]);
    let brokers = embedded_broker_addr(&mut daemon);
    let addr = daemon_http_addr(&mut daemon);
    wait_ready(&addr, &mut daemon);

    let scripts = repo().join("tests/clients");
    let python2 = repo().join("target/venv-kafka-python2/bin/python3");
    assert!(python2.exists(), "{} is missing: run .ci/run", python2.display());
    let out = Command::new(&python2)
        .arg(scripts.join("user_clicks_producer.py"))
        .args([&brokers, "600"])
        .output()
        .expect("running the producer script");
    assert!(
        out.status.success(),
        "the producer script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(topic_total(&brokers, INPUT), 600, "kafka-python delivered every click");

    let consumer_script = scripts.join("user_clicks_consumer.py");
    let mut consumer = Proc::spawn_program(
        "kafka-python-consumer",
        &venv_python(),
        &[consumer_script.to_str().expect("utf-8 path"), &brokers],
    );
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for i in 0..600u32 {
        *counts.entry(i * 7 % 40 + 1).or_default() += 1;
    }
    let want: BTreeMap<u32, String> = counts
        .iter()
        .map(|(u, n)| (*u, format!("User {u} has clicked {n} times.")))
        .collect();
    wait_for(
        "the consumer script to print every user's final count",
        Duration::from_secs(60),
        || {
            daemon.assert_running();
            consumer.assert_running();
            let out = consumer.stdout();
            let mut latest: BTreeMap<u32, String> = BTreeMap::new();
            for line in out.lines() {
                let user = line
                    .strip_prefix("User ")
                    .and_then(|r| r.split_once(' '))
                    .and_then(|(u, _)| u.parse::<u32>().ok())
                    .ok_or_else(|| format!("line {line:?} is not `User N has clicked M times.`"))?;
                latest.insert(user, line.to_string());
            }
            if latest == want {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} users have their final count",
                    latest.iter().filter(|(u, v)| want.get(u) == Some(v)).count(),
                    want.len()
                ))
            }
        },
    );
    consumer.kill9();
    daemon.assert_running();
}
