//! HTTP ingress: a route whose JSON body (one object, or an array of
//! objects) is checked record by record and produced to a topic.
//!
//! All or nothing: every record is checked before the first is produced,
//! so a bad request (400, naming the record and field) writes nothing, and
//! a 200 means every record was delivered.

use hyper::{Method, StatusCode};
use serde_json::{Map, Value};

use super::app::{error, json, Route};

/// What a checker returns for a good record: its Kafka key.
pub type Key = Option<String>;

/// A `POST path` route producing each JSON object of the body to `topic`,
/// unchanged (compact JSON), keyed by what `check` returns.
pub fn json_route<F>(path: &str, topology: &str, topic: &str, check: F) -> Route
where
    F: Fn(&Map<String, Value>) -> Result<Key, String> + Send + Sync + 'static,
{
    json_route_noting(path, topology, topic, check, |_| Map::new())
}

/// [`json_route`], whose 200 answer also carries the fields `note` returns
/// for the accepted records (all of them, in request order). `note` runs
/// after every record is checked and before any is produced: it sees the
/// daemon as the records found it (e.g. which windows had closed). Its
/// fields are added beside `produced` and `topic`, never replacing them.
pub fn json_route_noting<F, N>(path: &str, topology: &str, topic: &str, check: F, note: N) -> Route
where
    F: Fn(&Map<String, Value>) -> Result<Key, String> + Send + Sync + 'static,
    N: Fn(&[&Map<String, Value>]) -> Map<String, Value> + Send + Sync + 'static,
{
    let topology = topology.to_string();
    let topic = topic.to_string();
    Route::new(path, &[Method::POST], move |ctx, req| {
        let items = match parse_body(&req.body) {
            Ok(items) => items,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        let many = items.len() > 1 || req.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let mut records = Vec::with_capacity(items.len());
        let mut objects = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Object(obj) = item else {
                let what = if many { format!("item {i}: ") } else { String::new() };
                return error(StatusCode::BAD_REQUEST, format!("{what}expected a JSON object"));
            };
            match check(obj) {
                Ok(key) => records.push((topic.clone(), key, item.to_string())),
                Err(e) if many => return error(StatusCode::BAD_REQUEST, format!("item {i}: {e}")),
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            }
            objects.push(obj);
        }
        let extra = note(&objects);
        if let Err(e) = ctx.produce(&records) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("producing to {topic:?}: {e:#}"),
            );
        }
        ctx.metrics
            .ingress_records
            .with_label_values(&[topology.as_str(), topic.as_str()])
            .inc_by(records.len() as u64);
        json(StatusCode::OK, &answer(records.len(), &topic, extra))
    })
}

/// The 200 answer: `{"produced": n, "topic": t}` and the route's own
/// fields (which cannot replace those two).
fn answer(produced: usize, topic: &str, extra: Map<String, Value>) -> Value {
    let mut body = extra;
    body.insert("produced".into(), Value::from(produced));
    body.insert("topic".into(), Value::from(topic));
    Value::Object(body)
}

/// The body as a list of values: an array's elements, or the one value.
fn parse_body(body: &[u8]) -> Result<Vec<Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("the request body is empty: send a JSON object or an array of objects".into());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    match v {
        Value::Array(items) if items.is_empty() => Err("the array is empty: nothing to produce".into()),
        Value::Array(items) => Ok(items),
        other => Ok(vec![other]),
    }
}

/// The non-empty string field `name`, or why not.
pub fn string_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match obj.get(name) {
        None => Err(format!("missing field \"{name}\"")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("field \"{name}\" is empty")),
        Some(other) => Err(format!("field \"{name}\" must be a string, got {other}")),
    }
}

/// The RFC 3339 time field `name` (e.g. `2026-11-21T10:00:00.123Z`).
pub fn time_field(obj: &Map<String, Value>, name: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let s = string_field(obj, name)?;
    crate::scenarios::parse_rfc3339(s)
        .map_err(|_| format!("field \"{name}\": {s:?} is not an RFC 3339 time like 2026-11-21T10:00:00.123Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_one_object_or_an_array() {
        assert_eq!(parse_body(br#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(parse_body(br#" [{"a":1},{"a":2}] "#).unwrap().len(), 2);
        assert_eq!(
            parse_body(b"  ").unwrap_err(),
            "the request body is empty: send a JSON object or an array of objects"
        );
        assert_eq!(parse_body(b"[]").unwrap_err(), "the array is empty: nothing to produce");
        assert!(parse_body(b"{oops").unwrap_err().starts_with("the body is not JSON: "));
    }

    #[test]
    fn answers_keep_produced_and_topic() {
        let mut extra = Map::new();
        extra.insert("produced".into(), Value::from("no"));
        extra.insert("warning".into(), Value::from("late"));
        assert_eq!(
            answer(3, "emoji-events", extra),
            serde_json::json!({"produced": 3, "topic": "emoji-events", "warning": "late"})
        );
        assert_eq!(
            answer(1, "t", Map::new()),
            serde_json::json!({"produced": 1, "topic": "t"})
        );
    }

    #[test]
    fn fields_are_named_in_errors() {
        let obj = serde_json::json!({"user_id": "u1", "n": 5, "e": " ", "t": "yesterday"});
        let obj = obj.as_object().unwrap();
        assert_eq!(string_field(obj, "user_id"), Ok("u1"));
        assert_eq!(
            string_field(obj, "emoji_type").unwrap_err(),
            "missing field \"emoji_type\""
        );
        assert_eq!(
            string_field(obj, "n").unwrap_err(),
            "field \"n\" must be a string, got 5"
        );
        assert_eq!(string_field(obj, "e").unwrap_err(), "field \"e\" is empty");
        assert_eq!(
            time_field(obj, "t").unwrap_err(),
            "field \"t\": \"yesterday\" is not an RFC 3339 time like 2026-11-21T10:00:00.123Z"
        );
    }
}
