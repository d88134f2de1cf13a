//! The dashboard (`GET /`) in a real headless browser: `weir run
//! emoji-stream user-clicks clickstream-parquet` on the embedded broker
//! (generators on), then `node tests/browser/dashboard.mjs http://ADDR/
//! target/dashboard.png`, which drives Debian's `/usr/bin/chromium` through
//! playwright-core: the topology list shows emoji-stream with moving
//! numbers, three clicks on 🔥 are acknowledged, the live 🔥 total from
//! `/emoji/live` (SSE) rises, the 15-minute plots have axis labels and data
//! points, the topology graph shows describe()'s sub-topologies, store and
//! topics, emojis are labelled by name (and drawn by name and code point
//! without an emoji font), the Parquet panel shows whole file names and
//! counts rows written as records out, and screenshots are saved
//! (`target/dashboard.png`, `target/dashboard-full.png`).
//!
//! Also here: what `POST /emoji` (the dashboard's buttons) answers for a
//! reaction whose window has already closed.
//!
//! Needs `/usr/bin/chromium` and `tests/browser/node_modules/playwright-core`
//! (`.ci/run` installs both); without them the test fails and says so.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Bounds the browser script (its own steps have shorter deadlines).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(200);

/// Panics (never skips) with the way to install what is missing.
fn require_browser_tools() {
    let setup = "run .ci/run, or install them by hand: \
                 `apt-get install -y --no-install-recommends chromium` and `npm ci --prefix tests/browser`";
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(CHROMIUM.to_string());
    }
    let playwright = repo().join("tests/browser/node_modules/playwright-core/package.json");
    if !playwright.exists() {
        missing.push(playwright.display().to_string());
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => missing.push("node (Debian package nodejs)".to_string()),
    }
    assert!(
        missing.is_empty(),
        "the dashboard browser test needs {}: {setup}",
        missing.join(", ")
    );
}

/// A child process killed (SIGKILL) if still running when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `node tests/browser/dashboard.mjs URL SCREENSHOT` with a deadline:
/// (exit status, stdout, stderr).
fn run_browser_script(url: &str, screenshot: &Path) -> (ExitStatus, String, String) {
    let logs = tempfile::Builder::new()
        .prefix("weir-e2e-browser-")
        .tempdir()
        .expect("temporary directory");
    let out_path = logs.path().join("stdout");
    let err_path = logs.path().join("stderr");
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("tests/browser/dashboard.mjs"))
        .arg(url)
        .arg(screenshot)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"));
    // If this test process dies, node dies with it (and the browser with
    // node: playwright talks to it over a pipe).
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap_or_else(|e| panic!("cannot start node: {e}")));
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait node") {
            break status;
        }
        if Instant::now() >= deadline {
            drop(child);
            panic!(
                "the browser script did not finish in {BROWSER_TIMEOUT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                fs::read_to_string(&out_path).unwrap_or_default(),
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        fs::read_to_string(&out_path).unwrap_or_default(),
        fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

#[test]
fn dashboard_shows_live_numbers_and_sends_emojis_in_a_real_browser() {
    require_browser_tools();
    let _heavy = heavy_test_lock();

    // The embedded broker (no --brokers): the generators run by default.
    // The working directory (state, data) is the process's own temp dir.
    let mut daemon = Proc::spawn(
        "dashboard",
        &[
            "run",
            "emoji-stream",
            "user-clicks",
            "clickstream-parquet",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let addr = daemon_http_addr(&mut daemon);
    wait_ready(&addr, &mut daemon);

    let screenshot = repo().join("target/dashboard.png");
    fs::create_dir_all(screenshot.parent().expect("target dir")).expect("create target/");
    let _ = fs::remove_file(&screenshot);
    let url = format!("http://{addr}/");
    let (status, stdout, stderr) = run_browser_script(&url, &screenshot);
    println!("--- browser script stdout ---\n{stdout}--- browser script stderr ---\n{stderr}");
    daemon.assert_running();
    assert!(
        status.success(),
        "the browser script exited with {status}\n{stderr}\n{stdout}\n{}",
        daemon.logs()
    );

    let summary: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("the script's summary is not JSON ({e}): {stdout}"));
    assert_eq!(summary["ok"], true, "{stdout}");
    assert!(summary["fire"]["sent"].as_u64() >= Some(3), "{stdout}");
    for chart in ["chart-rates", "chart-lag", "chart-latency"] {
        assert!(
            summary["charts"][chart]["points"].as_u64() >= Some(1),
            "{chart}: {stdout}"
        );
    }
    assert_eq!(
        summary["graph"]["subtopologies"],
        serde_json::json!(["Sub-topology 0", "Sub-topology 1"]),
        "{stdout}"
    );
    assert_eq!(summary["emoji_labels"]["🔥"], "fire", "{stdout}");
    assert!(summary["parquet_files"].as_u64() >= Some(1), "{stdout}");
    assert!(summary["parquet_records_out"].as_f64() > Some(0.0), "{stdout}");
    let full = fs::read(repo().join("target/dashboard-full.png")).expect("the full-page screenshot");
    assert!(
        full.starts_with(b"\x89PNG\r\n\x1a\n"),
        "target/dashboard-full.png is not a PNG"
    );
    let png = fs::read(&screenshot).unwrap_or_else(|e| panic!("reading {}: {e}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        screenshot.display()
    );
    // A blank 1280x900 page compresses to a few KiB; a rendered dashboard
    // (text, emojis, bars) is far larger.
    assert!(
        png.len() > 30_000,
        "{} is only {} bytes: the page did not render",
        screenshot.display(),
        png.len()
    );

    daemon.stop();
}

/// `POST /emoji` names a reaction whose window has already closed: it is
/// produced (the topic holds every accepted reaction) but the topology
/// drops it, so the 200 answer lists it under `late` with its window, when
/// the window closed and the stream time, and a one-line `warning`; a
/// reaction in time gets the plain answer. Stream time moves with records
/// only (`--idle-advance-ms 0`), so every time in the answer is exact.
#[test]
fn post_emoji_answers_which_reactions_came_after_their_window_closed() {
    use crate::scenario_emoji::{reaction, T0};
    let mut daemon = Proc::spawn(
        "emoji-late",
        &[
            "run",
            "emoji-stream",
            "--no-generate",
            "--idle-advance-ms",
            "0",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let addr = daemon_http_addr(&mut daemon);
    wait_ready(&addr, &mut daemon);
    let post = |body: String| {
        let (code, answer) = http_call(&addr, "POST", "/emoji", Some(body.as_bytes()));
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
        (code, v)
    };
    let plain = serde_json::json!({"produced": 1, "topic": "emoji-events"});

    // Window [T0, T0 + 2 s) of 🔥, then a reaction 10 s later: 🔥's task
    // reaches stream time T0 + 10 s and closes the window (end + 1 s grace).
    // Both by one user, so on one partition of emoji-events (the key is the
    // user): the topology reads them in this order. (From two partitions
    // it may read the second first, and then drop the first as late.)
    assert_eq!(post(reaction("u1", "🔥", T0 + 100)), (200, plain.clone()));
    let mut sse = std::net::TcpStream::connect(&addr).expect("connect for SSE");
    {
        use std::io::Write;
        write!(sse, "GET /emoji/live HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    }
    assert_eq!(post(reaction("u1", "🔥", T0 + 10_000)), (200, plain.clone()));
    // The closed window reaches the live feed, which is where the daemon
    // learns that it closed.
    sse.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut seen = String::new();
    wait_for("the closed window on /emoji/live", Duration::from_secs(60), || {
        use std::io::Read;
        daemon.assert_running();
        let mut buf = [0u8; 4096];
        match sse.read(&mut buf) {
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("reading the SSE stream: {e}")),
        }
        if seen.contains(r#""window_start":"2026-11-21T10:00:00.000Z""#) {
            Ok(())
        } else {
            Err(seen.clone())
        }
    });

    // One late reaction (item 1) among two in time.
    let (code, answer) = post(format!(
        "[{},{},{}]",
        reaction("u3", "🔥", T0 + 10_500),
        reaction("u4", "🔥", T0 + 1_999),
        reaction("u5", "🔥", T0 + 11_000)
    ));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer,
        serde_json::json!({
            "produced": 3,
            "topic": "emoji-events",
            "late": [{
                "item": 1,
                "emoji_type": "🔥",
                "window_start": "2026-11-21T10:00:00.000Z",
                "window_end": "2026-11-21T10:00:02.000Z",
                "closed_at": "2026-11-21T10:00:03.000Z",
                "stream_time": "2026-11-21T10:00:03.000Z",
            }],
            "warning": "1 of 3 reaction(s) arrived after their window closed and will not be counted \
                (first: item 1, 🔥 in window 2026-11-21T10:00:00.000Z to 2026-11-21T10:00:02.000Z, \
                closed at 2026-11-21T10:00:03.000Z; stream time 2026-11-21T10:00:03.000Z): they were \
                produced to emoji-events all the same. Send \"timestamp\" as the current time.",
        })
    );
    // The answer told the truth: the topology dropped exactly that one.
    wait_for(
        "the late reaction to be dropped and counted",
        Duration::from_secs(30),
        || {
            daemon.assert_running();
            let n = metric_sum(
                &addr,
                "weir_late_records_dropped_total",
                &[("topology", "emoji-stream")],
            )?;
            if n == 1.0 {
                Ok(())
            } else {
                Err(format!("{n} late records dropped"))
            }
        },
    );
    daemon.stop();
}
