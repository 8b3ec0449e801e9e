//! Where the daemon's log lines go: shared by the daemon and its front ends.

use std::sync::Arc;

/// Where the daemon writes its log lines (stderr in the binary).
pub type Logger = Arc<dyn Fn(&str) + Send + Sync>;

/// A logger printing `uvlan daemon: MESSAGE` lines with a UTC timestamp on stderr.
pub fn stderr_logger() -> Logger {
    Arc::new(|msg: &str| eprintln!("{} uvlan daemon: {msg}", crate::ids::now_rfc3339()))
}
