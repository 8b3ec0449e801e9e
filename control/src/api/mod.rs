//! The daemon API: JSON messages over a unix stream socket, root only.
//!
//! # Protocol
//! One request per connection. The client writes one [`Request`] as a single line of JSON
//! (terminated by `\n`); the daemon answers with one [`Response`] line and closes the
//! connection. Requests are tagged by `"op"`, responses by `"status"`:
//! ```text
//! > {"op":"network_rm","name":"n1"}
//! < {"status":"ok","result":null}
//! < {"status":"error","message":"network n1 not found"}
//! ```
//! A request line is at most [`MAX_REQUEST`] bytes.
//!
//! # Streaming requests
//! [`Request::Capture`] and [`Request::Replay`] keep the connection open after the answer
//! line (see [`Request::is_streaming`]); the answer is still one [`Response`] line, and an
//! error answer closes the connection as usual. After an `ok` answer:
//! - **capture**: the daemon writes a pcapng stream (a section header, one interface
//!   description per port of [`CaptureStart::interfaces`], then one enhanced packet block
//!   per frame) until [`CaptureRequest::count`] frames were written or the client shuts
//!   its side down (or closes); it then writes one interface statistics block per
//!   interface (`isb_ifrecv`: frames seen, `isb_ifdrop`: records lost because the reader
//!   was too slow) and closes. The client never writes after its request line: shutting
//!   down its writing side is how it asks the capture to end.
//! - **replay**: lockstep JSON lines. The client writes one [`ReplayFrame`] line, the
//!   daemon answers one [`ReplayVerdict`] line, and so on; the client shuts down its side
//!   when it has no more frames.
//! ```text
//! > {"op":"capture","network":"n1","wire":true}
//! < {"status":"ok","result":{"network":"n1","interfaces":[...]}}
//! < (pcapng bytes ...)
//! ```
//!
//! # Access
//! The socket file has mode 0600 (owner root) and the daemon also checks each peer's
//! credentials with `SO_PEERCRED`: only uid 0 is served; anyone else gets an error
//! response saying so.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ipam::IpamConfig;

mod client;
mod server;
mod stats;
pub mod stream;

pub use client::*;
pub use server::*;
pub use stats::*;

/// Largest request line accepted, in bytes.
pub const MAX_REQUEST: u64 = 1 << 20;

/// Writes `v` as one JSON line on `stream` (both ends of a streaming request do).
fn write_json_line<T: Serialize>(mut stream: &UnixStream, v: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Reads one line of at most [`MAX_REQUEST`] bytes from `reader` and decodes it; `Ok(None)`
/// when the other end has shut its side down (both ends of a streaming request read so).
fn read_json_line<T: serde::de::DeserializeOwned>(
    reader: &mut BufReader<UnixStream>,
) -> io::Result<Option<T>> {
    let mut line = String::new();
    if reader.by_ref().take(MAX_REQUEST).read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Default state directory.
pub const DEFAULT_ROOT: &str = "/var/lib/uvlan";
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/uvlan/uvlan.sock";

/// The socket path: `--socket`, else `$UVLAN_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("UVLAN_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The state directory: `--root`, else `$UVLAN_ROOT`, else [`DEFAULT_ROOT`].
pub fn root_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("UVLAN_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// `uvlan network create`, after the CLI grouped the IPAM flags (as Docker's CLI does).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateNetwork {
    /// Network name.
    pub name: String,
    /// `-d` value.
    pub driver: String,
    /// `-o` map, exactly as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The grouped `--subnet/--ip-range/--gateway/--aux-address` entries.
    #[serde(default)]
    pub ipam: Vec<IpamConfig>,
    /// `--ipv4` (Docker 28's `EnableIPv4`): `Some(false)` makes an IPv6-only network. `None`
    /// (not given): the `-o com.docker.network.enable_ipv4` option if there is one, else
    /// true. Given, it wins over the option, which is then not stored (as Docker does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<bool>,
    /// `--ipv6`.
    #[serde(default)]
    pub ipv6: bool,
    /// `--internal`.
    #[serde(default)]
    pub internal: bool,
    /// `--ipam-driver`: `default` (uvlan's IPAM, also when absent) or `dhcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_driver: Option<String>,
}

/// `true`: the serde default of the fields that are on unless said otherwise.
fn yes() -> bool {
    true
}

/// Whether a flag that defaults to on is on (it is then left out of the JSON).
fn is_true(b: &bool) -> bool {
    *b
}

/// `uvlan network connect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// Network name or ID.
    pub network: String,
    /// Namespace: a name under /run/netns, or a path to a netns file.
    pub netns: String,
    /// `--ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `--ip6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// `--mac-address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `--host`: the interface goes into the daemon's own namespace (`netns` is empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
    /// `--ifname` (with `--host`): the interface's name (default `uv-` and the network's
    /// name, cut to 15 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

/// `uvlan trace`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Network name or ID.
    pub network: String,
    /// `wire`, or an endpoint (its namespace name, or an endpoint ID prefix).
    pub from: String,
    /// Destination IP or MAC.
    pub to: String,
    /// `icmp` (default), `udp`, `arp` or `ns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// VID of a frame from the wire (default: the network's; 0 = untagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vid: Option<u16>,
    /// Destination MAC override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<String>,
    /// Source MAC of a frame from the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<String>,
    /// Source IP of a frame from the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    /// The frame's length in bytes, Ethernet header included (icmp and udp; default: the
    /// headers and a short payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
}

/// `uvlan capture`: which frames of a network to stream as pcapng.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// Network name or ID.
    pub network: String,
    /// Endpoints (the name `network connect`/`run` used, or an endpoint ID prefix); none
    /// named: every endpoint of the network.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Also the network's wire (its parent, its VID's frames only).
    #[serde(default)]
    pub wire: bool,
    /// Also the frames that went nowhere (engine drops, copies not delivered).
    #[serde(default)]
    pub drops: bool,
    /// Stop after this many frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Bytes kept per frame (default 262144).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

/// One interface of a capture, in pcapng interface order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInterface {
    /// `if_name`: the endpoint's name, or `wire PARENT[.VID]`.
    pub name: String,
    /// `if_description`.
    pub description: String,
}

/// The answer to [`Request::Capture`], before the pcapng stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStart {
    /// The network's name.
    pub network: String,
    /// The interfaces, as the stream declares them.
    pub interfaces: Vec<CaptureInterface>,
}

/// `uvlan trace --pcap`: replay frames through a network's engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// Network name or ID.
    pub network: String,
    /// `wire`, or an endpoint: every frame enters there. `None`: per frame, from the
    /// capture's interface name (see [`ReplayFrame::interface`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Answer each frame with the whole trace, not only the verdict.
    #[serde(default)]
    pub verbose: bool,
}

/// The answer to [`Request::Replay`], before the frames.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayStart {
    /// The network's name.
    pub network: String,
    /// Its endpoints' names (a capture interface with one of these names is that
    /// endpoint).
    pub endpoints: Vec<String>,
    /// Its wire, `PARENT[.VID]`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<String>,
}

/// One frame to replay (client to daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayFrame {
    /// The frame's number in the capture (1-based), echoed in the verdict.
    pub index: u64,
    /// The capture interface's name (pcapng `if_name`; none in classic pcap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// `in` or `out` (pcapng `epb_flags`), when the capture says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The frame's bytes, in hex.
    pub frame: String,
}

/// The engine's verdict about one replayed frame (daemon to client).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayVerdict {
    /// [`ReplayFrame::index`].
    pub index: u64,
    /// Where the frame entered: an endpoint's name, or `wire PARENT`; empty when skipped.
    pub ingress: String,
    /// The verdict in words (forward: the outputs; drop: the reason and its rule); or why
    /// the frame was not replayed.
    pub verdict: String,
    /// The drop reason's counter name, for a dropped frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<String>,
    /// The kernel function whose rule decided.
    #[serde(default)]
    pub kernel: String,
    /// The frame was not replayed (an output, not an input; no wire to come from).
    #[serde(default)]
    pub skipped: bool,
    /// The whole trace, when [`ReplayRequest::verbose`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// Who manages a network when the uvlan CLI does not: the Docker remote driver.
pub const OWNER_DOCKER: &str = "docker";
/// Who manages a network when the uvlan CLI does not: the CNI plugin.
pub const OWNER_CNI: &str = "cni";

/// A network a front end (the Docker remote driver, the CNI plugin) manages with its own
/// IPAM: uvlan validates the driver options exactly as for `uvlan network create`, sets the
/// network up in the engine, and takes the addresses the front end gives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsureNetwork {
    /// The network ID to use (Docker's); `None`: uvlan picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The uvlan name (CNI: the configuration's `name`; Docker: its short ID until Docker's
    /// name is known).
    pub name: String,
    /// [`OWNER_DOCKER`] or [`OWNER_CNI`].
    pub owner: String,
    /// `ipvlan` or `macvlan`.
    pub driver: String,
    /// Driver options, in `-o` form (`parent`, `ipvlan_mode`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Subnets with their gateway and aux addresses as the front end's IPAM allocated them;
    /// empty when the IPAM allocates per endpoint (CNI).
    #[serde(default)]
    pub subnets: Vec<IpamConfig>,
    /// IPv4 enabled (default true; Docker 28's `com.docker.network.enable_ipv4`): when
    /// false the network is IPv6-only and `subnets` holds no IPv4 subnet.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub ipv4: bool,
    /// IPv6 enabled.
    #[serde(default)]
    pub ipv6: bool,
    /// `--internal`.
    #[serde(default)]
    pub internal: bool,
    /// Without a `parent` option, use the interface of the IPv4 default route in the
    /// daemon's namespace (the CNI plugins' default for `master`) instead of no parent.
    #[serde(default)]
    pub parent_from_default_route: bool,
}

impl Default for EnsureNetwork {
    fn default() -> Self {
        EnsureNetwork {
            id: None,
            name: String::new(),
            owner: String::new(),
            driver: String::new(),
            options: BTreeMap::new(),
            subnets: Vec::new(),
            ipv4: true,
            ipv6: false,
            internal: false,
            parent_from_default_route: false,
        }
    }
}

/// An endpoint's addresses and MAC as a front end's IPAM chose them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// The front end's key: Docker's endpoint ID, CNI's `CONTAINERID/IFNAME`.
    pub key: String,
    /// IPv4 address with prefix length (`192.0.2.2/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// IPv6 address with prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_v6: Option<String>,
    /// IPv4 gateway; `None`: the gateway of the network's subnet holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// IPv6 gateway; `None`: as for `gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_v6: Option<String>,
    /// Requested MAC (macvlan only; ipvlan refuses one, as Docker does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// One route to install in an endpoint's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Destination in CIDR form (`0.0.0.0/0`).
    pub dst: String,
    /// Next hop; `None`: directly connected (`dev IF`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// Attach an endpoint of a managed network to a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachEndpoint {
    /// Network name or ID.
    pub network: String,
    /// Create the network first when no network has `ensure.name` (CNI ADD); an existing one
    /// must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure: Option<EnsureNetwork>,
    /// A new endpoint; `None`: the endpoint reserved under `key` (Docker's Join).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<EndpointSpec>,
    /// The endpoint's key (as in [`EndpointSpec::key`]).
    pub key: String,
    /// The namespace the interface ends up in: a path (`CNI_NETNS`, Docker's SandboxKey)
    /// or a name under /run/netns.
    pub netns: String,
    /// `Some(NAME)`: create the TAP in the daemon's own namespace under NAME, configured
    /// but without addresses, for the front end to move into `netns` (Docker); the daemon
    /// follows it there. `None`: create it inside `netns`, addressed and routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// The interface name inside (`None`: the next free `ethN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Routes to install instead of the driver's default routes (CNI: the IPAM result's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteSpec>>,
    /// Interface MTU (at most the parent's; default: the parent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// What inspect shows as the endpoint's `Name`.
    pub label: String,
}

/// A default route the driver gives an endpoint (Docker's Join answer is built from it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRouteView {
    /// `default via GW`; `None`: `default dev IF` (ipvlan l3/l3s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// A route besides the default one that the front end adds for an endpoint (a DHCP
/// lease's classless static routes, option 121).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    /// `ADDR/LEN`.
    pub dst: String,
    /// The next hop; `None`: on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The answer to [`Request::EndpointAttach`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachInfo {
    /// The network's ID.
    pub network_id: String,
    /// The endpoint's ID.
    pub endpoint_id: String,
    /// The interface name: inside the namespace, or in the daemon's namespace when
    /// `host_name` was given.
    pub ifname: String,
    /// Its MAC.
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
    /// The IPv4 default route the driver gives it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_v4: Option<DefaultRouteView>,
    /// The IPv6 default route the driver gives it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_v6: Option<DefaultRouteView>,
    /// Further routes: a DHCP lease's classless static routes (option 121), which replace
    /// the router as default route (RFC 3442: `default_v4` is then `None`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteView>,
}

/// One endpoint of a managed network, as [`Request::EndpointList`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedEndpoint {
    /// The front end's key.
    pub key: String,
    /// Endpoint ID (empty while only reserved).
    pub endpoint_id: String,
    /// The namespace path (empty while only reserved).
    pub netns: String,
    /// The interface name inside (empty while only reserved).
    pub ifname: String,
    /// Its MAC.
    pub mac: String,
    /// IPv4 address with prefix length, or empty.
    pub address: String,
    /// IPv6 address with prefix length, or empty.
    pub address_v6: String,
    /// True once attached to a namespace.
    pub attached: bool,
}

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answers `"pong"`.
    Ping,
    /// Create a network; answers the ID.
    NetworkCreate(CreateNetwork),
    /// List networks; answers a list of [`NetworkSummary`].
    NetworkLs,
    /// Inspect one network; answers its `docker network inspect`-shaped object.
    NetworkInspect {
        /// Name, ID or unique ID prefix.
        name: String,
    },
    /// Remove one network; answers its name.
    NetworkRm {
        /// Name, ID or unique ID prefix.
        name: String,
    },
    /// Attach a namespace; answers the endpoint's interface name.
    NetworkConnect(Connect),
    /// Detach a namespace.
    NetworkDisconnect {
        /// Network name or ID.
        network: String,
        /// The namespace as given at connect (name or path); empty with `host`.
        netns: String,
        /// `--host`: remove the network's host interface.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        host: bool,
    },
    /// `uvlan run`: attach the namespace the CLI just created (a name under /run/netns);
    /// answers [`RunInfo`]. The CLI creates it so the namespace's mount is visible in the
    /// CLI's mount namespace even when the daemon runs in another one (e.g. under
    /// `ip netns exec`). The endpoint is marked as owning the namespace: removing it with
    /// [`Request::RunRemove`] deletes the namespace too.
    RunSetup(Connect),
    /// `uvlan run --rm`: detach and delete a namespace `RunSetup` created.
    RunRemove {
        /// Network name or ID.
        network: String,
        /// The namespace name.
        netns: String,
    },
    /// `uvlan run -d --rm`: remove the endpoint and namespace when `pid` exits.
    RunWatch {
        /// Network name or ID.
        network: String,
        /// The namespace name.
        netns: String,
        /// The detached process.
        pid: i32,
    },
    /// Explain one frame's fate; answers the printed trace.
    Trace(TraceRequest),
    /// Stream a network's frames as pcapng; answers [`CaptureStart`], then streams (see
    /// the module docs).
    Capture(CaptureRequest),
    /// Replay frames through a network's engine, delivering nothing; answers
    /// [`ReplayStart`], then one [`ReplayVerdict`] per [`ReplayFrame`] (see the module
    /// docs).
    Replay(ReplayRequest),
    /// The dataplane's counters; answers a [`StatsReport`].
    Stats {
        /// Networks (names or IDs); empty: all.
        #[serde(default)]
        networks: Vec<String>,
    },
    /// Create a managed network, or check that the existing one with this ID (or, without
    /// an ID, this name and owner) matches; answers the ID.
    NetworkEnsure(EnsureNetwork),
    /// Remove a managed network by its owner; answers whether it existed (removing an
    /// unknown network succeeds, so owners can retry).
    NetworkDelete {
        /// Network name or ID.
        network: String,
        /// Its owner ([`OWNER_DOCKER`], [`OWNER_CNI`]).
        owner: String,
    },
    /// Declare an endpoint of a managed network with its addresses (Docker's
    /// CreateEndpoint); answers its MAC (`""` for ipvlan: the port takes the parent's). On a
    /// network with DHCP IPAM (`uvlan.ipam=dhcp`) the daemon leases the address first and
    /// answers `{"MacAddress": MAC, "Address": "ADDR/LEN"}`.
    EndpointReserve {
        /// Network name or ID.
        network: String,
        /// The endpoint.
        spec: EndpointSpec,
    },
    /// Attach an endpoint of a managed network to a namespace; answers [`AttachInfo`].
    EndpointAttach(Box<AttachEndpoint>),
    /// Detach an endpoint of a managed network; answers whether something was removed.
    /// Unknown keys and networks succeed (CNI DEL and Docker's Leave are idempotent).
    EndpointDetach {
        /// Network name or ID.
        network: String,
        /// The endpoint's key.
        key: String,
        /// Also drop the reservation (Docker's DeleteEndpoint, CNI DEL); otherwise an
        /// attached endpoint goes back to reserved (Docker's Leave).
        forget: bool,
        /// Remove the network when this was its last endpoint (CNI).
        remove_empty_network: bool,
    },
    /// The endpoints (attached and reserved) of a managed network; answers a list of
    /// [`ManagedEndpoint`].
    EndpointList {
        /// Network name or ID.
        network: String,
    },
}

impl Request {
    /// Whether the connection stays open after the answer (see the module docs).
    pub fn is_streaming(&self) -> bool {
        matches!(self, Request::Capture(_) | Request::Replay(_))
    }
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// Success, with an op-specific result.
    Ok {
        /// The result.
        result: serde_json::Value,
    },
    /// Failure, with one line of text (Docker's where Docker has one).
    Error {
        /// The error text.
        message: String,
    },
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

/// One row of `uvlan network ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSummary {
    /// Full ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Always `local`.
    pub scope: String,
    /// IPv4 enabled (false with `--ipv4=false`).
    #[serde(default = "yes")]
    pub ipv4: bool,
    /// `--ipv6`.
    pub ipv6: bool,
    /// `--internal`.
    pub internal: bool,
    /// Creation time.
    pub created: String,
}

/// The answer to [`Request::RunSetup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The namespace created.
    pub netns: String,
    /// Its file.
    pub netns_path: String,
    /// The endpoint interface inside.
    pub ifname: String,
    /// The DNS servers of the endpoint's DHCP lease (option 6), for the command's
    /// `/etc/resolv.conf`; empty on other networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let r = Request::NetworkRm { name: "n1".into() };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"network_rm","name":"n1"}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let ok = Response::Ok {
            result: serde_json::Value::Null,
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"status":"ok","result":null}"#
        );
    }

    #[test]
    fn unreachable_daemon_message() {
        let p = std::env::temp_dir().join(format!("uvlan-none-{}.sock", std::process::id()));
        let e = call(&p, &Request::Ping).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot reach the uvlan daemon at {}: is \"uvlan daemon\" running?",
                p.display()
            )
        );
    }

    #[test]
    fn socket_serves_root_and_round_trips() {
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = std::env::temp_dir().join(format!("uvlan-api-{}", std::process::id()));
        let _cleanup = Cleanup(dir.clone());
        let path = dir.join("s.sock");
        let l = listen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second listener on a live socket is refused.
        assert!(matches!(listen(&path), Err(ListenError::InUse(_))));
        let t = std::thread::spawn(move || {
            // The first connection is the probe of the refused second listen().
            for _ in 0..2 {
                let (s, _) = l.accept().unwrap();
                serve_connection(s, &|r| match r {
                    Request::Ping => Response::Ok {
                        result: "pong".into(),
                    },
                    _ => Response::Error {
                        message: "no".into(),
                    },
                });
            }
        });
        let uid = own_uid();
        let got = call(&path, &Request::Ping);
        t.join().unwrap();
        if uid == 0 {
            assert_eq!(got.unwrap(), serde_json::Value::from("pong"));
        } else {
            assert!(got.unwrap_err().to_string().contains("root only"));
        }
        // The daemon is gone: the stale socket is replaced by a new listener.
        let _l2 = listen(&path).unwrap();
    }

    fn own_uid() -> u32 {
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap_or(u32::MAX)
    }
}
