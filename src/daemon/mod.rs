//! The daemon: a command line around a registry of topologies.
//!
//! ```no_run
//! use weir::prelude::*;
//!
//! fn shouting() -> Result<Topology, TopologyError> {
//!     let mut b = StreamsBuilder::new();
//!     b.stream::<String, String>("in", Serdes::string(), Serdes::string())
//!         .map_values(|_, line| line.to_uppercase())
//!         .to("out", Serdes::string(), Serdes::string());
//!     b.build()
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     weir::Daemon::new().register("shouting", "upper-cases every line", shouting).main()
//! }
//! ```
//!
//! The `weir` binary is this with the five built-in scenarios
//! ([`crate::scenarios::register_all`]).

pub mod app;
mod broker;
mod cli;
pub mod config;
pub mod feed;
mod generate;
pub mod http;
pub mod ingress;
mod query;
mod run;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use weir_topology::{Topology, TopologyError};

pub use app::Body;
pub use app::{App, AppParts, Context, GeneratedRecord, Generator, GeneratorSpec, Request, Route, Service};
pub use feed::FeedSpec;
pub use hyper::{Method, StatusCode};

/// What a route handler returns.
pub type Response = hyper::Response<Body>;

/// A set of registered topologies and the `weir` command line to run them.
#[derive(Default)]
pub struct Daemon {
    apps: Vec<App>,
}

impl Daemon {
    pub fn new() -> Daemon {
        Daemon::default()
    }

    /// Register a topology without parameters under `name` (its
    /// application id: consumer group, internal topic prefix, state).
    pub fn register<F>(self, name: &str, description: &str, build: F) -> Daemon
    where
        F: Fn() -> Result<Topology, TopologyError> + Send + Sync + 'static,
    {
        self.app(App::new(name, description, build))
    }

    /// Register an app: a topology with parameters, routes, services or a
    /// generator. A second registration of the same name panics (a
    /// programming error, found at the first start).
    pub fn app(mut self, app: App) -> Daemon {
        assert!(
            self.apps.iter().all(|a| a.name != app.name),
            "topology {:?} registered twice",
            app.name
        );
        self.apps.push(app);
        self
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.apps.iter().map(|a| a.name.as_str()).collect()
    }

    /// Parse the process's arguments and run the command; errors print as
    /// one line `weir: ...` and exit with status 1.
    ///
    /// The process runs without transparent huge pages (see
    /// [`no_transparent_huge_pages`]).
    pub fn main(self) -> ExitCode {
        no_transparent_huge_pages();
        self.main_from(std::env::args_os())
    }

    /// [`Daemon::main`] with explicit arguments (the first is the program name).
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = cli::Cli::parse_from(args);
        cli::init_logging(&cli);
        match cli::run(self, cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weir: {}", one_line(&format!("{e:#}")));
                ExitCode::FAILURE
            }
        }
    }

    fn find(&self, name: &str) -> anyhow::Result<&App> {
        self.apps
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| anyhow::anyhow!("unknown topology {name:?} (registered: {})", self.names().join(", ")))
    }
}

/// Errors print on one line, whatever their sources put in them.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns transparent huge pages off for this process (and the processes it
/// starts), through `prctl(PR_SET_THP_DISABLE)`.
///
/// Why: mimalloc asks the kernel for huge pages on its arenas
/// (`MADV_HUGEPAGE`), so every fresh 2 MiB of heap is faulted in and zeroed
/// whole even when a stream thread uses a little of it, and memory that
/// mimalloc purges and reuses is zeroed again. On `weir bench e2e
/// --topology windowed-count` the kernel's page clearing was the largest
/// single cost of the process (a fifth of its CPU); without huge pages weir
/// used 22 % less CPU and 25 % less peak memory (BENCHMARKS.md). weir's
/// heap is many small, short-lived objects, which gain nothing from huge
/// pages. Failure (not Linux, or a kernel without the call) changes
/// nothing and is ignored.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no
    // memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
