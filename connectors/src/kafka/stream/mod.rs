//! Running topologies on Kafka: `weir run`.
//!
//! [`run`] resolves each application's topics (`weir_runtime::Plan`, through [`plan::prepare`]), opens the
//! instance's sled database under the state directory, and runs the stream
//! threads ([`thread`]) until asked to stop. The cluster is given: the
//! daemon starts weir's broker itself when it has no `--brokers`, and tests
//! use [`EmbeddedBroker`](crate::kafka::EmbeddedBroker).

pub mod global;
pub mod health;
pub mod plan;
pub mod restore;
pub mod status;
pub mod thread;
pub mod transport;

pub use status::{RunStatus, ThreadStatus};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use weir_runtime::manager::Guarantee;
use weir_runtime::metrics::Metrics;
use weir_runtime::TaskConfig;
use weir_state::StateDb;
use weir_topology::Topology;

use crate::kafka::{Admin, ClientSettings};
use crate::{Error, Result};

/// One application to run: a topology under its application id (which
/// names its consumer group, internal topics and state).
pub struct AppSpec {
    pub application_id: String,
    pub topology: Topology,
}

/// How to run.
pub struct RunConfig {
    /// Bootstrap servers. Required: `None` is refused (start a broker first,
    /// e.g. [`EmbeddedBroker`](crate::kafka::EmbeddedBroker), and pass its
    /// address).
    pub brokers: Option<String>,
    /// Where the instance keeps its sled database.
    pub state_dir: PathBuf,
    /// Stream threads per application.
    pub threads: usize,
    /// How often state is committed (see [`thread`] for the protocol).
    pub commit_interval: Duration,
    /// Write-cache limit per store.
    pub cache_max_bytes: usize,
    /// After a task has had no record for this long (wall clock), its
    /// stream time follows the wall clock, so that windows of a quiet topic
    /// still close and emit. `None`: stream time moves with records only,
    /// as in Kafka Streams. See [`default_idle_advance`].
    pub idle_advance: Option<Duration>,
    /// How long a commit waits for the cluster to take its records before
    /// the daemon gives up (exit 1, nothing committed past them): a broker
    /// outage shorter than this is ridden out. Also librdkafka's
    /// `message.timeout.ms`. [`DEFAULT_DELIVERY_TIMEOUT`] by default.
    pub delivery_timeout: Duration,
    /// Static group membership (KIP-345): stream thread `i` joins its
    /// group as `{instance_id}-{i}` (`group.instance.id`), so that an
    /// instance restarted within the session timeout gets its partitions
    /// back without a rebalance. `None`: dynamic membership. See
    /// [`check_instance_id`].
    pub instance_id: Option<String>,
    /// What a commit promises about outputs (see `transport.rs`):
    /// at-least-once, or exactly-once through Kafka transactions.
    pub guarantee: Guarantee,
    /// Set to stop: the threads commit, leave the group and return.
    pub stop: Arc<AtomicBool>,
    /// The user's librdkafka properties (the daemon's `--kafka` and
    /// `[kafka]`), applied to every client of the run after weir's own
    /// settings; check each with [`ClientSettings::check_property`] first.
    pub kafka_properties: Vec<(String, String)>,
    /// sled's page cache for the instance's state database
    /// ([`weir_state::SLED_CACHE_BYTES`] by default).
    pub state_cache_bytes: u64,
}

/// Why `id` cannot be an instance id (`None` if it can): 1 to 200 ASCII
/// letters, digits, `.`, `_` or `-` (a Kafka group instance id allows
/// more, but these survive every tool and the thread suffix).
pub fn check_instance_id(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > 200 {
        return Some(format!("must be 1 to 200 characters long, got {}", id.len()));
    }
    id.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .map(|c| format!("{c:?} is not allowed (only ASCII letters, digits, '.', '_' and '-')"))
}

/// The name of this instance when it has no `--instance-id`: a random id
/// kept in `{state_dir}/process-id` (as Kafka Streams keeps its process id
/// in its state directory), so that a restart on the same state directory
/// is the same instance to the transaction coordinator.
pub fn process_id(state_dir: &std::path::Path) -> Result<String> {
    let path = state_dir.join("process-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if check_instance_id(id.trim()).is_none() => return Ok(id.trim().to_string()),
        Ok(_) => tracing::warn!(path = %path.display(), "ignoring a malformed process id; writing a new one"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io(e)),
    }
    let id = format!("p{:016x}", rand::random::<u64>());
    let tmp = state_dir.join("process-id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// The daemon's default for [`RunConfig::idle_advance`]: one commit
/// interval, at least a second.
pub fn default_idle_advance(commit_interval: Duration) -> Option<Duration> {
    Some(commit_interval.max(Duration::from_secs(1)))
}

/// The default [`RunConfig::delivery_timeout`]: ten minutes, long enough to
/// ride out a broker restart or a network blip.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(600);

/// The session timeout of static members (`--instance-id`): an instance
/// restarted within it gets its partitions back without a rebalance; one
/// that does not come back holds them this long.
pub const STATIC_SESSION_TIMEOUT_MS: u32 = 30_000;

/// Partitions of every topic the daemon's embedded broker (`weir run`
/// without `--brokers`) creates by default.
pub const EMBEDDED_PARTITIONS: i32 = 3;

/// Run `apps` until `config.stop` is set. Returns the first error of any
/// stream thread (after stopping the others).
pub fn run(apps: Vec<AppSpec>, config: RunConfig) -> Result<()> {
    run_with_status(apps, config, Arc::new(RunStatus::default()))
}

/// [`run`], reporting each stream thread's assignment and restore progress
/// in `status` (what `/readyz` answers from).
pub fn run_with_status(apps: Vec<AppSpec>, config: RunConfig, status: Arc<RunStatus>) -> Result<()> {
    run_with(apps, config, status, Arc::new(Metrics::new()))
}

/// [`run_with_status`], counting the work in `metrics` (what `/metrics`
/// exposes).
pub fn run_with(apps: Vec<AppSpec>, config: RunConfig, status: Arc<RunStatus>, metrics: Arc<Metrics>) -> Result<()> {
    if apps.is_empty() {
        return Err(Error::InvalidArgument("no topology to run".into()));
    }
    if config.threads == 0 {
        return Err(Error::InvalidArgument("--threads must be at least 1".into()));
    }
    if let Some(why) = config.instance_id.as_deref().and_then(check_instance_id) {
        return Err(Error::InvalidArgument(format!("--instance-id: {why}")));
    }
    let brokers = config
        .brokers
        .as_deref()
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| Error::InvalidArgument("no brokers to run on".into()))?;
    let mut settings = ClientSettings::new(brokers);
    settings.overrides = config.kafka_properties.clone();
    let admin = Admin::new(&settings)?;
    // librdkafka fails a record it could not deliver in this time; the
    // commit waits as long (see `commit.rs`, `ThreadState::await_delivery`).
    settings.message_timeout_ms = config.delivery_timeout.as_millis().min(u32::MAX as u128) as u32;
    if config.instance_id.is_some() {
        // A static member that stops is not replaced until its session
        // times out: long enough for a restart to come back first (the
        // point of static membership), as Kafka Streams advises.
        settings.session_timeout_ms = settings.session_timeout_ms.max(STATIC_SESSION_TIMEOUT_MS);
    }
    std::fs::create_dir_all(&config.state_dir)?;
    // A corrupt database (a kill while sled created or recovered its
    // files) is moved aside: every task then restores from its changelog.
    let (db, moved) = StateDb::open_or_reset_with_cache(&config.state_dir, config.state_cache_bytes)
        .map_err(|e| Error::State(format!("state directory {}: {e}", config.state_dir.display())))?;
    if let Some(aside) = moved {
        tracing::warn!(
            state_dir = %config.state_dir.display(),
            moved_to = %aside.display(),
            "the local state database was corrupt; moved it aside, the tasks restore from their changelogs"
        );
    }
    let db = Arc::new(db);
    // Exactly-once: each thread's transactional id names this instance,
    // the same at every start (see `transport.rs`).
    let instance = match &config.instance_id {
        Some(id) => id.clone(),
        None if config.guarantee == Guarantee::ExactlyOnce => process_id(&config.state_dir)?,
        None => String::new(),
    };

    let mut shared = Vec::new();
    let mut globals = Vec::new();
    for app in apps {
        let plan = Arc::new(plan::prepare(&app.topology, &app.application_id, &admin)?);
        tracing::info!(application = %app.application_id, topics = ?plan.source_topics(), "topics ready");
        // Global stores are restored before any stream thread starts, so
        // that no task processes a record against a half-loaded table.
        match global::bootstrap(
            &app.topology,
            &plan,
            &settings,
            db.clone(),
            config.stop.clone(),
            &status,
            metrics.topology(&app.application_id),
        ) {
            Ok(Some(g)) => globals.push(g),
            Ok(None) => {}
            Err(Error::Interrupted(why)) if config.stop.load(Ordering::Relaxed) => {
                tracing::info!("stopped before the stream threads started ({why})");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        shared.push(Arc::new(thread::AppShared {
            topology: app.topology,
            plan,
            settings: settings.clone(),
            db: db.clone(),
            task_config: TaskConfig {
                cache_max_bytes: config.cache_max_bytes,
                idle_advance_after_ms: config.idle_advance.map(|d| d.as_millis() as i64),
            },
            commit_interval: config.commit_interval,
            delivery_timeout: config.delivery_timeout,
            instance_id: config.instance_id.clone(),
            guarantee: config.guarantee,
            transactional_prefix: format!("{}-{instance}", app.application_id),
            stop: config.stop.clone(),
            status: status.clone(),
            metrics: metrics.topology(&app.application_id),
        }));
    }

    let mut handles = Vec::new();
    for g in globals {
        let stop = config.stop.clone();
        let h = std::thread::Builder::new()
            .name("global".into())
            .spawn(move || {
                let r = g.run();
                if r.is_err() {
                    // A table that stops updating would join stale data
                    // silently: stop everything instead.
                    stop.store(true, Ordering::Relaxed);
                }
                r
            })
            .map_err(Error::Io)?;
        handles.push(h);
    }
    for app in &shared {
        for i in 0..config.threads {
            status.register(&format!("{}-thread-{i}", app.plan.application_id));
            let app = app.clone();
            let name = format!("{}-{i}", app.plan.application_id);
            let stop = config.stop.clone();
            let h = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let r = thread::run_thread(app, i);
                    if r.is_err() {
                        // One thread failing stops the daemon: it must not
                        // run on with part of its work silently gone.
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
                .map_err(Error::Io)?;
            handles.push(h);
        }
    }
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(Error::InvalidArgument("a stream thread panicked".into()));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
