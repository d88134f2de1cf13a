//! The five built-in scenarios (../shared/SCENARIOS.md), each a topology
//! written with the public DSL only, registered by name.

pub mod clickstream_parquet;
pub mod emoji_stream;
pub mod generators;
pub mod hashtag_trends;
pub mod sms_delivery;
pub mod user_clicks;

use crate::Daemon;

/// `daemon` with every built-in scenario registered, in the order of
/// SCENARIOS.md.
pub fn register_all(daemon: Daemon) -> Daemon {
    daemon
        .app(emoji_stream::app())
        .app(hashtag_trends::app())
        .app(clickstream_parquet::app())
        .app(sms_delivery::app())
        .app(user_clicks::app())
}
