//! The one producer context of weir: [`DeliveryTracker`].
//!
//! `BaseProducer::flush` returning says that nothing is left in flight, not
//! that everything arrived: a record that failed (timed out, refused by the
//! broker) is only reported to the producer's context. Every producer in
//! weir therefore uses this one tracker as its context, so that each
//! reports failures the same way (a count, the first error with its topic,
//! [`DeliveryTracker::check`] turning them into [`Error::Delivery`]) and no
//! producer can forget to look at them, as copies of the same few lines
//! each did a little differently before.
//!
//! What differs between producers is opted into when the tracker is built:
//! a [`Health`] to report librdkafka's errors to (a stream thread's
//! producers), a warning per failed record
//! ([`warn_on_failure`](DeliveryTracker::warn_on_failure)), a per-topic
//! hook run for each delivered record
//! ([`on_delivered_per_topic`](DeliveryTracker::on_delivered_per_topic)),
//! and, through the records' delivery opaques, the offsets a commit needs
//! ([`take_tracked`](DeliveryTracker::take_tracked)).
//!
//! On success the tracker costs one atomic increment per record; only
//! records that ask for tracking (or a producer with a per-topic hook) take
//! a lock.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::util::IntoOpaque;

use super::stream::health::Health;
use crate::{Error, Result};

/// The delivery opaque of a record whose delivery is only counted.
pub const UNTRACKED: usize = 0;
/// The delivery opaque of a record whose partition's end is tracked: per
/// (topic, partition), the offset after the highest delivered such record
/// (a changelog's end, which the commit records).
pub const TRACK_END: usize = 1;
/// The first delivery opaque whose record's own offset is tracked, under
/// that opaque (a checkpoint record: the stream transport sends the `i`th
/// of a commit with `TRACK_OFFSET + i`).
pub const TRACK_OFFSET: usize = 2;

/// A delivery opaque the tracker understands: `usize` (one of
/// [`UNTRACKED`], [`TRACK_END`], or [`TRACK_OFFSET`] and up), or `()` for a
/// producer whose records are built with `BaseRecord::to` and never
/// tracked.
pub trait TrackingOpaque: IntoOpaque {
    /// What to track for the record: one of the `usize` opaques above.
    fn tracking(&self) -> usize;
}

impl TrackingOpaque for usize {
    fn tracking(&self) -> usize {
        *self
    }
}

impl TrackingOpaque for () {
    fn tracking(&self) -> usize {
        UNTRACKED
    }
}

/// What the delivered tracked records said since the last
/// [`take_tracked`](DeliveryTracker::take_tracked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    /// For records sent with [`TRACK_END`]: per (topic, partition), the
    /// offset after the highest delivered one.
    pub ends: HashMap<(String, i32), i64>,
    /// For records sent with an opaque from [`TRACK_OFFSET`] on: the offset
    /// of the delivered record, by opaque.
    pub offsets: HashMap<usize, i64>,
}

/// Run for each record delivered to one topic.
pub type OnDelivered = Box<dyn Fn() + Send + Sync>;

/// Resolves the [`OnDelivered`] hook of a topic, once per topic.
type ResolveHook = Box<dyn Fn(&str) -> OnDelivered + Send + Sync>;

/// Per-topic hooks, resolved on a topic's first delivered record and kept,
/// so that a delivery costs no lookup by label (few topics: a list).
struct PerTopic {
    resolve: ResolveHook,
    resolved: Mutex<Vec<(String, OnDelivered)>>,
}

/// A producer's context: counts delivered and failed records, keeps the
/// first failure, tracks the offsets that records ask for through their
/// delivery opaque, and routes librdkafka's log lines and errors.
///
/// `O` is the records' delivery opaque: `usize` (the default) lets a record
/// ask for tracking (send it with `BaseRecord::with_opaque_to(topic, o)`,
/// [`UNTRACKED`] when it asks for nothing); `()` serves producers whose
/// records are built with `BaseRecord::to` (the admin's control producer
/// and the benches' shared send helper), which can ask for nothing.
///
/// ```no_run
/// # use std::time::Duration;
/// # use weir_connectors::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
/// # use weir_connectors::kafka::{flush_producer, ClientSettings, DeliveryTracker, UNTRACKED};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let producer: BaseProducer<DeliveryTracker> = ClientSettings::new("localhost:9092")
///     .producer_config()
///     .create_with_context(DeliveryTracker::new().warn_on_failure("a greeting"))?;
/// let record = BaseRecord::<str, str, usize>::with_opaque_to("greetings", UNTRACKED).payload("hello");
/// producer.send(record).map_err(|(e, _)| e)?;
/// flush_producer(&producer, Duration::from_secs(10))?;
/// producer.context().check("greetings")?; // Err if any record was lost
/// # Ok(())
/// # }
/// ```
pub struct DeliveryTracker<O = usize> {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    tracked: Mutex<Tracked>,
    per_topic: Option<PerTopic>,
    /// Which records these are, for the warning of each failed one.
    failure_label: Option<String>,
    health: Option<Arc<Health>>,
    opaque: PhantomData<fn(O)>,
}

impl<O> Default for DeliveryTracker<O> {
    fn default() -> Self {
        DeliveryTracker {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            tracked: Mutex::new(Tracked::default()),
            per_topic: None,
            failure_label: None,
            health: None,
            opaque: PhantomData,
        }
    }
}

impl<O> fmt::Debug for DeliveryTracker<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryTracker")
            .field("delivered", &self.delivered())
            .field("failed", &self.failed())
            .field("first_error", &self.first_error())
            .finish_non_exhaustive()
    }
}

/// A lock that a panic elsewhere does not poison for the delivery callback
/// (which runs inside librdkafka's poll and must not panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<O> DeliveryTracker<O> {
    /// A tracker that counts and keeps the first failure, and logs
    /// librdkafka's lines as rdkafka's default context does.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports librdkafka's errors and log lines to a stream thread's
    /// [`Health`] (as the thread's consumer does), so that an outage is one
    /// problem on `/readyz` rather than a line per connection attempt.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Logs a warning for each failed record, naming them by `label` ("an
    /// HTTP-ingress record"), besides counting it.
    pub fn warn_on_failure(mut self, label: impl Into<String>) -> Self {
        self.failure_label = Some(label.into());
        self
    }

    /// Runs a hook for each delivered record of a topic: `resolve` makes
    /// the topic's hook on its first delivered record (look up a labelled
    /// metric there), which is kept for the topic's later records.
    pub fn on_delivered_per_topic(mut self, resolve: impl Fn(&str) -> OnDelivered + Send + Sync + 'static) -> Self {
        self.per_topic = Some(PerTopic {
            resolve: Box::new(resolve),
            resolved: Mutex::new(Vec::new()),
        });
        self
    }

    /// Records delivered so far (a producer with
    /// `delivery.report.only.error` reports none).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Records that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Acquire)
    }

    /// The first failure: librdkafka's error and the record's topic.
    pub fn first_error(&self) -> Option<String> {
        lock(&self.first_error).clone()
    }

    /// `Err(Error::Delivery)` naming `what` (the topic written to) if any
    /// record failed. Failures are not reset: a producer that lost a
    /// record stays failed. Call it after a flush.
    pub fn check(&self, what: &str) -> Result<()> {
        let failed = self.failed();
        if failed == 0 {
            return Ok(());
        }
        Err(Error::Delivery {
            topic: what.to_string(),
            failed,
            first_error: self.first_error().unwrap_or_default(),
        })
    }

    /// Forgets every failure and tracked offset: after a transaction
    /// abort, whose records were dropped by design (their reports say
    /// "purged"), the producer goes on with the next transaction.
    pub fn start_over(&self) {
        *lock(&self.first_error) = None;
        self.failed.store(0, Ordering::Release);
        *lock(&self.tracked) = Tracked::default();
    }

    /// What the tracked records delivered since the last call said; the
    /// tracker starts over.
    pub fn take_tracked(&self) -> Tracked {
        std::mem::take(&mut *lock(&self.tracked))
    }

    /// A record with opaque `tracking` was delivered at `offset` of
    /// `topic`/`partition`.
    fn delivered_at(&self, tracking: usize, topic: &str, partition: i32, offset: i64) {
        self.delivered.fetch_add(1, Ordering::AcqRel);
        if tracking >= TRACK_OFFSET {
            lock(&self.tracked).offsets.insert(tracking, offset);
        } else if tracking == TRACK_END {
            let mut tracked = lock(&self.tracked);
            let end = tracked.ends.entry((topic.to_string(), partition)).or_insert(0);
            *end = (*end).max(offset + 1);
        }
        if let Some(per_topic) = &self.per_topic {
            let mut resolved = lock(&per_topic.resolved);
            match resolved.iter().find(|(t, _)| t == topic) {
                Some((_, hook)) => hook(),
                None => {
                    let hook = (per_topic.resolve)(topic);
                    hook();
                    resolved.push((topic.to_string(), hook));
                }
            }
        }
    }

    /// A record to `topic` failed with `error`.
    fn failed_at(&self, topic: &str, error: &KafkaError) {
        if let Some(label) = &self.failure_label {
            tracing::warn!(topic, error = %error, "{label} was not delivered");
        }
        // The error first: `failed() > 0` implies `first_error()` is set.
        lock(&self.first_error).get_or_insert_with(|| format!("{error} (topic {topic})"));
        self.failed.fetch_add(1, Ordering::AcqRel);
    }
}

impl<O> ClientContext for DeliveryTracker<O> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match &self.health {
            Some(health) => health.client_log(level, fac, log_message),
            None => DefaultClientContext.log(level, fac, log_message),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match &self.health {
            Some(health) => health.client_error(error, reason),
            None => DefaultClientContext.error(error, reason),
        }
    }
}

impl<O: TrackingOpaque> ProducerContext for DeliveryTracker<O> {
    type DeliveryOpaque = O;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: O) {
        match result {
            Ok(m) => self.delivered_at(opaque.tracking(), m.topic(), m.partition(), m.offset()),
            Err((e, m)) => self.failed_at(m.topic(), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    fn timed_out() -> KafkaError {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
    }

    #[test]
    fn counts_and_keeps_the_first_failure() {
        let t = DeliveryTracker::<usize>::new();
        t.check("out").unwrap();
        t.delivered_at(UNTRACKED, "out", 0, 7);
        t.delivered_at(UNTRACKED, "out", 1, 3);
        assert_eq!((t.delivered(), t.failed(), t.first_error()), (2, 0, None));
        t.failed_at("out", &timed_out());
        t.failed_at(
            "other",
            &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert_eq!(t.failed(), 2);
        let first = t.first_error().unwrap();
        assert!(first.contains("timed out") && first.ends_with("(topic out)"), "{first}");
        match t.check("out") {
            Err(Error::Delivery {
                topic,
                failed,
                first_error,
            }) => assert_eq!((topic.as_str(), failed, first_error), ("out", 2, first)),
            other => panic!("{other:?}"),
        }
        // Failures stay.
        assert!(t.check("out").is_err());
        assert_eq!(t.take_tracked(), Tracked::default());
    }

    /// After a transaction abort the producer goes on: the purged
    /// records' failures and tracked offsets are forgotten.
    #[test]
    fn start_over_forgets_failures_and_tracked_offsets() {
        let t = DeliveryTracker::<usize>::new();
        t.delivered_at(TRACK_END, "log", 0, 4);
        t.failed_at("log", &timed_out());
        assert!(t.check("log").is_err());
        t.start_over();
        assert!(t.check("log").is_ok());
        assert_eq!((t.failed(), t.first_error()), (0, None));
        assert_eq!(t.take_tracked(), Tracked::default());
        t.delivered_at(TRACK_END, "log", 0, 7);
        assert_eq!(t.take_tracked().ends[&("log".to_string(), 0)], 8);
    }

    #[test]
    fn tracks_partition_ends_and_offsets_by_opaque_until_taken() {
        let t = DeliveryTracker::<usize>::new();
        t.delivered_at(TRACK_END, "log", 0, 4);
        t.delivered_at(TRACK_END, "log", 0, 9);
        // Reports need not come in offset order.
        t.delivered_at(TRACK_END, "log", 0, 6);
        t.delivered_at(TRACK_END, "log", 1, 0);
        t.delivered_at(TRACK_END, "other", 0, 41);
        t.delivered_at(TRACK_OFFSET, "cp", 0, 12);
        t.delivered_at(TRACK_OFFSET + 3, "cp", 0, 13);
        t.delivered_at(UNTRACKED, "log", 0, 100);
        t.failed_at("log", &timed_out());
        assert_eq!(t.delivered(), 8);
        let tracked = t.take_tracked();
        let ends = HashMap::from([
            (("log".to_string(), 0), 10),
            (("log".to_string(), 1), 1),
            (("other".to_string(), 0), 42),
        ]);
        assert_eq!(tracked.ends, ends);
        assert_eq!(
            tracked.offsets,
            HashMap::from([(TRACK_OFFSET, 12), (TRACK_OFFSET + 3, 13)])
        );
        assert_eq!(t.take_tracked(), Tracked::default());
        t.delivered_at(TRACK_END, "log", 0, 2);
        assert_eq!(t.take_tracked().ends, HashMap::from([(("log".to_string(), 0), 3)]));
    }

    #[test]
    fn unit_opaques_are_never_tracked() {
        let t = DeliveryTracker::<()>::new();
        t.delivered_at(().tracking(), "log", 0, 4);
        assert_eq!(t.delivered(), 1);
        assert_eq!(t.take_tracked(), Tracked::default());
    }

    #[test]
    fn per_topic_hooks_are_resolved_once_per_topic() {
        let resolved = Arc::new(AtomicUsize::new(0));
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let t = DeliveryTracker::<usize>::new().on_delivered_per_topic({
            let resolved = resolved.clone();
            let counts = counts.clone();
            move |topic| {
                resolved.fetch_add(1, Ordering::Relaxed);
                let counts = counts.clone();
                let topic = topic.to_string();
                Box::new(move || *lock(&counts).entry(topic.clone()).or_default() += 1)
            }
        });
        for i in 0..5 {
            t.delivered_at(UNTRACKED, "a", 0, i);
        }
        t.delivered_at(UNTRACKED, "b", 0, 0);
        t.failed_at("c", &timed_out());
        assert_eq!(resolved.load(Ordering::Relaxed), 2);
        assert_eq!(
            *lock(&counts),
            HashMap::from([("a".to_string(), 5), ("b".to_string(), 1)])
        );
        assert_eq!(t.delivered(), 6);
    }
}
