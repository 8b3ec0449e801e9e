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
//! [[dhcp_server]]            # dnsmasq (DHCP only) on a device, for --ipam-driver dhcp;
//! dev = "gw20/p0"            # started after the setup commands, stopped with the lab
//! range = ["192.168.20.100", "192.168.20.150"]   # prefix_len = 24, lease_secs = 3600
//! router = "192.168.20.1"    # optional (option 3); dns = [...] (option 6)
//!                            # its lease file in a command: {dhcp_leases:0}
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
//! [[uvlan_capture]]          # `uvlan capture` of a network while the stage runs: pcapng
//! network = "ipvlan20"       # with each frame's verdict as its comment (host = ... as for
//! endpoints = ["ivlan_test1"] # endpoints; default: every port of the network)
//! wire = true                # also the network's wire (--wire)
//! drops = true               # also the frames uvlan dropped (--drops)
//! expect = ["verdict: drop (private_flag)"]  # some record's verdict contains each (also:
//! min_records = 2            # `absent`; placeholders allowed); without these: a recording
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
//! 3. Stages: stage 1 is the top-level `run`/`check`/`matrix`/`capture`/`uvlan_capture`,
//!    each `[[step]]` is one more. A stage starts once the pinging namespaces have no address
//!    resolution left over from the stage before. In a stage: captures start (tcpdump, and
//!    uvlan captures through the host daemon's API, as `uvlan capture` asks for them),
//!    commands run, every ping runs in parallel (`ping -c 1 -i 0.2 -w 3`: the same patience
//!    whatever the expectation), captures stop and are evaluated. A uvlan capture is written
//!    to `stage<N>-<network>.pcapng` (`-<host>` added when there are several hosts) in the
//!    state directory, or in the directory `uvlan lab --out DIR` names, where it stays; the
//!    report names the file, its records, drops and lost records.
//! 4. Everything is torn down on the way out, also on failure or Ctrl-C: captures,
//!    VLAN access programs, daemons, namespaces, the state directory. With the environment
//!    variable `UVLAN_LAB_HOLD` set, the lab stays up after the last stage (with hints on
//!    what to look at) until Enter or Ctrl-C.
//!
//! A lab never touches the machine's own interfaces or another uvlan instance.
//!
//! # Module map (`control/src/lab/`)
//!
//! | file | what it holds |
//! | --- | --- |
//! | `mod.rs` | these docs, [`LabError`], the entry points [`load`], [`parse`] and [`run_lab`], Ctrl-C handling |
//! | `schema.rs` | the TOML types ([`Testbed`] and its parts), the [`Stage`]s a testbed runs, [`split_args`] |
//! | `validate.rs` | [`validate`]: every name defined, every value in range, something checked |
//! | `embedded.rs` | [`EMBEDDED`] (every `testbeds/*.toml` inside the binary) and [`DEFAULT_TESTBED`] |
//! | `env.rs` | the running lab's environment: namespaces, daemons, VLAN access programs, captures, commands inside it, placeholders, teardown on drop |
//! | `build.rs` | building a testbed in that environment, step by step (section 1 and 2 above) |
//! | `stage.rs` | running a stage: commands, parallel pings, captures (section 3 above) |
//! | `report.rs` | the results ([`LabReport`], [`StageReport`], ...) and the printed matrices |

use crate::nsutil::CmdError;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

mod build;
mod embedded;
mod env;
mod report;
mod schema;
mod stage;
mod validate;

pub use embedded::{DEFAULT_TESTBED, EMBEDDED};
pub use report::{
    ActionResult, CaptureResult, CheckResult, LabReport, StageReport, UvlanCaptureResult,
};
pub use schema::{
    split_args, ActionSpec, BridgeSpec, CaptureExpect, CaptureSpec, CheckSpec, EndpointSpec,
    Expect, HostSpec, LinkSpec, MatrixSpec, NamespaceSpec, NetworkSpec, Stage, StepSpec, Testbed,
    UvlanCaptureSpec, VlanAccessSpec, DEFAULT_HOST,
};
use schema::{split_dev, uvlan_args};
pub use validate::validate;

use env::Env;
use stage::run_stage;

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

impl From<CmdError> for LabError {
    fn from(e: CmdError) -> LabError {
        match e {
            CmdError::Failed { step, detail } => LabError::Step { step, detail },
            CmdError::Spawn { step, source } => LabError::Io(step, source),
            CmdError::Aborted => LabError::Interrupted,
        }
    }
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

/// SIGINT and SIGTERM set [`INTERRUPTED`] (signal-hook's flag handler), from the first lab
/// run of the process on.
fn catch_interrupts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Registering fails only for signals that cannot be caught; these two can.
            let _ = signal_hook::flag::register(sig, &INTERRUPTED);
        }
    });
}

fn interrupted() -> Result<(), LabError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

/// Runs a testbed; `log` receives progress lines; `daemon_args` are added to every host's
/// `uvlan daemon` (e.g. `--fast-path on`). Returns the report (also when checks fail);
/// `Err` only when the lab could not be built.
/// `out`: the directory uvlan captures are written to and kept in (`uvlan lab --out DIR`);
/// `None`: the state directory, removed with the lab.
pub fn run_lab(
    tb: &Testbed,
    exe: &Path,
    out: Option<&Path>,
    daemon_args: &[String],
    log: &mut dyn FnMut(&str),
) -> Result<LabReport, LabError> {
    if !crate::sys::is_root() {
        return Err(LabError::NotRoot);
    }
    validate(tb)?;
    INTERRUPTED.store(false, Ordering::SeqCst);
    catch_interrupts();
    let mut env = Env::new(exe, out)?;
    env.daemon_args = daemon_args.to_vec();
    log(&format!("uvlan lab {}: {}", tb.name, tb.title));
    if !tb.seed.is_empty() {
        log(&format!("  reproduces: {}", tb.seed));
    }
    env.build(tb, log)?;
    let stages = tb.stages();
    let mut reports = Vec::new();
    for (i, st) in stages.iter().enumerate() {
        interrupted()?;
        log(&format!("stage {}/{}: {}", i + 1, stages.len(), st.title));
        let r = run_stage(&mut env, tb, st, i + 1, log)?;
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
        env.hold(tb, log);
    }
    Ok(report)
}
