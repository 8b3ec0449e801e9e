//! The `uvlan` command line, mirroring docker's words (`docs/README.md`, "Commands").
//!
//! Client commands talk to the daemon over its socket (`--socket`/`$UVLAN_SOCKET`). Errors
//! print one line on stderr and exit 1; errors from the daemon are prefixed
//! `Error response from daemon: `, as docker's CLI does.

mod capture;
mod doctor;
mod packaging;
mod replay;
mod run;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::{self, ClientError, Connect, CreateNetwork, NetworkSummary, Request};
use crate::inspect::{to_docker_json, NetworkResource};
use crate::ipam::{group_cli, IpamRequest};

/// Userspace ipvlan/macvlan networks for kernels without those drivers, driven like
/// `docker network`.
#[derive(Parser, Debug)]
#[command(name = "uvlan", version)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the daemon (root): owns the dataplane, the endpoints and the state.
    Daemon(DaemonArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Run a command in a new network namespace attached to a network.
    Run(run::RunArgs),
    /// Explain one frame's fate in a network, stage by stage; or replay a capture (--pcap).
    Trace(TraceArgs),
    /// Capture a network's frames as pcapng, with the engine's verdict on each (and, with
    /// --drops, the frames it dropped).
    Capture(capture::CaptureArgs),
    /// Show the dataplane's counters: per endpoint, per wire, and frames dropped by reason.
    Stats(stats::StatsArgs),
    /// Tell what this kernel and sandbox offer and what uvlan will therefore do (TAP and
    /// offloads, AF_XDP, BPF and tcx, io_uring, the kernel's own drivers, limits, Docker
    /// and CNI directories); exit 1 only when uvlan cannot work here.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(packaging::CompletionsArgs),
    /// Write the manual pages (uvlan.1 and one per subcommand) into a directory.
    Man(packaging::ManArgs),
    /// Build a testbed in fresh namespaces (with a private daemon), run its checks, print
    /// the reachability matrix (root).
    Lab {
        /// A testbed name (embedded, or testbeds/NAME.toml) or a TOML file; default: the
        /// embedded IPvlan L3 example.
        testbed: Option<String>,
        /// Keep the testbed's uvlan captures (pcapng) in DIR (created when missing); without
        /// it they are removed with the lab.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Run the lab's daemons with `--fast-path` (default: the daemon's default, off).
        #[arg(long = "fast-path", value_enum, value_name = "MODE")]
        fast_path: Option<FastPathArg>,
    },
}

/// `uvlan daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// State directory [env: UVLAN_ROOT] [default: /var/lib/uvlan].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// API socket [env: UVLAN_SOCKET] [default: /run/uvlan/uvlan.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also be Docker's remote network driver: serve uvlan-ipvlan.sock and
    /// uvlan-macvlan.sock in the plugin directory (docker network create -d uvlan-ipvlan).
    #[arg(long = "docker-plugin")]
    pub docker_plugin: bool,
    /// Where the Docker plugin sockets go [default: /run/docker/plugins].
    #[arg(
        long = "docker-plugin-dir",
        value_name = "DIR",
        requires = "docker_plugin"
    )]
    pub docker_plugin_dir: Option<PathBuf>,
    /// Docker's API socket, to show Docker's network names [env: DOCKER_HOST]
    /// [default: unix:///var/run/docker.sock].
    #[arg(
        long = "docker-host",
        value_name = "unix://PATH",
        requires = "docker_plugin"
    )]
    pub docker_host: Option<String>,
    /// How parents are opened: `auto` tries AF_XDP and falls back to AF_PACKET; `af_xdp` or
    /// `af_packet` force one backend (attaching a parent fails if it cannot be opened).
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "auto")]
    pub wire_backend: WireBackendArg,
    /// Serve the counters (OpenMetrics/Prometheus) on http://ADDR:PORT/metrics; a loopback
    /// address only, unless --metrics-allow-remote.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Let --metrics listen on an address other hosts can reach.
    #[arg(long = "metrics-allow-remote", requires = "metrics")]
    pub metrics_allow_remote: bool,
    /// How the dataplane reads and writes TAPs and waits: `auto` uses io_uring when the
    /// kernel and sandbox allow it, else `plain` (epoll, readv/writev); `uring` fails to
    /// start without it.
    #[arg(long = "io", value_enum, value_name = "IO", default_value = "auto")]
    pub io: IoArg,
    /// Dataplane worker threads: endpoints are spread over them (1..=64).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Before a dataplane worker sleeps, it spins this many microseconds looking for work
    /// (0: never spins). Spinning saves the wake-up on the latency path when the worker has a
    /// core of its own; on shared CPUs it takes time from the senders and receivers
    /// (docs/performance.md, "Busy polling").
    #[arg(long = "busy-poll", value_name = "MICROSECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub busy_poll: u32,
    /// Endpoints made from now on (by `network connect`, `run`, Docker's Join and CNI ADD):
    /// `on` makes veth endpoints whose
    /// unicast the engine decided (to sibling endpoints, to and from the wire) goes through
    /// an exact-match kernel cache (tcx, bpf_redirect_peer); `auto` does so when the kernel
    /// allows it; `off` keeps TAP endpoints.
    #[arg(
        long = "fast-path",
        value_enum,
        value_name = "MODE",
        default_value = "off"
    )]
    pub fast_path: FastPathArg,
    /// `on`: each endpoint's TAP gets an eBPF filter that drops, in the sender's own context,
    /// the frames the engine drops whatever else they hold (on an internal network: unicast
    /// from an ipvlan L2 endpoint, or from a macvlan one to a MAC no bridge-mode endpoint
    /// has; non-IP from ipvlan L3), counted
    /// as the engine's drops; it comes off while a capture runs. `off`: the dataplane reads
    /// and drops them.
    #[arg(
        long = "tap-filter",
        value_enum,
        value_name = "on|off",
        default_value = "on"
    )]
    pub tap_filter: OnOff,
    /// Storm control: the share of a dataplane worker's time, in percent, that one endpoint
    /// may take while it floods (broadcasts, multicasts or frames the engine drops, batch
    /// after batch); what it sends beyond that waits, then is dropped, in its own TAP queue
    /// (its `tap_dropped`). Only while other endpoints or the wire have frames to forward.
    /// 100: only the fixed 1 ms pauses of flood deferral.
    #[arg(long = "storm-share", value_name = "PERCENT", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub storm_share: u8,
}

/// An on/off daemon switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// On.
    #[value(name = "on")]
    On,
    /// Off.
    #[value(name = "off")]
    Off,
}

/// `uvlan daemon --fast-path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FastPathArg {
    /// On where the kernel has tcx and bpf_redirect_peer.
    #[value(name = "auto")]
    Auto,
    /// On; the daemon does not start without it.
    #[value(name = "on")]
    On,
    /// TAP endpoints only.
    #[value(name = "off")]
    Off,
}

impl FastPathArg {
    /// The value as `uvlan daemon --fast-path` takes it.
    pub fn as_arg(self) -> &'static str {
        match self {
            FastPathArg::Auto => "auto",
            FastPathArg::On => "on",
            FastPathArg::Off => "off",
        }
    }
}

impl From<FastPathArg> for crate::service::FastPathMode {
    fn from(a: FastPathArg) -> Self {
        match a {
            FastPathArg::Auto => crate::service::FastPathMode::Auto,
            FastPathArg::On => crate::service::FastPathMode::On,
            FastPathArg::Off => crate::service::FastPathMode::Off,
        }
    }
}

/// `uvlan daemon --io`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoArg {
    /// io_uring when available, else plain.
    #[value(name = "auto")]
    Auto,
    /// io_uring only.
    #[value(name = "uring")]
    Uring,
    /// epoll and readv/writev.
    #[value(name = "plain")]
    Plain,
}

impl From<IoArg> for uvlan_dataplane::run::IoMode {
    fn from(a: IoArg) -> Self {
        match a {
            IoArg::Auto => uvlan_dataplane::run::IoMode::Auto,
            IoArg::Uring => uvlan_dataplane::run::IoMode::Uring,
            IoArg::Plain => uvlan_dataplane::run::IoMode::Plain,
        }
    }
}

/// `uvlan daemon --wire-backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WireBackendArg {
    /// AF_XDP behind the XDP filter; AF_PACKET + tcx when AF_XDP cannot be opened.
    #[value(name = "auto")]
    Auto,
    /// AF_XDP only.
    #[value(name = "af_xdp")]
    AfXdp,
    /// AF_PACKET + tcx ingress filter only.
    #[value(name = "af_packet")]
    AfPacket,
}

impl From<WireBackendArg> for uvlan_dataplane::run::WireBackend {
    fn from(a: WireBackendArg) -> Self {
        match a {
            WireBackendArg::Auto => uvlan_dataplane::run::WireBackend::Auto,
            WireBackendArg::AfXdp => uvlan_dataplane::run::WireBackend::AfXdp,
            WireBackendArg::AfPacket => uvlan_dataplane::run::WireBackend::AfPacket,
        }
    }
}

/// `uvlan network ...`.
#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network; prints its ID.
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show networks as a JSON array (like docker network inspect).
    Inspect {
        /// Network names or IDs.
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Remove networks; prints each removed name.
    #[command(visible_alias = "remove")]
    Rm {
        /// Network names or IDs.
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Attach a network namespace to a network (the endpoint appears as eth0, or the next
    /// free ethN), or with --host give the host itself an interface on it.
    Connect(ConnectArgs),
    /// Detach a network namespace from a network (or, with --host, remove the host's own
    /// interface on it).
    Disconnect {
        /// Remove the network's host interface (made by `network connect --host`).
        #[arg(long)]
        host: bool,
        /// Network name or ID.
        network: String,
        /// Namespace: a name under /run/netns, or a path to a netns file (not with --host).
        netns: Option<String>,
    },
}

/// `uvlan network create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver: ipvlan or macvlan (required: uvlan has no bridge driver).
    #[arg(short = 'd', long = "driver", value_name = "DRIVER")]
    pub driver: Option<String>,
    /// Subnet in CIDR format (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Vec<String>,
    /// Gateway for a subnet (repeatable; default: the first usable address, none on a /31 or
    /// /32).
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<String>,
    /// Allocate container addresses from a sub-range (repeatable, one per subnet).
    #[arg(long = "ip-range", value_name = "CIDR")]
    pub ip_range: Vec<String>,
    /// Reserve an address: NAME=IP (repeatable).
    #[arg(long = "aux-address", value_name = "NAME=IP")]
    pub aux_address: Vec<String>,
    /// Enable or disable IPv4 address assignment (default: true, or the value of
    /// `-o com.docker.network.enable_ipv4`). `--ipv4=false` with `--ipv6` makes an IPv6-only
    /// network: no IPv4 subnet, endpoints get IPv6 addresses only. The value goes after `=`,
    /// as in Docker.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_go_bool,
        action = clap::ArgAction::Set
    )]
    pub ipv4: Option<bool>,
    /// Enable or disable IPv6 address assignment (`--ipv6` alone enables it).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool,
        action = clap::ArgAction::Set
    )]
    pub ipv6: bool,
    /// IPAM driver: default (uvlan's own) or dhcp (each endpoint asks the parent's LAN for
    /// an IPv4 lease; needs a parent, no --subnet).
    #[arg(long = "ipam-driver", value_name = "DRIVER")]
    pub ipam_driver: Option<String>,
    /// No wire and no default route (ipvlan l3/l3s keep `default dev eth0`).
    #[arg(long)]
    pub internal: bool,
    /// Driver option KEY=VALUE: parent=IF[.VID], ipvlan_mode=l2|l3|l3s,
    /// ipvlan_flag=bridge|private|vepa, macvlan_mode=bridge|vepa|private|passthru|source.
    /// A parent IF.VID makes uvlan tag with VID on IF (no kernel VLAN device is created).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    /// Network name.
    pub name: String,
}

/// `uvlan network ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// `json`: one JSON object per line (for scripts).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Only print IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate IDs.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

/// `uvlan network connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// IPv4 address (default: the next free one).
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// IPv6 address (default: the next free one, if the network has IPv6).
    #[arg(long, value_name = "IP")]
    pub ip6: Option<String>,
    /// MAC address (macvlan only; default: random, locally administered).
    #[arg(long = "mac-address", value_name = "MAC")]
    pub mac_address: Option<String>,
    /// Give the host itself (the daemon's namespace) an interface on the network, with
    /// routes to the network's endpoints: the host and its containers reach each other.
    #[arg(long)]
    pub host: bool,
    /// With --host: the interface's name (default: `uv-` and the network's name, cut to 15
    /// bytes).
    #[arg(long, value_name = "NAME")]
    pub ifname: Option<String>,
    /// Network name or ID.
    pub network: String,
    /// Namespace: a name under /run/netns, or a path to a netns file (/proc/PID/ns/net);
    /// not with --host.
    pub netns: Option<String>,
}

/// `uvlan trace`.
#[derive(Args, Debug)]
#[command(after_help = "\
The frame is built like a real one and decided by the daemon's live engine with the same code
the dataplane uses; each stage names the kernel rule it emulates.

Examples:
  uvlan trace net1 --from c1 --to 192.0.2.3            ICMP echo from endpoint c1
  uvlan trace net1 --from c1 --to 192.0.2.3 --proto arp
  uvlan trace net1 --from wire --to 192.0.2.3          arrives on the parent (tagged with
                                                       the network's VID)
  uvlan trace net1 --from wire --to 192.0.2.3 --vid 30 a frame with another tag
  uvlan trace net1 --from c1 --to 02:42:c0:00:02:03    to that endpoint's MAC
  uvlan trace net1 --pcap c1.pcap --from c1           replay a capture: each frame's verdict
  uvlan trace net1 --pcap net1.pcapng                 frames enter where the capture saw them

With --pcap, each frame of the capture (pcap or pcapng) is decided by the live engine with the
network's current configuration and nothing is delivered. Without --from, a frame whose pcapng
interface is named like an endpoint of the network (as uvlan capture names them) is sent by
that endpoint, frames marked outbound are skipped (outputs, not inputs), and every other frame
comes from the wire.")]
pub struct TraceArgs {
    /// Network name or ID.
    pub network: String,
    /// Where the frame enters: `wire` (the network's parent) or an endpoint (the namespace
    /// name shown by inspect, or an endpoint ID prefix).
    #[arg(long, value_name = "ENDPOINT|wire", required_unless_present = "pcap")]
    pub from: Option<String>,
    /// Destination: an IP address, or a MAC address of an endpoint.
    #[arg(
        long,
        value_name = "IP|MAC",
        required_unless_present = "pcap",
        conflicts_with = "pcap"
    )]
    pub to: Option<String>,
    /// Replay the frames of a pcap or pcapng file instead of building one.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// With --pcap: print each frame's whole trace, not only its verdict.
    #[arg(short = 'v', long, requires = "pcap")]
    pub verbose: bool,
    /// Packet: icmp (echo request), udp, arp (request for --to), ns (neighbour solicitation
    /// for --to).
    #[arg(long, value_name = "PROTO", default_value = "icmp",
          value_parser = ["icmp", "udp", "arp", "ns"])]
    pub proto: String,
    /// 802.1Q VID of a frame from the wire (default: the network's VID; 0: untagged).
    #[arg(long, value_name = "N")]
    pub vid: Option<u16>,
    /// Destination MAC (default: the MAC of the endpoint holding --to; ipvlan: the master's).
    #[arg(long = "dst-mac", value_name = "MAC")]
    pub dst_mac: Option<String>,
    /// Source MAC of a frame from the wire (default 00:00:5e:00:53:01).
    #[arg(long = "src-mac", value_name = "MAC")]
    pub src_mac: Option<String>,
    /// Source IP (default: the endpoint's address; from the wire 192.0.2.1 / 2001:db8::1).
    #[arg(long = "src-ip", value_name = "IP")]
    pub src_ip: Option<String>,
    /// Frame length in bytes, Ethernet header included (icmp and udp): to see the MTU rule.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<u32>,
}

/// A CLI failure: the text to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// One line for stderr.
    pub message: String,
    /// Exit status.
    pub code: i32,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
}

impl Failure {
    fn msg(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

/// Runs the CLI; returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Daemon(a) => {
            let root = api::root_path(a.root.as_deref());
            let socket = api::socket_path(a.socket.as_deref());
            let docker = a.docker_plugin.then(|| {
                crate::docker::PluginConfig::from_flags(
                    a.docker_plugin_dir.as_deref(),
                    a.docker_host.as_deref(),
                )
            });
            let log = crate::logger::stderr_logger();
            let opts = crate::service::DaemonOptions {
                docker,
                wire_backend: a.wire_backend.into(),
                metrics: a.metrics.map(|m| (m, a.metrics_allow_remote)),
                io: a.io.into(),
                workers: usize::from(a.workers),
                busy_poll: (a.busy_poll > 0)
                    .then(|| std::time::Duration::from_micros(u64::from(a.busy_poll))),
                fast_path: a.fast_path.into(),
                tap_filter: a.tap_filter == OnOff::On,
                storm_share: a.storm_share,
            };
            crate::service::run_daemon(&root, &socket, &opts, log)
                .map(|()| 0)
                .map_err(|e| Failure::msg(format!("uvlan daemon: {e}")))
        }
        Cmd::Network(n) => network(n),
        Cmd::Run(r) => run::run(r),
        Cmd::Trace(t) => trace(t),
        Cmd::Capture(c) => capture::capture(c),
        Cmd::Stats(a) => stats::stats(a),
        Cmd::Doctor(a) => doctor::doctor(a),
        Cmd::Completions(a) => packaging::completions(a),
        Cmd::Man(a) => packaging::man(a),
        Cmd::Lab {
            testbed,
            out,
            fast_path,
        } => lab(testbed.as_deref(), out.as_deref(), fast_path),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("{}", crate::api::one_line(&f.message));
            f.code
        }
    }
}

fn socket() -> PathBuf {
    api::socket_path(None)
}

/// A boolean flag's value as Docker's CLI reads it (Go's `strconv.ParseBool`): `1`, `t`,
/// `T`, `TRUE`, `true`, `True` and `0`, `f`, `F`, `FALSE`, `false`, `False`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    crate::daemon::options::parse_go_bool(s)
        .ok_or_else(|| format!("strconv.ParseBool: parsing {s:?}: invalid syntax"))
}

/// Splits `KEY=VALUE` at the first `=` (a value without `=` is `(KEY, "")`, as docker's
/// map options).
pub fn split_kv(s: &str) -> (String, String) {
    match s.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (s.to_string(), String::new()),
    }
}

/// Builds the daemon request for `network create` (the CLI's part of Docker's checks:
/// `-d` present, IPAM flags grouped by subnet).
pub fn create_request(a: &CreateArgs) -> Result<CreateNetwork, String> {
    let driver = match a.driver.as_deref() {
        None | Some("") => return Err(crate::daemon::options::missing_driver()),
        Some(d) => d.to_string(),
    };
    let req = IpamRequest {
        subnets: a.subnet.clone(),
        gateways: a.gateway.clone(),
        ip_ranges: a.ip_range.clone(),
        aux: a.aux_address.iter().map(|s| split_kv(s)).collect(),
        ipv4: a.ipv4.unwrap_or(true),
        ipv6: a.ipv6,
        want_gateway: true,
    };
    let ipam = group_cli(&req).map_err(|e| e.to_string())?;
    let options: BTreeMap<String, String> = a.opt.iter().map(|s| split_kv(s)).collect();
    Ok(CreateNetwork {
        name: a.name.clone(),
        driver,
        options,
        ipam,
        ipv4: a.ipv4,
        ipv6: a.ipv6,
        internal: a.internal,
        ipam_driver: a.ipam_driver.clone(),
    })
}

/// Docker's "natural" order: digit runs compare by value.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = dx.iter().skip_while(|c| **c == b'0').count();
                let ty = dy.iter().skip_while(|c| **c == b'0').count();
                let o = tx
                    .cmp(&ty)
                    .then_with(|| dx[nx - tx..].cmp(&dy[ny - ty..]))
                    .then_with(|| nx.cmp(&ny));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// Docker's `network ls` table: tabwriter with minimum width 10 and padding 3.
pub fn ls_table(rows: &[NetworkSummary], no_trunc: bool) -> String {
    let mut cells: Vec<[String; 4]> = vec![[
        "NETWORK ID".into(),
        "NAME".into(),
        "DRIVER".into(),
        "SCOPE".into(),
    ]];
    for r in rows {
        let id = if no_trunc {
            r.id.clone()
        } else {
            crate::ids::short_id(&r.id).to_string()
        };
        cells.push([id, r.name.clone(), r.driver.clone(), r.scope.clone()]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|c| {
            let w = cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0);
            (w + 3).max(10)
        })
        .collect();
    let mut out = String::new();
    for r in &cells {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}", r[c]));
        }
        out.push_str(&r[3]);
        out.push('\n');
    }
    out
}

fn network(cmd: NetworkCmd) -> Result<i32, Failure> {
    let sock = socket();
    match cmd {
        NetworkCmd::Create(a) => {
            let req = create_request(&a).map_err(Failure::msg)?;
            let id: String = api::call_typed(&sock, &Request::NetworkCreate(req))?;
            println!("{id}");
            Ok(0)
        }
        NetworkCmd::Ls(a) => {
            let mut rows: Vec<NetworkSummary> = api::call_typed(&sock, &Request::NetworkLs)?;
            rows.sort_by(|a, b| natural_cmp(&a.name, &b.name));
            match a.format.as_deref() {
                Some("json") => {
                    for r in &rows {
                        let id = if a.no_trunc {
                            r.id.clone()
                        } else {
                            crate::ids::short_id(&r.id).to_string()
                        };
                        let v = serde_json::json!({
                            "CreatedAt": r.created,
                            "Driver": r.driver,
                            "ID": id,
                            "IPv4": r.ipv4.to_string(),
                            "IPv6": r.ipv6.to_string(),
                            "Internal": r.internal.to_string(),
                            "Labels": "",
                            "Name": r.name,
                            "Scope": r.scope,
                        });
                        println!("{v}");
                    }
                }
                Some("table") | None if a.quiet => {
                    for r in &rows {
                        if a.no_trunc {
                            println!("{}", r.id);
                        } else {
                            println!("{}", crate::ids::short_id(&r.id));
                        }
                    }
                }
                Some("table") | None => print!("{}", ls_table(&rows, a.no_trunc)),
                Some(other) => {
                    return Err(Failure::msg(format!(
                        "unknown --format {other:?}: use json (or table)"
                    )))
                }
            }
            Ok(0)
        }
        NetworkCmd::Inspect { names } => {
            let mut found: Vec<NetworkResource> = Vec::new();
            let mut errors = Vec::new();
            for n in &names {
                match api::call_typed::<NetworkResource>(
                    &sock,
                    &Request::NetworkInspect { name: n.clone() },
                ) {
                    Ok(r) => found.push(r),
                    Err(ClientError::Daemon(m)) if m.ends_with("not found") => {
                        errors.push(format!("Error: No such network: {n}"))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            println!("{}", to_docker_json(&found));
            for e in &errors {
                eprintln!("{e}");
            }
            Ok(if errors.is_empty() { 0 } else { 1 })
        }
        NetworkCmd::Rm { names } => {
            let mut status = 0;
            for n in &names {
                match api::call_typed::<String>(&sock, &Request::NetworkRm { name: n.clone() }) {
                    Ok(name) => println!("{name}"),
                    Err(e @ ClientError::Daemon(_)) => {
                        eprintln!("{}", crate::api::one_line(&e.to_string()));
                        status = 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(status)
        }
        NetworkCmd::Connect(a) => {
            let (network, netns) = connect_target(a.host, a.network, a.netns)?;
            if a.ifname.is_some() && !a.host {
                return Err(Failure::msg(
                    "--ifname names a host interface: use it with --host".to_string(),
                ));
            }
            let req = Connect {
                network,
                netns,
                ip: a.ip,
                ip6: a.ip6,
                mac: a.mac_address,
                host: a.host,
                ifname: a.ifname,
            };
            let ifname: String = api::call_typed(&sock, &Request::NetworkConnect(req))?;
            if a.host {
                println!("{ifname}");
            }
            Ok(0)
        }
        NetworkCmd::Disconnect {
            host,
            network,
            netns,
        } => {
            let (network, netns) = connect_target(host, network, netns)?;
            api::call(
                &sock,
                &Request::NetworkDisconnect {
                    network,
                    netns,
                    host,
                },
            )?;
            Ok(0)
        }
    }
}

/// `NETWORK NETNS`, or `--host NETWORK`: the network and the namespace (empty with
/// `--host`).
fn connect_target(
    host: bool,
    network: String,
    netns: Option<String>,
) -> Result<(String, String), Failure> {
    match (host, netns) {
        (false, Some(ns)) => Ok((network, ns)),
        (false, None) => Err(Failure::msg(
            "missing the namespace: NETWORK NETNS (or --host NETWORK for the host's own \
             interface on the network)"
                .to_string(),
        )),
        (true, None) => Ok((network, String::new())),
        (true, Some(ns)) => Err(Failure::msg(format!(
            "--host gives the host itself an interface on the network: no namespace ({ns:?}) \
             goes with it"
        ))),
    }
}

fn lab(
    testbed: Option<&str>,
    out: Option<&std::path::Path>,
    fast_path: Option<FastPathArg>,
) -> Result<i32, Failure> {
    let tb = crate::lab::load(testbed.unwrap_or(crate::lab::DEFAULT_TESTBED))
        .map_err(|e| Failure::msg(e.to_string()))?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::msg(format!("cannot find the uvlan binary: {e}")))?;
    let daemon_args: Vec<String> = fast_path
        .map(|f| vec!["--fast-path".to_string(), f.as_arg().to_string()])
        .unwrap_or_default();
    let report = crate::lab::run_lab(&tb, &exe, out, &daemon_args, &mut |line| println!("{line}"))
        .map_err(|e| Failure::msg(e.to_string()))?;
    print!("{}", report.matrix());
    if report.passed() {
        println!("lab {}: as expected", report.testbed);
        Ok(0)
    } else {
        println!("lab {}: NOT as expected", report.testbed);
        Ok(1)
    }
}

fn trace(a: TraceArgs) -> Result<i32, Failure> {
    if let Some(pcap) = &a.pcap {
        return replay::replay(a.network, pcap, a.from, a.verbose);
    }
    let (Some(from), Some(to)) = (a.from, a.to) else {
        return Err(Failure::msg(
            "uvlan trace needs --from and --to (or --pcap FILE)",
        ));
    };
    let req = api::TraceRequest {
        network: a.network,
        from,
        to,
        proto: Some(a.proto),
        vid: a.vid,
        dst_mac: a.dst_mac,
        src_mac: a.src_mac,
        src_ip: a.src_ip,
        size: a.size,
    };
    let text: String = api::call_typed(&socket(), &Request::Trace(req))?;
    println!("{text}");
    Ok(0)
}

#[cfg(test)]
mod tests;
