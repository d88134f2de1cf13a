//! The daemon's HTTP API over a real socket: `weir run --http 127.0.0.1:0`
//! prints the address it bound; `/healthz`, `/readyz` (503, then 200 once
//! the tasks run), `/topologies` and a parseable `/metrics`; a port in use
//! stops the daemon with one line naming the address.

use std::time::Duration;

use crate::harness::*;

fn request(addr: &str, method: &str, path: &str) -> Result<(u16, String), String> {
    http_request(addr, method, path, None)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn http_api_serves_health_readiness_topologies_and_metrics() {
    http_api_serves_health_readiness_topologies_and_metrics_on(BrokerKind::Dev);
}

#[test]
fn http_api_serves_health_readiness_topologies_and_metrics_on_noida() {
    http_api_serves_health_readiness_topologies_and_metrics_on(BrokerKind::Noida);
}

fn http_api_serves_health_readiness_topologies_and_metrics_on(kind: BrokerKind) {
    let broker = TestBroker::start(kind, 3);
    broker.create_topic("user_clickstream", 3);
    let mut daemon = Daemon::new("http", broker.addr(), &["user-clicks"], &["--http", "127.0.0.1:0"]);
    daemon.start();
    let addr = daemon_http_addr(daemon.proc());
    assert!(!addr.ends_with(":0"), "the bound port is printed, not 0: {addr}");

    let (code, body) = get(&addr, "/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));

    // 503 (with what is pending) until every task runs, then 200.
    let ready = wait_for("/readyz to answer 200", Duration::from_secs(60), || {
        daemon.assert_running();
        let (code, body) = request(&addr, "GET", "/readyz")?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match code {
            200 => Ok(v),
            503 => {
                assert_eq!(v["ready"], false, "{body}");
                assert!(v["pending"].is_array(), "{body}");
                Err(body)
            }
            other => panic!("/readyz answered {other}: {body}"),
        }
    });
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["pending"], serde_json::json!([]));

    let (code, body) = get(&addr, "/topologies");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = v["topologies"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["name"], "user-clicks");
    assert!(list[0]["describe"].as_str().unwrap().contains("Sub-topology"), "{body}");
    assert!(!list[0]["tasks"].as_array().unwrap().is_empty(), "{body}");

    let (code, body) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("exposition parses");
    let build = scrape
        .samples
        .iter()
        .find(|s| s.metric == "weir_build_info")
        .unwrap_or_else(|| panic!("no weir_build_info in {body}"));
    assert!(matches!(build.value, prometheus_parse::Value::Gauge(v) if v == 1.0));

    // The counters move with the work: 1,000 clicks and 3 malformed lines.
    let mut lines = String::new();
    for i in 0..1000 {
        lines.push_str(&format!("User {} clicked on /p at 1763719200.{i:03}\n", i % 100 + 1));
    }
    lines.push_str("not a click\nUser x clicked on /p at 1\nUser 1 clicked on p at 1\n");
    produce(broker.addr(), "user_clickstream", lines.as_bytes());
    let sum = |scrape: &prometheus_parse::Scrape, metric: &str, label: (&str, &str)| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    wait_for("the metrics to count every record", Duration::from_secs(60), || {
        daemon.assert_running();
        let (_, body) = get(&addr, "/metrics");
        let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses");
        let consumed = sum(&scrape, "weir_records_consumed_total", ("topic", "user_clickstream"));
        let repartitioned = sum(
            &scrape,
            "weir_records_produced_total",
            ("topic", "user-clicks-clicks-per-user-repartition"),
        );
        let dlq = sum(&scrape, "weir_dlq_records_total", ("topology", "user-clicks"));
        let lag = sum(&scrape, "weir_consumer_lag_records", ("topic", "user_clickstream"));
        let latencies = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "weir_process_latency_seconds_count")
            .map(|s| match s.value {
                prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
                _ => 0.0,
            })
            .sum::<f64>();
        let got = (consumed, repartitioned, dlq, lag);
        if got == (1003.0, 1000.0, 3.0, 0.0) && latencies > 0.0 {
            Ok(())
        } else {
            Err(format!(
                "(consumed, repartitioned, dlq, lag) = {got:?}, latency observations {latencies}"
            ))
        }
    });

    // Interactive queries read the committed counts: 10 clicks per user.
    wait_for("the store to answer user 17's count", Duration::from_secs(30), || {
        let (code, body) = get(&addr, "/stores/clicks-per-user?key=17");
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if code == 200 && v["value"] == 10 {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });
    let (code, body) = get(&addr, "/stores/clicks-per-user?key=seventeen");
    assert_eq!(code, 400, "{body}");

    let (code, body) = get(&addr, "/no/such/route");
    assert_eq!(code, 404, "{body}");
    let (code, _) = request(&addr, "POST", "/metrics").unwrap();
    assert_eq!(code, 405);
    daemon.assert_running();
}

#[test]
fn a_port_in_use_stops_the_daemon_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // The HTTP port is bound before any broker is contacted.
    let mut daemon = Proc::spawn(
        "http-port-in-use",
        &["run", "user-clicks", "--brokers", "127.0.0.1:1", "--http", &addr],
    );
    let status = daemon.wait(STARTUP);
    assert!(!status.success());
    let err = daemon.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("weir:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&addr), "{err}");
    assert!(lines[0].contains("HTTP"), "{err}");
}

/// App routes read at most 1 MiB of body: more is a 413 with a reason and
/// nothing is produced; the daemon goes on serving.
#[test]
fn an_oversized_body_gets_413_and_produces_nothing() {
    use std::io::{Read, Write};
    let broker = DevBroker::start(1);
    let mut daemon = Daemon::new(
        "body-limit",
        broker.addr(),
        &["emoji-stream"],
        &["--http", "127.0.0.1:0"],
    );
    daemon.start();
    let addr = daemon_http_addr(daemon.proc());
    wait_ready(&addr, daemon.proc());

    // A valid JSON array just over the limit.
    let item = r#"{"user_id": "u1", "emoji_type": "🔥", "timestamp": "2026-11-21T10:00:00.000Z"},"#;
    let mut body = String::from("[");
    while body.len() <= 1024 * 1024 {
        body.push_str(item);
    }
    body.pop();
    body.push(']');
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /emoji HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut writer = c.try_clone().unwrap();
    // The server may answer and close before reading everything: write on
    // a thread and ignore its errors.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(body.as_bytes());
    });
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let _ = sender.join();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("the request body is larger than 1048576 bytes"), "{out}");
    let produced: i64 = watermarks(broker.addr(), "emoji-events")
        .iter()
        .map(|(_, lo, hi)| hi - lo)
        .sum();
    assert_eq!(produced, 0);
    let (code, _) = request(&addr, "GET", "/healthz").unwrap();
    assert_eq!(code, 200);
    daemon.assert_running();
}
