//! The data generators of the five scenarios (SCENARIOS.md): the
//! "producer" scripts of the original systems, written as
//! [`Generator`]s that the daemon calls once per event slot.
//!
//! Every generator is seeded ([`SmallRng::seed_from_u64`]), so a seed gives
//! the same sequence of events; only the times come from the `now_ms` the
//! daemon passes in (each record's time is exactly `now_ms`). The
//! `*_spec()` functions register them with a fixed seed per scenario and
//! the default rate of that scenario.
//!
//! | scenario              | topics                       | default rate |
//! |-----------------------|------------------------------|--------------|
//! | `user-clicks`         | `user_clickstream`           | 1/s          |
//! | `emoji-stream`        | `emoji-events`               | 200/s        |
//! | `hashtag-trends`      | `twitter`                    | 50/s         |
//! | `clickstream-parquet` | `clicks`, `views`, `ratings` | 30/s         |
//! | `sms-delivery`        | `sms-messages`               | 10/s         |

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::daemon::{GeneratedRecord, Generator, GeneratorSpec};
use crate::scenarios::{clickstream_parquet, emoji_stream, hashtag_trends, sms_delivery, user_clicks};

/// Epoch ms as `2026-11-21T10:00:00.123Z` (RFC 3339, UTC, milliseconds).
/// A time outside chrono's range (about ±262,000 years; no wall clock is
/// there) is written as the epoch rather than failing the generator.
pub fn iso_millis(ms: i64) -> String {
    super::iso_millis(ms).unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

fn to_json<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs (strings and numbers; the floats are
    // finite by construction) cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// Ids that increase and stay unique across restarts of the daemon: the
/// first id is the wall-clock time of the first event in microseconds
/// (like Twitter's time-based ids), later ones count up from it, so a run
/// that makes fewer than a million ids per second never reaches the ids of
/// a later run. Such ids stay below 2^53, so JavaScript clients read them
/// exactly.
#[derive(Debug, Default)]
struct IdSequence {
    next: Option<u64>,
}

impl IdSequence {
    fn next(&mut self, now_ms: i64) -> u64 {
        let id = self
            .next
            .unwrap_or_else(|| u64::try_from(now_ms).unwrap_or(0).saturating_mul(1000).max(1));
        self.next = Some(id.saturating_add(1));
        id
    }
}

/// Samples ranks `0..n` with probability proportional to `1 / (rank + 1)^s`
/// (a Zipf distribution), by binary search in a precomputed cumulative
/// table.
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// `n` ranks (at least 1) with exponent `s`.
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    /// A rank, 0-based (0 is the most frequent).
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.gen::<f64>() * total;
        self.cumulative
            .partition_point(|c| *c <= x)
            .min(self.cumulative.len() - 1)
    }
}

/// Picks an item by integer weight.
fn weighted<'a, T>(rng: &mut impl Rng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total.max(1));
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    &items[items.len() - 1].0
}

fn alphanumeric(rng: &mut impl Rng, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

fn record(topic: &str, key: Option<String>, value: String) -> GeneratedRecord {
    GeneratedRecord {
        topic: topic.to_string(),
        key,
        value,
    }
}

// ---------------------------------------------------------------------------
// user-clicks
// ---------------------------------------------------------------------------

/// `user-clicks`: one line `User 17 clicked on /page3 at 1763719200.123` per
/// event to `user_clickstream`, no key; user 1–100 and page 1–10 uniformly,
/// as the original producer script (`random.randint`) did.
pub struct UserClicksGenerator {
    rng: SmallRng,
}

impl UserClicksGenerator {
    pub fn new(seed: u64) -> Self {
        UserClicksGenerator {
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

/// `now_ms` as seconds with three decimals, `1763719200.123`.
fn epoch_seconds(now_ms: i64) -> String {
    let ms = now_ms.max(0);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

impl Generator for UserClicksGenerator {
    fn next(&mut self, now_ms: i64, out: &mut Vec<GeneratedRecord>) {
        let user = self.rng.gen_range(1..=100u32);
        let page = self.rng.gen_range(1..=10u32);
        let line = format!("User {user} clicked on /page{page} at {}", epoch_seconds(now_ms));
        out.push(record(user_clicks::INPUT_TOPIC, None, line));
    }
}

/// The `user-clicks` generator: one click per second by default (the
/// contract's rate).
pub fn user_clicks_spec() -> GeneratorSpec {
    GeneratorSpec {
        default_rate: 1.0,
        topics: vec![user_clicks::INPUT_TOPIC.to_string()],
        make: Box::new(|| Box::new(UserClicksGenerator::new(0x05e4_c11c))),
    }
}

// ---------------------------------------------------------------------------
// emoji-stream
// ---------------------------------------------------------------------------

/// The emojis and their weights: a few dominate.
pub const EMOJIS: [(&str, u32); 8] = [
    ("🔥", 30),
    ("👍", 24),
    ("❤️", 20),
    ("😂", 14),
    ("😮", 4),
    ("😢", 3),
    ("🎉", 3),
    ("👏", 2),
];

/// How many viewers react (`u1` … `u5000`).
pub const EMOJI_USERS: u32 = 5000;
/// The chance that an event is a burst (a moment in the live event that
/// many viewers react to at once).
const EMOJI_BURST_PROBABILITY: f64 = 0.01;
/// A burst's size: this many identical reactions from different viewers.
const EMOJI_BURST_SIZE: std::ops::RangeInclusive<u32> = 5..=50;

#[derive(Serialize)]
struct EmojiJson<'a> {
    user_id: &'a str,
    emoji_type: &'a str,
    timestamp: &'a str,
}

/// `emoji-stream`: `{"user_id", "emoji_type", "timestamp"}` to
/// `emoji-events`, keyed by user. Most events are one reaction; about 1 % are
/// bursts of 5–50 identical reactions from different viewers.
pub struct EmojiGenerator {
    rng: SmallRng,
}

impl EmojiGenerator {
    pub fn new(seed: u64) -> Self {
        EmojiGenerator {
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Generator for EmojiGenerator {
    fn next(&mut self, now_ms: i64, out: &mut Vec<GeneratedRecord>) {
        let emoji = *weighted(&mut self.rng, &EMOJIS);
        let size = if self.rng.gen_bool(EMOJI_BURST_PROBABILITY) {
            self.rng.gen_range(EMOJI_BURST_SIZE)
        } else {
            1
        };
        let timestamp = iso_millis(now_ms);
        let mut users: Vec<u32> = Vec::with_capacity(size as usize);
        while users.len() < size as usize {
            let u = self.rng.gen_range(1..=EMOJI_USERS);
            if !users.contains(&u) {
                users.push(u);
            }
        }
        for u in users {
            let user_id = format!("u{u}");
            let value = to_json(&EmojiJson {
                user_id: &user_id,
                emoji_type: emoji,
                timestamp: &timestamp,
            });
            out.push(record(emoji_stream::INPUT_TOPIC, Some(user_id), value));
        }
    }
}

/// The `emoji-stream` generator: 200 events per second by default (plus the
/// extra reactions of bursts).
pub fn emoji_stream_spec() -> GeneratorSpec {
    GeneratorSpec {
        default_rate: 200.0,
        topics: vec![emoji_stream::INPUT_TOPIC.to_string()],
        make: Box::new(|| Box::new(EmojiGenerator::new(0xe301))),
    }
}

// ---------------------------------------------------------------------------
// hashtag-trends
// ---------------------------------------------------------------------------

/// The content words of tweets, most frequent first (sampled with Zipf,
/// s = 1), separated by whitespace.
pub const TWEET_WORDS: &str = "
    data code stream love time today new team release work build rust kafka great day people system week launch
    fast real python cloud learning open source latency events pipeline debugging coffee morning weekend music game
    tonight production deploy bug feature database query model training conference talk slides amazing excited
    tired happy waiting thanks everyone best first year city football match goal weather rain sunny pizza dinner
    movie series book reading crab compiler borrow checker async threads memory safety benchmark throughput
    partition consumer producer broker window aggregate dashboard metrics outage incident postmortem oncall pager
    holiday vacation beach mountains";

/// Function words mixed into tweets (uniformly, about one word in three),
/// as in real text; the topology drops them as stop words.
const FUNCTION_WORDS: [&str; 24] = [
    "the", "to", "and", "a", "is", "in", "of", "i", "for", "this", "it", "on", "my", "with", "just", "so", "at", "we",
    "are", "that", "you", "be", "not", "our",
];

/// The hashtags, most frequent first (sampled with Zipf, s = 1.1),
/// separated by whitespace.
pub const HASHTAGS: &str = "
    rust kafka ai streaming datascience python opensource devops cloud bigdata machinelearning javascript webdev
    coding 100daysofcode tech startup linux kubernetes docker security music football worldcup gaming photography
    travel foodie coffee mondaymotivation throwbackthursday weekend news climate science space books art fitness
    nature";

/// Adjectives and nouns from which user names (`quiet_otter42`) are made.
const NAME_ADJECTIVES: &[&str] = &[
    "quiet", "rapid", "lazy", "brave", "sunny", "rusty", "cosmic", "tiny", "grumpy", "clever", "noisy", "happy",
    "sleepy", "wild", "bold", "calm",
];
const NAME_NOUNS: &[&str] = &[
    "otter", "falcon", "panda", "crab", "coder", "dev", "fox", "owl", "tiger", "whale", "gecko", "lynx", "badger",
    "heron", "koala", "yak",
];
/// How many distinct users tweet (their activity is Zipf-distributed too).
const TWEET_USERS: usize = 2000;

fn user_name(rank: usize) -> String {
    let a = NAME_ADJECTIVES[rank % NAME_ADJECTIVES.len()];
    let n = NAME_NOUNS[(rank / NAME_ADJECTIVES.len()) % NAME_NOUNS.len()];
    let block = rank / (NAME_ADJECTIVES.len() * NAME_NOUNS.len());
    if block == 0 {
        format!("{a}_{n}")
    } else {
        format!("{a}_{n}{block}")
    }
}

#[derive(Serialize)]
struct TweetJson<'a> {
    id: u64,
    user: &'a str,
    text: &'a str,
    created_at: &'a str,
}

/// `hashtag-trends`: synthetic tweets `{"id", "user", "text", "created_at"}`
/// to `twitter`, keyed by user. Ids increase (time-based: the first is
/// the first event's time in microseconds); the text has 6–20 Zipf-distributed words and 0–3
/// Zipf-distributed hashtags, and sometimes a URL, a mention, a retweet
/// prefix, an emoji, capitals and punctuation, which the topology strips.
pub struct HashtagGenerator {
    rng: SmallRng,
    ids: IdSequence,
    words: Vec<&'static str>,
    word_ranks: Zipf,
    hashtags: Vec<&'static str>,
    hashtag_ranks: Zipf,
    users: Zipf,
}

impl HashtagGenerator {
    pub fn new(seed: u64) -> Self {
        HashtagGenerator {
            rng: SmallRng::seed_from_u64(seed),
            ids: IdSequence::default(),
            words: TWEET_WORDS.split_whitespace().collect(),
            word_ranks: Zipf::new(TWEET_WORDS.split_whitespace().count(), 1.0),
            hashtags: HASHTAGS.split_whitespace().collect(),
            hashtag_ranks: Zipf::new(HASHTAGS.split_whitespace().count(), 1.1),
            users: Zipf::new(TWEET_USERS, 0.9),
        }
    }

    fn text(&mut self) -> String {
        let rng = &mut self.rng;
        let n_words = rng.gen_range(6..=20);
        let mut tokens: Vec<String> = Vec::with_capacity(n_words + 6);
        for i in 0..n_words {
            let mut w = if rng.gen_bool(0.3) {
                FUNCTION_WORDS[rng.gen_range(0..FUNCTION_WORDS.len())]
            } else {
                self.words[self.word_ranks.sample(rng)]
            }
            .to_string();
            if i == 0 && rng.gen_bool(0.6) {
                capitalize(&mut w);
            } else if rng.gen_bool(0.02) {
                w = w.to_uppercase();
            }
            if i + 1 < n_words && rng.gen_bool(0.08) {
                w.push_str(weighted::<&str>(
                    rng,
                    &[(",", 5), ("!", 2), ("...", 1), (":", 1), ("?", 1)],
                ));
            }
            tokens.push(w);
        }
        if let Some(last) = tokens.last_mut() {
            last.push_str(weighted::<&str>(
                rng,
                &[("", 4), (".", 3), ("!", 2), ("!!", 1), ("?", 1)],
            ));
        }
        if rng.gen_bool(0.15) {
            let mention = format!("@{}", user_name(self.users.sample(rng)));
            let at = rng.gen_range(0..tokens.len());
            tokens.insert(at, mention);
        }
        if rng.gen_bool(0.12) {
            tokens.push(format!("https://t.co/{}", alphanumeric(rng, 10)));
        }
        let n_tags = *weighted(rng, &[(0usize, 30), (1, 35), (2, 25), (3, 10)]);
        // Distinct hashtags: a tweet rarely repeats one.
        let mut tags: Vec<&str> = Vec::with_capacity(n_tags);
        while tags.len() < n_tags {
            let t = self.hashtags[self.hashtag_ranks.sample(rng)];
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        for t in tags {
            let mut tag = format!("#{t}");
            if rng.gen_bool(0.2) {
                tag[1..2].make_ascii_uppercase();
            }
            if rng.gen_bool(0.6) {
                tokens.push(tag);
            } else {
                let at = rng.gen_range(0..=tokens.len());
                tokens.insert(at, tag);
            }
        }
        if rng.gen_bool(0.05) {
            tokens.push(weighted(rng, &[("🔥", 3), ("😂", 2), ("🚀", 2), ("🙌", 1)]).to_string());
        }
        if rng.gen_bool(0.05) {
            tokens.insert(0, format!("RT @{}:", user_name(self.users.sample(rng))));
        }
        tokens.join(" ")
    }
}

fn capitalize(w: &mut str) {
    if let Some(first) = w.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
}

impl Generator for HashtagGenerator {
    fn next(&mut self, now_ms: i64, out: &mut Vec<GeneratedRecord>) {
        let id = self.ids.next(now_ms);
        let user = user_name(self.users.sample(&mut self.rng));
        let text = self.text();
        let created_at = iso_millis(now_ms);
        let value = to_json(&TweetJson {
            id,
            user: &user,
            text: &text,
            created_at: &created_at,
        });
        out.push(record(hashtag_trends::INPUT_TOPIC, Some(user), value));
    }
}

/// The `hashtag-trends` generator: 50 tweets per second by default.
pub fn hashtag_trends_spec() -> GeneratorSpec {
    GeneratorSpec {
        default_rate: 50.0,
        topics: vec![hashtag_trends::INPUT_TOPIC.to_string()],
        make: Box::new(|| Box::new(HashtagGenerator::new(0x7a67))),
    }
}

// ---------------------------------------------------------------------------
// clickstream-parquet
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct ClickJson<'a> {
    event_type: &'a str,
    user_id: u32,
    item_id: u32,
    timestamp: &'a str,
    page_url: &'a str,
    click_duration: f64,
}

#[derive(Serialize)]
struct ViewJson<'a> {
    event_type: &'a str,
    user_id: u32,
    item_id: u32,
    timestamp: &'a str,
    view_duration: f64,
    device_type: &'a str,
}

#[derive(Serialize)]
struct RatingJson<'a> {
    event_type: &'a str,
    user_id: u32,
    item_id: u32,
    timestamp: &'a str,
    rating: u8,
    review_text: &'a str,
}

/// The contract's ranges (and the validation stage's defaults).
pub const CLICKSTREAM_USERS: u32 = 1000;
pub const CLICKSTREAM_ITEMS: u32 = 500;
/// How many recent views clicks and ratings refer back to.
const RECENT_VIEWS: usize = 200;

const REVIEWS: [&[&str]; 5] = [
    &[
        "Broke after two days.",
        "Not as described, returning it.",
        "Terrible quality.",
        "Waste of money.",
    ],
    &[
        "Disappointing.",
        "Cheap materials.",
        "Arrived late and scratched.",
        "Would not buy again.",
    ],
    &[
        "It's okay.",
        "Does the job, nothing special.",
        "Average for the price.",
        "Mixed feelings.",
    ],
    &[
        "Good value.",
        "Works well, shipping was slow.",
        "Pretty happy with it.",
        "Nice, would recommend.",
    ],
    &[
        "Love it!",
        "Excellent quality, five stars.",
        "Exactly what I needed.",
        "Best purchase this year!",
    ],
];

/// `clickstream-parquet`: one record per event, 60 % views (`views`), 30 %
/// clicks (`clicks`), 10 % ratings (`ratings`), keyed by `user_id`, with
/// exactly the contract's fields. Users and items are Zipf-distributed
/// (some are much more active or popular); clicks and ratings mostly refer
/// to a (user, item) pair viewed recently, as a session would.
pub struct ClickstreamGenerator {
    rng: SmallRng,
    users: Zipf,
    items: Zipf,
    /// Ranks are shuffled into ids, so the busiest user is not always 1.
    user_ids: Vec<u32>,
    item_ids: Vec<u32>,
    recent: Vec<(u32, u32)>,
    recent_next: usize,
}

impl ClickstreamGenerator {
    pub fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let user_ids = shuffled(&mut rng, CLICKSTREAM_USERS);
        let item_ids = shuffled(&mut rng, CLICKSTREAM_ITEMS);
        ClickstreamGenerator {
            rng,
            users: Zipf::new(CLICKSTREAM_USERS as usize, 0.7),
            items: Zipf::new(CLICKSTREAM_ITEMS as usize, 0.8),
            user_ids,
            item_ids,
            recent: Vec::with_capacity(RECENT_VIEWS),
            recent_next: 0,
        }
    }

    fn fresh_pair(&mut self) -> (u32, u32) {
        let u = self.user_ids[self.users.sample(&mut self.rng)];
        let i = self.item_ids[self.items.sample(&mut self.rng)];
        (u, i)
    }

    /// A recently viewed pair with probability `p` (if there is one), else
    /// a fresh one.
    fn pair(&mut self, p: f64) -> (u32, u32) {
        if !self.recent.is_empty() && self.rng.gen_bool(p) {
            self.recent[self.rng.gen_range(0..self.recent.len())]
        } else {
            self.fresh_pair()
        }
    }

    fn remember(&mut self, pair: (u32, u32)) {
        if self.recent.len() < RECENT_VIEWS {
            self.recent.push(pair);
        } else {
            self.recent[self.recent_next] = pair;
            self.recent_next = (self.recent_next + 1) % RECENT_VIEWS;
        }
    }
}

/// `1..=n` in random order.
fn shuffled(rng: &mut impl Rng, n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (1..=n).collect();
    rand::seq::SliceRandom::shuffle(v.as_mut_slice(), rng);
    v
}

/// A standard normal deviate (Box–Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

impl Generator for ClickstreamGenerator {
    fn next(&mut self, now_ms: i64, out: &mut Vec<GeneratedRecord>) {
        let timestamp = iso_millis(now_ms);
        let kind = self.rng.gen_range(0..10u32);
        let (topic, user_id, value) = if kind < 6 {
            let (user_id, item_id) = self.fresh_pair();
            self.remember((user_id, item_id));
            // Log-normal: median about 20 s, a long tail, 1 s – 10 min.
            let view_duration = round_to((3.0 + 1.0 * normal(&mut self.rng)).exp().clamp(1.0, 600.0), 2);
            let device_type = *weighted(&mut self.rng, &[("mobile", 55), ("desktop", 35), ("tablet", 10)]);
            let v = to_json(&ViewJson {
                event_type: "view",
                user_id,
                item_id,
                timestamp: &timestamp,
                view_duration,
                device_type,
            });
            (clickstream_parquet::VIEWS_TOPIC, user_id, v)
        } else if kind < 9 {
            let (user_id, item_id) = self.pair(0.7);
            let page_url = match *weighted(&mut self.rng, &[(0, 6), (1, 2), (2, 1), (3, 1)]) {
                0 => format!("/products/{item_id}"),
                1 => format!("/products/{item_id}?ref=search"),
                2 => format!("/products/{item_id}?ref=recommended"),
                _ => format!("/cart/add?item={item_id}"),
            };
            // Exponential, mean 2 s, at least 50 ms.
            let click_duration = round_to((-2.0 * (1.0 - self.rng.gen::<f64>()).ln()).clamp(0.05, 30.0), 3);
            let v = to_json(&ClickJson {
                event_type: "click",
                user_id,
                item_id,
                timestamp: &timestamp,
                page_url: &page_url,
                click_duration,
            });
            (clickstream_parquet::CLICKS_TOPIC, user_id, v)
        } else {
            let (user_id, item_id) = self.pair(0.8);
            // J-shaped, as real product ratings are.
            let rating = *weighted(&mut self.rng, &[(1u8, 8), (2, 6), (3, 12), (4, 30), (5, 44)]);
            let review_text = if self.rng.gen_bool(0.3) {
                ""
            } else {
                let texts = REVIEWS[usize::from(rating - 1)];
                texts[self.rng.gen_range(0..texts.len())]
            };
            let v = to_json(&RatingJson {
                event_type: "rating",
                user_id,
                item_id,
                timestamp: &timestamp,
                rating,
                review_text,
            });
            (clickstream_parquet::RATINGS_TOPIC, user_id, v)
        };
        out.push(record(topic, Some(user_id.to_string()), value));
    }
}

/// The `clickstream-parquet` generator: 30 events per second by default.
pub fn clickstream_parquet_spec() -> GeneratorSpec {
    GeneratorSpec {
        default_rate: 30.0,
        topics: vec![
            clickstream_parquet::CLICKS_TOPIC.to_string(),
            clickstream_parquet::VIEWS_TOPIC.to_string(),
            clickstream_parquet::RATINGS_TOPIC.to_string(),
        ],
        make: Box::new(|| Box::new(ClickstreamGenerator::new(0xc11c))),
    }
}

// ---------------------------------------------------------------------------
// sms-delivery
// ---------------------------------------------------------------------------

/// The length of every generated SMS text, in characters (all ASCII, so
/// also in bytes).
pub const SMS_CONTENT_LEN: usize = 100;

/// US area codes the numbers are drawn from.
const AREA_CODES: [u16; 20] = [
    201, 202, 206, 212, 213, 303, 305, 312, 404, 415, 503, 512, 602, 617, 646, 702, 718, 773, 808, 917,
];
const BRANDS: [&str; 6] = ["Acme", "Northwind", "Globex", "Initech", "Umbrella", "Contoso"];
const FIRST_NAMES: [&str; 8] = ["Alex", "Sam", "Maria", "Chen", "Priya", "Jonas", "Fatima", "Lee"];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const SMS_FILLERS: [&str; 5] = [
    "Reply STOP to opt out.",
    "Msg&data rates may apply.",
    "Thank you!",
    "Have a great day.",
    "Questions? Reply HELP.",
];

#[derive(Serialize)]
#[serde(untagged)]
enum SmsId {
    Int(u64),
    Text(String),
}

#[derive(Serialize)]
struct SmsJson<'a> {
    id: SmsId,
    number: &'a str,
    content: &'a str,
}

/// A phone number in E.164 form, `+1` + area code + `55501XX`: the
/// 555-0100 – 555-0199 block is reserved for fiction, so no real phone is
/// ever "texted".
pub fn phone_number(rng: &mut impl Rng) -> String {
    let area = AREA_CODES[rng.gen_range(0..AREA_CODES.len())];
    format!("+1{area}55501{:02}", rng.gen_range(0..100u32))
}

/// A plausible SMS text of exactly [`SMS_CONTENT_LEN`] ASCII characters: a
/// message from a template, optional boilerplate sentences, and a
/// reference code filling it up to the length.
pub fn sms_content(rng: &mut impl Rng) -> String {
    /// The shortest tail: " Ref:" and three characters.
    const MIN_TAIL: usize = 8;
    let brand = BRANDS[rng.gen_range(0..BRANDS.len())];
    let name = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
    let day = DAYS[rng.gen_range(0..DAYS.len())];
    let mut text = match rng.gen_range(0..6u32) {
        0 => format!(
            "{brand}: your verification code is {:06}. It expires in {} minutes.",
            rng.gen_range(0..1_000_000u32),
            rng.gen_range(5..=15u32)
        ),
        1 => format!(
            "Hi {name}, your order #{} has shipped and arrives {day}.",
            rng.gen_range(100_000..1_000_000u32)
        ),
        2 => format!(
            "{brand}: appointment confirmed for {day} at {}:{:02}. Reply C to cancel.",
            rng.gen_range(8..=17u32),
            15 * rng.gen_range(0..4u32)
        ),
        3 => format!(
            "Alert: ${}.{:02} charged to your card ending {:04}. Not you? Call us.",
            rng.gen_range(1..2000u32),
            rng.gen_range(0..100u32),
            rng.gen_range(0..10_000u32)
        ),
        4 => format!(
            "Reminder: your {brand} bill of ${}.{:02} is due {day}.",
            rng.gen_range(10..500u32),
            rng.gen_range(0..100u32)
        ),
        _ => format!(
            "{name}, your table for {} at {brand} is ready. Please see the host.",
            rng.gen_range(2..=8u32)
        ),
    };
    // Every template is far shorter than the length, but keep the
    // guarantee local: cut a long one so that the tail always fits.
    text.truncate(SMS_CONTENT_LEN - MIN_TAIL);
    let start = rng.gen_range(0..SMS_FILLERS.len());
    for k in 0..SMS_FILLERS.len() {
        let f = SMS_FILLERS[(start + k) % SMS_FILLERS.len()];
        if rng.gen_bool(0.6) && text.len() + 1 + f.len() + MIN_TAIL <= SMS_CONTENT_LEN {
            text.push(' ');
            text.push_str(f);
        }
    }
    text.push_str(" Ref:");
    let rest = SMS_CONTENT_LEN - text.len();
    text.push_str(&alphanumeric(rng, rest));
    text
}

/// One `sms-messages` record for message `id`: the key is the id in
/// decimal (so messages spread evenly over the partitions, i.e. the
/// senders), the value `{"id": 17, "number": "+12125550142", "content":
/// "<100 characters>"}`. The id is a JSON integer; one above `i64::MAX`
/// (which the topology's integer ids cannot hold) is written as its
/// decimal string, which the senders treat as the same message.
pub fn sms_message(rng: &mut impl Rng, id: u64) -> (Option<String>, String) {
    let number = phone_number(rng);
    let content = sms_content(rng);
    let json_id = if i64::try_from(id).is_ok() {
        SmsId::Int(id)
    } else {
        SmsId::Text(id.to_string())
    };
    let value = to_json(&SmsJson {
        id: json_id,
        number: &number,
        content: &content,
    });
    (Some(id.to_string()), value)
}

/// `sms-delivery`: one message per event to `sms-messages` (see
/// [`sms_message`]); ids increase and are unique across restarts (the
/// first is the first event's time in microseconds).
pub struct SmsGenerator {
    rng: SmallRng,
    ids: IdSequence,
}

impl SmsGenerator {
    pub fn new(seed: u64) -> Self {
        SmsGenerator {
            rng: SmallRng::seed_from_u64(seed),
            ids: IdSequence::default(),
        }
    }
}

impl Generator for SmsGenerator {
    fn next(&mut self, now_ms: i64, out: &mut Vec<GeneratedRecord>) {
        let id = self.ids.next(now_ms);
        let (key, value) = sms_message(&mut self.rng, id);
        out.push(record(sms_delivery::INPUT_TOPIC, key, value));
    }
}

/// The `sms-delivery` generator: 10 messages per second by default.
pub fn sms_delivery_spec() -> GeneratorSpec {
    GeneratorSpec {
        default_rate: 10.0,
        topics: vec![sms_delivery::INPUT_TOPIC.to_string()],
        make: Box::new(|| Box::new(SmsGenerator::new(0x5a5))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use super::*;
    use crate::prelude::*;
    use crate::testing::{TestDriverConfig, TopologyTestDriver};

    /// 2026-11-21T10:00:00.000Z, a multiple of every window size here.
    const T0: i64 = 1_795_255_200_000;

    /// `events` events of `g`, the i-th at `T0 + i * step_ms`, with the
    /// time each record was generated at.
    fn generate(g: &mut dyn Generator, events: usize, step_ms: i64) -> Vec<(i64, GeneratedRecord)> {
        let mut all = Vec::new();
        let mut out = Vec::new();
        for i in 0..events {
            let now = T0 + i as i64 * step_ms;
            g.next(now, &mut out);
            assert!(!out.is_empty(), "every event has a record");
            all.extend(out.drain(..).map(|r| (now, r)));
        }
        all
    }

    fn pipe(d: &TopologyTestDriver, now: i64, r: &GeneratedRecord) {
        d.pipe_raw(
            &r.topic,
            r.key.as_deref().map(str::as_bytes),
            Some(r.value.as_bytes()),
            now,
        )
        .expect("pipe");
    }

    fn json(r: &GeneratedRecord) -> serde_json::Value {
        serde_json::from_str(&r.value).expect("the value is JSON")
    }

    fn rfc3339_ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("RFC 3339")
            .timestamp_millis()
    }

    fn driver(t: Topology, name: &str) -> TopologyTestDriver {
        TopologyTestDriver::new(t, TestDriverConfig::with_application_id(name)).expect("driver starts")
    }

    #[test]
    fn specs_name_the_contract_topics_and_rates() {
        let specs = [
            (user_clicks_spec(), vec!["user_clickstream"], 1.0),
            (emoji_stream_spec(), vec!["emoji-events"], 200.0),
            (hashtag_trends_spec(), vec!["twitter"], 50.0),
            (clickstream_parquet_spec(), vec!["clicks", "views", "ratings"], 30.0),
            (sms_delivery_spec(), vec!["sms-messages"], 10.0),
        ];
        for (spec, topics, rate) in specs {
            assert_eq!(spec.topics, topics);
            assert_eq!(spec.default_rate, rate);
            let mut g = (spec.make)();
            let mut out = Vec::new();
            for _ in 0..50 {
                g.next(T0, &mut out);
            }
            assert!(out.len() >= 50);
            assert!(out.iter().all(|r| topics.contains(&r.topic.as_str())), "{topics:?}");
        }
    }

    #[test]
    fn generators_are_deterministic_per_seed() {
        let run = |seed: u64| {
            let mut gens: Vec<Box<dyn Generator>> = vec![
                Box::new(UserClicksGenerator::new(seed)),
                Box::new(EmojiGenerator::new(seed)),
                Box::new(HashtagGenerator::new(seed)),
                Box::new(ClickstreamGenerator::new(seed)),
                Box::new(SmsGenerator::new(seed)),
            ];
            let mut out = Vec::new();
            for g in &mut gens {
                for i in 0..200 {
                    g.next(T0 + i, &mut out);
                }
            }
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn user_clicks_lines_are_exact_and_all_counted() {
        const N: usize = 3000;
        let mut g = UserClicksGenerator::new(1);
        let recs = generate(&mut g, N, 1000);
        assert_eq!(recs.len(), N);
        let mut users = HashSet::new();
        let mut pages = HashSet::new();
        for (now, r) in &recs {
            assert_eq!(r.topic, "user_clickstream");
            assert_eq!(r.key, None);
            let c = user_clicks::parse_click(&r.value, 100).expect("parses");
            users.insert(c.user_id);
            pages.insert(c.page.to_string());
            assert!(
                r.value.ends_with(&format!(" at {}.{:03}", now / 1000, now % 1000)),
                "{}",
                r.value
            );
        }
        assert_eq!(users.len(), 100, "every user 1–100 appears");
        assert_eq!(pages, (1..=10).map(|p| format!("/page{p}")).collect::<HashSet<_>>());
        let mut out = Vec::new();
        UserClicksGenerator::new(9).next(T0 + 123, &mut out);
        assert!(out[0].value.ends_with(" at 1795255200.123"), "{}", out[0].value);
        UserClicksGenerator::new(9).next(T0 + 5, &mut out);
        assert!(out[1].value.ends_with(" at 1795255200.005"), "{}", out[1].value);

        let d = driver(
            user_clicks::topology(&user_clicks::Params::default()).unwrap(),
            user_clicks::NAME,
        );
        for (now, r) in &recs {
            pipe(&d, *now, r);
        }
        assert!(d.dead_letters().is_empty());
        assert_eq!(d.topic_records(user_clicks::OUTPUT_TOPIC).len(), N);
        let store = d
            .key_value_store(user_clicks::STORE, Serdes::u32(), Serdes::u64())
            .unwrap();
        let counts = store.all();
        assert_eq!(counts.len(), 100);
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), N as u64);
    }

    #[test]
    fn emoji_events_are_skewed_bursty_and_all_counted() {
        const N: usize = 10_000;
        let mut g = EmojiGenerator::new(2);
        // 200 events per second.
        let recs = generate(&mut g, N, 5);
        assert!(recs.len() > N, "bursts add reactions: {}", recs.len());
        let mut by_emoji: HashMap<String, u64> = HashMap::new();
        let mut users = HashSet::new();
        for (now, r) in &recs {
            assert_eq!(r.topic, "emoji-events");
            let e: emoji_stream::EmojiEvent = serde_json::from_str(&r.value).expect("an EmojiEvent");
            assert_eq!(r.key.as_deref(), Some(e.user_id.as_str()));
            let n: u32 = e.user_id.strip_prefix('u').and_then(|n| n.parse().ok()).expect("u<n>");
            assert!((1..=EMOJI_USERS).contains(&n));
            users.insert(n);
            assert_eq!(e.timestamp.timestamp_millis(), *now);
            let v = json(r);
            let ts = v["timestamp"].as_str().unwrap();
            assert_eq!(ts.len(), "2026-11-21T10:00:00.000Z".len(), "{ts}");
            assert!(ts.ends_with('Z'));
            assert_eq!(rfc3339_ms(ts), *now);
            assert_eq!(v.as_object().unwrap().len(), 3);
            *by_emoji.entry(e.emoji_type).or_default() += 1;
        }
        assert!(users.len() > 4000, "many users: {}", users.len());
        assert_eq!(by_emoji.len(), EMOJIS.len());
        let max = by_emoji.values().max().copied().unwrap();
        let min = by_emoji.values().min().copied().unwrap();
        assert!(max > 3 * min, "skewed: {by_emoji:?}");
        assert!(by_emoji["🔥"] > by_emoji["😮"] * 3, "{by_emoji:?}");

        // Bursts: several identical reactions at one time from distinct users.
        let mut slots: BTreeMap<i64, Vec<&GeneratedRecord>> = BTreeMap::new();
        for (now, r) in &recs {
            slots.entry(*now).or_default().push(r);
        }
        let bursts: Vec<_> = slots.values().filter(|rs| rs.len() > 1).collect();
        assert!((50..=150).contains(&bursts.len()), "about 1 % bursts: {}", bursts.len());
        for b in bursts {
            assert!((5..=50).contains(&b.len()));
            let emojis: HashSet<_> = b.iter().map(|r| json(r)["emoji_type"].to_string()).collect();
            assert_eq!(emojis.len(), 1, "a burst is one emoji");
            let keys: HashSet<_> = b.iter().map(|r| r.key.clone()).collect();
            assert_eq!(keys.len(), b.len(), "a burst comes from different users");
        }

        // Through the topology: the closed windows count every reaction.
        let d = driver(
            emoji_stream::topology(&emoji_stream::Params::default()).unwrap(),
            emoji_stream::NAME,
        );
        for (now, r) in &recs {
            pipe(&d, *now, r);
        }
        let last = recs.last().unwrap().0;
        // One more reaction 10 s later closes every window of the above.
        d.pipe_raw(
            emoji_stream::INPUT_TOPIC,
            Some(b"u0"),
            Some(
                format!(
                    r#"{{"user_id": "u0", "emoji_type": "🏁", "timestamp": "{}"}}"#,
                    iso_millis(last + 10_000)
                )
                .as_bytes(),
            ),
            last + 10_000,
        )
        .unwrap();
        assert!(d.dead_letters().is_empty());
        assert_eq!(d.late_records_dropped(), 0);
        let aggs = d
            .output_topic(
                emoji_stream::OUTPUT_TOPIC,
                Serdes::string(),
                Serdes::json::<emoji_stream::EmojiAggregate>(),
            )
            .read_values();
        // 10,000 events at 5 ms: 50 s, 25 windows of 2 s.
        let windows: HashSet<_> = aggs.iter().map(|a| a.window_start.clone()).collect();
        assert_eq!(windows.len(), 25);
        let mut counted: HashMap<String, u64> = HashMap::new();
        for a in &aggs {
            assert_eq!(a.scaled, a.count.div_ceil(1000));
            *counted.entry(a.emoji_type.clone()).or_default() += a.count;
        }
        assert_eq!(counted, by_emoji);
        assert_eq!(counted.values().sum::<u64>(), recs.len() as u64);
    }

    #[test]
    fn zipf_sampler_follows_its_law() {
        let z = Zipf::new(10, 1.0);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // P(rank k) ∝ 1/k: rank 1 is about 10 times rank 10, 2 times rank 2.
        let r10 = f64::from(counts[0]) / f64::from(counts[9]);
        let r2 = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((8.5..11.5).contains(&r10), "{counts:?}");
        assert!((1.85..2.15).contains(&r2), "{counts:?}");
        assert_eq!(Zipf::new(1, 1.0).sample(&mut rng), 0);
    }

    #[test]
    fn tweet_vocabularies_are_distinct_plain_words() {
        for list in [TWEET_WORDS, HASHTAGS] {
            let words: Vec<&str> = list.split_whitespace().collect();
            let distinct: HashSet<&str> = words.iter().copied().collect();
            assert_eq!(distinct.len(), words.len(), "no duplicates");
            for w in words {
                assert!(w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{w}");
                // Content words and hashtags survive the topology's splitting.
                assert_eq!(hashtag_trends::terms(w), vec![w.to_string()]);
                assert_eq!(hashtag_trends::terms(&format!("#{w}")), vec![format!("#{w}")]);
            }
        }
        for w in FUNCTION_WORDS {
            assert!(hashtag_trends::terms(w).is_empty(), "{w} is a stop word");
        }
    }

    #[test]
    fn tweets_are_zipfian_and_ranked() {
        const N: usize = 10_000;
        let mut g = HashtagGenerator::new(4);
        // 50 tweets per second would take 200 s; put them in one 60 s
        // window instead (6 ms apart) so one ranking covers them all.
        let recs = generate(&mut g, N, 6);
        assert_eq!(recs.len(), N);
        let vocabulary: HashSet<String> = HASHTAGS.split_whitespace().map(|h| format!("#{h}")).collect();
        let mut tags: HashMap<String, u64> = HashMap::new();
        let mut tags_per_tweet = [0u32; 4];
        let (mut urls, mut punctuated) = (0, 0);
        let mut prev_id = 0;
        for (now, r) in &recs {
            assert_eq!(r.topic, "twitter");
            let v = json(r);
            let o = v.as_object().unwrap();
            assert_eq!(o.keys().collect::<Vec<_>>(), vec!["created_at", "id", "text", "user"]);
            let id = v["id"].as_u64().expect("integer id");
            assert!(id > prev_id, "ids increase");
            prev_id = id;
            assert_eq!(r.key.as_deref(), v["user"].as_str());
            assert_eq!(rfc3339_ms(v["created_at"].as_str().unwrap()), *now);
            let text = v["text"].as_str().unwrap();
            urls += usize::from(text.contains("https://t.co/"));
            punctuated += usize::from(text.contains([',', '!', '?', '.']));
            // 6–20 words, plus up to 3 hashtags, a mention, a URL, an emoji
            // and a retweet prefix.
            let n = text.split(' ').count();
            assert!((6..=29).contains(&n), "{text}");
            let terms = hashtag_trends::terms(text);
            let hashtags: Vec<_> = terms.iter().filter(|t| t.starts_with('#')).collect();
            assert!(hashtags.len() <= 3, "{text}");
            tags_per_tweet[hashtags.len()] += 1;
            for t in hashtags {
                assert!(vocabulary.contains(t), "{t} from {text}");
                *tags.entry(t.clone()).or_default() += 1;
            }
            assert!(
                terms.iter().all(|t| !t.contains("http") && !t.contains("co/")),
                "URLs are stripped: {terms:?}"
            );
        }
        assert_eq!(prev_id, (T0 as u64) * 1000 + N as u64 - 1, "time-based ids count up");
        assert!((800..=1600).contains(&urls), "about 12 % with a URL: {urls}");
        assert!(punctuated > N / 2, "{punctuated}");
        assert!(
            tags_per_tweet.iter().all(|n| *n > 500),
            "0–3 hashtags: {tags_per_tweet:?}"
        );
        let mut ranked: Vec<u64> = tags.values().copied().collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        assert!(ranked[0] > 4 * ranked[9], "Zipf: {ranked:?}");
        let top = tags.iter().max_by_key(|(_, n)| **n).unwrap();
        assert_eq!(top.0, "#rust");

        let d = driver(
            hashtag_trends::topology(&hashtag_trends::Params::default()).unwrap(),
            hashtag_trends::NAME,
        );
        for (now, r) in &recs {
            pipe(&d, *now, r);
        }
        // Close every window: tweets 10 and 20 minutes later.
        for at in [T0 + 600_000, T0 + 1_200_000] {
            d.pipe_raw(hashtag_trends::INPUT_TOPIC, None, Some(b"#flush"), at)
                .unwrap();
        }
        assert!(d.dead_letters().is_empty());
        assert_eq!(d.late_records_dropped(), 0);
        let rankings = d
            .output_topic(
                hashtag_trends::OUTPUT_TOPIC,
                Serdes::string(),
                Serdes::json::<hashtag_trends::Ranking>(),
            )
            .read_values();
        assert!(!rankings.is_empty());
        // The window [T0, T0 + 60 s) holds every generated tweet.
        let full = rankings
            .iter()
            .find(|r| r.window_start == "2026-11-21T10:00:00.000Z")
            .expect("the window of all tweets is ranked");
        assert_eq!(full.ranking.len(), hashtag_trends::TOP_N);
        let mut want: Vec<(String, u64)> = tags.into_iter().collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        want.truncate(hashtag_trends::TOP_N);
        let got: Vec<(String, u64)> = full.ranking.iter().map(|t| (t.term.clone(), t.count)).collect();
        assert_eq!(got, want);
        assert!(got.iter().all(|(t, _)| vocabulary.contains(t)));
    }

    #[test]
    fn clickstream_records_pass_validation() {
        const N: usize = 6000;
        let mut g = ClickstreamGenerator::new(5);
        let recs = generate(&mut g, N, 33);
        assert_eq!(recs.len(), N);
        let mut per_topic: HashMap<&str, usize> = HashMap::new();
        let mut users: HashMap<u64, u64> = HashMap::new();
        let mut items: HashMap<u64, u64> = HashMap::new();
        let mut devices: HashMap<String, u64> = HashMap::new();
        let mut ratings = [0u64; 6];
        for (now, r) in &recs {
            let v = json(r);
            let o = v.as_object().unwrap();
            let mut fields: Vec<&str> = o.keys().map(String::as_str).collect();
            fields.sort_unstable();
            let (event_type, mut want) = match r.topic.as_str() {
                "clicks" => ("click", vec!["click_duration", "page_url"]),
                "views" => ("view", vec!["device_type", "view_duration"]),
                "ratings" => ("rating", vec!["rating", "review_text"]),
                other => panic!("topic {other}"),
            };
            want.extend(["event_type", "item_id", "timestamp", "user_id"]);
            want.sort_unstable();
            assert_eq!(fields, want, "exactly the contract's fields");
            assert_eq!(v["event_type"], event_type);
            *per_topic.entry(event_type).or_default() += 1;
            let user = v["user_id"].as_u64().expect("integer user_id");
            let item = v["item_id"].as_u64().expect("integer item_id");
            assert!((1..=1000).contains(&user) && (1..=500).contains(&item), "{v}");
            assert_eq!(r.key, Some(user.to_string()));
            *users.entry(user).or_default() += 1;
            *items.entry(item).or_default() += 1;
            assert_eq!(rfc3339_ms(v["timestamp"].as_str().unwrap()), *now);
            match event_type {
                "click" => {
                    assert!(v["click_duration"].as_f64().unwrap() >= 0.05);
                    assert!(v["page_url"].as_str().unwrap().contains(&item.to_string()));
                }
                "view" => {
                    assert!((1.0..=600.0).contains(&v["view_duration"].as_f64().unwrap()));
                    *devices
                        .entry(v["device_type"].as_str().unwrap().to_string())
                        .or_default() += 1;
                }
                _ => ratings[v["rating"].as_u64().unwrap() as usize] += 1,
            }
        }
        let share = |t: &str| per_topic[t] as f64 / N as f64;
        assert!((0.57..0.63).contains(&share("view")), "{per_topic:?}");
        assert!((0.27..0.33).contains(&share("click")), "{per_topic:?}");
        assert!((0.08..0.12).contains(&share("rating")), "{per_topic:?}");
        assert_eq!(devices.len(), 3);
        assert!(devices["mobile"] > devices["tablet"] * 3, "{devices:?}");
        assert!(
            ratings[1..].iter().all(|n| *n > 0) && ratings[5] > ratings[1] * 3,
            "{ratings:?}"
        );
        // Popular items: the most viewed item is far above the median one.
        let mut item_counts: Vec<u64> = items.values().copied().collect();
        item_counts.sort_unstable_by(|a, b| b.cmp(a));
        assert!(
            item_counts[0] > 10 * item_counts[item_counts.len() / 2],
            "{item_counts:?}"
        );
        assert!(users.len() > 500, "{}", users.len());

        // Through the validation stage: every record becomes a row.
        let mut b = StreamsBuilder::new();
        let (clicks, views, ratings_s) = clickstream_parquet::rows(&mut b, &clickstream_parquet::Params::default());
        clicks.to("rows-clicks", Serdes::unit(), Serdes::json());
        views.to("rows-views", Serdes::unit(), Serdes::json());
        ratings_s.to("rows-ratings", Serdes::unit(), Serdes::json());
        let d = driver(b.build().unwrap(), clickstream_parquet::NAME);
        for (now, r) in &recs {
            pipe(&d, *now, r);
        }
        assert!(d.dead_letters().is_empty());
        let rows = d
            .output_topic(
                "rows-clicks",
                Serdes::unit(),
                Serdes::json::<clickstream_parquet::ClickRow>(),
            )
            .read_records();
        assert_eq!(rows.len(), per_topic["click"]);
        assert!(rows.iter().all(|r| r.value.timestamp_ms == r.timestamp));
        let rows = d
            .output_topic(
                "rows-views",
                Serdes::unit(),
                Serdes::json::<clickstream_parquet::ViewRow>(),
            )
            .read_records();
        assert_eq!(rows.len(), per_topic["view"]);
        assert!(rows.iter().all(|r| r.value.timestamp_ms == r.timestamp));
        let rows = d
            .output_topic(
                "rows-ratings",
                Serdes::unit(),
                Serdes::json::<clickstream_parquet::RatingRow>(),
            )
            .read_records();
        assert_eq!(rows.len(), per_topic["rating"]);
        // Ratings are keyed by user (the topology ignores the key).
        let inputs = d.topic_records(clickstream_parquet::RATINGS_TOPIC);
        assert_eq!(inputs.len(), rows.len());
        for (input, row) in inputs.iter().zip(&rows) {
            assert_eq!(input.key.as_deref(), Some(row.value.user_id.to_string().as_bytes()));
        }
        // And the registered topology accepts them too.
        let d = driver(
            clickstream_parquet::topology(&clickstream_parquet::Params::default()).unwrap(),
            clickstream_parquet::NAME,
        );
        for (now, r) in &recs {
            pipe(&d, *now, r);
        }
        assert!(d.dead_letters().is_empty());
    }

    #[test]
    fn sms_messages_are_well_formed_and_all_sent() {
        const N: usize = 3000;
        let mut g = SmsGenerator::new(6);
        let recs = generate(&mut g, N, 100);
        assert_eq!(recs.len(), N);
        let mut ids = HashSet::new();
        let mut numbers = HashSet::new();
        for (_, r) in &recs {
            assert_eq!(r.topic, "sms-messages");
            let m: sms_delivery::SmsMessage = serde_json::from_str(&r.value).expect("an SmsMessage");
            let sms_delivery::MessageId::Int(id) = m.id else {
                panic!("integer id: {}", r.value)
            };
            assert_eq!(r.key, Some(id.to_string()));
            assert!(ids.insert(id), "ids are unique");
            assert_eq!(m.content.chars().count(), SMS_CONTENT_LEN, "{:?}", m.content);
            assert_eq!(m.content.len(), SMS_CONTENT_LEN);
            assert!(m.content.is_ascii());
            let digits = m.number.strip_prefix("+1").expect("E.164, +1");
            assert!(
                digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()),
                "{}",
                m.number
            );
            assert_eq!(&digits[3..8], "55501", "{}", m.number);
            numbers.insert(m.number);
            assert_eq!(json(r).as_object().unwrap().len(), 3);
        }
        assert!(numbers.len() > 1000, "{}", numbers.len());
        let first = (T0 as u64 * 1000) as i64;
        assert_eq!(ids.iter().min(), Some(&first));
        assert_eq!(ids.iter().max(), Some(&(first + N as i64 - 1)));

        // The reusable function: the id goes through as given.
        let mut rng = SmallRng::seed_from_u64(1);
        let (key, value) = sms_message(&mut rng, 17);
        assert_eq!(key.as_deref(), Some("17"));
        assert!(value.starts_with(r#"{"id":17,"number":"+1"#), "{value}");
        let (key, value) = sms_message(&mut rng, u64::MAX);
        let m: sms_delivery::SmsMessage = serde_json::from_str(&value).unwrap();
        assert_eq!(m.id.as_text(), u64::MAX.to_string());
        assert_eq!(key, Some(u64::MAX.to_string()));

        let p = sms_delivery::Params {
            simulate_delay: false,
            ..sms_delivery::Params::default()
        };
        let d = driver(sms_delivery::topology(&p).unwrap(), sms_delivery::NAME);
        for (now, r) in &recs {
            pipe(&d, *now, r);
        }
        assert!(d.dead_letters().is_empty());
        assert_eq!(d.topic_records(sms_delivery::STATUS_TOPIC).len(), N);
        let status = d
            .key_value_store(
                sms_delivery::STATUS_STORE,
                Serdes::string(),
                Serdes::json::<sms_delivery::SenderStatus>(),
            )
            .unwrap()
            .get(&"sender_0".to_string())
            .expect("sender_0 reported");
        assert_eq!(status.success_count + status.failed_count, N as u64);
        assert!(
            (150..=450).contains(&status.failed_count),
            "about 10 % fail: {status:?}"
        );
    }

    #[test]
    fn sms_content_is_always_exactly_100_characters() {
        let mut rng = SmallRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let c = sms_content(&mut rng);
            assert_eq!(c.len(), SMS_CONTENT_LEN, "{c:?}");
            assert!(c.contains(" Ref:"), "{c:?}");
        }
    }

    #[test]
    fn iso_millis_is_rfc3339_with_milliseconds() {
        assert_eq!(iso_millis(T0), "2026-11-21T10:00:00.000Z");
        assert_eq!(iso_millis(T0 + 123), "2026-11-21T10:00:00.123Z");
        assert_eq!(rfc3339_ms(&iso_millis(T0 + 7)), T0 + 7);
        assert_eq!(iso_millis(i64::MAX), "1970-01-01T00:00:00.000Z");
        assert_eq!(epoch_seconds(T0 + 42), "1795255200.042");
    }
}
