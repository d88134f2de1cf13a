//! Runs a topology's [`Generator`] at a steady rate into Kafka.
//!
//! The rate is in events per second: every 10 ms the driver asks the
//! generator for the events due since the start (so a slow tick catches up
//! rather than drifting), produces their records without waiting for each
//! delivery, and counts delivered records in
//! `weir_generated_records_total{topology,topic}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_connectors::kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_connectors::kafka::rdkafka::producer::{BaseProducer, BaseRecord};
use weir_connectors::kafka::{flush_producer, serve_deliveries_after, DeliveryTracker, UNTRACKED};

use super::app::{Context, GeneratedRecord, Generator};

const TICK: Duration = Duration::from_millis(10);

/// Produce `generator`'s events at `rate` per second until the daemon stops.
pub fn run(
    ctx: Arc<Context>,
    topology: String,
    topics: Vec<String>,
    rate: f64,
    mut generator: Box<dyn Generator>,
) -> anyhow::Result<()> {
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    ctx.ensure_topics(&topic_refs)?;
    // Each delivered record counts under its topic; the labelled counter
    // is looked up once per topic, not per record.
    let metrics = ctx.metrics.clone();
    let labelled = topology.clone();
    let tracker = DeliveryTracker::new()
        .warn_on_failure(format!("a generated record (topology {topology})"))
        .on_delivered_per_topic(move |topic| {
            let counter = metrics.generated_records.with_label_values(&[labelled.as_str(), topic]);
            Box::new(move || counter.inc())
        });
    let producer: BaseProducer<DeliveryTracker> = ctx.settings.producer_config().create_with_context(tracker)?;
    tracing::info!(%topology, rate, topics = ?topics, "generating input");
    let started = Instant::now();
    let mut emitted: u64 = 0;
    let mut batch: Vec<GeneratedRecord> = Vec::new();
    let per_second = rate.ceil() as u64;
    while !ctx.stopping() {
        let mut due = (started.elapsed().as_secs_f64() * rate) as u64;
        // After a long stall, skip ahead rather than replay the backlog;
        // after a short one, catch up by at most one second's worth a tick.
        if due > emitted + 10 * per_second {
            emitted = due - per_second;
        }
        due = due.min(emitted + per_second);
        let now_ms = chrono::Utc::now().timestamp_millis();
        while emitted < due {
            generator.next(now_ms, &mut batch);
            emitted += 1;
        }
        for r in batch.drain(..) {
            let mut rec: BaseRecord<'_, str, str, usize> =
                BaseRecord::with_opaque_to(&r.topic, UNTRACKED).payload(r.value.as_str());
            if let Some(k) = &r.key {
                rec = rec.key(k.as_str());
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if !ctx.stopping() => {
                        serve_deliveries_after(&producer, Duration::from_millis(10));
                        rec = back;
                    }
                    Err((e, _)) => {
                        tracing::warn!(%topology, topic = %r.topic, error = %e, "a generated record was not produced");
                        break;
                    }
                }
            }
        }
        // Not `producer.poll(TICK)`: see `serve_deliveries_after`.
        serve_deliveries_after(&producer, TICK);
    }
    flush_producer(&producer, Duration::from_secs(10))?;
    Ok(())
}
