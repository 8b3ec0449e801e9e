//! `uvlan lab`: builds a testbed in fresh network namespaces, drives the real `uvlan` binary
//! through it, checks reachability, wire captures and command output against what the seed
//! documents, prints the matrices, and cleans up.
//!
//! # The testbed format (TOML; `testbeds/*.toml`, walk-through in `docs/labs.md`)
//!
//! ```toml
//! name = "ipvlan-8021q-trunk"      # = the file stem; `uvlan lab NAME`
//! title = "IPvlan L2 on an 802.1Q trunk"
//! seed = "docker ipvlan driver: VLAN ID 20 / VLAN ID 30"
//! description = "what the lab shows; how it differs from the seed's physical setup"
//!
//! [[host]]                   # a uvlan host: a namespace with its own private daemon.
//! name = "host"              # Without any [[host]] there is one, named "host".
//! setup = ["ip addr add 192.168.1.250/24 dev eth0"]
//!
//! [[namespace]]              # other namespaces: switches, routers, upstream hosts
//! name = "gw20"
//! setup = ["ip addr add 192.168.20.1/24 dev p0"]
//!
//! [[link]]                   # a veth pair, NAMESPACE/IFNAME at each end
//! a = "host/eth0"
//! b = "sw/trunk"
//!
//! [[bridge]]                 # a Linux bridge (no VLAN filtering, STP and snooping off)
//! ns = "sw"
//! name = "br0"
//! ports = ["trunk", "p20"]
//! hairpin = []               # ports that reflect frames back (VEPA's reflective relay)
//!
//! [[vlan_access]]            # the host behind this device sits on VLAN `vid` untagged
//! dev = "gw20/p0"            # (tcx programs: pop on ingress, push on egress)
//! vid = 20
//!
//! [[network]]
//! host = "host"              # optional when there is a single host
//! create = "network create -d ipvlan --subnet=192.168.20.0/24 -o parent=eth0.20 ipvlan20"
//!
//! [[endpoint]]               # a namespace connected with `uvlan network connect`
//! name = "ivlan_test1"       # (the seed's `docker run --name`)
//! network = "ipvlan20"
//! ip = "192.168.20.10"       # optional: --ip, ip6 = --ip6, mac = --mac-address
//!
//! [[run]]                    # a command: `ns` + `cmd` (shell), or `uvlan` (+ `host`)
//! ns = "ivlan_test1"
//! cmd = "ip route"
//! show = true                # print its output
//! expect = ["default via 192.168.20.1 dev eth0"]   # makes it a check (also: absent, fails)
//!
//! [[check]]                  # one ping; an explicit check overrides the matrix cell
//! from = "ivlan_test1"
//! to = "gw20"                # endpoint/namespace (its first global IPv4; "gw20/6" for
//! expect = "reach"           # IPv6) or an address; "reach" or "unreachable"
//!
//! [matrix]                   # or [[matrix]] several times (e.g. one with ipv6 = true)
//! nodes = ["ivlan_test1", "ivlan_test2", "gw20"]
//! groups = [["ivlan_test1", "ivlan_test2", "gw20"]]   # reach iff a group holds both
//!
//! [[capture]]                # tcpdump on a device while the stage runs
//! ns = "sw"
//! dev = "trunk"
//! filter = "vlan 20 and icmp"  # a pcap filter; placeholders allowed
//! expect = "seen"            # or "none"
//!
//! [[step]]                   # a later stage: more commands, then its own checks
//! title = "the router comes up"
//! [[step.run]]
//! ns = "rtr"
//! cmd = "ip link set p0 up"
//! [step.matrix]
//! nodes = ["a", "b"]
//! groups = [["a", "b"]]
//! ```
//!
//! Placeholders in commands, filters and expectations: `{prefix}` (the lab's namespace
//! prefix), `{ns:NAME}` (the full namespace name, e.g. for `uvlan network connect NET
//! {ns:c1}`), `{mac:NAME}` (the MAC of endpoint NAME's `eth0`) and `{mac:NS/IF}`.
//!
//! # How a lab runs
//! 1. Namespaces for hosts, `[[namespace]]`s and endpoints (prefix `ulab<pid>-`), then the
//!    veth pairs (brought up; TX VLAN offload turned off on every end unless
//!    `veth_tx_vlan_offload = true`, so tags travel inside the frame as on a physical wire),
//!    bridges, VLAN access ports, and the setup commands (hosts first).
//! 2. One `uvlan daemon` per host, inside the host's namespace, with its own state directory
//!    and socket; then the networks and endpoints, in file order.
//! 3. Stages: stage 1 is the top-level `run`/`check`/`matrix`/`capture`, each `[[step]]` is
//!    one more. A stage starts once the pinging namespaces have no address resolution left
//!    over from the stage before. In a stage: captures start, commands run, every ping runs
//!    in parallel (`ping -c 1 -i 0.2 -w 3`: the same patience whatever the expectation),
//!    captures stop and are evaluated.
//! 4. Everything is torn down on the way out, also on failure or Ctrl-C: captures,
//!    VLAN access programs, daemons, namespaces, the state directory. With the environment
//!    variable `UVLAN_LAB_HOLD` set, the lab stays up after the last stage (with hints on
//!    what to look at) until Enter or Ctrl-C.
//!
//! A lab never touches the machine's own interfaces or another uvlan instance.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uvlan_dataplane::port::vlan_access::VlanAccess;

mod embedded;
mod report;
mod schema;
mod validate;

pub use embedded::{DEFAULT_TESTBED, EMBEDDED};
pub use report::{ActionResult, CaptureResult, CheckResult, LabReport, StageReport};
pub use schema::{
    split_args, ActionSpec, BridgeSpec, CaptureExpect, CaptureSpec, CheckSpec, EndpointSpec,
    Expect, HostSpec, LinkSpec, MatrixSpec, NamespaceSpec, NetworkSpec, Stage, StepSpec, Testbed,
    VlanAccessSpec, DEFAULT_HOST,
};
use schema::{split_dev, uvlan_args};
pub use validate::validate;

/// How long one ping check may take (`ping -w`), in seconds.
const PING_DEADLINE_S: &str = "3";

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

/// Loads a testbed by embedded name or file path (or `testbeds/NAME.toml`).
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
    parse(&path, &text)
}

/// Parses and validates testbed text (`path` names it in errors).
pub fn parse(path: &str, text: &str) -> Result<Testbed, LabError> {
    let tb: Testbed = toml::from_str(text).map_err(|e| LabError::Parse {
        path: path.to_string(),
        msg: e.to_string(),
    })?;
    validate(&tb)?;
    Ok(tb)
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

/// Runs a command and returns (success, stdout + stderr).
fn output(cmd: &mut Command, step: &str) -> Result<(bool, String), LabError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Io(step.to_string(), e))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
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

fn signal(child: &Child, sig: libc::c_int) {
    // The child is ours and not yet reaped, so its pid is still its own.
    let _ = crate::sys::send_signal(child.id(), sig);
}

/// Stops a child politely (`sig`), then for good after `grace`.
fn stop(child: &mut Child, sig: libc::c_int, grace: Duration) {
    signal(child, sig);
    let t = Instant::now();
    while t.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A running tcpdump writing a pcap file.
struct Capturer {
    ns: String,
    dev: String,
    file: PathBuf,
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

/// Namespaces, daemons, programs and captures of a running lab; torn down on drop.
struct Env {
    prefix: String,
    namespaces: Vec<String>,
    daemons: Vec<(String, Child)>,
    access: Vec<VlanAccess>,
    captures: Vec<Capturer>,
    dir: PathBuf,
    exe: PathBuf,
}

impl Env {
    fn ns(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join(host)
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

    fn ip(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let full = self.ns(ns);
        run(
            Command::new("ip").arg("-n").arg(&full).args(args),
            &format!("[{ns}] ip {}", args.join(" ")),
        )
    }

    fn sh(&self, name: &str, cmd: &str) -> Result<String, LabError> {
        let cmd = self.expand(cmd)?;
        run(
            Command::new("ip").args(["netns", "exec", &self.ns(name), "sh", "-c", &cmd]),
            &format!("[{name}] {cmd}"),
        )
    }

    fn uvlan_cmd(&self, host: &str, args: &[String]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env("UVLAN_SOCKET", self.host_dir(host).join("uvlan.sock"))
            .env("UVLAN_ROOT", self.host_dir(host).join("root"));
        c
    }

    fn uvlan(&self, host: &str, args: &[String]) -> Result<String, LabError> {
        run(
            &mut self.uvlan_cmd(host, args),
            &format!("[{host}] uvlan {}", args.join(" ")),
        )
        .map_err(|e| self.with_daemon_log(host, e))
    }

    /// Adds the tail of a host's daemon log to a failed step.
    fn with_daemon_log(&self, host: &str, e: LabError) -> LabError {
        match e {
            LabError::Step { step, detail } => {
                let log = std::fs::read_to_string(self.host_dir(host).join("daemon.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                if tail.is_empty() {
                    LabError::Step { step, detail }
                } else {
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    LabError::Step {
                        step,
                        detail: format!(
                            "{detail}\n  daemon log ({host}):\n    {}",
                            tail.join("\n    ")
                        ),
                    }
                }
            }
            other => other,
        }
    }

    fn mac(&self, dev: &str) -> Result<String, LabError> {
        let (ns, ifn) = split_dev(dev).unwrap_or((dev, "eth0"));
        let out = self.ip(ns, &["-j", "link", "show", "dev", ifn])?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        v.get(0)
            .and_then(|l| l["address"].as_str())
            .map(str::to_string)
            .ok_or_else(|| LabError::Step {
                step: format!("find the MAC address of {ns}/{ifn}"),
                detail: "it has none".into(),
            })
    }

    /// Expands `{prefix}`, `{ns:NAME}` and `{mac:NAME}` / `{mac:NS/IF}`.
    fn expand(&self, s: &str) -> Result<String, LabError> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let Some(j) = tail.find('}') else {
                out.push_str(tail);
                return Ok(out);
            };
            let inner = &tail[1..j];
            if inner == "prefix" {
                out.push_str(&self.prefix);
            } else if let Some(n) = inner.strip_prefix("ns:") {
                out.push_str(&self.ns(n));
            } else if let Some(d) = inner.strip_prefix("mac:") {
                out.push_str(&self.mac(d)?);
            } else {
                out.push_str(&tail[..=j]);
            }
            rest = &tail[j + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn start_capture(&mut self, ns: &str, dev: &str, n: usize) -> Result<(), LabError> {
        let file = self.dir.join(format!("capture-{n}.pcap"));
        let f = std::fs::File::create(&file)
            .map_err(|e| LabError::Io(file.display().to_string(), e))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), "tcpdump", "-i", dev])
            .args(["-nn", "-U", "--immediate-mode", "-w", "-"])
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::Io(format!("start tcpdump on {ns}/{dev}"), e))?;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut cap = Capturer {
            ns: ns.to_string(),
            dev: dev.to_string(),
            file,
            child,
            stderr: rx,
        };
        let t = Instant::now();
        let mut said = String::new();
        loop {
            match cap.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => {
                    said.push_str(&line);
                    said.push('\n');
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = cap.child.wait();
                    return Err(LabError::Step {
                        step: format!("tcpdump on {ns}/{dev}"),
                        detail: said.trim().to_string(),
                    });
                }
            }
            if t.elapsed() > Duration::from_secs(5) {
                stop(&mut cap.child, libc::SIGKILL, Duration::ZERO);
                return Err(LabError::Step {
                    step: format!("tcpdump on {ns}/{dev}"),
                    detail: format!("not listening after 5 s. {}", said.trim()),
                });
            }
            interrupted()?;
        }
        self.captures.push(cap);
        Ok(())
    }

    /// Stops every capture; returns (ns, dev, file) of each.
    fn stop_captures(&mut self) -> Vec<(String, String, PathBuf)> {
        let mut v = Vec::new();
        for mut c in self.captures.drain(..) {
            stop(&mut c.child, libc::SIGINT, Duration::from_secs(3));
            v.push((c.ns, c.dev, c.file));
        }
        v
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.stop_captures();
        self.access.clear();
        for (_, d) in self.daemons.iter_mut() {
            stop(d, libc::SIGTERM, Duration::from_secs(3));
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
    let out = env.ip(name, &["-j", fam, "addr", "show", "scope", "global"])?;
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

/// Pings every check at once; an answer within the deadline counts as reached, whatever
/// was expected (the same patience for both outcomes).
fn ping_all(env: &Env, checks: &[CheckSpec]) -> Result<Vec<CheckResult>, LabError> {
    let mut running: Vec<(CheckSpec, IpAddr, Child, Option<bool>)> = Vec::new();
    let reap = |running: &mut Vec<(CheckSpec, IpAddr, Child, Option<bool>)>| {
        for (_, _, c, _) in running.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    for c in checks {
        let (target, v6) = match c.to.strip_suffix("/6") {
            Some(t) => (t, true),
            None => (c.to.as_str(), false),
        };
        let addr = match target.parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => match first_addr(env, target, v6) {
                Ok(a) => a,
                Err(e) => {
                    reap(&mut running);
                    return Err(e);
                }
            },
        };
        let fam = if addr.is_ipv6() { "-6" } else { "-4" };
        let child = Command::new("ip")
            .args(["netns", "exec", &env.ns(&c.from), "ping", fam, "-n", "-q"])
            .args([
                "-c",
                "1",
                "-i",
                "0.2",
                "-w",
                PING_DEADLINE_S,
                &addr.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(ch) => running.push((c.clone(), addr, ch, None)),
            Err(e) => {
                reap(&mut running);
                return Err(LabError::Io("ping".into(), e));
            }
        }
    }
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            reap(&mut running);
            return Err(LabError::Interrupted);
        }
        let mut pending = false;
        for (_, _, ch, done) in running.iter_mut() {
            if done.is_none() {
                match ch.try_wait() {
                    Ok(Some(st)) => *done = Some(st.success()),
                    Ok(None) => pending = true,
                    Err(_) => *done = Some(false),
                }
            }
        }
        if !pending {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(running
        .into_iter()
        .map(|(check, addr, _, done)| CheckResult {
            check,
            addr,
            reached: done == Some(true),
        })
        .collect())
}

/// Runs a stage command; returns its result when it is a check.
fn run_action(
    env: &Env,
    tb: &Testbed,
    a: &ActionSpec,
    log: &mut dyn FnMut(&str),
) -> Result<Option<ActionResult>, LabError> {
    interrupted()?;
    let what = a.describe();
    let (ok_exit, text) = match (&a.ns, &a.cmd, &a.uvlan) {
        (Some(ns), Some(cmd), _) => {
            let cmd = env.expand(cmd)?;
            output(
                Command::new("ip").args(["netns", "exec", &env.ns(ns), "sh", "-c", &cmd]),
                &what,
            )?
        }
        (_, _, Some(u)) => {
            let host = tb
                .default_host(&a.host)
                .map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
            let args = uvlan_args(&env.expand(u)?)
                .map_err(|m| LabError::Invalid(tb.name.clone(), format!("uvlan {u}: {m}")))?;
            output(&mut env.uvlan_cmd(&host, &args), &what)?
        }
        _ => {
            return Err(LabError::Invalid(
                tb.name.clone(),
                format!("command {what}: nothing to run"),
            ))
        }
    };
    log(&format!("  $ {what}"));
    let show = |log: &mut dyn FnMut(&str)| {
        for l in text.lines() {
            log(&format!("    {l}"));
        }
    };
    if !a.is_check() {
        if !ok_exit {
            show(log);
            return Err(LabError::Step {
                step: what,
                detail: text.trim().to_string(),
            });
        }
        if a.show {
            show(log);
        }
        return Ok(None);
    }
    let mut problems = Vec::new();
    if ok_exit && a.fails {
        problems.push("succeeded, expected to fail".to_string());
    }
    if !ok_exit && !a.fails {
        problems.push("failed".to_string());
    }
    for e in &a.expect {
        let e = env.expand(e)?;
        if !text.contains(&e) {
            problems.push(format!("no {e:?} in the output"));
        }
    }
    for e in &a.absent {
        let e = env.expand(e)?;
        if text.contains(&e) {
            problems.push(format!("{e:?} in the output"));
        }
    }
    if a.show || !problems.is_empty() {
        show(log);
    }
    if !problems.is_empty() {
        log(&format!("    <-- NOT AS EXPECTED: {}", problems.join("; ")));
    }
    Ok(Some(ActionResult { what, problems }))
}

fn count_frames(file: &Path, filter: &str) -> Result<usize, String> {
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(file)
        .args(["-nn", filter])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run tcpdump: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// Waits (at most 4 s) until no namespace that pings in this stage still resolves an
/// address left over from the stage before: a neighbour entry that fails while a new ping
/// waits on it ends that ping at once with "Destination Host Unreachable" (iputils counts the
/// error against `-c 1`), whatever the new stage changed.
fn settle_neighbours(env: &Env, checks: &[CheckSpec]) {
    let mut namespaces: Vec<String> = checks.iter().map(|c| env.ns(&c.from)).collect();
    namespaces.sort();
    namespaces.dedup();
    let end = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < end {
        let resolving = namespaces.iter().any(|ns| {
            Command::new("ip")
                .args(["-n", ns, "neigh", "show", "nud", "incomplete"])
                .output()
                .is_ok_and(|o| !o.stdout.trim_ascii().is_empty())
        });
        if !resolving {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_stage(
    env: &mut Env,
    tb: &Testbed,
    st: &Stage<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<StageReport, LabError> {
    settle_neighbours(env, &st.all_checks());
    // One tcpdump per device.
    let mut devs: Vec<(String, String)> = Vec::new();
    for c in st.capture {
        let k = (c.ns.clone(), c.dev.clone());
        if !devs.contains(&k) {
            devs.push(k);
        }
    }
    for (i, (ns, dev)) in devs.iter().enumerate() {
        env.start_capture(ns, dev, i)?;
    }
    let mut actions = Vec::new();
    for a in st.run {
        if let Some(r) = run_action(env, tb, a, log)? {
            actions.push(r);
        }
    }
    let checks = st.all_checks();
    if !checks.is_empty() {
        log(&format!("  pinging {} pair(s) in parallel", checks.len()));
    }
    let results = ping_all(env, &checks)?;
    for r in results.iter().filter(|r| !r.ok()) {
        log(&format!(
            "  ping {} -> {} ({}): {}   <-- NOT AS EXPECTED",
            r.check.from,
            r.check.to,
            r.addr,
            if r.reached { "reached" } else { "no answer" }
        ));
    }
    let files = env.stop_captures();
    let mut captures = Vec::new();
    for c in st.capture {
        let mut spec = c.clone();
        let (frames, error) = match env.expand(&c.filter) {
            Ok(f) => {
                spec.filter = f;
                match files.iter().find(|(n, d, _)| *n == c.ns && *d == c.dev) {
                    Some((_, _, file)) => match count_frames(file, &spec.filter) {
                        Ok(n) => (Some(n), None),
                        Err(e) => (None, Some(e)),
                    },
                    None => (None, Some("no capture file".into())),
                }
            }
            Err(e) => (None, Some(e.to_string())),
        };
        let r = CaptureResult {
            capture: spec,
            frames,
            error,
        };
        if !r.ok() {
            log(&format!(
                "  capture [{}/{}] `{}`: {:?} frame(s) {}   <-- NOT AS EXPECTED",
                r.capture.ns,
                r.capture.dev,
                r.capture.filter,
                r.frames,
                r.error.as_deref().unwrap_or("")
            ));
        }
        captures.push(r);
    }
    Ok(StageReport {
        title: st.title.to_string(),
        results,
        captures,
        actions,
    })
}

/// Runs a testbed; `log` receives progress lines. Returns the report (also when checks fail);
/// `Err` only when the lab could not be built.
pub fn run_lab(tb: &Testbed, exe: &Path, log: &mut dyn FnMut(&str)) -> Result<LabReport, LabError> {
    if !crate::sys::is_root() {
        return Err(LabError::NotRoot);
    }
    validate(tb)?;
    INTERRUPTED.store(false, Ordering::SeqCst);
    // The handler only stores to an atomic: async-signal-safe.
    crate::sys::on_signals(&[libc::SIGINT, libc::SIGTERM], on_signal);
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("uvlan-lab-{pid}"));
    std::fs::create_dir_all(&dir).map_err(|e| LabError::Io(dir.display().to_string(), e))?;
    let mut env = Env {
        prefix: format!("ulab{pid}-"),
        namespaces: Vec::new(),
        daemons: Vec::new(),
        access: Vec::new(),
        captures: Vec::new(),
        dir,
        exe: exe.to_path_buf(),
    };
    log(&format!("uvlan lab {}: {}", tb.name, tb.title));
    if !tb.seed.is_empty() {
        log(&format!("  reproduces: {}", tb.seed));
    }
    let hosts = tb.host_names();
    // namespaces
    for h in &hosts {
        env.add_ns(h)?;
    }
    for n in &tb.namespace {
        if !hosts.contains(&n.name.as_str()) {
            env.add_ns(&n.name)?;
        }
    }
    for e in &tb.endpoint {
        env.add_ns(&e.name)?;
    }
    // links
    for l in &tb.link {
        interrupted()?;
        let (an, ai) = split_dev(&l.a).unwrap_or(("", ""));
        let (bn, bi) = split_dev(&l.b).unwrap_or(("", ""));
        let (ans, bns) = (env.ns(an), env.ns(bn));
        run(
            Command::new("ip").args([
                "link", "add", ai, "netns", &ans, "type", "veth", "peer", "name", bi, "netns", &bns,
            ]),
            &format!("veth {} <-> {}", l.a, l.b),
        )?;
        for (ns, ifn) in [(an, ai), (bn, bi)] {
            if !tb.veth_tx_vlan_offload {
                run(
                    Command::new("ip").args([
                        "netns",
                        "exec",
                        &env.ns(ns),
                        "ethtool",
                        "-K",
                        ifn,
                        "txvlan",
                        "off",
                    ]),
                    &format!("[{ns}] ethtool -K {ifn} txvlan off"),
                )?;
            }
            env.ip(ns, &["link", "set", ifn, "up"])?;
        }
    }
    // bridges
    for b in &tb.bridge {
        env.ip(
            &b.ns,
            &[
                "link",
                "add",
                &b.name,
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        for p in &b.ports {
            env.ip(&b.ns, &["link", "set", p, "master", &b.name])?;
        }
        for p in &b.hairpin {
            env.ip(
                &b.ns,
                &[
                    "link",
                    "set",
                    "dev",
                    p,
                    "type",
                    "bridge_slave",
                    "hairpin",
                    "on",
                ],
            )?;
        }
        env.ip(&b.ns, &["link", "set", &b.name, "up"])?;
        log(&format!(
            "  bridge {}/{}: {}{}",
            b.ns,
            b.name,
            b.ports.join(", "),
            if b.hairpin.is_empty() {
                String::new()
            } else {
                format!(" (hairpin: {})", b.hairpin.join(", "))
            }
        ));
    }
    // VLAN access ports
    for v in &tb.vlan_access {
        let (ns, ifn) = split_dev(&v.dev).unwrap_or(("", ""));
        let path = Path::new("/run/netns").join(env.ns(ns));
        let acc = VlanAccess::attach_in_netns(&path, ifn, v.vid).map_err(|e| LabError::Step {
            step: format!("VLAN access port {} (VID {})", v.dev, v.vid),
            detail: e.to_string(),
        })?;
        env.access.push(acc);
        log(&format!("  vlan access {}: VID {} untagged", v.dev, v.vid));
    }
    // setup commands: hosts first
    for h in &tb.host {
        for c in &h.setup {
            interrupted()?;
            env.sh(&h.name, c)?;
        }
    }
    for n in &tb.namespace {
        for c in &n.setup {
            interrupted()?;
            env.sh(&n.name, c)?;
        }
    }
    // daemons
    for h in &hosts {
        let hd = env.host_dir(h);
        std::fs::create_dir_all(&hd).map_err(|e| LabError::Io(hd.display().to_string(), e))?;
        let sock = hd.join("uvlan.sock");
        let child = Command::new("ip")
            .args(["netns", "exec", &env.ns(h)])
            .arg(&env.exe)
            .arg("daemon")
            .arg("--root")
            .arg(hd.join("root"))
            .arg("--socket")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(hd.join("daemon.log"))
                    .map_err(|e| LabError::Io("daemon log".into(), e))?,
            )
            .spawn()
            .map_err(|e| LabError::Io("start uvlan daemon".into(), e))?;
        env.daemons.push((h.to_string(), child));
        let t = Instant::now();
        while !sock.exists() {
            interrupted()?;
            if t.elapsed() > Duration::from_secs(10) {
                let logtext = std::fs::read_to_string(hd.join("daemon.log")).unwrap_or_default();
                return Err(LabError::Step {
                    step: format!("start uvlan daemon on {h}"),
                    detail: logtext.trim().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for n in &tb.network {
        interrupted()?;
        let host = tb
            .default_host(&n.host)
            .map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
        let args = uvlan_args(&n.create).map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
        env.uvlan(&host, &args)?;
        if hosts.len() > 1 {
            log(&format!("  [{host}] uvlan {}", args.join(" ")));
        } else {
            log(&format!("  uvlan {}", args.join(" ")));
        }
    }
    for e in &tb.endpoint {
        interrupted()?;
        let host = tb
            .host_of_network(&e.network, e.host.as_deref())
            .map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
        let ns = env.ns(&e.name);
        let mut args: Vec<String> = vec!["network".into(), "connect".into()];
        if let Some(ip) = &e.ip {
            args.extend(["--ip".into(), ip.clone()]);
        }
        if let Some(ip) = &e.ip6 {
            args.extend(["--ip6".into(), ip.clone()]);
        }
        if let Some(m) = &e.mac {
            args.extend(["--mac-address".into(), m.clone()]);
        }
        args.extend([e.network.clone(), ns]);
        env.uvlan(&host, &args)?;
        for c in &e.setup {
            env.sh(&e.name, c)?;
        }
        let shown: Vec<&str> = [e.ip.as_deref(), e.ip6.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        log(&format!(
            "  endpoint {} on {}{}{}",
            e.name,
            e.network,
            if hosts.len() > 1 {
                format!(" ({host})")
            } else {
                String::new()
            },
            if shown.is_empty() {
                String::new()
            } else {
                format!(" [{}]", shown.join(", "))
            }
        ));
    }
    let stages = tb.stages();
    let mut reports = Vec::new();
    for (i, st) in stages.iter().enumerate() {
        interrupted()?;
        log(&format!("stage {}/{}: {}", i + 1, stages.len(), st.title));
        let r = run_stage(&mut env, tb, st, log)?;
        log(&format!(
            "  stage {}: {}",
            i + 1,
            if r.passed() {
                "as expected"
            } else {
                "NOT as expected"
            }
        ));
        reports.push(r);
    }
    let report = LabReport {
        testbed: tb.name.clone(),
        stages: reports,
    };
    if std::env::var_os("UVLAN_LAB_HOLD").is_some() {
        for l in report.matrix().lines() {
            log(l);
        }
        hold(&env, tb, log);
    }
    Ok(report)
}

/// With `UVLAN_LAB_HOLD` set: leave the lab standing for exploration until Enter, end of input
/// or Ctrl-C.
fn hold(env: &Env, tb: &Testbed, log: &mut dyn FnMut(&str)) {
    let host = tb.host_names()[0];
    log("holding the lab (UVLAN_LAB_HOLD is set); try, in another shell:");
    log(&format!("  ip netns list | grep {}", env.prefix));
    if let Some(e) = tb.endpoint.first() {
        log(&format!("  ip netns exec {} ip route", env.ns(&e.name)));
        log(&format!(
            "  UVLAN_SOCKET={} {} network inspect {}",
            env.host_dir(host).join("uvlan.sock").display(),
            env.exe.display(),
            e.network
        ));
    }
    if let Some(l) = tb.link.first() {
        if let Some((ns, ifn)) = split_dev(&l.b) {
            log(&format!(
                "  ip netns exec {} tcpdump -eni {ifn}",
                env.ns(ns)
            ));
        }
    }
    log("press Enter (or Ctrl-C) to tear it down");
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return;
        }
        let r = match crate::sys::wait_readable(std::os::fd::AsFd::as_fd(&std::io::stdin()), 200) {
            Ok(r) => r,
            Err(_) => return,
        };
        if r {
            // A line, or end of input / a closed stdin: either way, tear down.
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_prefix_and_namespaces_and_leave_other_braces() {
        let env = Env {
            prefix: "ulab1-".into(),
            namespaces: Vec::new(),
            daemons: Vec::new(),
            access: Vec::new(),
            captures: Vec::new(),
            dir: std::env::temp_dir().join("uvlan-lab-test-placeholders-never-created"),
            exe: PathBuf::from("/bin/false"),
        };
        assert_eq!(
            env.expand("connect n {ns:c1} {prefix}x awk '{print $1}' {")
                .unwrap(),
            "connect n ulab1-c1 ulab1-x awk '{print $1}' {"
        );
        // A MAC of a namespace that does not exist is an error naming it.
        let e = env.expand("{mac:nope/eth0}").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
