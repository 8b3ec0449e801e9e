//! Two "docker hosts" on one switch: two namespaces, each running its own uvlan daemon with
//! its own parent veth (`up0`) plugged into one Linux bridge.
//!
//! ```text
//!  A host (daemon A) up0 192.0.2.1 ── p-a ┐
//!                                         br0 (sw)
//!  B host (daemon B) up0 192.0.2.2 ── p-b ┘
//! ```
//!
//! - L2 across hosts: endpoints on the same VLAN talk (macvlan on one side, ipvlan L2 on
//!   the other), endpoints on different VLANs do not, even with addresses in each other's
//!   subnet; the frames carry their VLAN's tag on the wire.
//! - L3 across hosts: ipvlan L3 subnets on the two hosts reach each other once each host
//!   routes the other's container subnet via the other's parent address, as in the
//!   cookbook's two-host example (seeds/docker-networking-cookbook-ch9.md).
//!
//! Runs with both wire backends (`af_xdp::*`, `af_packet::*`).

use uvlan_system_tests::capture::{dst_mac, src_mac, vlan};
use uvlan_system_tests::net::{ping_all, sa, tcp_echo, PARENT};
use uvlan_system_tests::{Backend, Capture, World};

const A_MAC: &str = "02:00:00:00:0a:01";
const B_MAC: &str = "02:00:00:00:0b:01";
const A_IP: &str = "192.0.2.1";
const B_IP: &str = "192.0.2.2";

/// Two hosts on one switch; the switch belongs to `a`.
fn two_hosts(b: Backend) -> (World, World, uvlan_system_tests::Switch) {
    let mut a = World::with_backend(b);
    let bw = World::with_backend(b);
    let sw = a.switch();
    sw.plug(&a.ns("host"), PARENT, A_MAC, "p-a");
    sw.plug(&bw.ns("host"), PARENT, B_MAC, "p-b");
    a.ip("host", &format!("addr add {A_IP}/24 dev {PARENT}"));
    bw.ip("host", &format!("addr add {B_IP}/24 dev {PARENT}"));
    (a, bw, sw)
}

fn lines_from<'a>(lines: &'a [String], ip: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| l.contains(&format!(" {ip} > ")))
        .collect()
}

/// Same VLAN talks across hosts, different VLANs do not; tags on the wire.
fn vlans_across_two_hosts(bk: Backend) {
    let (mut a, mut b, sw) = two_hosts(bk);
    a.create(&format!(
        "-d macvlan --subnet 198.51.100.0/24 -o parent={PARENT}.20 v20"
    ));
    a.create(&format!(
        "-d ipvlan --subnet 203.0.113.0/24 -o parent={PARENT}.30 v30"
    ));
    b.create(&format!(
        "-d ipvlan --subnet 198.51.100.0/24 -o parent={PARENT}.20 v20"
    ));
    b.create(&format!(
        "-d macvlan --subnet 203.0.113.0/24 -o parent={PARENT}.30 v30"
    ));
    let a20 = a.connect(
        "v20",
        "a20",
        &[
            "--ip",
            "198.51.100.10",
            "--mac-address",
            "02:00:00:00:0a:20",
        ],
    );
    let a30 = a.connect("v30", "a30", &["--ip", "203.0.113.10"]);
    let b20 = b.connect("v20", "b20", &["--ip", "198.51.100.20"]);
    let b30 = b.connect(
        "v30",
        "b30",
        &["--ip", "203.0.113.20", "--mac-address", "02:00:00:00:0b:30"],
    );
    let cap = Capture::start(&sw.ns, "p-a", &["-Q", "in"], "");
    let r = ping_all(
        &[
            (a20.clone(), "198.51.100.20".into()),
            (b20.clone(), "198.51.100.10".into()),
            (a30.clone(), "203.0.113.20".into()),
            (b30.clone(), "203.0.113.10".into()),
            (a.ns("host"), B_IP.into()),
        ],
        6,
    );
    assert_eq!(
        r, [true; 5],
        "a20 ↔ b20 (VLAN 20), a30 ↔ b30 (VLAN 30), host A → host B"
    );
    tcp_echo(&b20, sa("198.51.100.20", 7000), &a20, 2 << 20).expect("TCP a20 ↔ b20");
    let lines = cap.stop();
    for (ip, mac, vid) in [
        ("198.51.100.10", "02:00:00:00:0a:20", 20),
        ("203.0.113.10", A_MAC, 30),
    ] {
        let from = lines_from(&lines, ip);
        assert!(!from.is_empty(), "no frames from {ip}: {lines:#?}");
        for l in from {
            assert_eq!((src_mac(l), vlan(l)), (Some(mac), Some(vid)), "{l}");
        }
    }
    // Addresses in the other VLAN's subnet do not bridge the VLANs.
    a.ip("a20", "addr add 203.0.113.99/24 dev eth0");
    b.ip("b30", "addr add 198.51.100.99/24 dev eth0");
    let r = ping_all(
        &[
            (a20.clone(), "203.0.113.20".into()),
            (a20.clone(), "203.0.113.10".into()),
            (b30.clone(), "198.51.100.10".into()),
            (b30.clone(), "198.51.100.20".into()),
        ],
        2,
    );
    assert_eq!(r, [false; 4], "an endpoint reached another VLAN");
    for (w, net, ep) in [
        (&a, "v20", &a20),
        (&a, "v30", &a30),
        (&b, "v20", &b20),
        (&b, "v30", &b30),
    ] {
        w.uvlan_ok(&["network", "disconnect", net, ep]);
        w.uvlan_ok(&["network", "rm", net]);
    }
}

/// ipvlan L3 on both hosts: unreachable until each host routes the other's container
/// subnet via the other's parent address; then both ways, with large TCP; routed frames
/// leave with the sending host's parent MAC towards the other's, TTL unchanged.
fn l3_across_two_hosts(bk: Backend) {
    let (mut a, mut b, sw) = two_hosts(bk);
    a.create(&format!(
        "-d ipvlan -o ipvlan_mode=l3 --subnet 198.51.100.0/25 -o parent={PARENT} l3"
    ));
    b.create(&format!(
        "-d ipvlan -o ipvlan_mode=l3 --subnet 198.51.100.128/25 -o parent={PARENT} l3"
    ));
    let a3 = a.connect("l3", "a3", &["--ip", "198.51.100.10"]);
    let b3 = b.connect("l3", "b3", &["--ip", "198.51.100.140"]);
    let r = ping_all(
        &[
            (a3.clone(), "198.51.100.140".into()),
            (b3.clone(), "198.51.100.10".into()),
        ],
        2,
    );
    assert_eq!(
        r,
        [false, false],
        "L3 subnets reached each other without routes"
    );
    a.ip("host", &format!("route add 198.51.100.128/25 via {B_IP}"));
    b.ip("host", &format!("route add 198.51.100.0/25 via {A_IP}"));
    let cap = Capture::start(&sw.ns, "p-a", &["-Q", "in", "-v"], "icmp");
    let r = ping_all(
        &[
            (a3.clone(), "198.51.100.140".into()),
            (b3.clone(), "198.51.100.10".into()),
            (a.ns("host"), B_IP.into()),
        ],
        6,
    );
    let lines = cap.stop();
    assert_eq!(r, [true; 3], "a3 ↔ b3 with host routes, host A → host B");
    let req: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("198.51.100.10 > 198.51.100.140: ICMP echo request"))
        .collect();
    assert!(
        !req.is_empty(),
        "no routed echo request on the wire: {lines:#?}"
    );
    for l in req {
        assert_eq!((src_mac(l), dst_mac(l)), (Some(A_MAC), Some(B_MAC)), "{l}");
        assert!(l.contains("ttl 64,"), "TTL changed: {l}");
    }
    tcp_echo(&b3, sa("198.51.100.140", 7000), &a3, 4 << 20).expect("TCP a3 ↔ b3");
}

uvlan_system_tests::with_both_backends!(vlans_across_two_hosts, l3_across_two_hosts);
