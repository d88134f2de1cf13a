//! weir's embedded broker: a persistent, single-node broker that speaks the
//! Kafka wire protocol, for development and tests.
//!
//! It is what `weir run` uses when no `--brokers` are given, and what
//! `weir dev-broker` runs on its own. Every Kafka client can use it: the
//! protocol (version negotiation included) comes from the `kafka-protocol`
//! crate, not hand-written codecs. It is not a cluster: one node, no
//! replication, no security; users who outgrow one machine point weir at a
//! Kafka cluster.
//!
//! * [`log`]: per-partition append-only segment files with an offset index,
//!   producer de-duplication, transaction markers, retention and compaction.
//! * [`group`]: the classic consumer-group protocol and committed offsets.
//! * [`topics`]: topic names, ids, partitions and configurations.
//! * [`txn`]: the transaction coordinator (KIP-98) and its state, kept in
//!   `{dir}/transactions/`; transactions that outlive their timeout are
//!   aborted by a background task.
//! * `server`: connections, request decoding and the handlers.

pub mod group;
pub mod log;
pub mod producers;
mod record_file;
mod server;
/// The cluster id the broker reports, by which weir recognizes its own broker.
pub use server::CLUSTER_ID;
pub mod topic_config;
pub mod topics;
pub mod txn;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use group::{GroupConfig, GroupCoordinator};
use producers::ProducerIds;
use topics::Topics;
use txn::TxnCoordinator;

/// How often timed-out transactions are looked for (Kafka's
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s there).
const TXN_TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the broker keeps its data and how it listens.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Topics, committed offsets and producer ids live here.
    pub dir: PathBuf,
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    pub settings: BrokerSettings,
}

/// Behaviour that does not depend on where the broker runs.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Create a topic the first time a client asks for its metadata
    /// (Kafka's `auto.create.topics.enable`, on by default there too).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic (Kafka's `num.partitions`).
    pub default_partitions: i32,
    /// How often retention and compaction run.
    pub housekeeping_interval: Duration,
    pub group: GroupConfig,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            auto_create_topics: true,
            default_partitions: 1,
            housekeeping_interval: Duration::from_secs(30),
            group: GroupConfig::default(),
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the broker's data in {dir}: {message}")]
    Data { dir: PathBuf, message: String },
}

/// A running broker. Dropping it stops it (open connections are closed,
/// logs flushed to disk).
pub struct Broker {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    /// Open the data in `config.dir` (creating it), listen, and serve on a
    /// thread of its own until dropped.
    pub fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        let data = |message: String| StartError::Data {
            dir: config.dir.clone(),
            message,
        };
        std::fs::create_dir_all(&config.dir).map_err(|e| data(e.to_string()))?;
        let listener = std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Listen { addr, source })?;
        let topics = Topics::open(&config.dir).map_err(|e| data(e.to_string()))?;
        let groups = GroupCoordinator::open(&config.dir.join("groups"), config.settings.group.clone())
            .map_err(|e| data(e.to_string()))?;
        let producers = ProducerIds::open(&config.dir).map_err(|e| data(e.to_string()))?;
        let txns = TxnCoordinator::open(&config.dir.join("transactions")).map_err(|e| data(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-broker")
            .enable_all()
            .build()
            .map_err(|e| data(format!("starting its runtime: {e}")))?;
        let shared = Arc::new(server::Shared {
            topics,
            groups,
            producers,
            txns,
            settings: config.settings.clone(),
            advertised: addr,
        });
        // Transactions decided before a crash are completed before serving.
        runtime.block_on(server::txn::recover(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weir-broker-main".into())
            .spawn(move || {
                runtime.block_on(async {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("embedded broker: cannot listen: {e}");
                            return;
                        }
                    };
                    shared.groups.spawn_expiry();
                    let housekeeping = tokio::spawn(housekeeping(shared.clone()));
                    let txn_timeouts = tokio::spawn(txn_timeouts(shared.clone()));
                    tokio::select! {
                        _ = server::accept(listener, shared.clone()) => {}
                        _ = stopped => {}
                    }
                    housekeeping.abort();
                    txn_timeouts.abort();
                });
                // Connections still open are dropped with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(1));
                for p in shared.topics.partitions() {
                    if let Err(e) = p.log().flush() {
                        tracing::warn!(topic = %p.topic, partition = p.index, "flushing at shutdown: {e}");
                    }
                }
            })
            .map_err(|e| data(format!("starting its thread: {e}")))?;
        Ok(Broker {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port picked, if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and flush every log; also what dropping does.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Abort transactions past their timeout (and retry failed completions).
async fn txn_timeouts(shared: Arc<server::Shared>) {
    let mut tick = tokio::time::interval(TXN_TIMEOUT_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        server::txn::expire(&shared).await;
    }
}

/// Retention and compaction, every `housekeeping_interval`.
async fn housekeeping(shared: Arc<server::Shared>) {
    let mut tick = tokio::time::interval(shared.settings.housekeeping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = server::now_ms();
        for p in shared.topics.partitions() {
            let mut log = p.log();
            if let Err(e) = log.enforce_retention(now) {
                tracing::warn!(topic = %p.topic, partition = p.index, "retention: {e}");
            }
            if let Err(e) = log.compact(now) {
                tracing::warn!(topic = %p.topic, partition = p.index, "compaction: {e}");
            }
        }
    }
}
