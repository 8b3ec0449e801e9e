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
use std::sync::atomic::{AtomicU32, Ordering};

use uvlan_dataplane::fwd::{
    ConfigError, Driver, Engine, IpvlanAttrs, IpvlanFlag, IpvlanMode, LinkRef, MacvlanAttrs,
    MacvlanMode, Master, NetworkSpec, PortId,
};
use uvlan_dataplane::port::tap::{Tap, TapOptions};
use uvlan_dataplane::run::{
    Dataplane, DataplaneHandle, FastPathReport, NextHop, Resolver, RunOptions,
};
use uvlan_dataplane::wire::MacAddr;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &[&str]) -> Result<String, String> {
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

fn must(cmd: &[&str]) -> String {
    run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(ns: &str, args: &[&str]) -> String {
    let mut c = vec!["ip", "-n", ns];
    c.extend_from_slice(args);
    must(&c)
}

fn exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut c = vec!["ip", "netns", "exec", ns];
    c.extend_from_slice(args);
    run(&c)
}

struct Lab {
    n: u32,
    names: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            n: SEQ.fetch_add(1, Ordering::SeqCst),
            names: Vec::new(),
        }
    }

    fn ns(&mut self, name: &str) -> String {
        let full = format!("uvf-{}-{}{}", std::process::id(), self.n, name);
        let _ = run(&["ip", "netns", "del", &full]);
        must(&["ip", "netns", "add", &full]);
        self.names.push(full.clone());
        ip(&full, &["link", "set", "lo", "up"]);
        full
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

struct NoRoutes;

impl Resolver for NoRoutes {
    fn resolve(&mut self, _ifindex: u32, _dst: std::net::IpAddr) -> NextHop {
        NextHop::Unreachable
    }
}

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
                        IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Bridge),
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
    let mut lab = Lab::new();
    let dp_ns = lab.ns("dp");
    let a = lab.ns("a");
    let b = lab.ns("b");
    let dp = Dataplane::spawn(
        RunOptions {
            netns: Some(PathBuf::from(format!("/run/netns/{dp_ns}"))),
            ..RunOptions::default()
        },
        Box::new(NoRoutes),
    )
    .expect("Dataplane::spawn");
    let h = dp.handle();
    let (pa, pb, ma, mb) = pair(&h, driver);
    endpoint(&h, &dp_ns, pa, &a, "1", ma);
    endpoint(&h, &dp_ns, pb, &b, "2", mb);

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
