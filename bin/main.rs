//! The `weir` command: the daemon with the five built-in scenarios
//! registered. A daemon of your own topologies is the same few lines (see
//! the README and `examples/`).

fn main() -> std::process::ExitCode {
    weir::scenarios::register_all(weir::Daemon::new()).main()
}
