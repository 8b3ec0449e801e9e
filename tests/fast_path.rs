//! The fast path through the real daemon (`uvlan daemon --fast-path on`): two veth endpoints
//! of one network reach each other through the kernel cache (its per-endpoint counters in
//! `uvlan stats` grow), `network inspect` names the endpoint kind, and `network disconnect`
//! invalidates: afterwards not one frame goes through the cache, and nothing is left in the
//! daemon's namespace. Namespaces and addresses (192.0.2.0/24) are the test's own.

use uvlan_system_tests::World;

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
        w.uvlan_ok(&[
            "network",
            "create",
            "-d",
            driver,
            "--internal",
            "--subnet",
            "192.0.2.0/24",
            "-o",
            opt,
            &net,
        ]);
        let a = w.netns(&format!("{driver}a"));
        let b = w.netns(&format!("{driver}b"));
        w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", &net, &a]);
        w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.20", &net, &b]);
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

/// `kill -9` with live traffic: the programs hang on `bpf_link`s the daemon owned, so they
/// detach with it and nothing is forwarded any more (no stale cache); a restart adopts the
/// veth pairs as they are (same interface, MAC and addresses, and what the user added) with
/// a new TAP each, and the cache carries the endpoints' frames again. A restart with the
/// fast path off makes them TAP endpoints (same MAC and addresses), and traffic goes on.
#[test]
fn kill_9_leaves_no_stale_cache_and_a_restart_recovers() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    w.uvlan_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--internal",
        "--subnet",
        "192.0.2.0/24",
        "fpk9",
    ]);
    let a = w.netns("k9a");
    let b = w.netns("k9b");
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "fpk9", &a]);
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.20", "fpk9", &b]);
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
    w.uvlan_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--internal",
        "--subnet",
        "192.0.2.0/24",
        "-o",
        "uvlan.fast_path=false",
        "fpoff",
    ]);
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
    w.uvlan_ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--internal",
        "--subnet",
        "192.0.2.0/24",
        "-o",
        "uvlan.fast_path=true",
        "fpon",
    ]);
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
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    w.uvlan_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--internal",
        "--subnet",
        "192.0.2.0/24",
        "fpcap",
    ]);
    let a = w.netns("capa");
    let b = w.netns("capb");
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "fpcap", &a]);
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.20", "fpcap", &b]);
    // The cache learns a → b and b → a.
    let pings = w.exec("capa", "ping -q -c 5 -i 0.2 192.0.2.20");
    assert!(pings.status.success(), "{}", w.daemon_log());
    let warm = fast_counters(&w, "fpcap", &a).0;
    assert!(warm > 0, "the cache carried a's frames before the capture");

    // The capture runs until it is interrupted; 5 pings make 20 records (each request and
    // reply inbound at its sender, outbound at its receiver).
    let mut cap = Command::new(uvlan_system_tests::uvlan_bin())
        .args(["capture", "fpcap"])
        .env("UVLAN_SOCKET", w.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uvlan capture");
    std::thread::sleep(Duration::from_millis(500));
    let pings = w.exec("capa", "ping -q -c 5 -i 0.2 192.0.2.20");
    let during = fast_counters(&w, "fpcap", &a).0;
    // Interrupted as a user's Ctrl-C would.
    let _ = Command::new("kill")
        .args(["-INT", &cap.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && cap.try_wait().is_ok_and(|s| s.is_none()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cap.wait_with_output().unwrap();
    assert!(pings.status.success(), "{}", w.daemon_log());
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let captured: u64 = err
        .split(" frames captured")
        .next()
        .and_then(|h| h.rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {err}\n{text}"));
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
    w.uvlan_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--internal",
        "--subnet",
        "192.0.2.0/24",
        "fpmtu",
    ]);
    let a = w.netns("mtua");
    let b = w.netns("mtub");
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "fpmtu", &a]);
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.20", "fpmtu", &b]);
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

/// The host interface does not serve fast-path endpoints yet: it is refused on a network
/// that has some (nothing is made), and endpoints connected to a network that has one are
/// TAP endpoints.
#[test]
fn a_host_interface_and_fast_path_endpoints_do_not_mix_yet() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    for (net, subnet) in [("fph1", "192.0.2.0/24"), ("fph2", "198.51.100.0/24")] {
        w.uvlan_ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--internal",
            "--subnet",
            subnet,
            net,
        ]);
    }
    let a = w.netns("fpha");
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "fph1", &a]);
    let out = w.uvlan(&["network", "connect", "--host", "--ip", "192.0.2.2", "fph1"]);
    assert!(!out.status.success(), "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fast-path"), "{err}");
    assert!(
        !host_links(&w).contains("uv-fph1"),
        "nothing was made: {}",
        host_links(&w)
    );
    // A network with a host interface: its endpoints are TAPs.
    w.uvlan_ok(&[
        "network",
        "connect",
        "--host",
        "--ip",
        "198.51.100.2",
        "fph2",
    ]);
    let b = w.netns("fphb");
    w.uvlan_ok(&["network", "connect", "--ip", "198.51.100.20", "fph2", &b]);
    let inspect = w.inspect("fph2");
    let kinds = inspect["UvlanWire"]["EndpointKinds"].to_string();
    assert!(!kinds.contains("veth"), "{kinds}");
    let ping = w.exec("host", "ping -q -c 3 -i 0.2 198.51.100.20");
    assert!(ping.status.success(), "{}", w.daemon_log());
}
