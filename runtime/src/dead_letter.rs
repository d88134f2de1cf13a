//! The wire form of a dead letter: the record that goes to
//! `{application_id}-dlq` for an input record the topology could not take.
//!
//! A dead letter must always be producible, whatever the bad record looks
//! like: a record that cannot be dead-lettered would otherwise stop the
//! daemon (and, if anything committed past it, be lost). So its size is
//! bounded by the producer's record limit (`message.max.bytes`): the
//! `error` header is cut to [`ERROR_HEADER_MAX`] bytes, and when the key and
//! value do not fit beside the headers, the value (then the key) is cut
//! too, with `original-value-size` / `original-key-size` headers giving the
//! sizes the input record had. A dead letter that fits is the input record
//! unchanged (key and value byte for byte) plus the headers.

/// The most bytes of the error text kept in the `error` header. Parse
/// errors that quote the input would otherwise double a record's size.
pub const ERROR_HEADER_MAX: usize = 1024;

/// What librdkafka counts per record beyond key, value and header bytes
/// (the record batch framing, varints, timestamps), with a wide margin.
const RECORD_OVERHEAD: usize = 512;

/// One dead letter, ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterOut<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// (name, value) in a fixed order: `error`, `topic`, `partition`,
    /// `offset`, then `original-key-size` / `original-value-size` when cut.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

impl<'a> DeadLetterOut<'a> {
    /// The dead letter of the record at `topic`/`partition`@`offset` with
    /// `key` and `value`, rejected because of `error`, within
    /// `max_record_bytes` (the producer's `message.max.bytes`).
    pub fn new(
        error: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        max_record_bytes: usize,
    ) -> DeadLetterOut<'a> {
        let mut headers: Vec<(&'static str, Vec<u8>)> = vec![
            ("error", bounded_text(error, ERROR_HEADER_MAX).into_bytes()),
            ("topic", topic.as_bytes().to_vec()),
            ("partition", partition.to_string().into_bytes()),
            ("offset", offset.to_string().into_bytes()),
        ];
        // Room for two more headers of up to 20 digits each.
        let fixed: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + 2 * 40;
        let budget = max_record_bytes.saturating_sub(RECORD_OVERHEAD + fixed);
        let key_len = key.map_or(0, <[u8]>::len);
        let value_len = value.map_or(0, <[u8]>::len);
        let (mut key, mut value) = (key, value);
        if key_len + value_len > budget {
            // Keep the key whole if it fits (it says which entity the bad
            // record was about), and give the value what is left.
            let key_keep = key_len.min(budget);
            let value_keep = budget - key_keep;
            if key_keep < key_len {
                key = key.map(|k| &k[..key_keep]);
                headers.push(("original-key-size", key_len.to_string().into_bytes()));
            }
            if value_keep < value_len {
                value = value.map(|v| &v[..value_keep]);
                headers.push(("original-value-size", value_len.to_string().into_bytes()));
            }
        }
        DeadLetterOut { key, value, headers }
    }

    /// Whether the key or value was cut to fit.
    pub fn truncated(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| *k == "original-key-size" || *k == "original-value-size")
    }
}

/// `text` if it has at most `max` bytes, else its longest prefix (at a
/// character boundary) that leaves room for a note of how much was cut.
fn bounded_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let note = format!("... ({} bytes in all)", text.len());
    let mut end = max.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1_000_000;

    fn header<'a>(d: &'a DeadLetterOut<'_>, name: &str) -> Option<&'a str> {
        d.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    fn size(d: &DeadLetterOut<'_>) -> usize {
        d.key.map_or(0, <[u8]>::len)
            + d.value.map_or(0, <[u8]>::len)
            + d.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + RECORD_OVERHEAD
    }

    #[test]
    fn a_record_that_fits_is_kept_byte_for_byte() {
        let value = vec![b'x'; 480_000];
        let d = DeadLetterOut::new("bad line", "in", 3, 77, Some(b"k"), Some(&value), MAX);
        assert_eq!(d.key, Some(&b"k"[..]));
        assert_eq!(d.value, Some(&value[..]));
        assert!(!d.truncated());
        assert_eq!(
            d.headers,
            vec![
                ("error", b"bad line".to_vec()),
                ("topic", b"in".to_vec()),
                ("partition", b"3".to_vec()),
                ("offset", b"77".to_vec()),
            ]
        );
    }

    #[test]
    fn an_error_quoting_a_huge_record_is_cut_to_the_header_limit() {
        let line = "é".repeat(300_000);
        let error = format!("unexpected text {line:?}");
        let d = DeadLetterOut::new(&error, "in", 0, 1, None, Some(line.as_bytes()), MAX);
        let e = header(&d, "error").unwrap();
        assert!(e.len() <= ERROR_HEADER_MAX, "{}", e.len());
        assert!(e.starts_with("unexpected text \"éé"), "{e}");
        assert!(e.ends_with(&format!("... ({} bytes in all)", error.len())), "{e}");
        // 600,000 bytes of value still fit whole.
        assert_eq!(d.value, Some(line.as_bytes()));
        assert!(size(&d) <= MAX);
    }

    #[test]
    fn a_value_over_the_limit_is_cut_and_its_size_recorded() {
        let value = vec![b'v'; 2_500_000];
        let d = DeadLetterOut::new("too big", "in", 0, 9, Some(b"key"), Some(&value), MAX);
        assert!(d.truncated());
        assert_eq!(d.key, Some(&b"key"[..]));
        let kept = d.value.unwrap();
        assert!(kept.len() > 990_000 && value.starts_with(kept), "{}", kept.len());
        assert_eq!(header(&d, "original-value-size"), Some("2500000"));
        assert_eq!(header(&d, "original-key-size"), None);
        assert!(size(&d) <= MAX, "{}", size(&d));
    }

    #[test]
    fn a_key_over_the_limit_is_cut_too() {
        let key = vec![b'k'; 1_200_000];
        let value = vec![b'v'; 10];
        let d = DeadLetterOut::new("bad", "in", 0, 9, Some(&key), Some(&value), MAX);
        assert_eq!(header(&d, "original-key-size"), Some("1200000"));
        assert_eq!(header(&d, "original-value-size"), Some("10"));
        assert_eq!(d.value, Some(&b""[..]));
        assert!(size(&d) <= MAX, "{}", size(&d));
    }
}
