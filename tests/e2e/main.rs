//! End-to-end tests of the `weir` binary: real processes (`weir dev-broker`,
//! `weir run`, `weir produce`, `weir tail`, and `noida-db`, a real
//! Kafka-protocol broker) on ports chosen at run time, killed and restarted
//! the way an operator (or a crash) would.
//!
//! One test binary with modules inside, so the harness compiles once.

mod broker_clients;
mod cli;
mod dashboard;
mod exactly_once;
mod harness;
mod http;
mod noida;
mod scenario_clickstream;
mod scenario_emoji;
mod scenario_hashtag;
mod scenario_sms;
mod scenario_user_clicks_client;
mod user_clicks;
