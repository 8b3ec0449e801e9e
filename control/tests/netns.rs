//! Root tests for namespace and netlink plumbing. Every test creates its own
//! `uvt-<pid>-<tag>` namespaces (with the API under test) and deletes them on drop, also
//! when an assertion fails. Results are checked with iproute2 and real traffic.

use std::net::IpAddr;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use uvlan_control::netns::{
    self, AddrEvent, AddrGenMode, AddrOptions, AddrWatcher, NeighState, Netns, NetnsError,
    OperState, Route, RouteKind, Rtnl,
};

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
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn must(cmd: &[&str]) -> String {
    run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// A namespace created with `Netns::create`, deleted on drop.
struct TestNs {
    name: String,
    ns: Option<Netns>,
}

impl TestNs {
    fn new(tag: &str) -> TestNs {
        let name = format!("uvt-{}-{tag}", std::process::id());
        assert!(name.len() <= 15);
        let _ = Netns::delete(&name);
        let ns = Netns::create(&name).expect("create namespace");
        TestNs { name, ns: Some(ns) }
    }

    fn ns(&self) -> &Netns {
        self.ns.as_ref().unwrap()
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "-n", &self.name];
        cmd.extend_from_slice(args);
        must(&cmd)
    }

    fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = vec!["ip", "netns", "exec", &self.name];
        cmd.extend_from_slice(args);
        run(&cmd)
    }

    fn rtnl(&self) -> Rtnl {
        Rtnl::open(self.ns()).expect("netlink socket in namespace")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.ns = None;
        if Netns::delete(&self.name).is_err() {
            let _ = run(&["ip", "netns", "del", &self.name]);
        }
    }
}

fn next_event(rx: &Receiver<AddrEvent>, within: Duration) -> AddrEvent {
    rx.recv_timeout(within)
        .unwrap_or_else(|e| panic!("no watcher event within {within:?}: {e}"))
}

#[test]
fn namespaces_are_created_opened_and_deleted() {
    let name = format!("uvt-{}-n1", std::process::id());
    let _ = Netns::delete(&name);
    {
        let t = TestNs {
            name: name.clone(),
            ns: Some(Netns::create(&name).expect("create")),
        };
        assert!(Netns::exists(&name));
        assert!(must(&["ip", "netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str())));
        assert!(Netns::list().unwrap().contains(&name));
        // Same namespace by name and by path; distinct from ours.
        let by_name = Netns::open(&name).unwrap();
        let by_path = Netns::open(&format!("/run/netns/{name}")).unwrap();
        let here = Netns::current().unwrap();
        assert_eq!(by_name.inode(), t.ns().inode());
        assert_eq!(by_path.inode(), t.ns().inode());
        assert_ne!(here.inode(), t.ns().inode());
        assert_eq!(by_name.name(), Some(name.as_str()));
        // run() executes inside it, and leaves the caller's thread alone.
        let inner = t
            .ns()
            .run(|| {
                std::fs::metadata("/proc/thread-self/ns/net").map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.ino()
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(inner, t.ns().inode());
        assert_eq!(Netns::current().unwrap().inode(), here.inode());
        // Measured: inside the thread, /proc/thread-self/net shows the thread's namespace
        // (only lo), while /proc/self/net still shows the process's (thread-group leader's).
        let outside = std::fs::read_to_string("/proc/self/net/dev").unwrap();
        let (self_view, thread_view) = t
            .ns()
            .run(|| {
                (
                    std::fs::read_to_string("/proc/self/net/dev").unwrap(),
                    std::fs::read_to_string("/proc/thread-self/net/dev").unwrap(),
                )
            })
            .unwrap();
        let devs = |s: &str| -> Vec<String> {
            s.lines()
                .skip(2)
                .filter_map(|l| l.split(':').next().map(|d| d.trim().to_string()))
                .collect()
        };
        assert_eq!(devs(&self_view), devs(&outside));
        assert_eq!(devs(&thread_view), vec!["lo".to_string()]);
        // A second create of the same name is refused.
        assert!(matches!(
            Netns::create(&name),
            Err(NetnsError::Exists { .. })
        ));
        // A process's namespace opens by /proc path.
        let me = Netns::open("/proc/self/ns/net").unwrap();
        assert_eq!(me.inode(), here.inode());
        // Not a namespace file.
        assert!(matches!(
            Netns::open("/proc/self/status"),
            Err(NetnsError::NotANetns { .. })
        ));
    }
    assert!(!Netns::exists(&name));
    assert!(!must(&["ip", "netns", "list"]).contains(&name));
    let e = Netns::open(&name).unwrap_err();
    assert!(matches!(e, NetnsError::NotFound { .. }));
    assert!(
        e.to_string().contains(&format!("ip netns add {name}")),
        "{e}"
    );
    assert!(matches!(
        Netns::delete(&name),
        Err(NetnsError::NotFound { .. })
    ));
}

#[test]
fn links_addresses_routes_and_ping_between_namespaces() {
    let a = TestNs::new("la");
    let b = TestNs::new("lb");
    a.ip(&[
        "link", "add", "uvtva", "type", "veth", "peer", "name", "uvtvb", "netns", &b.name,
    ]);
    let mut ra = a.rtnl();
    let mut rb = b.rtnl();

    // Rename both ends to the next free ethN (as Docker names endpoints).
    let la = ra.link_get("uvtva").unwrap();
    assert_eq!(la.kind.as_deref(), Some("veth"));
    assert!(!la.is_up());
    assert_eq!(ra.next_free_name("eth").unwrap(), "eth0");
    ra.link_rename(la.index, "eth0").unwrap();
    let lb = rb.link_get("uvtvb").unwrap();
    rb.link_rename(lb.index, "eth0").unwrap();
    assert_eq!(ra.next_free_name("eth").unwrap(), "eth1");
    assert!(matches!(
        ra.link_get("uvtva"),
        Err(NetnsError::LinkNotFound { .. })
    ));

    let mac_a = [0x02, 0, 0, 0, 0x0a, 0x01];
    let mac_b = [0x02, 0, 0, 0, 0x0b, 0x01];
    ra.link_set_mac(la.index, mac_a).unwrap();
    rb.link_set_mac(lb.index, mac_b).unwrap();
    ra.link_set_mtu(la.index, 1400).unwrap();
    rb.link_set_mtu(lb.index, 1400).unwrap();
    ra.link_set_addr_gen_mode(la.index, AddrGenMode::Random)
        .unwrap();
    for (r, idx) in [(&mut ra, la.index), (&mut rb, lb.index)] {
        r.link_set_up(idx, true).unwrap();
    }
    let lo = ra.link_get("lo").unwrap();
    ra.link_set_up(lo.index, true).unwrap();
    let lo_b = rb.link_get("lo").unwrap();
    rb.link_set_up(lo_b.index, true).unwrap();

    let info = ra.link_get("eth0").unwrap();
    assert_eq!(info.index, la.index);
    assert_eq!(info.mac, Some(mac_a));
    assert_eq!(info.mtu, 1400);
    assert!(info.is_up());
    assert_eq!(info.addr_gen_mode, Some(AddrGenMode::Random));
    let shown = a.ip(&["-d", "link", "show", "eth0"]);
    assert!(shown.contains("02:00:00:00:0a:01"), "{shown}");
    assert!(shown.contains("mtu 1400"), "{shown}");
    assert!(shown.contains("addrgenmode random"), "{shown}");
    // Both ends up: operstate becomes UP.
    let deadline = Instant::now() + Duration::from_secs(3);
    while ra.link_get("eth0").unwrap().operstate != OperState::Up {
        assert!(Instant::now() < deadline, "veth never reached operstate UP");
        std::thread::sleep(Duration::from_millis(50));
    }

    // NOARP off and on again.
    ra.link_set_arp(la.index, false).unwrap();
    assert!(a.ip(&["link", "show", "eth0"]).contains("NOARP"));
    assert!(ra.link_get("eth0").unwrap().is_noarp());
    ra.link_set_arp(la.index, true).unwrap();
    assert!(!a.ip(&["link", "show", "eth0"]).contains("NOARP"));

    // Addresses.
    let nodad = AddrOptions { nodad: true };
    ra.addr_add(la.index, ip("192.0.2.1"), 24, AddrOptions::default())
        .unwrap();
    ra.addr_add(la.index, ip("2001:db8::1"), 64, nodad).unwrap();
    rb.addr_add(lb.index, ip("192.0.2.2"), 24, AddrOptions::default())
        .unwrap();
    rb.addr_add(lb.index, ip("2001:db8::2"), 64, nodad).unwrap();
    // Target reachable only through B: exercises A's default route.
    rb.addr_add(lo_b.index, ip("203.0.113.9"), 32, AddrOptions::default())
        .unwrap();
    let dup = ra.addr_add(la.index, ip("192.0.2.1"), 24, AddrOptions::default());
    assert!(
        matches!(dup, Err(NetnsError::Netlink { ref source, .. }) if source.raw_os_error() == Some(libc::EEXIST)),
        "{dup:?}"
    );
    let shown = a.ip(&["addr", "show", "eth0"]);
    assert!(
        shown.contains("inet 192.0.2.1/24 brd 192.0.2.255"),
        "{shown}"
    );
    assert!(shown.contains("inet6 2001:db8::1/64"), "{shown}");
    let line = shown
        .lines()
        .find(|l| l.contains("2001:db8::1/64"))
        .unwrap();
    assert!(
        line.contains("nodad") && !line.contains("tentative"),
        "{line}"
    );
    let listed = ra.addr_list(Some(la.index)).unwrap();
    assert!(listed
        .iter()
        .any(|x| x.addr == ip("192.0.2.1") && x.prefix_len == 24));
    assert!(listed
        .iter()
        .any(|x| x.addr == ip("2001:db8::1") && x.prefix_len == 64));
    assert!(listed.iter().all(|x| x.ifindex == la.index));

    // Routes: A default via B (v4, v6); B `default dev eth0` (ipvlan L3 style).
    ra.route_add(&Route::default_via(ip("192.0.2.2"), Some(la.index)))
        .unwrap();
    ra.route_add(&Route::default_via(ip("2001:db8::2"), Some(la.index)))
        .unwrap();
    rb.route_add(&Route::default_dev(false, lb.index)).unwrap();
    rb.route_add(&Route::default_dev(true, lb.index)).unwrap();
    let r4 = a.ip(&["route"]);
    assert!(r4.contains("default via 192.0.2.2 dev eth0"), "{r4}");
    let r6 = a.ip(&["-6", "route"]);
    assert!(r6.contains("default via 2001:db8::2 dev eth0"), "{r6}");
    let rb4 = b.ip(&["route"]);
    assert!(rb4.contains("default dev eth0 scope link"), "{rb4}");
    let rb6 = b.ip(&["-6", "route"]);
    assert!(rb6.contains("default dev eth0"), "{rb6}");
    let listed = ra.route_list(false).unwrap();
    assert!(listed
        .iter()
        .any(|r| r.is_default() && r.gateway == Some(ip("192.0.2.2")) && r.oif == Some(la.index)));
    assert!(rb
        .route_list(true)
        .unwrap()
        .iter()
        .any(|r| r.is_default() && r.gateway.is_none() && r.oif == Some(lb.index)));

    // Traffic: on-link v4 and v6, and off-link through the default route.
    for target in ["192.0.2.2", "2001:db8::2", "203.0.113.9"] {
        a.exec(&["ping", "-c", "1", "-W", "2", target])
            .unwrap_or_else(|e| panic!("ping {target}: {e}"));
    }

    // Deleting routes and addresses.
    ra.route_del(&Route::default_via(ip("192.0.2.2"), Some(la.index)))
        .unwrap();
    assert!(!a.ip(&["route"]).contains("default"));
    assert!(a
        .exec(&["ping", "-c", "1", "-W", "1", "203.0.113.9"])
        .is_err());
    ra.addr_del(la.index, ip("2001:db8::1"), 64).unwrap();
    assert!(!a.ip(&["addr", "show", "eth0"]).contains("2001:db8::1"));
    let gone = ra.addr_del(la.index, ip("2001:db8::1"), 64);
    assert!(gone.is_err());

    // Sysctls are written inside the namespace (checked from inside with sysctl(8)). The
    // interface names used here do not exist in the root namespace, so a write that went
    // to the wrong namespace would fail instead of touching the host.
    a.ip(&[
        "link", "add", "uvts0", "type", "veth", "peer", "name", "uvts1",
    ]);
    netns::set_arp_notify(a.ns(), "uvts0", true).unwrap();
    netns::set_accept_dad(a.ns(), "uvts0", 0).unwrap();
    assert_eq!(
        a.exec(&["sysctl", "-n", "net.ipv4.conf.uvts0.arp_notify"])
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        a.exec(&["sysctl", "-n", "net.ipv6.conf.uvts0.accept_dad"])
            .unwrap()
            .trim(),
        "0"
    );
    assert_eq!(
        netns::sysctl_read(a.ns(), "net/ipv4/conf/uvts0/arp_notify").unwrap(),
        "1"
    );
    assert!(std::fs::metadata("/proc/sys/net/ipv4/conf/uvts0").is_err());
    netns::set_ipv6_disabled(a.ns(), "uvts0", true).unwrap();
    assert_eq!(
        a.exec(&["sysctl", "-n", "net.ipv6.conf.uvts0.disable_ipv6"])
            .unwrap()
            .trim(),
        "1"
    );
    a.ip(&["link", "set", "uvts0", "up"]);
    a.ip(&["link", "set", "uvts1", "up"]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!a.ip(&["addr", "show", "uvts0"]).contains("inet6"));
    assert!(a.ip(&["addr", "show", "uvts1"]).contains("inet6 fe80"));
    let missing = netns::set_arp_notify(a.ns(), "nosuchif", true);
    assert!(
        matches!(missing, Err(NetnsError::Sysctl { .. })),
        "{missing:?}"
    );

    // Delete a link.
    ra.link_set_up(la.index, false).unwrap();
    ra.link_delete(la.index).unwrap();
    assert!(matches!(
        ra.link_get("eth0"),
        Err(NetnsError::LinkNotFound { .. })
    ));
}

#[test]
fn watcher_reports_addresses_and_link_state() {
    let a = TestNs::new("wa");
    a.ip(&[
        "link", "add", "uvtw0", "type", "veth", "peer", "name", "uvtw1",
    ]);
    a.ip(&["addr", "add", "198.51.100.7/24", "dev", "uvtw0"]);
    // The peer up gives uvtw0 a carrier once it is up (IPv6 link-local needs it).
    a.ip(&["link", "set", "uvtw1", "up"]);
    let idx = a.rtnl().link_get("uvtw0").unwrap().index;

    let (watcher, rx) = AddrWatcher::channel(a.ns(), idx).unwrap();
    assert!(watcher.is_running());
    // Initial state: down, one address.
    assert_eq!(
        next_event(&rx, Duration::from_secs(1)),
        AddrEvent::LinkDown { ifindex: idx }
    );
    match next_event(&rx, Duration::from_secs(1)) {
        AddrEvent::AddrAdded(x) => {
            assert_eq!(
                (x.addr, x.prefix_len, x.ifindex),
                (ip("198.51.100.7"), 24, idx)
            )
        }
        other => panic!("{other:?}"),
    }

    let t0 = Instant::now();
    a.ip(&["addr", "add", "192.0.2.5/24", "dev", "uvtw0"]);
    match next_event(&rx, Duration::from_secs(1)) {
        AddrEvent::AddrAdded(x) => assert_eq!((x.addr, x.prefix_len), (ip("192.0.2.5"), 24)),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(1));

    a.ip(&["addr", "add", "2001:db8::5/64", "dev", "uvtw0"]);
    match next_event(&rx, Duration::from_secs(1)) {
        AddrEvent::AddrAdded(x) => {
            assert_eq!((x.addr, x.prefix_len), (ip("2001:db8::5"), 64));
        }
        other => panic!("{other:?}"),
    }
    // Another link's address is not reported.
    a.ip(&["addr", "add", "192.0.2.6/24", "dev", "uvtw1"]);

    a.ip(&["link", "set", "uvtw0", "up"]);
    // Bringing it up also creates an fe80:: link-local (possibly later): wait for LinkUp.
    // (linkwatch may take up to a second to report the carrier that triggers it).
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut saw_up = false;
    let mut saw_ll = false;
    while Instant::now() < deadline && !(saw_up && saw_ll) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(AddrEvent::LinkUp { ifindex }) => {
                assert_eq!(ifindex, idx);
                saw_up = true;
            }
            Ok(AddrEvent::AddrAdded(x)) => {
                assert_ne!(x.addr, ip("192.0.2.6"), "address of another link reported");
                if let IpAddr::V6(v6) = x.addr {
                    saw_ll |= v6.segments()[0] == 0xfe80;
                }
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    assert!(saw_up, "LinkUp not seen");
    assert!(
        saw_ll,
        "IPv6 link-local not seen (spec §5: ipvlan learns it too)"
    );

    a.ip(&["addr", "del", "192.0.2.5/24", "dev", "uvtw0"]);
    loop {
        match next_event(&rx, Duration::from_secs(1)) {
            AddrEvent::AddrRemoved(x) => {
                assert_eq!(x.addr, ip("192.0.2.5"));
                break;
            }
            AddrEvent::AddrAdded(x) => assert_ne!(x.addr, ip("192.0.2.6")),
            other => panic!("{other:?}"),
        }
    }
    a.ip(&["link", "set", "uvtw0", "down"]);
    loop {
        match next_event(&rx, Duration::from_secs(1)) {
            AddrEvent::LinkDown { ifindex } => {
                assert_eq!(ifindex, idx);
                break;
            }
            // Going down removes the IPv6 addresses.
            AddrEvent::AddrRemoved(x) => assert!(x.addr.is_ipv6(), "{x:?}"),
            other => panic!("{other:?}"),
        }
    }
    a.ip(&["link", "del", "uvtw0"]);
    loop {
        match next_event(&rx, Duration::from_secs(1)) {
            AddrEvent::LinkRemoved { ifindex } => {
                assert_eq!(ifindex, idx);
                break;
            }
            AddrEvent::AddrRemoved(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let t = Instant::now();
    drop(watcher);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "watcher stops promptly"
    );

    // A bad ifindex is reported at start.
    assert!(matches!(
        AddrWatcher::channel(a.ns(), 999_999),
        Err(NetnsError::LinkNotFound { .. })
    ));
}

#[test]
fn route_get_and_neighbours_in_a_namespace() {
    let a = TestNs::new("ra");
    let b = TestNs::new("rb");
    a.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name,
    ]);
    for (ns, v4, v6) in [
        (&a, "192.0.2.1/24", "2001:db8::1/64"),
        (&b, "192.0.2.2/24", "2001:db8::2/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", "eth0"]);
        ns.ip(&["addr", "add", v6, "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    a.ip(&["route", "add", "default", "via", "192.0.2.2"]);
    let mut ra = a.rtnl();
    let eth0 = ra.link_get("eth0").unwrap().index;
    let b_mac = b.rtnl().link_get("eth0").unwrap().mac.unwrap();

    let off = ra
        .route_get(ip("198.51.100.1"), Some(eth0))
        .unwrap()
        .expect("route via default");
    assert_eq!(off.kind, RouteKind::Unicast);
    assert_eq!(off.gateway, Some(ip("192.0.2.2")));
    assert_eq!(off.oif, Some(eth0));
    assert_eq!(off.prefsrc, Some(ip("192.0.2.1")));
    let on = ra.route_get(ip("192.0.2.2"), None).unwrap().unwrap();
    assert_eq!(
        (on.kind, on.gateway, on.oif),
        (RouteKind::Unicast, None, Some(eth0))
    );
    let local = ra.route_get(ip("192.0.2.1"), None).unwrap().unwrap();
    assert_eq!(local.kind, RouteKind::Local);
    let bcast = ra.route_get(ip("192.0.2.255"), None).unwrap().unwrap();
    assert_eq!(bcast.kind, RouteKind::Broadcast);
    let on6 = ra
        .route_get(ip("2001:db8::2"), Some(eth0))
        .unwrap()
        .unwrap();
    assert_eq!((on6.kind, on6.gateway), (RouteKind::Unicast, None));
    // No IPv6 default route in A: unreachable.
    assert_eq!(ra.route_get(ip("2001:db8:ffff::1"), None).unwrap(), None);
    // B has no default route at all.
    assert_eq!(b.rtnl().route_get(ip("203.0.113.1"), None).unwrap(), None);

    // Neighbours: none yet in a fresh namespace; resolution fills them in.
    assert_eq!(ra.neigh_get(eth0, ip("192.0.2.2")).unwrap(), None);
    for target in ["192.0.2.2", "2001:db8::2"] {
        ra.neigh_resolve(eth0, ip(target)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let n = ra.neigh_get(eth0, ip(target)).unwrap();
            if let Some(n) = n.filter(|n| n.state.is_usable()) {
                assert_eq!(n.mac, Some(b_mac), "{target}");
                assert_eq!(n.state, NeighState::Reachable, "{target}");
                assert_eq!(n.ip, ip(target));
                break;
            }
            assert!(Instant::now() < deadline, "{target} never resolved");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Resolving an absent host leaves an incomplete, then failed, entry.
    ra.neigh_resolve(eth0, ip("192.0.2.99")).unwrap();
    let n = ra
        .neigh_get(eth0, ip("192.0.2.99"))
        .unwrap()
        .expect("entry");
    assert!(
        matches!(n.state, NeighState::Incomplete | NeighState::Failed),
        "{n:?}"
    );
    assert_eq!(n.mac, None);
    let neigh = a.ip(&["neigh", "show", "dev", "eth0"]);
    assert!(neigh.contains("192.0.2.2 lladdr"), "{neigh}");
}

/// The daemon's endpoint flow: a TAP created inside the namespace (dataplane), then named,
/// addressed and routed through this module, the TAP fd following the rename.
#[test]
fn tap_endpoint_is_configured_through_netlink() {
    use uvlan_dataplane::port::tap::{Tap, TapOptions};
    let a = TestNs::new("te");
    let path = std::path::PathBuf::from(format!("/run/netns/{}", a.name));
    let tap = Tap::create_in_netns(
        &path,
        &TapOptions {
            name: Some("uvttmp0".into()),
            ..TapOptions::default()
        },
    )
    .expect("TAP in namespace");
    let mut r = a.rtnl();
    let link = r.link_get("uvttmp0").unwrap();
    assert_eq!(link.index, tap.ifindex());
    assert_eq!(link.kind.as_deref(), Some("tun"));
    let name = r.next_free_name("eth").unwrap();
    assert_eq!(name, "eth0");
    r.link_rename(link.index, &name).unwrap();
    assert_eq!(tap.name().unwrap(), "eth0", "TUNGETIFF follows the rename");
    let mac = [0x02, 0x42, 0xc0, 0x00, 0x02, 0x0a];
    r.link_set_mac(link.index, mac).unwrap();
    r.link_set_mtu(link.index, 1400).unwrap();
    r.link_set_addr_gen_mode(link.index, AddrGenMode::Random)
        .unwrap();
    r.link_set_up(link.index, true).unwrap();
    r.addr_add(link.index, ip("192.0.2.10"), 24, AddrOptions::default())
        .unwrap();
    r.route_add(&Route::default_via(ip("192.0.2.1"), Some(link.index)))
        .unwrap();
    let l = r.link_get("eth0").unwrap();
    assert_eq!((l.mac, l.mtu, l.is_up()), (Some(mac), 1400, true));
    assert!(l.is_lower_up(), "TAP carrier is on while the fd is open");
    let shown = a.ip(&["-d", "link", "show", "eth0"]);
    assert!(shown.contains("tun type tap"), "{shown}");
    assert!(a.ip(&["route"]).contains("default via 192.0.2.1 dev eth0"));
    assert!(r.link_get("uvttmp0").is_err());
}

#[test]
fn tap_alias_and_ipv4_settings_through_netlink() {
    use uvlan_dataplane::port::tap::{Tap, TapOptions};
    let a = TestNs::new("al");
    let b = TestNs::new("al2");
    let path = std::path::PathBuf::from(format!("/run/netns/{}", a.name));
    let tap = Tap::create_in_netns(
        &path,
        &TapOptions {
            name: Some("uvtal0".into()),
            persist: true,
            ..TapOptions::default()
        },
    )
    .expect("TAP in namespace");
    let mut r = a.rtnl();
    let idx = tap.ifindex();
    assert_eq!(r.link_get_by_index(idx).unwrap().alias, None);
    r.link_set_alias(idx, "uvlan:abc@123").unwrap();
    assert_eq!(
        r.link_get_by_index(idx).unwrap().alias.as_deref(),
        Some("uvlan:abc@123")
    );
    assert!(r.link_set_alias(idx, &"x".repeat(256)).is_err());
    // arp_notify through IFLA_INET_CONF, read back through /proc/sys inside.
    r.link_set_inet_conf(idx, &[(netns::IPV4_DEVCONF_ARP_NOTIFY, 1)])
        .unwrap();
    assert_eq!(
        netns::sysctl_read(a.ns(), "net/ipv4/conf/uvtal0/arp_notify").unwrap(),
        "1"
    );
    r.link_set_inet_conf(idx, &[(netns::IPV4_DEVCONF_ARP_NOTIFY, 0)])
        .unwrap();
    assert_eq!(
        netns::sysctl_read(a.ns(), "net/ipv4/conf/uvtal0/arp_notify").unwrap(),
        "0"
    );
    // The alias follows the device into another namespace and through a rename.
    a.ip(&["link", "set", "dev", "uvtal0", "netns", &b.name]);
    b.ip(&["link", "set", "dev", "uvtal0", "name", "eth7"]);
    let moved = b.rtnl().link_get("eth7").unwrap();
    assert_eq!(moved.alias.as_deref(), Some("uvlan:abc@123"));
    let _ = tap.set_persist(false);
}
