//! What a registered topology brings to the daemon: the topology itself,
//! and optionally HTTP routes, background services (a sink, a feed) and a
//! data generator.
//!
//! Parts are built from the topology's parameters (the
//! `[topologies.NAME]` table of `weir.toml`) when the daemon starts, but
//! routes and services only run once the daemon knows its Kafka cluster
//! (the embedded broker starts first), so they receive a [`Context`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use weir_connectors::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use weir_connectors::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_connectors::kafka::stream::RunStatus;
use weir_connectors::kafka::{flush_producer, Admin, ClientSettings, DeliveryTracker, TopicSpec, UNTRACKED};
use weir_runtime::metrics::Metrics;
use weir_topology::{Topology, TopologyError};

use super::feed::{Feed, FeedSpec};

/// The body of every HTTP response the daemon sends.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One topology as registered with [`crate::Daemon`].
pub struct App {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) build: BuildFn,
}

/// Builds an app's parts from its `[topologies.NAME]` parameters.
pub(crate) type BuildFn = Box<dyn Fn(&toml::Table) -> anyhow::Result<AppParts> + Send + Sync>;

impl App {
    /// A topology without parameters, routes or generator: a
    /// `[topologies.NAME]` table in the config is an error.
    pub fn new<F>(name: &str, description: &str, build: F) -> App
    where
        F: Fn() -> Result<Topology, TopologyError> + Send + Sync + 'static,
    {
        let owned = name.to_string();
        App {
            name: name.to_string(),
            description: description.to_string(),
            build: Box::new(move |params| {
                if let Some(key) = params.keys().next() {
                    anyhow::bail!("unknown key {key:?} in [topologies.{owned}]: this topology takes no parameters");
                }
                Ok(AppParts::new(build()?))
            }),
        }
    }

    /// A topology built from parameters `P`, read from the config's
    /// `[topologies.NAME]` table (missing keys keep `P::default()`; `P`
    /// should use `#[serde(default, deny_unknown_fields)]` so that a typo is
    /// an error naming the key).
    pub fn with_params<P, F>(name: &str, description: &str, build: F) -> App
    where
        P: DeserializeOwned + Default,
        F: Fn(&P) -> anyhow::Result<AppParts> + Send + Sync + 'static,
    {
        let owned = name.to_string();
        App {
            name: name.to_string(),
            description: description.to_string(),
            build: Box::new(move |params| {
                let p: P = if params.is_empty() {
                    P::default()
                } else {
                    toml::Value::Table(params.clone())
                        .try_into()
                        .map_err(|e: toml::de::Error| anyhow::anyhow!("[topologies.{owned}]: {}", e.message()))?
                };
                build(&p)
            }),
        }
    }

    /// The registered name (also the application id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The one-line description `weir list` prints.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// A topology and what runs beside it.
pub struct AppParts {
    pub topology: Topology,
    /// HTTP routes served while the topology runs.
    pub routes: Vec<Route>,
    /// Background work started once the cluster is known; each runs on its
    /// own thread until [`Context::stopping`].
    pub services: Vec<Service>,
    /// Live feeds of topics (see [`Context::feed`]) started before the
    /// topology: they see all of its output, and `/readyz` waits for them.
    pub feeds: Vec<FeedSpec>,
    /// Test data for the topology's input (see `--generate`).
    pub generator: Option<GeneratorSpec>,
}

impl AppParts {
    pub fn new(topology: Topology) -> AppParts {
        AppParts {
            topology,
            routes: Vec::new(),
            services: Vec::new(),
            feeds: Vec::new(),
            generator: None,
        }
    }
}

/// A source of realistic input records for a topology.
pub trait Generator: Send {
    /// Append the records of the next event (usually one; a burst may give
    /// several) to `out`. `now_ms` is the wall-clock time, ms since the epoch.
    fn next(&mut self, now_ms: i64, out: &mut Vec<GeneratedRecord>);
}

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedRecord {
    pub topic: String,
    pub key: Option<String>,
    pub value: String,
}

/// How a topology's generator is made, and at what rate it runs unless the
/// user says otherwise.
pub struct GeneratorSpec {
    /// Events per second by default.
    pub default_rate: f64,
    /// Topics it writes (created before it starts).
    pub topics: Vec<String>,
    pub make: Box<dyn FnOnce() -> Box<dyn Generator> + Send>,
}

/// Background work of an app (a sink, a feed): runs on its own thread
/// until the daemon stops; an error stops the daemon.
pub struct Service {
    pub name: String,
    pub run: Box<dyn FnOnce(Arc<Context>) -> anyhow::Result<()> + Send>,
}

/// An HTTP route of an app: an exact path and the methods it answers.
pub struct Route {
    pub path: String,
    pub methods: Vec<Method>,
    pub handler: Handler,
}

/// A route's handler. It runs on a blocking thread (it may produce to Kafka
/// and wait for delivery); the request body has been read and bounded.
pub type Handler = Arc<dyn Fn(&Context, &Request) -> Response<Body> + Send + Sync>;

impl Route {
    pub fn new<F>(path: &str, methods: &[Method], handler: F) -> Route
    where
        F: Fn(&Context, &Request) -> Response<Body> + Send + Sync + 'static,
    {
        Route {
            path: path.to_string(),
            methods: methods.to_vec(),
            handler: Arc::new(handler),
        }
    }
}

/// A request as a route handler sees it.
pub struct Request {
    pub method: Method,
    /// The query string's decoded parameters, in order.
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What the daemon offers routes and services at run time.
pub struct Context {
    /// Bootstrap servers of the cluster the topologies run on.
    pub brokers: String,
    pub settings: ClientSettings,
    pub status: Arc<RunStatus>,
    pub metrics: Arc<Metrics>,
    /// Root of the files apps write (`--data-dir`).
    pub data_dir: PathBuf,
    pub(crate) stop: Arc<AtomicBool>,
    producer: Mutex<Option<Arc<DeliveryProducer>>>,
    watermarks: Mutex<Option<Arc<BaseConsumer>>>,
    feeds: Mutex<BTreeMap<String, Arc<Feed>>>,
}

/// The HTTP ingress's producer: its [`DeliveryTracker`] counts failed
/// deliveries (and warns of each), so a handler that produced can tell its
/// client whether everything arrived.
type DeliveryProducer = BaseProducer<DeliveryTracker>;

impl Context {
    pub(crate) fn new(
        brokers: String,
        settings: ClientSettings,
        status: Arc<RunStatus>,
        metrics: Arc<Metrics>,
        data_dir: PathBuf,
        stop: Arc<AtomicBool>,
    ) -> Context {
        Context {
            brokers,
            settings,
            status,
            metrics,
            data_dir,
            stop,
            producer: Mutex::new(None),
            watermarks: Mutex::new(None),
            feeds: Mutex::new(BTreeMap::new()),
        }
    }

    /// True once the daemon is shutting down: services return.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The stop flag, for connectors that take one.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Ask the daemon to stop (a service that cannot go on).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Make sure `topics` exist (default partition count).
    pub fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        let specs: Vec<TopicSpec> = topics.iter().map(|t| TopicSpec::with_default_partitions(*t)).collect();
        Admin::new(&self.settings)?.ensure_topics(&specs)?;
        Ok(())
    }

    fn producer(&self) -> anyhow::Result<Arc<DeliveryProducer>> {
        let mut guard = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = guard.as_ref() {
            return Ok(p.clone());
        }
        let p: DeliveryProducer = self
            .settings
            .producer_config()
            .create_with_context(DeliveryTracker::new().warn_on_failure("an HTTP-ingress record"))?;
        let p = Arc::new(p);
        *guard = Some(p.clone());
        Ok(p)
    }

    /// Produce `records` (topic, key, value) and wait until all are
    /// delivered; an error says how many were not. Keys are partitioned
    /// like Kafka's Java client does (murmur2), so weir's own records land
    /// where a Java producer would put them.
    pub fn produce(&self, records: &[(String, Option<String>, String)]) -> anyhow::Result<()> {
        let producer = self.producer()?;
        // One handler's records are delivered (or not) before the next
        // handler's count is read: requests are serialised here.
        static GATE: Mutex<()> = Mutex::new(());
        let _one_at_a_time = GATE.lock().unwrap_or_else(|e| e.into_inner());
        let failed_before = producer.context().failed();
        for (topic, key, value) in records {
            let mut record: BaseRecord<'_, str, str, usize> =
                BaseRecord::with_opaque_to(topic, UNTRACKED).payload(value.as_str());
            if let Some(k) = key {
                record = record.key(k.as_str());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) if is_queue_full(&e) => {
                        weir_connectors::kafka::serve_deliveries_after(&producer, Duration::from_millis(5));
                        record = r;
                    }
                    Err((e, _)) => anyhow::bail!("producing to {topic:?}: {e}"),
                }
            }
        }
        flush_producer(&producer, Duration::from_secs(30))?;
        let failed = producer.context().failed() - failed_before;
        if failed > 0 {
            anyhow::bail!("{failed} of {} record(s) were not delivered", records.len());
        }
        Ok(())
    }

    /// Records in `topic` now (high minus low watermark, summed over its
    /// partitions); 0 for a topic that does not exist yet.
    pub fn record_count(&self, topic: &str) -> anyhow::Result<i64> {
        let consumer = {
            let mut guard = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c: Arc<BaseConsumer> = Arc::new(self.settings.standalone_consumer_config().create()?);
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        let timeout = Duration::from_secs(5);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let mut total = 0;
        for t in metadata.topics() {
            if t.error().is_some() {
                continue;
            }
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                total += (high - low).max(0);
            }
        }
        Ok(total)
    }

    /// The live feed of `topic`: records appended from its start on,
    /// broadcast to every subscriber, and the latest few kept. Started on
    /// first use unless an app declared it (see [`AppParts::feeds`]).
    pub fn feed(&self, topic: &str) -> Arc<Feed> {
        self.start_feed(FeedSpec::new(topic))
    }

    /// Start the feed `spec` describes, or give its listeners to the feed
    /// of that topic already running.
    pub(crate) fn start_feed(&self, spec: FeedSpec) -> Arc<Feed> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(&spec.topic) {
            if !spec.listeners.is_empty() {
                feed.add_listeners(spec.listeners);
            }
            return feed.clone();
        }
        let topic = spec.topic.clone();
        let feed = Feed::start(&self.settings, spec, self.stop.clone());
        feeds.insert(topic, feed.clone());
        feed
    }

    /// The topics of the feeds still finding where they start.
    pub(crate) fn feeds_positioning(&self) -> Vec<String> {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds
            .values()
            .filter(|f| !f.is_positioned())
            .map(|f| f.topic().to_string())
            .collect()
    }
}

fn is_queue_full(e: &weir_connectors::kafka::rdkafka::error::KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(weir_connectors::kafka::rdkafka::types::RDKafkaErrorCode::QueueFull)
    )
}

fn with_headers(mut r: Response<Body>, code: StatusCode, ctype: &'static str) -> Response<Body> {
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A plain-text response.
pub fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    let r = Response::new(Full::new(Bytes::from(body.into())).boxed_unsync());
    with_headers(r, code, "text/plain; charset=utf-8")
}

/// A JSON response (pretty-printed, newline-terminated).
pub fn json(code: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    let r = Response::new(Full::new(Bytes::from(s)).boxed_unsync());
    with_headers(r, code, "application/json")
}

/// `{"error": message}` with `code`: how every route says no.
pub fn error(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(code, &serde_json::json!({ "error": message.into() }))
}

/// A static asset.
pub fn asset(ctype: &'static str, bytes: &'static [u8]) -> Response<Body> {
    let r = Response::new(Full::new(Bytes::from_static(bytes)).boxed_unsync());
    with_headers(r, StatusCode::OK, ctype)
}
