//! Stock Kafka clients against weir's own broker (`weir dev-broker`): each
//! produces, consumes in a consumer group and commits; the broker is then
//! killed and restarted on the same directory and everything is still there.
//!
//! The Python clients run tests/clients/kafka_clients.py from the venvs
//! .ci/run makes (confluent-kafka, kafka-python 3.x and aiokafka in
//! target/venv; kafka-python 2.0.2 in target/venv-kafka-python2), with no
//! optional compression codec installed.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{repo, venv_python, DevBroker};

const COUNT: usize = 500;

fn kafka_python2() -> PathBuf {
    let python = repo().join("target/venv-kafka-python2/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run .ci/run, or make it by hand: \
         `python3 -m venv target/venv-kafka-python2 && target/venv-kafka-python2/bin/pip install kafka-python==2.0.2`",
        python.display()
    );
    python
}

/// Run the client script; returns its `OK ...` line.
fn run_client(python: &PathBuf, client: &str, brokers: &str, topic: &str, count: usize) -> String {
    let script = repo().join("tests/clients/kafka_clients.py");
    let out = Command::new(python)
        .arg(&script)
        .args([client, brokers, topic, &format!("{topic}-group"), &count.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{client} against weir's broker failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_string()
}

fn kcat(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kcat (installed by .ci/run)");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("writing to kcat");
        }
    }
    let out = child.wait_with_output().expect("kcat");
    assert!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn python_clients_produce_consume_and_commit() {
    let broker = DevBroker::start(1);
    let cases = [
        (venv_python(), "confluent-kafka", "confluent-kafka"),
        (venv_python(), "kafka-python", "kafka-python 3."),
        (kafka_python2(), "kafka-python", "kafka-python 2.0.2"),
        (venv_python(), "aiokafka", "aiokafka"),
    ];
    for (i, (python, client, expect)) in cases.iter().enumerate() {
        let topic = format!("clients-{i}");
        let line = run_client(python, client, broker.addr(), &topic, COUNT);
        assert!(
            line.starts_with(&format!("OK {expect}"))
                && line.ends_with(&format!("produced {COUNT} consumed {COUNT} committed {COUNT}")),
            "{client}: {line}"
        );
    }
}

#[test]
fn a_confluent_kafka_transaction_commits_and_aborts_and_read_committed_skips_the_aborted() {
    let broker = DevBroker::start(1);
    let line = run_client(&venv_python(), "confluent-kafka-transactions", broker.addr(), "txn", 20);
    assert!(
        line.starts_with("OK confluent-kafka-transactions")
            && line.ends_with("committed 30 aborted 20 read_committed 30 read_uncommitted 50"),
        "{line}"
    );
}

#[test]
fn kcat_round_trip_survives_a_broker_sigkill() {
    let mut broker = DevBroker::start(1);
    let lines: String = (0..COUNT).map(|i| format!("k{i}\tv{i}\n")).collect();
    kcat(
        &["-b", broker.addr(), "-P", "-t", "kcat", "-K", "\t", "-p", "0"],
        Some(&lines),
    );
    let read = |addr: &str| {
        kcat(
            &[
                "-b",
                addr,
                "-C",
                "-t",
                "kcat",
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%k=%s@%o\n",
            ],
            None,
        )
    };
    let expected: String = (0..COUNT).map(|i| format!("k{i}=v{i}@{i}\n")).collect();
    assert_eq!(read(broker.addr()), expected);

    broker.kill9_and_restart();
    assert_eq!(
        read(broker.addr()),
        expected,
        "every acknowledged record survives a SIGKILL of the broker"
    );
    kcat(
        &["-b", broker.addr(), "-P", "-t", "kcat", "-K", "\t", "-p", "0"],
        Some("after\trestart\n"),
    );
    let after = read(broker.addr());
    assert!(
        after.ends_with(&format!("after=restart@{COUNT}\n")),
        "offsets continue after a restart: {after}"
    );
}
