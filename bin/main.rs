//! The `weir` command: the daemon with the five built-in scenarios
//! registered. A daemon of your own topologies is the same few lines (see
//! the README and `examples/`).

/// mimalloc instead of glibc malloc: restoring a store (sled copies a node
/// per insert) and the stream thread's per-record allocations run markedly
/// faster with it (BENCHMARKS.md, `bench restore`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir::scenarios::register_all(weir::Daemon::new()).main()
}
