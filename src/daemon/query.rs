//! Interactive queries: turning a key typed into a URL into store bytes,
//! and stored bytes into JSON, through the serdes the store was built with
//! (the store's [`QueryCodec`], from `Topology::query_codec`).
//!
//! The daemon knows no store's types. It used to re-implement the built-in
//! serdes by name, so a store with a serde of the user's own could not be
//! queried, and a name shared by two encodings would have been read
//! wrongly. Now each serde parses text and renders JSON itself
//! (`SerdeImpl::parse_text`, `SerdeImpl::to_json`); this module only words
//! the errors for HTTP answers.

use serde_json::Value;
use weir::QueryCodec;

/// Store key bytes for `text`; an error names the problem for a 400
/// answer (`key "abc" is not a u32`).
pub fn encode_key(codec: &QueryCodec, text: &str) -> Result<Vec<u8>, String> {
    codec.parse_key(text).map_err(|e| format!("key {e}"))
}

/// JSON for a stored key. Bytes that do not decode answer as
/// `{"hex", "error"}` rather than fail the query.
pub fn key_json(codec: &QueryCodec, bytes: &[u8]) -> Value {
    codec.key_json(bytes)
}

/// JSON for a stored value, as [`key_json`].
pub fn value_json(codec: &QueryCodec, bytes: &[u8]) -> Value {
    codec.value_json(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::{Serde, SerdeError, SerdeImpl, Serdes};

    fn codec<K: 'static>(key: Serde<K>) -> QueryCodec {
        QueryCodec::new(key, Serdes::u64())
    }

    #[test]
    fn keys_encode_like_the_serdes_do() {
        assert_eq!(
            encode_key(&codec(Serdes::u32()), "17").unwrap(),
            Serdes::u32().to_bytes(&17).unwrap()
        );
        assert_eq!(
            encode_key(&codec(Serdes::string()), "#rust").unwrap(),
            b"#rust".to_vec()
        );
        assert_eq!(
            encode_key(&codec(Serdes::i64()), "-5").unwrap(),
            Serdes::i64().to_bytes(&-5).unwrap()
        );
        assert_eq!(
            encode_key(&codec(Serdes::u64()), "5").unwrap(),
            5u64.to_be_bytes().to_vec()
        );
        assert_eq!(encode_key(&codec(Serdes::u32_string()), "7").unwrap(), b"7".to_vec());
        assert_eq!(encode_key(&codec(Serdes::bytes()), "raw").unwrap(), b"raw".to_vec());
        assert_eq!(
            encode_key(&codec(Serdes::u32()), "x").unwrap_err(),
            "key \"x\" is not a u32"
        );
        // JSON keys are typed: the bytes are what the store holds.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Id {
            region: String,
            n: u32,
        }
        let json = codec(Serdes::json::<Id>());
        assert_eq!(
            encode_key(&json, r#"{"n": 3, "region": "eu"}"#).unwrap(),
            br#"{"region":"eu","n":3}"#.to_vec()
        );
        assert!(encode_key(&json, "{")
            .unwrap_err()
            .starts_with("key \"{\" is not JSON:"));
        // A JSON string key may be typed with or without its quotes.
        let s = codec(Serdes::json::<String>());
        assert_eq!(encode_key(&s, "\"ann\"").unwrap(), encode_key(&s, "ann").unwrap());
        // Windowed keys, which could not be queried by name.
        assert_eq!(
            encode_key(&codec(Serdes::windowed(Serdes::string())), "a@0/10").unwrap(),
            Serdes::windowed(Serdes::string())
                .to_bytes(&weir::Windowed {
                    key: "a".to_string(),
                    window: weir::Window { start: 0, end: 10 }
                })
                .unwrap()
        );
    }

    #[test]
    fn values_decode_to_json() {
        let v = |s: QueryCodec, b: &[u8]| value_json(&s, b);
        assert_eq!(
            v(QueryCodec::new(Serdes::u32(), Serdes::u64()), &42u64.to_be_bytes()),
            Value::from(42)
        );
        assert_eq!(
            v(QueryCodec::new(Serdes::u32(), Serdes::u32()), &7u32.to_be_bytes()),
            Value::from(7)
        );
        assert_eq!(
            v(QueryCodec::new(Serdes::u32(), Serdes::string()), b"hi"),
            Value::from("hi")
        );
        assert_eq!(
            v(QueryCodec::new(Serdes::u32(), Serdes::json::<Value>()), br#"{"a":1}"#),
            serde_json::json!({"a": 1})
        );
        assert_eq!(v(QueryCodec::new(Serdes::u32(), Serdes::unit()), b""), Value::Null);
        assert_eq!(
            v(
                QueryCodec::new(Serdes::u32(), Serdes::i64()),
                &Serdes::i64().to_bytes(&-3).unwrap()
            ),
            Value::from(-3)
        );
        // Bad bytes still answer, visibly.
        assert_eq!(
            v(QueryCodec::new(Serdes::u32(), Serdes::u64()), b"bad"),
            serde_json::json!({"hex": "626164", "error": "expected 8 bytes for a u64, got 3"})
        );
        assert_eq!(key_json(&codec(Serdes::u32()), &3u32.to_be_bytes()), Value::from(3));
    }

    /// A serde of the user's own, with its own text form.
    struct PointSerde;
    impl SerdeImpl<(i32, i32)> for PointSerde {
        fn serialize(&self, v: &(i32, i32), out: &mut Vec<u8>) -> Result<(), SerdeError> {
            out.extend_from_slice(&v.0.to_be_bytes());
            out.extend_from_slice(&v.1.to_be_bytes());
            Ok(())
        }
        fn deserialize(&self, b: &[u8]) -> Result<(i32, i32), SerdeError> {
            let b: [u8; 8] = b.try_into().map_err(|_| SerdeError("not 8 bytes".into()))?;
            Ok((
                i32::from_be_bytes(b[..4].try_into().unwrap()),
                i32::from_be_bytes(b[4..].try_into().unwrap()),
            ))
        }
        fn name(&self) -> &'static str {
            "point"
        }
    }

    #[test]
    fn a_serde_without_a_text_form_says_so_and_renders_hex() {
        let c = QueryCodec::new(Serde::new(PointSerde), Serde::new(PointSerde));
        assert_eq!(
            encode_key(&c, "1,2").unwrap_err(),
            "key \"1,2\" cannot be read as text: the point serde does not implement SerdeImpl::parse_text"
        );
        assert_eq!(
            value_json(&c, &[0, 0, 0, 1, 0, 0, 0, 2]),
            serde_json::json!({"hex": "0000000100000002"})
        );
    }
}
