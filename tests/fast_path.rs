//! The fast path through the real daemon (`uvlan daemon --fast-path on`): two veth endpoints
//! of one network reach each other through the kernel cache (its per-endpoint counters in
//! `uvlan stats` grow), `network inspect` names the endpoint kind, and `network disconnect`
//! invalidates: afterwards not one frame goes through the cache, and nothing is left in the
//! daemon's namespace. Namespaces and addresses (192.0.2.0/24) are the test's own.

use serde_json::{json, Value};
use uvlan_system_tests::capture::{Captured, LiveCapture};
use uvlan_system_tests::net::{has_xdp, ping_all, sa, tcp_echo, GW_IP, PARENT};
use uvlan_system_tests::trunk::tcx_ingress_programs;
use uvlan_system_tests::{plugin_call, Backend, LanOptions, World};

fn fast_counters(w: &World, net: &str, ep: &str) -> (u64, u64) {
    counters(w, net, ep, "fast_sent_frames", "fast_received_frames")
}

/// What the endpoint sent and received in all (the dataplane's frames and the cache's).
fn totals(w: &World, net: &str, ep: &str) -> (u64, u64) {
    counters(w, net, ep, "sent_frames", "received_frames")
}

fn counters(w: &World, net: &str, ep: &str, sent: &str, received: &str) -> (u64, u64) {
    let stats = w.uvlan_ok(&["stats", "--format", "json", net]);
    let v: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    let e = v["networks"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["name"] == ep)
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint {ep} in {stats}"));
    (
        e[sent].as_u64().unwrap_or(0),
        e[received].as_u64().unwrap_or(0),
    )
}

/// `eth0`'s index and MAC in the test's namespace `ns`.
fn eth0(w: &World, ns: &str) -> (String, String) {
    let o = w.exec(ns, "ip -o link show eth0");
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    let idx = s.split(':').next().unwrap_or("").trim().to_string();
    let mac = s
        .split("link/ether ")
        .nth(1)
        .and_then(|m| m.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    (idx, mac)
}

fn host_links(w: &World) -> String {
    let o = w.exec("host", "ip -o link show");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn veth_endpoints_use_the_cache_and_disconnect_invalidates() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    for (driver, opt) in [
        ("macvlan", "macvlan_mode=bridge"),
        ("ipvlan", "ipvlan_mode=l2"),
    ] {
        let net = format!("fp{driver}");
        w.create(&format!(
            "-d {driver} --internal --subnet 192.0.2.0/24 -o {opt} {net}"
        ));
        let a = w.connect(&net, &format!("{driver}a"), &["--ip", "192.0.2.10"]);
        let b = w.connect(&net, &format!("{driver}b"), &["--ip", "192.0.2.20"]);
        let inspect = w.inspect(&net);
        let kinds = &inspect["UvlanWire"]["EndpointKinds"];
        let kinds = kinds.as_object().expect("EndpointKinds");
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(kinds.values().all(|k| k == "veth+fast-path"), "{kinds:?}");
        let link = w.exec(&format!("{driver}a"), "ip -d link show eth0");
        assert!(
            String::from_utf8_lossy(&link.stdout).contains("veth"),
            "eth0 is a veth"
        );

        let pings = w.exec(&format!("{driver}a"), "ping -q -c 10 -i 0.2 192.0.2.20");
        assert!(
            String::from_utf8_lossy(&pings.stdout).contains(" 0% packet loss"),
            "{}\n{}",
            String::from_utf8_lossy(&pings.stdout),
            w.daemon_log()
        );
        let (a_sent, _) = fast_counters(&w, &net, &a);
        let (b_sent, b_recv) = fast_counters(&w, &net, &b);
        assert!(a_sent >= 8, "a's requests went through the cache: {a_sent}");
        assert!(b_sent >= 8, "b's replies went through the cache: {b_sent}");
        assert!(b_recv >= 8, "b received through the cache: {b_recv}");
        // The endpoint's totals count the cache's frames too (they are part of them).
        let (a_total, _) = totals(&w, &net, &a);
        let (_, b_total) = totals(&w, &net, &b);
        assert!(
            a_total > a_sent && b_total > b_recv,
            "totals include the cache's frames: a sent {a_total} ({a_sent} via the cache), \
             b received {b_total} ({b_recv} via the cache)"
        );

        w.uvlan_ok(&["network", "disconnect", &net, &b]);
        let before = fast_counters(&w, &net, &a).0;
        // a still knows b's MAC: its frames reach a's veth program at once.
        assert!(!w.ping(&format!("{driver}a"), "192.0.2.20", 3));
        assert_eq!(
            fast_counters(&w, &net, &a).0,
            before,
            "not one frame went through the cache after the disconnect"
        );
        w.uvlan_ok(&["network", "disconnect", &net, &a]);
        w.uvlan_ok(&["network", "rm", &net]);
        let links = host_links(&w);
        assert!(
            !links.contains("uvs") && !links.contains("uvv"),
            "the daemon's ends are gone: {links}"
        );
    }
}

/// Wire ↔ endpoint through the cache (AF_XDP wire): the parent's XDP filter hands a frame
/// whose key the engine decided for an endpoint to the parent's tcx program, which
/// redirects it into the endpoint's `eth0`; the endpoint's frames for the wire leave
/// through the parent's egress. The gateway on the LAN pings each endpoint and echoes TCP
/// with it: the endpoint's cache counters grow both ways. A disconnect empties the cache:
/// an endpoint connected next with the same MAC and address (a new veth) is reached at
/// once. `kill -9` leaves no program on the parent (`bpf_link`s die with the daemon).
#[test]
fn wire_traffic_uses_the_cache_both_ways() {
    wire_traffic_through_the_cache(Backend::AfXdp);
}

/// The same on the AF_PACKET wire: the socket's filter keeps a cached frame from the
/// socket and marks it, the parent's tc filter redirects it into the endpoint. Every frame
/// arrives once: the pings and the TCP echo would show a duplicate or a loss.
#[test]
fn af_packet_wire_traffic_uses_the_cache_both_ways() {
    wire_traffic_through_the_cache(Backend::AfPacket);
}

fn wire_traffic_through_the_cache(backend: Backend) {
    let mut w = World::with_backend_and_args(backend, &["--fast-path", "on"]);
    let lan = w.lan(LanOptions::default());
    let host = w.ns("host");
    // A kernel that refuses bpf_xdp_adjust_meta to XDP programs leaves an AF_XDP parent
    // without the wire cache: the daemon says so, and frames from the wire take the slow
    // path (they must still arrive, and none through the cache); frames to the wire still
    // leave through it.
    let from_wire_cached = !(backend == Backend::AfXdp
        && w.daemon_log().contains("AF_XDP parents take the slow path"));
    // The direction whose counter shows the cache at work: from the wire where it is
    // cached, else to the wire.
    let cached = |(sent, received): (u64, u64)| if from_wire_cached { received } else { sent };
    for (driver, opt, mac) in [
        ("macvlan", "macvlan_mode=bridge", Some("02:00:00:00:00:10")),
        ("ipvlan", "ipvlan_mode=l2", None),
    ] {
        let net = format!("fw{driver}");
        w.create(&format!(
            "-d {driver} --subnet 192.0.2.0/24 --gateway {GW_IP} -o {opt} -o parent={PARENT} {net}"
        ));
        let mut args = vec!["--ip", "192.0.2.10"];
        if let Some(m) = mac {
            args.extend(["--mac-address", m]);
        }
        let e = w.connect(&net, &format!("{driver}w1"), &args);
        // The gateway forgets the MAC of the last network's endpoint at this address.
        flush_neigh(&lan.gw);
        let gw_to_e = || ping_all(&[(lan.gw.clone(), "192.0.2.10".into())], 6)[0];
        assert!(gw_to_e(), "gw → e\n{}", w.daemon_log());
        let pings = pings_from(&lan.gw, "192.0.2.10", 10);
        assert!(pings, "gw → e, 10 pings\n{}", w.daemon_log());
        let (sent, received) = fast_counters(&w, &net, &e);
        assert!(
            sent >= 8
                && if from_wire_cached {
                    received >= 8
                } else {
                    received == 0
                },
            "{driver}: the replies left and the requests arrived through the cache (from the \
             wire: {from_wire_cached}): sent {sent}, received {received}\n{}",
            w.uvlan_ok(&["stats", &net])
        );
        // The wire program finishes on the parent what the wire cache decided: there is
        // none without a cache.
        let on_parent = tcx_ingress_programs(&host, PARENT).expect("tcx query");
        assert!(
            if from_wire_cached {
                on_parent >= 1
            } else {
                on_parent == 0
            },
            "the wire program sits on the parent when the wire has a cache (from the wire: \
             {from_wire_cached}): {on_parent} tcx programs"
        );
        tcp_echo(&lan.gw, sa(GW_IP, 7000), &e, 4 << 20).expect("e ↔ gw TCP echo");
        // Bytes, not frames: the endpoint's TCP segments leave as GSO super-frames. Most of
        // the 4 MiB each way, not all: any engine change meanwhile (the daemon follows the
        // parent's addresses, for one) empties the cache, and a few frames then take the slow
        // path until their key is learned again.
        let (sent, received) = counters(&w, &net, &e, "fast_sent_bytes", "fast_received_bytes");
        assert!(
            sent >= 3 << 20
                && if from_wire_cached {
                    received >= 3 << 20
                } else {
                    received == 0
                },
            "{driver}: the echo went through the cache both ways (from the wire: \
             {from_wire_cached}): sent {sent} B, received {received} B"
        );

        // The wire's row counts the cache's frames too.
        let stats: Value =
            serde_json::from_str(&w.uvlan_ok(&["stats", "--format", "json", &net])).unwrap();
        let wire = &stats["wires"][0];
        let (fs, fr) = (
            wire["fast_sent_frames"].as_u64().unwrap_or(0),
            wire["fast_received_frames"].as_u64().unwrap_or(0),
        );
        assert!(
            fs >= 8
                && if from_wire_cached { fr >= 8 } else { fr == 0 }
                && wire["sent_frames"].as_u64() >= Some(fs),
            "{driver}: the wire's row counts the cache's frames: {wire}"
        );

        // Invalidation: the next endpoint has the same MAC and address, and a new veth.
        w.uvlan_ok(&["network", "disconnect", &net, &e]);
        let e2 = w.connect(&net, &format!("{driver}w2"), &args);
        assert!(gw_to_e(), "{driver}: gw reaches the new endpoint at once");
        let before = cached(fast_counters(&w, &net, &e2));
        assert!(pings_from(&lan.gw, "192.0.2.10", 5));
        let now = cached(fast_counters(&w, &net, &e2));
        assert!(
            now >= before + 4,
            "{driver}: the new endpoint is served by the cache too"
        );
        w.uvlan_ok(&["network", "disconnect", &net, &e2]);
        w.uvlan_ok(&["network", "rm", &net]);
        assert_eq!(
            tcx_ingress_programs(&host, PARENT).expect("tcx query"),
            0,
            "the wire program goes with the wire"
        );
    }

    // kill -9 while the cache serves the wire: nothing stays on the parent.
    w.create(&format!(
        "-d macvlan --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} fwk9"
    ));
    let e = w.connect("fwk9", "k9w", &["--ip", "192.0.2.10"]);
    flush_neigh(&lan.gw);
    assert!(ping_all(&[(lan.gw.clone(), "192.0.2.10".into())], 6)[0]);
    assert!(pings_from(&lan.gw, "192.0.2.10", 5));
    assert!(
        cached(fast_counters(&w, "fwk9", &e)) > 0,
        "the cache served e"
    );
    w.kill_daemon(libc::SIGKILL);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!has_xdp(&host, PARENT), "no XDP program after kill -9");
    assert_eq!(
        tcx_ingress_programs(&host, PARENT).expect("tcx query"),
        0,
        "no tcx program after kill -9"
    );
    assert!(
        !pings_from(&lan.gw, "192.0.2.10", 2),
        "no daemon, no forwarding"
    );
    w.start_daemon();
    assert!(
        ping_all(&[(lan.gw.clone(), "192.0.2.10".into())], 8)[0],
        "a restart serves e again\n{}",
        w.daemon_log()
    );
    w.uvlan_ok(&["network", "disconnect", "fwk9", &e]);
    w.uvlan_ok(&["network", "rm", "fwk9"]);
}

/// Empties the neighbour table of namespace `full`.
fn flush_neigh(full: &str) {
    let _ = std::process::Command::new("ip")
        .args(["netns", "exec", full, "ip", "neigh", "flush", "all"])
        .status();
}

/// `count` pings from namespace `full` to `addr`, 0.1 s apart: true when all were answered,
/// each once.
fn pings_from(full: &str, addr: &str, count: u32) -> bool {
    std::process::Command::new("ip")
        .args([
            "netns", "exec", full, "ping", "-n", "-q", "-i", "0.1", "-W", "1",
        ])
        .args(["-c", &count.to_string(), addr])
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| {
            // A reply that arrives twice (`+N duplicates`) is a failure too.
            o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("duplicates")
        })
}

/// `kill -9` with live traffic: the programs hang on `bpf_link`s the daemon owned, so they
/// detach with it and nothing is forwarded any more (no stale cache); a restart adopts the
/// veth pairs as they are (same interface, MAC and addresses, and what the user added) with
/// a new TAP each, and the cache carries the endpoints' frames again. A restart with the
/// fast path off makes them TAP endpoints (same MAC and addresses), and traffic goes on.
#[test]
fn kill_9_leaves_no_stale_cache_and_a_restart_recovers() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    w.create("-d macvlan --internal --subnet 192.0.2.0/24 fpk9");
    let a = w.connect("fpk9", "k9a", &["--ip", "192.0.2.10"]);
    let b = w.connect("fpk9", "k9b", &["--ip", "192.0.2.20"]);
    let pings = w.exec("k9a", "ping -q -c 5 -i 0.2 192.0.2.20");
    assert!(pings.status.success(), "{}", w.daemon_log());
    let (sent, _) = fast_counters(&w, "fpk9", &a);
    assert!(sent > 0, "the cache carried a's frames");
    // What the restart must keep: the interface itself and an address the user added.
    assert!(w
        .exec("k9a", "ip addr add 192.0.2.99/32 dev eth0")
        .status
        .success());
    let a_eth0 = eth0(&w, "k9a");
    // A flood in flight while the daemon dies.
    let flood = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &a,
            "ping",
            "-q",
            "-f",
            "-w",
            "3",
            "192.0.2.20",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ping -f");
    std::thread::sleep(std::time::Duration::from_millis(300));
    w.kill_daemon(libc::SIGKILL);
    let rx = |ns: &str| -> u64 {
        let o = w.exec(ns, "cat /sys/class/net/eth0/statistics/rx_packets");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = rx("k9b");
    assert!(!w.ping("k9a", "192.0.2.20", 2), "no daemon, no forwarding");
    assert_eq!(
        rx("k9b"),
        before,
        "no frame reached b through a stale cache"
    );
    let mut flood = flood;
    let _ = flood.wait();
    w.start_daemon();
    assert!(
        w.ping("k9a", "192.0.2.20", 6),
        "traffic resumes after the restart\n{}",
        w.daemon_log()
    );
    let kinds = |w: &World| {
        let inspect = w.inspect("fpk9");
        let k = inspect["UvlanWire"]["EndpointKinds"].as_object().cloned();
        k.map(|k| k.values().map(|v| v.to_string()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        kinds(&w),
        vec!["\"veth+fast-path\""; 2],
        "adopted as fast-path endpoints"
    );
    assert_eq!(eth0(&w, "k9a"), a_eth0, "the same eth0 (index and MAC)");
    let addrs = w.exec("k9a", "ip -o addr show dev eth0");
    let addrs = String::from_utf8_lossy(&addrs.stdout).into_owned();
    assert!(
        addrs.contains("192.0.2.10/24") && addrs.contains("192.0.2.99/32"),
        "its addresses, the user's included: {addrs}"
    );
    let (sent, _) = fast_counters(&w, "fpk9", &a);
    let pings = w.exec("k9a", "ping -q -c 10 -i 0.2 192.0.2.20");
    assert!(pings.status.success(), "{}", w.daemon_log());
    let (sent_now, _) = fast_counters(&w, "fpk9", &a);
    assert!(
        sent_now >= sent + 8,
        "the cache carries a's frames again: {sent} → {sent_now}"
    );
    let links = host_links(&w);
    assert_eq!(
        (
            links.matches(": uvs").count(),
            links.matches(": uvv").count()
        ),
        (2, 2),
        "one TAP and one veth end per endpoint in the daemon's namespace: {links}"
    );

    // Restarted without the fast path: TAP endpoints with the same MAC and addresses.
    w.kill_daemon(libc::SIGTERM);
    w.set_daemon_args(&["--fast-path", "off"]);
    w.start_daemon();
    assert!(
        w.ping("k9a", "192.0.2.20", 6),
        "traffic goes on over TAP endpoints\n{}",
        w.daemon_log()
    );
    assert_eq!(kinds(&w), vec!["\"tap\""; 2], "made again as TAP endpoints");
    assert_eq!(eth0(&w, "k9a").1, a_eth0.1, "the same MAC");
    let links = host_links(&w);
    assert!(
        !links.contains(": uvs") && !links.contains(": uvv"),
        "no fast-path leftovers in the daemon's namespace: {links}"
    );
    w.uvlan_ok(&["network", "disconnect", "fpk9", &a]);
    w.uvlan_ok(&["network", "disconnect", "fpk9", &b]);
    w.uvlan_ok(&["network", "rm", "fpk9"]);
}

/// `-o uvlan.fast_path=false` keeps a network's endpoints TAPs under `--fast-path on`;
/// `-o uvlan.fast_path=true` under `--fast-path off` refuses the connect and leaves nothing.
#[test]
fn the_network_option_overrides_the_daemon_default() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    w.create("-d macvlan --internal --subnet 192.0.2.0/24 -o uvlan.fast_path=false fpoff");
    let a = w.netns("offa");
    w.uvlan_ok(&["network", "connect", "fpoff", &a]);
    let inspect = w.inspect("fpoff");
    let kinds = inspect["UvlanWire"]["EndpointKinds"].as_object().cloned();
    assert!(
        kinds.is_some_and(|k| k.len() == 1 && k.values().all(|v| v == "tap")),
        "{inspect}"
    );
    w.uvlan_ok(&["network", "disconnect", "fpoff", &a]);
    w.uvlan_ok(&["network", "rm", "fpoff"]);

    let mut w = World::new();
    w.create("-d ipvlan --internal --subnet 192.0.2.0/24 -o uvlan.fast_path=true fpon");
    let b = w.netns("onb");
    let o = w.uvlan(&["network", "connect", "fpon", &b]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--fast-path on or auto"), "{err}");
    let inspect = w.inspect("fpon");
    assert_eq!(
        inspect["Containers"].as_object().map(|c| c.len()),
        Some(0),
        "{inspect}"
    );
    let links = w.exec("onb", "ip -o link show");
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("eth0"),
        "nothing left in the namespace"
    );
    w.uvlan_ok(&["network", "rm", "fpon"]);
}

/// `uvlan capture` sees every frame of fast-path endpoints: while a capture is attached the
/// cache is emptied and learns nothing, so the pings take the slow path and are recorded
/// with their verdicts; once the capture ends, the cache carries them again.
#[test]
fn a_capture_switches_fast_path_endpoints_to_the_slow_path() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    w.create("-d macvlan --internal --subnet 192.0.2.0/24 fpcap");
    let a = w.connect("fpcap", "capa", &["--ip", "192.0.2.10"]);
    w.connect("fpcap", "capb", &["--ip", "192.0.2.20"]);
    // The cache learns a → b and b → a.
    let pings = w.exec("capa", "ping -q -c 5 -i 0.2 192.0.2.20");
    assert!(pings.status.success(), "{}", w.daemon_log());
    let warm = fast_counters(&w, "fpcap", &a).0;
    assert!(warm > 0, "the cache carried a's frames before the capture");

    // The capture runs until it is interrupted; 5 pings make 20 records (each request and
    // reply inbound at its sender, outbound at its receiver).
    let cap = LiveCapture::start(&w.socket(), &["fpcap"]);
    let pings = w.exec("capa", "ping -q -c 5 -i 0.2 192.0.2.20");
    let during = fast_counters(&w, "fpcap", &a).0;
    // Interrupted as a user's Ctrl-C would.
    let Captured {
        frames: captured,
        text,
        log: err,
    } = cap.stop();
    assert!(pings.status.success(), "{}", w.daemon_log());
    assert!(
        captured >= 20,
        "the capture saw every frame of the fast-path endpoints ({captured}): {err}\n{text}"
    );
    assert_eq!(
        during, warm,
        "no frame of a went through the cache while the capture ran"
    );

    // The capture is over: the next pings are learned and carried by the cache again.
    let pings = w.exec("capa", "ping -q -c 5 -i 0.2 192.0.2.20");
    assert!(pings.status.success(), "{}", w.daemon_log());
    assert!(
        fast_counters(&w, "fpcap", &a).0 > during,
        "the cache carries a's frames again after the capture"
    );
}

/// The cache does not apply the MTU rule, so it never learns a pair whose receiver has the
/// smaller MTU: b (MTU 1280) → a (1500) goes through the cache, a → b stays on the slow path,
/// where a 1400-byte ping is dropped as the kernel's `is_skb_forwardable` drops it, every time.
#[test]
fn the_cache_never_skips_the_mtu_rule() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    w.create("-d macvlan --internal --subnet 192.0.2.0/24 fpmtu");
    let a = w.connect("fpmtu", "mtua", &["--ip", "192.0.2.10"]);
    let b = w.connect("fpmtu", "mtub", &["--ip", "192.0.2.20"]);
    let set = w.exec("mtub", "ip link set eth0 mtu 1280");
    assert!(set.status.success());
    // The daemon follows the endpoint's MTU (an engine change, which empties the cache).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let i = w.inspect("fpmtu").to_string();
        if i.contains("1280") || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let small = w.exec("mtua", "ping -q -c 5 -i 0.2 192.0.2.20");
    assert!(small.status.success(), "{}", w.daemon_log());
    let back = w.exec("mtub", "ping -q -c 5 -i 0.2 192.0.2.10");
    assert!(back.status.success(), "{}", w.daemon_log());
    assert_eq!(
        fast_counters(&w, "fpmtu", &a).0,
        0,
        "a (1500) → b (1280) is never learned"
    );
    assert!(
        fast_counters(&w, "fpmtu", &b).0 > 0,
        "b (1280) → a (1500) goes through the cache"
    );
    // 1400 bytes of ICMP payload: longer than b's MTU; dropped every time.
    let big = w.exec("mtua", "ping -q -c 3 -i 0.2 -W 1 -M do -s 1400 192.0.2.20");
    assert!(
        !big.status.success(),
        "a frame longer than b's MTU reached b"
    );
    let stats = w.uvlan_ok(&["stats", "--format", "json", "fpmtu"]);
    assert!(stats.contains("mtu_exceeded"), "{stats}");
}

/// A host interface (always a TAP, in the daemon's namespace) and fast-path endpoints share a
/// network, whichever comes first: the host reaches every endpoint and back through the
/// dataplane (the cache only learns between veth endpoints), and two veth endpoints reach
/// each other through the cache.
#[test]
fn a_host_interface_and_fast_path_endpoints_share_a_network() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    w.create("-d macvlan --internal --subnet 192.0.2.0/24 fph");
    let a = w.connect("fph", "fpha", &["--ip", "192.0.2.10"]);
    w.uvlan_ok(&["network", "connect", "--host", "--ip", "192.0.2.2", "fph"]);
    let b = w.connect("fph", "fphb", &["--ip", "192.0.2.20"]);
    let inspect = w.inspect("fph");
    let kinds = inspect["UvlanWire"]["EndpointKinds"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        kinds.values().filter(|k| *k == "veth+fast-path").count(),
        2,
        "both endpoints are veths: {kinds:?}"
    );
    assert_eq!(
        kinds.values().filter(|k| *k == "tap").count(),
        1,
        "the host interface is a TAP: {kinds:?}"
    );
    for ip in ["192.0.2.10", "192.0.2.20"] {
        let ping = w.exec("host", &format!("ping -q -c 3 -i 0.2 {ip}"));
        assert!(ping.status.success(), "host → {ip}\n{}", w.daemon_log());
    }
    let ping = w.exec("fphb", "ping -q -c 3 -i 0.2 192.0.2.2");
    assert!(ping.status.success(), "b → host\n{}", w.daemon_log());
    let pings = w.exec("fpha", "ping -q -c 10 -i 0.2 192.0.2.20");
    assert!(pings.status.success(), "a → b\n{}", w.daemon_log());
    let (a_sent, _) = fast_counters(&w, "fph", &a);
    let (_, b_received) = fast_counters(&w, "fph", &b);
    assert!(
        a_sent >= 8 && b_received >= 8,
        "a → b through the cache: {a_sent} {b_received}"
    );
    w.uvlan_ok(&["network", "disconnect", "--host", "fph"]);
    w.uvlan_ok(&["network", "disconnect", "fph", &a]);
    w.uvlan_ok(&["network", "disconnect", "fph", &b]);
    w.uvlan_ok(&["network", "rm", "fph"]);
}

/// Runs `ip ARGS` and panics unless it succeeds.
fn ip_ok(args: &[&str]) {
    let o = uvlan_system_tests::sh(std::process::Command::new("ip").args(args));
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// One call of Docker's plugin protocol that must succeed.
fn docker(w: &World, sock: &std::path::Path, method: &str, body: Value) -> Value {
    let v = plugin_call(sock, method, &body)
        .unwrap_or_else(|| panic!("{method}: no answer\n{}", w.daemon_log()));
    assert!(v.get("Err").is_none(), "{method}: {v}\n{}", w.daemon_log());
    v
}

/// Runs the CNI plugin (installed as `uvlan-ipvlan` in the world's `bin`) as a runtime
/// does, for container `ctr-NAME` in test namespace `name`; returns whether it succeeded
/// and what it printed.
fn cni(w: &World, cmd: &str, name: &str, conf: &Value) -> (bool, Value) {
    use std::io::Write;
    let mut child = std::process::Command::new(w.dir.join("bin").join("uvlan-ipvlan"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", format!("ctr-{name}"))
        .env("CNI_NETNS", format!("/run/netns/{}", w.ns(name)))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", w.dir.join("bin"))
        .env("UVLAN_SOCKET", w.socket())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn uvlan-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write the configuration");
    let out = child.wait_with_output().expect("uvlan-cni");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

/// The interfaces of test namespace `name` besides `lo`, with their kind (`ip -d`).
fn links_of(w: &World, name: &str) -> Vec<String> {
    let o = w.exec(name, "ip -d -o link show");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.contains(": lo: "))
        .map(str::to_string)
        .collect()
}

/// The endpoints Docker's remote driver makes (through its plugin socket, with what dockerd
/// does around the calls: moving the interface into the sandbox after Join and back after
/// Leave) and those the CNI plugin makes, on fast-path networks: veths whose sibling traffic
/// goes through the cache (its per-endpoint counters grow), with the same MAC as Docker's
/// and CNI's answers; a `kill -9` and restart adopts them (a Docker endpoint also between
/// Join and dockerd's move); Leave and DeleteEndpoint, and CNI DEL, leave nothing behind.
/// Addresses: 198.51.100.0/24 (Docker), 203.0.113.0/24 (CNI).
#[test]
fn docker_and_cni_endpoints_are_veths_that_use_the_cache() {
    const NID: &str = "fa57d0c0000000000000000000000000000000000000000000000000000000aa";
    const CNI_NET: &str = "uvt-fpcni";
    assert!(
        std::path::Path::new("/usr/lib/cni/host-local").exists(),
        "/usr/lib/cni/host-local is missing: run scripts/deps.sh --test \
         (containernetworking-plugins)"
    );
    let mut w = World::with_docker_plugin(&["--fast-path", "on"]);
    let sock = w.plugin_socket("uvlan-macvlan");
    let host = w.ns("host");

    // Docker: a macvlan network, two endpoints, each joined and moved into its sandbox.
    docker(
        &w,
        &sock,
        "NetworkDriver.CreateNetwork",
        json!({
            "NetworkID": NID,
            "Options": {"com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "198.51.100.0/24",
                          "Gateway": "198.51.100.1/24"}],
            "IPv6Data": []
        }),
    );
    let docker_net = &NID[..12];
    let mut eps = Vec::new();
    for i in 0..2 {
        let eid = format!("fa57{i}{}", "0".repeat(59));
        let sb = format!("dsb{i}");
        let full = w.netns(&sb);
        let addr = format!("198.51.100.1{i}/24");
        let made = docker(
            &w,
            &sock,
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": NID, "EndpointID": eid,
                   "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""},
                   "Options": {}}),
        );
        let mac = made["Interface"]["MacAddress"]
            .as_str()
            .expect("macvlan: the driver picks the MAC")
            .to_string();
        let key = format!("/run/netns/{full}");
        let joined = docker(
            &w,
            &sock,
            "NetworkDriver.Join",
            json!({"NetworkID": NID, "EndpointID": eid, "SandboxKey": key, "Options": {}}),
        );
        let src = joined["InterfaceName"]["SrcName"]
            .as_str()
            .expect("SrcName")
            .to_string();
        let link = uvlan_system_tests::sh(
            std::process::Command::new("ip").args(["-n", &host, "-d", "-o", "link", "show", &src]),
        );
        let link = String::from_utf8_lossy(&link.stdout).into_owned();
        assert!(
            link.contains(" veth ") && link.contains(&mac),
            "Join's SrcName is a veth with the endpoint's MAC {mac}: {link}"
        );
        if i == 1 {
            // The daemon dies between Join and dockerd's move: the restart adopts the pair
            // still in its namespace (the same interface) and follows it into the sandbox.
            let before = link.split(':').next().unwrap_or_default().to_string();
            w.kill_daemon(libc::SIGKILL);
            w.start_daemon();
            let again = uvlan_system_tests::sh(
                std::process::Command::new("ip").args(["-n", &host, "-o", "link", "show", &src]),
            );
            let again = String::from_utf8_lossy(&again.stdout).into_owned();
            assert_eq!(
                again.split(':').next().unwrap_or_default(),
                before,
                "adopted, not made again: {again}\n{}",
                w.daemon_log()
            );
        }
        // What dockerd does: move it, name it eth0, address it, bring it up.
        ip_ok(&["-n", &host, "link", "set", "dev", &src, "netns", &full]);
        ip_ok(&["-n", &full, "link", "set", "dev", &src, "name", "eth0"]);
        ip_ok(&["-n", &full, "addr", "add", &addr, "dev", "eth0"]);
        ip_ok(&["-n", &full, "link", "set", "dev", "eth0", "up"]);
        eps.push((eid, sb, key, src));
    }
    assert!(
        w.ping("dsb0", "198.51.100.11", 10),
        "Docker's endpoints reach each other\n{}",
        w.daemon_log()
    );

    // CNI: an ipvlan l2 network on a parent the test made, two containers.
    ip_ok(&[
        "-n", &host, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
    ]);
    ip_ok(&["-n", &host, "link", "set", "p0", "up"]);
    let bin = w.dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let cni_bin = uvlan_system_tests::uvlan_bin().with_file_name("uvlan-cni");
    std::os::unix::fs::symlink(&cni_bin, bin.join("uvlan-ipvlan")).expect("symlink");
    std::os::unix::fs::symlink("/usr/lib/cni/host-local", bin.join("host-local")).expect("symlink");
    let ipam_dir = w.dir.join("ipam");
    // host-local hands out .10, then .11.
    let conf = || {
        json!({
            "cniVersion": "1.0.0", "name": CNI_NET, "type": "uvlan-ipvlan",
            "master": "p0", "mode": "l2",
            "ipam": {"type": "host-local", "dataDir": ipam_dir,
                     "ranges": [[{"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10",
                                  "rangeEnd": "203.0.113.11"}]]}
        })
    };
    let mut results = Vec::new();
    for i in 0..2 {
        let name = format!("cni{i}");
        w.netns(&name);
        let (ok, result) = cni(&w, "ADD", &name, &conf());
        assert!(ok, "CNI ADD: {result}\n{}", w.daemon_log());
        let (_, mac) = eth0(&w, &name);
        assert_eq!(result["interfaces"][0]["name"], "eth0", "{result}");
        assert_eq!(result["ips"][0]["address"], format!("203.0.113.1{i}/24"));
        assert_eq!(
            result["interfaces"][0]["mac"]
                .as_str()
                .map(str::to_lowercase),
            Some(mac),
            "the result reports eth0's MAC: {result}"
        );
        let links = links_of(&w, &name);
        assert!(
            links.len() == 1 && links[0].contains(" veth "),
            "CNI's eth0 is a veth: {links:?}"
        );
        results.push(result);
    }
    for (i, result) in results.iter().enumerate() {
        let mut check = conf();
        check["prevResult"] = result.clone();
        let (ok, v) = cni(&w, "CHECK", &format!("cni{i}"), &check);
        assert!(ok, "CNI CHECK: {v}");
    }

    // Both kinds through the cache; again after a kill -9 and a restart (adopted as they
    // are: the same eth0).
    let eth0s: Vec<(String, String)> = ["dsb0", "dsb1", "cni0", "cni1"]
        .iter()
        .map(|n| eth0(&w, n))
        .collect();
    for round in ["before", "after"] {
        for (net, from, to, sender) in [
            (docker_net, "dsb0", "198.51.100.11", eps[0].2.clone()),
            (CNI_NET, "cni0", "203.0.113.11", "ctr-cni0/eth0".to_string()),
        ] {
            let kinds = w.inspect(net)["UvlanWire"]["EndpointKinds"].clone();
            let kinds = kinds.as_object().cloned().unwrap_or_default();
            assert!(
                kinds.len() == 2 && kinds.values().all(|k| k == "veth+fast-path"),
                "{round} the restart: {net}: {kinds:?}"
            );
            assert!(
                w.ping(from, to, 6),
                "{round} the restart: {from} reaches {to}\n{}",
                w.daemon_log()
            );
            let (sent, _) = fast_counters(&w, net, &sender);
            let pings = w.exec(from, &format!("ping -q -c 10 -i 0.2 {to}"));
            assert!(pings.status.success(), "{}", w.daemon_log());
            let (sent_now, _) = fast_counters(&w, net, &sender);
            assert!(
                sent_now >= sent + 8,
                "{round} the restart: {from}'s frames went through the cache: {sent} → \
                 {sent_now}"
            );
        }
        if round == "before" {
            w.kill_daemon(libc::SIGKILL);
            w.start_daemon();
        }
    }
    let now: Vec<(String, String)> = ["dsb0", "dsb1", "cni0", "cni1"]
        .iter()
        .map(|n| eth0(&w, n))
        .collect();
    assert_eq!(
        now, eth0s,
        "the same eth0s (index and MAC) after the restart"
    );
    let links = host_links(&w);
    assert_eq!(
        (
            links.matches(": uvs").count(),
            links.matches(": uvv").count()
        ),
        (4, 4),
        "one TAP and one veth end per endpoint in the daemon's namespace: {links}"
    );

    // Docker's Leave, the move back, DeleteEndpoint; CNI's DEL: nothing is left.
    for (eid, sb, _, src) in &eps {
        let ep = json!({"NetworkID": NID, "EndpointID": eid});
        docker(&w, &sock, "NetworkDriver.Leave", ep.clone());
        let full = w.ns(sb);
        ip_ok(&["-n", &full, "link", "set", "dev", "eth0", "down"]);
        ip_ok(&["-n", &full, "link", "set", "dev", "eth0", "name", src]);
        ip_ok(&["-n", &full, "link", "set", "dev", src, "netns", &host]);
        docker(&w, &sock, "NetworkDriver.DeleteEndpoint", ep);
        assert_eq!(links_of(&w, sb), Vec::<String>::new());
    }
    for (i, result) in results.iter().enumerate() {
        let name = format!("cni{i}");
        let mut del = conf();
        del["prevResult"] = result.clone();
        let (ok, v) = cni(&w, "DEL", &name, &del);
        assert!(ok, "CNI DEL: {v}");
        assert_eq!(links_of(&w, &name), Vec::<String>::new());
    }
    let links = host_links(&w);
    assert!(
        !links.contains(": uvs") && !links.contains(": uvv") && !links.contains(": uvd"),
        "nothing left in the daemon's namespace: {links}"
    );
}
