//! IPv6-only networks (`uvlan network create --ipv4=false --ipv6`, Docker 28's `--ipv4=false`)
//! with real stacks in namespaces: ipvlan l2, ipvlan l3 and macvlan bridge endpoints get an
//! IPv6 address and no IPv4 one, reach each other with `ping -6`, inspect says
//! `"EnableIPv4": false`; `--ip` on such a network and the create refusals leave nothing.
//! The same with the fast path (`uvlan daemon --fast-path on`): the kernel cache keys the
//! whole IPv6 destination, so the pings go through it. On the wire (the standard test LAN,
//! parent `up0`), a non-internal IPv6-only network's endpoints get IPv6 default routes only
//! and reach the LAN's gateway. Namespaces, links and addresses (2001:db8::/32) are the
//! test's own.

use serde_json::Value;
use uvlan_system_tests::capture::Capture;
use uvlan_system_tests::net::{GW_IP6, PARENT};
use uvlan_system_tests::{LanOptions, World};

const NETWORKS: [(&str, &str, &str); 3] = [
    ("v6l2", "ipvlan", "ipvlan_mode=l2"),
    ("v6l3", "ipvlan", "ipvlan_mode=l3"),
    ("v6mv", "macvlan", "macvlan_mode=bridge"),
];

/// Output of a shell command in test namespace `name`, stdout only.
fn out(w: &World, name: &str, cmd: &str) -> String {
    String::from_utf8_lossy(&w.exec(name, cmd).stdout).into_owned()
}

/// The endpoint's IPv6 address (without its length) as inspect shows it.
fn v6_of(inspect: &Value, ns: &str) -> String {
    let c = inspect["Containers"]
        .as_object()
        .expect("Containers")
        .values()
        .find(|c| c["Name"].as_str().is_some_and(|n| n.ends_with(ns)))
        .unwrap_or_else(|| panic!("no endpoint {ns} in {inspect:#}"));
    assert_eq!(c["IPv4Address"], "", "no IPv4 address: {c}");
    let a = c["IPv6Address"].as_str().expect("IPv6Address");
    a.split('/').next().unwrap_or_default().to_string()
}

/// Creates the IPv6-only network `net` on 2001:db8:`n`::/64 and checks what inspect says.
fn create(w: &World, net: &str, driver: &str, opt: &str, n: usize) -> Value {
    let subnet = format!("2001:db8:{n}::/64");
    w.uvlan_ok(&[
        "network",
        "create",
        "-d",
        driver,
        "--internal",
        "--ipv4=false",
        "--ipv6",
        "--subnet",
        &subnet,
        "-o",
        opt,
        net,
    ]);
    let v = w.inspect(net);
    assert_eq!(v["EnableIPv4"], false, "{v:#}");
    assert_eq!(v["EnableIPv6"], true, "{v:#}");
    let config = v["IPAM"]["Config"].as_array().expect("IPAM.Config");
    assert_eq!(config.len(), 1, "only the IPv6 subnet: {config:?}");
    assert_eq!(config[0]["Subnet"], subnet.as_str());
    v
}

/// Connects two endpoints, checks their addresses and routes, pings both ways; returns the
/// namespaces' short names and full names.
fn two_endpoints(w: &mut World, net: &str) -> [(String, String); 2] {
    let a = format!("{net}a");
    let b = format!("{net}b");
    let fa = w.netns(&a);
    let fb = w.netns(&b);
    w.uvlan_ok(&["network", "connect", net, &fa]);
    w.uvlan_ok(&["network", "connect", net, &fb]);
    let v = w.inspect(net);
    let (ipa, ipb) = (v6_of(&v, &fa), v6_of(&v, &fb));
    for (ns, ip) in [(&a, &ipa), (&b, &ipb)] {
        let v4 = out(w, ns, "ip -4 -o addr show dev eth0");
        assert!(v4.trim().is_empty(), "{net}: no IPv4 address on eth0: {v4}");
        let v4routes = out(w, ns, "ip -4 route show");
        assert!(
            v4routes.trim().is_empty(),
            "{net}: no IPv4 route: {v4routes}"
        );
        let v6 = out(w, ns, "ip -6 -o addr show dev eth0");
        assert!(
            v6.contains(&format!(" {ip}/64 ")),
            "{net}: {ip} on eth0: {v6}"
        );
        assert!(v6.contains(" fe80:"), "{net}: a link-local address: {v6}");
    }
    assert!(w.ping(&a, &ipb, 5), "{net}: a -> b\n{}", w.daemon_log());
    assert!(w.ping(&b, &ipa, 5), "{net}: b -> a\n{}", w.daemon_log());
    [(a, fa), (b, fb)]
}

#[test]
fn ipv6_only_endpoints_reach_each_other() {
    let mut w = World::new();
    for (i, (net, driver, opt)) in NETWORKS.into_iter().enumerate() {
        create(&w, net, driver, opt, i + 1);
        let [(a, _), _] = two_endpoints(&mut w, net);

        // --ip on a network without IPv4: Docker 28's text, and nothing is left behind.
        let c = format!("{net}c");
        let fc = w.netns(&c);
        let before = w.inspect(net)["Containers"].clone();
        let o = w.uvlan(&["network", "connect", "--ip", "192.0.2.5", net, &fc]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(
                "user specified IP address is supported only when connecting to networks \
                 with user configured subnets"
            ),
            "{err}"
        );
        assert_eq!(w.inspect(net)["Containers"], before);
        let links = out(&w, &c, "ip -o link show");
        assert!(!links.contains("eth0"), "no interface left: {links}");

        // --ip6 works as on any network.
        let static6 = format!("2001:db8:{}::99", i + 1);
        w.uvlan_ok(&["network", "connect", "--ip6", &static6, net, &fc]);
        assert!(w.ping(&a, &static6, 5), "{net}: a -> c ({static6})");
    }

    // Refusals: neither family; an IPv4 subnet with --ipv4=false. Nothing is created.
    let before = w.uvlan_ok(&["network", "ls", "-q"]);
    for (args, want) in [
        (
            vec!["-d", "macvlan", "--ipv4=false", "x"],
            "IPv4 or IPv6 must be enabled",
        ),
        (
            vec![
                "-d",
                "macvlan",
                "--ipv4=false",
                "--ipv6",
                "--subnet",
                "2001:db8:9::/64",
                "--subnet",
                "192.0.2.0/24",
                "x",
            ],
            "IPv4 is disabled (--ipv4=false) but subnet 192.0.2.0/24 is IPv4",
        ),
    ] {
        let mut full = vec!["network", "create"];
        full.extend(args);
        let o = w.uvlan(&full);
        assert!(!o.status.success(), "{full:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{full:?}: {err}");
    }
    assert_eq!(w.uvlan_ok(&["network", "ls", "-q"]), before);
    let ls = w.uvlan_ok(&["network", "ls", "--format", "json"]);
    assert_eq!(
        ls.lines()
            .filter(|l| l.contains(r#""IPv4":"false""#))
            .count(),
        3,
        "{ls}"
    );
}

/// Each endpoint gets only the IP multicast groups its stack joined, as the kernel's ipvlan
/// and macvlan filters deliver (`ipvlan_set_multicast_mac_filter`, `macvlan_set_mac_lists`):
/// a neighbour solicitation for an address nobody has reaches no sibling; an all-multicast
/// sibling gets it; once a sibling takes that address (its stack joins the solicited-node
/// group) the solicitation reaches it and the address answers.
#[test]
fn endpoints_receive_only_the_multicast_groups_they_joined() {
    let mut w = World::new();
    for (i, (net, driver, opt)) in [NETWORKS[0], NETWORKS[2]].into_iter().enumerate() {
        let n = 11 + i;
        create(&w, net, driver, opt, n);
        let [(a, _), (b, fb)] = two_endpoints(&mut w, net);
        let c = format!("{net}c");
        let fc = w.netns(&c);
        w.uvlan_ok(&["network", "connect", net, &fc]);
        out(&w, &c, "ip link set dev eth0 allmulticast on");
        let target = format!("2001:db8:{n}::77");
        // Neighbour solicitations for the target go to ff02::1:ff00:77.
        let filter = "ether dst 33:33:ff:00:00:77";
        // -p: tcpdump must not make the interface promiscuous (that opens its filter).
        let cap_b = Capture::start(&fb, "eth0", &["-p"], filter);
        let cap_c = Capture::start(&fc, "eth0", &["-p"], filter);
        let pings = out(&w, &a, &format!("ping -6 -n -c 3 -W 1 {target}"));
        assert!(
            !pings.contains(" 0% packet loss"),
            "{net}: nobody has it: {pings}"
        );
        let (seen_b, seen_c) = (cap_b.stop(), cap_c.stop());
        assert!(
            seen_b.is_empty(),
            "{net}: b did not join the group, so it gets none of it: {seen_b:#?}"
        );
        assert!(
            !seen_c.is_empty(),
            "{net}: c is all-multicast, so it gets every group"
        );
        out(
            &w,
            &b,
            &format!("ip -6 addr add {target}/64 dev eth0 nodad"),
        );
        assert!(
            w.ping(&a, &target, 5),
            "{net}: b joined the solicited-node group with the address: a reaches it"
        );
    }
}

/// Counters of endpoint `ep` (the namespace's full name) in `uvlan stats --format json`.
fn fast_sent(w: &World, net: &str, ep: &str) -> u64 {
    let stats = w.uvlan_ok(&["stats", "--format", "json", net]);
    let v: Value = serde_json::from_str(&stats).expect("stats JSON");
    v["networks"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["name"] == ep)
        .unwrap_or_else(|| panic!("no endpoint {ep} in {stats}"))["fast_sent_frames"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn ipv6_only_endpoints_use_the_fast_path() {
    let mut w = World::with_daemon_args(&["--fast-path", "on"]);
    for (i, (net, driver, opt)) in NETWORKS.into_iter().enumerate() {
        create(&w, net, driver, opt, i + 1);
        let [(a, fa), (_, fb)] = two_endpoints(&mut w, net);
        let kinds = w.inspect(net)["UvlanWire"]["EndpointKinds"].clone();
        let kinds = kinds.as_object().expect("EndpointKinds").clone();
        assert!(
            kinds.len() == 2 && kinds.values().all(|k| k == "veth+fast-path"),
            "{kinds:?}"
        );
        let ipb = v6_of(&w.inspect(net), &fb);
        let before = (fast_sent(&w, net, &fa), fast_sent(&w, net, &fb));
        let pings = out(&w, &a, &format!("ping -6 -n -q -c 10 -i 0.2 {ipb}"));
        assert!(pings.contains(" 0% packet loss"), "{net}: {pings}");
        let after = (fast_sent(&w, net, &fa), fast_sent(&w, net, &fb));
        assert!(
            after.0 >= before.0 + 8 && after.1 >= before.1 + 8,
            "{net}: the echo requests and replies went through the cache: {before:?} -> \
             {after:?}"
        );
    }
}

/// Non-internal, with a parent: l2 and macvlan endpoints get `default via` the IPv6 gateway
/// and reach it, l3 ones `default dev eth0` for IPv6; no IPv4 route anywhere.
#[test]
fn ipv6_only_on_the_wire_routes_ipv6_only() {
    let mut w = World::new();
    let _lan = w.lan(LanOptions::default());
    for (net, driver, opt) in NETWORKS {
        w.create(&format!(
            "-d {driver} --ipv4=false --ipv6 --subnet 2001:db8::/64 --gateway {GW_IP6} \
             -o parent={PARENT} -o {opt} {net}"
        ));
        let name = format!("{net}w");
        w.connect(net, &name, &["--ip6", "2001:db8::10"]);
        let v4 = out(&w, &name, "ip -4 route show; ip -4 -o addr show dev eth0");
        assert!(
            v4.trim().is_empty(),
            "{net}: no IPv4 route or address: {v4}"
        );
        let routes = out(&w, &name, "ip -6 route show default");
        if net == "v6l3" {
            assert!(
                routes.contains("default dev eth0") && !routes.contains("via"),
                "{net}: {routes}"
            );
        } else {
            assert!(
                routes.contains(&format!("default via {GW_IP6} dev eth0")),
                "{net}: {routes}"
            );
            assert!(w.ping(&name, GW_IP6, 5), "{net}: the gateway over IPv6");
        }
        w.uvlan_ok(&["network", "disconnect", net, &w.ns(&name)]);
        w.uvlan_ok(&["network", "rm", net]);
    }
}
