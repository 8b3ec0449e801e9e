//! Root tests of the dataplane thread (`uvlan_dataplane::run`) with real traffic.
//!
//! Every test builds an [`Engine`] by hand (no control plane) through
//! `DataplaneHandle::with_engine`, creates its own `uvt-<pid>-<n>…` namespaces, puts one TAP
//! endpoint (`eth0`) in each with `Tap::create_in_netns`, addresses it with `ip -n`, and
//! then pings, runs iperf3 or answers frames by hand. The wire tests join a "host"
//! namespace (where the dataplane thread runs, through `RunOptions::netns`, and where the
//! parent veth lives) to an "upstream" namespace holding the gateway. A `Lab` guard deletes
//! every namespace it made (and with them the veths and TAPs), also when a test fails; the
//! dataplane is declared after the lab in each test, so it stops first.
//!
//! Addresses are documentation ranges only: 192.0.2.0/24 (parent subnet), 198.51.100.0/24
//! (ipvlan L3 subnet), 203.0.113.0/24 (VLAN 20).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uvlan_dataplane::fwd::{
    ConfigError, Driver, DropReason, Engine, Ingress, IpvlanAttrs, IpvlanFlag, IpvlanMode, LinkRef,
    LinkType, MacvlanAttrs, MacvlanMode, Master, NetworkId, NetworkSpec, ParentId, ParentSpec,
    PortId, Target, Verdict,
};
use uvlan_dataplane::port::afpacket::{AfPacketOptions, AfPacketSocket};
use uvlan_dataplane::port::tap::{Tap, TapOptions};
use uvlan_dataplane::port::xsk::{XdpAttach, XdpOptions};
use uvlan_dataplane::run::{
    Dataplane, DataplaneHandle, IoDrop, IoMode, NextHop, Resolver, RunError, RunOptions,
    WireBackend,
};
use uvlan_dataplane::wire::{build, MacAddr};

mod common;
use common::{exec, ip, must, run, Lab, NoRoutes};

fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{ns}"))
}

/// A child process killed on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Answers from the host namespace's routing and neighbour tables with `ip -j` (what the
/// control plane does with netlink).
struct IpResolver {
    ns: String,
    ifname: String,
    ifindex: u32,
    calls: Arc<AtomicU32>,
    wrong_ifindex: Arc<AtomicBool>,
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

impl Resolver for IpResolver {
    fn resolve(&mut self, ifindex: u32, dst: IpAddr) -> NextHop {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if ifindex != self.ifindex {
            self.wrong_ifindex.store(true, Ordering::SeqCst);
            return NextHop::Unreachable;
        }
        let d = dst.to_string();
        let Ok(r) = run(&[
            "ip",
            "-n",
            &self.ns,
            "-j",
            "route",
            "get",
            &d,
            "oif",
            &self.ifname,
        ]) else {
            return NextHop::Unreachable;
        };
        let r = json(&r);
        let route = &r[0];
        match route["type"].as_str() {
            None | Some("unicast") => {}
            Some("local") => return NextHop::Local,
            Some(_) => return NextHop::BadRouteType,
        }
        let nh = route["gateway"].as_str().unwrap_or(&d).to_string();
        let Ok(n) = run(&[
            "ip",
            "-n",
            &self.ns,
            "-j",
            "neigh",
            "show",
            "to",
            &nh,
            "dev",
            &self.ifname,
        ]) else {
            return NextHop::Pending;
        };
        match json(&n)[0]["lladdr"].as_str().map(str::parse::<MacAddr>) {
            Some(Ok(m)) => NextHop::Mac(m),
            _ => NextHop::Pending,
        }
    }
}

fn received(ping_out: &str) -> u32 {
    ping_out
        .split(',')
        .find(|s| s.contains(" received"))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Pings `dst` `count` times from `ns`; returns the number of replies.
fn ping(ns: &str, dst: &str, count: u32) -> u32 {
    let c = count.to_string();
    let out = match exec(ns, &["ping", "-c", &c, "-i", "0.2", "-W", "1", dst]) {
        Ok(o) => o,
        Err(e) => e,
    };
    received(&out)
}

/// A TAP endpoint `eth0` in `ns` for `port`: MAC, address, up, handed to the dataplane.
fn endpoint(dp: &DataplaneHandle, port: PortId, ns: &str, mac: MacAddr, cidr: &str, l3: bool) {
    let tap = Tap::create_in_netns(
        &ns_path(ns),
        &TapOptions {
            name: Some("eth0".into()),
            ..TapOptions::default()
        },
    )
    .expect("TAP in the endpoint namespace");
    let m = mac.to_string();
    ip(ns, &["link", "set", "eth0", "address", &m]);
    if l3 {
        ip(ns, &["link", "set", "eth0", "arp", "off"]);
    }
    ip(ns, &["addr", "add", cidr, "dev", "eth0"]);
    ip(ns, &["link", "set", "eth0", "up"]);
    dp.add_tap(port, tap).expect("add_tap");
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn ipvlan_port(
    e: &mut Engine,
    net: NetworkId,
    name: &str,
    mode: IpvlanMode,
    flag: IpvlanFlag,
    addr: &str,
) -> Result<PortId, ConfigError> {
    let p = e.add_ipvlan_port(LinkRef::Network(net), name, IpvlanAttrs::new(mode, flag))?;
    e.add_port_addr(p, v4(addr))?;
    e.set_port_up(p, true)?;
    Ok(p)
}

fn macvlan_port(
    e: &mut Engine,
    net: NetworkId,
    name: &str,
    mac: MacAddr,
    addr: &str,
) -> Result<PortId, ConfigError> {
    let p = e.add_macvlan_port(
        LinkRef::Network(net),
        name,
        MacvlanAttrs::new(MacvlanMode::Bridge, Some(mac)),
    )?;
    e.add_port_addr(p, v4(addr))?;
    e.set_port_up(p, true)?;
    Ok(p)
}

fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The I/O path and worker count a scenario runs with.
#[derive(Clone, Copy, Debug)]
struct Io {
    mode: IoMode,
    workers: usize,
}

fn spawn(io: Io, opts: RunOptions, r: Box<dyn Resolver>) -> Dataplane {
    let dp = Dataplane::spawn(
        RunOptions {
            io: io.mode,
            workers: io.workers,
            ..opts
        },
        r,
    )
    .expect("Dataplane::spawn");
    let word = match io.mode {
        IoMode::Uring => "io_uring",
        IoMode::Plain => "epoll",
        IoMode::Auto => "",
    };
    assert!(
        dp.io_description().contains(word),
        "{}",
        dp.io_description()
    );
    dp
}

/// Runs a scenario on each I/O path, and with two workers: `NAME::uring`, `NAME::plain`,
/// `NAME::uring_two_workers` (ports and wires spread over both: frames cross workers).
macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[test]
            fn uring() {
                super::$name(Io {
                    mode: IoMode::Uring,
                    workers: 1,
                })
            }
            #[test]
            fn plain() {
                super::$name(Io {
                    mode: IoMode::Plain,
                    workers: 1,
                })
            }
            #[test]
            fn uring_two_workers() {
                super::$name(Io {
                    mode: IoMode::Uring,
                    workers: 2,
                })
            }
        }
    };
}

// ---- iperf3 -------------------------------------------------------------------------------

/// Starts a one-shot iperf3 server in `ns` and waits until it listens.
fn iperf_server(ns: &str) -> ChildGuard {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -s");
    let g = ChildGuard(child);
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if exec(ns, &["ss", "-Hltn", "sport = :5201"]).is_ok_and(|o| !o.trim().is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    g
}

/// TCP bits/s received, client in `client` towards `dst` (server in `server`); `reverse`
/// makes the server send.
fn iperf_tcp(server: &str, client: &str, dst: &str, secs: u32, reverse: bool) -> f64 {
    let mut srv = iperf_server(server);
    let t = secs.to_string();
    let mut args = vec!["iperf3", "-c", dst, "-t", &t, "-J"];
    if reverse {
        args.push("-R");
    }
    let out = exec(client, &args).unwrap_or_else(|e| panic!("iperf3 client: {e}"));
    let _ = srv.0.wait();
    json(&out)["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
}

/// 64-byte UDP flood: (sent pps, delivered pps).
fn iperf_udp64(server: &str, client: &str, dst: &str, secs: u32) -> (f64, f64) {
    let mut srv = iperf_server(server);
    let t = secs.to_string();
    let out = exec(
        client,
        &[
            "iperf3", "-c", dst, "-t", &t, "-u", "-l", "64", "-b", "0", "-J",
        ],
    )
    .unwrap_or_else(|e| panic!("iperf3 client: {e}"));
    let _ = srv.0.wait();
    let v = json(&out);
    let sum = &v["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let s = sum["seconds"].as_f64().unwrap_or(1.0).max(0.001);
    (packets / s, (packets - lost).max(0.0) / s)
}

// ---- isolated networks (TAP ↔ TAP) ---------------------------------------------------------

const ISO_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x10, 0x01]);

/// Two ipvlan ports on an isolated network, endpoints in `a` (192.0.2.1) and `b` (.2).
fn isolated_ipvlan_pair(
    lab: &mut Lab,
    h: &DataplaneHandle,
    mode: IpvlanMode,
    flag: IpvlanFlag,
) -> (String, String, PortId, PortId) {
    let a = lab.ns("a");
    let b = lab.ns("b");
    let (pa, pb) = h
        .with_engine(move |e| {
            let n = e.add_network(NetworkSpec::new(
                "iso",
                Driver::Ipvlan,
                Master::Isolated {
                    mac: ISO_MAC,
                    mtu: 1500,
                },
            ))?;
            let pa = ipvlan_port(e, n, "a", mode, flag, "192.0.2.1")?;
            let pb = ipvlan_port(e, n, "b", mode, flag, "192.0.2.2")?;
            Ok::<_, ConfigError>((pa, pb))
        })
        .unwrap()
        .unwrap();
    endpoint(h, pa, &a, ISO_MAC, "192.0.2.1/24", false);
    endpoint(h, pb, &b, ISO_MAC, "192.0.2.2/24", false);
    (a, b, pa, pb)
}

both!(isolated_ipvlan_l2_pings_both_ways_and_tcp_keeps_gso);
fn isolated_ipvlan_l2_pings_both_ways_and_tcp_keeps_gso(io: Io) {
    let mut lab = Lab::new("uvt");
    let dp = spawn(io, RunOptions::default(), Box::new(NoRoutes));
    let h = dp.handle();
    let (a, b, pa, pb) = isolated_ipvlan_pair(&mut lab, &h, IpvlanMode::L2, IpvlanFlag::Bridge);
    assert_eq!(ping(&a, "192.0.2.2", 3), 3);
    assert_eq!(ping(&b, "192.0.2.1", 3), 3);
    let bps = iperf_tcp(&b, &a, "192.0.2.2", 2, false);
    eprintln!(
        "TAP↔TAP TCP through the loop ({} build): {:.2} Gbit/s",
        build(),
        bps / 1e9
    );
    assert!(bps > 1e6, "TCP barely moved: {bps} bit/s");
    let st = h.stats().unwrap();
    let ca = *st.port(pa).unwrap();
    let cb = *st.port(pb).unwrap();
    eprintln!("port a: {ca:?}\nport b: {cb:?}");
    // The sender's GSO super-frames crossed the loop unsegmented.
    assert!(ca.rx_gso_frames > 0, "no GSO frame read from a: {ca:?}");
    assert!(cb.tx_gso_frames > 0, "no GSO frame written to b: {cb:?}");
    assert_eq!(cb.tx_dropped, 0);
    // No wire: the broadcasts' wire copies are the only drops, counted as NoWire.
    assert_eq!(st.drop_count(DropReason::PrivateFlag), 0);
    assert_eq!(st.drops.len(), DropReason::COUNT);
    assert_eq!(st.io_drops.len(), IoDrop::COUNT);
    // The loop gives the TAP back, and a second TAP for a port is refused and returned.
    let tap = h.remove_tap(pb).unwrap().expect("b had a TAP");
    assert_eq!(ping(&a, "192.0.2.2", 1), 0);
    h.add_tap(pb, tap).unwrap();
    let dup = Tap::create_in_netns(
        &ns_path(&b),
        &TapOptions {
            name: Some("eth1".into()),
            ..TapOptions::default()
        },
    )
    .unwrap();
    match h.add_tap(pb, dup) {
        Err(RunError::PortBusy { port, tap }) => {
            assert_eq!(port, pb);
            assert_eq!(tap.name().unwrap(), "eth1");
        }
        other => panic!("expected PortBusy, got {other:?}"),
    }
    assert_eq!(ping(&a, "192.0.2.2", 2), 2);
    assert!(matches!(
        h.add_tap(
            PortId(99),
            Tap::create_in_netns(&ns_path(&b), &TapOptions::default()).unwrap()
        ),
        Err(RunError::NoSuchPort(PortId(99)))
    ));
    drop(dp);
    assert!(matches!(h.stats(), Err(RunError::Stopped)));
}

both!(a_busy_polling_worker_forwards_without_sleeping_between_frames);
/// `RunOptions::busy_poll` (`uvlan daemon --busy-poll`): a worker that spins 300 ms before it
/// sleeps forwards pings sent 20 ms apart without sleeping between them (each frame arrives
/// while it spins), where a worker that sleeps at once wakes for every one.
fn a_busy_polling_worker_forwards_without_sleeping_between_frames(io: Io) {
    let mut lab = Lab::new("uvt");
    let opts = RunOptions {
        busy_poll: Some(Duration::from_millis(300)),
        ..RunOptions::default()
    };
    let dp = spawn(io, opts, Box::new(NoRoutes));
    assert!(
        dp.io_description().contains("spinning 300000 µs"),
        "{}",
        dp.io_description()
    );
    let h = dp.handle();
    let (a, _, _, _) = isolated_ipvlan_pair(&mut lab, &h, IpvlanMode::L2, IpvlanFlag::Bridge);
    assert_eq!(ping(&a, "192.0.2.2", 1), 1);
    let sum = |st: &uvlan_dataplane::run::Stats| {
        st.workers
            .iter()
            .fold((0, 0), |(w, f), l| (w + l.wakeups, f + l.frames_in))
    };
    let (w0, f0) = sum(&h.stats().unwrap());
    let out = exec(
        &a,
        &["ping", "-c", "40", "-i", "0.02", "-W", "1", "192.0.2.2"],
    )
    .unwrap_or_else(|e| e);
    assert_eq!(received(&out), 40, "{out}");
    let (w1, f1) = sum(&h.stats().unwrap());
    let (wakeups, frames) = (w1 - w0, f1 - f0);
    assert!(frames >= 80, "{frames} frames read for 40 pings");
    // Sleeping at once would mean a wake-up per request and per reply (80 or more).
    assert!(
        wakeups < frames / 4,
        "{wakeups} wake-ups for {frames} frames"
    );
}

both!(a_deleted_endpoint_tap_does_not_make_the_loop_spin);
fn a_deleted_endpoint_tap_does_not_make_the_loop_spin(io: Io) {
    let mut lab = Lab::new("uvt");
    let dp = spawn(io, RunOptions::default(), Box::new(NoRoutes));
    let h = dp.handle();
    let (a, b, _pa, pb) = isolated_ipvlan_pair(&mut lab, &h, IpvlanMode::L2, IpvlanFlag::Bridge);
    assert_eq!(ping(&a, "192.0.2.2", 1), 1);
    // The TAP device is deleted while the loop still holds its fd (deleting the namespace
    // would not do it: the open TAP fd keeps the namespace and the device alive).
    ip(&b, &["link", "del", "eth0"]);
    std::thread::sleep(Duration::from_millis(300));
    let before = h.stats().unwrap().iterations;
    std::thread::sleep(Duration::from_millis(500));
    let st = h.stats().unwrap();
    // Two stats calls wake the loop; a spinning loop would count thousands.
    assert!(
        st.iterations - before < 50,
        "{} iterations",
        st.iterations - before
    );
    assert!(st.port(pb).unwrap().rx_errors >= 1, "{:?}", st.port(pb));
    // The survivor's traffic to the vanished port is counted, not fatal.
    assert_eq!(ping(&a, "192.0.2.2", 1), 0);
    assert!(h.remove_tap(pb).unwrap().is_some());
}

both!(isolated_ipvlan_private_flag_stops_port_to_port);
fn isolated_ipvlan_private_flag_stops_port_to_port(io: Io) {
    let mut lab = Lab::new("uvt");
    let dp = spawn(io, RunOptions::default(), Box::new(NoRoutes));
    let h = dp.handle();
    let (a, _b, _pa, _pb) = isolated_ipvlan_pair(&mut lab, &h, IpvlanMode::L2, IpvlanFlag::Private);
    assert_eq!(ping(&a, "192.0.2.2", 3), 0);
    let st = h.stats().unwrap();
    assert!(st.drop_count(DropReason::PrivateFlag) > 0, "{:?}", st.drops);
    // Switching the flag back to bridge (a changelink on any port) lets it through.
    h.with_engine(move |e| {
        let p = e.port_ids()[0];
        e.ipvlan_changelink(p, IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Bridge))
    })
    .unwrap()
    .unwrap();
    assert_eq!(ping(&a, "192.0.2.2", 3), 3);
}

both!(captures_record_the_loops_frames_copies_and_drops);
/// A capture on every worker: frames inbound where they entered and outbound where they were
/// written, a copy for a port without a TAP as not delivered (`no_tap`), an engine drop with
/// its reason; and forwarding goes on once the reader is gone.
fn captures_record_the_loops_frames_copies_and_drops(io: Io) {
    use uvlan_dataplane::capture::{CaptureFilter, Direction, Fate};
    let mut lab = Lab::new("uvt");
    let dp = spawn(io, RunOptions::default(), Box::new(NoRoutes));
    let h = dp.handle();
    let (a, _b, pa, pb) = isolated_ipvlan_pair(&mut lab, &h, IpvlanMode::L2, IpvlanFlag::Bridge);
    // A third port without a TAP.
    let pc = h
        .with_engine(move |e| {
            let n = e.port_info(pa).unwrap().network;
            ipvlan_port(e, n, "c", IpvlanMode::L2, IpvlanFlag::Bridge, "192.0.2.3")
        })
        .unwrap()
        .unwrap();
    assert_eq!(ping(&a, "192.0.2.2", 1), 1);
    let mut f = CaptureFilter::new(vec![pa, pb, pc], vec![]);
    f.drops = true;
    let mut r = h.start_capture(f).unwrap();
    assert_eq!(ping(&a, "192.0.2.2", 2), 2);
    // a asks for 192.0.2.3 (ARP, flooded to b and to c, which has no TAP).
    assert_eq!(ping(&a, "192.0.2.3", 1), 0);
    h.with_engine(move |e| {
        e.ipvlan_changelink(pa, IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Private))
    })
    .unwrap()
    .unwrap();
    assert_eq!(ping(&a, "192.0.2.2", 1), 0);
    let mut recs = Vec::new();
    loop {
        let b = r.try_take();
        if b.is_empty() {
            break;
        }
        recs.extend(b.records().map(|x| {
            // ICMP echo request (8) or reply (0), when the frame is one.
            let icmp = (x.data.get(12..14) == Some(&[8, 0][..]) && x.data.get(23) == Some(&1))
                .then(|| x.data.get(34).copied())
                .flatten();
            (x.interface, x.direction, x.decision.fate, icmp)
        }));
    }
    let n = |i: u32, d: Direction, fate: Fate, icmp: Option<u8>| {
        recs.iter()
            .filter(|r| r.0 == i && r.1 == d && r.2 == fate && (icmp.is_none() || r.3 == icmp))
            .count()
    };
    let fwd = Fate::Forward;
    assert_eq!(n(0, Direction::Inbound, fwd, Some(8)), 2, "{recs:?}");
    assert_eq!(n(1, Direction::Outbound, fwd, Some(8)), 2, "{recs:?}");
    assert_eq!(n(1, Direction::Inbound, fwd, Some(0)), 2, "{recs:?}");
    assert_eq!(n(0, Direction::Outbound, fwd, Some(0)), 2, "{recs:?}");
    assert!(
        n(2, Direction::Outbound, Fate::NotDelivered("no_tap"), None) >= 1,
        "{recs:?}"
    );
    assert_eq!(
        n(
            0,
            Direction::Inbound,
            Fate::Drop(DropReason::PrivateFlag),
            Some(8)
        ),
        1,
        "{recs:?}"
    );
    let c = r.counts();
    assert_eq!(c.captured.iter().sum::<u64>(), recs.len() as u64);
    assert_eq!(c.lost.iter().sum::<u64>(), 0);
    // The reader goes: the workers let the capture go, forwarding goes on.
    drop(r);
    h.with_engine(move |e| {
        e.ipvlan_changelink(pa, IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Bridge))
    })
    .unwrap()
    .unwrap();
    assert_eq!(ping(&a, "192.0.2.2", 2), 2);
    // A capture ends when the dataplane stops.
    let mut r = h
        .start_capture(CaptureFilter::new(vec![pb], vec![]))
        .unwrap();
    drop(dp);
    // Frames b's own stack sent meanwhile (IPv6 router solicitations, MLD reports) come
    // first; the end comes after them.
    let end = loop {
        if let Some(end) = r.wait().end {
            break end;
        }
    };
    assert_eq!(end, uvlan_dataplane::capture::End::Detached);
}

both!(a_wire_copy_without_a_wire_is_recorded_tagged_on_the_networks_wire);
/// A network on VLAN 20 of a parent whose wire is not attached: the wire copy of a's ARP
/// broadcast goes nowhere (`wire_not_attached`) and, with `--drops`, is recorded on the
/// network's wire interface with the tag it would have left with.
fn a_wire_copy_without_a_wire_is_recorded_tagged_on_the_networks_wire(io: Io) {
    use uvlan_dataplane::capture::{CaptureFilter, Direction, Fate, WireFilter};
    let mut lab = Lab::new("uvt");
    let dp = spawn(io, RunOptions::default(), Box::new(NoRoutes));
    let h = dp.handle();
    let a = lab.ns("a");
    let (parent, pa) = h
        .with_engine(move |e| {
            let parent = e.add_parent(ParentSpec {
                name: "nowire0".into(),
                mac: HOST_MAC,
                mtu: 1500,
                up: true,
                link_type: LinkType::Ether,
                addrs: vec![],
            })?;
            let n = e.add_network(NetworkSpec::new(
                "v20",
                Driver::Ipvlan,
                Master::Parent {
                    parent,
                    vid: Some(20),
                    wire: true,
                },
            ))?;
            let pa = ipvlan_port(e, n, "a", IpvlanMode::L2, IpvlanFlag::Bridge, "192.0.2.10")?;
            Ok::<_, ConfigError>((parent, pa))
        })
        .unwrap()
        .unwrap();
    endpoint(&h, pa, &a, HOST_MAC, "192.0.2.10/24", false);
    let mut f = CaptureFilter::new(
        vec![pa],
        vec![WireFilter {
            parent,
            vid: Some(20),
        }],
    );
    f.drops = true;
    let mut r = h.start_capture(f).unwrap();
    assert_eq!(ping(&a, "192.0.2.99", 1), 0);
    let mut recs = Vec::new();
    loop {
        let b = r.try_take();
        if b.is_empty() {
            break;
        }
        recs.extend(
            b.records()
                .map(|x| (x.interface, x.direction, x.decision.fate, x.data.to_vec())),
        );
    }
    let arp_in = recs
        .iter()
        .find(|x| x.0 == 0 && x.1 == Direction::Inbound && x.3.get(12..14) == Some(&[8, 6][..]));
    assert!(
        arp_in.is_some_and(|x| x.2 == Fate::Forward),
        "a's ARP request in: {recs:?}"
    );
    // The wire copy of the ARP request (a's stack also sends IPv6 solicitations and MLD
    // reports, whose copies are recorded the same way).
    let lost = recs
        .iter()
        .find(|x| x.0 == 1 && x.3.get(16..18) == Some(&[8, 6][..]))
        .expect("the ARP request's record on the wire");
    assert_eq!(lost.1, Direction::Outbound, "{recs:?}");
    assert_eq!(lost.2, Fate::NotDelivered("wire_not_attached"), "{recs:?}");
    assert_eq!(
        lost.3.get(12..18),
        Some(&[0x81, 0, 0, 20, 8, 6][..]),
        "{recs:?}"
    );
    assert!(h.stats().unwrap().io_drop_count(IoDrop::NoWire) >= 1);
}

#[test]
fn the_blind_relay_refuses_a_capture() {
    let dp = Dataplane::spawn(
        RunOptions {
            relay: true,
            ..RunOptions::default()
        },
        Box::new(NoRoutes),
    )
    .unwrap();
    let f = uvlan_dataplane::capture::CaptureFilter::new(vec![], vec![]);
    assert!(matches!(
        dp.handle().start_capture(f),
        Err(RunError::CaptureInRelay)
    ));
}

both!(isolated_ipvlan_l3_routes_between_subnets);
fn isolated_ipvlan_l3_routes_between_subnets(io: Io) {
    let mut lab = Lab::new("uvt");
    let dp = spawn(io, RunOptions::default(), Box::new(NoRoutes));
    let h = dp.handle();
    let a = lab.ns("a");
    let b = lab.ns("b");
    let (pa, pb) = h
        .with_engine(|e| {
            let n = e.add_network(NetworkSpec::new(
                "l3",
                Driver::Ipvlan,
                Master::Isolated {
                    mac: ISO_MAC,
                    mtu: 1500,
                },
            ))?;
            let pa = ipvlan_port(e, n, "a", IpvlanMode::L3, IpvlanFlag::Bridge, "192.0.2.10")?;
            let pb = ipvlan_port(
                e,
                n,
                "b",
                IpvlanMode::L3,
                IpvlanFlag::Bridge,
                "198.51.100.10",
            )?;
            Ok::<_, ConfigError>((pa, pb))
        })
        .unwrap()
        .unwrap();
    endpoint(&h, pa, &a, ISO_MAC, "192.0.2.10/24", true);
    endpoint(&h, pb, &b, ISO_MAC, "198.51.100.10/24", true);
    ip(&a, &["route", "add", "default", "dev", "eth0"]);
    ip(&b, &["route", "add", "default", "dev", "eth0"]);
    assert_eq!(ping(&a, "198.51.100.10", 3), 3);
    assert_eq!(ping(&b, "192.0.2.10", 3), 3);
    // Off-network destinations would be routed through the parent: none here.
    assert_eq!(ping(&a, "203.0.113.1", 1), 0);
    let st = h.stats().unwrap();
    assert!(st.drop_count(DropReason::NoWire) > 0, "{:?}", st.drops);
}

both!(isolated_macvlan_bridge_pings_by_mac);
fn isolated_macvlan_bridge_pings_by_mac(io: Io) {
    let mut lab = Lab::new("uvt");
    let dp = spawn(io, RunOptions::default(), Box::new(NoRoutes));
    let h = dp.handle();
    let a = lab.ns("a");
    let b = lab.ns("b");
    let ma = MacAddr([0x02, 0, 0, 0, 0x20, 0x01]);
    let mb = MacAddr([0x02, 0, 0, 0, 0x20, 0x02]);
    let (pa, pb) = h
        .with_engine(move |e| {
            let n = e.add_network(NetworkSpec::new(
                "mv",
                Driver::Macvlan,
                Master::Isolated {
                    mac: ISO_MAC,
                    mtu: 1500,
                },
            ))?;
            let pa = macvlan_port(e, n, "a", ma, "192.0.2.1")?;
            let pb = macvlan_port(e, n, "b", mb, "192.0.2.2")?;
            Ok::<_, ConfigError>((pa, pb))
        })
        .unwrap()
        .unwrap();
    endpoint(&h, pa, &a, ma, "192.0.2.1/24", false);
    endpoint(&h, pb, &b, mb, "192.0.2.2/24", false);
    assert_eq!(ping(&a, "192.0.2.2", 3), 3);
    assert_eq!(ping(&b, "192.0.2.1", 3), 3);
    let neigh = ip(&a, &["neigh", "show", "192.0.2.2"]);
    assert!(neigh.contains(&mb.to_string()), "{neigh}");
    // A port that goes down stops receiving; its TAP stays attached.
    h.with_engine(move |e| e.set_port_up(pb, false))
        .unwrap()
        .unwrap();
    ip(&a, &["neigh", "flush", "dev", "eth0"]);
    assert_eq!(ping(&a, "192.0.2.2", 2), 0);
    assert!(h.stats().unwrap().port(pb).is_some());
    // Removing the port from the engine closes its TAP.
    h.with_engine(move |e| e.remove_port(pb)).unwrap().unwrap();
    assert!(h.stats().unwrap().port(pb).is_none());
}

// ---- the wire --------------------------------------------------------------------------

const HOST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
const UP_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);
const MV_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x21, 0x01]);
const V20_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x20, 0x10]);
const RESP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x20];
const RESP_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);

/// (VLAN id, source MAC) of a tagged frame the responder saw.
type TagSeen = (u16, [u8; 6]);

/// Answers ARP and ICMP echo for one address on one VLAN, with an AF_PACKET socket in the
/// upstream namespace (there is no 8021q on this kernel), and records the tags it saw.
struct Responder {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<TagSeen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The reply to a tagged frame, if it asks for `ip`.
fn answer(f: &[u8], vid: u16, ip: Ipv4Addr) -> Option<Vec<u8>> {
    if f.len() < 18
        || f[12..14] != [0x81, 0x00]
        || u16::from_be_bytes([f[14], f[15]]) & 0xfff != vid
    {
        return None;
    }
    let (etype, p) = (u16::from_be_bytes([f[16], f[17]]), &f[18..]);
    let mut r = Vec::new();
    r.extend_from_slice(&f[6..12]);
    r.extend_from_slice(&RESP_MAC);
    r.extend_from_slice(&f[12..18]);
    match etype {
        0x0806 if p.len() >= 28 && p[7] == 1 && p[24..28] == ip.octets() => {
            r.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
            r.extend_from_slice(&RESP_MAC);
            r.extend_from_slice(&ip.octets());
            r.extend_from_slice(&p[8..18]);
            Some(r)
        }
        0x0800 if p.len() >= 28 && p[9] == 1 && p[16..20] == ip.octets() => {
            let ihl = usize::from(p[0] & 0xf) * 4;
            let tot = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if p.get(ihl).copied() != Some(8) || tot > p.len() || tot < ihl + 8 {
                return None;
            }
            let mut q = p[..tot].to_vec();
            q[12..16].copy_from_slice(&ip.octets());
            q[16..20].copy_from_slice(&p[12..16]);
            q[ihl] = 0;
            q[ihl + 2] = 0;
            q[ihl + 3] = 0;
            let c = csum(&q[ihl..]);
            q[ihl + 2..ihl + 4].copy_from_slice(&c.to_be_bytes());
            r.extend_from_slice(&q);
            Some(r)
        }
        _ => None,
    }
}

fn responder(ns: &str, ifname: &str, vid: u16) -> Responder {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (ns, ifname) = (ns.to_string(), ifname.to_string());
    let (st, sn) = (Arc::clone(&stop), Arc::clone(&seen));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let f = std::fs::File::open(ns_path(&ns)).unwrap();
        // SAFETY: moves only this test thread into the upstream namespace for its lifetime.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let mut sock = AfPacketSocket::open(&ifname, &AfPacketOptions::default()).unwrap();
        ready_tx.send(()).unwrap();
        let mut replies = Vec::new();
        while !st.load(Ordering::SeqCst) {
            sock.recv_batch(64, &mut |fr| {
                let d = fr.data;
                if d.len() >= 16 && d[12..14] == [0x81, 0x00] {
                    let mut src = [0u8; 6];
                    src.copy_from_slice(&d[6..12]);
                    sn.lock()
                        .unwrap()
                        .push((u16::from_be_bytes([d[14], d[15]]) & 0xfff, src));
                }
                if let Some(r) = answer(d, vid, RESP_IP) {
                    replies.push(r);
                }
            })
            .unwrap();
            for r in replies.drain(..) {
                sock.send(&r).unwrap();
            }
            sock.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    ready_rx.recv().unwrap();
    Responder {
        stop,
        seen,
        thread: Some(thread),
    }
}

struct WireLab {
    lab: Lab,
    host: String,
    up: String,
    hif: String,
}

impl WireLab {
    /// Options of a dataplane in the host namespace: wire backend `backend`, XDP rings of
    /// `ring_size` (the rest as the defaults).
    fn options(&self, backend: WireBackend, ring_size: u32) -> RunOptions {
        RunOptions {
            netns: Some(ns_path(&self.host)),
            wire_backend: backend,
            xdp: XdpOptions {
                ring_size,
                ..XdpOptions::default()
            },
            ..RunOptions::default()
        }
    }

    /// The parent: the host's interface (`hif`, [`HOST_MAC`], MTU 1500, up) with `addrs`.
    fn parent(&self, addrs: Vec<IpAddr>) -> ParentSpec {
        ParentSpec {
            name: self.hif.clone(),
            mac: HOST_MAC,
            mtu: 1500,
            up: true,
            link_type: LinkType::Ether,
            addrs,
        }
    }

    /// Adds [`WireLab::parent`] with `addrs` to the engine of `h`; its id.
    fn add_parent(&self, h: &DataplaneHandle, addrs: Vec<IpAddr>) -> ParentId {
        let spec = self.parent(addrs);
        h.with_engine(move |e| e.add_parent(spec)).unwrap().unwrap()
    }
}

/// host ns (parent `hif`, 192.0.2.1/24) —veth— upstream ns (`uif`, gateway 192.0.2.254/24,
/// route to the ipvlan L3 subnet 198.51.100.0/24 via the host).
fn wire_lab() -> WireLab {
    let mut lab = Lab::new("uvt");
    let host = lab.ns("h");
    let up = lab.ns("u");
    let hif = lab.ifname("h");
    let uif = lab.ifname("u");
    let (hm, um) = (HOST_MAC.to_string(), UP_MAC.to_string());
    must(&[
        "ip", "link", "add", &hif, "netns", &host, "address", &hm, "type", "veth", "peer", "name",
        &uif, "netns", &up, "address", &um,
    ]);
    ip(&host, &["link", "set", &hif, "up"]);
    ip(&up, &["link", "set", &uif, "up"]);
    // Frames from a local stack carry partial checksums: finish them on the sender.
    exec(&up, &["ethtool", "-K", &uif, "tx", "off"]).unwrap();
    ip(&host, &["addr", "add", "192.0.2.1/24", "dev", &hif]);
    ip(&up, &["addr", "add", "192.0.2.254/24", "dev", &uif]);
    ip(
        &up,
        &["route", "add", "198.51.100.0/24", "via", "192.0.2.1"],
    );
    ip(
        &host,
        &[
            "neigh",
            "replace",
            "192.0.2.254",
            "lladdr",
            &um,
            "dev",
            &hif,
            "nud",
            "permanent",
        ],
    );
    WireLab { lab, host, up, hif }
}

fn rx_vlan_offload(ns: &str, ifname: &str) -> String {
    let k = exec(ns, &["ethtool", "-k", ifname]).unwrap();
    k.lines()
        .find(|l| l.starts_with("rx-vlan-offload:"))
        .unwrap_or("")
        .to_string()
}

/// `kernel_gso`: endpoint GSO frames go to the kernel whole (AF_PACKET GSO TX), or are
/// segmented by the dataplane.
fn wire_scenario(
    io: Io,
    backend: WireBackend,
    attach: XdpAttach,
    mode_word: &str,
    kernel_gso: bool,
) {
    let mut w = wire_lab();
    let (e1, e2, e3, e4) = (
        w.lab.ns("e1"),
        w.lab.ns("e2"),
        w.lab.ns("e3"),
        w.lab.ns("e4"),
    );
    let calls = Arc::new(AtomicU32::new(0));
    let wrong = Arc::new(AtomicBool::new(false));
    let ifindex: u32 = json(&ip(&w.host, &["-j", "link", "show", &w.hif]))[0]["ifindex"]
        .as_u64()
        .unwrap() as u32;
    let resolver = IpResolver {
        ns: w.host.clone(),
        ifname: w.hif.clone(),
        ifindex,
        calls: Arc::clone(&calls),
        wrong_ifindex: Arc::clone(&wrong),
    };
    let mut opts = w.options(backend, 512);
    opts.xdp.attach = attach;
    opts.kernel_gso = kernel_gso;
    let dp = spawn(io, opts, Box::new(resolver));
    let h = dp.handle();
    let parent: ParentId = w.add_parent(&h, vec![v4("192.0.2.1")]);
    let wire = move |vid| Master::Parent {
        parent,
        vid,
        wire: true,
    };

    // 1. ipvlan L2 on the parent, macvlan bridge on VLAN 20 of the same parent.
    let (n1, p1, n20, p3) = h
        .with_engine(move |e| {
            let n1 = e.add_network(NetworkSpec::new("l2", Driver::Ipvlan, wire(None)))?;
            let p1 = ipvlan_port(
                e,
                n1,
                "e1",
                IpvlanMode::L2,
                IpvlanFlag::Bridge,
                "192.0.2.10",
            )?;
            e.add_port_addr(p1, "2001:db8::10".parse().unwrap())?;
            let n20 = e.add_network(NetworkSpec::new("v20", Driver::Macvlan, wire(Some(20))))?;
            let p3 = macvlan_port(e, n20, "e3", V20_MAC, "203.0.113.10")?;
            Ok::<_, ConfigError>((n1, p1, n20, p3))
        })
        .unwrap()
        .unwrap();
    let st = h.attach_parent(parent, &w.hif).unwrap();
    eprintln!("wire: {st:?}");
    assert!(st.mode.contains(mode_word), "{st:?}");
    assert_eq!(st.refs, 1);
    assert_eq!(st.keys, 3, "ipvlan v4 + v6 address, MAC on VLAN 20: {st:?}");
    let st = h.attach_parent(parent, &w.hif).unwrap();
    assert_eq!(st.refs, 2);
    assert!(matches!(
        h.attach_parent(parent, "uvt-other"),
        Err(RunError::ParentNameMismatch { .. })
    ));
    if backend != WireBackend::AfPacket {
        // A tagged network on AF_XDP: RX VLAN offload off while attached.
        assert!(st.rx_vlan_offload_disabled, "{st:?}");
        assert!(rx_vlan_offload(&w.host, &w.hif).ends_with(": off"));
    }
    endpoint(&h, p1, &e1, HOST_MAC, "192.0.2.10/24", false);
    ip(&e1, &["route", "add", "default", "via", "192.0.2.254"]);
    endpoint(&h, p3, &e3, V20_MAC, "203.0.113.10/24", false);
    let uif = w.lab.ifname("u");
    let resp = responder(&w.up, &uif, 20);

    // The L2 endpoint resolves the gateway over the wire and reaches it, both ways.
    assert_eq!(ping(&e1, "192.0.2.254", 3), 3, "e1 → gateway");
    assert_eq!(ping(&w.up, "192.0.2.10", 3), 3, "upstream → e1");
    // The host keeps its own traffic on the parent.
    assert_eq!(ping(&w.up, "192.0.2.1", 3), 3, "upstream → host");
    // IPv6: neighbour discovery over the wire (NS for an endpoint address is steered).
    ip(
        &e1,
        &["addr", "add", "2001:db8::10/64", "dev", "eth0", "nodad"],
    );
    ip(
        &w.up,
        &["addr", "add", "2001:db8::fe/64", "dev", &uif, "nodad"],
    );
    // Neighbour discovery first (one echo, a longer wait: on a loaded machine an NS
    // retransmit can outlast ping's one-second wait), then every echo must come back.
    let _ = exec(&e1, &["ping", "-c", "1", "-W", "5", "2001:db8::fe"]);
    assert_eq!(ping(&e1, "2001:db8::fe", 3), 3, "e1 → gateway over IPv6");
    ip(&w.up, &["neigh", "flush", "dev", &uif]);
    let _ = exec(&w.up, &["ping", "-c", "1", "-W", "5", "2001:db8::10"]);
    assert_eq!(ping(&w.up, "2001:db8::10", 3), 3, "upstream → e1 over IPv6");
    // TCP both ways: TAP GSO frames go to the kernel whole or are segmented for the wire,
    // wire segments coalesced.
    let up_bps = iperf_tcp(&w.up, &e1, "192.0.2.254", 2, false);
    let down_bps = iperf_tcp(&w.up, &e1, "192.0.2.254", 2, true);
    eprintln!(
        "{mode_word}: TCP e1→upstream {:.3} Gbit/s, upstream→e1 {:.3} Gbit/s ({} build)",
        up_bps / 1e9,
        down_bps / 1e9,
        build()
    );
    assert!(up_bps > 1e6 && down_bps > 1e6, "{up_bps} {down_bps}");

    // VLAN 20: the tagged endpoint reaches the responder; every frame it sent carried tag 20.
    assert_eq!(ping(&e3, "203.0.113.254", 3), 3, "e3 → VLAN-20 gateway");
    {
        let seen = resp.seen.lock().unwrap();
        let from_e3: Vec<_> = seen.iter().filter(|(_, s)| *s == V20_MAC.0).collect();
        assert!(from_e3.len() >= 4, "ARP + 3 echo requests: {seen:?}");
        assert!(from_e3.iter().all(|(v, _)| *v == 20), "{seen:?}");
        assert!(
            !seen.iter().any(|(_, s)| *s == HOST_MAC.0),
            "untagged traffic came out tagged: {seen:?}"
        );
    }
    drop(resp);

    let stats = h.stats().unwrap();
    let pc = stats.parent(parent).unwrap().clone();
    eprintln!("parent: {pc:?}");
    assert!(pc.rx_steered > 0 && pc.tx_frames > 0, "{pc:?}");
    if kernel_gso {
        assert!(
            pc.tx_gso_kernel > 0 && pc.tx_segmented == 0 && pc.tx_gso_refused == 0,
            "TCP GSO frames did not go to the kernel whole: {pc:?}"
        );
    } else {
        assert!(
            pc.tx_segmented > 0 && pc.tx_gso_kernel == 0,
            "TCP GSO frames were not segmented: {pc:?}"
        );
    }
    let c1 = *stats.port(p1).unwrap();
    eprintln!("e1 port: {c1:?}");
    assert!(c1.rx_gso_frames > 0 && c1.tx_frames > 0);

    // 2. Replace the untagged ipvlan network with a macvlan bridge network.
    h.remove_tap(p1).unwrap().unwrap();
    h.with_engine(move |e| {
        e.remove_port(p1)?;
        e.remove_network(n1)
    })
    .unwrap()
    .unwrap();
    h.detach_parent(parent).unwrap();
    assert_eq!(h.wire_status(parent).unwrap().unwrap().refs, 1);
    let (n2, p2) = h
        .with_engine(move |e| {
            let n2 = e.add_network(NetworkSpec::new("mv", Driver::Macvlan, wire(None)))?;
            let p2 = macvlan_port(e, n2, "e2", MV_MAC, "192.0.2.21")?;
            Ok::<_, ConfigError>((n2, p2))
        })
        .unwrap()
        .unwrap();
    h.attach_parent(parent, &w.hif).unwrap();
    endpoint(&h, p2, &e2, MV_MAC, "192.0.2.21/24", false);
    ip(&e2, &["route", "add", "default", "via", "192.0.2.254"]);
    assert_eq!(ping(&e2, "192.0.2.254", 3), 3, "macvlan e2 → gateway");
    // The upstream sees the endpoint's own MAC.
    let neigh = ip(&w.up, &["neigh", "show", "192.0.2.21"]);
    assert!(neigh.contains(&MV_MAC.to_string()), "{neigh}");
    assert_eq!(ping(&w.up, "192.0.2.21", 2), 2, "upstream → e2");

    // 3. Replace it with an ipvlan L3 network: e4 reaches the gateway through Routed.
    h.remove_tap(p2).unwrap().unwrap();
    h.with_engine(move |e| {
        e.remove_port(p2)?;
        e.remove_network(n2)
    })
    .unwrap()
    .unwrap();
    h.detach_parent(parent).unwrap();
    let p4 = h
        .with_engine(move |e| {
            let n4 = e.add_network(NetworkSpec::new("l3", Driver::Ipvlan, wire(None)))?;
            ipvlan_port(
                e,
                n4,
                "e4",
                IpvlanMode::L3,
                IpvlanFlag::Bridge,
                "198.51.100.10",
            )
        })
        .unwrap()
        .unwrap();
    h.attach_parent(parent, &w.hif).unwrap();
    endpoint(&h, p4, &e4, HOST_MAC, "198.51.100.10/24", true);
    ip(&e4, &["route", "add", "default", "dev", "eth0"]);
    assert_eq!(
        ping(&e4, "192.0.2.254", 3),
        3,
        "ipvlan L3 e4 → gateway (routed)"
    );
    // The host's own address is RTN_LOCAL: the engine hands it to the host stack, and the
    // request is injected into the parent's receive path (C37); the reply leaves on the wire
    // and never comes back, as with the kernel.
    assert_eq!(ping(&e4, "192.0.2.1", 1), 0);
    let stats = h.stats().unwrap();
    // (Under a generic XDP filter, ARP/NS the filter steered and the engine also gives to
    // the host are counted as unreachable instead of injected: not checked here.)
    assert!(
        stats.parent(parent).map_or(0, |c| c.host_injected) > 0,
        "{:?}",
        stats.parent(parent)
    );
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert!(
        !wrong.load(Ordering::SeqCst),
        "resolver got another ifindex"
    );
    // Routed answers are cached: three pings, one lookup (the MAC is good for 30 s).
    assert!(
        calls.load(Ordering::SeqCst) <= 2,
        "{}",
        calls.load(Ordering::SeqCst)
    );
    eprintln!("io drops: {:?}", stats.io_drops);

    // Last detaches (the L3 network, then the VLAN-20 one): the wire closes and RX VLAN
    // offload comes back.
    h.detach_parent(parent).unwrap();
    assert_eq!(h.wire_status(parent).unwrap().unwrap().refs, 1);
    h.detach_parent(parent).unwrap();
    assert!(h.wire_status(parent).unwrap().is_none());
    assert!(matches!(
        h.detach_parent(parent),
        Err(RunError::NotAttached(_))
    ));
    assert!(rx_vlan_offload(&w.host, &w.hif).ends_with(": on"));
    // The XDP link's last reference may sit for a moment in a process another test thread
    // is forking (its fd table copied between fork and exec): the detach follows when that
    // copy goes.
    let t = Instant::now();
    while ip(&w.host, &["link", "show", &w.hif]).contains("xdp") && t.elapsed().as_secs() < 5 {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !ip(&w.host, &["link", "show", &w.hif]).contains("xdp"),
        "XDP program left attached"
    );
    let _ = (n20, p3);
}

/// The host's tables for `routed_egress_fates_are_engine_drops_and_trace_agrees`:
/// 203.0.113.97 leaves to the upstream's MAC, .98 is being resolved, the rest has no route.
struct ScriptedHost {
    calls: Arc<AtomicU32>,
}

impl Resolver for ScriptedHost {
    fn resolve(&mut self, _ifindex: u32, dst: IpAddr) -> NextHop {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match dst {
            IpAddr::V4(a) if a == Ipv4Addr::new(203, 0, 113, 97) => NextHop::Mac(UP_MAC),
            IpAddr::V4(a) if a == Ipv4Addr::new(203, 0, 113, 98) => NextHop::Pending,
            _ => NextHop::Unreachable,
        }
    }
}

both!(routed_egress_fates_are_engine_drops_and_trace_agrees);
/// ipvlan L3 egress: what the host's tables answer is decided by the engine's route stage, so
/// the loop counts an unroutable or unresolved destination as an engine drop
/// (`route_unreachable`, `neighbour_pending`), and `DataplaneHandle::trace` gives the same
/// verdict through the same next-hop cache (an answer the trace fetched serves the datapath).
fn routed_egress_fates_are_engine_drops_and_trace_agrees(io: Io) {
    let mut w = wire_lab();
    let e1 = w.lab.ns("e1");
    let calls = Arc::new(AtomicU32::new(0));
    let dp = spawn(
        io,
        RunOptions {
            netns: Some(ns_path(&w.host)),
            wire_backend: WireBackend::AfPacket,
            ..RunOptions::default()
        },
        Box::new(ScriptedHost {
            calls: Arc::clone(&calls),
        }),
    );
    let h = dp.handle();
    let spec = w.parent(vec![v4("192.0.2.1")]);
    let (parent, p1) = h
        .with_engine(move |e| {
            let parent = e.add_parent(spec)?;
            let n = e.add_network(NetworkSpec::new(
                "l3",
                Driver::Ipvlan,
                Master::Parent {
                    parent,
                    vid: None,
                    wire: true,
                },
            ))?;
            let p1 = ipvlan_port(
                e,
                n,
                "e1",
                IpvlanMode::L3,
                IpvlanFlag::Bridge,
                "198.51.100.10",
            )?;
            Ok::<_, ConfigError>((parent, p1))
        })
        .unwrap()
        .unwrap();
    h.attach_parent(parent, &w.hif).unwrap();
    endpoint(&h, p1, &e1, HOST_MAC, "198.51.100.10/24", true);
    ip(&e1, &["route", "add", "default", "dev", "eth0"]);
    let echo = |dst: [u8; 4]| {
        build::icmp4_echo(
            HOST_MAC,
            HOST_MAC,
            Ipv4Addr::new(198, 51, 100, 10),
            Ipv4Addr::from(dst),
            1,
        )
    };

    // No route: the loop drops it as the engine decided, and the trace says the same.
    assert_eq!(ping(&e1, "203.0.113.99", 1), 0);
    let st = h.stats().unwrap();
    assert!(
        st.drop_count(DropReason::RouteUnreachable) >= 1,
        "{:?}",
        st.drops
    );
    let t = h.trace(echo([203, 0, 113, 99]), Ingress::Port(p1)).unwrap();
    assert_eq!(
        t.verdict,
        Verdict::Drop(DropReason::RouteUnreachable),
        "{t}"
    );
    let text = t.to_string();
    assert!(
        text.contains("ip_route_output_flow") && text.contains("no route"),
        "{text}"
    );

    // Being resolved: neighbour_pending, in the counters and in the trace.
    assert_eq!(ping(&e1, "203.0.113.98", 1), 0);
    let st = h.stats().unwrap();
    assert!(
        st.drop_count(DropReason::NeighbourPending) >= 1,
        "{:?}",
        st.drops
    );
    let t = h.trace(echo([203, 0, 113, 98]), Ingress::Port(p1)).unwrap();
    assert_eq!(
        t.verdict,
        Verdict::Drop(DropReason::NeighbourPending),
        "{t}"
    );

    // A resolved next hop: the trace asks the datapath's cache (one question to the host);
    // tracing again and then sending use the cached answer (no new question), and the frame
    // leaves on the wire.
    let before = calls.load(Ordering::SeqCst);
    let t = h.trace(echo([203, 0, 113, 97]), Ingress::Port(p1)).unwrap();
    assert_eq!(
        t.verdict.outputs()[0].target,
        Target::Routed {
            parent,
            dst: v4("203.0.113.97"),
            next_hop: UP_MAC
        },
        "{t}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
    h.trace(echo([203, 0, 113, 97]), Ingress::Port(p1)).unwrap();
    let sent = h.stats().unwrap().parent(parent).unwrap().tx_frames;
    ping(&e1, "203.0.113.97", 1);
    let st = h.stats().unwrap();
    assert!(st.parent(parent).unwrap().tx_frames > sent, "{st:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 1,
        "one question in all"
    );
    // Tracing moves no counter.
    let unroutable = st.drop_count(DropReason::RouteUnreachable);
    let t = h.trace(echo([203, 0, 113, 99]), Ingress::Port(p1)).unwrap();
    assert_eq!(
        t.verdict,
        Verdict::Drop(DropReason::RouteUnreachable),
        "{t}"
    );
    assert_eq!(
        h.stats().unwrap().drop_count(DropReason::RouteUnreachable),
        unroutable
    );
    // The trace is refused from the dataplane thread itself, like every handle call.
    let h2 = h.clone();
    assert!(matches!(
        h.read_engine(move |_| h2.trace(Vec::new(), Ingress::Port(p1))),
        Ok(Err(RunError::Reentrant))
    ));
}

both!(wire_af_xdp_native);
fn wire_af_xdp_native(io: Io) {
    wire_scenario(io, WireBackend::AfXdp, XdpAttach::Native, "native", true);
}

both!(wire_af_xdp_generic);
fn wire_af_xdp_generic(io: Io) {
    wire_scenario(io, WireBackend::AfXdp, XdpAttach::Generic, "generic", false);
}

both!(wire_af_packet_fallback);
fn wire_af_packet_fallback(io: Io) {
    wire_scenario(
        io,
        WireBackend::AfPacket,
        XdpAttach::Auto,
        "af_packet",
        true,
    );
}

/// The interface's promiscuity count (packet sockets raise it without showing PROMISC).
fn promiscuity(ns: &str, ifname: &str) -> u64 {
    json(&ip(ns, &["-d", "-j", "link", "show", ifname]))[0]["promiscuity"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

both!(wire_macvlan_passthru_takes_every_unicast_frame);
fn wire_macvlan_passthru_takes_every_unicast_frame(io: Io) {
    let mut w = wire_lab();
    let e = w.lab.ns("e");
    let dp = spawn(io, w.options(WireBackend::AfXdp, 256), Box::new(NoRoutes));
    let h = dp.handle();
    let spec = w.parent(vec![v4("192.0.2.1")]);
    let (parent, port) = h
        .with_engine(move |e| {
            let parent = e.add_parent(spec)?;
            let master = Master::Parent {
                parent,
                vid: None,
                wire: true,
            };
            let n = e.add_network(NetworkSpec::new("pt", Driver::Macvlan, master))?;
            // No MAC given: the passthru port takes the lower's (C43).
            let p = e.add_macvlan_port(
                LinkRef::Network(n),
                "pt",
                MacvlanAttrs::new(MacvlanMode::Passthru, None),
            )?;
            e.add_port_addr(p, v4("192.0.2.30"))?;
            e.set_port_up(p, true)?;
            Ok::<_, ConfigError>((parent, p))
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        ping(&w.up, "192.0.2.1", 2),
        2,
        "host reachable before attach"
    );
    let st = h.attach_parent(parent, &w.hif).unwrap();
    assert_eq!(st.keys, 1, "one all-unicast key: {st:?}");
    assert_eq!(promiscuity(&w.host, &w.hif), 1);
    endpoint(&h, port, &e, HOST_MAC, "192.0.2.30/24", false);
    // The ARP request is broadcast (copied to the dataplane); the echo requests are unicast
    // to the shared MAC and reach the endpoint only through the all-unicast key.
    assert_eq!(
        ping(&w.up, "192.0.2.30", 3),
        3,
        "upstream → passthru endpoint"
    );
    // The parent's unicast belongs to the passthru device now, the host's included.
    assert_eq!(
        ping(&w.up, "192.0.2.1", 2),
        0,
        "host kept unicast under passthru"
    );
    let st = h.stats().unwrap();
    let f = st.parent(parent).unwrap().filter.unwrap();
    assert!(f.hit_all_unicast >= 3, "{f:?}");
    // Removing the port gives the host its traffic back.
    h.remove_tap(port).unwrap().unwrap();
    h.with_engine(move |e| e.remove_port(port))
        .unwrap()
        .unwrap();
    assert_eq!(h.wire_status(parent).unwrap().unwrap().keys, 0);
    assert_eq!(promiscuity(&w.host, &w.hif), 0);
    assert_eq!(ping(&w.up, "192.0.2.1", 2), 2, "host traffic back");
}

both!(wire_auto_falls_back_to_af_packet_when_xdp_is_taken);
fn wire_auto_falls_back_to_af_packet_when_xdp_is_taken(io: Io) {
    let w = wire_lab();
    let dp = spawn(io, w.options(WireBackend::Auto, 64), Box::new(NoRoutes));
    let h = dp.handle();
    let parent = w.add_parent(&h, vec![]);
    // Someone else (here: a second dataplane) holds the XDP hook of the parent.
    let mut opts = w.options(WireBackend::AfXdp, 64);
    opts.xdp.attach = XdpAttach::Generic;
    let other = spawn(io, opts, Box::new(NoRoutes));
    let oh = other.handle();
    let op = w.add_parent(&oh, vec![]);
    oh.attach_parent(op, &w.hif)
        .expect("first dataplane takes the XDP hook");
    let st = h.attach_parent(parent, &w.hif).unwrap();
    eprintln!("{st:?}");
    assert!(st.mode.starts_with("af_packet"), "{st:?}");
    assert!(st
        .fallback_reason
        .as_deref()
        .unwrap_or("")
        .contains("AF_XDP"));
    assert!(!st.copy_socket);
    // Forcing AF_XDP fails with both reasons spelled out.
    drop(dp);
    let forced = spawn(io, w.options(WireBackend::AfXdp, 64), Box::new(NoRoutes));
    let fh = forced.handle();
    let fp = w.add_parent(&fh, vec![]);
    let e = fh.attach_parent(fp, &w.hif).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, RunError::Wire { .. }), "{e}");
    assert!(e.to_string().contains(&w.hif));
    // A closure that calls back into the handle from the dataplane thread is refused.
    let fh2 = fh.clone();
    let r = fh.read_engine(move |_| fh2.stats().map(|_| ())).unwrap();
    assert!(matches!(r, Err(RunError::Reentrant)));
    // A panicking command is reported, and the loop keeps going.
    let r = fh.read_engine(|_| -> u32 { panic!("uvt test panic") });
    assert!(
        matches!(&r, Err(RunError::Panicked(m)) if m.contains("uvt test panic")),
        "{r:?}"
    );
    assert!(fh.stats().is_ok());
    drop(forced);
    drop(other);
}

#[test]
fn spawn_refuses_a_missing_namespace_and_bad_batch() {
    let e = Dataplane::spawn(
        RunOptions {
            netns: Some(PathBuf::from("/run/netns/uvt-does-not-exist")),
            ..RunOptions::default()
        },
        Box::new(NoRoutes),
    )
    .unwrap_err();
    assert!(e.to_string().contains("uvt-does-not-exist"), "{e}");
    let e = Dataplane::spawn(
        RunOptions {
            batch: 0,
            ..RunOptions::default()
        },
        Box::new(NoRoutes),
    )
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

// ---- throughput sanity check (printed, not asserted beyond "it moved") ----------------------

both!(throughput_tap_to_tap_vs_kernel_macvlan);
fn throughput_tap_to_tap_vs_kernel_macvlan(io: Io) {
    let secs: u32 = std::env::var("UVLAN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let mut lab = Lab::new("uvt");
    let dp = spawn(io, RunOptions::default(), Box::new(NoRoutes));
    let h = dp.handle();
    let (a, b, _pa, _pb) = isolated_ipvlan_pair(&mut lab, &h, IpvlanMode::L2, IpvlanFlag::Bridge);
    assert_eq!(ping(&a, "192.0.2.2", 1), 1);
    let tcp = iperf_tcp(&b, &a, "192.0.2.2", secs, false);
    let (udp_sent, udp) = iperf_udp64(&b, &a, "192.0.2.2", secs);
    drop(dp);

    // The kernel's macvlan bridge on a veth parent, in the same run.
    let k = lab.ns("k");
    let k1 = lab.ns("k1");
    let k2 = lab.ns("k2");
    let (kp, kq) = (lab.ifname("kp"), lab.ifname("kq"));
    ip(
        &k,
        &["link", "add", &kp, "type", "veth", "peer", "name", &kq],
    );
    ip(&k, &["link", "set", &kp, "up"]);
    ip(&k, &["link", "set", &kq, "up"]);
    for (i, ns) in [(1, &k1), (2, &k2)] {
        let mv = lab.ifname(&format!("mv{i}"));
        ip(
            &k,
            &[
                "link", "add", &mv, "link", &kp, "type", "macvlan", "mode", "bridge",
            ],
        );
        ip(&k, &["link", "set", &mv, "netns", ns]);
        let a = format!("192.0.2.{i}/24");
        ip(ns, &["addr", "add", &a, "dev", &mv]);
        ip(ns, &["link", "set", &mv, "up"]);
    }
    assert_eq!(ping(&k1, "192.0.2.2", 1), 1);
    let ktcp = iperf_tcp(&k2, &k1, "192.0.2.2", secs, false);
    let (kudp_sent, kudp) = iperf_udp64(&k2, &k1, "192.0.2.2", secs);

    eprintln!(
        "throughput ({} build, {secs} s per run, one sample each):",
        build()
    );
    eprintln!(
        "  uvlan TAP↔loop↔TAP   TCP {:7.2} Gbit/s   UDP-64 delivered {:8.0} pps (sent {:.0})",
        tcp / 1e9,
        udp,
        udp_sent
    );
    eprintln!(
        "  kernel macvlan bridge TCP {:7.2} Gbit/s   UDP-64 delivered {:8.0} pps (sent {:.0})",
        ktcp / 1e9,
        kudp,
        kudp_sent
    );
    eprintln!(
        "  ratio uvlan/kernel    TCP {:.3}   UDP-64 {:.3}",
        tcp / ktcp.max(1.0),
        udp / kudp.max(1.0)
    );
    assert!(tcp > 1e6 && udp > 100.0, "no traffic through the loop");
    assert!(ktcp > 1e6, "no traffic through the kernel macvlan");
}

/// The nice values of this process's `uvlan-dataplane` threads (field 19 of their stat).
fn dataplane_nices() -> Vec<i64> {
    let mut v = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != "uvlan-dataplane" {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // After "(comm)": state is field 3, nice field 19.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        if let Some(n) = rest.split_whitespace().nth(16) {
            v.push(n.parse().unwrap());
        }
    }
    v
}

both!(the_dataplane_thread_runs_at_the_requested_priority);
fn the_dataplane_thread_runs_at_the_requested_priority(io: Io) {
    // Tests run in parallel: count this test's thread among those alive.
    let dp = spawn(
        io,
        RunOptions {
            nice: Some(-7),
            ..RunOptions::default()
        },
        Box::new(NoRoutes),
    );
    assert!(dataplane_nices().contains(&-7), "{:?}", dataplane_nices());
    drop(dp);
    let dp = spawn(
        io,
        RunOptions {
            nice: Some(3),
            ..RunOptions::default()
        },
        Box::new(NoRoutes),
    );
    assert!(dataplane_nices().contains(&3), "{:?}", dataplane_nices());
    drop(dp);
    assert_eq!(RunOptions::default().nice, Some(-10));
}
