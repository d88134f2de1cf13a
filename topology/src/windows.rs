//! Window specifications (validated parameter objects) and windowed keys.

use std::fmt;
use std::time::Duration;

use crate::error::TopologyError;
use crate::serde::{Serde, SerdeError, SerdeImpl};

fn millis(what: &str, d: Duration) -> Result<i64, TopologyError> {
    i64::try_from(d.as_millis()).map_err(|_| TopologyError::InvalidWindow(format!("{what} {d:?} is too large")))
}

/// Tumbling (advance = size) or hopping (advance < size) event-time windows.
///
/// ```
/// # use std::time::Duration;
/// # use weir_topology::TimeWindows;
/// let hopping = TimeWindows::of(Duration::from_secs(60))?
///     .advance_by(Duration::from_secs(10))?
///     .grace(Duration::from_secs(5))?;
/// # Ok::<(), weir_topology::TopologyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    pub(crate) size_ms: i64,
    pub(crate) advance_ms: i64,
    pub(crate) grace_ms: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size`, no grace. A zero size is an error.
    pub fn of(size: Duration) -> Result<Self, TopologyError> {
        let size_ms = millis("window size", size)?;
        if size_ms <= 0 {
            return Err(TopologyError::InvalidWindow(format!(
                "window size must be at least 1 ms, got {size:?}"
            )));
        }
        Ok(TimeWindows {
            size_ms,
            advance_ms: size_ms,
            grace_ms: 0,
        })
    }

    /// Hopping windows: a new window starts every `advance`. The advance must
    /// be positive and at most the size.
    pub fn advance_by(self, advance: Duration) -> Result<Self, TopologyError> {
        let advance_ms = millis("window advance", advance)?;
        if advance_ms <= 0 || advance_ms > self.size_ms {
            return Err(TopologyError::InvalidWindow(format!(
                "window advance must be between 1 ms and the window size ({} ms), got {advance:?}",
                self.size_ms
            )));
        }
        Ok(TimeWindows { advance_ms, ..self })
    }

    /// How long after a window's end records are still accepted.
    pub fn grace(self, grace: Duration) -> Result<Self, TopologyError> {
        let grace_ms = millis("grace", grace)?;
        Ok(TimeWindows { grace_ms, ..self })
    }

    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }
    pub fn advance_ms(&self) -> i64 {
        self.advance_ms
    }
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// The start of every window that contains `ts`, oldest first.
    pub fn window_starts(&self, ts: i64) -> impl Iterator<Item = i64> {
        let last = ts - ts.rem_euclid(self.advance_ms);
        let first_candidate = last - ((self.size_ms - 1) / self.advance_ms) * self.advance_ms;
        let advance = self.advance_ms;
        let size = self.size_ms;
        (0..)
            .map(move |i| first_candidate + i * advance)
            .take_while(move |s| *s <= last)
            .filter(move |s| *s + size > ts)
    }
}

/// Session windows: records of a key closer than `gap` in time fall in one
/// session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    pub(crate) gap_ms: i64,
    pub(crate) grace_ms: i64,
}

impl SessionWindows {
    /// Sessions with the given inactivity gap; a zero gap is an error.
    pub fn with_inactivity_gap(gap: Duration) -> Result<Self, TopologyError> {
        let gap_ms = millis("inactivity gap", gap)?;
        if gap_ms <= 0 {
            return Err(TopologyError::InvalidWindow(format!(
                "session inactivity gap must be at least 1 ms, got {gap:?}"
            )));
        }
        Ok(SessionWindows { gap_ms, grace_ms: 0 })
    }
    pub fn grace(self, grace: Duration) -> Result<Self, TopologyError> {
        Ok(SessionWindows {
            grace_ms: millis("grace", grace)?,
            ..self
        })
    }
    pub fn gap_ms(&self) -> i64 {
        self.gap_ms
    }
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }
}

/// When a windowed aggregation forwards its results (KIP-825).
///
/// ```
/// # use std::time::Duration;
/// # use weir_topology::*;
/// let mut b = StreamsBuilder::new();
/// b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
///     .group_by_key(Serdes::string(), Serdes::string())
///     .windowed_by(TimeWindows::of(Duration::from_secs(60))?)
///     .emit_strategy(EmitStrategy::on_window_close())
///     .count(Materialized::named("clicks-per-minute"))
///     .to_stream()
///     .to("final-counts", Serdes::windowed(Serdes::string()), Serdes::u64());
/// # b.build()?;
/// # Ok::<(), TopologyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmitStrategy {
    pub(crate) on_close: bool,
}

impl EmitStrategy {
    /// Forward every update of a window as it happens (at the next commit,
    /// through the store's write cache). The default.
    pub fn on_window_update() -> Self {
        EmitStrategy { on_close: false }
    }

    /// Forward each window once, with its final result, when stream time
    /// passes the window's end plus grace: the records (keys, values,
    /// timestamps = window end, order) of
    /// `.suppress(Suppressed::until_window_closes())` on the same
    /// aggregation, without a suppression buffer holding a second copy of
    /// every open window. Like suppression, results come out at commit
    /// time (after every record in the test driver).
    ///
    /// How: the aggregation keeps, in a small store named
    /// `{store}-last-emitted` (logged like the window store), the window
    /// close time (stream time - grace) up to which it has emitted, as
    /// Kafka Streams keeps `lastEmitWindowCloseTime`; at each commit it
    /// range-scans its own window store for the windows that closed since.
    ///
    /// Crash safety: the windows are emitted and the new close time is
    /// staged in the same flush, so the close time is committed atomically
    /// with the window store and the task's input positions. A task that
    /// restarts from its last commit emits again exactly the windows whose
    /// emission was not committed: with exactly-once those first emissions
    /// were in the aborted transaction, so every window is read once; with
    /// at-least-once a crash after a commit's outputs were produced and
    /// before its state was written repeats those windows (with the same
    /// values). Switching an existing aggregation to this strategy emits
    /// the closed windows still retained in its store once, on the first
    /// commit.
    pub fn on_window_close() -> Self {
        EmitStrategy { on_close: true }
    }

    /// True for [`EmitStrategy::on_window_close`].
    pub fn is_on_window_close(&self) -> bool {
        self.on_close
    }
}

/// The time difference within which two records of a stream–stream join
/// match: a left record at `t` joins right records in
/// `[t - before, t + after]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    pub(crate) before_ms: i64,
    pub(crate) after_ms: i64,
    pub(crate) grace_ms: i64,
}

impl JoinWindows {
    /// Symmetric windows: records at most `difference` apart join.
    pub fn of(difference: Duration) -> Result<Self, TopologyError> {
        let d = millis("join window", difference)?;
        Ok(JoinWindows {
            before_ms: d,
            after_ms: d,
            grace_ms: 0,
        })
    }
    /// Asymmetric windows.
    pub fn before_after(before: Duration, after: Duration) -> Result<Self, TopologyError> {
        Ok(JoinWindows {
            before_ms: millis("join window before", before)?,
            after_ms: millis("join window after", after)?,
            grace_ms: 0,
        })
    }
    pub fn grace(self, grace: Duration) -> Result<Self, TopologyError> {
        Ok(JoinWindows {
            grace_ms: millis("grace", grace)?,
            ..self
        })
    }
}

/// A window in epoch milliseconds: `[start, end)` for time windows; for
/// session windows `end` is the last record's timestamp (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// A key together with the window its aggregate belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Windowed<K> {
    pub key: K,
    pub window: Window,
}

impl<K: fmt::Display> fmt::Display for Windowed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}@{}/{}]", self.key, self.window.start, self.window.end)
    }
}

pub(crate) struct WindowedSerde<K> {
    pub(crate) inner: Serde<K>,
}

impl<K: 'static> SerdeImpl<Windowed<K>> for WindowedSerde<K> {
    fn serialize(&self, value: &Windowed<K>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        self.inner.serialize(&value.key, out)?;
        out.extend_from_slice(&value.window.start.to_be_bytes());
        out.extend_from_slice(&value.window.end.to_be_bytes());
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<Windowed<K>, SerdeError> {
        if bytes.len() < 16 {
            return Err(SerdeError(format!(
                "a windowed key needs at least 16 bytes, got {}",
                bytes.len()
            )));
        }
        let (key, times) = bytes.split_at(bytes.len() - 16);
        let start = i64::from_be_bytes(times[..8].try_into().expect("8 bytes"));
        let end = i64::from_be_bytes(times[8..].try_into().expect("8 bytes"));
        Ok(Windowed {
            key: self.inner.deserialize(key)?,
            window: Window { start, end },
        })
    }
    fn name(&self) -> &'static str {
        "windowed"
    }
    /// `key@start/end` (epoch ms), as [`Windowed`] displays, with or
    /// without the brackets; split at the last `@` so that the key may
    /// contain one.
    fn parse_text(&self, text: &str) -> Result<Windowed<K>, SerdeError> {
        let bad = || SerdeError(format!("{text:?} is not a windowed key (key@start/end, in epoch ms)"));
        let t = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        let (key, window) = t.rsplit_once('@').ok_or_else(bad)?;
        let (start, end) = window.split_once('/').ok_or_else(bad)?;
        Ok(Windowed {
            key: self.inner.parse_text(key)?,
            window: Window {
                start: start.parse().map_err(|_| bad())?,
                end: end.parse().map_err(|_| bad())?,
            },
        })
    }
    fn to_json(&self, value: &Windowed<K>) -> serde_json::Value {
        serde_json::json!({
            "key": self.inner.to_json(&value.key),
            "start": value.window.start,
            "end": value.window.end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_windows_name_the_bad_value() {
        assert_eq!(
            TimeWindows::of(Duration::ZERO).unwrap_err().to_string(),
            "invalid window: window size must be at least 1 ms, got 0ns"
        );
        let w = TimeWindows::of(Duration::from_secs(10)).unwrap();
        assert_eq!(
            w.advance_by(Duration::ZERO).unwrap_err().to_string(),
            "invalid window: window advance must be between 1 ms and the window size (10000 ms), got 0ns"
        );
        assert_eq!(
            w.advance_by(Duration::from_secs(11)).unwrap_err().to_string(),
            "invalid window: window advance must be between 1 ms and the window size (10000 ms), got 11s"
        );
        assert!(SessionWindows::with_inactivity_gap(Duration::ZERO).is_err());
    }

    #[test]
    fn window_starts_for_tumbling_and_hopping() {
        let t = TimeWindows::of(Duration::from_millis(2000)).unwrap();
        assert_eq!(t.window_starts(0).collect::<Vec<_>>(), vec![0]);
        assert_eq!(t.window_starts(1999).collect::<Vec<_>>(), vec![0]);
        assert_eq!(t.window_starts(2000).collect::<Vec<_>>(), vec![2000]);
        assert_eq!(t.window_starts(-1).collect::<Vec<_>>(), vec![-2000]);
        let h = TimeWindows::of(Duration::from_secs(60))
            .unwrap()
            .advance_by(Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            h.window_starts(65_000).collect::<Vec<_>>(),
            vec![10_000, 20_000, 30_000, 40_000, 50_000, 60_000]
        );
        assert_eq!(h.window_starts(60_000).count(), 6);
        assert_eq!(h.window_starts(60_000).next(), Some(10_000));
        let odd = TimeWindows::of(Duration::from_millis(10))
            .unwrap()
            .advance_by(Duration::from_millis(3))
            .unwrap();
        assert_eq!(odd.window_starts(10).collect::<Vec<_>>(), vec![3, 6, 9]);
    }

    #[test]
    fn windowed_serde_round_trips() {
        let s = crate::Serdes::windowed(crate::Serdes::string());
        let w = Windowed {
            key: "k".to_string(),
            window: Window { start: -5, end: 10 },
        };
        assert_eq!(s.deserialize(&s.to_bytes(&w).unwrap()).unwrap(), w);
        assert!(s.deserialize(b"short").is_err());
        // Text and JSON for interactive queries.
        assert_eq!(s.parse_text("k@-5/10").unwrap(), w);
        assert_eq!(s.parse_text(&w.to_string()).unwrap(), w);
        assert_eq!(s.parse_text("a@b@0/1").unwrap().key, "a@b");
        assert_eq!(
            s.parse_text("k@5").unwrap_err().0,
            "\"k@5\" is not a windowed key (key@start/end, in epoch ms)"
        );
        assert_eq!(s.to_json(&w), serde_json::json!({"key": "k", "start": -5, "end": 10}));
    }
}
