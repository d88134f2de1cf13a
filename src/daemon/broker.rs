//! Starting weir's own broker (`weir_broker`) for `weir dev-broker` and for
//! `weir run` without `--brokers`: where it listens and where its data goes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use weir_broker::{Broker, BrokerConfig, BrokerSettings, StartError};

/// Kafka's usual port, so scripts written for a local Kafka work unchanged.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9092);

/// Start the broker on `listen`, or on 127.0.0.1:9092 when none is given;
/// if that port is taken, on a free port, said in one line on stderr. An
/// address the user gave must be free. `flag` is the flag that chooses
/// the address, named in that line.
pub fn start(dir: &Path, listen: Option<SocketAddr>, settings: BrokerSettings, flag: &str) -> anyhow::Result<Broker> {
    let config = |listen| BrokerConfig {
        dir: dir.to_path_buf(),
        listen,
        settings: settings.clone(),
    };
    let what = || format!("starting the broker (data in {})", dir.display());
    match listen {
        Some(addr) => Broker::start(config(addr)).with_context(what),
        None => match Broker::start(config(DEFAULT_LISTEN)) {
            Err(StartError::Listen { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse => {
                let broker = Broker::start(config(SocketAddr::new(DEFAULT_LISTEN.ip(), 0))).with_context(what)?;
                eprintln!(
                    "weir: {DEFAULT_LISTEN} is in use; the broker listens on {} instead ({flag} to choose)",
                    broker.addr()
                );
                Ok(broker)
            }
            other => other.with_context(what),
        },
    }
}
