//! The command line: `dev-broker`, `produce`, `tail`, and the errors a user
//! sees for a wrong command.

use std::time::Duration;

use weir_connectors::kafka::default_partitioner;

use crate::harness::*;

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn dev_broker_prints_its_address_and_produce_and_tail_round_trip() {
    let broker = DevBroker::start(2);
    let addr = broker.addr();
    assert!(
        broker
            .proc
            .stderr()
            .contains(&format!("weir: broker data in {}", broker.dir().display())),
        "the dev broker says where its data is\n{}",
        broker.proc.logs()
    );

    // Keyed and unkeyed lines, through the real binary's stdin.
    let input: String = (0..300)
        .map(|i| {
            if i % 3 == 0 {
                format!("value-{i}\n")
            } else {
                format!("key-{i}\tvalue-{i}\n")
            }
        })
        .collect();
    let mut produce = Proc::spawn_with_stdin(
        "produce",
        &["produce", "lines", "--brokers", addr, "--key-tab"],
        input.as_bytes(),
    );
    produce.wait_success(DEADLINE);
    assert!(
        produce.stderr().contains("produced 300 record(s)"),
        "produce reports its count\n{}",
        produce.logs()
    );
    assert_eq!(produce.stdout(), "", "produce prints nothing on stdout");
    // Created with the broker's default partition count, nothing dropped.
    assert_eq!(watermarks(addr, "lines").len(), 2);
    assert_topic_holds(addr, "lines", 300);

    // `tail` reads the brokers from WEIR_BROKERS too.
    let mut tail = Proc::spawn_env(
        "tail",
        &[
            "tail",
            "lines",
            "--from-beginning",
            "--max-records",
            "300",
            "--timeout-ms",
            "30000",
        ],
        &[("WEIR_BROKERS", addr)],
    );
    tail.wait_success(DEADLINE);
    let mut got: Vec<String> = tail.stdout().lines().map(str::to_string).collect();
    let mut want: Vec<String> = input.lines().map(str::to_string).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "tail prints key<TAB>value, or the value alone");

    // Keyed records sit where Kafka's default partitioner puts them.
    for r in read_topic(addr, "lines") {
        if let Some(key) = &r.key {
            assert_eq!(r.partition, default_partitioner(key, 2), "key {}", r.key_str());
        }
    }
}

#[test]
fn tail_with_a_timeout_ends_with_status_0_and_sigterm_stops_a_live_tail() {
    let broker = DevBroker::start(1);
    let addr = broker.addr();
    let mut quiet = Proc::spawn(
        "tail-timeout",
        &["tail", "nothing-here", "--brokers", addr, "--timeout-ms", "300"],
    );
    quiet.wait_success(DEADLINE);
    assert_eq!(quiet.stdout(), "");

    let mut live = Proc::spawn("tail-live", &["tail", "live", "--brokers", addr, "--from-beginning"]);
    produce(addr, "live", b"first\n");
    // Once it printed the record, its signal handlers are installed.
    wait_until("the live tail to print the record", DEADLINE, || {
        live.assert_running();
        live.stdout() == "first\n"
    });
    live.stop();
}

#[test]
fn dev_broker_exits_0_on_sigterm_and_on_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut broker = DevBroker::start(1);
        broker.proc.signal(signal);
        broker.proc.wait_success(DEADLINE);
        let out = broker.proc.stdout();
        assert_eq!(out.lines().count(), 1, "stdout is only the address line: {out:?}");
    }
}

#[test]
fn run_with_an_unknown_topology_fails_with_one_line() {
    for args in [
        &["run", "nope"][..],
        &["run", "user-clicks", "nope", "--brokers", "127.0.0.1:1"][..],
    ] {
        let mut p = Proc::spawn("run-unknown", args);
        let status = p.wait(DEADLINE);
        assert!(!status.success(), "{args:?} exited with {status}");
        assert_eq!(p.stderr(), UNKNOWN_NOPE, "{args:?}");
        assert_eq!(p.stdout(), "");
    }
    let mut p = Proc::spawn("describe-unknown", &["describe", "nope"]);
    assert!(!p.wait(DEADLINE).success());
    assert_eq!(p.stderr(), UNKNOWN_NOPE);
}

const UNKNOWN_NOPE: &str = "weir: unknown topology \"nope\" (registered: emoji-stream, hashtag-trends, \
                            clickstream-parquet, sms-delivery, user-clicks)\n";

/// A bad `weir.toml` stops `weir run` before anything starts, with one line
/// naming the key (and where it is).
#[test]
fn bad_config_files_stop_the_daemon_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "threds = 2\n",
            "weir: config CONFIG: line 1: unknown field `threds`, expected one of `brokers`, `broker_listen`, `broker_dir`, `state_dir`, \
             `data_dir`, `threads`, `commit_interval_ms`, `idle_advance_ms`, `delivery_timeout_ms`, `instance_id`, `guarantee`, `cache_max_bytes`, `state_cache_bytes`, `http`, `generate`, `rate`, `topologies`, `kafka`\n",
        ),
        (
            "http = \"127.0.0.1:0\"\ncommit_interval_ms = \"fast\"\n",
            "weir: config CONFIG: line 2: invalid type: string \"fast\", expected u64\n",
        ),
        (
            "[topologies.emoji-stream]\nscale = 0\n",
            "weir: topology \"emoji-stream\": [topologies.emoji-stream]: invalid value: integer `0`, expected a nonzero u64\n",
        ),
        (
            "[topologies.emoji-stream]\nwindow_size = 5\n",
            "weir: topology \"emoji-stream\": [topologies.emoji-stream]: unknown field `window_size`, expected one of \
             `window_ms`, `grace_ms`, `scale`, `clusters`\n",
        ),
        (
            "[topologies.sms-delivery]\nfailure_probability = 1.5\n",
            "weir: topology \"sms-delivery\": [topologies.sms-delivery]: 1.5 is not a probability in [0, 1]\n",
        ),
        (
            "[topologies.nope]\nrate = 1\n",
            "weir: unknown topology \"nope\" in [topologies] of the config (registered: emoji-stream, hashtag-trends, \
             clickstream-parquet, sms-delivery, user-clicks)\n",
        ),
        (
            "[topologies.user-clicks]\nrate = 0\n",
            "weir: [topologies.user-clicks] rate must be a number of events per second in (0, 10000000], got 0\n",
        ),
        (
            "instance_id = \"pod/7\"\n",
            "weir: config CONFIG: instance_id '/' is not allowed (only ASCII letters, digits, '.', '_' and '-')\n",
        ),
        (
            "[kafka]\n\"queued.min.mesages\" = 5\n",
            "weir: config CONFIG: [kafka] queued.min.mesages: No such configuration property: \"queued.min.mesages\"\n",
        ),
        (
            "guarantee = \"exactly-twice\"\n",
            "weir: config CONFIG: guarantee: \"exactly-twice\" is not a guarantee (at-least-once or exactly-once)\n",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("weir-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        let mut p = Proc::spawn(
            "bad-config",
            &["run", "emoji-stream", "--config", path, "--brokers", "127.0.0.1:1"],
        );
        let status = p.wait(DEADLINE);
        assert_eq!(status.code(), Some(1), "{text:?}");
        assert_eq!(p.stderr(), want.replace("CONFIG", path), "{text:?}");
        assert_eq!(p.stdout(), "", "{text:?}");
    }
    let mut p = Proc::spawn(
        "bad-rate",
        &["run", "user-clicks", "--rate=-5", "--brokers", "127.0.0.1:1"],
    );
    assert_eq!(p.wait(DEADLINE).code(), Some(1));
    assert_eq!(
        p.stderr(),
        "weir: --rate must be a number of events per second in (0, 10000000], got -5\n"
    );
}

#[test]
fn produce_and_tail_without_a_broker_address_fail_with_one_clear_line() {
    for args in [&["produce", "t"][..], &["tail", "t"][..]] {
        let mut p = Proc::spawn("no-brokers", args);
        let status = p.wait(DEADLINE);
        assert!(!status.success(), "{args:?} exited with {status}");
        let err = p.stderr();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(
            err.starts_with("weir: ") && err.contains("--brokers") && err.contains("WEIR_BROKERS"),
            "{args:?}: {err:?}"
        );
    }
}

#[test]
fn list_and_describe_name_the_scenarios() {
    let mut list = Proc::spawn("list", &["list"]);
    list.wait_success(DEADLINE);
    let names: Vec<String> = list
        .stdout()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "emoji-stream",
            "hashtag-trends",
            "clickstream-parquet",
            "sms-delivery",
            "user-clicks"
        ]
    );
    let mut describe = Proc::spawn("describe", &["describe", "user-clicks"]);
    describe.wait_success(DEADLINE);
    let out = describe.stdout();
    assert!(out.contains("clicks-per-user"), "{out}");
    assert!(out.contains("user_click_aggregation"), "{out}");
}

/// A bad `--guarantee` stops `weir run` at once, naming the flag, the
/// value and the two that are accepted.
#[test]
fn run_with_a_bad_guarantee_names_it() {
    let mut p = Proc::spawn(
        "bad-guarantee",
        &["run", "user-clicks", "--brokers", "127.0.0.1:1", "--guarantee", "twice"],
    );
    let status = p.wait(DEADLINE);
    assert_eq!(status.code(), Some(2), "{}", p.logs());
    let first = p.stderr().lines().next().unwrap_or_default().to_string();
    assert_eq!(
        first,
        "error: invalid value 'twice' for '--guarantee <GUARANTEE>': \"twice\" is not a guarantee \
         (at-least-once or exactly-once)"
    );
}
