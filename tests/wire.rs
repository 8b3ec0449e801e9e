//! The wire, with the real daemon: its parent is a veth (`up0`) in the daemon's `host`
//! namespace, plugged into a Linux bridge in a `sw` namespace; a gateway (`gw`) hangs off the
//! bridge and an external host (`ext`) sits behind it (see `uvlan_system_tests::net`).
//!
//! Every scenario runs twice, with the daemon forced to AF_XDP (`af_xdp::*`) and to
//! AF_PACKET (`af_packet::*`): both backends must behave identically. Expectations follow
//! the kernel statements of `docs/conformance.md` (C-numbers named where they apply).

use uvlan_system_tests::capture::{dst_mac, src_mac, vlan};
use uvlan_system_tests::net::{
    ethtool_feature, has_xdp, link_json, mtu, neigh_mac, neigh_state, ping_all, sa, sh_in,
    tcp_echo, EXT_IP, EXT_NET, GW_IP, GW_IP6, GW_MAC, HOST_IP, HOST_IP6, HOST_MAC, HOST_PORT,
    PARENT,
};
use uvlan_system_tests::trunk::tcx_ingress_programs;
use uvlan_system_tests::{Backend, Capture, LanOptions, VlanTrunk, World};

const E1_MAC: &str = "02:00:00:00:00:10";
const E2_MAC: &str = "02:00:00:00:00:11";
/// Bytes each TCP echo sends (and gets back).
const ECHO_BYTES: usize = 4 << 20;

/// Asserts that the network's wire uses the forced backend (`UvlanWire.Mode`).
fn assert_backend(w: &World, net: &str, b: Backend) {
    let v = w.inspect(net);
    let mode = v["UvlanWire"]["Mode"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        mode.starts_with(b.arg()),
        "{net}: wire mode {mode:?}, expected {}",
        b.arg()
    );
}

/// Frames of a capture whose text contains `needle`.
fn lines_with<'a>(lines: &'a [String], needle: &str) -> Vec<&'a String> {
    lines.iter().filter(|l| l.contains(needle)).collect()
}

/// The host's own traffic on the parent keeps working while uvlan holds it, and the host
/// and the endpoints cannot reach each other through the parent (C36, C61: the drivers
/// hook only the parent's receive path).
fn host_checks(w: &World, endpoint: &str, endpoint_ip: &str) {
    let (host, gw, ep) = (w.ns("host"), w.ns("gw"), w.ns(endpoint));
    let r = ping_all(
        &[
            (host.clone(), GW_IP.into()),
            (gw.clone(), HOST_IP.into()),
            (host.clone(), GW_IP6.into()),
            (host.clone(), EXT_IP.into()),
        ],
        4,
    );
    assert_eq!(
        r, [true; 4],
        "host ↔ gateway (v4, v6) and host → external while uvlan is attached"
    );
    tcp_echo(&gw, sa(GW_IP, 7001), &host, 1 << 20).expect("host ↔ gateway TCP");
    let r = ping_all(
        &[(host.clone(), endpoint_ip.into()), (ep, HOST_IP.into())],
        2,
    );
    assert_eq!(
        r,
        [false, false],
        "host → endpoint, endpoint → host must fail"
    );
}

// ---- macvlan bridge ---------------------------------------------------------------------

/// macvlan bridge on the wire: each endpoint's own MAC is what the gateway sees (frames,
/// ARP replies, ND), the endpoints answer ARP/ND for themselves, traffic flows both ways and
/// to the external host, large TCP works, ports talk locally, the host keeps its network.
fn macvlan_bridge_on_the_wire(b: Backend) {
    let mut w = World::with_backend(b);
    let lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d macvlan --subnet 192.0.2.0/24 --gateway {GW_IP} --ipv6 --subnet 2001:db8::/64 \
         --gateway {GW_IP6} -o parent={PARENT} mv"
    ));
    assert_backend(&w, "mv", b);
    let e1 = w.connect(
        "mv",
        "e1",
        &[
            "--ip",
            "192.0.2.10",
            "--ip6",
            "2001:db8::10",
            "--mac-address",
            E1_MAC,
        ],
    );
    let e2 = w.connect(
        "mv",
        "e2",
        &[
            "--ip",
            "192.0.2.11",
            "--ip6",
            "2001:db8::11",
            "--mac-address",
            E2_MAC,
        ],
    );
    let cap = Capture::start(&lan.gw, "eth0", &[], "arp or icmp or icmp6");
    let r = ping_all(
        &[
            (e1.clone(), GW_IP.into()),
            (e2.clone(), GW_IP.into()),
            (e1.clone(), EXT_IP.into()),
            (lan.ext.clone(), "192.0.2.11".into()),
            (e1.clone(), GW_IP6.into()),
        ],
        6,
    );
    assert_eq!(r, [true; 5], "e1/e2 → gw, e1 → ext, ext → e2, e1 → gw (v6)");
    // The gateway resolves the endpoints itself: the answers come from the endpoints.
    sh_flush_neigh(&w, "gw");
    let r = ping_all(
        &[
            (lan.gw.clone(), "192.0.2.10".into()),
            (lan.gw.clone(), "192.0.2.11".into()),
            (lan.gw.clone(), "2001:db8::11".into()),
        ],
        6,
    );
    assert_eq!(r, [true; 3], "gw → e1, e2, e2 (v6)");
    let lines = cap.stop();
    assert_eq!(neigh_mac(&lan.gw, "192.0.2.10").as_deref(), Some(E1_MAC));
    assert_eq!(neigh_mac(&lan.gw, "192.0.2.11").as_deref(), Some(E2_MAC));
    assert_eq!(neigh_mac(&lan.gw, "2001:db8::11").as_deref(), Some(E2_MAC));
    for (ip, mac) in [("192.0.2.10", E1_MAC), ("192.0.2.11", E2_MAC)] {
        let replies = lines_with(&lines, &format!("Reply {ip} is-at {mac}"));
        assert!(
            !replies.is_empty(),
            "no ARP reply for {ip} from {mac}:\n{lines:#?}"
        );
        assert!(
            replies.iter().all(|l| src_mac(l) == Some(mac)),
            "{replies:#?}"
        );
        let from: Vec<_> = lines_with(&lines, &format!("{ip} > "));
        assert!(!from.is_empty(), "no frames from {ip}");
        for l in from {
            assert_eq!(
                src_mac(l),
                Some(mac),
                "a frame from {ip} left with another MAC: {l}"
            );
        }
    }
    // Port to port is local in bridge mode (C46).
    let r = ping_all(
        &[
            (e1.clone(), "192.0.2.11".into()),
            (e2.clone(), "2001:db8::10".into()),
        ],
        4,
    );
    assert_eq!(r, [true, true], "e1 ↔ e2 (bridge)");
    tcp_echo(&lan.gw, sa(GW_IP, 7000), &e1, ECHO_BYTES).expect("e1 ↔ gw TCP echo");
    tcp_echo(&e2, sa("192.0.2.11", 7002), &lan.ext, ECHO_BYTES).expect("ext ↔ e2 TCP echo");
    host_checks(&w, "e1", "192.0.2.10");
}

/// Network `net` of `driver` with option `opt` on the parent (192.0.2.0/24, gateway
/// [`GW_IP`]), checked to run on backend `b`, with endpoints e1 (192.0.2.10) and e2
/// (192.0.2.11) in namespaces named after the driver (`ma1`, `ma2`; `ip1`, `ip2`); macvlan
/// ones with fixed MACs (ipvlan ports carry the parent's MAC and refuse `--mac-address`,
/// as Docker does). Each endpoint's (namespace name, full name).
fn two_endpoints(
    w: &mut World,
    b: Backend,
    driver: &str,
    opt: &str,
    net: &str,
) -> ((String, String), (String, String)) {
    w.create(&format!(
        "-d {driver} -o {opt} --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} {net}"
    ));
    assert_backend(w, net, b);
    let (n1, n2) = (format!("{}1", &driver[..2]), format!("{}2", &driver[..2]));
    let mut o1 = vec!["--ip", "192.0.2.10"];
    let mut o2 = vec!["--ip", "192.0.2.11"];
    if driver == "macvlan" {
        o1.extend(["--mac-address", E1_MAC]);
        o2.extend(["--mac-address", E2_MAC]);
    }
    let e1 = w.connect(net, &n1, &o1);
    let e2 = w.connect(net, &n2, &o2);
    ((n1, e1), (n2, e2))
}

fn sh_flush_neigh(w: &World, name: &str) {
    w.ip(name, "neigh flush all");
}

// ---- ipvlan L2 --------------------------------------------------------------------------

/// ipvlan L2 on the wire: frames carry the parent's MAC, the endpoint answers ARP and ND
/// (with M), traffic flows both ways, large TCP works; host ↔ endpoint fails (C36).
fn ipvlan_l2_on_the_wire(b: Backend) {
    let mut w = World::with_backend(b);
    let lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d ipvlan --subnet 192.0.2.0/24 --gateway {GW_IP} --ipv6 --subnet 2001:db8::/64 \
         --gateway {GW_IP6} -o parent={PARENT} l2"
    ));
    assert_backend(&w, "l2", b);
    let e1 = w.connect("l2", "e1", &["--ip", "192.0.2.10", "--ip6", "2001:db8::10"]);
    let e2 = w.connect("l2", "e2", &["--ip", "192.0.2.11", "--ip6", "2001:db8::11"]);
    let cap = Capture::start(&lan.gw, "eth0", &[], "arp or icmp or icmp6");
    let r = ping_all(
        &[
            (e1.clone(), GW_IP.into()),
            (e2.clone(), EXT_IP.into()),
            (e1.clone(), "192.0.2.11".into()),
        ],
        6,
    );
    assert_eq!(r, [true; 3], "e1 → gw, e2 → ext, e1 → e2");
    // The gateway resolves the endpoints itself: the answers come from the endpoints.
    sh_flush_neigh(&w, "gw");
    let r = ping_all(
        &[
            (lan.gw.clone(), "192.0.2.10".into()),
            (lan.gw.clone(), "2001:db8::11".into()),
        ],
        6,
    );
    assert_eq!(r, [true; 2], "gw → e1, gw → e2 (v6)");
    let lines = cap.stop();
    assert_eq!(neigh_mac(&lan.gw, "192.0.2.10").as_deref(), Some(HOST_MAC));
    assert_eq!(
        neigh_mac(&lan.gw, "2001:db8::11").as_deref(),
        Some(HOST_MAC)
    );
    // The host does not own 192.0.2.10: the reply is the endpoint's, carrying M.
    let replies = lines_with(&lines, &format!("Reply 192.0.2.10 is-at {HOST_MAC}"));
    assert!(!replies.is_empty(), "no ARP reply for e1:\n{lines:#?}");
    for ip in ["192.0.2.10", "192.0.2.11", "2001:db8::11"] {
        let from = lines_with(&lines, &format!("{ip} > "));
        assert!(!from.is_empty(), "no frames from {ip}:\n{lines:#?}");
        for l in from {
            assert_eq!(src_mac(l), Some(HOST_MAC), "frame from {ip}: {l}");
        }
    }
    // e1 → e2 never touches the wire in bridge mode (C13).
    assert!(
        lines_with(&lines, "192.0.2.10 > 192.0.2.11").is_empty(),
        "port-to-port traffic on the wire"
    );
    tcp_echo(&lan.gw, sa(GW_IP, 7000), &e1, ECHO_BYTES).expect("e1 ↔ gw TCP echo");
    tcp_echo(&e2, sa("2001:db8::11", 7003), &lan.gw, ECHO_BYTES).expect("gw ↔ e2 TCP (v6)");
    host_checks(&w, "e1", "192.0.2.10");
}

// ---- ipvlan L3 --------------------------------------------------------------------------

/// ipvlan L3 on the wire: ARP for an endpoint gets no answer (NOARP, C32); egress is routed
/// with the host's routing and neighbour tables (src MAC = M, dst MAC = the next hop, TTL
/// unchanged: C29, C31); the outside reaches the endpoint through a route via the host;
/// host ↔ endpoint fails (C36, C37); large routed TCP works.
fn ipvlan_l3_on_the_wire(b: Backend) {
    let mut w = World::with_backend(b);
    let lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d ipvlan -o ipvlan_mode=l3 --subnet 198.51.100.0/24 --ipv6 --subnet 2001:db8:1::/64 \
         -o parent={PARENT} l3"
    ));
    assert_backend(&w, "l3", b);
    let e1 = w.connect(
        "l3",
        "e1",
        &["--ip", "198.51.100.10", "--ip6", "2001:db8:1::10"],
    );
    w.ip(
        "gw",
        &format!("-6 route add 2001:db8:1::/64 via {HOST_IP6}"),
    );
    // NOARP: the gateway asks on-link for the endpoint; nobody answers.
    w.ip("gw", "route add 198.51.100.10/32 dev eth0");
    let cap = Capture::start(&lan.gw, "eth0", &[], "arp");
    assert!(
        !w.reach("gw", "198.51.100.10", 2),
        "ARP for an L3 endpoint was answered"
    );
    let lines = cap.stop();
    assert!(
        !lines_with(&lines, "who-has 198.51.100.10").is_empty(),
        "the gateway did not ask: {lines:#?}"
    );
    assert!(
        lines_with(&lines, "Reply 198.51.100.10").is_empty(),
        "someone answered ARP for an L3 endpoint: {lines:#?}"
    );
    assert!(
        neigh_state(&lan.gw, "198.51.100.10")
            .iter()
            .any(|s| s == "FAILED" || s == "INCOMPLETE"),
        "{:?}",
        neigh_state(&lan.gw, "198.51.100.10")
    );
    w.ip("gw", "route del 198.51.100.10/32 dev eth0");
    w.ip("gw", "neigh flush all");

    // Routed egress uses the host's table: without its route to the external subnet the
    // destination is taken as on-link (C29) and nobody on the LAN owns it; with the route,
    // the next hop is the gateway (ext sits behind it).
    w.ip("host", &format!("route del {EXT_NET}"));
    assert!(!w.reach("e1", EXT_IP, 3), "e1 → ext without a host route");
    w.ip("host", &format!("route add {EXT_NET} via {GW_IP}"));
    let cap = Capture::start(&lan.gw, "eth0", &["-v"], "icmp");
    assert!(
        w.reach("e1", EXT_IP, 6),
        "e1 → ext (routed via the gateway)"
    );
    let lines = cap.stop();
    let req = lines_with(
        &lines,
        &format!("198.51.100.10 > {EXT_IP}: ICMP echo request"),
    );
    assert!(!req.is_empty(), "no echo request on the wire: {lines:#?}");
    for l in &req {
        assert_eq!(
            src_mac(l),
            Some(HOST_MAC),
            "src MAC must be the parent's: {l}"
        );
        assert_eq!(
            dst_mac(l),
            Some(GW_MAC),
            "dst MAC must be the next hop's: {l}"
        );
        assert!(l.contains("ttl 64,"), "TTL must be unchanged (64): {l}");
    }
    // A route change applies at once, as in the kernel (the daemon drops cached next hops on
    // route/neighbour notifications).
    w.ip("host", &format!("route del {EXT_NET}"));
    assert!(
        !w.reach("e1", EXT_IP, 2),
        "e1 → ext right after the host route was deleted"
    );
    w.ip("host", &format!("route add {EXT_NET} via {GW_IP}"));
    assert!(w.reach("e1", EXT_IP, 6), "e1 → ext once the route is back");
    let r = ping_all(
        &[
            (lan.gw.clone(), "198.51.100.10".into()),
            (lan.ext.clone(), "198.51.100.10".into()),
            (e1.clone(), GW_IP.into()),
            (e1.clone(), GW_IP6.into()),
            (lan.gw.clone(), "2001:db8:1::10".into()),
        ],
        6,
    );
    assert_eq!(
        r, [true; 5],
        "gw → e1, ext → e1 (route via the host), e1 → gw, e1 ↔ gw over IPv6"
    );
    // The next hop's MAC comes from the host's neighbour table: a route via a static
    // neighbour with a MAC nobody owns sends the frame there.
    w.ip("host", "route add 203.0.113.99/32 via 192.0.2.253");
    w.ip(
        "host",
        &format!("neigh replace 192.0.2.253 lladdr 02:00:00:00:fe:99 dev {PARENT} nud permanent"),
    );
    let cap = Capture::start(&lan.sw, HOST_PORT, &["-Q", "in"], "icmp");
    assert!(
        !w.reach("e1", "203.0.113.99", 2),
        "nobody owns 203.0.113.99"
    );
    let lines = cap.stop();
    let req = lines_with(&lines, "198.51.100.10 > 203.0.113.99: ICMP echo request");
    assert!(
        !req.is_empty(),
        "no echo request towards the static next hop: {lines:#?}"
    );
    for l in req {
        assert_eq!(
            (src_mac(l), dst_mac(l)),
            (Some(HOST_MAC), Some("02:00:00:00:fe:99")),
            "{l}"
        );
    }
    tcp_echo(&lan.ext, sa(EXT_IP, 7000), &e1, ECHO_BYTES).expect("e1 ↔ ext routed TCP echo");
    // The host: e1 → the parent's own address is RTN_LOCAL (the reply never comes back,
    // C37); the host's ARP for e1 on an on-link route is not answered (NOARP).
    w.ip("host", &format!("route add 198.51.100.0/24 dev {PARENT}"));
    host_checks(&w, "e1", "198.51.100.10");
    w.ip("host", &format!("route del 198.51.100.0/24 dev {PARENT}"));
}

// ---- vepa and private --------------------------------------------------------------------

/// vepa sends port-to-port traffic to the wire and gets it back only through a hairpinning
/// switch (C20, C47/C49, §3): hairpin off fails, on works; the frames are seen leaving the
/// host (macvlan: e1's MAC to e2's; ipvlan: src = dst = M).
fn vepa_needs_a_hairpinning_switch(b: Backend) {
    let mut w = World::with_backend(b);
    let lan = w.lan(LanOptions::default());
    for (driver, opt) in [
        ("macvlan", "macvlan_mode=vepa"),
        ("ipvlan", "ipvlan_flag=vepa"),
    ] {
        let net = format!("{driver}-vepa");
        let ((n1, e1), (_, e2)) = two_endpoints(&mut w, b, driver, opt, &net);
        lan.hairpin(HOST_PORT, false);
        let r = ping_all(
            &[
                (e1.clone(), "192.0.2.11".into()),
                (e2.clone(), "192.0.2.10".into()),
            ],
            2,
        );
        assert_eq!(
            r,
            [false, false],
            "{driver} vepa without hairpin: e1 ↔ e2 must fail"
        );
        lan.hairpin(HOST_PORT, true);
        let cap = Capture::start(&lan.sw, HOST_PORT, &["-Q", "in"], "icmp");
        let r = ping_all(
            &[
                (e1.clone(), "192.0.2.11".into()),
                (e2.clone(), "192.0.2.10".into()),
            ],
            6,
        );
        let lines = cap.stop();
        assert_eq!(r, [true, true], "{driver} vepa with hairpin: e1 ↔ e2");
        let req = lines_with(&lines, "192.0.2.10 > 192.0.2.11: ICMP echo request");
        assert!(
            !req.is_empty(),
            "{driver}: e1 → e2 did not go to the wire: {lines:#?}"
        );
        let (s, d) = if driver == "macvlan" {
            (E1_MAC, E2_MAC)
        } else {
            (HOST_MAC, HOST_MAC)
        };
        for l in req {
            assert_eq!((src_mac(l), dst_mac(l)), (Some(s), Some(d)), "{l}");
        }
        assert!(w.reach(&n1, GW_IP, 4), "{driver} vepa: e1 → gw");
        w.uvlan_ok(&["network", "disconnect", &net, &e1]);
        w.uvlan_ok(&["network", "disconnect", &net, &e2]);
        w.uvlan_ok(&["network", "rm", &net]);
        lan.hairpin(HOST_PORT, false);
        lan.flush_fdb();
    }
}

/// private never delivers port to port, even through a hairpinning switch (C19, C54);
/// the wire still works.
fn private_never_delivers_port_to_port(b: Backend) {
    let mut w = World::with_backend(b);
    let lan = w.lan(LanOptions {
        hairpin: true,
        ..LanOptions::default()
    });
    for (driver, opt) in [
        ("macvlan", "macvlan_mode=private"),
        ("ipvlan", "ipvlan_flag=private"),
    ] {
        let net = format!("{driver}-priv");
        let ((_, e1), (_, e2)) = two_endpoints(&mut w, b, driver, opt, &net);
        let r = ping_all(
            &[
                (e1.clone(), "192.0.2.11".into()),
                (e2.clone(), "192.0.2.10".into()),
                (e1.clone(), GW_IP.into()),
                (lan.gw.clone(), "192.0.2.11".into()),
            ],
            3,
        );
        assert_eq!(
            r,
            [false, false, true, true],
            "{driver} private (hairpin on): e1 ↔ e2 must fail, the wire must work"
        );
        w.uvlan_ok(&["network", "disconnect", &net, &e1]);
        w.uvlan_ok(&["network", "disconnect", &net, &e2]);
        w.uvlan_ok(&["network", "rm", &net]);
        lan.flush_fdb();
        w.ip("gw", "neigh flush all");
    }
}

// ---- MTU ---------------------------------------------------------------------------------

/// Endpoints take the parent's MTU (set to 1400 before the network exists); full-size
/// frames pass, larger ones are refused by the endpoint's stack; TCP is segmented to it.
fn mtu_follows_the_parent(b: Backend) {
    let mut w = World::with_backend(b);
    let lan = w.lan(LanOptions {
        parent_mtu: 1400,
        ..LanOptions::default()
    });
    for driver in ["macvlan", "ipvlan"] {
        let net = format!("{driver}-mtu");
        w.create(&format!(
            "-d {driver} --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} {net}"
        ));
        let name = format!("{}1", &driver[..2]);
        let e1 = w.connect(&net, &name, &["--ip", "192.0.2.10"]);
        assert_eq!(
            mtu(&e1, "eth0"),
            1400,
            "{driver}: endpoint MTU = parent MTU"
        );
        assert!(w.reach(&name, GW_IP, 4));
        w.sh(
            &name,
            &format!("ping -n -q -c 2 -W 2 -M do -s 1372 {GW_IP}"),
        );
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &e1, "ping", "-n", "-c", "1", "-W", "1"])
            .args(["-M", "do", "-s", "1373", GW_IP])
            .output()
            .expect("ping");
        assert!(
            !o.status.success(),
            "{driver}: a 1401-byte packet passed MTU 1400"
        );
        tcp_echo(&lan.gw, sa(GW_IP, 7000), &e1, ECHO_BYTES).expect("TCP echo at MTU 1400");
        w.uvlan_ok(&["network", "disconnect", &net, &e1]);
        w.uvlan_ok(&["network", "rm", &net]);
        w.ip("gw", "neigh flush all");
    }
}

// ---- 802.1Q ------------------------------------------------------------------------------

/// Networks on `up0.20`, `up0.30` and untagged `up0` share one parent: each endpoint reaches
/// its VLAN's gateway (a userspace trunk in `gw`: no 8021q here), the frames carry the
/// right tag (tcpdump -e at the switch), a frame for an endpoint on another VID or untagged
/// is not delivered, `inspect` shows the sub-interface, and removing the networks leaves
/// nothing behind (XDP/tcx detached, RX VLAN offload, promiscuity and allmulti restored).
fn vlans_share_one_parent(b: Backend) {
    vlans_on_one_parent(b, false);
}

/// The same, with the switch handing tags over as skb metadata (a bridge port's default
/// `txvlan on`): XDP cannot see those tags, so the AF_PACKET copy socket must pick up the
/// VLAN-keyed unicast the XDP filter passed.
fn vlans_with_tags_in_skb_metadata(b: Backend) {
    vlans_on_one_parent(b, true);
}

fn vlans_on_one_parent(b: Backend, tags_as_metadata: bool) {
    let mut w = World::with_backend(b);
    let lan = w.lan(LanOptions {
        tags_as_metadata,
        ..LanOptions::default()
    });
    let host = w.ns("host");
    let before = link_json(&host, PARENT);
    let rxvlan_before = ethtool_feature(&host, PARENT, "rx-vlan-offload");
    // The gateway reaches these subnets only through its VLAN interfaces.
    w.ip("gw", "route del 198.51.100.0/24");
    let trunk = VlanTrunk::start(&lan.gw, "eth0", &[(20, "v20"), (30, "v30")]);
    for (tap, mac, ip) in [
        ("v20", "02:00:00:00:fe:20", "198.51.100.126/25"),
        ("v30", "02:00:00:00:fe:30", "198.51.100.254/25"),
    ] {
        w.ip("gw", &format!("link set {tap} address {mac} up"));
        w.ip("gw", &format!("addr add {ip} dev {tap}"));
    }
    w.create(&format!(
        "-d macvlan --subnet 198.51.100.0/25 --gateway 198.51.100.126 -o parent={PARENT}.20 v20"
    ));
    w.create(&format!(
        "-d ipvlan --subnet 198.51.100.128/25 --gateway 198.51.100.254 -o parent={PARENT}.30 v30"
    ));
    w.create(&format!(
        "-d macvlan --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} v0"
    ));
    for net in ["v20", "v30", "v0"] {
        assert_backend(&w, net, b);
    }
    let i20 = w.inspect("v20");
    assert_eq!(i20["UvlanWire"]["Parent"], PARENT, "{i20:#}");
    assert_eq!(i20["UvlanWire"]["VlanID"], 20, "{i20:#}");
    assert_eq!(i20["Options"]["parent"], format!("{PARENT}.20"), "{i20:#}");
    assert_eq!(w.inspect("v30")["UvlanWire"]["VlanID"], 30);
    assert_eq!(w.inspect("v0")["UvlanWire"]["VlanID"], 0);
    let e20 = w.connect(
        "v20",
        "e20",
        &["--ip", "198.51.100.10", "--mac-address", E1_MAC],
    );
    let e30 = w.connect("v30", "e30", &["--ip", "198.51.100.140"]);
    let e0 = w.connect("v0", "e0", &["--ip", "192.0.2.10", "--mac-address", E2_MAC]);
    let cap = Capture::start(&lan.sw, HOST_PORT, &["-Q", "in"], "");
    let r = ping_all(
        &[
            (e20.clone(), "198.51.100.126".into()),
            (e30.clone(), "198.51.100.254".into()),
            (e0.clone(), GW_IP.into()),
            (lan.gw.clone(), "198.51.100.10".into()),
            (lan.gw.clone(), "198.51.100.140".into()),
        ],
        6,
    );
    assert_eq!(r, [true; 5], "each endpoint ↔ its VLAN's gateway");
    tcp_echo(&lan.gw, sa("198.51.100.126", 7000), &e20, 1 << 20).expect("TCP on VLAN 20");
    let lines = cap.stop();
    let check = |ip: &str, mac: &str, vid: Option<u16>| {
        let from = lines_with(&lines, &format!(" {ip} > "));
        assert!(!from.is_empty(), "no frames from {ip}: {lines:#?}");
        for l in from {
            assert_eq!(
                (src_mac(l), vlan(l)),
                (Some(mac), vid),
                "frame from {ip}: {l}"
            );
        }
    };
    check("198.51.100.10", E1_MAC, Some(20));
    check("198.51.100.140", HOST_MAC, Some(30));
    check("192.0.2.10", E2_MAC, None);
    // Another VID, or no tag, for an endpoint's address: not delivered.
    let cap = Capture::start(&lan.sw, HOST_PORT, &[], "");
    let r = ping_all(
        &[
            (lan.gw.clone(), "-I v30 198.51.100.10".into()),
            (lan.gw.clone(), "-I v20 198.51.100.140".into()),
            (lan.gw.clone(), "-I eth0 198.51.100.10".into()),
        ],
        2,
    );
    let lines = cap.stop();
    assert_eq!(
        r, [false; 3],
        "cross-VLAN or untagged frames reached an endpoint"
    );
    let asked = |vid: Option<u16>, ip: &str| {
        lines
            .iter()
            .any(|l| vlan(l) == vid && l.contains(&format!("who-has {ip}")))
    };
    assert!(
        asked(Some(30), "198.51.100.10"),
        "no ARP tagged 30: {lines:#?}"
    );
    assert!(
        asked(Some(20), "198.51.100.140"),
        "no ARP tagged 20: {lines:#?}"
    );
    assert!(asked(None, "198.51.100.10"), "no untagged ARP: {lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("Reply 198.51.100.10") || l.contains("Reply 198.51.100.140")),
        "an endpoint answered on a foreign VLAN: {lines:#?}"
    );
    drop(trunk);
    // Removal: the sub-interface networks go, and the parent is as it was.
    for (net, ep) in [("v20", &e20), ("v30", &e30)] {
        w.uvlan_ok(&["network", "disconnect", net, ep]);
    }
    if b == Backend::AfXdp {
        // Native XDP cannot see tags a NIC strips: uvlan turns RX VLAN offload off while a
        // tagged network uses the parent.
        assert_eq!(ethtool_feature(&host, PARENT, "rx-vlan-offload"), "off");
    }
    w.uvlan_ok(&["network", "rm", "v20", "v30"]);
    let ls = w.uvlan_ok(&["network", "ls"]);
    assert!(!ls.contains("v20") && !ls.contains("v30"), "{ls}");
    assert!(w.reach("e0", GW_IP, 4), "the untagged network survives");
    // The wire closes with its last network; then the offload is as it was.
    w.uvlan_ok(&["network", "disconnect", "v0", &e0]);
    w.uvlan_ok(&["network", "rm", "v0"]);
    assert_eq!(
        ethtool_feature(&host, PARENT, "rx-vlan-offload"),
        rxvlan_before,
        "RX VLAN offload not restored"
    );
    let after = link_json(&host, PARENT);
    assert!(!has_xdp(&host, PARENT), "XDP program left on the parent");
    assert_eq!(
        tcx_ingress_programs(&host, PARENT).expect("tcx query"),
        0,
        "tcx left"
    );
    for k in ["promiscuity", "allmulti", "mtu", "address", "flags"] {
        assert_eq!(after[k], before[k], "parent {k} changed: {after:#}");
    }
}

// ---- the parent changes ----------------------------------------------------------------

/// Polls `cond` for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Endpoints follow their parent as the kernel's slaves do, while the daemon runs: its MTU
/// (C63: ipvlan reset on every change; C45: macvlan clamped only), its MAC (C7: ipvlan;
/// macvlan keeps its own), its state (C62: no carrier while the parent is down), its own
/// addresses (refused to endpoints), and a parent deleted and created again under its name
/// gets its wire back.
fn endpoints_follow_the_parent(b: Backend) {
    let mut w = World::with_backend(b);
    let lan = w.lan(LanOptions::default());
    let host = lan.host.clone();
    w.create(&format!(
        "-d ipvlan --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} ipv"
    ));
    w.create(&format!(
        "-d macvlan --subnet 198.51.100.0/24 -o parent={PARENT}.30 mv"
    ));
    let e1 = w.connect("ipv", "e1", &["--ip", "192.0.2.10"]);
    let e2 = w.connect("mv", "e2", &["--mac-address", E2_MAC]);
    assert!(w.reach("e1", GW_IP, 4), "e1 → gateway");
    let e2_mac = || {
        link_json(&e2, "eth0")["address"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // MTU down: both follow; up: ipvlan follows, macvlan keeps its clamped MTU.
    w.ip("host", &format!("link set {PARENT} mtu 1400"));
    eventually("endpoint MTUs 1400", || {
        mtu(&e1, "eth0") == 1400 && mtu(&e2, "eth0") == 1400
    });
    w.ip("host", &format!("link set {PARENT} mtu 1500"));
    eventually("ipvlan MTU back to 1500", || mtu(&e1, "eth0") == 1500);
    assert_eq!(mtu(&e2, "eth0"), 1400, "macvlan MTU is only ever clamped");

    // MAC: the ipvlan endpoint takes the parent's new MAC; the macvlan keeps its own.
    let new_mac = "02:00:00:00:01:99";
    w.ip("host", &format!("link set {PARENT} address {new_mac}"));
    eventually("ipvlan MAC follows the parent", || {
        link_json(&e1, "eth0")["address"] == new_mac
    });
    assert_eq!(e2_mac(), E2_MAC);
    w.ip("gw", "neigh flush all");
    assert!(w.reach("e1", GW_IP, 4), "e1 → gateway with the new MAC");
    assert_eq!(neigh_mac(&lan.gw, "192.0.2.10").as_deref(), Some(new_mac));

    // Down: no carrier, no traffic; up again: both back.
    w.ip("host", &format!("link set {PARENT} down"));
    let no_carrier = |ns: &str| {
        link_json(ns, "eth0")["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "NO-CARRIER"))
    };
    eventually("endpoints lose their carrier", || {
        no_carrier(&e1) && no_carrier(&e2)
    });
    assert!(!w.reach("e1", GW_IP, 2), "traffic while the parent is down");
    // An endpoint connected while the parent is down starts without carrier too.
    let e4 = w.connect("ipv", "e4", &["--ip", "192.0.2.14"]);
    assert!(no_carrier(&e4), "connected while the parent is down");
    w.ip("host", &format!("link set {PARENT} up"));
    eventually("endpoints get their carrier back", || {
        !no_carrier(&e1) && !no_carrier(&e2) && !no_carrier(&e4)
    });
    // The pings while the parent was down left e1's neighbour entry for the gateway
    // INCOMPLETE, or FAILED when the machine is slow; a ping that meets a FAILED entry can
    // end with an error before the new resolution completes (iputils counts it against -c 1),
    // as with any other device. So retry.
    eventually("e1 → gateway after the parent came back up", || {
        w.reach("e1", GW_IP, 2)
    });

    // An address the parent gains is the host's: no endpoint may take it.
    w.ip("host", &format!("addr add 192.0.2.77/24 dev {PARENT}"));
    let ns3 = w.netns("e3");
    eventually("the parent's new address is refused", || {
        let o = w.uvlan(&["network", "connect", "--ip", "192.0.2.77", "ipv", &ns3]);
        if o.status.success() {
            w.uvlan_ok(&["network", "disconnect", "ipv", &ns3]);
            return false;
        }
        String::from_utf8_lossy(&o.stderr).contains("192.0.2.77")
    });

    // An address the parent takes after an endpoint holds it stays the endpoint's (first
    // owner wins), also across a daemon restart.
    w.ip("host", &format!("addr add 192.0.2.10/32 dev {PARENT}"));
    w.kill_daemon(libc::SIGKILL);
    // A MAC change while the daemon is down is caught up when the endpoints come back.
    let down_mac = "02:00:00:00:01:98";
    w.ip("host", &format!("link set {PARENT} address {down_mac}"));
    w.start_daemon();
    let log = w.daemon_log();
    assert!(!log.contains("could not be restored"), "{log}");
    assert_eq!(link_json(&e1, "eth0")["address"], down_mac, "{log}");
    w.ip("gw", "neigh flush all");
    assert!(w.reach("e1", GW_IP, 6), "e1 → gateway after the restart");
    w.ip("host", &format!("addr del 192.0.2.10/32 dev {PARENT}"));

    // Deleted and plugged in again (a new interface under the same name): the wire is
    // opened again on it.
    w.ip("host", &format!("link del {PARENT}"));
    eventually("endpoints lose their carrier with the parent gone", || {
        no_carrier(&e1)
    });
    lan.switch.plug(&host, PARENT, HOST_MAC, HOST_PORT);
    eventually("endpoints get their carrier back on the new parent", || {
        !no_carrier(&e1)
    });
    eventually("ipvlan MAC follows the new parent", || {
        link_json(&e1, "eth0")["address"] == HOST_MAC
    });
    w.ip("gw", "neigh flush all");
    assert!(
        w.reach("e1", GW_IP, 6),
        "e1 → gateway through the new parent"
    );
    assert_backend(&w, "ipv", b);
    let log = w.daemon_log();
    assert!(log.contains("opened again"), "{log}");

    // A daemon that starts while the parent is missing brings the networks and their
    // endpoints up when it appears.
    w.kill_daemon(libc::SIGKILL);
    w.ip("host", &format!("link del {PARENT}"));
    w.start_daemon();
    assert!(
        w.daemon_log().contains("tries again when its parent"),
        "{}",
        w.daemon_log()
    );
    lan.switch.plug(&host, PARENT, HOST_MAC, HOST_PORT);
    eventually("networks restored when the parent appears", || {
        w.daemon_log()
            .matches("network and endpoints restored")
            .count()
            == 2
    });
    w.ip("gw", "neigh flush all");
    assert!(
        w.reach("e1", GW_IP, 6),
        "e1 → gateway after the late parent"
    );
    assert_eq!(e2_mac(), E2_MAC);
}

/// A frame sent on this host can reach the parent with its TCP or UDP checksum left to the
/// device (`CHECKSUM_PARTIAL`). Here the switch port facing the host keeps its TX checksum
/// offload on (segmentation off, so the gateway's segments reach `up0` one by one), so the
/// gateway's segments arrive that way. The AF_PACKET wire is told so
/// (`TP_STATUS_CSUMNOTREADY`) and completes the checksum before the engine sees the frame:
/// the TCP echo between the gateway and a TAP endpoint arrives intact both ways. (An XSK gets
/// no such flag: the AF_XDP wire needs complete checksums on a veth parent, as
/// `docs/performance.md` says under "Notes for veth parents".)
#[test]
fn af_packet_completes_checksums_left_to_the_device() {
    let mut w = World::with_backend(Backend::AfPacket);
    let lan = w.lan(LanOptions::default());
    sh_in(
        &lan.sw,
        &format!("ethtool -K {HOST_PORT} tx on tso off >/dev/null"),
    );
    w.create(&format!(
        "-d macvlan --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} cs"
    ));
    assert_backend(&w, "cs", Backend::AfPacket);
    let e1 = w.connect("cs", "e1", &["--ip", "192.0.2.10", "--mac-address", E1_MAC]);
    tcp_echo(&lan.gw, sa(GW_IP, 7003), &e1, 1 << 20)
        .expect("e1 ↔ gateway TCP with the gateway's checksums left to the device");
    w.uvlan_ok(&["network", "disconnect", "cs", &e1]);
    w.uvlan_ok(&["network", "rm", "cs"]);
}

uvlan_system_tests::with_both_backends!(
    macvlan_bridge_on_the_wire,
    ipvlan_l2_on_the_wire,
    ipvlan_l3_on_the_wire,
    vepa_needs_a_hairpinning_switch,
    private_never_delivers_port_to_port,
    endpoints_follow_the_parent,
    mtu_follows_the_parent,
    vlans_share_one_parent,
    vlans_with_tags_in_skb_metadata,
);
