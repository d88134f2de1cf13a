//! The daemon's HTTP API: the dashboard (`/`), `GET /metrics` (Prometheus
//! text format), `/healthz`, `/readyz`, `/topologies`, `/stats`,
//! `/stores/{store}`, and the routes the running apps register.
//!
//! The built-in routes are a plain function from request to response
//! ([`handle`]), so every one is tested without a socket. App routes get
//! the request body, read up to [`MAX_BODY_BYTES`] (more is a 413), and run
//! on tokio's blocking pool, since they may wait for Kafka. [`serve`] binds
//! the address in the caller (a bind error stops the daemon before
//! anything starts) and runs the server on its own thread with a
//! current-thread tokio runtime. hyper bounds header sizes, and a client
//! that does not finish its headers in time is dropped.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use weir_connectors::kafka::stream::RunStatus;
use weir_runtime::metrics::{Metrics, TEXT_CONTENT_TYPE};

use super::app::{Body, Context, Route};
use crate::scenarios::iso_millis;

/// A running topology as `/topologies` shows it.
pub struct TopologyInfo {
    pub name: String,
    pub description: String,
    /// `Topology::describe(name)`: the real topic names.
    pub describe: String,
    /// The topics it creates for itself (`Topology::internal_topics`):
    /// `/stats` counts the others as input and output.
    pub internal_topics: Vec<String>,
    /// Its queryable stores, each with the serdes it was built with
    /// (`Topology::query_codec`).
    pub store_formats: Vec<(String, weir_topology::QueryCodec)>,
    /// Which of those are window stores (keys prefixed by the window start).
    pub window_stores: Vec<String>,
    /// Which of those are versioned stores (queryable as of a time).
    pub versioned_stores: Vec<String>,
    /// Paths of the app's own routes.
    pub routes: Vec<String>,
    /// Whether its data generator runs.
    pub generating: bool,
}

/// What the handlers answer from.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub status: Arc<RunStatus>,
    pub topologies: Vec<TopologyInfo>,
    /// The running apps' routes.
    pub routes: Vec<Route>,
    /// What app routes run with (`None` in tests of the built-in routes).
    pub ctx: Option<Arc<Context>>,
    /// The Kafka cluster the topologies run on, shown by `/topologies`
    /// and the dashboard.
    pub kafka: KafkaInfo,
}

/// Where the daemon's Kafka is.
#[derive(Clone, Debug, Default)]
pub struct KafkaInfo {
    /// The bootstrap servers, as clients should be given them.
    pub brokers: String,
    /// Whether it is the broker this daemon started (no `--brokers`).
    pub embedded: bool,
}

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

const ROUTES: &[&str] = &["/", "/metrics", "/healthz", "/readyz", "/topologies", "/stats"];

/// The largest request body an app route reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Whether `path` is one of the daemon's own routes (apps may not take it).
pub fn is_builtin(path: &str) -> bool {
    ROUTES.contains(&path) || path.starts_with("/stores/") || path.starts_with("/assets/")
}

/// The dashboard: one page, no build step, no CDN.
const DASHBOARD_HTML: &[u8] = include_bytes!("dashboard/index.html");

/// Answer one request to a built-in route. The body is never read; only
/// `/stores/` looks at the query string.
pub fn handle<B>(state: &HttpState, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let store = path.strip_prefix("/stores/");
    if store.is_none() && !ROUTES.contains(&path) {
        return not_found(path);
    }
    // Every built-in route is read-only.
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed on {path}: use GET\n", req.method()),
        );
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Some(store) = store {
        return query_store(state, store, req.uri().query().unwrap_or(""));
    }
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, state.metrics.encode());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_string()),
        "/" => {
            let mut r = Response::new(Full::new(Bytes::from_static(DASHBOARD_HTML)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        "/stats" => json_response(StatusCode::OK, &stats(state)),
        "/readyz" => readyz(state),
        "/topologies" => json_response(StatusCode::OK, &topologies(state)),
        _ => not_found(path),
    }
}

fn error_json(code: StatusCode, message: String) -> Response<Full<Bytes>> {
    json_response(code, &serde_json::json!({ "error": message }))
}

/// `GET /stores/{store}?key=K` or `?from=A&to=B` (both inclusive, either
/// may be left out): committed data of the store partitions this instance
/// hosts.
fn query_store(state: &HttpState, store: &str, query: &str) -> Response<Full<Bytes>> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
    };
    let store = match decode(store) {
        Ok(s) => s,
        Err(_) => return error_json(StatusCode::BAD_REQUEST, "the store name is not UTF-8".into()),
    };
    let Some((_, codec)) = state
        .topologies
        .iter()
        .flat_map(|t| t.store_formats.iter())
        .find(|(s, _)| *s == store)
        .cloned()
    else {
        let shown: String = store.chars().take(200).collect();
        return error_json(StatusCode::NOT_FOUND, format!("no queryable store {shown:?}"));
    };
    let params = match parse_query(query) {
        Ok(p) => p,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e),
    };
    let versioned = state.topologies.iter().any(|t| t.versioned_stores.contains(&store));
    if let Some((name, _)) = params
        .iter()
        .find(|(k, _)| !(matches!(k.as_str(), "key" | "from" | "to") || versioned && k == "as_of"))
    {
        let shown: String = name.chars().take(50).collect();
        let usage = if versioned {
            "use key= (and optionally as_of=), or from= and to="
        } else {
            "use key=, or from= and to="
        };
        return error_json(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {shown:?} ({usage})"),
        );
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if state.topologies.iter().any(|t| t.window_stores.contains(&store)) {
        return query_window_store(state, &store, &codec, get("key"), get("from"), get("to"));
    }
    if versioned && get("from").is_none() && get("to").is_none() {
        return query_versioned_key(state, &store, &codec, get("key"), get("as_of"));
    }
    if versioned && get("as_of").is_some() {
        return error_json(
            StatusCode::BAD_REQUEST,
            "as_of= goes with key= (a range shows the newest versions)".into(),
        );
    }
    let readers = state.status.store_readers(&store);
    let encode = |text: &str| super::query::encode_key(&codec, text);
    if let Some(key) = get("key") {
        if get("from").is_some() || get("to").is_some() {
            return error_json(StatusCode::BAD_REQUEST, "use key= alone, or from=/to=".into());
        }
        let bytes = match encode(key) {
            Ok(b) => b,
            Err(e) => return error_json(StatusCode::BAD_REQUEST, e),
        };
        for (_, _, reader) in &readers {
            match reader.read_kv(&store, &bytes) {
                Ok(Some(v)) => {
                    return json_response(
                        StatusCode::OK,
                        &serde_json::json!({
                            "store": store,
                            "key": key,
                            "value": super::query::value_json(&codec, &v),
                        }),
                    )
                }
                Ok(None) => {}
                Err(e) => return error_json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        return error_json(
            StatusCode::NOT_FOUND,
            format!("no key {key:?} in store {store:?} on this instance"),
        );
    }
    let from = match get("from").map(encode).transpose() {
        Ok(b) => b,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e),
    };
    let to = match get("to").map(encode).transpose() {
        Ok(b) => b,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e),
    };
    if from.is_none() && to.is_none() {
        return error_json(StatusCode::BAD_REQUEST, "give key=, or from= and/or to=".into());
    }
    let lower = from.as_deref().map_or(Bound::Unbounded, Bound::Included);
    let upper = to.as_deref().map_or(Bound::Unbounded, Bound::Included);
    let mut entries = Vec::new();
    for (_, _, reader) in &readers {
        let found = if versioned {
            reader.scan_versioned(&store, lower, upper)
        } else {
            reader.scan_kv(&store, lower, upper)
        };
        match found {
            Ok(found) => entries.extend(found),
            Err(e) => return error_json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    entries.sort();
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|(k, v)| {
            serde_json::json!({
                "key": super::query::key_json(&codec, k),
                "value": super::query::value_json(&codec, v),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "store": store, "entries": entries }),
    )
}

/// A time parameter of a query: epoch milliseconds or RFC 3339.
fn parse_time(name: &str, text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|d| d.timestamp_millis())
        })
        .ok_or_else(|| format!("{name}={text:?} is neither epoch milliseconds nor an RFC 3339 time"))
}

/// `GET /stores/{versioned store}?key=K[&as_of=T]`: the version of K valid
/// at T (epoch ms or RFC 3339), or its newest, with the time it is valid
/// from (committed data on this instance).
fn query_versioned_key(
    state: &HttpState,
    store: &str,
    codec: &weir_topology::QueryCodec,
    key: Option<&str>,
    as_of: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(key) = key else {
        return error_json(
            StatusCode::BAD_REQUEST,
            "give key= (and optionally as_of=), or from= and/or to=".into(),
        );
    };
    let key_bytes = match super::query::encode_key(codec, key) {
        Ok(b) => b,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e),
    };
    let as_of = match as_of.map(|t| parse_time("as_of", t)).transpose() {
        Ok(t) => t,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e),
    };
    for (_, _, reader) in state.status.store_readers(store) {
        match reader.read_versioned(store, &key_bytes, as_of) {
            Ok(Some((valid_from, v))) => {
                return json_response(
                    StatusCode::OK,
                    &serde_json::json!({
                        "store": store,
                        "key": key,
                        "value": super::query::value_json(codec, &v),
                        "valid_from_ms": valid_from,
                        "valid_from": iso_millis(valid_from),
                    }),
                )
            }
            Ok(None) => {}
            Err(e) => return error_json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    let when = as_of.map_or(String::new(), |t| {
        format!(" as of {}", iso_millis(t).unwrap_or_else(|| t.to_string()))
    });
    error_json(
        StatusCode::NOT_FOUND,
        format!("no key {key:?}{when} in store {store:?} on this instance"),
    )
}

/// `GET /stores/{window store}?key=K[&from=T1][&to=T2]`: every window of
/// record key K (committed data on this instance), optionally only those
/// starting in [T1, T2] (epoch ms or RFC 3339), oldest first.
fn query_window_store(
    state: &HttpState,
    store: &str,
    codec: &weir_topology::QueryCodec,
    key: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(key) = key else {
        return error_json(
            StatusCode::BAD_REQUEST,
            format!("{store:?} is a window store: give key= (and optionally from= and to=, window starts)"),
        );
    };
    let key_bytes = match super::query::encode_key(codec, key) {
        Ok(b) => b,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e),
    };
    let time = |name: &str, v: Option<&str>, default: i64| v.map_or(Ok(default), |t| parse_time(name, t));
    let (lo, hi) = match (time("from", from, i64::MIN), time("to", to, i64::MAX)) {
        (Ok(lo), Ok(hi)) => (lo, hi),
        (Err(e), _) | (_, Err(e)) => return error_json(StatusCode::BAD_REQUEST, e),
    };
    let lower = weir_topology::store::encode_window_start(lo);
    let upper = weir_topology::store::encode_window_start(hi);
    let mut windows = Vec::new();
    for (_, _, reader) in state.status.store_readers(store) {
        let entries = match reader.scan_kv(store, Bound::Included(&lower[..]), Bound::Unbounded) {
            Ok(e) => e,
            Err(e) => return error_json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        for (k, v) in entries {
            let Some((start, record_key)) = weir_topology::store::split_window_key(&k) else {
                continue;
            };
            if k[..8] > upper[..] {
                break;
            }
            if record_key == key_bytes.as_slice() {
                windows.push((start, super::query::value_json(codec, &v)));
            }
        }
    }
    if windows.is_empty() {
        return error_json(
            StatusCode::NOT_FOUND,
            format!("no window of key {key:?} in store {store:?} on this instance"),
        );
    }
    windows.sort_by_key(|(start, _)| *start);
    let windows: Vec<serde_json::Value> = windows
        .into_iter()
        .map(|(start, value)| {
            json!({
                "window_start": iso_millis(start),
                "window_start_ms": start,
                "value": value,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "store": store, "key": key, "windows": windows }),
    )
}

fn readyz(state: &HttpState) -> Response<Full<Bytes>> {
    let feeds = state.ctx.as_ref().map(|c| c.feeds_positioning()).unwrap_or_default();
    let ready = state.status.is_ready() && feeds.is_empty();
    let snapshot = state.status.snapshot();
    let mut pending: Vec<serde_json::Value> = feeds
        .iter()
        .map(|topic| json!({ "feed": topic, "reason": "finding where its topic ends" }))
        .collect();
    let mut threads = serde_json::Map::new();
    for (name, t) in &snapshot {
        let reason = match (&t.problem, t.ready) {
            (Some(problem), _) => Some(problem.as_str()),
            (None, false) if t.restoring.is_empty() => Some("waiting for an assignment"),
            (None, false) => Some("restoring"),
            (None, true) => None,
        };
        if let Some(reason) = reason {
            pending.push(json!({
                "thread": name,
                "reason": reason,
                "restoring": t.restoring,
            }));
        }
        threads.insert(name.clone(), thread_json(t));
    }
    let body = json!({
        "ready": ready,
        "pending": pending,
        "threads": threads,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, &body)
}

fn thread_json(t: &weir_connectors::kafka::stream::ThreadStatus) -> serde_json::Value {
    json!({
        "ready": t.ready,
        "tasks": t.tasks,
        "restoring": t.restoring,
        "restored_records": t.restored_records,
        "restore_remaining": t.restore_remaining,
        "problem": t.problem,
    })
}

/// The threads of application `name` are `{name}-thread-{i}`.
fn thread_of<'a>(thread: &'a str, name: &str) -> Option<&'a str> {
    let rest = thread.strip_prefix(name)?.strip_prefix("-thread-")?;
    (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

fn topologies(state: &HttpState) -> serde_json::Value {
    let snapshot = state.status.snapshot();
    let list: Vec<serde_json::Value> = state
        .topologies
        .iter()
        .map(|t| {
            let mut tasks = Vec::new();
            let mut threads = serde_json::Map::new();
            for (thread, s) in &snapshot {
                if thread_of(thread, &t.name).is_none() {
                    continue;
                }
                threads.insert(thread.clone(), thread_json(s));
                for id in &s.tasks {
                    let (sub, part) = id.split_once('_').unwrap_or((id.as_str(), ""));
                    tasks.push(json!({
                        "id": id,
                        "subtopology": sub.parse::<u64>().ok(),
                        "partition": part.parse::<i64>().ok(),
                        "thread": thread,
                        "restoring": s.restoring.contains(id),
                    }));
                }
            }
            json!({
                "name": t.name,
                "description": t.description,
                "describe": t.describe,
                "routes": t.routes,
                "generating": t.generating,
                "stores": t.store_formats.iter().map(|(s, _)| s).collect::<Vec<_>>(),
                "tasks": tasks,
                "threads": threads,
            })
        })
        .collect();
    json!({
        "kafka": { "brokers": state.kafka.brokers, "embedded": state.kafka.embedded },
        "topologies": list,
    })
}

fn not_found(path: &str) -> Response<Full<Bytes>> {
    // The path is echoed (shortened) as plain text only.
    let shown: String = path.chars().take(200).collect();
    text(
        StatusCode::NOT_FOUND,
        format!("no route {shown:?}; the routes are {}\n", ROUTES.join(", ")),
    )
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(code: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut s = serde_json::to_string_pretty(body).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    let mut r = text(code, s);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Bind `addr` now and serve on a thread of its own until the process
/// exits. Returns the bound address (useful with port 0).
pub fn serve(addr: &str, state: HttpState) -> anyhow::Result<SocketAddr> {
    serve_on(bind(addr)?, state)
}

/// Bind the HTTP address (first thing `weir run` does: a port in use stops
/// the daemon before any broker is contacted).
pub fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("cannot listen for HTTP on {addr}"))
}

/// Serve on a listener from [`bind`]; see [`serve`].
pub fn serve_on(listener: TcpListener, state: HttpState) -> anyhow::Result<SocketAddr> {
    let bound = listener.local_addr().context("reading the HTTP listener's address")?;
    listener
        .set_nonblocking(true)
        .context("setting the HTTP listener non-blocking")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the HTTP runtime")?;
    let state = Arc::new(state);
    std::thread::Builder::new()
        .name("weir-http".into())
        .spawn(move || runtime.block_on(accept_loop(listener, state)))
        .context("starting the HTTP thread")?;
    Ok(bound)
}

async fn accept_loop(listener: TcpListener, state: Arc<HttpState>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "HTTP server stopped");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait and go on.
                tracing::warn!(error = %e, "accepting an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Route one request: an app route if one has the path, else [`handle`].
async fn respond(state: Arc<HttpState>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let Some(route) = state.routes.iter().find(|r| r.path == req.uri().path()) else {
        return handle(&state, &req).map(|b| b.boxed_unsync());
    };
    let method = req.method().clone();
    let allowed = route.methods.contains(&method) || (method == Method::HEAD && route.methods.contains(&Method::GET));
    if !allowed {
        let names: Vec<&str> = route.methods.iter().map(Method::as_str).collect();
        let mut r = super::app::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} not allowed on {}: use {}",
                route.path,
                names.join(" or ")
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
            r.headers_mut().insert(ALLOW, v);
        }
        return r;
    }
    let Some(ctx) = state.ctx.clone() else {
        return super::app::error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is not running topologies");
    };
    let query = match parse_query(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return super::app::error(StatusCode::BAD_REQUEST, e),
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                return super::app::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                );
            }
            return super::app::error(StatusCode::BAD_REQUEST, format!("reading the request body: {e}"));
        }
    };
    let handler = route.handler.clone();
    let request = super::app::Request { method, query, body };
    match tokio::task::spawn_blocking(move || handler(&ctx, &request)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "an HTTP handler panicked");
            super::app::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the handler failed; see the daemon's log",
            )
        }
    }
}

/// Decode `a=1&b=x%20y` (`+` is a space).
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "query parameters must be UTF-8".to_string())
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// `/stats`: the totals the dashboard turns into rates, per topology.
fn stats(state: &HttpState) -> serde_json::Value {
    use prometheus::proto::MetricType;
    use weir_runtime::metrics::names;
    let families = state.metrics.registry().gather();
    let mut out = serde_json::Map::new();
    for t in &state.topologies {
        // `input` and `output` count only what came from or went outside:
        // not the topology's own internal topics.
        let sum = |name: &str, external_only: bool| -> f64 {
            families
                .iter()
                .filter(|f| f.name() == name)
                .flat_map(|f| {
                    let kind = f.get_field_type();
                    f.get_metric().iter().map(move |m| (kind, m))
                })
                .filter(|(_, m)| {
                    let labels = m.get_label();
                    labels.iter().any(|l| l.name() == "topology" && l.value() == t.name)
                        && (!external_only
                            || labels
                                .iter()
                                .any(|l| l.name() == "topic" && !t.internal_topics.iter().any(|i| i == l.value())))
                })
                .map(|(kind, m)| match kind {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    _ => 0.0,
                })
                .fold(0.0, |a, b| a + b)
        };
        out.insert(
            t.name.clone(),
            json!({
                "consumed": sum(names::RECORDS_CONSUMED, false),
                "input": sum(names::RECORDS_CONSUMED, true),
                "output": sum(names::RECORDS_PRODUCED, true),
                "produced": sum(names::RECORDS_PRODUCED, false),
                "lag": sum(names::CONSUMER_LAG, false),
                "dlq": sum(names::DLQ_RECORDS, false),
                "late": sum(names::LATE_RECORDS_DROPPED, false),
                "generated": sum(names::GENERATED_RECORDS, false),
                "ingress": sum(names::INGRESS_RECORDS, false),
                "sink_rows": sum(names::SINK_ROWS, false),
                "active_tasks": sum(names::ACTIVE_TASKS, false),
            }),
        );
    }
    json!({ "topologies": out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn state() -> HttpState {
        HttpState {
            metrics: Arc::new(Metrics::new()),
            status: Arc::new(RunStatus::default()),
            topologies: vec![TopologyInfo {
                name: "user-clicks".into(),
                description: "counts clicks".into(),
                describe: "Topologies:\n   Sub-topology: 0\n".into(),
                internal_topics: vec!["user-clicks-clicks-per-user-repartition".into()],
                store_formats: vec![(
                    "clicks-per-user".into(),
                    weir::QueryCodec::new(weir::Serdes::u32(), weir::Serdes::u64()),
                )],
                window_stores: vec![],
                versioned_stores: vec![],
                routes: vec![],
                generating: false,
            }],
            routes: vec![],
            ctx: None,
            kafka: KafkaInfo {
                brokers: "127.0.0.1:9092".into(),
                embedded: true,
            },
        }
    }

    #[test]
    fn stores_answer_interactive_queries_on_committed_data() {
        use weir::state::{KeyValueStore, StateDb, StateStore};
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let task = db.task("user-clicks/1_0", 1 << 20).unwrap();
        {
            let store = task.open_key_value("clicks-per-user").unwrap();
            let mut s = store.borrow_mut();
            s.put(&17u32.to_be_bytes(), &42u64.to_be_bytes()).unwrap();
            s.put(&3u32.to_be_bytes(), &5u64.to_be_bytes()).unwrap();
            s.flush().unwrap();
        }
        task.commit(&weir::runtime::TaskCheckpoint::default().encode()).unwrap();
        let st = state();
        st.status
            .host("user-clicks", 0, &["clicks-per-user".to_string()], &task.reader());

        let (code, _, body) = get(&st, Method::GET, "/stores/clicks-per-user?key=17");
        assert_eq!(code, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"store": "clicks-per-user", "key": "17", "value": 42})
        );
        let (code, _, body) = get(&st, Method::GET, "/stores/clicks-per-user?from=1&to=20");
        assert_eq!(code, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["entries"],
            serde_json::json!([{"key": 3, "value": 5}, {"key": 17, "value": 42}])
        );
        let cases = [
            (
                "/stores/clicks-per-user?key=18",
                StatusCode::NOT_FOUND,
                "no key \"18\" in store \"clicks-per-user\" on this instance",
            ),
            (
                "/stores/clicks-per-user?key=abc",
                StatusCode::BAD_REQUEST,
                "key \"abc\" is not a u32",
            ),
            (
                "/stores/nope?key=1",
                StatusCode::NOT_FOUND,
                "no queryable store \"nope\"",
            ),
            (
                "/stores/clicks-per-user?user=1",
                StatusCode::BAD_REQUEST,
                "unknown parameter \"user\" (use key=, or from= and to=)",
            ),
            (
                "/stores/clicks-per-user",
                StatusCode::BAD_REQUEST,
                "give key=, or from= and/or to=",
            ),
        ];
        for (uri, want, message) in cases {
            let (code, _, body) = get(&st, Method::GET, uri);
            assert_eq!(code, want, "{uri}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], message, "{uri}");
        }
        let (code, _, _) = get(&st, Method::POST, "/stores/clicks-per-user?key=17");
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn window_stores_answer_by_record_key_and_time_range() {
        use weir::state::{StateDb, StateStore, WindowStore};
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let task = db.task("emoji-stream/1_0", 1 << 20).unwrap();
        {
            let store = task.open_window("emoji-counts", 60_000).unwrap();
            let mut s = store.borrow_mut();
            for (key, start, n) in [("🔥", 2_000i64, 7u64), ("🔥", 0, 3), ("👍", 0, 1), ("🔥", 4_000, 9)] {
                s.put(key.as_bytes(), start, &n.to_be_bytes()).unwrap();
            }
            s.flush().unwrap();
        }
        task.commit(&weir::runtime::TaskCheckpoint::default().encode()).unwrap();
        let mut st = state();
        st.topologies[0].store_formats.push((
            "emoji-counts".into(),
            weir::QueryCodec::new(weir::Serdes::string(), weir::Serdes::u64()),
        ));
        st.topologies[0].window_stores.push("emoji-counts".into());
        st.status
            .host("emoji-stream", 0, &["emoji-counts".to_string()], &task.reader());

        let (code, _, body) = get(&st, Method::GET, "/stores/emoji-counts?key=%F0%9F%94%A5");
        assert_eq!(code, StatusCode::OK, "{body}");
        let v = json(&body);
        let starts: Vec<i64> = v["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["window_start_ms"].as_i64().unwrap())
            .collect();
        let values: Vec<u64> = v["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["value"].as_u64().unwrap())
            .collect();
        assert_eq!((starts, values), (vec![0, 2_000, 4_000], vec![3, 7, 9]));
        assert_eq!(v["windows"][1]["window_start"], "1970-01-01T00:00:02.000Z");

        let (code, _, body) = get(
            &st,
            Method::GET,
            "/stores/emoji-counts?key=%F0%9F%94%A5&from=1000&to=1970-01-01T00:00:02Z",
        );
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(json(&body)["windows"].as_array().unwrap().len(), 1);
        let (code, _, body) = get(&st, Method::GET, "/stores/emoji-counts?key=x");
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            json(&body)["error"],
            "no window of key \"x\" in store \"emoji-counts\" on this instance"
        );
        let (code, _, body) = get(&st, Method::GET, "/stores/emoji-counts?from=1");
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("window store: give key="));
        let (code, _, body) = get(&st, Method::GET, "/stores/emoji-counts?key=x&from=soon");
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            json(&body)["error"],
            "from=\"soon\" is neither epoch milliseconds nor an RFC 3339 time"
        );
    }

    #[test]
    fn versioned_stores_answer_as_of_a_time() {
        use weir::state::{StateDb, StateStore, VersionedKeyValueStore};
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let task = db.task("fx/0_0", 1 << 20).unwrap();
        {
            let store = task.open_versioned("rates", 60_000).unwrap();
            let mut s = store.borrow_mut();
            for (key, rate, ts) in [
                ("EUR", 2u64, 1_000i64),
                ("EUR", 3, 5_000),
                ("USD", 1, 2_000),
                ("EUR", 7, 3_000),
            ] {
                s.put_versioned(key.as_bytes(), Some(&rate.to_be_bytes()), ts).unwrap();
            }
            s.put_versioned(b"USD", None, 6_000).unwrap();
            s.flush().unwrap();
        }
        task.commit(&weir::runtime::TaskCheckpoint::default().encode()).unwrap();
        let mut st = state();
        st.topologies[0].store_formats.push((
            "rates".into(),
            weir::QueryCodec::new(weir::Serdes::string(), weir::Serdes::u64()),
        ));
        st.topologies[0].versioned_stores.push("rates".into());
        st.status.host("fx", 0, &["rates".to_string()], &task.reader());

        // The newest version, and the version valid at a given time.
        let (code, _, body) = get(&st, Method::GET, "/stores/rates?key=EUR");
        assert_eq!(code, StatusCode::OK, "{body}");
        let v = json(&body);
        assert_eq!(
            (v["value"].as_u64(), v["valid_from_ms"].as_i64()),
            (Some(3), Some(5_000))
        );
        let (code, _, body) = get(&st, Method::GET, "/stores/rates?key=EUR&as_of=1970-01-01T00:00:04Z");
        assert_eq!(code, StatusCode::OK, "{body}");
        let v = json(&body);
        assert_eq!(
            (v["value"].as_u64(), v["valid_from_ms"].as_i64()),
            (Some(7), Some(3_000))
        );
        assert_eq!(v["valid_from"], "1970-01-01T00:00:03.000Z");

        // Nothing before the first version; a deleted key is absent.
        let (code, _, body) = get(&st, Method::GET, "/stores/rates?key=EUR&as_of=999");
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            json(&body)["error"],
            "no key \"EUR\" as of 1970-01-01T00:00:00.999Z in store \"rates\" on this instance"
        );
        let (code, _, _) = get(&st, Method::GET, "/stores/rates?key=USD");
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _, body) = get(&st, Method::GET, "/stores/rates?key=USD&as_of=5999");
        assert_eq!(code, StatusCode::OK, "{body}");

        // A range shows the newest values, deleted keys left out.
        let (code, _, body) = get(&st, Method::GET, "/stores/rates?from=A");
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(json(&body)["entries"], serde_json::json!([{"key": "EUR", "value": 3}]));

        // Bad parameters name themselves.
        let (code, _, body) = get(&st, Method::GET, "/stores/rates?key=EUR&as_of=soon");
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            json(&body)["error"],
            "as_of=\"soon\" is neither epoch milliseconds nor an RFC 3339 time"
        );
        let (code, _, body) = get(&st, Method::GET, "/stores/rates?from=A&as_of=1");
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            json(&body)["error"],
            "as_of= goes with key= (a range shows the newest versions)"
        );
        let (code, _, body) = get(&st, Method::GET, "/stores/clicks-per-user?key=1&as_of=1");
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            json(&body)["error"],
            "unknown parameter \"as_of\" (use key=, or from= and to=)"
        );
    }

    /// A store whose key and value serdes are the user's own: the query
    /// goes through them (the daemon used to know only built-in serde
    /// names, and answered 400 for any other).
    #[test]
    fn stores_with_custom_serdes_are_queried_through_their_serdes() {
        use weir::state::{KeyValueStore, StateDb, StateStore};
        use weir::{Consumed, Materialized, Serde, SerdeError, SerdeImpl, StreamsBuilder};

        /// Station ids "ST-7" stored as one byte.
        struct Station;
        impl SerdeImpl<u8> for Station {
            fn serialize(&self, v: &u8, out: &mut Vec<u8>) -> Result<(), SerdeError> {
                out.push(*v);
                Ok(())
            }
            fn deserialize(&self, b: &[u8]) -> Result<u8, SerdeError> {
                match b {
                    [v] => Ok(*v),
                    _ => Err(SerdeError(format!("a station is 1 byte, got {}", b.len()))),
                }
            }
            fn name(&self) -> &'static str {
                "station"
            }
            fn parse_text(&self, text: &str) -> Result<u8, SerdeError> {
                text.strip_prefix("ST-")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| SerdeError(format!("{text:?} is not a station id (ST-n)")))
            }
            fn to_json(&self, v: &u8) -> serde_json::Value {
                serde_json::Value::from(format!("ST-{v}"))
            }
        }
        /// Tenths of a degree as i16, rendered as degrees.
        struct Tenths;
        impl SerdeImpl<i16> for Tenths {
            fn serialize(&self, v: &i16, out: &mut Vec<u8>) -> Result<(), SerdeError> {
                out.extend_from_slice(&v.to_be_bytes());
                Ok(())
            }
            fn deserialize(&self, b: &[u8]) -> Result<i16, SerdeError> {
                Ok(i16::from_be_bytes(
                    b.try_into().map_err(|_| SerdeError("not 2 bytes".into()))?,
                ))
            }
            fn name(&self) -> &'static str {
                "tenths"
            }
            fn to_json(&self, v: &i16) -> serde_json::Value {
                json!({ "degrees": f64::from(*v) / 10.0 })
            }
        }

        let mut b = StreamsBuilder::new();
        b.table_with(
            "readings",
            Consumed::with(Serde::new(Station), Serde::new(Tenths)),
            Materialized::named("latest-temperature"),
        );
        let topology = b.build().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let task = db.task("weather/0_0", 1 << 20).unwrap();
        {
            let store = task.open_key_value("latest-temperature").unwrap();
            let mut s = store.borrow_mut();
            s.put(&[7], &215i16.to_be_bytes()).unwrap();
            s.put(&[3], &(-40i16).to_be_bytes()).unwrap();
            s.put(&[9], b"bad").unwrap();
            s.flush().unwrap();
        }
        task.commit(&weir::runtime::TaskCheckpoint::default().encode()).unwrap();
        let mut st = state();
        // As `weir run` does: the codec the topology recorded for the store.
        st.topologies[0].store_formats.push((
            "latest-temperature".into(),
            topology.query_codec("latest-temperature").unwrap().clone(),
        ));
        st.status
            .host("weather", 0, &["latest-temperature".to_string()], &task.reader());

        let (code, _, body) = get(&st, Method::GET, "/stores/latest-temperature?key=ST-7");
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            json(&body),
            json!({"store": "latest-temperature", "key": "ST-7", "value": {"degrees": 21.5}})
        );
        let (code, _, body) = get(&st, Method::GET, "/stores/latest-temperature?from=ST-0&to=ST-9");
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            json(&body)["entries"],
            json!([
                {"key": "ST-3", "value": {"degrees": -4.0}},
                {"key": "ST-7", "value": {"degrees": 21.5}},
                // Bytes the serde refuses still answer, visibly.
                {"key": "ST-9", "value": {"hex": "626164", "error": "not 2 bytes"}},
            ])
        );
        let (code, _, body) = get(&st, Method::GET, "/stores/latest-temperature?key=7");
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(json(&body)["error"], "key \"7\" is not a station id (ST-n)");
    }

    fn get(state: &HttpState, method: Method, uri: &str) -> (StatusCode, String, String) {
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        let resp = handle(state, &req);
        let code = resp.status();
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = futures_body(resp.into_body());
        (code, ctype, body)
    }

    #[test]
    fn stats_count_input_and_output_by_the_topologys_own_internal_topics() {
        let st = state();
        let m = st.metrics.topology("user-clicks");
        // An external topic whose name starts like the application's own:
        // input all the same (a name prefix is no test of "internal").
        let t = m.task(
            "0_0",
            0,
            &[(0, "user-clicks-raw"), (1, "user-clicks-clicks-per-user-repartition")],
            &[
                (2, "clicks-per-user-out"),
                (1, "user-clicks-clicks-per-user-repartition"),
            ],
            &[],
        );
        t.consumed(0, 5);
        t.consumed(1, 3);
        t.produced(2, 2);
        t.produced(1, 3);
        let (status, _, body) = get(&st, Method::GET, "/stats");
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let u = &v["topologies"]["user-clicks"];
        assert_eq!(
            (u["consumed"].as_f64(), u["input"].as_f64()),
            (Some(8.0), Some(5.0)),
            "{v}"
        );
        assert_eq!(
            (u["produced"].as_f64(), u["output"].as_f64()),
            (Some(5.0), Some(2.0)),
            "{v}"
        );
    }

    fn futures_body(body: Full<Bytes>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(body.collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn set(status: &RunStatus, thread: &str, ready: bool, tasks: &[&str], restoring: &[&str]) {
        status.update(thread, |t| {
            t.ready = ready;
            t.tasks = tasks.iter().map(|s| s.to_string()).collect();
            t.restoring = restoring.iter().map(|s| s.to_string()).collect();
        });
    }

    fn json(body: &str) -> serde_json::Value {
        serde_json::from_str(body).expect("JSON body")
    }

    #[test]
    fn healthz_is_ok() {
        let (code, ctype, body) = get(&state(), Method::GET, "/healthz");
        assert_eq!(code, StatusCode::OK);
        assert!(ctype.starts_with("text/plain"));
        assert_eq!(body.trim(), "ok");
    }

    #[test]
    fn metrics_is_the_text_exposition() {
        let s = state();
        s.metrics.topology("user-clicks").dlq_records.inc_by(3);
        let (code, ctype, body) = get(&s, Method::GET, "/metrics?ignored=1");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(ctype, TEXT_CONTENT_TYPE);
        let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
        let dlq = scrape
            .samples
            .iter()
            .find(|x| x.metric == "weir_dlq_records_total" && x.labels.get("topology") == Some("user-clicks"))
            .expect("dlq sample");
        assert!(matches!(dlq.value, prometheus_parse::Value::Counter(v) if v == 3.0));
    }

    #[test]
    fn readyz_is_503_until_every_thread_is_ready() {
        let s = state();
        // No thread registered yet: not ready.
        let (code, ctype, body) = get(&s, Method::GET, "/readyz");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ctype, "application/json");
        assert_eq!(json(&body)["ready"], false);

        set(&s.status, "user-clicks-thread-0", false, &["0_0", "0_1"], &["0_1"]);
        set(&s.status, "user-clicks-thread-1", true, &["0_2"], &[]);
        let (code, _, body) = get(&s, Method::GET, "/readyz");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        let v = json(&body);
        assert_eq!(v["ready"], false);
        let pending = v["pending"].as_array().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0]["thread"], "user-clicks-thread-0");
        assert_eq!(pending[0]["restoring"], json!(["0_1"]));
        assert_eq!(v["threads"]["user-clicks-thread-1"]["ready"], true);

        set(&s.status, "user-clicks-thread-0", true, &["0_0", "0_1"], &[]);
        let (code, _, body) = get(&s, Method::GET, "/readyz");
        assert_eq!(code, StatusCode::OK);
        let v = json(&body);
        assert_eq!(v["ready"], true);
        assert_eq!(v["pending"], json!([]));
        assert_eq!(v["threads"]["user-clicks-thread-0"]["tasks"], json!(["0_0", "0_1"]));
    }

    /// `/readyz` also waits for the apps' live feeds to know where their
    /// topics end: a feed still looking could miss the topology's first
    /// output (the closed windows `POST /emoji` learns of come that way).
    #[test]
    fn readyz_waits_for_every_live_feed_to_know_where_it_starts() {
        use crate::daemon::feed::FeedSpec;
        use std::sync::atomic::AtomicBool;
        use weir_connectors::kafka::{ClientSettings, EmbeddedBroker};
        let with_broker = |brokers: &str| {
            let mut s = state();
            let ctx = Context::new(
                brokers.to_string(),
                ClientSettings::new(brokers),
                s.status.clone(),
                s.metrics.clone(),
                std::env::temp_dir(),
                Arc::new(AtomicBool::new(false)),
            );
            set(&s.status, "user-clicks-thread-0", true, &["0_0"], &[]);
            s.ctx = Some(Arc::new(ctx));
            s
        };

        // A broker that accepts connections and never answers: the feed
        // cannot know where its topic ends (for a second, until it gives up).
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = with_broker(&silent.local_addr().unwrap().to_string());
        s.ctx.as_ref().unwrap().start_feed(FeedSpec::new("emoji-aggregated"));
        let (code, _, body) = get(&s, Method::GET, "/readyz");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            json(&body)["pending"],
            json!([{"feed": "emoji-aggregated", "reason": "finding where its topic ends"}])
        );
        s.ctx.as_ref().unwrap().request_stop();

        // On a broker that answers, it is soon positioned (its topic need not
        // exist: it will be read from its beginning).
        let broker = EmbeddedBroker::start(1).unwrap();
        let s = with_broker(&broker.bootstrap_servers());
        s.ctx.as_ref().unwrap().start_feed(FeedSpec::new("emoji-aggregated"));
        let started = std::time::Instant::now();
        loop {
            let (code, _, body) = get(&s, Method::GET, "/readyz");
            if code == StatusCode::OK {
                assert_eq!(json(&body)["pending"], json!([]));
                break;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "still {body}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        s.ctx.as_ref().unwrap().request_stop();
    }

    #[test]
    fn topologies_lists_names_describe_and_tasks() {
        let s = state();
        set(&s.status, "user-clicks-thread-0", true, &["0_0", "1_2"], &[]);
        set(&s.status, "other-thread-0", true, &["0_5"], &[]);
        let (code, ctype, body) = get(&s, Method::GET, "/topologies");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(ctype, "application/json");
        let v = json(&body);
        assert_eq!(v["kafka"], json!({ "brokers": "127.0.0.1:9092", "embedded": true }));
        let list = v["topologies"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["name"], "user-clicks");
        assert_eq!(list[0]["description"], "counts clicks");
        assert!(list[0]["describe"].as_str().unwrap().starts_with("Topologies:"));
        let tasks = list[0]["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1]["id"], "1_2");
        assert_eq!(tasks[1]["subtopology"], 1);
        assert_eq!(tasks[1]["partition"], 2);
        assert_eq!(tasks[1]["thread"], "user-clicks-thread-0");
        assert!(list[0]["threads"].get("other-thread-0").is_none());
    }

    #[test]
    fn unknown_paths_are_404_with_a_reason() {
        for uri in ["/nope", "/metrics/", "/../etc/passwd", "/healthz%00", "//healthz"] {
            let (code, _, body) = get(&state(), Method::GET, uri);
            assert_eq!(code, StatusCode::NOT_FOUND, "{uri}");
            assert!(body.contains("no route"), "{uri}: {body}");
        }
        let long = format!("/{}", "a".repeat(10_000));
        let (code, _, body) = get(&state(), Method::GET, &long);
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(body.len() < 400);
    }

    #[test]
    fn wrong_methods_are_405() {
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let req = Request::builder().method(m.clone()).uri("/metrics").body(()).unwrap();
            let resp = handle(&state(), &req);
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
            assert_eq!(resp.headers().get(ALLOW).unwrap(), "GET, HEAD");
        }
        let (code, _, _) = get(&state(), Method::HEAD, "/healthz");
        assert_eq!(code, StatusCode::OK);
    }

    #[test]
    fn thread_names_match_their_application_only() {
        assert_eq!(thread_of("a-thread-0", "a"), Some("0"));
        assert_eq!(thread_of("a-thread-12", "a"), Some("12"));
        assert_eq!(thread_of("a-b-thread-0", "a"), None);
        assert_eq!(thread_of("a-thread-", "a"), None);
        assert_eq!(thread_of("a-thread-x", "a"), None);
    }

    #[test]
    fn serve_answers_over_tcp_and_reports_bind_errors() {
        use std::io::{Read, Write};
        let addr = serve("127.0.0.1:0", state()).unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("ok\n"), "{out}");

        // Garbage gets a 400 from hyper, and the server lives on.
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");

        let err = serve(&addr.to_string(), state()).unwrap_err();
        let line = format!("{err:#}");
        assert!(line.contains(&addr.to_string()), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
