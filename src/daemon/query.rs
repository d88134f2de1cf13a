//! Interactive queries: turning a key typed into a URL into store bytes,
//! and stored bytes into JSON, by the serde a store was built with (see
//! `Topology::store_format`).

use serde_json::Value;

/// Store key bytes for `text`, by key serde name; an error names the
/// problem for a 400 answer.
pub fn encode_key(format: &str, text: &str) -> Result<Vec<u8>, String> {
    let number = |what: &str| format!("key {text:?} is not a {what}");
    Ok(match format {
        "string" | "bytes" => text.as_bytes().to_vec(),
        "u32" => text.parse::<u32>().map_err(|_| number("u32"))?.to_be_bytes().to_vec(),
        "u64" => text.parse::<u64>().map_err(|_| number("u64"))?.to_be_bytes().to_vec(),
        "i64" => {
            let v = text.parse::<i64>().map_err(|_| number("i64"))?;
            weir::store::encode_window_start(v).to_vec()
        }
        "u32-string" => text.parse::<u32>().map_err(|_| number("u32"))?.to_string().into_bytes(),
        "json" => {
            let v: Value = serde_json::from_str(text).map_err(|e| format!("key {text:?} is not JSON: {e}"))?;
            serde_json::to_vec(&v).map_err(|e| e.to_string())?
        }
        other => return Err(format!("keys of this store ({other}) cannot be queried by text")),
    })
}

/// JSON for stored bytes, by serde name (unreadable bytes become a string
/// with replacement characters rather than an error: a query must answer).
pub fn decode(format: &str, bytes: &[u8]) -> Value {
    let be = |n: usize| -> Option<[u8; 8]> {
        let mut a = [0u8; 8];
        (bytes.len() == n).then(|| {
            a[8 - n..].copy_from_slice(bytes);
            a
        })
    };
    match format {
        "u32" | "u64" => be(if format == "u32" { 4 } else { 8 })
            .map(|a| Value::from(u64::from_be_bytes(a)))
            .unwrap_or(Value::Null),
        "i64" => bytes
            .try_into()
            .ok()
            .map(|a: [u8; 8]| Value::from(weir::store::decode_window_start(a)))
            .unwrap_or(Value::Null),
        "unit" => Value::Null,
        "json" => serde_json::from_slice(bytes).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(bytes))),
        _ => Value::from(String::from_utf8_lossy(bytes).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_like_the_serdes_do() {
        assert_eq!(
            encode_key("u32", "17").unwrap(),
            weir::Serdes::u32().to_bytes(&17).unwrap()
        );
        assert_eq!(encode_key("string", "#rust").unwrap(), b"#rust".to_vec());
        assert_eq!(
            encode_key("i64", "-5").unwrap(),
            weir::Serdes::i64().to_bytes(&-5).unwrap()
        );
        assert_eq!(encode_key("u32", "x").unwrap_err(), "key \"x\" is not a u32");
        assert_eq!(
            encode_key("windowed", "a").unwrap_err(),
            "keys of this store (windowed) cannot be queried by text"
        );
    }

    #[test]
    fn values_decode_to_json() {
        assert_eq!(decode("u64", &42u64.to_be_bytes()), Value::from(42));
        assert_eq!(decode("u32", &7u32.to_be_bytes()), Value::from(7));
        assert_eq!(decode("string", b"hi"), Value::from("hi"));
        assert_eq!(decode("json", br#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(decode("u64", b"bad"), Value::Null);
    }
}
