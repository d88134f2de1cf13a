//! The example daemon works like `weir` itself: its topology is listed,
//! runs on the embedded broker, answers queries, and its config is checked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir::connectors::kafka::{produce_lines, tail_with, ClientSettings, TailLimit};

const BIN: &str = env!("CARGO_BIN_EXE_shouting");
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills the daemon on every path.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn list_shows_the_registered_topology() {
    let out = Command::new(BIN).arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim_end(),
        "shouting               upper-cases every chat line and counts lines per speaker"
    );
}

#[test]
fn parameters_for_a_topology_without_any_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, "[topologies.shouting]\nspeed = 11\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            "shouting",
            "--config",
            config.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "weir: topology \"shouting\": unknown key \"speed\" in [topologies.shouting]: this topology takes no parameters\n"
    );
}

#[test]
fn the_daemon_runs_the_topology_on_its_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "shouting",
            "--http",
            "127.0.0.1:0",
            "--commit-interval-ms",
            "100",
        ])
        .current_dir(dir.path())
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
    let _guard = Running(child);
    let (mut brokers, mut http) = (None, None);
    let deadline = Instant::now() + DEADLINE;
    while brokers.is_none() || http.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the daemon prints its broker and HTTP addresses");
        if let Some(a) = line.strip_prefix("embedded Kafka broker at ") {
            brokers = Some(a.to_string());
        }
        if let Some(a) = line.strip_prefix("HTTP on http://") {
            http = Some(a.to_string());
        }
    }
    let (brokers, http) = (brokers.unwrap(), http.unwrap());

    let n = produce_lines(&brokers, "chat", &b"ann\thello\nbob\thi there\nann\tbye\n"[..], true).unwrap();
    assert_eq!(n, 3);
    let mut shouted = Vec::new();
    let limit = TailLimit {
        max_records: Some(3),
        timeout: Some(DEADLINE),
        ..TailLimit::default()
    };
    tail_with(&ClientSettings::new(&brokers), "chat-shouted", true, Some(limit), |r| {
        if let Some(r) = r {
            let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
            shouted.push((text(r.key), text(r.value)));
        }
        true
    })
    .unwrap();
    shouted.sort();
    assert_eq!(
        shouted,
        [
            ("ann".to_string(), "BYE".to_string()),
            ("ann".to_string(), "HELLO".to_string()),
            ("bob".to_string(), "HI THERE".to_string())
        ]
    );

    // The count is committed state: poll until the commit has happened.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let body = get(&http, "/stores/lines-per-speaker?key=ann");
        if body.contains("\"value\": 2") {
            break;
        }
        assert!(Instant::now() < deadline, "ann's count never reached 2: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}
