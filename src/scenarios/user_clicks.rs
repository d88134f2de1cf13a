//! `user-clicks`: clicks per user, the classic first Kafka exercise
//! (SCENARIOS.md §5).
//!
//! `user_clickstream` carries plain-text lines such as
//! `User 17 clicked on /page3 at 1763719200.123`. Each line is parsed
//! strictly; a line that does not parse goes to the dead-letter topic with a
//! message naming what was wrong, and processing goes on. Valid clicks are
//! re-keyed by user, counted per user (not windowed) in the queryable store
//! `clicks-per-user`, and every new count is written to
//! `user_click_aggregation` as the text `User 17 has clicked 42 times.`,
//! keyed by the user id as decimal text.
//!
//! This is the smallest complete example of a topology, and it is
//! benchmarked: the repartition topic carries every click, so its value is
//! only the page (a few bytes), not the parsed record.

use std::fmt;

use weir::prelude::*;

pub const NAME: &str = "user-clicks";
pub const DESCRIPTION: &str = "clicks per user from plain-text click lines (the classic first Kafka exercise)";

/// The input topic (SCENARIOS.md).
pub const INPUT_TOPIC: &str = "user_clickstream";
/// The output topic (SCENARIOS.md).
pub const OUTPUT_TOPIC: &str = "user_click_aggregation";
/// The queryable store of the running count per user.
pub const STORE: &str = "clicks-per-user";

/// Settings of the topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// The largest user id accepted. The contract defines users 1–100, so a
    /// line naming user 0 or user 101 is not a click of this system and goes
    /// to the dead-letter topic rather than silently growing the table;
    /// raise this to accept a larger user base.
    pub max_user_id: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params { max_user_id: 100 }
    }
}

/// A parsed click line, borrowing from the line (parsing allocates
/// nothing: this runs once per click).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Click<'a> {
    pub user_id: u32,
    /// The page path, starting with '/'.
    pub page: &'a str,
}

/// Why a line is not a click; the text goes into the dead-letter record's
/// error header, so it names the part of the line that was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickParseError {
    /// The words of the line are not `User <id> clicked on <page> at <time>`.
    Shape(String),
    /// The user id is not a decimal number.
    UserId(String),
    /// The user id is a number outside `1..=max`.
    UserIdRange { id: String, max: u32 },
    /// The page does not start with '/'.
    Page(String),
    /// The time is not a non-negative decimal number of seconds.
    Time(String),
}

impl fmt::Display for ClickParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClickParseError::Shape(line) => write!(
                f,
                "not a click line: expected \"User <id> clicked on <page> at <seconds>\", got {line:?}"
            ),
            ClickParseError::UserId(s) => write!(f, "user id {s:?} is not a decimal number"),
            ClickParseError::UserIdRange { id, max } => write!(f, "user id {id} is out of range 1..={max}"),
            ClickParseError::Page(s) => write!(f, "page {s:?} does not start with '/'"),
            ClickParseError::Time(s) => write!(f, "time {s:?} is not a decimal number of seconds"),
        }
    }
}

/// Parse one line strictly: exactly the seven words
/// `User <id> clicked on <page> at <seconds>` separated by single spaces,
/// with nothing before or after except one trailing line terminator (`\n`
/// or `\r\n`, which line-oriented producers such as `kcat` may leave on).
///
/// - `<id>`: decimal digits only (no sign), a user id in `1..=max_user_id`;
/// - `<page>`: starts with '/' (it cannot contain spaces, they separate
///   the words);
/// - `<seconds>`: digits, optionally followed by '.' and digits (no sign, no
///   exponent): the form the original producer writes.
pub fn parse_click(line: &str, max_user_id: u32) -> Result<Click<'_>, ClickParseError> {
    let body = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(line);
    let mut words = body.split(' ');
    let mut next = || words.next();
    let (Some("User"), Some(id), Some("clicked"), Some("on"), Some(page), Some("at"), Some(time), None) =
        (next(), next(), next(), next(), next(), next(), next(), next())
    else {
        return Err(ClickParseError::Shape(line.to_string()));
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClickParseError::UserId(id.to_string()));
    }
    // All digits: parsing fails only on overflow, which is out of range too.
    let user_id = match id.parse::<u32>() {
        Ok(n) if (1..=max_user_id).contains(&n) => n,
        _ => {
            return Err(ClickParseError::UserIdRange {
                id: id.to_string(),
                max: max_user_id,
            })
        }
    };
    if !page.starts_with('/') {
        return Err(ClickParseError::Page(page.to_string()));
    }
    // The time is checked but not kept: the count is not windowed, so the
    // click's own time changes nothing downstream.
    if !is_decimal_seconds(time) {
        return Err(ClickParseError::Time(time.to_string()));
    }
    Ok(Click { user_id, page })
}

/// `digits` or `digits.digits`.
fn is_decimal_seconds(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac),
        None => digits(s),
    }
}

/// The output text for a user's running count.
pub fn aggregation_text(user_id: u32, clicks: u64) -> String {
    format!("User {user_id} has clicked {clicks} times.")
}

/// `user_clickstream` → parse (bad lines to the DLQ) → re-key by user →
/// count per user in `clicks-per-user` → `user_click_aggregation`.
pub fn topology(p: &Params) -> Result<Topology, TopologyError> {
    let max_user_id = p.max_user_id;
    let mut b = StreamsBuilder::new();
    // Keys are ignored (the line names the user), so they are not decoded:
    // any key, binary or none, is accepted.
    b.stream::<(), String>(INPUT_TOPIC, Serdes::ignored(), Serdes::string())
        .try_map_values(move |_, line| parse_click(&line, max_user_id).map(|c| c.user_id))
        .select_key(|_, user| *user)
        // Only the key crosses the repartition topic: the count needs no
        // more, and every byte there is paid once per click.
        .map_values(|_, _| ())
        .group_by_key(Serdes::u32(), Serdes::unit())
        .count(Materialized::named(STORE))
        .to_stream()
        .map_values(|user, n| aggregation_text(*user, n))
        .to(OUTPUT_TOPIC, Serdes::u32_string(), Serdes::string());
    b.build()
}

/// The registration of this scenario with the daemon (parameters from
/// `[topologies.{NAME}]` of the config).
pub fn app() -> weir::daemon::App {
    weir::daemon::App::with_params(NAME, DESCRIPTION, |p: &Params| {
        let mut parts = weir::daemon::AppParts::new(topology(p)?);
        parts.generator = Some(super::generators::user_clicks_spec());
        Ok(parts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::{TestDriverConfig, TopologyTestDriver};

    fn driver() -> TopologyTestDriver {
        let t = topology(&Params::default()).expect("topology builds");
        TopologyTestDriver::new(t, TestDriverConfig::with_application_id(NAME)).expect("driver starts")
    }

    #[test]
    fn counts_clicks_per_user_with_exact_texts() {
        let d = driver();
        let input = d.input_topic(INPUT_TOPIC, Serdes::string(), Serdes::string());
        let out = d.output_topic(OUTPUT_TOPIC, Serdes::u32_string(), Serdes::string());
        // Keyed, unkeyed, and a trailing newline as a line-oriented producer
        // may send it.
        input
            .pipe_input("k".into(), "User 17 clicked on /page3 at 1763719200.123".into(), 1)
            .unwrap();
        input
            .pipe_value("User 4 clicked on /page1 at 1763719201".into(), 2)
            .unwrap();
        input
            .pipe_value("User 17 clicked on /page9 at 1763719202.5\n".into(), 3)
            .unwrap();
        input
            .pipe_value("User 17 clicked on / at 1763719203.000\r\n".into(), 4)
            .unwrap();
        let records = out.read_records();
        let got: Vec<(u32, String, i64)> = records.into_iter().map(|r| (r.key, r.value, r.timestamp)).collect();
        assert_eq!(
            got,
            vec![
                (17, "User 17 has clicked 1 times.".to_string(), 1),
                (4, "User 4 has clicked 1 times.".to_string(), 2),
                (17, "User 17 has clicked 2 times.".to_string(), 3),
                (17, "User 17 has clicked 3 times.".to_string(), 4),
            ]
        );
        // The key on the wire is the decimal text other clients read.
        let raw = d.topic_records(OUTPUT_TOPIC);
        assert_eq!(raw[0].key.as_deref(), Some(&b"17"[..]));
        assert_eq!(raw[0].value.as_deref(), Some(&b"User 17 has clicked 1 times."[..]));
        assert!(d.dead_letters().is_empty());
    }

    #[test]
    fn malformed_lines_go_to_the_dlq_and_processing_continues() {
        let d = driver();
        let input = d.input_topic(INPUT_TOPIC, Serdes::string(), Serdes::string());
        let out = d.output_topic(OUTPUT_TOPIC, Serdes::u32_string(), Serdes::string());
        let lines = [
            "User 1 clicked on /page1 at 1763719200.1",     // 0 ok
            "hello world",                                  // 1 shape
            "User abc clicked on /page1 at 1763719200",     // 2 id not a number
            "User 0 clicked on /page1 at 1763719200",       // 3 id out of range
            "User 101 clicked on /page1 at 1763719200",     // 4 id out of range
            "User 1 clicked on page1 at 1763719200",        // 5 page
            "User 1 clicked on /page1 at soon",             // 6 time
            "User 1 clicked on /page1 at -5",               // 7 time (sign)
            "User 1 clicked on /page1 at 1.5e9",            // 8 time (exponent)
            "User 1 clicked on /page1 at 1763719200 extra", // 9 shape (trailing word)
            "User  1 clicked on /page1 at 1763719200",      // 10 shape (double space)
            "User 1 clicked on /page2 at 1763719200.9",     // 11 ok
        ];
        for (i, l) in lines.iter().enumerate() {
            input.pipe_value(l.to_string(), i as i64).unwrap();
        }
        assert_eq!(
            out.read_values(),
            vec!["User 1 has clicked 1 times.", "User 1 has clicked 2 times."]
        );
        let dlq: Vec<(i64, String)> = d.dead_letters().into_iter().map(|r| (r.offset, r.error)).collect();
        assert_eq!(
            dlq,
            vec![
                (
                    1,
                    "not a click line: expected \"User <id> clicked on <page> at <seconds>\", got \"hello world\""
                        .to_string()
                ),
                (2, "user id \"abc\" is not a decimal number".to_string()),
                (3, "user id 0 is out of range 1..=100".to_string()),
                (4, "user id 101 is out of range 1..=100".to_string()),
                (5, "page \"page1\" does not start with '/'".to_string()),
                (6, "time \"soon\" is not a decimal number of seconds".to_string()),
                (7, "time \"-5\" is not a decimal number of seconds".to_string()),
                (8, "time \"1.5e9\" is not a decimal number of seconds".to_string()),
                (
                    9,
                    "not a click line: expected \"User <id> clicked on <page> at <seconds>\", got \"User 1 clicked on /page1 at 1763719200 extra\"".to_string()
                ),
                (
                    10,
                    "not a click line: expected \"User <id> clicked on <page> at <seconds>\", got \"User  1 clicked on /page1 at 1763719200\"".to_string()
                ),
            ]
        );
        let letters = d.dead_letters();
        assert!(letters.iter().all(|r| r.topic == INPUT_TOPIC && r.partition == 0));
        assert_eq!(letters[0].value.as_deref(), Some(&b"hello world"[..]));
    }

    #[test]
    fn invalid_utf8_goes_to_the_dlq() {
        let d = driver();
        d.pipe_raw(INPUT_TOPIC, None, Some(&[0xff, 0xfe]), 0).unwrap();
        let letters = d.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].offset, 0);
        assert!(
            letters[0]
                .error
                .starts_with("value deserialization failed (string): not valid UTF-8"),
            "{}",
            letters[0].error
        );
    }

    #[test]
    fn a_key_that_is_not_utf8_is_ignored_not_dead_lettered() {
        let d = driver();
        let line = b"User 7 clicked on /page1 at 1763719200.5";
        d.pipe_raw(INPUT_TOPIC, Some(&[0xff, 0x00, 0xfe]), Some(line), 0)
            .unwrap();
        d.pipe_raw(INPUT_TOPIC, Some(&[]), Some(line), 1).unwrap();
        d.pipe_raw(INPUT_TOPIC, None, Some(line), 2).unwrap();
        let letters: Vec<String> = d.dead_letters().into_iter().map(|l| l.error).collect();
        assert_eq!(letters, Vec::<String>::new());
        let output = d.output_topic(OUTPUT_TOPIC, Serdes::u32_string(), Serdes::string());
        assert_eq!(
            output.read_key_values(),
            (1..=3)
                .map(|n| (7, format!("User 7 has clicked {n} times.")))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_store_holds_the_count_per_user() {
        let d = driver();
        let input = d.input_topic(INPUT_TOPIC, Serdes::string(), Serdes::string());
        let mut expected = std::collections::BTreeMap::new();
        for i in 0..60u32 {
            let user = i % 7 + 1;
            let page = i % 10 + 1;
            input
                .pipe_value(
                    format!("User {user} clicked on /page{page} at 1763719200.{i:03}"),
                    i64::from(i),
                )
                .unwrap();
            *expected.entry(user).or_insert(0u64) += 1;
        }
        let store = d.key_value_store(STORE, Serdes::u32(), Serdes::u64()).unwrap();
        assert_eq!(store.all(), expected.into_iter().collect::<Vec<_>>());
        assert_eq!(store.get(&1), Some(9));
        assert_eq!(store.get(&7), Some(8));
        assert_eq!(store.get(&8), None);
        // The repartition topic carries one record per click, the key only.
        let rep = d.topic_records("user-clicks-clicks-per-user-repartition");
        assert_eq!(rep.len(), 60);
        assert_eq!(rep[0].key.as_deref(), Some(&[0, 0, 0, 1][..]));
        assert_eq!(rep[0].value.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn parse_is_strict() {
        assert_eq!(
            parse_click("User 100 clicked on /page10 at 0.5", 100),
            Ok(Click {
                user_id: 100,
                page: "/page10",
            })
        );
        assert_eq!(
            parse_click("User 99999999999999999999 clicked on /p at 1", 100).map_err(|e| e.to_string()),
            Err("user id 99999999999999999999 is out of range 1..=100".to_string())
        );
        for bad in [
            "",
            "User 1 clicked on /p at",
            "User 1 clicked on /p at 1.",
            "User 1 clicked on /p at .5",
            "User +1 clicked on /p at 1",
            " User 1 clicked on /p at 1",
            "User 1 clicked on /p at 1 ",
            "user 1 clicked on /p at 1",
            "User 1 clicked on /p at 1\n\n",
        ] {
            assert!(parse_click(bad, 100).is_err(), "{bad:?}");
        }
        assert!(parse_click("User 101 clicked on /p at 1", 1000).is_ok());
    }
}
