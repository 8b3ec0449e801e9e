//! Helpers shared by the dataplane's root tests that build namespaces: running `ip`, a lab
//! of namespaces deleted on drop (each test file with its own name prefix), and a resolver
//! that routes nothing.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use uvlan_dataplane::run::{NextHop, Resolver};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command; its standard output, or an error naming it with its output.
pub fn run(cmd: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// [`run`], panicking on failure.
pub fn must(cmd: &[&str]) -> String {
    run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip -n NS ARGS`.
pub fn ip(ns: &str, args: &[&str]) -> String {
    let mut c = vec!["ip", "-n", ns];
    c.extend_from_slice(args);
    must(&c)
}

/// `ip netns exec NS ARGS`.
pub fn exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut c = vec!["ip", "netns", "exec", ns];
    c.extend_from_slice(args);
    run(&c)
}

/// Namespaces named `PREFIX-PID-N…`, deleted on drop.
pub struct Lab {
    prefix: &'static str,
    n: u32,
    names: Vec<String>,
}

impl Lab {
    /// A lab whose namespaces start with `prefix` (unique per test file).
    pub fn new(prefix: &'static str) -> Lab {
        Lab {
            prefix,
            n: SEQ.fetch_add(1, Ordering::SeqCst),
            names: Vec::new(),
        }
    }

    /// A fresh namespace with `lo` up.
    pub fn ns(&mut self, name: &str) -> String {
        let full = format!("{}-{}-{}{}", self.prefix, std::process::id(), self.n, name);
        let _ = run(&["ip", "netns", "del", &full]);
        must(&["ip", "netns", "add", &full]);
        self.names.push(full.clone());
        ip(&full, &["link", "set", "lo", "up"]);
        full
    }

    /// A short interface name unique to this test (≤ 15 bytes).
    pub fn ifname(&self, suffix: &str) -> String {
        let s = format!(
            "{}{}{}{}",
            self.prefix,
            std::process::id() % 100_000,
            self.n,
            suffix
        );
        assert!(s.len() <= 15, "{s}");
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

/// A resolver that routes nothing.
pub struct NoRoutes;

impl Resolver for NoRoutes {
    fn resolve(&mut self, _ifindex: u32, _dst: std::net::IpAddr) -> NextHop {
        NextHop::Unreachable
    }
}
