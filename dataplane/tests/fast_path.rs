//! Root tests of the fast path (`uvlan_dataplane::port::fast_path`) with real veths.
//!
//! Each test makes its own `uvf-<pid>-<n>…` namespaces: `dp`, where the dataplane threads
//! run (`RunOptions::netns`) and where each endpoint's TAP (the slow path) and the
//! dataplane's end of its veth live, and one namespace per endpoint holding `eth0`, the
//! veth's other end. A `Lab` guard deletes the namespaces (and with them every veth and
//! TAP) also when a test fails; the dataplane is declared after the lab, so it stops first
//! and its `bpf_link`s close. Addresses: 192.0.2.0/24 only.

use std::path::PathBuf;
use std::process::Command;

use uvlan_dataplane::fwd::{
    ConfigError, Driver, Engine, IpvlanAttrs, IpvlanFlag, IpvlanMode, LinkRef, MacvlanAttrs,
    MacvlanMode, Master, NetworkSpec, PortId,
};
use uvlan_dataplane::port::tap::{Tap, TapOptions};
use uvlan_dataplane::run::{Dataplane, DataplaneHandle, FastPathReport, RunOptions};
use uvlan_dataplane::wire::MacAddr;

mod common;
use common::{exec, ip, must, Lab, NoRoutes};

fn ifindex(ns: &str, name: &str) -> u32 {
    let out = ip(ns, &["-j", "link", "show", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    v[0]["ifindex"].as_u64().expect("ifindex") as u32
}

fn rx_packets(ns: &str, name: &str) -> u64 {
    let out = ip(ns, &["-j", "-s", "link", "show", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .expect("rx packets")
}

/// The dataplane's side of an endpoint in `dp`: a quiet interface (no IPv6, no ARP, up).
fn quiet(dp: &str, name: &str) {
    must(&[
        "ip",
        "netns",
        "exec",
        dp,
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{name}.disable_ipv6=1"),
    ]);
    ip(dp, &["link", "set", name, "arp", "off", "up"]);
}

/// A fast-path endpoint: TAP `t<tag>` and veth end `f<tag>` in `dp`, `eth0` in `ns`.
fn endpoint(h: &DataplaneHandle, dp: &str, port: PortId, ns: &str, tag: &str, mac: MacAddr) {
    let tap_name = format!("t{tag}");
    let veth = format!("f{tag}");
    let tap = Tap::create_in_netns(
        &PathBuf::from(format!("/run/netns/{dp}")),
        &TapOptions {
            name: Some(tap_name.clone()),
            ..TapOptions::default()
        },
    )
    .expect("TAP in the dataplane namespace");
    quiet(dp, &tap_name);
    ip(
        dp,
        &[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    );
    quiet(dp, &veth);
    ip(ns, &["link", "set", "eth0", "address", &mac.to_string()]);
    ip(
        ns,
        &["addr", "add", &format!("192.0.2.{tag}/24"), "dev", "eth0"],
    );
    ip(ns, &["link", "set", "eth0", "up"]);
    h.add_tap(port, tap).expect("add_tap");
    h.add_fast_port(port, ifindex(dp, &veth))
        .expect("add_fast_port");
}

/// A dataplane (no routes) running in namespace `dp_ns`.
fn spawn_in(dp_ns: &str) -> Dataplane {
    Dataplane::spawn(
        RunOptions {
            netns: Some(PathBuf::from(format!("/run/netns/{dp_ns}"))),
            ..RunOptions::default()
        },
        Box::new(NoRoutes),
    )
    .expect("Dataplane::spawn")
}

fn ping(ns: &str, dst: &str, count: u32) -> u32 {
    let c = count.to_string();
    let out = exec(ns, &["ping", "-c", &c, "-i", "0.2", "-W", "1", dst]).unwrap_or_else(|e| e);
    out.split(',')
        .find(|s| s.contains(" received"))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn report(h: &DataplaneHandle) -> FastPathReport {
    h.stats().unwrap().fast_path.expect("fast path in use")
}

fn sent_by(r: &FastPathReport, p: PortId) -> u64 {
    r.ports
        .iter()
        .find(|(q, _, _)| *q == p)
        .map_or(0, |(_, tx, _)| tx.frames)
}

const ISO_MAC: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0, 2, 0xfe]);

fn pair(h: &DataplaneHandle, driver: Driver) -> (PortId, PortId, MacAddr, MacAddr) {
    pair_mode(h, driver, IpvlanMode::L2)
}

fn pair_mode(
    h: &DataplaneHandle,
    driver: Driver,
    mode: IpvlanMode,
) -> (PortId, PortId, MacAddr, MacAddr) {
    let (ma, mb) = match driver {
        Driver::Macvlan => (
            MacAddr([0x02, 0x42, 0xc0, 0, 2, 1]),
            MacAddr([0x02, 0x42, 0xc0, 0, 2, 2]),
        ),
        Driver::Ipvlan => (ISO_MAC, ISO_MAC),
    };
    let (pa, pb) = h
        .with_engine(move |e: &mut Engine| {
            let n = e.add_network(NetworkSpec::new(
                "fast",
                driver,
                Master::Isolated {
                    mac: ISO_MAC,
                    mtu: 1500,
                },
            ))?;
            let mut ports = Vec::new();
            for (name, mac, addr) in [("a", ma, "192.0.2.1"), ("b", mb, "192.0.2.2")] {
                let p = match driver {
                    Driver::Macvlan => e.add_macvlan_port(
                        LinkRef::Network(n),
                        name,
                        MacvlanAttrs::new(MacvlanMode::Bridge, Some(mac)),
                    )?,
                    Driver::Ipvlan => e.add_ipvlan_port(
                        LinkRef::Network(n),
                        name,
                        IpvlanAttrs::new(mode, IpvlanFlag::Bridge),
                    )?,
                };
                e.add_port_addr(p, addr.parse().unwrap())?;
                e.set_port_up(p, true)?;
                ports.push(p);
            }
            Ok::<_, ConfigError>((ports[0], ports[1]))
        })
        .unwrap()
        .unwrap();
    (pa, pb, ma, mb)
}

/// Two veth endpoints reach each other through the cache; disconnecting one invalidates
/// before the command returns: not one frame reaches it afterwards.
fn reach_then_disconnect(driver: Driver) {
    reach_then_disconnect_mode(driver, IpvlanMode::L2)
}

fn reach_then_disconnect_mode(driver: Driver, mode: IpvlanMode) {
    let mut lab = Lab::new("uvf");
    let dp_ns = lab.ns("dp");
    let a = lab.ns("a");
    let b = lab.ns("b");
    let dp = spawn_in(&dp_ns);
    let h = dp.handle();
    let (pa, pb, ma, mb) = pair_mode(&h, driver, mode);
    endpoint(&h, &dp_ns, pa, &a, "1", ma);
    endpoint(&h, &dp_ns, pb, &b, "2", mb);
    if mode.is_l3() {
        // ipvlan l3 ports are NOARP (the kernel sets IFF_NOARP).
        ip(&a, &["link", "set", "eth0", "arp", "off"]);
        ip(&b, &["link", "set", "eth0", "arp", "off"]);
    }

    assert_eq!(ping(&a, "192.0.2.2", 10), 10, "a → b");
    assert_eq!(ping(&b, "192.0.2.1", 5), 5, "b → a");
    let r = report(&h);
    // The first frame of each key took the slow path; the rest went through the cache.
    assert!(r.programs.misses > 0, "{r:?}");
    assert!(r.programs.slow_out > 0, "{r:?}");
    assert!(
        sent_by(&r, pa) >= 8,
        "a's echo requests through the cache: {r:?}"
    );
    assert!(
        sent_by(&r, pb) >= 8,
        "b's replies and requests through the cache: {r:?}"
    );
    assert!(r.entries >= 2, "{r:?}");

    // Disconnect b: its TAP and veth leave the dataplane, the port leaves the engine.
    h.remove_tap(pb).unwrap().expect("b had a TAP");
    h.with_engine(move |e: &mut Engine| e.remove_port(pb))
        .unwrap()
        .unwrap();
    let after = report(&h);
    assert_eq!(after.entries, 0, "every entry flushed: {after:?}");
    let rx_before = rx_packets(&b, "eth0");
    // a still has b's MAC in its neighbour table: its frames hit the veth program at once.
    assert_eq!(ping(&a, "192.0.2.2", 5), 0);
    let r2 = report(&h);
    assert_eq!(
        r2.programs.hits, after.programs.hits,
        "no frame went through the cache after the disconnect"
    );
    assert_eq!(
        rx_packets(&b, "eth0"),
        rx_before,
        "nothing reached the old endpoint"
    );
}

#[test]
fn macvlan_bridge_endpoints_reach_each_other_through_the_cache_and_disconnect_invalidates() {
    reach_then_disconnect(Driver::Macvlan);
}

#[test]
fn ipvlan_l2_endpoints_reach_each_other_through_the_cache_and_disconnect_invalidates() {
    reach_then_disconnect(Driver::Ipvlan);
}

#[test]
fn ipvlan_l3_endpoints_reach_each_other_through_the_cache_and_disconnect_invalidates() {
    reach_then_disconnect_mode(Driver::Ipvlan, IpvlanMode::L3);
}

/// Every engine change (here a mode change, an address added, a new port) empties the cache
/// before `with_engine` returns; a mode that needs the wire (private) then keeps the frames
/// off the cache for good.
#[test]
fn engine_changes_empty_the_cache_before_they_return() {
    let mut lab = Lab::new("uvf");
    let dp_ns = lab.ns("dp");
    let a = lab.ns("a");
    let b = lab.ns("b");
    let dp = spawn_in(&dp_ns);
    let h = dp.handle();
    let (pa, pb, ma, mb) = pair(&h, Driver::Macvlan);
    endpoint(&h, &dp_ns, pa, &a, "1", ma);
    endpoint(&h, &dp_ns, pb, &b, "2", mb);
    let learn = |h: &DataplaneHandle| {
        assert_eq!(ping(&a, "192.0.2.2", 3), 3);
        assert!(report(h).entries >= 2, "learned again");
    };
    learn(&h);
    h.with_engine(move |e: &mut Engine| e.add_port_addr(pa, "192.0.2.11".parse().unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(report(&h).entries, 0, "an address change empties the cache");
    learn(&h);
    h.with_engine(move |e: &mut Engine| {
        let net = e.port_info(pa).unwrap().network;
        e.add_macvlan_port(
            LinkRef::Network(net),
            "c",
            MacvlanAttrs::new(
                MacvlanMode::Bridge,
                Some(MacAddr([0x02, 0x42, 0xc0, 0, 2, 3])),
            ),
        )
    })
    .unwrap()
    .unwrap();
    assert_eq!(report(&h).entries, 0, "a new port empties the cache");
    learn(&h);
    h.with_engine(move |e: &mut Engine| {
        e.macvlan_changelink(pa, MacvlanAttrs::new(MacvlanMode::Private, None))
    })
    .unwrap()
    .unwrap();
    let r = report(&h);
    assert_eq!(r.entries, 0, "a mode change empties the cache");
    // Private: a's frames to its sibling need the wire (there is none): nothing arrives, and
    // nothing is learned from a.
    assert_eq!(ping(&a, "192.0.2.2", 3), 0);
    let r2 = report(&h);
    assert_eq!(
        sent_by(&r2, pa),
        sent_by(&r, pa),
        "no frame of a via the cache"
    );
}

// ---- benchmark (bench/fast_path.sh; printed, never asserted beyond "it moved") ---------------

/// A one-shot iperf3 server in `ns`, killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf_server(ns: &str) -> Server {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 -s");
    let s = Server(child);
    for _ in 0..100 {
        if exec(ns, &["ss", "-Hltn", "sport = :5201"]).is_ok_and(|o| !o.trim().is_empty()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    s
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

/// (TCP Gbit/s, UDP-64 delivered kpps, ping p50 µs, ping p99 µs) from `client` to `dst`.
fn measure(server: &str, client: &str, dst: &str, secs: u32) -> [f64; 4] {
    let t = secs.to_string();
    let mut srv = iperf_server(server);
    let out = exec(client, &["iperf3", "-c", dst, "-t", &t, "-J"]).expect("iperf3 TCP");
    let _ = srv.0.wait();
    let tcp = json(&out)["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    let mut srv = iperf_server(server);
    let out = exec(
        client,
        &[
            "iperf3", "-c", dst, "-t", &t, "-u", "-l", "64", "-b", "0", "-J",
        ],
    )
    .expect("iperf3 UDP");
    let _ = srv.0.wait();
    let v = json(&out);
    let sum = &v["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let s = sum["seconds"].as_f64().unwrap_or(1.0).max(0.001);
    let udp = (packets - lost).max(0.0) / s / 1e3;
    let out = exec(client, &["ping", "-c", "300", "-i", "0.005", dst]).unwrap_or_else(|e| e);
    let mut rtts: Vec<f64> = out
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("time="))
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    [tcp, udp, pct(0.5), pct(0.99)]
}

#[test]
#[ignore = "benchmark: run by bench/fast_path.sh"]
fn benchmark_slow_path_fast_path_kernel() {
    let secs: u32 = std::env::var("UVLAN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut lab = Lab::new("uvf");
    let dp_ns = lab.ns("dp");

    // uvlan slow path: today's TAP endpoints (eth0 is the TAP, in the endpoint namespace).
    let (sa, sb) = (lab.ns("sa"), lab.ns("sb"));
    let dp = spawn_in(&dp_ns);
    let h = dp.handle();
    let (pa, pb, ma, mb) = pair(&h, Driver::Macvlan);
    for (p, ns, mac, addr) in [(pa, &sa, ma, "192.0.2.1/24"), (pb, &sb, mb, "192.0.2.2/24")] {
        let tap = Tap::create_in_netns(
            &PathBuf::from(format!("/run/netns/{ns}")),
            &TapOptions {
                name: Some("eth0".into()),
                ..TapOptions::default()
            },
        )
        .expect("TAP");
        ip(ns, &["link", "set", "eth0", "address", &mac.to_string()]);
        ip(ns, &["addr", "add", addr, "dev", "eth0"]);
        ip(ns, &["link", "set", "eth0", "up"]);
        h.add_tap(p, tap).expect("add_tap");
    }
    assert_eq!(ping(&sa, "192.0.2.2", 1), 1);
    let slow = measure(&sb, &sa, "192.0.2.2", secs);
    drop(dp);

    // uvlan fast path: veth endpoints.
    let (fa, fb) = (lab.ns("fa"), lab.ns("fb"));
    let dp = spawn_in(&dp_ns);
    let h = dp.handle();
    let (pa, pb, ma, mb) = pair(&h, Driver::Macvlan);
    endpoint(&h, &dp_ns, pa, &fa, "1", ma);
    endpoint(&h, &dp_ns, pb, &fb, "2", mb);
    assert_eq!(ping(&fa, "192.0.2.2", 1), 1);
    let fast = measure(&fb, &fa, "192.0.2.2", secs);
    let r = report(&h);
    drop(dp);

    // The kernel's macvlan bridge on a veth parent.
    let (k, k1, k2) = (lab.ns("k"), lab.ns("k1"), lab.ns("k2"));
    ip(
        &k,
        &["link", "add", "kp", "type", "veth", "peer", "name", "kq"],
    );
    ip(&k, &["link", "set", "kp", "up"]);
    ip(&k, &["link", "set", "kq", "up"]);
    for (i, ns) in [(1, &k1), (2, &k2)] {
        let mv = format!("mv{i}");
        ip(
            &k,
            &[
                "link", "add", &mv, "link", "kp", "type", "macvlan", "mode", "bridge",
            ],
        );
        ip(&k, &["link", "set", &mv, "netns", ns]);
        ip(ns, &["addr", "add", &format!("192.0.2.{i}/24"), "dev", &mv]);
        ip(ns, &["link", "set", &mv, "up"]);
    }
    assert_eq!(ping(&k1, "192.0.2.2", 1), 1);
    let kernel = measure(&k2, &k1, "192.0.2.2", secs);

    let line = |name: &str, m: [f64; 4]| {
        eprintln!(
            "  {name:<22} TCP {:6.2} Gbit/s  UDP-64 {:6.0} kpps  ping p50 {:5.0} µs  p99 {:5.0} µs",
            m[0], m[1], m[2], m[3]
        );
    };
    eprintln!(
        "fast path benchmark ({} build, {secs} s per measurement, macvlan bridge, one sample each):",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    line("uvlan slow path (TAP)", slow);
    line("uvlan fast path (veth)", fast);
    line("kernel macvlan bridge", kernel);
    let ratio = |m: [f64; 4]| {
        format!(
            "TCP {:.2}  UDP-64 {:.2}  ping p50 {:.2}  p99 {:.2}",
            m[0] / kernel[0],
            m[1] / kernel[1],
            m[2] / kernel[2],
            m[3] / kernel[3]
        )
    };
    eprintln!("  ratio slow/kernel      {}", ratio(slow));
    eprintln!("  ratio fast/kernel      {}", ratio(fast));
    eprintln!(
        "  fast path: {} frames through the cache, {} to the slow path, {} entries",
        r.programs.hits, r.programs.misses, r.entries
    );
    assert!(
        fast[0] > 0.0 && slow[0] > 0.0 && kernel[0] > 0.0,
        "it moved"
    );
}
