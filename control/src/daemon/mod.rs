//! The uvlan daemon: owns the dataplane, every endpoint TAP, the IPAM and the state store,
//! and serves the API.
//!
//! Every mutating request runs under one lock, validates everything first, works on copies
//! (the IPAM address space is cloned), undoes its side effects on failure, writes the store,
//! and only then commits. A failed request leaves the state as it was.

pub mod dp;
pub mod endpoint;
pub mod host;
mod managed;
pub mod options;
mod parents;
pub mod real;
mod server;
mod state;
mod stats;
mod trace;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use server::{run_daemon, DaemonError, DaemonOptions};
pub use state::Daemon;

/// Where the daemon writes its log lines (stderr in the binary).
pub type Logger = Arc<dyn Fn(&str) + Send + Sync>;

/// A logger printing `uvlan daemon: MESSAGE` lines with a UTC timestamp on stderr.
pub fn stderr_logger() -> Logger {
    Arc::new(|msg: &str| eprintln!("{} uvlan daemon: {msg}", crate::ids::now_rfc3339()))
}

/// Joins a possibly multi-line error text into one line (the CLI prints one line per
/// error; Docker's multi-error lists keep their `* ` markers).
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
