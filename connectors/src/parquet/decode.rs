//! JSON records to Arrow record batches with arrow-json's own decoder, and
//! the search for the records that do not fit.

use arrow_array::RecordBatch;
use arrow_json::reader::Decoder;
use arrow_json::ReaderBuilder;
use arrow_schema::SchemaRef;

fn decoder(schema: &SchemaRef, rows: usize) -> Result<Decoder, String> {
    ReaderBuilder::new(schema.clone())
        .with_strict_mode(true)
        // One more than the rows fed, so `decode` never stops early.
        .with_batch_size(rows + 1)
        .build_decoder()
        .map_err(|e| e.to_string())
}

/// Feeds one record to `d` and checks that it held exactly one complete
/// JSON value. The newline after it ends a trailing number literal and
/// keeps two records from ever running together.
fn feed(d: &mut Decoder, value: &[u8]) -> Result<(), String> {
    let before = d.len();
    for buf in [value, b"\n"] {
        let used = d.decode(buf).map_err(|e| e.to_string())?;
        if used != buf.len() {
            return Err("decoder stopped early".to_string());
        }
    }
    if d.has_partial_record() {
        return Err("incomplete JSON value".to_string());
    }
    let n = d.len() - before;
    if n != 1 {
        return Err(format!("expected one JSON object, found {n} values"));
    }
    Ok(())
}

/// Decodes `values` (one JSON object each) into one batch, or fails as a
/// whole (without saying which record was at fault).
pub(crate) fn decode_batch(schema: &SchemaRef, values: &[&[u8]]) -> Result<Option<RecordBatch>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut d = decoder(schema, values.len())?;
    for v in values {
        feed(&mut d, v)?;
    }
    let batch = d.flush().map_err(|e| e.to_string())?;
    match batch {
        Some(b) if b.num_rows() == values.len() => Ok(Some(b)),
        other => Err(format!(
            "decoded {} rows from {} records",
            other.map_or(0, |b| b.num_rows()),
            values.len()
        )),
    }
}

/// Whether one record fits the schema; `Err` carries arrow's reason.
pub(crate) fn check_one(schema: &SchemaRef, value: &[u8]) -> Result<(), String> {
    decode_batch(schema, &[value]).map(|_| ())
}

/// What [`decode_records`] made of a set of records.
pub(crate) struct Decoded {
    /// The good rows, in input order (`None`: no good record).
    pub batch: Option<RecordBatch>,
    /// `(index, error)` of every record that does not fit, in input order.
    pub bad: Vec<(usize, String)>,
}

/// Decodes `values` into a batch, finding the records that do not fit.
///
/// The whole set is tried first (the common case: every record is good).
/// When that fails, each record is tried on its own, and the good ones are
/// decoded together again.
pub(crate) fn decode_records(schema: &SchemaRef, values: &[&[u8]]) -> Result<Decoded, String> {
    if let Ok(batch) = decode_batch(schema, values) {
        return Ok(Decoded { batch, bad: Vec::new() });
    }
    let mut bad = Vec::new();
    let mut good: Vec<&[u8]> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        match check_one(schema, v) {
            Ok(()) => good.push(v),
            Err(e) => bad.push((i, e)),
        }
    }
    // Rows decode independently, so records that pass alone pass together.
    let batch =
        decode_batch(schema, &good).map_err(|e| format!("records that decode one by one failed together: {e}"))?;
    Ok(Decoded { batch, bad })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, TimestampMillisecondType};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ]))
    }

    #[test]
    fn good_records_decode_in_one_go() {
        let v: Vec<&[u8]> = vec![
            br#"{"id":1,"name":"a","ts":"2026-11-21T10:00:00.123Z"}"#,
            br#"{"id":2,"ts":"2026-11-21T10:00:01Z"}"#,
        ];
        let Decoded { batch: b, bad } = decode_records(&schema(), &v).unwrap();
        let b = b.unwrap();
        assert!(bad.is_empty());
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int32Type>().values(), &[1, 2]);
        assert_eq!(
            b.column(2).as_primitive::<TimestampMillisecondType>().value(0),
            1_795_255_200_123
        );
    }

    #[test]
    fn bad_records_are_found_one_by_one() {
        let v: Vec<&[u8]> = vec![
            br#"{"id":1,"ts":"2026-11-21T10:00:00Z"}"#,
            br#"{"id":2,"ts":"2026-11-21T10:"#,                   // truncated
            br#"{"ts":"2026-11-21T10:00:00Z"}"#,                  // missing id
            br#"{"id":"x","ts":"2026-11-21T10:00:00Z"}"#,         // wrong type
            br#"{"id":5,"ts":"2026-11-21T10:00:00Z","extra":1}"#, // unknown field
            br#"{"id":6,"ts":"2026-11-21T10:00:00Z"} {"id":7,"ts":"2026-11-21T10:00:00Z"}"#,
            br#"42"#,
            b"",
            br#"{"id":9,"name":3,"ts":"2026-11-21T10:00:00Z"}"#, // number for a string
            br#"{"id":10,"ts":"yesterday"}"#,
            br#"{"id":11,"ts":"2026-11-21T10:00:00Z"}"#,
        ];
        let Decoded { batch: b, bad } = decode_records(&schema(), &v).unwrap();
        let b = b.unwrap();
        assert_eq!(b.column(0).as_primitive::<Int32Type>().values(), &[1, 11]);
        let idx: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(bad[1].1.contains("id"), "{}", bad[1].1);
    }

    #[test]
    fn a_record_split_across_two_cannot_pass() {
        // Together these would read as two objects; each alone is broken.
        let v: Vec<&[u8]> = vec![
            br#"{"id":1,"ts":"2026-11-21T10:00:00Z"} {"id":"#,
            br#"2,"ts":"2026-11-21T10:00:00Z"}"#,
        ];
        let Decoded { batch: b, bad } = decode_records(&schema(), &v).unwrap();
        assert!(b.is_none());
        assert_eq!(bad.len(), 2);
    }
}
