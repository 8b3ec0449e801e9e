//! `uvlan doctor`: what this kernel and sandbox offer, and what uvlan will therefore do, on
//! one screen.
//!
//! Everything is probed for real, never inferred from version numbers: a TAP is opened, BPF
//! programs are loaded and attached, a parent is opened as the dataplane opens one, links of
//! the kernel's ipvlan, macvlan, 8021q and dummy drivers are made — all inside a scratch
//! network namespace that disappears with the probe thread (`scratch.rs`) — and an io_uring
//! is set up and asked for its opcodes. Nothing is left behind (a module the kernel loads to
//! make a link stays loaded, as after `ip link add`).
//!
//! The exit status is non-zero only when uvlan cannot work at all: not root, no network
//! namespaces, or no TAP. Everything else limits what uvlan does (no AF_XDP: the AF_PACKET
//! fallback; neither: only networks without a parent) and is said so.

mod host;
mod scratch;

use std::fmt::Write as _;

use serde::Serialize;

use uvlan_dataplane::port::probe::{self, IoUringProbe, TapProbe};
use uvlan_dataplane::port::tap::Offloads;
use uvlan_dataplane::port::xsk::{BindMode, XdpMode};

pub use host::Host;
pub use scratch::{KernelDriver, Scratch};

/// File descriptors the daemon holds whatever the number of endpoints (sockets, epoll,
/// netlink, state files).
pub const FD_RESERVE: u64 = 64;
/// File descriptors per endpoint (measured with a namespace endpoint): the TAP, its
/// namespace, and two netlink sockets in that namespace.
pub const FDS_PER_ENDPOINT: u64 = 4;
/// More per fast-path endpoint (`uvlan daemon --fast-path`): the `bpf_link`s of its two
/// programs.
pub const FDS_PER_FAST_EXTRA: u64 = 2;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Works, with less than uvlan could use.
    Limited,
    /// Absent or refused.
    Missing,
    /// Not probed (says why).
    Skipped,
    /// A fact, neither good nor bad.
    Info,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "yes",
            Status::Limited => "partly",
            Status::Missing => "no",
            Status::Skipped => "skipped",
            Status::Info => "",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable key for scripts (`tun`, `offloads`, `af_xdp`, ...).
    pub id: &'static str,
    /// What the line is about.
    pub title: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
}

/// The whole report (`--format json` prints it as it is).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// Whether the probes ran as root.
    pub root: bool,
    /// Every check, in screen order.
    pub checks: Vec<Check>,
    /// The kernel's own drivers uvlan stands in for.
    pub kernel_drivers: Vec<KernelDriver>,
    /// What uvlan will do here, one sentence each.
    pub plan: Vec<String>,
    /// Whether uvlan can work here at all.
    pub works: bool,
    /// Why not, when it cannot.
    pub reason: Option<String>,
}

impl Report {
    /// The process exit status: 0 when uvlan can work here, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.works {
            0
        } else {
            1
        }
    }

    /// The one-screen text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let who = if self.root { "" } else { "not " };
        let _ = writeln!(
            out,
            "uvlan doctor: Linux {}, {who}running as root",
            self.kernel
        );
        let width = self.checks.iter().map(|c| c.title.len()).max().unwrap_or(0) + 2;
        for c in &self.checks {
            let word = c.status.word();
            let sep = if word.is_empty() { "" } else { ": " };
            let _ = writeln!(out, "  {:<width$}{word}{sep}{}", c.title, c.detail);
        }
        if !self.plan.is_empty() {
            let _ = writeln!(out, "What uvlan will do here:");
            for p in &self.plan {
                let _ = writeln!(out, "  - {p}");
            }
        }
        match &self.reason {
            None => {
                let _ = writeln!(out, "uvlan works here.");
            }
            Some(r) => {
                let _ = writeln!(out, "uvlan cannot work here: {r}");
            }
        }
        out
    }
}

fn offload_names(o: Offloads) -> String {
    o.to_string().replace('|', ", ")
}

fn xdp_mode(m: XdpMode) -> &'static str {
    match m {
        XdpMode::Native => "native",
        XdpMode::Generic => "generic",
    }
}

fn bind_mode(m: BindMode) -> &'static str {
    match m {
        BindMode::Copy => "copy",
        BindMode::ZeroCopy => "zero-copy",
    }
}

fn check(id: &'static str, title: &'static str, status: Status, detail: String) -> Check {
    Check {
        id,
        title,
        status,
        detail,
    }
}

fn pass_fail(r: &Result<(), String>, ok: &str) -> (Status, String) {
    match r {
        Ok(()) => (Status::Ok, ok.to_string()),
        Err(e) if e.starts_with("not tried") => (Status::Skipped, e.clone()),
        Err(e) => (Status::Missing, e.clone()),
    }
}

/// What the probes found, before it is put in words.
pub struct Findings {
    /// `uname -r`.
    pub kernel: String,
    /// Running as root.
    pub root: bool,
    /// The scratch namespace's probes, or why no namespace could be made (`None`: not
    /// root, not tried).
    pub scratch: Option<Result<Scratch, String>>,
    /// The io_uring probe.
    pub io_uring: IoUringProbe,
    /// The host's facts.
    pub host: Host,
}

/// Runs every probe.
pub fn probe_all() -> Findings {
    let root = crate::sys::is_root();
    let scratch = root.then(|| scratch::run().map_err(|e| e.to_string()));
    Findings {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "(unknown)".to_string()),
        root,
        scratch,
        io_uring: probe::io_uring(),
        host: Host::probe(),
    }
}

/// Puts the findings in words: the checks, the plan and the verdict.
pub fn report(f: &Findings) -> Report {
    let mut checks = Vec::new();
    let mut plan = Vec::new();
    let mut fatal: Option<String> = None;
    if !f.root {
        fatal = Some(
            "uvlan's daemon runs as root: run uvlan doctor as root (or with sudo) to probe \
             namespaces, TAPs and BPF"
                .to_string(),
        );
    }

    // Namespaces and TAP endpoints.
    let skipped = |why: &str| (Status::Skipped, why.to_string());
    let (ns, tap): ((Status, String), Result<TapProbe, (Status, String)>) = match &f.scratch {
        None => (skipped("needs root"), Err(skipped("needs root"))),
        Some(Err(e)) => {
            fatal.get_or_insert_with(|| {
                format!("no network namespace can be created ({e}): endpoints live in namespaces")
            });
            (
                (Status::Missing, format!("unshare(CLONE_NEWNET): {e}")),
                Err(skipped("no namespace to open it in")),
            )
        }
        Some(Ok(s)) => (
            (Status::Ok, "a scratch namespace was made".to_string()),
            s.tap.clone().map_err(|e| (Status::Missing, e)),
        ),
    };
    checks.push(check("netns", "network namespaces", ns.0, ns.1));
    match &tap {
        Ok(t) => {
            checks.push(check(
                "tun",
                "TUN/TAP",
                Status::Ok,
                "a TAP with a vnet header opened".to_string(),
            ));
            let all = t.offloads == Offloads::DEFAULT;
            checks.push(check(
                "offloads",
                "vnet_hdr offloads",
                if all { Status::Ok } else { Status::Limited },
                format!(
                    "{} (uvlan asks for {})",
                    offload_names(t.offloads),
                    offload_names(Offloads::DEFAULT)
                ),
            ));
            let (st, d) = match &t.prefilter {
                Ok(()) => (
                    Status::Ok,
                    "a prefilter attaches to a TAP (TUNSETFILTEREBPF)".to_string(),
                ),
                Err(e) => (
                    Status::Limited,
                    format!("{e}: the dataplane reads and drops what a prefilter would"),
                ),
            };
            checks.push(check("tap_filter", "TAP prefilter", st, d));
            let (st, d) = match f.scratch.as_ref().map(|s| s.as_ref().map(|s| &s.multicast)) {
                Some(Ok(Ok(()))) => (
                    Status::Ok,
                    "endpoints get only the groups they join (RTM_NEWMULTICAST)".to_string(),
                ),
                Some(Ok(Err(e))) => (
                    Status::Limited,
                    format!(
                        "{e}: endpoints get every multicast group (their stacks drop what they \
                         did not join)"
                    ),
                ),
                _ => (Status::Skipped, "not tried".to_string()),
            };
            checks.push(check("mc_filter", "multicast filters", st, d));
            plan.push(if t.offloads.is_empty() {
                "endpoints: TAPs without offloads (senders checksum and segment every frame)"
                    .to_string()
            } else {
                format!(
                    "endpoints: TAPs with offloads ({}), GSO frames cross whole",
                    offload_names(t.offloads)
                )
            });
        }
        Err((status, e)) => {
            if *status == Status::Missing {
                fatal.get_or_insert_with(|| format!("no TAP can be opened: {e}"));
            }
            checks.push(check("tun", "TUN/TAP", *status, e.clone()));
            checks.push(check(
                "offloads",
                "vnet_hdr offloads",
                Status::Skipped,
                "no TAP".to_string(),
            ));
            checks.push(check(
                "tap_filter",
                "TAP prefilter",
                Status::Skipped,
                "no TAP".to_string(),
            ));
            checks.push(check(
                "mc_filter",
                "multicast filters",
                Status::Skipped,
                "no TAP".to_string(),
            ));
        }
    }

    // Parents.
    match &f.scratch {
        Some(Ok(s)) => parents(s, &mut checks, &mut plan),
        _ => {
            for (id, title) in [
                ("bpf", "BPF"),
                ("af_xdp", "AF_XDP"),
                ("tcx", "tcx"),
                ("fast_path", "fast path"),
                ("af_packet", "AF_PACKET parent"),
            ] {
                checks.push(check(id, title, Status::Skipped, "needs root".to_string()));
            }
        }
    }

    // io_uring.
    let io = &f.io_uring;
    match (&io.ring, io.refusal()) {
        (Ok(ops), _) => {
            let yes = |b: bool| if b { "yes" } else { "no" };
            let status = if ops.read_multishot && ops.poll_add {
                Status::Ok
            } else {
                Status::Limited
            };
            checks.push(check(
                "io_uring",
                "io_uring",
                status,
                format!(
                    "READ_MULTISHOT {}, POLL_ADD {}",
                    yes(ops.read_multishot),
                    yes(ops.poll_add)
                ),
            ));
            plan.push(format!(
                "event loop: io_uring can be used (READ_MULTISHOT {}), else poll(2)",
                yes(ops.read_multishot)
            ));
        }
        (Err(e), why) => {
            let why = why.map(|w| w.to_string()).unwrap_or_default();
            checks.push(check(
                "io_uring",
                "io_uring",
                Status::Missing,
                format!("{why} ({e})"),
            ));
            plan.push(format!("event loop: poll(2) (io_uring {why})"));
        }
    }

    // The kernel's own drivers.
    let kernel_drivers = match &f.scratch {
        Some(Ok(s)) => s.kernel.clone(),
        _ => Vec::new(),
    };
    kernel(&kernel_drivers, &mut checks, &mut plan);

    f.host.checks(&mut checks, &mut plan);

    Report {
        kernel: f.kernel.clone(),
        root: f.root,
        checks,
        kernel_drivers,
        plan,
        works: fatal.is_none(),
        reason: fatal,
    }
}

/// The kernel drivers line, and what having some of them means.
fn kernel(drivers: &[KernelDriver], checks: &mut Vec<Check>, plan: &mut Vec<String>) {
    if drivers.is_empty() {
        checks.push(check(
            "kernel_drivers",
            "kernel drivers",
            Status::Skipped,
            "needs root".to_string(),
        ));
        return;
    }
    let list: Vec<String> = drivers
        .iter()
        .map(|k| {
            let yes = if k.error.is_none() { "yes" } else { "no" };
            format!("{} {yes}", k.module)
        })
        .collect();
    checks.push(check(
        "kernel_drivers",
        "kernel drivers",
        Status::Info,
        list.join(", "),
    ));
    let lack: Vec<&str> = drivers
        .iter()
        .filter(|k| k.error.is_some())
        .map(|k| k.module)
        .collect();
    let usable: Vec<&str> = ["ipvlan", "macvlan"]
        .into_iter()
        .filter(|m| drivers.iter().any(|k| k.module == *m && k.error.is_none()))
        .collect();
    if usable.is_empty() {
        return;
    }
    let lacking = if lack.is_empty() {
        String::new()
    } else {
        format!("; uvlan stands in for {}", lack.join(", "))
    };
    plan.push(format!(
        "the kernel's own {} driver works here: Docker's and CNI's {} networks need no uvlan, \
         if you prefer the kernel's (VLAN parents also need 8021q, parent-less networks \
         dummy){lacking}",
        usable.join(" and "),
        usable.join("/"),
    ));
}

fn parents(s: &Scratch, checks: &mut Vec<Check>, plan: &mut Vec<String>) {
    let (st, d) = pass_fail(&s.bpf, "programs load (uvlan assembles its own)");
    checks.push(check("bpf", "BPF", st, d));
    let modes = match (&s.xdp_native, &s.xdp_generic) {
        (Ok(()), Ok(())) => "native and generic XDP attach".to_string(),
        (Ok(()), Err(e)) => format!("native XDP attaches; generic: {e}"),
        (Err(e), Ok(())) => format!("generic XDP attaches; native: {e}"),
        (Err(e), Err(_)) => format!("XDP does not attach: {e}"),
    };
    let (st, d) = match &s.af_xdp {
        Ok((x, b)) => (
            Status::Ok,
            format!(
                "a parent opened ({} XDP, {} sockets) on a veth; {modes}",
                xdp_mode(*x),
                bind_mode(*b)
            ),
        ),
        Err(e) if e.starts_with("not tried") => (Status::Skipped, e.clone()),
        Err(e) => (Status::Missing, format!("{e}; {modes}")),
    };
    checks.push(check("af_xdp", "AF_XDP", st, d));
    let (st, d) = pass_fail(&s.tcx, "a tcx ingress program attaches");
    checks.push(check("tcx", "tcx", st, d));
    let fast_ok = if uvlan_dataplane::port::probe::xdp_metadata() {
        "the cache programs load (tcx, bpf_redirect_peer, a socket filter); one attaches to a veth"
    } else {
        "the cache programs load (tcx, bpf_redirect_peer, a socket filter); one attaches to a \
         veth; on AF_XDP parents wire → endpoint frames take the slow path (this kernel refuses \
         bpf_xdp_adjust_meta to XDP programs; `uvlan daemon --wire-backend af_packet` gives \
         parents a wire cache that does not need it)"
    };
    let (st, d) = pass_fail(&s.fast_path, fast_ok);
    checks.push(check("fast_path", "fast path", st, d));
    let (st, d) = pass_fail(&s.af_packet, "a parent opened (socket and tcx filter)");
    checks.push(check("af_packet", "AF_PACKET parent", st, d));
    plan.push(match (&s.af_xdp, &s.af_packet) {
        (Ok(_), _) => "parents: AF_XDP behind uvlan's XDP filter (native XDP where the NIC's \
                       driver has it, else generic), host traffic untouched"
            .to_string(),
        (Err(_), Ok(())) => {
            "parents: AF_PACKET with the tcx ingress filter (AF_XDP cannot be used here)"
                .to_string()
        }
        (Err(_), Err(e)) => format!(
            "parents: none can be opened ({e}): only networks without a parent (isolated, \
             --internal) work"
        ),
    });
}

#[cfg(test)]
mod tests;
