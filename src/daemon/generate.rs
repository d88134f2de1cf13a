//! Runs a topology's [`Generator`] at a steady rate into Kafka.
//!
//! The rate is in events per second: every 10 ms the driver asks the
//! generator for the events due since the start (so a slow tick catches up
//! rather than drifting), produces their records without waiting for each
//! delivery, and counts delivered records in
//! `weir_generated_records_total{topology,topic}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use weir_connectors::kafka::flush_producer;
use weir_connectors::kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_connectors::kafka::rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use weir_connectors::kafka::rdkafka::{ClientContext, Message};

use super::app::{Context, GeneratedRecord, Generator};

const TICK: Duration = Duration::from_millis(10);

/// Counts each delivered record under its topic.
struct Counting {
    topology: String,
    metrics: Arc<weir_runtime::metrics::Metrics>,
    counters: std::sync::Mutex<Vec<(String, IntCounter)>>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let topic = m.topic();
                let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((_, c)) = counters.iter().find(|(t, _)| t == topic) {
                    c.inc();
                } else {
                    let c = self
                        .metrics
                        .generated_records
                        .with_label_values(&[self.topology.as_str(), topic]);
                    c.inc();
                    counters.push((topic.to_string(), c));
                }
            }
            Err((e, _)) => {
                tracing::warn!(topology = %self.topology, error = %e, "a generated record was not delivered")
            }
        }
    }
}

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
    let producer: BaseProducer<Counting> = ctx.settings.producer_config().create_with_context(Counting {
        topology: topology.clone(),
        metrics: ctx.metrics.clone(),
        counters: Default::default(),
    })?;
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
            let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(&r.topic).payload(r.value.as_str());
            if let Some(k) = &r.key {
                rec = rec.key(k.as_str());
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if !ctx.stopping() => {
                        producer.poll(Duration::from_millis(10));
                        rec = back;
                    }
                    Err((e, _)) => {
                        tracing::warn!(%topology, topic = %r.topic, error = %e, "a generated record was not produced");
                        break;
                    }
                }
            }
        }
        producer.poll(TICK);
    }
    flush_producer(&producer, Duration::from_secs(10))?;
    Ok(())
}
