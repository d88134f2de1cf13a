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
    /// A value from text a person typed (an interactive query's `?key=` in
    /// a URL), so that the daemon can look up a store key through the
    /// store's own serde instead of guessing the encoding from the serde's
    /// name (which made stores with custom serdes unqueryable).
    ///
    /// The built-in serdes read what [`to_json`](Self::to_json) writes for
    /// scalars: decimal numbers, text as is, JSON text for [`Serdes::json`],
    /// `key@start/end` for [`Serdes::windowed`]. By default an error that
    /// says this serde does not read text. Errors start with the quoted text
    /// (`"abc" is not a u32`), so that a caller can prefix what the text was.
    fn parse_text(&self, text: &str) -> Result<T, SerdeError> {
        Err(SerdeError(format!(
            "{text:?} cannot be read as text: the {} serde does not implement SerdeImpl::parse_text",
            self.name()
        )))
    }
    /// `value` as JSON, for interactive-query answers. By default the
    /// value's bytes in hex, as `{"hex": "..."}` (an object, so that it is
    /// never mistaken for a string value), or `{"error": "..."}` if it does
    /// not serialize.
    fn to_json(&self, value: &T) -> serde_json::Value {
        let mut out = Vec::new();
        match self.serialize(value, &mut out) {
            Ok(()) => hex_json(&out),
            Err(e) => serde_json::json!({ "error": e.0 }),
        }
    }
}

/// `{"hex": "0a1b.."}`: bytes that have no better JSON form.
pub fn hex_json(bytes: &[u8]) -> serde_json::Value {
    use std::fmt::Write as _;
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    serde_json::json!({ "hex": hex })
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

    /// A value from text a person typed; see [`SerdeImpl::parse_text`].
    pub fn parse_text(&self, text: &str) -> Result<T, SerdeError> {
        self.0.parse_text(text)
    }

    /// `value` as JSON; see [`SerdeImpl::to_json`].
    pub fn to_json(&self, value: &T) -> serde_json::Value {
        self.0.to_json(value)
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

/// A type with a default serde, for the short forms of the DSL
/// ([`StreamsBuilder::stream_of`](crate::StreamsBuilder::stream_of),
/// [`KStream::to_topic`](crate::KStream::to_topic),
/// [`Consumed::new`](crate::Consumed::new), ...): when the type says
/// enough, the serde need not be spelled out.
///
/// Only the types whose encoding is beyond doubt have one: `String`
/// (UTF-8), `u32`/`u64`/`i64` (big-endian, so that byte order is numeric
/// order), `Vec<u8>` (as is), `()` ([`Serdes::unit`]), `Option<T>`
/// ([`Serdes::optional`]: `None` is a Kafka null) and `Windowed<K>`. There
/// is deliberately no blanket impl for serde types: it would conflict with
/// these impls (a `String` is a serde type too) and would silently choose
/// JSON for a type that might be meant as Avro or text. Use
/// [`Serdes::json`] explicitly, e.g. `Consumed::with(Serdes::string(),
/// Serdes::json())`, or implement `DefaultSerde` for your own type.
///
/// ```
/// # use weir_topology::{DefaultSerde, Serdes};
/// let s = <Option<String>>::default_serde();
/// assert_eq!(s.to_bytes_opt(&None).unwrap(), None);
/// assert_eq!(u64::default_serde().name(), Serdes::u64().name());
/// ```
pub trait DefaultSerde: Sized + 'static {
    fn default_serde() -> Serde<Self>;
}

impl DefaultSerde for String {
    fn default_serde() -> Serde<Self> {
        Serdes::string()
    }
}
impl DefaultSerde for u32 {
    fn default_serde() -> Serde<Self> {
        Serdes::u32()
    }
}
impl DefaultSerde for u64 {
    fn default_serde() -> Serde<Self> {
        Serdes::u64()
    }
}
impl DefaultSerde for i64 {
    fn default_serde() -> Serde<Self> {
        Serdes::i64()
    }
}
impl DefaultSerde for Vec<u8> {
    fn default_serde() -> Serde<Self> {
        Serdes::bytes()
    }
}
/// [`Serdes::unit`]: no bytes, and a Kafka null reads as `()` (not
/// [`Serdes::ignored`], which would hide bytes a topology did not expect).
impl DefaultSerde for () {
    fn default_serde() -> Serde<Self> {
        Serdes::unit()
    }
}
impl<T: DefaultSerde> DefaultSerde for Option<T> {
    fn default_serde() -> Serde<Self> {
        Serdes::optional(T::default_serde())
    }
}
impl<K: DefaultSerde> DefaultSerde for crate::windows::Windowed<K> {
    fn default_serde() -> Serde<Self> {
        Serdes::windowed(K::default_serde())
    }
}

/// How an interactive query reads a store: the store's key and value
/// serdes with their types erased, so that the daemon (which knows no
/// store's types) turns a key typed in a URL into store bytes and stored
/// bytes into JSON through the serdes the store was really built with
/// ([`SerdeImpl::parse_text`], [`SerdeImpl::to_json`]) rather than by
/// matching serde names. [`Topology::query_codec`](crate::Topology::query_codec)
/// gives the one of each store the DSL created.
///
/// For a window store the key serde is the record key's: the daemon splits
/// off the window start prefix itself.
#[derive(Clone)]
pub struct QueryCodec(Arc<dyn ErasedCodec>);

trait ErasedCodec: Send + Sync {
    fn key_serde_name(&self) -> &'static str;
    fn value_serde_name(&self) -> &'static str;
    fn parse_key(&self, text: &str) -> Result<Vec<u8>, SerdeError>;
    fn key_json(&self, bytes: &[u8]) -> serde_json::Value;
    fn value_json(&self, bytes: &[u8]) -> serde_json::Value;
}

struct TypedCodec<K, V> {
    key: Serde<K>,
    value: Serde<V>,
}

/// Bytes that do not decode still answer (a query must not fail on one
/// bad entry), visibly: null would look like a real null value, and lossy
/// text would hide that anything was wrong.
fn json_of<T: 'static>(serde: &Serde<T>, bytes: &[u8]) -> serde_json::Value {
    match serde.deserialize(bytes) {
        Ok(v) => serde.to_json(&v),
        Err(e) => {
            let mut v = hex_json(bytes);
            v["error"] = serde_json::Value::from(e.0);
            v
        }
    }
}

impl<K: 'static, V: 'static> ErasedCodec for TypedCodec<K, V> {
    fn key_serde_name(&self) -> &'static str {
        self.key.name()
    }
    fn value_serde_name(&self) -> &'static str {
        self.value.name()
    }
    fn parse_key(&self, text: &str) -> Result<Vec<u8>, SerdeError> {
        self.key.to_bytes(&self.key.parse_text(text)?)
    }
    fn key_json(&self, bytes: &[u8]) -> serde_json::Value {
        json_of(&self.key, bytes)
    }
    fn value_json(&self, bytes: &[u8]) -> serde_json::Value {
        json_of(&self.value, bytes)
    }
}

impl QueryCodec {
    /// The codec of a store whose keys and values these serdes wrote.
    pub fn new<K: 'static, V: 'static>(key: Serde<K>, value: Serde<V>) -> Self {
        QueryCodec(Arc::new(TypedCodec { key, value }))
    }
    /// The key serde's name (for listings and messages).
    pub fn key_serde_name(&self) -> &'static str {
        self.0.key_serde_name()
    }
    /// The value serde's name.
    pub fn value_serde_name(&self) -> &'static str {
        self.0.value_serde_name()
    }
    /// Store key bytes for a key typed as text. The error starts with the
    /// quoted text (`"abc" is not a u32`).
    pub fn parse_key(&self, text: &str) -> Result<Vec<u8>, SerdeError> {
        self.0.parse_key(text)
    }
    /// A stored key as JSON; undecodable bytes as `{"hex", "error"}`.
    pub fn key_json(&self, bytes: &[u8]) -> serde_json::Value {
        self.0.key_json(bytes)
    }
    /// A stored value as JSON; undecodable bytes as `{"hex", "error"}`.
    pub fn value_json(&self, bytes: &[u8]) -> serde_json::Value {
        self.0.value_json(bytes)
    }
}

impl fmt::Debug for QueryCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryCodec({}, {})", self.key_serde_name(), self.value_serde_name())
    }
}

impl crate::builder::GraphBuilder {
    /// Make `store` queryable: record the serdes its keys and values are
    /// written with (see [`QueryCodec`]).
    pub(crate) fn record_store_format<K: 'static, V: 'static>(
        &mut self,
        store: &str,
        key: &Serde<K>,
        value: &Serde<V>,
    ) {
        self.store_formats
            .push((store.to_string(), QueryCodec::new(key.clone(), value.clone())));
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
    /// Typed text is always a value (`Some`): a URL cannot carry a null.
    fn parse_text(&self, text: &str) -> Result<Option<T>, SerdeError> {
        self.inner.parse_text(text).map(Some)
    }
    fn to_json(&self, value: &Option<T>) -> serde_json::Value {
        match value {
            Some(v) => self.inner.to_json(v),
            None => serde_json::Value::Null,
        }
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
    fn parse_text(&self, text: &str) -> Result<String, SerdeError> {
        Ok(text.to_owned())
    }
    fn to_json(&self, value: &String) -> serde_json::Value {
        serde_json::Value::from(value.as_str())
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
    fn parse_text(&self, text: &str) -> Result<(), SerdeError> {
        if text.is_empty() {
            Ok(())
        } else {
            Err(SerdeError(format!(
                "{text:?} is not empty (the unit serde has one value, written as nothing)"
            )))
        }
    }
    fn to_json(&self, _value: &()) -> serde_json::Value {
        serde_json::Value::Null
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
    fn parse_text(&self, _text: &str) -> Result<(), SerdeError> {
        Ok(())
    }
    fn to_json(&self, _value: &()) -> serde_json::Value {
        serde_json::Value::Null
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
    /// The text's UTF-8 bytes.
    fn parse_text(&self, text: &str) -> Result<Vec<u8>, SerdeError> {
        Ok(text.as_bytes().to_vec())
    }
    /// Text if the bytes are UTF-8 (what [`parse_text`](Self::parse_text)
    /// reads back), else `{"hex": ..}`.
    fn to_json(&self, value: &Vec<u8>) -> serde_json::Value {
        match std::str::from_utf8(value) {
            Ok(s) => serde_json::Value::from(s),
            Err(_) => hex_json(value),
        }
    }
}

/// Fixed-width big-endian unsigned integers.
trait BeInt: Copy + Send + Sync + 'static + std::str::FromStr + Into<serde_json::Value> {
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
    fn parse_text(&self, text: &str) -> Result<T, SerdeError> {
        text.parse::<T>().map_err(|_| not_a(text, T::NAME))
    }
    fn to_json(&self, value: &T) -> serde_json::Value {
        (*value).into()
    }
}

/// `"abc" is not a u32`.
fn not_a(text: &str, what: &str) -> SerdeError {
    SerdeError(format!("{text:?} is not a {what}"))
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
    fn parse_text(&self, text: &str) -> Result<i64, SerdeError> {
        text.parse::<i64>().map_err(|_| not_a(text, "i64"))
    }
    fn to_json(&self, value: &i64) -> serde_json::Value {
        serde_json::Value::from(*value)
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
    fn parse_text(&self, text: &str) -> Result<u32, SerdeError> {
        text.parse::<u32>().map_err(|_| not_a(text, "u32"))
    }
    fn to_json(&self, value: &u32) -> serde_json::Value {
        serde_json::Value::from(*value)
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
    /// Valid UTF-8 (JSON's only encoding, so nearly every record) is
    /// checked once for the whole value and read as `str`; `from_slice`
    /// would validate every string again, a measurable share of a
    /// JSON-decoding stream thread. Anything else goes through
    /// `from_slice`, which names the position of the bad bytes.
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes),
        }
        .map_err(|e| SerdeError(format!("invalid JSON: {e}")))
    }
    /// JSON `null` if the type accepts it (`Option<_>`, `Value`, `()`);
    /// otherwise the null is refused like any serde's.
    fn deserialize_null(&self) -> Result<T, SerdeError> {
        serde_json::from_slice(b"null").map_err(|_| SerdeError::cannot_represent_null("json"))
    }
    fn name(&self) -> &'static str {
        "json"
    }
    /// JSON text as `T` (so that the key bytes are exactly what the store
    /// holds: `T`'s field order, not the order typed). Text that is not
    /// JSON is tried as a JSON string, so that `?key=alice` works for a
    /// string-like key as well as `?key="alice"`.
    fn parse_text(&self, text: &str) -> Result<T, SerdeError> {
        serde_json::from_str(text).or_else(|e| {
            serde_json::from_value(serde_json::Value::from(text))
                .map_err(|_| SerdeError(format!("{text:?} is not JSON: {e}")))
        })
    }
    fn to_json(&self, value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
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
