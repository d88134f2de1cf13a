//! The end-to-end harness: real `weir` processes and Kafka helpers.
//!
//! Rules every test here keeps:
//! - every process is a [`Proc`], which kills it (SIGKILL) when dropped, on
//!   every path, and prints its stdout/stderr when the test is failing;
//! - every wait is on a condition with a deadline ([`wait_until`],
//!   [`wait_for`]), never a sleep that hopes;
//! - ports are chosen at run time by the broker (`weir dev-broker` prints
//!   its address) and by the daemon's HTTP server (`HTTP on http://ADDR`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_connectors::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use weir_connectors::kafka::rdkafka::error::KafkaError;
use weir_connectors::kafka::rdkafka::message::{Headers, Message};
use weir_connectors::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_connectors::kafka::rdkafka::types::RDKafkaErrorCode;
use weir_connectors::kafka::rdkafka::{Offset, TopicPartitionList};
use weir_connectors::kafka::{self, ClientSettings, DeliveryTracker, UNTRACKED};

/// The binary under test.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// Environment variables the `weir` command reads; removed from every child
/// so that a developer's shell cannot change what a test does.
const WEIR_ENV: &[&str] = &[
    "WEIR_BROKERS",
    "WEIR_STATE_DIR",
    "WEIR_THREADS",
    "WEIR_COMMIT_INTERVAL_MS",
    "WEIR_IDLE_ADVANCE_MS",
    "WEIR_DELIVERY_TIMEOUT_MS",
    "WEIR_CACHE_MAX_BYTES",
    "WEIR_PARTITIONS",
    "WEIR_HTTP",
    "WEIR_CONFIG",
    "WEIR_DATA_DIR",
    "WEIR_RATE",
    "WEIR_GENERATE",
    "WEIR_NO_GENERATE",
    "WEIR_KEY_TAB",
    "WEIR_FROM_BEGINNING",
    "WEIR_MAX_RECORDS",
    "WEIR_TIMEOUT_MS",
    "WEIR_INSTANCE_ID",
];

/// The repository's root (the `weir` package's directory).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the test venv that `.ci/run` makes (`target/venv`), with
/// the foreign clients the tests use (pyarrow, ...). Panics (never skips)
/// with the way to make it when it is missing.
pub fn venv_python() -> PathBuf {
    let python = repo().join("target/venv/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run .ci/run, or make it by hand: \
         `python3 -m venv target/venv && target/venv/bin/pip install -r tests/python-requirements.txt`",
        python.display()
    );
    python
}

/// Bounds a hang; never a measure of speed.
pub const STARTUP: Duration = Duration::from_secs(30);

/// Tests that run daemons over many records take this lock, so that on a
/// small machine they do not starve each other of CPU (each stays well under
/// a minute on its own). Light tests run in parallel with them.
pub fn heavy_test_lock() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `condition` every 20 ms until it returns true; panics naming
/// `what` if `timeout` passes first.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    wait_for(what, timeout, || if condition() { Ok(()) } else { Err(String::new()) })
}

/// Polls `attempt` every 20 ms until it returns `Ok`; panics naming `what`
/// and the last `Err` (the state that was not yet right) if `timeout`
/// passes first.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match attempt() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            if last.is_empty() {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            panic!("timed out after {timeout:?} waiting for {what}; last state: {last}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `weir` process whose stdout and stderr go to files in its own
/// temporary directory (which is also its working directory).
///
/// Dropping it kills the process with SIGKILL if it still runs; if the
/// test is panicking, it also prints the tail of both logs, so a failure
/// shows what the process said.
pub struct Proc {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `weir ARGS...`, with no stdin.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Proc::start(name, args, &[], None)
    }

    /// Starts `weir ARGS...` with extra environment variables.
    pub fn spawn_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::start(name, args, env, None)
    }

    /// Starts `weir ARGS...` and writes `stdin` to it, then closes it.
    pub fn spawn_with_stdin(name: &str, args: &[&str], stdin: &[u8]) -> Proc {
        Proc::start(name, args, &[], Some(stdin))
    }

    /// Starts `program ARGS...` (not weir: a broker, a foreign client),
    /// with no stdin, under the same rules as a weir process.
    pub fn spawn_program(name: &str, program: &Path, args: &[&str]) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Proc::launch(name, cmd, None)
    }

    fn start(name: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Proc {
        let mut cmd = Command::new(WEIR);
        cmd.args(args);
        for var in WEIR_ENV {
            cmd.env_remove(var);
        }
        // Daemons run side by side: each takes a free port for its HTTP API
        // (printed as `HTTP on http://ADDR`) unless the test says otherwise.
        cmd.env("WEIR_HTTP", "127.0.0.1:0");
        // Likewise the embedded broker of a `weir run` without --brokers
        // (never Kafka's 9092, which a developer's own broker may hold).
        cmd.env("WEIR_BROKER_LISTEN", "127.0.0.1:0");
        // Tests wait for some info-level log lines; a developer's RUST_LOG
        // must not hide them.
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::launch(name, cmd, stdin)
    }

    /// Runs `cmd` (its program and arguments set) in a new temporary
    /// directory, with its output going to files there.
    fn launch(name: &str, mut cmd: Command, stdin: Option<&[u8]>) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix(&format!("weir-e2e-{name}-"))
            .tempdir()
            .expect("temporary directory");
        let stdout = fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let stderr = fs::File::create(dir.path().join("stderr")).expect("stderr file");
        cmd.current_dir(dir.path())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(stdout)
            .stderr(stderr);
        // If this test process dies without running destructors (a panic
        // in a destructor, a kill), its children die with it.
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut proc = Proc {
            name: name.to_string(),
            child: {
                if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                    // The child may exit before reading everything (a bad
                    // flag): a broken pipe is its answer, not ours.
                    let _ = pipe.write_all(input);
                }
                child
            },
            status: None,
            dir,
        };
        proc.name = format!("{name} (pid {})", proc.pid());
        proc
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// Everything it printed on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Its exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits for it to exit by itself.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        wait_until(&what, timeout, || self.try_status().is_some());
        self.status.expect("exited")
    }

    /// Waits for it to exit and asserts it exited with status 0.
    #[track_caller]
    pub fn wait_success(&mut self, timeout: Duration) {
        let status = self.wait(timeout);
        assert!(status.success(), "{} exited with {status}\n{}", self.name, self.logs());
    }

    /// Sends `signal` (a libc signal number).
    pub fn signal(&mut self, signal: i32) {
        if self.is_running() {
            // SAFETY: kill(2) on our own child's pid, which cannot have
            // been reused: we have not reaped it (try_status said running).
            let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
            assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
        }
    }

    /// Kills it with SIGKILL (no chance to commit or clean up) and reaps it.
    pub fn kill9(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait after SIGKILL"));
        }
    }

    /// Stops it gracefully: SIGTERM, then waits (up to 20 s) and asserts
    /// that it exited with status 0.
    #[track_caller]
    pub fn stop(&mut self) {
        assert!(self.is_running(), "{} had already exited\n{}", self.name, self.logs());
        self.signal(libc::SIGTERM);
        self.wait_success(Duration::from_secs(20));
    }

    /// Asserts it is still running (has not died on its own).
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            panic!("{} exited unexpectedly with {status}\n{}", self.name, self.logs());
        }
    }

    /// The last lines of both logs, for failure messages.
    pub fn logs(&self) -> String {
        fn tail(s: &str, n: usize) -> String {
            let lines: Vec<&str> = s.lines().collect();
            let skip = lines.len().saturating_sub(n);
            let mut out = String::new();
            if skip > 0 {
                out.push_str(&format!("  ... ({skip} earlier lines)\n"));
            }
            for l in &lines[skip..] {
                out.push_str("  ");
                out.push_str(l);
                out.push('\n');
            }
            out
        }
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            tail(&self.stdout(), 40),
            self.name,
            tail(&self.stderr(), 80)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The address `weir run` without `--brokers` prints for its embedded
/// broker (`embedded Kafka broker at ADDR`), waiting for it.
#[track_caller]
pub fn embedded_broker_addr(daemon: &mut Proc) -> String {
    wait_for("the embedded broker's address", STARTUP, || {
        daemon.assert_running();
        let out = daemon.stdout();
        out.lines()
            .find_map(|l| l.strip_prefix("embedded Kafka broker at "))
            .map(|a| a.trim().to_string())
            .ok_or_else(|| format!("stdout so far: {out:?}"))
    })
}

/// `weir dev-broker` in its own process: a broker that outlives the
/// daemons a test starts and kills. Dropped, it is killed. Its data lives
/// in a temporary directory of its own, kept across
/// [`DevBroker::kill9_and_restart`].
pub struct DevBroker {
    pub proc: Proc,
    addr: String,
    partitions: i32,
    dir: tempfile::TempDir,
}

impl DevBroker {
    /// Starts `weir dev-broker --partitions N` on a port chosen at run time
    /// and reads the address it prints as its first line.
    pub fn start(partitions: i32) -> DevBroker {
        let dir = tempfile::tempdir().expect("broker dir");
        let (proc, addr) = Self::launch(partitions, &dir);
        DevBroker {
            proc,
            addr,
            partitions,
            dir,
        }
    }

    fn launch(partitions: i32, dir: &tempfile::TempDir) -> (Proc, String) {
        let dir = dir.path().to_str().expect("utf-8 temp dir");
        let partitions = partitions.to_string();
        let args = [
            "dev-broker",
            "--partitions",
            &partitions,
            "--listen",
            "127.0.0.1:0",
            "--broker-dir",
            dir,
        ];
        let mut proc = Proc::spawn("dev-broker", &args);
        let line = wait_for("the dev broker to print its address", STARTUP, || {
            proc.assert_running();
            let out = proc.stdout();
            match out.split_once('\n') {
                Some((first, _)) => Ok(first.to_string()),
                None => Err(format!("stdout so far: {out:?}")),
            }
        });
        let addr = line
            .strip_prefix("embedded Kafka broker at ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        (proc, addr)
    }

    /// The directory of the broker's data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL the broker and start it again on the same directory (on a
    /// new port: [`DevBroker::addr`] changes).
    pub fn kill9_and_restart(&mut self) {
        self.proc.kill9();
        let (proc, addr) = Self::launch(self.partitions, &self.dir);
        self.proc = proc;
        self.addr = addr;
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// The `noida-db` binary of the test venv (the pip package of
/// tests/python-requirements.txt ships it in its package directory). Run
/// it directly: the package's Python wrapper does not forward signals.
/// Panics (never skips) with the way to install it when it is missing.
pub fn noida_binary() -> PathBuf {
    let lib = repo().join("target/venv/lib");
    let found = fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3."))
            .map(|e| e.path().join("site-packages/noida_db/noida-db"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{}/python3.*/site-packages/noida_db/noida-db is missing: run .ci/run, or install it by hand: \
             `python3 -m venv target/venv && target/venv/bin/pip install -r tests/python-requirements.txt`",
            lib.display()
        )
    })
}

/// `noida-db` (a single-node broker that speaks the Kafka protocol, from
/// PyPI) in its own process, on a port it picks on 127.0.0.1, with its
/// data in a temporary directory: a real cluster to weir (it creates only
/// its internal topics there; source topics must exist first, see
/// [`TestBroker::create_topic`]). Topics it creates by itself (a produce
/// to a missing topic) get one partition.
///
/// Dropped, it is stopped on every path: SIGINT, then SIGKILL if it has
/// not exited within 5 s; its data directory goes after it.
pub struct NoidaBroker {
    // Declared before `_data`: the process is gone before its directory is.
    pub proc: Proc,
    addr: String,
    _data: tempfile::TempDir,
}

impl NoidaBroker {
    /// Starts `noida-db start --only kafka` on port 0 (it prints the port
    /// it bound) and waits until the port takes connections.
    pub fn start() -> NoidaBroker {
        let binary = noida_binary();
        let data = tempfile::Builder::new()
            .prefix("weir-e2e-noida-data-")
            .tempdir()
            .expect("noida data directory");
        let data_dir = data.path().to_str().expect("utf-8 temp path");
        let mut proc = Proc::spawn_program(
            "noida-db",
            &binary,
            &[
                "start",
                "--only",
                "kafka",
                "--host",
                "127.0.0.1",
                "--kafka-port",
                "0",
                "--data-dir",
                data_dir,
            ],
        );
        // `  kafka          127.0.0.1:PORT`
        let addr = wait_for("noida-db to print its Kafka address", STARTUP, || {
            proc.assert_running();
            let out = proc.stdout();
            out.lines()
                .find_map(|l| l.trim().strip_prefix("kafka").map(|a| a.trim().to_string()))
                .filter(|a| a.starts_with("127.0.0.1:") && !a.ends_with(":0"))
                .ok_or_else(|| format!("stdout so far: {out:?}"))
        });
        wait_for("noida-db to accept connections", STARTUP, || {
            proc.assert_running();
            std::net::TcpStream::connect(&addr)
                .map(drop)
                .map_err(|e| format!("connect {addr}: {e}"))
        });
        NoidaBroker {
            proc,
            addr,
            _data: data,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops it with SIGINT and asserts it exited with status 0 (within
    /// 10 s; it takes about 2).
    #[track_caller]
    pub fn stop(&mut self) {
        self.proc.assert_running();
        self.proc.signal(libc::SIGINT);
        self.proc.wait_success(Duration::from_secs(10));
    }
}

impl Drop for NoidaBroker {
    fn drop(&mut self) {
        if self.proc.is_running() {
            self.proc.signal(libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.proc.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // `proc` is dropped next: SIGKILL if it still runs.
    }
}

/// Which broker a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// `weir dev-broker` (weir's own broker): creates missing topics by
    /// itself, with its default partition count.
    Dev,
    /// `noida-db`, a real Kafka-protocol broker.
    Noida,
}

/// A broker a test body runs on, whichever it is: the test names the
/// kind, the body uses [`addr`](Self::addr) and creates its source topics
/// with [`create_topic`](Self::create_topic) (a real cluster does not
/// create them for weir; the dev broker would, but explicit is the same).
pub enum TestBroker {
    Dev(DevBroker),
    Noida(NoidaBroker),
}

impl TestBroker {
    /// Starts a broker of `kind`. `default_partitions` is the dev broker's
    /// partition count for the topics it creates by itself; noida gives
    /// such topics one partition whatever this says.
    pub fn start(kind: BrokerKind, default_partitions: i32) -> TestBroker {
        match kind {
            BrokerKind::Dev => TestBroker::Dev(DevBroker::start(default_partitions)),
            BrokerKind::Noida => TestBroker::Noida(NoidaBroker::start()),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        match self {
            TestBroker::Dev(b) => b.addr(),
            TestBroker::Noida(b) => b.addr(),
        }
    }

    pub fn kind(&self) -> BrokerKind {
        match self {
            TestBroker::Dev(_) => BrokerKind::Dev,
            TestBroker::Noida(_) => BrokerKind::Noida,
        }
    }

    /// Creates `topic` with `partitions` partitions and waits until it
    /// shows in the metadata; asserts that it has that many partitions
    /// (an existing topic is left as it is, so it must already have them).
    #[track_caller]
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin = kafka::Admin::connect(self.addr()).unwrap_or_else(|e| panic!("admin client: {e}"));
        admin
            .ensure_topics(&[kafka::TopicSpec::new(topic, partitions)])
            .unwrap_or_else(|e| panic!("creating {topic} with {partitions} partitions: {e}"));
        let got = admin
            .partition_count(topic)
            .unwrap_or_else(|e| panic!("partition count of {topic}: {e}"));
        assert_eq!(
            got,
            Some(partitions),
            "partitions of {topic} on the {:?} broker",
            self.kind()
        );
    }
}

/// A `weir run` daemon with its own state directory, which survives the
/// process (so that a restart finds it) until the `Daemon` is dropped.
pub struct Daemon {
    pub name: String,
    brokers: String,
    names: Vec<String>,
    extra_args: Vec<String>,
    state: tempfile::TempDir,
    pub proc: Option<Proc>,
    previous: Vec<Proc>,
}

impl Daemon {
    /// A daemon running `topologies` against `brokers`, not started yet.
    pub fn new(name: &str, brokers: &str, topologies: &[&str], extra_args: &[&str]) -> Daemon {
        Daemon {
            name: name.to_string(),
            brokers: brokers.to_string(),
            names: topologies.iter().map(|s| s.to_string()).collect(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            state: tempfile::Builder::new()
                .prefix(&format!("weir-e2e-state-{name}-"))
                .tempdir()
                .expect("state directory"),
            proc: None,
            previous: Vec::new(),
        }
    }

    /// The state directory given as `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }

    /// Starts (or restarts) the process.
    pub fn start(&mut self) -> &mut Self {
        if let Some(mut previous) = self.proc.take() {
            assert!(!previous.is_running(), "{} is already running", self.name);
            // Kept so that a failing test still prints its logs.
            self.previous.push(previous);
        }
        let state = self.state_dir();
        let state = state.to_str().expect("utf-8 temp path");
        let mut args: Vec<&str> = vec!["run"];
        args.extend(self.names.iter().map(String::as_str));
        args.extend(["--brokers", &self.brokers, "--state-dir", state]);
        args.extend(self.extra_args.iter().map(String::as_str));
        let name = format!("{}#{}", self.name, self.previous.len() + 1);
        self.proc = Some(Proc::spawn(&name, &args));
        self
    }

    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("daemon started")
    }

    pub fn kill9(&mut self) {
        self.proc().kill9();
    }

    pub fn stop(&mut self) {
        self.proc().stop();
    }

    pub fn assert_running(&mut self) {
        self.proc().assert_running();
    }

    /// Deletes the state directory (the daemon must not be running).
    pub fn wipe_state(&mut self) {
        assert!(!self.proc().is_running(), "wiping the state of a running daemon");
        let dir = self.state_dir();
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove state dir");
        }
    }
}

// ---------------------------------------------------------------- Kafka

/// One record read back from a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The value as text (lossy).
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }

    /// The key as text (lossy), "" for a null key.
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    /// The value of header `name` as text, if present and not null.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Produces `lines` (newline-separated, no keys) to `topic` through weir's
/// batched, zstd-compressed producer, creating the topic with the broker's
/// default partition count if it is missing. Asserts every line was
/// delivered.
pub fn produce(brokers: &str, topic: &str, lines: &[u8]) -> u64 {
    let want = lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    let n = kafka::produce_lines(brokers, topic, lines, false)
        .unwrap_or_else(|e| panic!("producing {want} lines to {topic}: {e}"));
    assert_eq!(n, want, "records delivered to {topic}");
    n
}

/// A producer for tests that write in many small steps (one producer for
/// all of them: creating one per step costs a connection and a metadata
/// round trip each time).
pub struct LineProducer {
    topic: String,
    producer: BaseProducer<DeliveryTracker>,
}

impl LineProducer {
    /// A producer to `topic`, which is created (with the broker's default
    /// partition count) if missing.
    pub fn new(brokers: &str, topic: &str) -> LineProducer {
        kafka::Admin::connect(brokers)
            .and_then(|a| a.ensure_topics(&[kafka::TopicSpec::with_default_partitions(topic)]))
            .unwrap_or_else(|e| panic!("creating {topic}: {e}"));
        let producer = ClientSettings::new(brokers)
            .producer_config()
            .create_with_context(DeliveryTracker::new())
            .expect("producer");
        LineProducer {
            topic: topic.to_string(),
            producer,
        }
    }

    /// Produces every non-empty line of `lines` (no keys) and waits until
    /// all were delivered.
    pub fn send_lines(&self, lines: &[u8]) {
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&self.topic, UNTRACKED).payload(line);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => panic!("producing to {}: {e}", self.topic),
                }
            }
        }
        kafka::flush_producer(&self.producer, Duration::from_secs(60)).expect("flush");
        let delivery = self.producer.context();
        assert_eq!(
            delivery.failed(),
            0,
            "records to {} were not delivered; first error: {:?}",
            self.topic,
            delivery.first_error()
        );
    }
}

/// `(partition, low, high)` watermarks of every partition of `topic`.
pub fn watermarks(brokers: &str, topic: &str) -> Vec<(i32, i64, i64)> {
    let consumer = reader_consumer(brokers);
    let partitions = partition_count(&consumer, topic).unwrap_or_else(|| panic!("topic {topic} does not exist"));
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
            (p, low, high)
        })
        .collect()
}

/// Records of `topic` in transactions still open on the broker: the end
/// offsets (`read_uncommitted`) less the last stable offsets (what
/// ListOffsets answers a `read_committed` client), over all partitions.
pub fn open_transaction_records(brokers: &str, topic: &str) -> i64 {
    let committed = ClientSettings::new(brokers)
        .with("client.id", "weir-e2e-reader")
        .with("isolation.level", "read_committed")
        .standalone_consumer_config()
        .create::<BaseConsumer>()
        .expect("reader consumer");
    let stable: i64 = (0..partition_count(&committed, topic).unwrap_or(0))
        .map(|p| {
            committed
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"))
                .1
        })
        .sum();
    let end: i64 = watermarks(brokers, topic).iter().map(|(_, _, high)| high).sum();
    end - stable
}

/// Asserts the broker still holds every record ever written to `topic`
/// (the embedded broker drops old data silently when a partition is full)
/// and that there are `expected` of them.
#[track_caller]
pub fn assert_topic_holds(brokers: &str, topic: &str, expected: u64) {
    let marks = watermarks(brokers, topic);
    for (p, low, _) in &marks {
        assert_eq!(*low, 0, "{topic}/{p} lost its oldest records (watermarks {marks:?})");
    }
    let total: i64 = marks.iter().map(|(_, _, high)| high).sum();
    assert_eq!(total, expected as i64, "records in {topic} (watermarks {marks:?})");
}

fn reader_consumer(brokers: &str) -> BaseConsumer {
    ClientSettings::new(brokers)
        .with("client.id", "weir-e2e-reader")
        // See everything the daemon wrote, committed or not.
        .with("isolation.level", "read_uncommitted")
        .standalone_consumer_config()
        .create()
        .expect("reader consumer")
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> Option<i32> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).ok()?;
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|&n| n > 0)
}

/// Reads a topic incrementally: each [`catch_up`](Self::catch_up) reads
/// every partition up to the high watermark it had when the call started.
pub struct TopicReader {
    topic: String,
    consumer: BaseConsumer,
    next: Vec<i64>,
    /// Every record read so far, in the order read (offset order within a
    /// partition).
    pub records: Vec<Record>,
}

impl TopicReader {
    /// Opens `topic` from its beginning, waiting (up to `timeout`) for it to
    /// exist.
    pub fn open(brokers: &str, topic: &str, timeout: Duration) -> TopicReader {
        let consumer = reader_consumer(brokers);
        let partitions = wait_for(&format!("topic {topic} to exist"), timeout, || {
            partition_count(&consumer, topic).ok_or_else(|| "absent".to_string())
        });
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
        }
        kafka::assign_at(&consumer, &tpl, Duration::from_secs(10)).expect("assign");
        TopicReader {
            topic: topic.to_string(),
            consumer,
            next: vec![0; partitions as usize],
            records: Vec::new(),
        }
    }

    /// Reads everything written before this call; returns how many new
    /// records were read.
    pub fn catch_up(&mut self, timeout: Duration) -> usize {
        let before = self.records.len();
        let targets: Vec<i64> = (0..self.next.len() as i32)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("watermarks of {}/{p}: {e}", self.topic))
                    .1
            })
            .collect();
        let deadline = Instant::now() + timeout;
        while self.next.iter().zip(&targets).any(|(n, t)| n < t) {
            assert!(
                Instant::now() < deadline,
                "timed out reading {} up to {targets:?}; at {:?}",
                self.topic,
                self.next
            );
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default();
                    self.next[m.partition() as usize] = m.offset() + 1;
                    self.records.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                }
                // Transient (a reconnect); librdkafka recovers by itself.
                Some(Err(e)) => eprintln!("reading {}: {e}", self.topic),
                None => {}
            }
        }
        self.records.len() - before
    }

    /// The latest value of each key (by offset within its partition), as
    /// text. Errors if a key shows in two partitions.
    pub fn latest_by_key(&self) -> Result<BTreeMap<String, String>, String> {
        let mut latest: BTreeMap<String, (i32, String)> = BTreeMap::new();
        for r in &self.records {
            let key = r.key_str();
            if let Some((p, _)) = latest.get(&key) {
                if *p != r.partition {
                    return Err(format!(
                        "key {key:?} is in partitions {p} and {} of {}",
                        r.partition, self.topic
                    ));
                }
            }
            latest.insert(key, (r.partition, r.value_str()));
        }
        Ok(latest.into_iter().map(|(k, (_, v))| (k, v)).collect())
    }
}

/// Reads all of `topic` (it must exist) up to its high watermarks.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    let mut r = TopicReader::open(brokers, topic, Duration::from_secs(10));
    r.catch_up(Duration::from_secs(30));
    r.records
}

// ------------------------------------------- HTTP helpers (scenario tests)

/// Waits for `HTTP on http://ADDR` on a daemon's stderr and returns ADDR.
pub fn daemon_http_addr(proc: &mut Proc) -> String {
    wait_for("the daemon to print its HTTP address", STARTUP, || {
        proc.assert_running();
        let err = proc.stderr();
        err.lines()
            .find_map(|l| l.strip_prefix("HTTP on http://"))
            .map(|a| a.trim().to_string())
            .ok_or_else(|| format!("stderr so far: {err:?}"))
    })
}

/// One HTTP/1.1 request on a fresh connection, with `body` (sent as
/// `application/json`) if given: (status code, body). A chunked response
/// body is decoded.
pub fn http_request(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, String), String> {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    if let Some(b) = body {
        req.extend_from_slice(format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body.unwrap_or_default());
    c.write_all(&req).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let out = String::from_utf8(out).map_err(|e| format!("response is not UTF-8: {e}"))?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {out:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    if !chunked {
        return Ok((code, body.to_string()));
    }
    let mut rest = body;
    let mut decoded = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| format!("bad chunk in {body:?}"))?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|e| format!("bad chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok((code, decoded));
        }
        decoded.push_str(after.get(..size).ok_or_else(|| format!("short chunk in {body:?}"))?);
        rest = after
            .get(size + 2..)
            .ok_or_else(|| format!("short chunk in {body:?}"))?;
    }
}

/// [`http_request`] that panics on a transport error.
#[track_caller]
pub fn http_call(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
    http_request(addr, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Waits until `/readyz` answers 200 (every task of the daemon runs).
pub fn wait_ready(addr: &str, proc: &mut Proc) {
    wait_for("/readyz to answer 200", Duration::from_secs(60), || {
        proc.assert_running();
        match http_request(addr, "GET", "/readyz", None)? {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        }
    })
}

/// The sum of the samples of `metric` on `/metrics` whose labels include
/// every `(name, value)` of `labels` (0 when there is none).
pub fn metric_sum(addr: &str, metric: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
    let (code, body) = http_request(addr, "GET", "/metrics", None)?;
    if code != 200 {
        return Err(format!("/metrics answered {code}: {body}"));
    }
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("/metrics does not parse: {e}"))?;
    Ok(scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum())
}

/// The total number of records in `topic` (sum of its high watermarks).
pub fn topic_total(brokers: &str, topic: &str) -> i64 {
    watermarks(brokers, topic).iter().map(|(_, _, high)| high).sum()
}

/// A daemon running `app` on `brokers` with `config` as its weir.toml and a
/// 200 ms commit interval, started and ready: (daemon, its HTTP address,
/// the config's directory, which must live as long as the daemon).
///
/// Stream time moves with records only (`--idle-advance-ms 0`): the tests
/// that use this helper close windows with records of their own, at event
/// times far from the wall clock, and expect exactly those windows; a
/// quiet partition's stream time following the wall clock would close the
/// last windows too, at a moment that depends on the machine's speed.
pub fn ready_daemon_with_config(
    name: &str,
    brokers: &str,
    app: &str,
    config: &str,
) -> (Daemon, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("config dir");
    let path = dir.path().join("weir.toml");
    fs::write(&path, config).expect("write weir.toml");
    let path = path.to_str().expect("utf-8 temp path");
    let mut daemon = Daemon::new(
        name,
        brokers,
        &[app],
        &[
            "--config",
            path,
            "--commit-interval-ms",
            "200",
            "--idle-advance-ms",
            "0",
        ],
    );
    daemon.start();
    let addr = daemon_http_addr(daemon.proc());
    wait_ready(&addr, daemon.proc());
    (daemon, addr, dir)
}
