//! Whether the cluster takes a stream thread's work, as that thread sees it.
//!
//! A broker outage must not stop weir: librdkafka retries by itself, and a
//! commit waits for its records to be delivered (up to
//! [`RunConfig::delivery_timeout`](super::RunConfig::delivery_timeout),
//! minutes by default). While it waits, or while librdkafka reports the
//! cluster unreachable, the thread has a *problem*: `/readyz` answers 503
//! with it as the reason, and the log says so once, not once per failed
//! connection attempt (librdkafka alone logs ~70 lines a minute then). When
//! the work flows again the problem clears, with one line saying how long
//! it lasted.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::RunStatus;

/// One stream thread's view of the cluster; shared with its clients'
/// contexts, which report librdkafka's errors to it.
pub struct Health {
    thread: String,
    status: Arc<RunStatus>,
    problem: Mutex<Option<(String, Instant)>>,
    /// When the last problem cleared: librdkafka reports the timeouts of
    /// the outage for a little while after it (queued log events).
    recovered: Mutex<Option<Instant>>,
}

/// How long after a problem clears librdkafka's warnings stay at debug.
const QUIET_AFTER_RECOVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Health {
    pub fn new(thread: &str, status: Arc<RunStatus>) -> Arc<Health> {
        Arc::new(Health {
            thread: thread.to_string(),
            status,
            problem: Mutex::new(None),
            recovered: Mutex::new(None),
        })
    }

    /// The cluster is not taking the thread's work: say so once (a new
    /// reason replaces the old one without another log line).
    pub fn problem(&self, reason: String) {
        let mut p = self.problem.lock().expect("health lock");
        if p.is_none() {
            tracing::warn!(thread = %self.thread, "{reason}; retrying until it answers");
        }
        let since = p.as_ref().map_or_else(Instant::now, |(_, since)| *since);
        *p = Some((reason.clone(), since));
        self.status.update(&self.thread, |t| t.problem = Some(reason));
    }

    /// Work flows again.
    pub fn ok(&self) {
        let mut p = self.problem.lock().expect("health lock");
        if let Some((reason, since)) = p.take() {
            tracing::info!(
                thread = %self.thread,
                after_s = format!("{:.1}", since.elapsed().as_secs_f64()),
                "the cluster answers again (was: {reason})"
            );
            self.status.update(&self.thread, |t| t.problem = None);
            *self.recovered.lock().expect("health lock") = Some(Instant::now());
        }
    }

    /// Whether the thread has a problem now.
    pub fn has_problem(&self) -> bool {
        self.problem.lock().expect("health lock").is_some()
    }

    /// A librdkafka error report: connection-level errors are a problem
    /// (retried by librdkafka); anything else is logged as it is.
    pub(crate) fn client_error(&self, error: KafkaError, reason: &str) {
        if is_connectivity(&error) {
            self.problem(format!("cluster unreachable: {reason}"));
        } else {
            tracing::error!(thread = %self.thread, error = %error, "librdkafka: {reason}");
        }
    }

    /// librdkafka's own log lines: while the thread has a problem they only
    /// repeat it (one per failed connection attempt), so they go to debug.
    pub(crate) fn client_log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let quiet = self.has_problem()
            || self
                .recovered
                .lock()
                .expect("health lock")
                .is_some_and(|at| at.elapsed() < QUIET_AFTER_RECOVERY);
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error
                if !quiet =>
            {
                tracing::error!(target: "librdkafka", thread = %self.thread, "{fac}: {message}")
            }
            RDKafkaLogLevel::Warning if !quiet => {
                tracing::warn!(target: "librdkafka", thread = %self.thread, "{fac}: {message}")
            }
            _ => tracing::debug!(target: "librdkafka", thread = %self.thread, "{fac}: {message}"),
        }
    }
}

/// Errors that mean "the cluster cannot be reached right now".
pub fn is_connectivity(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
        )
    )
}

/// A client context that reports to a thread's [`Health`].
pub trait ReportsHealth {
    fn health(&self) -> &Health;
}

/// The `ClientContext` methods of a stream thread's consumer
/// (`StreamContext`): librdkafka's log lines and errors go to the thread's
/// [`Health`]. The thread's producers route the same two calls through
/// their [`DeliveryTracker`](crate::kafka::DeliveryTracker), built
/// [`with_health`](crate::kafka::DeliveryTracker::with_health).
macro_rules! health_client_context {
    ($t:ty) => {
        impl rdkafka::client::ClientContext for $t {
            fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
                self.health().client_log(level, fac, log_message);
            }
            fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
                self.health().client_error(error, reason);
            }
        }
    };
}
pub(crate) use health_client_context;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_shows_in_the_status_until_it_clears() {
        let status = Arc::new(RunStatus::default());
        status.update("t", |t| t.ready = true);
        let h = Health::new("t", status.clone());
        assert!(status.is_ready());
        h.problem("cluster unreachable: 1/1 brokers are down".into());
        h.problem("commit waiting 3 s for 10 record(s) to be delivered".into());
        assert!(!status.is_ready());
        assert_eq!(
            status.snapshot()["t"].problem.as_deref(),
            Some("commit waiting 3 s for 10 record(s) to be delivered")
        );
        h.ok();
        assert!(status.is_ready());
        assert_eq!(status.snapshot()["t"].problem, None);
    }

    #[test]
    fn connection_errors_are_problems_others_are_not() {
        assert!(is_connectivity(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_connectivity(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
        assert!(!is_connectivity(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
    }
}
