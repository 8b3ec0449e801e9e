//! The fast path through the real daemon (`uvlan daemon --fast-path on`): two veth endpoints
//! of one network reach each other through the kernel cache (its per-endpoint counters in
//! `uvlan stats` grow), `network inspect` names the endpoint kind, and `network disconnect`
//! invalidates: afterwards not one frame goes through the cache, and nothing is left in the
//! daemon's namespace. Namespaces and addresses (192.0.2.0/24) are the test's own.

use uvlan_system_tests::World;

fn fast_counters(w: &World, net: &str, ep: &str) -> (u64, u64) {
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
        e["fast_sent_frames"].as_u64().unwrap_or(0),
        e["fast_received_frames"].as_u64().unwrap_or(0),
    )
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
