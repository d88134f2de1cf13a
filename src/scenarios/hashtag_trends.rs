//! `hashtag-trends`: word and hashtag counts from a tweet stream
//! (SCENARIOS.md §2).
//!
//! `twitter` carries tweets as JSON `{"id": 1, "user": "name", "text":
//! "...", "created_at": "ISO-8601"}` or as plain text. Each tweet's text is
//! split into terms (see [`terms`]); hashtags (`#rust`) and words (`rust`)
//! are distinct terms. Two results:
//!
//! - the running count of every term, not windowed, in the queryable store
//!   `term-counts` (key: the term, value: u64);
//! - hopping event-time windows (60 s, advancing by 10 s) of hashtag counts,
//!   and once per window, after it closes, the top 10 hashtags of that
//!   window to `hashtag-ranking` as
//!   `{"window_start", "window_end", "ranking": [{"term", "count"}]}`.
//!
//! ## How the ranking is emitted once per window
//!
//! A top-10 needs every hashtag count of a window, but those counts live in
//! the tasks that own the hashtags (the terms are partitioned by term). So
//! the final count of each (hashtag, window), emitted once by `suppress`
//! when the window closes and stamped with the window's end, is re-keyed by
//! the window's start: all counts of one window meet in one task. There they
//! are folded into a top-10 list in a tumbling window of one `advance`
//! (every count of one window carries the same timestamp, its end, so they
//! all land in the same tumbling window), and a second `suppress` emits that
//! list once, when the tumbling window closes. The ranking of a window is
//! therefore written one `advance` plus `ranking_grace` after the window
//! closed. A plain (unwindowed) aggregation keyed by window start would
//! emit an updated list after every count instead of once.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::{SerdeError, SerdeImpl};

pub const NAME: &str = "hashtag-trends";
pub const DESCRIPTION: &str = "word and hashtag counts from tweets, with a top-10 hashtag ranking per hopping window";

/// The input topic (SCENARIOS.md).
pub const INPUT_TOPIC: &str = "twitter";
/// The ranking output topic (SCENARIOS.md).
pub const OUTPUT_TOPIC: &str = "hashtag-ranking";
/// The queryable store of the running count per term (SCENARIOS.md).
pub const TERM_COUNTS: &str = "term-counts";
/// The window store of hashtag counts per hopping window.
pub const WINDOW_COUNTS: &str = "hashtag-window-counts";
/// The window store of the top-10 list being built per window.
pub const TOP_LISTS: &str = "hashtag-top10";
/// How many hashtags a ranking lists.
pub const TOP_N: usize = 10;

/// Settings of the topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Size of the hopping windows, ms.
    pub window_size_ms: i64,
    /// How far apart window starts are, ms.
    pub advance_ms: i64,
    /// How long after a window's end late tweets are still counted, ms.
    pub grace_ms: i64,
    /// How long the ranking stage waits for the counts of a window after
    /// the counts of a later window began arriving, ms. With one partition
    /// nothing arrives out of order there and 0 would do; with several,
    /// the tasks counting hashtags run at different stream times, and a
    /// count that arrives after its ranking was emitted is dropped (and
    /// counted as late). The default tolerates one `advance` of skew.
    pub ranking_grace_ms: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            window_size_ms: 60_000,
            advance_ms: 10_000,
            grace_ms: 5_000,
            ranking_grace_ms: 10_000,
        }
    }
}

/// A tweet as the topology reads it: only the text and the optional event
/// time are used. `id` and `user` are part of the contract's format but are
/// neither needed nor checked, so a producer that sends them as other types
/// is not rejected for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tweet {
    pub text: String,
    /// The event time. Absent (or a plain-text tweet): the Kafka record
    /// timestamp is used.
    #[serde(default, deserialize_with = "iso_8601", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// Accepts RFC 3339 (`2026-11-21T10:00:00Z`, `…+02:00`) and, because
/// Python's `datetime.isoformat()` writes it that way, an ISO-8601 time
/// without offset (`2026-11-21T10:00:00.123456`), read as UTC.
fn iso_8601<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(s) = Option::<Cow<'de, str>>::deserialize(d)? else {
        return Ok(None);
    };
    parse_time(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("field `created_at`: {s:?} is not an ISO-8601 time")))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = super::parse_rfc3339(s) {
        return Some(t);
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// Decodes a `twitter` value: a value whose first non-blank character is
/// `{` is a JSON tweet and must decode as one (a broken JSON tweet goes to
/// the dead-letter topic rather than being counted as words like `"text"`);
/// any other UTF-8 value is the text of a tweet.
pub struct TweetSerde;

impl SerdeImpl<Tweet> for TweetSerde {
    fn serialize(&self, value: &Tweet, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        serde_json::to_writer(out, value).map_err(|e| SerdeError(format!("JSON encoding failed: {e}")))
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<Tweet, SerdeError> {
        let s = std::str::from_utf8(bytes).map_err(|e| SerdeError(format!("not valid UTF-8 text: {e}")))?;
        if s.trim_start().starts_with('{') {
            serde_json::from_str(s).map_err(|e| SerdeError(format!("invalid JSON tweet: {e}")))
        } else {
            Ok(Tweet {
                text: s.to_string(),
                created_at: None,
            })
        }
    }
    fn name(&self) -> &'static str {
        "tweet"
    }
}

/// Words that say nothing about a topic, dropped from the word counts
/// (hashtags are never dropped: `#the` was written on purpose). English
/// function words, the fragments that splitting contractions at the
/// apostrophe leaves (`don't` → `don`, `t`), and `rt` (retweet). Sorted,
/// for binary search.
pub const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "d", "did", "do", "does", "don", "for", "from", "had", "has", "have", "he", "her", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "just", "ll", "m", "me", "my", "no", "not", "of", "on", "or", "our",
    "out", "re", "rt", "s", "she", "so", "t", "than", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "to", "too", "up", "us", "ve", "was", "we", "were", "what", "when", "which", "who", "will", "with",
    "would", "you", "your",
];

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Split a tweet into terms:
///
/// 1. lower-case the text and split it at whitespace;
/// 2. drop every piece containing `http://`, `https://` or `www.` (a URL,
///    with whatever punctuation surrounds it);
/// 3. in the rest, words are runs of letters, digits and `_` (Unicode
///    letters included); every other character separates words, so
///    punctuation disappears (`rust,` → `rust`, `don't` → `don`, `t`);
/// 4. a word right after a `#` that does not itself follow a word character
///    is a hashtag and keeps its `#` (`#rust!` → `#rust`; `a#b` → `a`, `b`);
/// 5. words (not hashtags) in [`STOP_WORDS`] are dropped.
///
/// Every occurrence counts: a tweet saying `#rust` twice yields it twice.
pub fn terms(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    let mut emit = |word: &str, hashtag: bool| {
        if hashtag {
            out.push(format!("#{word}"));
        } else if STOP_WORDS.binary_search(&word).is_err() {
            out.push(word.to_string());
        }
    };
    for piece in lower.split_whitespace() {
        if piece.contains("http://") || piece.contains("https://") || piece.contains("www.") {
            continue;
        }
        let mut start: Option<usize> = None; // byte index where the current word began
        let mut hashtag = false; // the current (or next) word is a hashtag
        let mut prev_word = false;
        for (i, c) in piece.char_indices() {
            if is_word_char(c) {
                if start.is_none() {
                    start = Some(i);
                }
            } else {
                if let Some(s) = start.take() {
                    emit(&piece[s..i], hashtag);
                }
                hashtag = c == '#' && !prev_word;
            }
            prev_word = is_word_char(c);
        }
        if let Some(s) = start {
            emit(&piece[s..], hashtag);
        }
    }
    out
}

/// One entry of a ranking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermCount {
    pub term: String,
    pub count: u64,
}

/// One window's top hashtags, as written to `hashtag-ranking`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranking {
    /// ISO-8601 UTC with milliseconds and `Z`.
    pub window_start: String,
    pub window_end: String,
    /// By count descending, ties by term ascending; at most [`TOP_N`].
    pub ranking: Vec<TermCount>,
}

/// Add a window's final count of one hashtag to its top list. Each hashtag
/// arrives once per window; should a count be replayed (at-least-once
/// after a crash), it replaces the earlier one instead of appearing twice.
/// Since the order is total, the result does not depend on arrival order.
pub fn add_to_top(mut top: Vec<TermCount>, entry: TermCount) -> Vec<TermCount> {
    top.retain(|e| e.term != entry.term);
    top.push(entry);
    top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.term.cmp(&b.term)));
    top.truncate(TOP_N);
    top
}

use super::{iso_millis, window_millis as millis};

/// `twitter` → terms → (a) running count per term in `term-counts`;
/// (b) hashtags → hopping window counts → final counts → top 10 per window
/// → `hashtag-ranking`.
pub fn topology(p: &Params) -> Result<Topology, TopologyError> {
    let advance = millis("window advance", p.advance_ms)?;
    let hopping = TimeWindows::of(millis("window size", p.window_size_ms)?)?
        .advance_by(advance)?
        .grace(millis("grace", p.grace_ms)?)?;
    let ranking_windows = TimeWindows::of(advance)?.grace(millis("ranking grace", p.ranking_grace_ms)?)?;
    let size_ms = hopping.size_ms();

    let mut b = StreamsBuilder::new();
    // Partition by term once, for both counts. The value is empty: the
    // counts need only the key.
    let terms = b
        .stream_with_timestamps(INPUT_TOPIC, Serdes::ignored(), Serde::new(TweetSerde), |_, t, ts| {
            t.created_at.map_or(ts, |c| c.timestamp_millis())
        })
        .flat_map(|_, tweet| terms(&tweet.text).into_iter().map(|t| (t, String::new())))
        .repartition("terms", Serdes::string(), Serdes::string());

    terms
        .clone()
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named(TERM_COUNTS));

    terms
        .filter(|term, _| term.starts_with('#'))
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(hopping)
        .count(Materialized::named(WINDOW_COUNTS))
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        // Final count of (hashtag, window), stamped with the window's end:
        // gather every count of a window under its start.
        .map(|wk, count| (wk.window.start, TermCount { term: wk.key, count }))
        .group_by_key(Serdes::i64(), Serdes::json())
        .windowed_by(ranking_windows)
        .aggregate(
            Vec::new,
            |_, entry, top| add_to_top(top, entry),
            Serdes::json(),
            Materialized::named(TOP_LISTS),
        )
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .map(|wk, top| (wk.key, top))
        .try_map_values(move |start, ranking| {
            let end = start.saturating_add(size_ms);
            match (iso_millis(*start), iso_millis(end)) {
                (Some(window_start), Some(window_end)) => Ok(Ranking {
                    window_start,
                    window_end,
                    ranking,
                }),
                _ => Err(format!(
                    "window [{start}, {end}) is outside the representable time range"
                )),
            }
        })
        // Keyed by the window start text, so consumers can compact or
        // look up a window's ranking.
        .map(|_, r| (r.window_start.clone(), r))
        .to(OUTPUT_TOPIC, Serdes::string(), Serdes::json());
    b.build()
}

/// The registration of this scenario with the daemon (parameters from
/// `[topologies.{NAME}]` of the config).
///
/// Route: `GET /hashtags/top`, the latest ranking written to
/// `hashtag-ranking` since the daemon started (`{"latest": null}` before
/// the first). The running counts answer at `/stores/term-counts?key=…`.
pub fn app() -> weir::daemon::App {
    use weir::daemon::{AppParts, FeedSpec, Method, Route, StatusCode};
    weir::daemon::App::with_params(NAME, DESCRIPTION, |p: &Params| {
        let mut parts = AppParts::new(topology(p)?);
        parts.generator = Some(super::generators::hashtag_trends_spec());
        parts.routes.push(Route::new("/hashtags/top", &[Method::GET], |ctx, _| {
            let latest = ctx
                .feed(OUTPUT_TOPIC)
                .recent(1)
                .first()
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok());
            weir::daemon::app::json(StatusCode::OK, &serde_json::json!({ "latest": latest }))
        }));
        parts.feeds.push(FeedSpec::new(OUTPUT_TOPIC));
        Ok(parts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir::testing::{TestDriverConfig, TopologyTestDriver};

    /// 2026-11-21T10:00:00.000Z, a multiple of 60 s.
    const T0: i64 = 1_795_255_200_000;

    fn driver() -> TopologyTestDriver {
        let t = topology(&Params::default()).expect("topology builds");
        TopologyTestDriver::new(t, TestDriverConfig::with_application_id(NAME)).expect("driver starts")
    }

    /// A JSON tweet at event time `ms`; the Kafka timestamp (0) is not used.
    fn tweet(d: &TopologyTestDriver, id: u64, text: &str, ms: i64) {
        let v = serde_json::json!({
            "id": id,
            "user": "someone",
            "text": text,
            "created_at": iso_millis(ms).expect("in range"),
        });
        d.pipe_raw(INPUT_TOPIC, None, Some(v.to_string().as_bytes()), 0)
            .expect("pipe");
    }

    /// Close every window before `at`: one hashtag tweet at `at` closes the
    /// hopping windows, and one 10 minutes later closes `at`'s own windows,
    /// whose counts move the ranking stage's time past every earlier
    /// ranking window.
    fn flush(d: &TopologyTestDriver, at: i64) {
        tweet(d, 0, "#flush", at);
        tweet(d, 0, "#flush", at + 600_000);
    }

    /// Rankings written so far, by window start; fails if a window was
    /// ranked twice.
    fn rankings(d: &TopologyTestDriver) -> BTreeMap<String, String> {
        let mut by_start = BTreeMap::new();
        for (k, v) in d
            .output_topic(OUTPUT_TOPIC, Serdes::string(), Serdes::string())
            .read_key_values()
        {
            let r: Ranking = serde_json::from_str(&v).expect("a ranking");
            assert_eq!(k, r.window_start, "keyed by window start");
            assert!(by_start.insert(k, v).is_none(), "window ranked twice");
        }
        by_start
    }

    #[test]
    fn terms_strip_urls_punctuation_and_stop_words() {
        assert_eq!(
            terms(
                "RT @Alice: Loving #Rust, and #rust's borrow-checker!! https://t.co/x www.rust-lang.org (http://a.b)"
            ),
            vec!["alice", "loving", "#rust", "#rust", "borrow", "checker"]
        );
        assert_eq!(terms("Don't stop... ##Kafka a#b #"), vec!["stop", "#kafka", "b"]);
        assert_eq!(terms("The THE the"), Vec::<String>::new());
        assert_eq!(terms("#The café_2026 Ünïcode"), vec!["#the", "café_2026", "ünïcode"]);
        assert_eq!(terms(""), Vec::<String>::new());
        assert_eq!(terms("🔥🔥 #🔥 fire🔥hot"), vec!["fire", "hot"]);
        let mut sorted = STOP_WORDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, STOP_WORDS, "STOP_WORDS must stay sorted for binary search");
    }

    #[test]
    fn top_ten_per_window_with_ties_emitted_once() {
        let d = driver();
        // In [T0, T0+10s): in windows starting T0-50s … T0.
        let early = [
            "#Rust is fast",
            "#rust and #kafka",
            "#RUST #kafka",
            "#rust #kafka #streams",
            "#weir #streams",
            "#weir rust",
            "#zeta #alpha #beta",
            "#gamma #delta",
            "#epsilon #eta #theta",
        ];
        for (i, t) in early.iter().enumerate() {
            tweet(&d, i as u64, t, T0 + 1_000 * (i as i64 + 1));
        }
        // In [T0+50s, T0+60s): in windows starting T0 … T0+50s only.
        tweet(&d, 100, "more #kafka", T0 + 55_000);
        // Stream time T0+55s closed the hopping windows ending by T0+50s;
        // their counts moved the ranking stage to T0+50s, which ranks the
        // windows ending by T0+30s (one advance and the ranking grace
        // later). The window starting at T0 is still open.
        let mut got = rankings(&d);
        assert_eq!(
            got.keys().map(String::as_str).collect::<Vec<_>>(),
            vec![
                "2026-11-21T09:59:10.000Z",
                "2026-11-21T09:59:20.000Z",
                "2026-11-21T09:59:30.000Z"
            ]
        );
        flush(&d, T0 + 600_000);
        for (k, v) in rankings(&d) {
            assert!(got.insert(k, v).is_none(), "window ranked twice");
        }
        assert_eq!(
            got.get("2026-11-21T10:00:00.000Z").map(String::as_str),
            Some(concat!(
                r##"{"window_start":"2026-11-21T10:00:00.000Z","window_end":"2026-11-21T10:01:00.000Z","ranking":["##,
                r##"{"term":"#kafka","count":4},{"term":"#rust","count":4},"##,
                r##"{"term":"#streams","count":2},{"term":"#weir","count":2},"##,
                r##"{"term":"#alpha","count":1},{"term":"#beta","count":1},{"term":"#delta","count":1},"##,
                r##"{"term":"#epsilon","count":1},{"term":"#eta","count":1},{"term":"#gamma","count":1}]}"##
            ))
        );
        // A window without the later tweet: #kafka has 3, so #rust leads.
        assert_eq!(
            got.get("2026-11-21T09:59:50.000Z").map(String::as_str),
            Some(concat!(
                r##"{"window_start":"2026-11-21T09:59:50.000Z","window_end":"2026-11-21T10:00:50.000Z","ranking":["##,
                r##"{"term":"#rust","count":4},{"term":"#kafka","count":3},"##,
                r##"{"term":"#streams","count":2},{"term":"#weir","count":2},"##,
                r##"{"term":"#alpha","count":1},{"term":"#beta","count":1},{"term":"#delta","count":1},"##,
                r##"{"term":"#epsilon","count":1},{"term":"#eta","count":1},{"term":"#gamma","count":1}]}"##
            ))
        );
        // A window holding only the later tweet.
        assert_eq!(
            got.get("2026-11-21T10:00:50.000Z").map(String::as_str),
            Some(
                r##"{"window_start":"2026-11-21T10:00:50.000Z","window_end":"2026-11-21T10:01:50.000Z","ranking":[{"term":"#kafka","count":1}]}"##
            )
        );
        // Every window holding a test tweet is ranked (T0-50s … T0+50s),
        // then the first #flush tweet's windows; nothing else.
        let starts: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(
            starts,
            vec![
                "2026-11-21T09:59:10.000Z",
                "2026-11-21T09:59:20.000Z",
                "2026-11-21T09:59:30.000Z",
                "2026-11-21T09:59:40.000Z",
                "2026-11-21T09:59:50.000Z",
                "2026-11-21T10:00:00.000Z",
                "2026-11-21T10:00:10.000Z",
                "2026-11-21T10:00:20.000Z",
                "2026-11-21T10:00:30.000Z",
                "2026-11-21T10:00:40.000Z",
                "2026-11-21T10:00:50.000Z",
                "2026-11-21T10:09:10.000Z",
                "2026-11-21T10:09:20.000Z",
                "2026-11-21T10:09:30.000Z",
                "2026-11-21T10:09:40.000Z",
            ]
        );
        // More time: no window is ranked a second time.
        flush(&d, T0 + 3_600_000);
        assert!(!rankings(&d).contains_key("2026-11-21T10:00:00.000Z"));
        assert_eq!(d.late_records_dropped(), 0);
        assert!(d.dead_letters().is_empty());
    }

    #[test]
    fn term_counts_store_holds_running_totals() {
        let d = driver();
        tweet(&d, 1, "Learning #Rust: rust is great, https://rust-lang.org!", T0);
        tweet(&d, 2, "#rust #Rust and Rust", T0 + 1);
        // Plain text: the whole value is the text; event time = record time.
        d.pipe_raw(INPUT_TOPIC, Some(b"k"), Some("rust, the #rust way".as_bytes()), T0 + 2)
            .unwrap();
        let store = d.key_value_store(TERM_COUNTS, Serdes::string(), Serdes::u64()).unwrap();
        assert_eq!(store.get(&"#rust".to_string()), Some(4));
        assert_eq!(store.get(&"rust".to_string()), Some(3));
        assert_eq!(store.get(&"learning".to_string()), Some(1));
        assert_eq!(store.get(&"way".to_string()), Some(1));
        assert_eq!(store.get(&"the".to_string()), None);
        assert_eq!(store.get(&"and".to_string()), None);
        assert_eq!(store.get(&"https".to_string()), None);
        assert_eq!(store.get(&"org".to_string()), None);
        assert_eq!(
            store.all(),
            vec![
                ("#rust".to_string(), 4),
                ("great".to_string(), 1),
                ("learning".to_string(), 1),
                ("rust".to_string(), 3),
                ("way".to_string(), 1),
            ]
        );
        // Hashtags and words went through one repartition topic.
        assert_eq!(d.topic_records("hashtag-trends-terms-repartition").len(), 10);
    }

    #[test]
    fn keys_that_are_not_utf8_are_ignored_not_dead_lettered() {
        let d = driver();
        let v = serde_json::json!({"id": 1, "user": "someone", "text": "#rust", "created_at": iso_millis(T0).unwrap()});
        d.pipe_raw(
            INPUT_TOPIC,
            Some(&[0xff, 0x00, 0xfe]),
            Some(v.to_string().as_bytes()),
            0,
        )
        .expect("pipe");
        assert_eq!(d.dead_letters(), vec![]);
        let counts = d
            .key_value_store("term-counts", Serdes::string(), Serdes::u64())
            .unwrap();
        assert_eq!(counts.get(&"#rust".to_string()), Some(1));
    }

    #[test]
    fn plain_text_tweets_use_the_record_timestamp() {
        let d = driver();
        for (i, text) in ["#solo tweet", "#solo again"].iter().enumerate() {
            d.pipe_raw(INPUT_TOPIC, None, Some(text.as_bytes()), T0 + i as i64)
                .unwrap();
        }
        flush(&d, T0 + 600_000);
        let got = rankings(&d);
        assert_eq!(
            got.get("2026-11-21T10:00:00.000Z").map(String::as_str),
            Some(
                r##"{"window_start":"2026-11-21T10:00:00.000Z","window_end":"2026-11-21T10:01:00.000Z","ranking":[{"term":"#solo","count":2}]}"##
            )
        );
        let store = d.key_value_store(TERM_COUNTS, Serdes::string(), Serdes::u64()).unwrap();
        assert_eq!(store.get(&"tweet".to_string()), Some(1));
        assert_eq!(store.get(&"again".to_string()), Some(1));
    }

    #[test]
    fn created_at_formats_and_bad_tweets() {
        let s = Serde::new(TweetSerde);
        let t = s
            .deserialize(br#"{"id": 7, "user": "u", "text": "hi", "created_at": "2026-11-21T10:00:00.123456"}"#)
            .unwrap();
        assert_eq!(t.created_at.map(|c| c.timestamp_millis()), Some(T0 + 123));
        let t = s
            .deserialize(br#"{"text": "hi", "created_at": "2026-11-21T12:00:00+02:00"}"#)
            .unwrap();
        assert_eq!(t.created_at.map(|c| c.timestamp_millis()), Some(T0));
        let t = s.deserialize(br#"{"text": "hi", "created_at": null}"#).unwrap();
        assert_eq!(t.created_at, None);

        let d = driver();
        let bad: [&[u8]; 4] = [
            br##"{"id": 1, "text": "#x", "created_at": "yesterday"}"##,
            br#"{"id": 1, "user": "u"}"#,
            br##"  {"text": "#x""##,
            &[0xff],
        ];
        for v in bad {
            d.pipe_raw(INPUT_TOPIC, None, Some(v), T0).unwrap();
        }
        let errors: Vec<(i64, String)> = d.dead_letters().into_iter().map(|l| (l.offset, l.error)).collect();
        assert_eq!(
            errors,
            vec![
                (
                    0,
                    "value deserialization failed (tweet): invalid JSON tweet: field `created_at`: \"yesterday\" is not an ISO-8601 time at line 1 column 50"
                        .to_string()
                ),
                (
                    1,
                    "value deserialization failed (tweet): invalid JSON tweet: missing field `text` at line 1 column 22"
                        .to_string()
                ),
                (
                    2,
                    "value deserialization failed (tweet): invalid JSON tweet: EOF while parsing an object at line 1 column 15"
                        .to_string()
                ),
                (
                    3,
                    "value deserialization failed (tweet): not valid UTF-8 text: invalid utf-8 sequence of 1 bytes from index 0"
                        .to_string()
                ),
            ]
        );
        let store = d.key_value_store(TERM_COUNTS, Serdes::string(), Serdes::u64()).unwrap();
        assert!(store.all().is_empty());
    }

    #[test]
    fn add_to_top_orders_replaces_and_truncates() {
        let tc = |t: &str, c: u64| TermCount {
            term: t.into(),
            count: c,
        };
        let mut top = Vec::new();
        for i in 0..12u64 {
            top = add_to_top(top, tc(&format!("#t{i:02}"), i % 3));
        }
        top = add_to_top(top, tc("#t00", 0));
        let got: Vec<(String, u64)> = top.into_iter().map(|e| (e.term, e.count)).collect();
        let want: Vec<(String, u64)> = [
            ("#t02", 2),
            ("#t05", 2),
            ("#t08", 2),
            ("#t11", 2),
            ("#t01", 1),
            ("#t04", 1),
            ("#t07", 1),
            ("#t10", 1),
            ("#t00", 0),
            ("#t03", 0),
        ]
        .into_iter()
        .map(|(t, c)| (t.to_string(), c))
        .collect();
        assert_eq!(got, want);
    }
}
