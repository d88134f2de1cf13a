//! Serdes: how keys and values cross the byte boundary at the edges of a
//! sub-topology (source topics, sink topics, stores).
//!
//! A serde failure is a value ([`SerdeError`]), never a panic: a record that
//! does not decode goes to the dead-letter topic and processing continues.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes could not become a value, or a value could not become bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SerdeError(pub String);

impl SerdeError {
    /// The error of a serde asked to decode a Kafka null it has no value
    /// for (see [`SerdeImpl::deserialize_null`]).
    pub fn cannot_represent_null(serde_name: &str) -> Self {
        SerdeError(format!("the {serde_name} serde cannot represent null"))
    }
}

/// Which part of a record was null, for [`Serde::deserialize_key`] and
/// [`Serde::deserialize_value`] error messages.
fn null_part_error(part: &str, e: SerdeError) -> SerdeError {
    SerdeError(format!(
        "the record has no {part}, and {}: use Serdes::optional(..) if {part}s may be absent",
        e.0
    ))
}

/// The implementation behind a [`Serde`]. Implement it for your own formats.
pub trait SerdeImpl<T>: Send + Sync + 'static {
    /// Append the encoding of `value` to `out`.
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError>;
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError>;
    /// What a Kafka record with no key (or no value) decodes to.
    ///
    /// By default an error: a serde for a type with no "absent" value must
    /// not invent one (decoding null as the empty byte string made a null
    /// string value `""`, which then joined and aggregated like a real
    /// value). Types that can represent absence override it:
    /// [`Serdes::optional`] (`None`), [`Serdes::unit`] and
    /// [`Serdes::ignored`] (`()`), [`Serdes::json`] (if the type accepts
    /// JSON `null`). The error says what to do; [`Serde::deserialize_key`]
    /// and [`Serde::deserialize_value`] add whether the key or the value was
    /// missing.
    fn deserialize_null(&self) -> Result<T, SerdeError> {
        Err(SerdeError::cannot_represent_null(self.name()))
    }
    /// Whether `value` is the absent value, to be written as a Kafka null
    /// (no bytes at all, not an empty byte string) by sinks, and skipped by
    /// joins as Kafka Streams does. Only serdes whose
    /// [`deserialize_null`](Self::deserialize_null) succeeds should return
    /// true, so that null round-trips. False by default.
    fn is_null(&self, _value: &T) -> bool {
        false
    }
    /// A short name for describe() output and error messages.
    fn name(&self) -> &'static str;
}

/// A cheap-to-clone handle on a serializer/deserializer pair for `T`.
pub struct Serde<T>(Arc<dyn SerdeImpl<T>>);

impl<T> Clone for Serde<T> {
    fn clone(&self) -> Self {
        Serde(self.0.clone())
    }
}

impl<T: 'static> fmt::Debug for Serde<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serde({})", self.0.name())
    }
}

impl<T: 'static> Serde<T> {
    pub fn new(imp: impl SerdeImpl<T>) -> Self {
        Serde(Arc::new(imp))
    }

    #[inline]
    pub fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        self.0.serialize(value, out)
    }

    /// Serialize into a fresh vector.
    pub fn to_bytes(&self, value: &T) -> Result<Vec<u8>, SerdeError> {
        let mut out = Vec::new();
        self.0.serialize(value, &mut out)?;
        Ok(out)
    }

    #[inline]
    pub fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        self.0.deserialize(bytes)
    }

    /// Decode an optional Kafka key or value (`None` is a Kafka null).
    #[inline]
    pub fn deserialize_opt(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        match bytes {
            Some(b) => self.0.deserialize(b),
            None => self.0.deserialize_null(),
        }
    }

    /// Decode a record key; a null key this serde cannot represent is an
    /// error that says the key was missing and what to use instead.
    #[inline]
    pub fn deserialize_key(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        match bytes {
            Some(b) => self.0.deserialize(b),
            None => self.0.deserialize_null().map_err(|e| null_part_error("key", e)),
        }
    }

    /// Decode a record value; as [`Serde::deserialize_key`] for values.
    #[inline]
    pub fn deserialize_value(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        match bytes {
            Some(b) => self.0.deserialize(b),
            None => self.0.deserialize_null().map_err(|e| null_part_error("value", e)),
        }
    }

    /// Whether `value` stands for a Kafka null (see [`SerdeImpl::is_null`]):
    /// sinks write it as a null key or value, joins skip it.
    #[inline]
    pub fn is_null(&self, value: &T) -> bool {
        self.0.is_null(value)
    }

    /// Serialize a key or value as Kafka sees it: `None` for a null.
    pub fn to_bytes_opt(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        if self.0.is_null(value) {
            Ok(None)
        } else {
            self.to_bytes(value).map(Some)
        }
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// The built-in serdes.
pub struct Serdes;

impl Serdes {
    /// UTF-8 text. Invalid UTF-8 is an error.
    pub fn string() -> Serde<String> {
        Serde::new(StringSerde)
    }
    /// No bytes at all, for values that carry no information (a
    /// repartition before a count needs only the key).
    pub fn unit() -> Serde<()> {
        Serde::new(UnitSerde)
    }
    /// For a key or value the topology ignores: reads nothing, so any
    /// bytes (or none) are accepted; writes nothing. A topology must not
    /// fail on what it does not use (a click line keyed by a binary id
    /// counts like any other).
    pub fn ignored() -> Serde<()> {
        Serde::new(IgnoredSerde)
    }
    /// Raw bytes, unchanged.
    pub fn bytes() -> Serde<Vec<u8>> {
        Serde::new(BytesSerde)
    }
    /// 4 bytes big-endian, so that byte order is numeric order.
    pub fn u32() -> Serde<u32> {
        Serde::new(BeSerde::<u32>(PhantomData))
    }
    /// 8 bytes big-endian.
    pub fn u64() -> Serde<u64> {
        Serde::new(BeSerde::<u64>(PhantomData))
    }
    /// 8 bytes big-endian with the sign bit flipped, so that byte order is
    /// numeric order for negative numbers too.
    pub fn i64() -> Serde<i64> {
        Serde::new(I64Serde)
    }
    /// A u32 written as decimal text ("17"): the key format Kafka clients in
    /// other languages read as a plain string.
    pub fn u32_string() -> Serde<u32> {
        Serde::new(U32StringSerde)
    }
    /// A key or value that may be absent: a Kafka null decodes as `None`
    /// and `None` is written as a Kafka null (a tombstone when it is a
    /// value), never as an empty byte string; other bytes decode with
    /// `inner` as `Some`. Use it for topics whose records may have no key
    /// or no value: the other serdes refuse null (the record goes to the
    /// dead-letter topic) rather than invent a value for it.
    ///
    /// `None` has no byte encoding: serializing it (rather than letting a
    /// sink write a null) is an error, so a store never holds a `None`
    /// that would read back as `Some` of the empty encoding.
    ///
    /// ```
    /// # use weir_topology::Serdes;
    /// let s = Serdes::optional(Serdes::string());
    /// assert_eq!(s.deserialize_opt(None).unwrap(), None);
    /// assert_eq!(s.deserialize_opt(Some(b"a")).unwrap(), Some("a".to_string()));
    /// assert_eq!(s.to_bytes_opt(&None).unwrap(), None);
    /// assert_eq!(s.to_bytes_opt(&Some(String::new())).unwrap(), Some(vec![]));
    /// ```
    pub fn optional<T: 'static>(inner: Serde<T>) -> Serde<Option<T>> {
        let name = optional_name(inner.name());
        Serde::new(OptionalSerde { inner, name })
    }
    /// Any serde type as JSON.
    pub fn json<T: Serialize + DeserializeOwned + 'static>() -> Serde<T> {
        Serde::new(JsonSerde::<T>(PhantomData))
    }
    /// A window-keyed serde: the inner key followed by the window start and
    /// end as 8-byte big-endian integers.
    pub fn windowed<K: 'static>(inner: Serde<K>) -> Serde<crate::windows::Windowed<K>> {
        Serde::new(crate::windows::WindowedSerde { inner })
    }
}

/// "optional(inner)", interned so that [`SerdeImpl::name`] can stay
/// `&'static str`: one small allocation per distinct inner serde name for
/// the life of the process.
fn optional_name(inner: &str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    names
        .entry(inner.to_string())
        .or_insert_with(|| Box::leak(format!("optional({inner})").into_boxed_str()))
}

struct OptionalSerde<T> {
    inner: Serde<T>,
    name: &'static str,
}
impl<T: 'static> SerdeImpl<Option<T>> for OptionalSerde<T> {
    #[inline]
    fn serialize(&self, value: &Option<T>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        match value {
            Some(v) => self.inner.serialize(v, out),
            None => Err(SerdeError(format!(
                "None of the {} serde is a Kafka null and has no byte encoding (it can only be written as a \
                 record's null key or value)",
                self.name
            ))),
        }
    }
    #[inline]
    fn deserialize(&self, bytes: &[u8]) -> Result<Option<T>, SerdeError> {
        self.inner.deserialize(bytes).map(Some)
    }
    fn deserialize_null(&self) -> Result<Option<T>, SerdeError> {
        Ok(None)
    }
    #[inline]
    fn is_null(&self, value: &Option<T>) -> bool {
        value.is_none()
    }
    fn name(&self) -> &'static str {
        self.name
    }
}

struct StringSerde;
impl SerdeImpl<String> for StringSerde {
    #[inline]
    fn serialize(&self, value: &String, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
    #[inline]
    fn deserialize(&self, bytes: &[u8]) -> Result<String, SerdeError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(SerdeError(format!("not valid UTF-8 text: {e}"))),
        }
    }
    fn name(&self) -> &'static str {
        "string"
    }
}

struct UnitSerde;
impl SerdeImpl<()> for UnitSerde {
    #[inline]
    fn serialize(&self, _value: &(), _out: &mut Vec<u8>) -> Result<(), SerdeError> {
        Ok(())
    }
    #[inline]
    fn deserialize(&self, bytes: &[u8]) -> Result<(), SerdeError> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(SerdeError(format!(
                "expected no bytes for a unit value, got {}",
                bytes.len()
            )))
        }
    }
    fn deserialize_null(&self) -> Result<(), SerdeError> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "unit"
    }
}

struct IgnoredSerde;
impl SerdeImpl<()> for IgnoredSerde {
    #[inline]
    fn serialize(&self, _value: &(), _out: &mut Vec<u8>) -> Result<(), SerdeError> {
        Ok(())
    }
    #[inline]
    fn deserialize(&self, _bytes: &[u8]) -> Result<(), SerdeError> {
        Ok(())
    }
    fn deserialize_null(&self) -> Result<(), SerdeError> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "ignored"
    }
}

struct BytesSerde;
impl SerdeImpl<Vec<u8>> for BytesSerde {
    fn serialize(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<Vec<u8>, SerdeError> {
        Ok(bytes.to_vec())
    }
    fn name(&self) -> &'static str {
        "bytes"
    }
}

/// Fixed-width big-endian unsigned integers.
trait BeInt: Copy + Send + Sync + 'static {
    const WIDTH: usize;
    const NAME: &'static str;
    fn write(self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Self;
}
impl BeInt for u32 {
    const WIDTH: usize = 4;
    const NAME: &'static str = "u32";
    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes())
    }
    fn read(bytes: &[u8]) -> Self {
        u32::from_be_bytes(bytes.try_into().expect("width checked"))
    }
}
impl BeInt for u64 {
    const WIDTH: usize = 8;
    const NAME: &'static str = "u64";
    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes())
    }
    fn read(bytes: &[u8]) -> Self {
        u64::from_be_bytes(bytes.try_into().expect("width checked"))
    }
}

struct BeSerde<T>(PhantomData<fn() -> T>);
impl<T: BeInt> SerdeImpl<T> for BeSerde<T> {
    #[inline]
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        value.write(out);
        Ok(())
    }
    #[inline]
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        if bytes.len() != T::WIDTH {
            return Err(SerdeError(format!(
                "expected {} bytes for a {}, got {}",
                T::WIDTH,
                T::NAME,
                bytes.len()
            )));
        }
        Ok(T::read(bytes))
    }
    fn name(&self) -> &'static str {
        T::NAME
    }
}

struct I64Serde;
impl SerdeImpl<i64> for I64Serde {
    #[inline]
    fn serialize(&self, value: &i64, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(&crate::store::encode_window_start(*value));
        Ok(())
    }
    #[inline]
    fn deserialize(&self, bytes: &[u8]) -> Result<i64, SerdeError> {
        let arr: [u8; 8] = bytes
            .try_into()
            .map_err(|_| SerdeError(format!("expected 8 bytes for an i64, got {}", bytes.len())))?;
        Ok(crate::store::decode_window_start(arr))
    }
    fn name(&self) -> &'static str {
        "i64"
    }
}

struct U32StringSerde;
impl SerdeImpl<u32> for U32StringSerde {
    #[inline]
    fn serialize(&self, value: &u32, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        let mut buf = itoa_buf(*value as u64);
        out.extend_from_slice(buf.as_bytes_mut());
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<u32, SerdeError> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or_else(|| {
                SerdeError(format!(
                    "expected a decimal u32, got {:?}",
                    String::from_utf8_lossy(bytes)
                ))
            })
    }
    fn name(&self) -> &'static str {
        "u32-string"
    }
}

/// Decimal digits of `n` without going through the formatting machinery
/// (this runs once per output record).
struct DigitBuf {
    buf: [u8; 20],
    start: usize,
}
impl DigitBuf {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.buf[self.start..]
    }
}
fn itoa_buf(mut n: u64) -> DigitBuf {
    let mut buf = [0u8; 20];
    let mut i = 20;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    DigitBuf { buf, start: i }
}

struct JsonSerde<T>(PhantomData<fn() -> T>);
impl<T: Serialize + DeserializeOwned + 'static> SerdeImpl<T> for JsonSerde<T> {
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        serde_json::to_writer(out, value).map_err(|e| SerdeError(format!("JSON encoding failed: {e}")))
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        serde_json::from_slice(bytes).map_err(|e| SerdeError(format!("invalid JSON: {e}")))
    }
    /// JSON `null` if the type accepts it (`Option<_>`, `Value`, `()`);
    /// otherwise the null is refused like any serde's.
    fn deserialize_null(&self) -> Result<T, SerdeError> {
        serde_json::from_slice(b"null").map_err(|_| SerdeError::cannot_represent_null("json"))
    }
    fn name(&self) -> &'static str {
        "json"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_sort_as_bytes() {
        let s = Serdes::i64();
        let mut prev = s.to_bytes(&i64::MIN).unwrap();
        for v in [-1_000_000i64, -1, 0, 1, 42, i64::MAX] {
            let b = s.to_bytes(&v).unwrap();
            assert!(b > prev, "{v}");
            assert_eq!(s.deserialize(&b).unwrap(), v);
            prev = b;
        }
        let u = Serdes::u32();
        assert_eq!(u.to_bytes(&258).unwrap(), vec![0, 0, 1, 2]);
        assert_eq!(u.deserialize(&[0, 0, 1, 2]).unwrap(), 258);
    }

    #[test]
    fn errors_are_values() {
        assert_eq!(
            Serdes::u32().deserialize(&[1, 2]).unwrap_err().0,
            "expected 4 bytes for a u32, got 2"
        );
        assert_eq!(
            Serdes::string().deserialize(&[0xff]).unwrap_err().0,
            "not valid UTF-8 text: invalid utf-8 sequence of 1 bytes from index 0"
        );
        assert!(Serdes::json::<Vec<u32>>()
            .deserialize(b"{not json")
            .unwrap_err()
            .0
            .starts_with("invalid JSON:"));
        assert_eq!(
            Serdes::u32_string().deserialize(b"abc").unwrap_err().0,
            "expected a decimal u32, got \"abc\""
        );
    }

    #[test]
    fn null_is_never_silently_a_value() {
        assert_eq!(
            Serdes::string().deserialize_value(None).unwrap_err().0,
            "the record has no value, and the string serde cannot represent null: use Serdes::optional(..) if \
             values may be absent"
        );
        assert_eq!(
            Serdes::u64().deserialize_key(None).unwrap_err().0,
            "the record has no key, and the u64 serde cannot represent null: use Serdes::optional(..) if keys \
             may be absent"
        );
        assert!(Serdes::bytes().deserialize_opt(None).is_err());
        // The empty byte string is still a value (not a null).
        assert_eq!(Serdes::string().deserialize_value(Some(b"")).unwrap(), "");
        // Serdes with an absent value keep decoding null.
        Serdes::unit().deserialize_value(None).unwrap();
        Serdes::ignored().deserialize_key(None).unwrap();
        assert_eq!(Serdes::json::<Option<u32>>().deserialize_value(None).unwrap(), None);
        assert_eq!(
            Serdes::json::<u32>().deserialize_value(None).unwrap_err().0,
            "the record has no value, and the json serde cannot represent null: use Serdes::optional(..) if \
             values may be absent"
        );
        assert!(!Serdes::string().is_null(&String::new()));
    }

    #[test]
    fn optional_maps_null_to_none_and_back() {
        let s = Serdes::optional(Serdes::string());
        assert_eq!(s.name(), "optional(string)");
        assert_eq!(Serdes::optional(Serdes::string()).name(), s.name());
        assert_eq!(s.deserialize_value(None).unwrap(), None);
        assert_eq!(s.deserialize_key(Some(b"")).unwrap(), Some(String::new()));
        assert_eq!(s.deserialize_value(Some(b"x")).unwrap(), Some("x".to_string()));
        assert!(s.is_null(&None) && !s.is_null(&Some(String::new())));
        assert_eq!(s.to_bytes_opt(&None).unwrap(), None);
        assert_eq!(s.to_bytes_opt(&Some("x".into())).unwrap(), Some(b"x".to_vec()));
        assert!(s.to_bytes(&None).unwrap_err().0.contains("Kafka null"));
        // Inner errors pass through.
        assert!(Serdes::optional(Serdes::u32()).deserialize(&[1]).is_err());
    }

    #[test]
    fn u32_string_is_decimal_text() {
        let s = Serdes::u32_string();
        for v in [0u32, 7, 17, 100, u32::MAX] {
            let b = s.to_bytes(&v).unwrap();
            assert_eq!(b, v.to_string().into_bytes());
            assert_eq!(s.deserialize(&b).unwrap(), v);
        }
    }
}
