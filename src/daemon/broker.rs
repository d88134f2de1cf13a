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
    let (broker, fell_back) = start_on(dir, listen, settings, DEFAULT_LISTEN)?;
    if fell_back {
        eprintln!(
            "weir: {DEFAULT_LISTEN} is in use; the broker listens on {} instead ({flag} to choose)",
            broker.addr()
        );
    }
    Ok(broker)
}

/// [`start`] with the default address given; also says whether the
/// default was taken and a free port used instead.
fn start_on(
    dir: &Path,
    listen: Option<SocketAddr>,
    settings: BrokerSettings,
    default: SocketAddr,
) -> anyhow::Result<(Broker, bool)> {
    let config = |listen| BrokerConfig {
        dir: dir.to_path_buf(),
        listen,
        settings: settings.clone(),
    };
    let what = || format!("starting the broker (data in {})", dir.display());
    match listen {
        Some(addr) => Ok((Broker::start(config(addr)).with_context(what)?, false)),
        None => match Broker::start(config(default)) {
            Err(StartError::Listen { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse => {
                let broker = Broker::start(config(SocketAddr::new(default.ip(), 0))).with_context(what)?;
                Ok((broker, true))
            }
            other => Ok((other.with_context(what)?, false)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_default_port_falls_back_to_a_free_one_and_a_given_one_does_not() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();

        let (broker, fell_back) = start_on(dir.path(), None, BrokerSettings::default(), busy).unwrap();
        assert!(fell_back, "the default port was taken");
        assert_ne!(broker.addr(), busy);
        assert_eq!(broker.addr().ip(), busy.ip());
        drop(broker);

        let e = start_on(dir.path(), Some(busy), BrokerSettings::default(), busy)
            .err()
            .expect("an address the user gave must be free");
        assert_eq!(
            format!("{e:#}").split(": ").take(2).collect::<Vec<_>>(),
            [
                format!("starting the broker (data in {})", dir.path().display()).as_str(),
                format!("cannot listen on {busy}").as_str()
            ]
        );
    }
}
