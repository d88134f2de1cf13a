//! The dashboard (`GET /`) in a real headless browser: `weir run
//! emoji-stream user-clicks` on the embedded broker (generators on), then
//! `node tests/browser/dashboard.mjs http://ADDR/ target/dashboard.png`,
//! which drives Debian's `/usr/bin/chromium` through playwright-core: the
//! topology list shows emoji-stream with moving numbers, three clicks on 🔥
//! are acknowledged, the live 🔥 total from `/emoji/live` (SSE) rises, and a
//! screenshot is saved.
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
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

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
        &["run", "emoji-stream", "user-clicks", "--http", "127.0.0.1:0"],
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
