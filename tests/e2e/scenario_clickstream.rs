//! clickstream-parquet end to end: known records on `clicks`, `views` and
//! `ratings` while the daemon is killed with SIGKILL twice; after the
//! restart, the Parquet files, read by an independent reader (pyarrow),
//! hold every valid record exactly once with typed columns, and the
//! misfits are on the dead-letter topic.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const DEADLINE: Duration = Duration::from_secs(90);
/// 2026-11-21T10:00:00.000Z.
const T0: i64 = 1_795_255_200_000;
const PER_TOPIC: usize = 1500;

fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // 2026-11-21 is day 20_778 since the epoch; the records stay on it.
    assert_eq!(days, 20_778, "records stay on 2026-11-21");
    format!(
        "2026-11-21T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Record `i` of `topic`: its JSON line, and the row pyarrow must read back
/// (as the reader script prints it), keyed by the unique timestamp.
fn record(topic: &str, i: usize) -> (String, String) {
    let ts = T0 + i as i64;
    let user = 1 + (i * 7) % 1000;
    let item = 1 + (i * 13) % 500;
    match topic {
        "clicks" => (
            format!(
                r#"{{"event_type": "click", "user_id": {user}, "item_id": {item}, "timestamp": "{}", "page_url": "/item/{i}", "click_duration": {}.5}}"#,
                iso(ts),
                i % 7
            ),
            format!("{ts}|click|{user}|{item}|/item/{i}|{}.5", i % 7),
        ),
        "views" => {
            let device = ["mobile", "desktop", "tablet"][i % 3];
            (
                format!(
                    r#"{{"event_type": "view", "user_id": {user}, "item_id": {item}, "timestamp": "{}", "view_duration": {}.25, "device_type": "{device}"}}"#,
                    iso(ts),
                    i % 11
                ),
                format!("{ts}|view|{user}|{item}|{}.25|{device}", i % 11),
            )
        }
        _ => (
            format!(
                r#"{{"event_type": "rating", "user_id": {user}, "item_id": {item}, "timestamp": "{}", "rating": {}, "review_text": "review {i}"}}"#,
                iso(ts),
                1 + i % 5
            ),
            format!("{ts}|rating|{user}|{item}|{}|review {i}", 1 + i % 5),
        ),
    }
}

/// Reads every file under ROOT/TOPIC with pyarrow; prints the schema's
/// types, then one `|`-joined row per line (timestamp as epoch ms).
const READER: &str = r#"
import sys, pyarrow.parquet as pq, pyarrow as pa
root, topic = sys.argv[1], sys.argv[2]
t = pq.read_table(f"{root}/{topic}")
print(";".join(f"{f.name}:{f.type}" for f in t.schema))
ts = t.column("timestamp").cast(pa.int64()).to_pylist()
cols = [c for c in t.column_names if c != "timestamp"]
vals = [t.column(c).to_pylist() for c in cols]
for i in range(t.num_rows):
    print("|".join([str(ts[i])] + [str(v[i]) for v in vals]))
"#;

fn read_with_pyarrow(root: &str, topic: &str) -> (String, Vec<String>) {
    let python = venv_python();
    let out = Command::new(&python)
        .args(["-c", READER, root, topic])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "pyarrow could not read {root}/{topic} (.ci/run installs it into target/venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let schema = lines.next().unwrap_or_default().to_string();
    (schema, lines.map(str::to_string).collect())
}

/// Asserts that the Parquet files of `topic` under `root`, read by pyarrow,
/// hold records 0..PER_TOPIC of it exactly once; returns their schema.
fn assert_every_record_once(root: &str, topic: &str) -> String {
    let (schema, mut rows) = read_with_pyarrow(root, topic);
    rows.sort();
    let mut expected: Vec<String> = (0..PER_TOPIC).map(|i| record(topic, i).1).collect();
    expected.sort();
    assert_eq!(
        rows.len(),
        expected.len(),
        "{topic}: rows in files (duplicates or losses)"
    );
    assert_eq!(rows, expected, "{topic}: every record exactly once");
    schema
}

fn rows_written(addr: &str) -> Result<BTreeMap<String, u64>, String> {
    let (code, body) = http_request(addr, "GET", "/parquet/files", None)?;
    if code != 200 {
        return Err(format!("{code}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(v["rows"]
        .as_object()
        .ok_or("no rows")?
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
        .collect())
}

#[test]
fn parquet_files_hold_every_record_exactly_once_after_two_sigkills() {
    let _heavy = heavy_test_lock();
    let broker = DevBroker::start(3);
    let brokers = broker.addr().to_string();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let config = data.path().join("weir.toml");
    // Small files, so that the kills land between and inside many of them.
    std::fs::write(
        &config,
        "[topologies.clickstream-parquet]\nroll_interval_ms = 300\nmax_file_rows = 200\n",
    )
    .unwrap();
    let mut daemon = Daemon::new(
        "clickstream",
        &brokers,
        &["clickstream-parquet"],
        &[
            "--data-dir",
            &data_dir,
            "--config",
            config.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--commit-interval-ms",
            "200",
        ],
    );
    daemon.start();

    let topics = ["clicks", "views", "ratings"];
    let producers: Vec<LineProducer> = topics.iter().map(|t| LineProducer::new(&brokers, t)).collect();
    let bad = [
        r#"{"event_type": "click", "user_id": 0, "item_id": 1, "timestamp": "2026-11-21T10:00:00Z", "page_url": "/", "click_duration": 1.0}"#,
        r#"not json"#,
        r#"{"event_type": "view", "user_id": 5, "item_id": 1, "timestamp": "yesterday", "view_duration": 1.0, "device_type": "mobile"}"#,
    ];
    // Ten rounds of input; SIGKILL after the 3rd and the 6th, each time
    // restarting at once, so records arrive before, during and after.
    let rounds = 10;
    let per_round = PER_TOPIC / rounds;
    for round in 0..rounds {
        for (t, topic) in topics.iter().enumerate() {
            let mut lines = String::new();
            for i in round * per_round..(round + 1) * per_round {
                lines.push_str(&record(topic, i).0);
                lines.push('\n');
            }
            if round == 4 {
                lines.push_str(bad[t]);
                lines.push('\n');
            }
            producers[t].send_lines(lines.as_bytes());
        }
        if round == 3 || round == 6 {
            // Wait until some files exist, so the kill interrupts real work.
            let addr = daemon_http_addr(daemon.proc());
            wait_for("some rows in files before the kill", DEADLINE, || {
                let rows = rows_written(&addr)?;
                (rows.values().sum::<u64>() > 0)
                    .then_some(())
                    .ok_or(format!("{rows:?}"))
            });
            daemon.kill9();
            daemon.start();
        }
    }

    let addr = daemon_http_addr(daemon.proc());
    let want: u64 = (PER_TOPIC * topics.len()) as u64;
    wait_for("every valid record in a Parquet file", DEADLINE, || {
        let rows = rows_written(&addr)?;
        let total: u64 = rows.values().sum();
        (total >= want)
            .then_some(())
            .ok_or(format!("{total} of {want}: {rows:?}"))
    });
    // The topology dead-letters the misfits (the sink skips them): wait
    // for its three, at least once each (a replay may repeat one).
    let mut want_bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
    want_bad.sort();
    wait_for("the three misfits on the dead-letter topic", DEADLINE, || {
        let mut seen: Vec<String> = read_topic(&brokers, "clickstream-parquet-dlq")
            .iter()
            .map(|r| r.value_str())
            .collect();
        seen.sort();
        seen.dedup();
        (seen == want_bad).then_some(()).ok_or(format!("{seen:?}"))
    });
    daemon.stop();

    let schemas = [
        "event_type:string;user_id:int32;item_id:int32;timestamp:timestamp[ms, tz=UTC];page_url:string;click_duration:double",
        "event_type:string;user_id:int32;item_id:int32;timestamp:timestamp[ms, tz=UTC];view_duration:double;device_type:string",
        "event_type:string;user_id:int32;item_id:int32;timestamp:timestamp[ms, tz=UTC];rating:int32;review_text:string",
    ];
    let root = format!("{data_dir}/parquet");
    for (t, topic) in topics.iter().enumerate() {
        let schema = assert_every_record_once(&root, topic);
        assert_eq!(schema, schemas[t], "{topic}: typed columns");
    }
    // No temporary file is left after a clean stop.
    for topic in topics {
        for entry in std::fs::read_dir(format!("{root}/{topic}")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(name.ends_with(".parquet") && !name.starts_with('.'), "{topic}/{name}");
        }
    }
}

/// clickstream-parquet on its embedded broker, run twice on the same
/// directories (state, broker data, Parquet files): the second run
/// continues exactly after the first's last file. (On librdkafka's
/// in-memory mock a re-run started the topics again at offset 0, and the
/// sink, which names files by offsets, skipped the new records that
/// landed on offsets it had already written.)
#[test]
fn a_rerun_in_the_same_directories_continues_after_the_last_file() {
    let _heavy = heavy_test_lock();
    let dirs = tempfile::tempdir().unwrap();
    let path = |name: &str| dirs.path().join(name).to_str().unwrap().to_string();
    let (state, broker_dir, data_dir) = (path("state"), path("broker"), path("data"));
    let config = dirs.path().join("weir.toml");
    std::fs::write(
        &config,
        "[topologies.clickstream-parquet]\nroll_interval_ms = 300\nmax_file_rows = 200\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let args = [
        "run",
        "clickstream-parquet",
        "--no-generate",
        "--state-dir",
        &state,
        "--broker-dir",
        &broker_dir,
        "--data-dir",
        &data_dir,
        "--config",
        &config,
        "--commit-interval-ms",
        "200",
    ];
    let topics = ["clicks", "views", "ratings"];
    let half = PER_TOPIC / 2;
    for (run, records) in [(1, 0..half), (2, half..PER_TOPIC)] {
        let mut daemon = Proc::spawn(&format!("clickstream-rerun#{run}"), &args);
        let brokers = embedded_broker_addr(&mut daemon);
        let http = daemon_http_addr(&mut daemon);
        wait_ready(&http, &mut daemon);
        for topic in topics {
            let lines: String = records.clone().map(|i| record(topic, i).0 + "\n").collect();
            LineProducer::new(&brokers, topic).send_lines(lines.as_bytes());
        }
        let want = (records.end * topics.len()) as u64;
        wait_for("every record of both runs in a Parquet file", DEADLINE, || {
            daemon.assert_running();
            let rows = rows_written(&http)?;
            let total: u64 = rows.values().sum();
            (total >= want)
                .then_some(())
                .ok_or(format!("{total} of {want}: {rows:?}"))
        });
        daemon.stop();
    }
    let root = format!("{data_dir}/parquet");
    for topic in topics {
        assert_every_record_once(&root, topic);
    }
}
