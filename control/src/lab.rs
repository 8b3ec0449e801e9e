//! `uvlan lab`: builds a testbed in fresh network namespaces, drives the real `uvlan` binary
//! through it, prints the reachability matrix against the expected one, and cleans up.
//!
//! A testbed is a TOML file (see `testbeds/` and `docs/labs.md`):
//!
//! ```toml
//! name = "ipvlan-l3-no-parent"
//! title = "IPvlan L3, two subnets, no parent"
//! seed = "docker ipvlan driver: IPvlan L3 mode example"
//!
//! [[namespace]]            # extra namespaces; "host" (the daemon's) always exists
//! name = "up"
//! setup = ["ip addr add 192.0.2.1/24 dev p0"]
//!
//! [[link]]                 # veth pairs, created before any setup command
//! a = "host/eth0"
//! b = "up/p0"
//!
//! [[network]]
//! create = "network create -d ipvlan --subnet 192.168.214.0/24 -o ipvlan_mode=l3 ipnet210"
//!
//! [[endpoint]]
//! name = "c1"
//! network = "ipnet210"
//! ip = "192.168.214.10"
//!
//! [[check]]
//! from = "c1"
//! to = "c2"                # an endpoint (its IPv4; "c2/6" for IPv6), a namespace, or an IP
//! expect = "reach"         # or "unreachable"
//! ```
//!
//! Every namespace gets a unique prefix (`ulab<pid>-`) and is deleted on the way out, even on
//! failure or Ctrl-C. The daemon runs inside the testbed's own `host` namespace with its own
//! state directory, so a lab never touches the machine's network or another uvlan instance.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The testbeds shipped inside the binary (name, TOML text).
pub const EMBEDDED: &[(&str, &str)] = &[(
    "ipvlan-l3-no-parent",
    include_str!("../../testbeds/ipvlan-l3-no-parent.toml"),
)];

/// The testbed `uvlan lab` runs without an argument.
pub const DEFAULT_TESTBED: &str = "ipvlan-l3-no-parent";

/// A testbed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Testbed {
    /// Short name (also the file stem).
    pub name: String,
    /// One-line title.
    pub title: String,
    /// The seed document and example it reproduces.
    #[serde(default)]
    pub seed: String,
    /// What the lab shows, for the reader.
    #[serde(default)]
    pub description: String,
    /// Extra namespaces (and setup commands for `host`).
    #[serde(default)]
    pub namespace: Vec<NamespaceSpec>,
    /// veth pairs between namespaces.
    #[serde(default)]
    pub link: Vec<LinkSpec>,
    /// `uvlan` commands that create networks, in order.
    #[serde(default)]
    pub network: Vec<NetworkSpec>,
    /// Endpoints: one namespace each, connected to a network.
    #[serde(default)]
    pub endpoint: Vec<EndpointSpec>,
    /// Reachability checks.
    #[serde(default)]
    pub check: Vec<CheckSpec>,
    /// A full matrix: every ordered pair of `nodes` is checked.
    #[serde(default)]
    pub matrix: Option<MatrixSpec>,
}

/// A reachability matrix: every ordered pair of nodes is pinged (IPv4, or IPv6 with
/// `ipv6 = true`); two nodes reach each other exactly when one group holds both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    /// Endpoints or namespaces, in row/column order.
    pub nodes: Vec<String>,
    /// Groups of mutually reachable nodes.
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// Ping the nodes' IPv6 addresses instead of IPv4.
    #[serde(default)]
    pub ipv6: bool,
}

impl Testbed {
    /// The explicit checks followed by the ones the matrix generates.
    pub fn all_checks(&self) -> Vec<CheckSpec> {
        let mut v = self.check.clone();
        if let Some(m) = &self.matrix {
            for a in &m.nodes {
                for b in &m.nodes {
                    if a == b {
                        continue;
                    }
                    let together = m.groups.iter().any(|g| g.contains(a) && g.contains(b));
                    v.push(CheckSpec {
                        from: a.clone(),
                        to: if m.ipv6 { format!("{b}/6") } else { b.clone() },
                        expect: if together {
                            Expect::Reach
                        } else {
                            Expect::Unreachable
                        },
                    });
                }
            }
        }
        v
    }
}

/// A namespace of the testbed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// Name inside the testbed (`host` is the daemon's).
    pub name: String,
    /// Shell commands run inside it after the links exist.
    #[serde(default)]
    pub setup: Vec<String>,
}

/// A veth pair: `ns/ifname` on both ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
}

/// A network to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The `uvlan` arguments, e.g. `network create -d ipvlan ... NAME`.
    pub create: String,
}

/// An endpoint: a namespace connected to a network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Name (its namespace is `<prefix><name>`).
    pub name: String,
    /// The network.
    pub network: String,
    /// `--ip`.
    #[serde(default)]
    pub ip: Option<String>,
    /// `--ip6`.
    #[serde(default)]
    pub ip6: Option<String>,
    /// `--mac-address`.
    #[serde(default)]
    pub mac: Option<String>,
    /// Shell commands run inside after the connect.
    #[serde(default)]
    pub setup: Vec<String>,
}

/// Whether a check expects an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The ping is answered.
    Reach,
    /// No answer.
    Unreachable,
}

/// One reachability check (ICMP echo).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// An endpoint or namespace of the testbed.
    pub from: String,
    /// An endpoint (`c2`, or `c2/6` for its IPv6), a namespace, or a literal address.
    pub to: String,
    /// The expected outcome.
    pub expect: Expect,
}

/// What went wrong running a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// No such testbed.
    #[error("no testbed {0:?}: use one of {1} or a path to a .toml file")]
    Unknown(String, String),
    /// A testbed file that does not parse.
    #[error("testbed {path}: {msg}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        msg: String,
    },
    /// A testbed that refers to things it does not define.
    #[error("testbed {0}: {1}")]
    Invalid(String, String),
    /// A setup step failed.
    #[error("{step} failed: {detail}")]
    Step {
        /// What was being done.
        step: String,
        /// Output of the failing command.
        detail: String,
    },
    /// Needs root.
    #[error("uvlan lab needs root (it creates network namespaces): run it with sudo")]
    NotRoot,
    /// Interrupted.
    #[error("interrupted")]
    Interrupted,
    /// I/O.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check.
    pub check: CheckSpec,
    /// The address pinged.
    pub addr: IpAddr,
    /// Whether it answered.
    pub reached: bool,
}

impl CheckResult {
    /// Observed equals expected.
    pub fn ok(&self) -> bool {
        self.reached == (self.check.expect == Expect::Reach)
    }
}

/// The outcome of a lab.
#[derive(Debug, Clone)]
pub struct LabReport {
    /// The testbed.
    pub testbed: String,
    /// Every check.
    pub results: Vec<CheckResult>,
}

impl LabReport {
    /// All checks as expected.
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(CheckResult::ok)
    }

    /// The reachability matrix, expected against observed.
    pub fn matrix(&self) -> String {
        let mut rows: Vec<String> = Vec::new();
        let mut cols: Vec<String> = Vec::new();
        let mut cells: BTreeMap<(String, String), &CheckResult> = BTreeMap::new();
        for r in &self.results {
            if !rows.contains(&r.check.from) {
                rows.push(r.check.from.clone());
            }
            if !cols.contains(&r.check.to) {
                cols.push(r.check.to.clone());
            }
            cells.insert((r.check.from.clone(), r.check.to.clone()), r);
        }
        // columns in row order where they are also rows (a square matrix reads naturally)
        cols.sort_by_key(|c| rows.iter().position(|r| r == c).unwrap_or(usize::MAX));
        let w = cols.iter().map(|c| c.len()).chain([9]).max().unwrap_or(9) + 2;
        let rw = rows.iter().map(|r| r.len()).max().unwrap_or(4).max(9) + 2;
        let mut s = String::new();
        let _ = write!(s, "{:rw$}", "from \\ to");
        for c in &cols {
            let _ = write!(s, "{c:>w$}");
        }
        s.push('\n');
        for r in &rows {
            let _ = write!(s, "{r:rw$}");
            for c in &cols {
                let cell = match cells.get(&(r.clone(), c.clone())) {
                    None if r == c => "-".to_string(),
                    None => "·".to_string(),
                    Some(x) => {
                        let want = if x.check.expect == Expect::Reach {
                            "yes"
                        } else {
                            "no"
                        };
                        let got = if x.reached { "yes" } else { "no" };
                        if x.ok() {
                            got.to_string()
                        } else {
                            format!("{got}!={want}")
                        }
                    }
                };
                let _ = write!(s, "{cell:>w$}");
            }
            s.push('\n');
        }
        s
    }
}

/// Loads a testbed by embedded name or file path.
pub fn load(name_or_path: &str) -> Result<Testbed, LabError> {
    let (path, text) = match EMBEDDED.iter().find(|(n, _)| *n == name_or_path) {
        Some((n, t)) => (format!("{n} (embedded)"), t.to_string()),
        None => {
            let p = Path::new(name_or_path);
            let p = if p.exists() {
                p.to_path_buf()
            } else {
                let in_dir = Path::new("testbeds").join(format!("{name_or_path}.toml"));
                if !in_dir.exists() {
                    let names: Vec<&str> = EMBEDDED.iter().map(|(n, _)| *n).collect();
                    return Err(LabError::Unknown(
                        name_or_path.to_string(),
                        names.join(", "),
                    ));
                }
                in_dir
            };
            let t = std::fs::read_to_string(&p)
                .map_err(|e| LabError::Io(p.display().to_string(), e))?;
            (p.display().to_string(), t)
        }
    };
    let tb: Testbed = toml::from_str(&text).map_err(|e| LabError::Parse {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    validate(&tb)?;
    Ok(tb)
}

/// Checks that names used by links, endpoints and checks are defined.
pub fn validate(tb: &Testbed) -> Result<(), LabError> {
    let bad = |m: String| Err(LabError::Invalid(tb.name.clone(), m));
    let mut names: Vec<&str> = vec!["host"];
    for n in &tb.namespace {
        if n.name != "host" {
            names.push(&n.name);
        }
    }
    for e in &tb.endpoint {
        if names.contains(&e.name.as_str()) {
            return bad(format!("endpoint {} reuses a namespace name", e.name));
        }
        names.push(&e.name);
    }
    for l in &tb.link {
        for end in [&l.a, &l.b] {
            match end.split_once('/') {
                Some((ns, ifn)) if names.contains(&ns) && !ifn.is_empty() && ifn.len() <= 15 => {}
                _ => return bad(format!("link end {end:?} must be NAMESPACE/IFNAME with a known namespace and a name of at most 15 characters")),
            }
        }
    }
    if let Some(m) = &tb.matrix {
        for n in m.nodes.iter().chain(m.groups.iter().flatten()) {
            if !names.contains(&n.as_str()) {
                return bad(format!("matrix node {n:?}: no such endpoint or namespace"));
            }
        }
    }
    for c in &tb.all_checks() {
        if !names.contains(&c.from.as_str()) {
            return bad(format!(
                "check from {:?}: no such endpoint or namespace",
                c.from
            ));
        }
        let target = c.to.trim_end_matches("/6");
        if target.parse::<IpAddr>().is_err() && !names.contains(&target) {
            return bad(format!(
                "check to {:?}: not an address, endpoint or namespace",
                c.to
            ));
        }
    }
    if tb.all_checks().is_empty() {
        return bad("a testbed needs at least one check".into());
    }
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> Result<(), LabError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

fn run(cmd: &mut Command, step: &str) -> Result<String, LabError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Io(step.to_string(), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut d = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if d.is_empty() {
            d = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(LabError::Step {
            step: step.to_string(),
            detail: d,
        })
    }
}

/// Namespaces, daemon and state of a running lab; torn down on drop.
struct Env {
    prefix: String,
    namespaces: Vec<String>,
    daemon: Option<Child>,
    dir: PathBuf,
    exe: PathBuf,
}

impl Env {
    fn ns(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    fn add_ns(&mut self, name: &str) -> Result<String, LabError> {
        let ns = self.ns(name);
        run(
            Command::new("ip").args(["netns", "add", &ns]),
            &format!("ip netns add {ns}"),
        )?;
        self.namespaces.push(ns.clone());
        run(
            Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]),
            "lo up",
        )?;
        Ok(ns)
    }

    fn sh(&self, name: &str, cmd: &str) -> Result<String, LabError> {
        let ns = self.ns(name);
        run(
            Command::new("ip").args(["netns", "exec", &ns, "sh", "-c", cmd]),
            &format!("[{name}] {cmd}"),
        )
    }

    fn uvlan(&self, args: &[&str]) -> Result<String, LabError> {
        run(
            Command::new(&self.exe)
                .args(args)
                .env("UVLAN_SOCKET", self.dir.join("uvlan.sock"))
                .env("UVLAN_ROOT", self.dir.join("root")),
            &format!("uvlan {}", args.join(" ")),
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(d.id() as libc::pid_t, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = d.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn first_addr(env: &Env, name: &str, v6: bool) -> Result<IpAddr, LabError> {
    let fam = if v6 { "-6" } else { "-4" };
    let out = run(
        Command::new("ip").args([
            "-n",
            &env.ns(name),
            "-j",
            fam,
            "addr",
            "show",
            "scope",
            "global",
        ]),
        &format!("addresses of {name}"),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .find_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| LabError::Step {
            step: format!(
                "find the {} address of {name}",
                if v6 { "IPv6" } else { "IPv4" }
            ),
            detail: "it has none".into(),
        })
}

fn ping(env: &Env, from: &str, addr: IpAddr, want: Expect) -> Result<bool, LabError> {
    // An expected answer gets a few tries (the first may wait for ARP/ND); an expected silence
    // is established by two unanswered probes.
    let tries = if want == Expect::Reach { 4 } else { 2 };
    for _ in 0..tries {
        interrupted()?;
        let fam = if addr.is_ipv6() { "-6" } else { "-4" };
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                &env.ns(from),
                "ping",
                fam,
                "-n",
                "-q",
                "-c",
                "1",
                "-W",
                "1",
                &addr.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| LabError::Io("ping".into(), e))?;
        if st.success() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs a testbed; `log` receives progress lines. Returns the report (also when checks fail);
/// `Err` only when the lab could not be built.
pub fn run_lab(tb: &Testbed, exe: &Path, log: &mut dyn FnMut(&str)) -> Result<LabReport, LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    INTERRUPTED.store(false, Ordering::SeqCst);
    // SAFETY: installs a handler that only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("uvlan-lab-{pid}"));
    std::fs::create_dir_all(&dir).map_err(|e| LabError::Io(dir.display().to_string(), e))?;
    let mut env = Env {
        prefix: format!("ulab{pid}-"),
        namespaces: Vec::new(),
        daemon: None,
        dir,
        exe: exe.to_path_buf(),
    };
    log(&format!("uvlan lab {}: {}", tb.name, tb.title));
    if !tb.seed.is_empty() {
        log(&format!("  reproduces: {}", tb.seed));
    }
    // namespaces and links
    env.add_ns("host")?;
    for n in &tb.namespace {
        if n.name != "host" {
            env.add_ns(&n.name)?;
        }
    }
    for e in &tb.endpoint {
        env.add_ns(&e.name)?;
    }
    for l in &tb.link {
        let (an, ai) = l.a.split_once('/').unwrap_or(("", ""));
        let (bn, bi) = l.b.split_once('/').unwrap_or(("", ""));
        let (ans, bns) = (env.ns(an), env.ns(bn));
        run(
            Command::new("ip").args([
                "link", "add", ai, "netns", &ans, "type", "veth", "peer", "name", bi, "netns", &bns,
            ]),
            &format!("veth {} <-> {}", l.a, l.b),
        )?;
        run(
            Command::new("ip").args(["-n", &ans, "link", "set", ai, "up"]),
            "link up",
        )?;
        run(
            Command::new("ip").args(["-n", &bns, "link", "set", bi, "up"]),
            "link up",
        )?;
    }
    for n in &tb.namespace {
        for c in &n.setup {
            interrupted()?;
            env.sh(&n.name, &c.replace("{prefix}", &env.prefix))?;
        }
    }
    // the daemon, inside the host namespace
    let sock = env.dir.join("uvlan.sock");
    let child = Command::new("ip")
        .args(["netns", "exec", &env.ns("host")])
        .arg(&env.exe)
        .arg("daemon")
        .arg("--root")
        .arg(env.dir.join("root"))
        .arg("--socket")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(env.dir.join("daemon.log"))
                .map_err(|e| LabError::Io("daemon log".into(), e))?,
        )
        .spawn()
        .map_err(|e| LabError::Io("start uvlan daemon".into(), e))?;
    env.daemon = Some(child);
    let t = Instant::now();
    while !sock.exists() {
        interrupted()?;
        if t.elapsed() > Duration::from_secs(10) {
            let logtext = std::fs::read_to_string(env.dir.join("daemon.log")).unwrap_or_default();
            return Err(LabError::Step {
                step: "start uvlan daemon".into(),
                detail: logtext.trim().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in &tb.network {
        interrupted()?;
        let args: Vec<&str> = n.create.split_whitespace().collect();
        env.uvlan(&args)?;
        log(&format!("  uvlan {}", n.create));
    }
    for e in &tb.endpoint {
        interrupted()?;
        let ns = env.ns(&e.name);
        let mut args: Vec<&str> = vec!["network", "connect"];
        if let Some(ip) = &e.ip {
            args.extend(["--ip", ip]);
        }
        if let Some(ip) = &e.ip6 {
            args.extend(["--ip6", ip]);
        }
        if let Some(m) = &e.mac {
            args.extend(["--mac-address", m]);
        }
        args.extend([e.network.as_str(), ns.as_str()]);
        env.uvlan(&args)?;
        for c in &e.setup {
            env.sh(&e.name, &c.replace("{prefix}", &env.prefix))?;
        }
        log(&format!(
            "  endpoint {} on {}{}",
            e.name,
            e.network,
            e.ip.as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default()
        ));
    }
    let mut results = Vec::new();
    for c in &tb.all_checks() {
        interrupted()?;
        let (target, v6) = match c.to.strip_suffix("/6") {
            Some(t) => (t, true),
            None => (c.to.as_str(), false),
        };
        let addr = match target.parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => first_addr(&env, target, v6)?,
        };
        let reached = ping(&env, &c.from, addr, c.expect)?;
        let r = CheckResult {
            check: c.clone(),
            addr,
            reached,
        };
        log(&format!(
            "  ping {} -> {} ({}): {}{}",
            c.from,
            c.to,
            addr,
            if reached { "reached" } else { "no answer" },
            if r.ok() { "" } else { "   <-- NOT AS EXPECTED" }
        ));
        results.push(r);
    }
    Ok(LabReport {
        testbed: tb.name.clone(),
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_testbed_parses_and_validates() {
        for (name, _) in EMBEDDED {
            let tb = load(name).unwrap();
            assert_eq!(&tb.name, name);
        }
        assert!(EMBEDDED.iter().any(|(n, _)| *n == DEFAULT_TESTBED));
    }

    #[test]
    fn every_testbed_file_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbeds");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let tb = load(p.to_str().unwrap()).unwrap();
                assert_eq!(
                    Some(tb.name.as_str()),
                    p.file_stem().and_then(|s| s.to_str())
                );
                n += 1;
            }
        }
        assert!(n >= EMBEDDED.len());
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let bad = r#"
name = "x"
title = "x"
[[endpoint]]
name = "c1"
network = "n"
[[check]]
from = "c9"
to = "c1"
expect = "reach"
"#;
        let tb: Testbed = toml::from_str(bad).unwrap();
        let e = validate(&tb).unwrap_err().to_string();
        assert!(e.contains("c9"), "{e}");
        assert!(toml::from_str::<Testbed>("name='x'\ntitle='y'\nbogus=1").is_err());
    }

    #[test]
    fn matrix_marks_mismatches() {
        let mk = |from: &str, to: &str, expect, reached| CheckResult {
            check: CheckSpec {
                from: from.into(),
                to: to.into(),
                expect,
            },
            addr: "192.0.2.1".parse().unwrap(),
            reached,
        };
        let r = LabReport {
            testbed: "t".into(),
            results: vec![
                mk("c1", "c2", Expect::Reach, true),
                mk("c2", "c1", Expect::Unreachable, true),
            ],
        };
        assert!(!r.passed());
        let m = r.matrix();
        assert!(m.contains("yes!=no"), "{m}");
    }
}
