//! Topology helpers for wire tests: veth cables, a switch namespace with a Linux bridge, the
//! standard LAN around the daemon's parent (`up0` in the `host` namespace, a gateway, an
//! external host behind it), pings in parallel, link facts, and a verifying TCP echo.
//!
//! ```text
//!  host ns                 sw ns (bridge br0)            gw ns                 ext ns
//!  up0 192.0.2.1 ──────── p-host        p-gw ──────── eth0 192.0.2.254
//!  (uvlan parent)          (tx off, hairpin?)           ext0 203.0.113.254 ── eth0 203.0.113.1
//! ```
//!
//! Everything lives in namespaces the [`World`] created: deleting them deletes the cables.
//! Only documentation addresses are used.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::{sh, World};
use uvlan_control::nsutil;

/// A wire backend the daemon can be forced to (`uvlan daemon --wire-backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AF_XDP behind the XDP filter (plus the AF_PACKET copy socket).
    AfXdp,
    /// AF_PACKET with the tcx-ingress filter.
    AfPacket,
}

impl Backend {
    /// The option value, which is also the first word of the wire mode `inspect` reports.
    pub fn arg(self) -> &'static str {
        match self {
            Backend::AfXdp => "af_xdp",
            Backend::AfPacket => "af_packet",
        }
    }
}

/// Both backends: every wire test runs with each.
pub const BACKENDS: [Backend; 2] = [Backend::AfXdp, Backend::AfPacket];

/// Makes a test of each backend for each function `name(b: Backend)` named: `af_xdp::name`
/// and `af_packet::name`.
#[macro_export]
macro_rules! with_both_backends {
    ($($name:ident),* $(,)?) => {
        mod af_xdp {
            $( #[test] fn $name() { super::$name($crate::Backend::AfXdp) } )*
        }
        mod af_packet {
            $( #[test] fn $name() { super::$name($crate::Backend::AfPacket) } )*
        }
    };
}

/// The daemon's parent interface in the `host` namespace.
pub const PARENT: &str = "up0";
/// The parent's MAC.
pub const HOST_MAC: &str = "02:00:00:00:01:01";
/// The parent's (host's) IPv4 address.
pub const HOST_IP: &str = "192.0.2.1";
/// The parent's IPv6 address.
pub const HOST_IP6: &str = "2001:db8::1";
/// The gateway's MAC (its `eth0` on the LAN).
pub const GW_MAC: &str = "02:00:00:00:fe:01";
/// The gateway's LAN address.
pub const GW_IP: &str = "192.0.2.254";
/// The gateway's LAN IPv6 address.
pub const GW_IP6: &str = "2001:db8::fe";
/// The external host behind the gateway.
pub const EXT_IP: &str = "203.0.113.1";
/// The subnet behind the gateway.
pub const EXT_NET: &str = "203.0.113.0/24";
/// The subnet ipvlan L3 tests use; the gateway routes it back via [`HOST_IP`].
pub const L3_NET: &str = "198.51.100.0/24";
/// The switch port facing the host.
pub const HOST_PORT: &str = "p-host";
/// The switch port facing the gateway.
pub const GW_PORT: &str = "p-gw";
/// The bridge's own MAC (fixed so that it never equals a tested MAC).
pub const BRIDGE_MAC: &str = "02:00:00:00:ff:ff";

/// Where a namespace file lives.
pub fn netns_path(full: &str) -> String {
    format!("/run/netns/{full}")
}

/// Moves the calling thread into namespace `full` (a name under /run/netns).
pub fn enter_netns(full: &str) -> io::Result<()> {
    let f = File::open(netns_path(full))?;
    // Only the calling thread changes namespace; callers are threads spawned for this purpose.
    uvlan_control::sys::enter_netns(f.as_fd())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ip -n NS ARGS`, split on whitespace; panics with the output on failure.
pub fn ip_in(full: &str, args: &str) -> String {
    let o = try_ip_in(full, args);
    assert!(o.status.success(), "ip -n {full} {args}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ip -n NS ARGS`, split on whitespace.
pub fn try_ip_in(full: &str, args: &str) -> Output {
    sh(nsutil::ip_in(full).args(args.split_whitespace()))
}

/// Runs `sh -c CMD` in namespace `full`; panics with the output on failure.
pub fn sh_in(full: &str, cmd: &str) -> String {
    let o = sh(&mut nsutil::sh_in(full, cmd));
    assert!(o.status.success(), "[{full}] {cmd}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A veth cable between `a_if` in namespace `a` and `b_if` in namespace `b` (full names);
/// `a_mac` fixes the MAC of the `a` end. Both ends are brought up.
pub fn cable(a: &str, a_if: &str, a_mac: Option<&str>, b: &str, b_if: &str) {
    let step = format!("veth {a}/{a_if} <-> {b}/{b_if}");
    nsutil::run(&mut nsutil::veth(a, a_if, b, b_if), &step).unwrap_or_else(|e| panic!("{e}"));
    if let Some(m) = a_mac {
        ip_in(a, &format!("link set {a_if} address {m}"));
    }
    ip_in(a, &format!("link set {a_if} up"));
    ip_in(b, &format!("link set {b_if} up"));
}

/// The JSON `ip -d -j link show IF` gives in namespace `full`.
pub fn link_json(full: &str, ifname: &str) -> serde_json::Value {
    let out = ip_in(full, &format!("-d -j link show {ifname}"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v.get(0).cloned().unwrap_or(serde_json::Value::Null)
}

/// An interface's MTU.
pub fn mtu(full: &str, ifname: &str) -> u64 {
    link_json(full, ifname)["mtu"].as_u64().expect("mtu")
}

/// Whether an XDP program is attached to the interface.
pub fn has_xdp(full: &str, ifname: &str) -> bool {
    link_json(full, ifname).get("xdp").is_some()
}

/// One feature line of `ethtool -k`: "on" or "off" (without `[fixed]`).
pub fn ethtool_feature(full: &str, ifname: &str, feature: &str) -> String {
    let out = sh_in(full, &format!("ethtool -k {ifname}"));
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{feature}: ")))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string()
}

/// The link-layer address namespace `full` has for `addr` (any state with an address).
pub fn neigh_mac(full: &str, addr: &str) -> Option<String> {
    let out = ip_in(full, &format!("-j neigh show {addr}"));
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.as_array()?
        .iter()
        .find_map(|n| n["lladdr"].as_str().map(str::to_string))
}

/// The neighbour states namespace `full` has for `addr` (e.g. `["FAILED"]`).
pub fn neigh_state(full: &str, addr: &str) -> Vec<String> {
    let out = ip_in(full, &format!("-j neigh show {addr}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .flat_map(|n| n["state"].as_array().cloned().unwrap_or_default())
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Pings every `(namespace, address)` at once; each probe sends until its first answer or
/// `secs` have passed. Returns whether each got an answer, in order. `address` may start
/// with extra ping flags (`"-I v20 198.51.100.10"`).
pub fn ping_all(probes: &[(String, String)], secs: u32) -> Vec<bool> {
    let children: Vec<_> = probes
        .iter()
        .map(|(ns, addr)| {
            nsutil::in_netns(ns, "ping")
                .args(["-n", "-q", "-c", "1", "-i", "0.3"])
                .args(["-w", &secs.to_string()])
                .args(addr.split_whitespace())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ping")
        })
        .collect();
    children
        .into_iter()
        .map(|mut c| c.wait().map(|s| s.success()).unwrap_or(false))
        .collect()
}

/// One ping from namespace `full` to `addr`: true on the first answer within `secs`.
pub fn reach(full: &str, addr: &str, secs: u32) -> bool {
    ping_all(&[(full.to_string(), addr.to_string())], secs)[0]
}

/// Sends `bytes` of patterned data from a client in namespace `client` to an echo server
/// listening on `listen` in namespace `server`, reads the echo back and compares it byte for
/// byte. Both directions cross the topology, so segmentation, checksums and coalescing are
/// exercised both ways.
pub fn tcp_echo(
    server: &str,
    listen: SocketAddr,
    client: &str,
    bytes: usize,
) -> Result<(), String> {
    let deadline = Duration::from_secs(30);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let server_ns = server.to_string();
    let srv = std::thread::spawn(move || -> Result<u64, String> {
        let fail = |what: &str, e: io::Error| format!("echo server {what}: {e}");
        let setup = enter_netns(&server_ns)
            .map_err(|e| fail("setns", e))
            .and_then(|()| TcpListener::bind(listen).map_err(|e| fail("bind", e)));
        let l = match setup {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.clone()));
                return Err(e);
            }
        };
        l.set_nonblocking(true)
            .map_err(|e| fail("nonblocking", e))?;
        let t = Instant::now();
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if t.elapsed() > deadline {
                        return Err("echo server: no connection".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(fail("accept", e)),
            }
        };
        s.set_nonblocking(false).map_err(|e| fail("blocking", e))?;
        s.set_read_timeout(Some(deadline))
            .map_err(|e| fail("timeout", e))?;
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).map_err(|e| fail("read", e))?;
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).map_err(|e| fail("write", e))?;
            total += n as u64;
        }
        Ok(total)
    });
    ready_rx
        .recv()
        .map_err(|_| "echo server thread died".to_string())??;
    let client_ns = client.to_string();
    let cli = std::thread::spawn(move || -> Result<(), String> {
        enter_netns(&client_ns).map_err(|e| format!("client setns: {e}"))?;
        let t = Instant::now();
        let s = loop {
            match TcpStream::connect_timeout(&listen, Duration::from_secs(3)) {
                Ok(s) => break s,
                Err(e) if t.elapsed() > Duration::from_secs(10) => {
                    return Err(format!("connect to {listen}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        };
        s.set_read_timeout(Some(deadline))
            .map_err(|e| e.to_string())?;
        let data: Vec<u8> = (0..bytes)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1])
            .collect();
        let mut w = s.try_clone().map_err(|e| e.to_string())?;
        let sent = data.clone();
        let writer = std::thread::spawn(move || -> Result<(), String> {
            w.write_all(&sent)
                .map_err(|e| format!("client write: {e}"))?;
            w.shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("client shutdown: {e}"))
        });
        let mut back = Vec::with_capacity(bytes);
        let mut r = s;
        r.read_to_end(&mut back)
            .map_err(|e| format!("client read after {} bytes: {e}", back.len()))?;
        writer.join().map_err(|_| "writer panicked".to_string())??;
        if back.len() != data.len() {
            return Err(format!("echoed {} of {} bytes", back.len(), data.len()));
        }
        if let Some(i) = back.iter().zip(&data).position(|(a, b)| a != b) {
            return Err(format!("echo differs at byte {i}"));
        }
        Ok(())
    });
    let c = cli.join().map_err(|_| "client panicked".to_string())?;
    let s = srv.join().map_err(|_| "server panicked".to_string())?;
    c?;
    let n = s?;
    if n as usize != bytes {
        return Err(format!("server echoed {n} of {bytes} bytes"));
    }
    Ok(())
}

/// A socket address from a textual IP and a port.
pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().expect("IP"), port)
}

/// Options of [`World::lan`].
#[derive(Clone, Debug)]
pub struct LanOptions {
    /// MTU of the parent `up0` (set before any network uses it).
    pub parent_mtu: u32,
    /// Hairpin on the switch port facing the host (reflective relay for VEPA).
    pub hairpin: bool,
    /// The switch hands 802.1Q tags to the namespaces as skb metadata (`txvlan on`, the
    /// bridge's default) instead of in the frame data as a real wire carries them.
    pub tags_as_metadata: bool,
}

impl Default for LanOptions {
    fn default() -> Self {
        LanOptions {
            parent_mtu: 1500,
            hairpin: false,
            tags_as_metadata: false,
        }
    }
}

/// A switch: a namespace with a Linux bridge `br0` (no STP, no forward delay, fixed MAC,
/// no addresses of its own).
#[derive(Clone, Debug)]
pub struct Switch {
    /// The switch namespace (full name).
    pub ns: String,
    /// Ports hand tags over as skb metadata (`txvlan on`).
    pub tags_as_metadata: bool,
}

impl Switch {
    /// Plugs interface `ifname` (MAC `mac`) of namespace `full` into switch port `port`.
    ///
    /// The switch end behaves like a physical wire towards `full`: it does not offload
    /// checksums or segmentation (frames carry complete checksums; a veth feeding an XSK
    /// needs this: research §2.3), and it puts 802.1Q tags into the frame data rather than
    /// into skb metadata (`txvlan off`), as a tag travels on a real wire. With `txvlan on`
    /// a bridge hands a veth peer its tags as skb metadata, which the XDP filter cannot see
    /// (the AF_PACKET copy socket picks such frames up); `tags_as_metadata` keeps the
    /// bridge's default to exercise that path.
    pub fn plug(&self, full: &str, ifname: &str, mac: &str, port: &str) {
        cable(full, ifname, Some(mac), &self.ns, port);
        let txvlan = if self.tags_as_metadata { "on" } else { "off" };
        sh_in(
            &self.ns,
            &format!("ethtool -K {port} tx off txvlan {txvlan} >/dev/null"),
        );
        ip_in(&self.ns, &format!("link set {port} master br0"));
    }

    /// Turns hairpin (reflective relay) on or off on a switch port.
    pub fn hairpin(&self, port: &str, on: bool) {
        let v = if on { "on" } else { "off" };
        ip_in(
            &self.ns,
            &format!("link set {port} type bridge_slave hairpin {v}"),
        );
    }

    /// Forgets every MAC the bridge learned (so a changed topology floods again).
    pub fn flush_fdb(&self) {
        ip_in(&self.ns, "link set br0 type bridge fdb_flush");
    }
}

/// The standard LAN of a [`World`] (full namespace names).
#[derive(Clone, Debug)]
pub struct Lan {
    /// The `host` namespace (daemon, parent `up0`).
    pub host: String,
    /// The switch namespace (bridge `br0`).
    pub sw: String,
    /// The gateway namespace.
    pub gw: String,
    /// The external host behind the gateway.
    pub ext: String,
    /// The switch.
    pub switch: Switch,
}

impl Lan {
    /// Turns hairpin on or off on a switch port (see [`Switch::hairpin`]).
    pub fn hairpin(&self, port: &str, on: bool) {
        self.switch.hairpin(port, on);
    }

    /// Forgets every MAC the switch learned.
    pub fn flush_fdb(&self) {
        self.switch.flush_fdb();
    }
}

impl World {
    /// The full name of test namespace `name` (as [`World::ns`]); full names pass through.
    fn full(&self, name: &str) -> String {
        if name.starts_with(&self.prefix) {
            name.to_string()
        } else {
            self.ns(name)
        }
    }

    /// `ip -n NAME ARGS` in test namespace `name`; panics on failure.
    pub fn ip(&self, name: &str, args: &str) -> String {
        ip_in(&self.full(name), args)
    }

    /// `sh -c CMD` in test namespace `name`; panics on failure.
    pub fn sh(&self, name: &str, cmd: &str) -> String {
        sh_in(&self.full(name), cmd)
    }

    /// Whether `addr` answers a ping from namespace `name` within `secs`.
    pub fn reach(&self, name: &str, addr: &str, secs: u32) -> bool {
        reach(&self.full(name), addr, secs)
    }

    /// Creates namespace `sw` with an empty switch.
    pub fn switch(&mut self) -> Switch {
        let sw = Switch {
            ns: self.netns("sw"),
            tags_as_metadata: false,
        };
        ip_in(
            &sw.ns,
            "link add name br0 type bridge stp_state 0 forward_delay 0",
        );
        ip_in(&sw.ns, &format!("link set br0 address {BRIDGE_MAC} up"));
        // The bridge must not answer anything itself.
        sh_in(&sw.ns, "sysctl -qw net.ipv6.conf.br0.disable_ipv6=1");
        sw
    }

    /// Builds the standard LAN (see the module docs): namespaces `sw`, `gw`, `ext`; the
    /// parent `up0` in `host` with [`HOST_IP`]/[`HOST_IP6`] and a route to [`EXT_NET`] via
    /// the gateway; the gateway forwards and routes [`L3_NET`] back via the host.
    pub fn lan(&mut self, opts: LanOptions) -> Lan {
        let mut switch = self.switch();
        switch.tags_as_metadata = opts.tags_as_metadata;
        let lan = Lan {
            host: self.ns("host"),
            sw: switch.ns.clone(),
            gw: self.netns("gw"),
            ext: self.netns("ext"),
            switch,
        };
        lan.switch.plug(&lan.host, PARENT, HOST_MAC, HOST_PORT);
        lan.switch.plug(&lan.gw, "eth0", GW_MAC, GW_PORT);
        if opts.hairpin {
            lan.hairpin(HOST_PORT, true);
        }
        let h = &lan.host;
        ip_in(h, &format!("link set {PARENT} mtu {}", opts.parent_mtu));
        ip_in(h, &format!("addr add {HOST_IP}/24 dev {PARENT}"));
        ip_in(h, &format!("addr add {HOST_IP6}/64 dev {PARENT} nodad"));
        ip_in(h, &format!("route add {EXT_NET} via {GW_IP}"));
        let g = &lan.gw;
        ip_in(g, &format!("addr add {GW_IP}/24 dev eth0"));
        ip_in(g, &format!("addr add {GW_IP6}/64 dev eth0 nodad"));
        ip_in(g, &format!("route add {L3_NET} via {HOST_IP}"));
        sh_in(g, "sysctl -qw net.ipv4.ip_forward=1");
        cable(g, "ext0", Some("02:00:00:00:fe:02"), &lan.ext, "eth0");
        ip_in(g, "addr add 203.0.113.254/24 dev ext0");
        ip_in(&lan.ext, &format!("addr add {EXT_IP}/24 dev eth0"));
        ip_in(&lan.ext, "route add default via 203.0.113.254");
        lan
    }

    /// `uvlan network connect [OPTS] NET NS` for test namespace `name` (created if needed).
    pub fn connect(&mut self, net: &str, name: &str, opts: &[&str]) -> String {
        let full = if self.namespaces.contains(&self.ns(name)) {
            self.ns(name)
        } else {
            self.netns(name)
        };
        let mut args = vec!["network", "connect"];
        args.extend_from_slice(opts);
        args.push(net);
        args.push(&full);
        self.uvlan_ok(&args);
        full
    }

    /// `uvlan network create ARGS` (split on whitespace).
    pub fn create(&self, args: &str) -> String {
        let mut v = vec!["network", "create"];
        v.extend(args.split_whitespace());
        self.uvlan_ok(&v)
    }

    /// `uvlan network inspect NAME`, parsed (the one element).
    pub fn inspect(&self, net: &str) -> serde_json::Value {
        let out = self.uvlan_ok(&["network", "inspect", net]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v.get(0).cloned().expect("one network")
    }
}
