//! Live feeds of output topics for HTTP clients: a consumer thread tails a
//! topic from where it ended when the feed started (from its beginning if
//! it did not exist yet) and hands every record's value to the listeners,
//! the subscribers (Server-Sent Events) and a small window of recent
//! records (JSON polling). An app declares its feeds in
//! [`AppParts::feeds`](super::AppParts::feeds): they start before its
//! topology, and `/readyz` waits until each knows where it starts, so no
//! output of the topology is missed.
//!
//! A feed is for watching, not for processing: it joins no consumer group,
//! commits nothing, and a subscriber too slow to keep up skips records
//! (it is told how many, as an SSE comment) rather than slowing the feed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use tokio::sync::broadcast;
use weir_connectors::kafka::{tail_with, ClientSettings, TailLimit};

use super::app::Body;

/// How many recent records a feed keeps for late subscribers and polling.
const RECENT: usize = 200;
/// SSE comment sent when nothing happened for this long, so proxies and
/// browsers keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub struct Feed {
    topic: String,
    sender: broadcast::Sender<Arc<str>>,
    recent: Mutex<VecDeque<Arc<str>>>,
    listeners: Mutex<Vec<Listener>>,
    /// True once the feed knows where it starts reading, or has stopped.
    settled: Arc<AtomicBool>,
}

/// A callback of [`FeedSpec::listen`].
type Listener = Box<dyn Fn(&str) + Send + Sync>;

/// A live feed an app starts with its topology: the topic, and what
/// derives state from every value of it.
pub struct FeedSpec {
    pub(crate) topic: String,
    pub(crate) listeners: Vec<Listener>,
}

impl FeedSpec {
    pub fn new(topic: &str) -> FeedSpec {
        FeedSpec {
            topic: topic.to_string(),
            listeners: Vec::new(),
        }
    }

    /// Call `f` with every value the feed reads, on the feed's own thread,
    /// before any subscriber sees it (so it must be quick). For what an app
    /// derives from its output, e.g. which windows have closed. Given here,
    /// before the feed starts, it sees every value.
    pub fn listen(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> FeedSpec {
        self.listeners.push(Box::new(f));
        self
    }
}

impl Feed {
    pub(crate) fn start(settings: &ClientSettings, spec: FeedSpec, stop: Arc<AtomicBool>) -> Arc<Feed> {
        let (sender, _) = broadcast::channel(4096);
        let settled = Arc::new(AtomicBool::new(false));
        let feed = Arc::new(Feed {
            topic: spec.topic,
            sender,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            listeners: Mutex::new(spec.listeners),
            settled: settled.clone(),
        });
        let settings = settings.clone();
        let me = feed.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("feed-{}", feed.topic))
            .spawn(move || {
                let limit = TailLimit {
                    stop: Some(stop),
                    positioned: Some(settled.clone()),
                    ..TailLimit::default()
                };
                let result = tail_with(&settings, &me.topic, false, Some(limit), |record| {
                    if let Some(value) = record.and_then(|r| r.value) {
                        me.publish(String::from_utf8_lossy(value).as_ref());
                    }
                    true
                });
                if let Err(e) = result {
                    tracing::warn!(topic = %me.topic, error = %e, "the live feed stopped");
                }
                settled.store(true, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::warn!(topic = %feed.topic, error = %e, "cannot start a live feed");
            feed.settled.store(true, Ordering::Release);
        }
        feed
    }

    /// False while the feed is still finding where its topic ends: a value
    /// appended before then may not reach it.
    pub fn is_positioned(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    fn publish(&self, value: &str) {
        for listen in self.listeners.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            listen(value);
        }
        let value: Arc<str> = Arc::from(value);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(value.clone());
        }
        // No subscriber is not an error.
        let _ = self.sender.send(value);
    }

    /// Add the listeners of another spec of the same topic.
    pub(crate) fn add_listeners(&self, more: Vec<Listener>) {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).extend(more);
    }

    /// The topic this feed tails.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Up to `n` most recent values, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Arc<str>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().skip(recent.len().saturating_sub(n)).cloned().collect()
    }

    /// A `text/event-stream` response: the last `replay` values, then every
    /// new one, each as one `data:` event (values are single-line JSON).
    pub fn sse(&self, replay: usize) -> Response<Body> {
        // Subscribe before reading the backlog: a value published in
        // between is sent twice rather than lost.
        let receiver = self.sender.subscribe();
        let mut first = vec![Bytes::from_static(b": connected\n\n")];
        first.extend(self.recent(replay).iter().map(|v| event(v)));
        let backlog = futures_util::stream::iter(first.into_iter().map(|b| Ok::<_, Infallible>(Frame::data(b))));
        let body = StreamBody::new(futures_util::StreamExt::chain(backlog, live_stream(receiver)));
        let mut r = Response::new(BodyExt::boxed_unsync(body));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

fn live_stream(
    receiver: broadcast::Receiver<Arc<str>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        let frame = match tokio::time::timeout(KEEP_ALIVE, receiver.recv()).await {
            Ok(Ok(v)) => event(&v),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                Bytes::from(format!(": skipped {n} events (client too slow)\n\n"))
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            Err(_) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok(Frame::data(frame)), receiver))
    })
}

/// One SSE event. A value with line breaks becomes several `data:` lines,
/// which the client joins back with `\n`.
fn event(value: &str) -> Bytes {
    let mut s = String::with_capacity(value.len() + 8);
    for line in value.split('\n') {
        s.push_str("data: ");
        s.push_str(line.trim_end_matches('\r'));
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::event;

    #[test]
    fn events_are_data_lines_ending_in_a_blank_line() {
        assert_eq!(&event(r#"{"a":1}"#)[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&event("x\ny")[..], b"data: x\ndata: y\n\n");
    }
}
