//! `uvlan network connect --host`: the host's own interface on a network, with the real
//! daemon on the `uvlan_system_tests::net` LAN (parent `up0` in the daemon's `host`
//! namespace). Without it the host and the endpoints cannot reach each other (C36, C61);
//! with it they can, both ways, for ipvlan l2, ipvlan l3 and macvlan bridge; the host's
//! other routes are untouched; an endpoint connected later is reachable too; the interface
//! survives a daemon restart and goes away with `disconnect --host`. Modes where a kernel
//! shim reaches no endpoint are refused.

use uvlan_system_tests::net::{ping_all, GW_IP, PARENT};
use uvlan_system_tests::{LanOptions, World};

/// The routes of the `host` namespace, as `ip route` prints them.
fn host_routes(w: &World) -> String {
    w.ip("host", "route show")
}

/// The common scenario on network `net` (already created on the LAN), whose endpoints get
/// `e1_ip` now and `e2_ip` later, and whose host interface gets `host_ip`.
fn scenario(w: &mut World, net: &str, e1_ip: &str, e2_ip: &str, host_ip: &str) {
    let e1 = w.connect(net, "e1", &["--ip", e1_ip]);
    let host = w.ns("host");
    // Without a host interface: the kernel's rule (C36/C61).
    assert_eq!(
        ping_all(
            &[(host.clone(), e1_ip.into()), (e1.clone(), host_ip.into())],
            2
        ),
        [false, false],
        "host ↔ endpoint without a host interface"
    );
    let before = host_routes(w);
    let out = w.uvlan_ok(&["network", "connect", "--host", "--ip", host_ip, net]);
    let ifname = format!("uv-{net}");
    assert_eq!(out.trim(), ifname);
    // Routes toward the endpoint only: every route the host had is still there.
    let after = host_routes(w);
    for line in before.lines() {
        assert!(
            after.contains(line.trim()),
            "route {line:?} disturbed:\n{after}"
        );
    }
    assert!(
        after.contains(&format!("{e1_ip} dev {ifname}")),
        "no route to the endpoint:\n{after}"
    );
    let v = w.inspect(net);
    assert_eq!(v["UvlanHostInterface"]["Name"], ifname.as_str(), "{v}");
    assert_eq!(
        v["UvlanHostInterface"]["IPv4Address"],
        format!("{host_ip}/32").as_str()
    );
    assert_eq!(v["Containers"].as_object().map(|c| c.len()), Some(1), "{v}");
    assert_eq!(
        ping_all(
            &[
                (host.clone(), e1_ip.into()),
                (e1.clone(), host_ip.into()),
                (host.clone(), GW_IP.into()),
            ],
            6
        ),
        [true, true, true],
        "host → endpoint, endpoint → host interface, host → gateway"
    );
    // An endpoint connected later gets its route.
    let e2 = w.connect(net, "e2", &["--ip", e2_ip]);
    assert!(
        w.reach("host", e2_ip, 6),
        "host → an endpoint connected later"
    );
    assert!(w.reach("e2", host_ip, 6), "that endpoint → host interface");
    w.uvlan_ok(&["network", "disconnect", net, &e2]);
    assert!(
        !host_routes(w).contains(&format!("{e2_ip} dev")),
        "route to a disconnected endpoint left behind:\n{}",
        host_routes(w)
    );
    // A restart keeps it (store, recovery), and makes its routes match the endpoints again:
    // a route toward an address no endpoint holds (one that went while the daemon was down)
    // is deleted.
    w.kill_daemon(libc::SIGKILL);
    let stale = if e1_ip.starts_with("198.") {
        "198.51.100.99"
    } else {
        "192.0.2.99"
    };
    w.ip("host", &format!("route add {stale}/32 dev {ifname}"));
    w.start_daemon();
    let routes = host_routes(w);
    assert!(!routes.contains(&format!("{stale} dev")), "{routes}");
    assert!(
        routes.contains(&format!("{e1_ip} dev {ifname}")),
        "{routes}"
    );
    assert!(w.reach("host", e1_ip, 6), "host → endpoint after a restart");
    assert!(w.reach("e1", host_ip, 6), "endpoint → host after a restart");
    assert_eq!(
        w.inspect(net)["UvlanHostInterface"]["Name"],
        ifname.as_str()
    );
    // A second one is refused; removal takes the interface and its routes.
    let o = w.uvlan(&["network", "connect", "--host", net]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already has a host interface"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    w.uvlan_ok(&["network", "disconnect", "--host", net]);
    let links = w.ip("host", "-br link show");
    assert!(!links.contains(&ifname), "{links}");
    assert!(!host_routes(w).contains(&ifname));
    assert!(w.inspect(net).get("UvlanHostInterface").is_none());
    assert_eq!(
        ping_all(&[(host, e1_ip.into()), (e1, host_ip.into())], 2),
        [false, false],
        "host ↔ endpoint after disconnect --host"
    );
}

#[test]
fn ipvlan_l2_host_interface() {
    let mut w = World::new();
    let _lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d ipvlan --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} l2"
    ));
    scenario(&mut w, "l2", "192.0.2.10", "192.0.2.11", "192.0.2.200");
}

#[test]
fn ipvlan_l3_host_interface() {
    let mut w = World::new();
    let _lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d ipvlan -o ipvlan_mode=l3 --subnet 198.51.100.0/24 -o parent={PARENT} l3"
    ));
    scenario(
        &mut w,
        "l3",
        "198.51.100.10",
        "198.51.100.11",
        "198.51.100.200",
    );
}

#[test]
fn macvlan_bridge_host_interface() {
    let mut w = World::new();
    let _lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d macvlan --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} mv"
    ));
    scenario(&mut w, "mv", "192.0.2.10", "192.0.2.11", "192.0.2.200");
}

#[test]
fn modes_where_a_shim_cannot_work_are_refused() {
    let mut w = World::new();
    let _lan = w.lan(LanOptions::default());
    for (name, opts, word) in [
        (
            "mvp",
            "-d macvlan -o macvlan_mode=private",
            "macvlan private",
        ),
        ("mvv", "-d macvlan -o macvlan_mode=vepa", "reflective relay"),
        ("ivp", "-d ipvlan -o ipvlan_flag=private", "ipvlan private"),
    ] {
        w.create(&format!(
            "{opts} --subnet 192.0.2.0/24 -o parent={PARENT} {name}"
        ));
        let o = w.uvlan(&["network", "connect", "--host", name]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(word), "{name}: {err}");
        assert!(!w
            .ip("host", "-br link show")
            .contains(&format!("uv-{name}")));
        w.uvlan_ok(&["network", "rm", name]);
    }
}

/// `network create -o uvlan.host_interface=IP` makes the host interface with the network;
/// `network rm` takes it away with the network; a bad address leaves no network behind.
#[test]
fn the_create_option_makes_it_and_rm_removes_it() {
    let mut w = World::new();
    let _lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d ipvlan --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} \
         -o uvlan.host_interface=192.0.2.200 opt"
    ));
    assert_eq!(
        w.inspect("opt")["UvlanHostInterface"]["IPv4Address"],
        "192.0.2.200/32"
    );
    let e1 = w.connect("opt", "e1", &["--ip", "192.0.2.10"]);
    assert_eq!(
        ping_all(
            &[
                (w.ns("host"), "192.0.2.10".into()),
                (e1.clone(), "192.0.2.200".into())
            ],
            6
        ),
        [true, true]
    );
    w.uvlan_ok(&["network", "disconnect", "opt", &e1]);
    w.uvlan_ok(&["network", "rm", "opt"]);
    assert!(!w.ip("host", "-br link show").contains("uv-opt"));
    let o = w.uvlan(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet",
        "192.0.2.0/24",
        "-o",
        &format!("parent={PARENT}"),
        "-o",
        "uvlan.host_interface=198.51.100.1",
        "bad",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("uvlan.host_interface=198.51.100.1"), "{err}");
    let ls = w.uvlan_ok(&["network", "ls"]);
    assert!(!ls.contains("bad"), "{ls}");
}
