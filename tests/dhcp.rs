//! `--ipam-driver dhcp` against a real DHCP server: dnsmasq in the LAN's gateway namespace
//! (`gw`, on the switch the daemon's parent `up0` is plugged into), range 192.0.2.100–150.
//! Endpoints on macvlan bridge, private and vepa, on ipvlan l2 and on a tagged parent lease
//! distinct addresses the server records in its lease file, reach the LAN and beyond, give the
//! lease back on disconnect; without a server `network connect` fails within its bound and
//! leaves nothing behind, and blocks no other request while it waits. Leases are renewed,
//! lost on a NAK and taken again; a restarted daemon confirms them (INIT-REBOOT) or follows a
//! changed server; parallel connects and connects killed at random points are checked too.
//! Docker's CreateEndpoint and DeleteEndpoint through the plugin socket (no dockerd): their
//! exchanges block no other request, and neither a failure, a kill nor a lost ACK leaves a
//! reservation or a lease the daemon does not know about.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uvlan_system_tests::dnsmasq::{Dnsmasq, DnsmasqOptions};
use uvlan_system_tests::net::{ip_in, sh_in, EXT_IP, GW_IP, PARENT};
use uvlan_system_tests::{Lan, LanOptions, VlanTrunk, World};

/// The LAN's DHCP server: dnsmasq on `eth0` of namespace `ns` (the gateway), handing out
/// 192.0.2.100–150, announcing the gateway as router and 192.0.2.53 as DNS server, with
/// `extra` arguments.
fn dhcp_server(w: &World, ns: &str, extra: &[&str]) -> Dnsmasq {
    dhcp_server_named(w, ns, "dnsmasq", "192.0.2.100,192.0.2.150", extra)
}

/// The same named `tag` (its files), handing out `range`.
fn dhcp_server_named(w: &World, ns: &str, tag: &str, range: &str, extra: &[&str]) -> Dnsmasq {
    dhcp_server_on(w, ns, "eth0", tag, range, GW_IP, extra)
}

/// The same on interface `dev`, announcing `router`.
fn dhcp_server_on(
    w: &World,
    ns: &str,
    dev: &str,
    tag: &str,
    range: &str,
    router: &str,
    extra: &[&str],
) -> Dnsmasq {
    let mut args = vec!["--dhcp-option=option:dns-server,192.0.2.53"];
    args.extend_from_slice(extra);
    Dnsmasq::start(DnsmasqOptions {
        ns,
        dev,
        dir: &w.dir,
        tag,
        range,
        router,
        extra: &args,
    })
}

/// A world with the LAN, its DHCP server ([`dhcp_server`], with `extra` arguments) and the
/// network `dh` on the parent with DHCP IPAM: `-d DRIVER -o parent=up0 OPTIONS
/// --ipam-driver dhcp` (`driver` is `DRIVER OPTIONS`).
fn dhcp_net(driver: &str, extra: &[&str]) -> (World, Lan, Dnsmasq) {
    let mut w = World::new();
    let lan = w.lan(LanOptions::default());
    let server = dhcp_server(&w, &lan.gw, extra);
    let (driver, options) = driver.split_once(' ').unwrap_or((driver, ""));
    w.create(&format!(
        "-d {driver} -o parent={PARENT} {options} --ipam-driver dhcp dh"
    ));
    (w, lan, server)
}

/// The endpoint of namespace `full` in inspect's `Containers`: (IPv4Address, MacAddress).
fn endpoint(w: &World, net: &str, full: &str) -> Option<(String, String)> {
    let v = w.inspect(net);
    let e = container(&v, full)?;
    Some((
        e["IPv4Address"].as_str().unwrap_or_default().to_string(),
        e["MacAddress"].as_str().unwrap_or_default().to_string(),
    ))
}

/// The entry of namespace `full` in the `Containers` of inspect's answer `v`.
fn container<'v>(v: &'v serde_json::Value, full: &str) -> Option<&'v serde_json::Value> {
    v["Containers"]
        .as_object()?
        .values()
        .find(|e| e["Name"] == full)
}

/// The DHCP lease inspect shows for the endpoint of namespace `full` (`UvlanDhcp`; null
/// when there is none).
fn dhcp_lease(w: &World, net: &str, full: &str) -> serde_json::Value {
    container(&w.inspect(net), full)
        .map(|e| e["UvlanDhcp"].clone())
        .unwrap_or_default()
}

/// The address (without its length) of the endpoint of namespace `full` in `net`'s inspect.
fn address(w: &World, net: &str, full: &str) -> String {
    let (cidr, _) = endpoint(w, net, full).unwrap_or_else(|| panic!("{full} is not in {net}"));
    addr(&cidr)
}

/// The address part of `ADDR/LEN`.
fn addr(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or_default().to_string()
}

/// True when address `a` lies in `lo..=hi` of the /24 `prefix` (written `A.B.C.`).
fn in_range_of(a: &str, prefix: &str, lo: u8, hi: u8) -> bool {
    a.strip_prefix(prefix)
        .and_then(|l| l.parse::<u8>().ok())
        .is_some_and(|l| (lo..=hi).contains(&l))
}

/// True when address `a` is from the LAN server's range (192.0.2.100–150).
fn in_range(a: &str) -> bool {
    in_range_of(a, "192.0.2.", 100, 150)
}

/// True when `cidr`'s address is from the second server's range (192.0.2.160–170).
fn in_second_range(cidr: &str) -> bool {
    in_range_of(&addr(cidr), "192.0.2.", 160, 170)
}

/// Waits (bounded) until the server's lease file no longer holds address `a`; panics
/// (saying `what` gave it back) when it still does.
fn assert_released(server: &Dnsmasq, a: &str, what: &str) {
    let leases = server.wait_leases(|t| !t.contains(&format!(" {a} ")));
    assert!(
        !leases.contains(&format!(" {a} ")),
        "{what}: {a} not released:\n{leases}"
    );
}

/// Two endpoints of `net` lease distinct addresses the server records, reach the gateway,
/// the external host behind it and each other; disconnect gives the lease back.
fn two_endpoints(w: &mut World, server: &Dnsmasq, net: &str) {
    let a = w.connect(net, "a", &[]);
    let b = w.connect(net, "b", &[]);
    let (ip_a, _) = endpoint(w, net, &a).expect("a in inspect");
    let (ip_b, _) = endpoint(w, net, &b).expect("b in inspect");
    assert!(
        ip_a.ends_with("/24") && ip_b.ends_with("/24"),
        "{ip_a} {ip_b}"
    );
    let (ip_a, ip_b) = (addr(&ip_a), addr(&ip_b));
    assert!(in_range(&ip_a) && in_range(&ip_b), "{ip_a} {ip_b}");
    assert_ne!(ip_a, ip_b, "distinct leases");
    let leases = server.wait_leases(|t| t.contains(&ip_a) && t.contains(&ip_b));
    assert!(
        leases.contains(&format!(" {ip_a} ")) && leases.contains(&format!(" {ip_b} ")),
        "the server records both leases:\n{leases}"
    );
    // inspect shows the lease: server, router, DNS servers.
    let v = w.inspect(net);
    let lease = dhcp_lease(w, net, &a);
    assert_eq!(lease["Server"], GW_IP, "{lease}");
    assert_eq!(lease["Router"], GW_IP, "{lease}");
    assert_eq!(lease["DNS"], serde_json::json!(["192.0.2.53"]), "{lease}");
    assert_eq!(v["IPAM"]["Driver"], "dhcp");
    // The lease is on eth0 with the router as default route.
    let shown = ip_in(&a, "-4 addr show dev eth0");
    assert!(shown.contains(&format!("{ip_a}/24")), "{shown}");
    let routes = ip_in(&a, "-4 route show default");
    assert!(routes.contains(&format!("via {GW_IP}")), "{routes}");
    assert!(w.ping("a", GW_IP, 5), "a → gateway");
    assert!(
        w.ping("b", EXT_IP, 5),
        "b → external host via the leased router"
    );
    assert!(w.ping("a", &ip_b, 5), "a → b");
    w.uvlan_ok(&["network", "disconnect", net, &b]);
    let leases = server.wait_leases(|t| !t.contains(&format!(" {ip_b} ")));
    assert!(
        !leases.contains(&format!(" {ip_b} ")) && leases.contains(&format!(" {ip_a} ")),
        "disconnect released b's lease, a keeps its own:\n{leases}"
    );
    assert!(
        server
            .log_text()
            .contains(&format!("DHCPRELEASE(eth0) {ip_b}")),
        "{}",
        server.log_text()
    );
}

#[test]
fn macvlan_bridge_leases_from_the_lan() {
    let (mut w, _lan, server) = dhcp_net("macvlan", &[]);
    two_endpoints(&mut w, &server, "dh");
    // Each macvlan endpoint asked with its own MAC.
    let (ip_a, mac_a) = endpoint(&w, "dh", &w.ns("a")).expect("a");
    let leases = server.leases_text();
    let line = leases
        .lines()
        .find(|l| l.contains(&format!(" {} ", addr(&ip_a))))
        .unwrap_or_default();
    assert!(line.contains(&mac_a), "lease {line:?} for MAC {mac_a}");
    // The namespace's name went as the hostname.
    assert!(
        line.contains(&w.ns("a")),
        "lease {line:?} names the endpoint"
    );
    // --ip asks for an address (option 50): one the server has not leased to `a` (the
    // server's own pick for `a` is random in the range, and a server offers something
    // else for an address it has leased).
    let wanted = if addr(&ip_a) == "192.0.2.140" {
        "192.0.2.141"
    } else {
        "192.0.2.140"
    };
    let c = w.connect("dh", "c", &["--ip", wanted]);
    let (ip_c, _) = endpoint(&w, "dh", &c).expect("c");
    assert_eq!(ip_c, format!("{wanted}/24"), "{}", server.log_text());
    // `run --rm`: the command sees its lease; it is released when the command ends.
    let name = format!("{}runrm", w.prefix);
    let out = w.uvlan_ok(&[
        "run", "--net", "dh", "--name", &name, "--rm", "--", "ip", "-4", "-o", "addr", "show",
        "eth0",
    ]);
    let leased = out
        .split_whitespace()
        .find(|t| t.starts_with("192.0.2."))
        .map(addr)
        .unwrap_or_default();
    assert!(in_range(&leased), "{out}");
    assert_released(&server, &leased, "run --rm");
    // The command's /etc/resolv.conf lists the lease's DNS servers; the host's is untouched
    // and no file is left behind.
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let name = format!("{}runrs", w.prefix);
    let out = w.uvlan_ok(&[
        "run",
        "--net",
        "dh",
        "--name",
        &name,
        "--rm",
        "--",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(out.contains("nameserver 192.0.2.53\n"), "{out}");
    assert_eq!(out.matches("nameserver").count(), 1, "{out}");
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        host_resolv
    );
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("uvlan-resolv-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn ipvlan_l2_endpoints_share_a_mac_but_not_a_lease() {
    let (mut w, _lan, server) = dhcp_net("ipvlan -o ipvlan_mode=l2", &[]);
    two_endpoints(&mut w, &server, "dh");
}

#[test]
fn no_server_fails_cleanly_and_refusals() {
    let mut w = World::new();
    let _lan = w.lan(LanOptions::default());
    // Docker-shaped refusals (the third one with any reason).
    for (args, reason) in [
        (
            "-d macvlan -o parent=up0 --ipam-driver dhcp --subnet 192.0.2.0/24 x",
            "--ipam-driver dhcp",
        ),
        (
            "-d ipvlan -o parent=up0 -o ipvlan_mode=l3 --ipam-driver dhcp x",
            "ipvlan_mode=l2",
        ),
        ("-d macvlan --ipam-driver dhcp x", ""),
        (
            "-d macvlan -o parent=up0 --ipam-driver null x",
            "ipv4 pool is empty",
        ),
    ] {
        let mut argv = vec!["network", "create"];
        argv.extend(args.split_whitespace());
        let o = w.uvlan(&argv);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(reason),
            "network create {args}: {err}"
        );
    }
    assert!(w.uvlan_ok(&["network", "ls", "-q"]).trim().is_empty());

    // No server on the LAN: connect fails with the reason and leaves nothing behind.
    w.create(&format!(
        "-d macvlan -o parent={PARENT} --ipam-driver dhcp dh"
    ));
    let full = w.netns("lonely");
    let o = w.uvlan(&["network", "connect", "dh", &full]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "connect without a server succeeded");
    assert!(err.contains("no DHCP server answered"), "{err}");
    assert!(endpoint(&w, "dh", &full).is_none(), "no endpoint left");
    let links = ip_in(&full, "-o link show");
    assert_eq!(links.lines().count(), 1, "only lo is left: {links}");
    let records = store_files(&w, "*");
    assert!(records.is_empty(), "no endpoint record is left: {records}");
    w.uvlan_ok(&["network", "rm", "dh"]);
}

/// True when one ping (one second) from namespace `gw` to `to` is answered.
fn gw_reaches(gw: &str, to: &str) -> bool {
    sh_in(
        gw,
        &format!("ping -c1 -W1 {to} >/dev/null && echo ok || true"),
    )
    .contains("ok")
}

/// Waits (bounded) for `pred`; true when it held.
fn eventually(mut pred: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// With T1 = 3 s the daemon RENEWs (the server logs a second ACK, inspect's `Obtained`
/// moves); a new server that does not know the lease NAKs the next RENEW: the endpoint
/// loses the address, and discovery starts again, which gives it one of the new server's.
#[test]
fn leases_are_renewed_and_lost_on_a_nak() {
    let short = ["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,100"];
    let (mut w, lan, server) = dhcp_net("macvlan", &short);
    let a = w.connect("dh", "a", &[]);
    let obtained = |w: &World| dhcp_lease(w, "dh", &a)["Obtained"].as_u64();
    let first = obtained(&w).expect("a has a lease");
    let ip = address(&w, "dh", &a);
    let acks = |s: &Dnsmasq| {
        s.log_text()
            .matches(&format!("DHCPACK(eth0) {ip} "))
            .count()
    };
    assert!(
        eventually(|| acks(&server) >= 2),
        "no renewal reached the server:\n{}",
        server.log_text()
    );
    assert!(
        eventually(|| obtained(&w).is_some_and(|o| o > first)),
        "the renewed lease is not recorded"
    );
    assert!(w.daemon_log().contains(&format!("DHCP lease {ip} renewed")));
    assert!(w.ping("a", GW_IP, 5), "a keeps its address");
    drop(server);
    let second = dhcp_server_named(&w, &lan.gw, "second", "192.0.2.160,192.0.2.170", &short);
    assert!(
        eventually(|| !ip_in(&a, "-4 addr show dev eth0").contains(&ip)),
        "the address survived a NAK:\n{}\n{}",
        second.log_text(),
        w.daemon_log()
    );
    assert!(
        second.log_text().contains("DHCPNAK"),
        "{}",
        second.log_text()
    );
    assert!(w
        .daemon_log()
        .contains(&format!("lost its DHCP lease of {ip}")));
    assert!(
        eventually(|| endpoint(&w, "dh", &a).is_some_and(|(s, _)| in_second_range(&s))),
        "no new lease after the NAK:\n{}\n{}",
        second.log_text(),
        w.daemon_log()
    );
    let (shown, _) = endpoint(&w, "dh", &a).expect("a");
    let new_ip = addr(&shown);
    assert!(ip_in(&a, "-4 addr show dev eth0").contains(&shown));
    assert!(second
        .wait_leases(|t| t.contains(&new_ip))
        .contains(&new_ip));
    assert!(
        w.ping("a", GW_IP, 5),
        "a reaches the LAN with its new address"
    );
    let (_, rec) = endpoint_record(&w, &a);
    assert_eq!(
        rec["lease"]["addr"],
        new_ip.as_str(),
        "the store has it: {rec}"
    );
    assert!(gw_reaches(&lan.gw, &new_ip), "the LAN reaches {new_ip}");
    w.uvlan_ok(&["network", "disconnect", "dh", &a]);
}

/// Drops, in the gateway namespace `gw`, DHCP sent to the server's own address (unicast:
/// RENEW, RELEASE); broadcasts (DISCOVER, REBIND, INIT-REBOOT) pass. Undone by
/// [`pass_unicast_to_server`].
fn drop_unicast_to_server(gw: &str) {
    sh_in(
        gw,
        &format!(
            "nft add table ip uvdhcp && nft add chain ip uvdhcp input '{{ type filter hook \
             input priority 0; }}' && nft add rule ip uvdhcp input ip daddr {GW_IP} udp dport \
             67 drop"
        ),
    );
}

/// Undoes [`drop_unicast_to_server`].
fn pass_unicast_to_server(gw: &str) {
    sh_in(gw, "nft delete table ip uvdhcp");
}

/// Waits (bounded) until the daemon has logged `line` after byte `from` of its log; panics
/// with `what`, the daemon's log and `server`'s when it does not.
fn wait_logged(w: &World, from: usize, line: &str, server: &Dnsmasq, what: &str) {
    assert!(
        eventually(|| w.daemon_log()[from..].contains(line)),
        "{what}:\n{}\n{}",
        w.daemon_log(),
        server.log_text()
    );
}

/// A daemon killed and started again goes on from the stored lease (confirmed by a
/// broadcast INIT-REBOOT); with the server's unicast port filtered, RENEW gets no answer and
/// the REBIND (broadcast) at T2 extends it.
#[test]
fn a_restarted_daemon_rebinds_its_stored_leases() {
    let short = ["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,4"];
    let (mut w, lan, server) = dhcp_net("ipvlan", &short);
    let a = w.connect("dh", "a", &[]);
    let ip = address(&w, "dh", &a);
    // RENEW is unicast to the server's address: dropped; REBIND is broadcast: not.
    drop_unicast_to_server(&lan.gw);
    w.kill_daemon(libc::SIGKILL);
    let before = w.daemon_log().len();
    w.start_daemon();
    wait_logged(
        &w,
        before,
        &format!("DHCP lease {ip} rebound"),
        &server,
        "the restarted daemon did not rebind",
    );
    assert!(
        w.ping("a", GW_IP, 5),
        "a keeps its address after the restart"
    );
    // RELEASE is unicast too.
    pass_unicast_to_server(&lan.gw);
    w.uvlan_ok(&["network", "disconnect", "dh", &a]);
    assert_released(&server, &ip, "disconnect");
}

/// Counts `needle` in `text`.
fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// The files of the daemon's store below its endpoints whose name matches `name` (a `find
/// -name` pattern), one a line.
fn store_files(w: &World, name: &str) -> String {
    let out = Command::new("find")
        .arg(w.dir.join("root"))
        .args(["-path", "*endpoints*", "-name", name, "-type", "f"])
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The stored record of the endpoint in namespace `full` (its file and its JSON).
fn endpoint_record(w: &World, full: &str) -> (PathBuf, serde_json::Value) {
    let files = store_files(w, "*.json");
    for f in files.lines() {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if v["name"] == full {
            return (PathBuf::from(f), v);
        }
    }
    panic!("no record for {full}: {files}");
}

/// A daemon killed with SIGKILL confirms each stored lease with INIT-REBOOT when it starts
/// again: a broadcast REQUEST, so it gets through while unicast to the server is filtered
/// (a RENEW would not); the endpoint keeps its address (put back on eth0 with its default
/// route after the ACK: it was removed while the daemon was down), the server its lease,
/// and renewal goes on once unicast passes again.
#[test]
fn a_killed_daemon_confirms_its_leases_with_init_reboot() {
    let short = ["--dhcp-option=option:T1,4", "--dhcp-option=option:T2,100"];
    let (mut w, lan, server) = dhcp_net("macvlan", &short);
    let a = w.connect("dh", "a", &[]);
    let ip = address(&w, "dh", &a);
    let acked = format!("DHCPACK(eth0) {ip} ");
    drop_unicast_to_server(&lan.gw);
    w.kill_daemon(libc::SIGKILL);
    // The address leaves eth0 while the daemon is down (its default route with it): the
    // ACK of the INIT-REBOOT puts both back.
    ip_in(&a, &format!("addr del {ip}/24 dev eth0"));
    assert!(!ip_in(&a, "-4 addr show dev eth0").contains(&ip));
    let acks_before = count(&server.log_text(), &acked);
    let before = w.daemon_log().len();
    w.start_daemon();
    wait_logged(
        &w,
        before,
        &format!("DHCP lease {ip} confirmed after the restart (INIT-REBOOT)"),
        &server,
        "no INIT-REBOOT",
    );
    assert!(
        count(&server.log_text(), &acked) > acks_before,
        "the server did not ACK the INIT-REBOOT:\n{}",
        server.log_text()
    );
    assert!(ip_in(&a, "-4 addr show dev eth0").contains(&format!("{ip}/24")));
    assert!(
        w.daemon_log()[before..].contains(&format!("{ip}/24 was no longer on eth0: put back")),
        "{}",
        w.daemon_log()
    );
    assert!(
        ip_in(&a, "-4 route show default").contains(&format!("via {GW_IP}")),
        "the default route is back"
    );
    assert!(server.leases_text().contains(&format!(" {ip} ")));
    assert!(
        w.ping("a", GW_IP, 5),
        "a keeps its address after the restart"
    );
    // Renewal goes on from the confirmed lease.
    pass_unicast_to_server(&lan.gw);
    wait_logged(
        &w,
        before,
        &format!("DHCP lease {ip} renewed"),
        &server,
        "no renewal after the restart",
    );
    let (_, rec) = endpoint_record(&w, &a);
    assert_eq!(rec["lease"]["addr"], ip.as_str(), "{rec}");
    w.uvlan_ok(&["network", "disconnect", "dh", &a]);
}

/// The server changed while the daemon was down: the INIT-REBOOT is NAKed, the endpoint
/// takes a lease from the new server, and its new address is on eth0, in the store, in
/// inspect and in the engine (ipvlan l2 delivers by address: the gateway reaches the new
/// address, no longer the old one). A lease that ended while the daemon was down is not
/// confirmed but asked for again.
#[test]
fn a_restarted_daemon_follows_a_nak_and_rediscovers_an_expired_lease() {
    let (mut w, lan, first) = dhcp_net("ipvlan -o ipvlan_mode=l2", &[]);
    let a = w.connect("dh", "a", &[]);
    let b = w.connect("dh", "b", &[]);
    let ip_a = address(&w, "dh", &a);
    let ip_b = address(&w, "dh", &b);
    w.kill_daemon(libc::SIGKILL);
    drop(first);
    let second = dhcp_server_named(&w, &lan.gw, "second", "192.0.2.160,192.0.2.170", &[]);
    // b's lease ended while the daemon was down (its record says so).
    let (file, mut rec) = endpoint_record(&w, &b);
    let obtained = rec["lease"]["obtained"].as_u64().expect("obtained");
    rec["lease"]["obtained"] = serde_json::json!(obtained - 1000);
    std::fs::write(&file, serde_json::to_vec_pretty(&rec).expect("json")).expect("write");
    let before = w.daemon_log().len();
    w.start_daemon();
    for (full, old, why) in [
        (&a, &ip_a, "the server refused it after the restart"),
        (&b, &ip_b, "it expired"),
    ] {
        assert!(
            eventually(|| endpoint(&w, "dh", full).is_some_and(|(s, _)| in_second_range(&s))),
            "{full}: no new lease:\n{}\n{}",
            w.daemon_log(),
            second.log_text()
        );
        let log = w.daemon_log()[before..].to_string();
        assert!(
            log.contains(&format!("lost its DHCP lease of {old} ({why})")),
            "{log}"
        );
        let (shown, _) = endpoint(&w, "dh", full).expect("endpoint");
        let new_ip = addr(&shown);
        let on_eth0 = ip_in(full, "-4 addr show dev eth0");
        assert!(
            on_eth0.contains(&shown) && !on_eth0.contains(&format!("{old}/")),
            "{on_eth0}"
        );
        let (_, rec) = endpoint_record(&w, full);
        assert_eq!(rec["lease"]["addr"], new_ip.as_str(), "{rec}");
        assert!(second
            .wait_leases(|t| t.contains(&new_ip))
            .contains(&new_ip));
        // The engine delivers the new address, not the old one.
        assert!(
            (0..5).any(|_| gw_reaches(&lan.gw, &new_ip)),
            "the gateway does not reach {new_ip}"
        );
        assert!(!gw_reaches(&lan.gw, old), "the gateway still reaches {old}");
    }
    assert!(
        second.log_text().contains("DHCPNAK"),
        "{}",
        second.log_text()
    );
    assert!(w.ping("a", GW_IP, 5));
    w.uvlan_ok(&["network", "disconnect", "dh", &a]);
    w.uvlan_ok(&["network", "disconnect", "dh", &b]);
}

/// `uvlan ARGS` started in the background.
fn spawn_uvlan(w: &World, args: &[&str]) -> Child {
    Command::new(uvlan_system_tests::uvlan_bin())
        .args(args)
        .env("UVLAN_SOCKET", w.socket())
        .env("UVLAN_ROOT", w.dir.join("root"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn uvlan")
}

/// Eight connects at once on a DHCP network all get distinct leases, which the server
/// records. dnsmasq pings an address for 3 s before it offers it, one DISCOVER at a time
/// (eight DISCOVERs at once take it 24 s, beyond the client's 10 s bound): the daemon runs
/// two acquisitions at a time, each bound from its turn.
#[test]
fn parallel_connects_get_distinct_leases() {
    let (mut w, _lan, server) = dhcp_net("macvlan", &[]);
    connect_at_once(&mut w, &server, "dh", "p", 8);
}

/// The same on ipvlan l2, where all endpoints share the parent's MAC: dnsmasq picks the
/// address it offers from the MAC, so endpoints asking together are offered the same one;
/// the server NAKs all REQUESTs but the first, and the others start again (RFC 2131 3.1)
/// and are offered another.
#[test]
fn parallel_ipvlan_connects_sharing_a_mac_get_distinct_leases() {
    let (mut w, _lan, server) = dhcp_net("ipvlan -o ipvlan_mode=l2", &[]);
    connect_at_once(&mut w, &server, "dh", "i", 4);
}

/// Connects `n` new namespaces (`TAG0`, ...) to `net` at once; each gets its own lease, on
/// its eth0 alone, and the server records them all.
fn connect_at_once(w: &mut World, server: &Dnsmasq, net: &str, tag: &str, n: usize) {
    let names: Vec<String> = (0..n).map(|k| w.netns(&format!("{tag}{k}"))).collect();
    let children: Vec<Child> = names
        .iter()
        .map(|ns| spawn_uvlan(w, &["network", "connect", net, ns]))
        .collect();
    for (ns, c) in names.iter().zip(children) {
        let o = c.wait_with_output().expect("wait");
        assert!(
            o.status.success(),
            "connect {ns}: {}\n{}\n{}",
            String::from_utf8_lossy(&o.stderr),
            w.daemon_log(),
            server.log_text()
        );
    }
    let mut ips: Vec<String> = names
        .iter()
        .map(|ns| addr(&endpoint(w, net, ns).expect("in inspect").0))
        .collect();
    assert!(ips.iter().all(|a| in_range(a)), "{ips:?}");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "distinct leases: {ips:?}");
    let leases = server.wait_leases(|t| ips.iter().all(|a| t.contains(&format!(" {a} "))));
    for a in &ips {
        assert!(leases.contains(&format!(" {a} ")), "{a} not in\n{leases}");
        let on = names
            .iter()
            .filter(|ns| ip_in(ns, "-4 addr show dev eth0").contains(&format!("{a}/24")))
            .count();
        assert_eq!(on, 1, "{a} is on exactly one eth0");
    }
    for ns in &names {
        w.uvlan_ok(&["network", "disconnect", net, ns]);
    }
}

/// A connect whose server does not answer holds no lock while it waits: `network ls` and
/// `inspect` answer while it still runs (the endpoint it is making is not shown), and a
/// daemon killed during the exchange rolls the endpoint back at its next start.
#[test]
fn a_slow_exchange_blocks_nobody_and_a_crash_in_it_is_rolled_back() {
    let mut w = World::new();
    let _lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d macvlan -o parent={PARENT} --ipam-driver dhcp dh"
    ));
    let full = w.netns("slow");
    let has_eth0 = |_: &World| ip_in(&full, "-o link show").contains("eth0");
    let mut connect = spawn_uvlan(&w, &["network", "connect", "dh", &full]);
    assert!(eventually(|| has_eth0(&w)), "the connect made no interface");
    let t = Instant::now();
    let ls = w.uvlan_ok(&["network", "ls"]);
    let v = w.inspect("dh");
    let answered = t.elapsed();
    assert!(
        connect.try_wait().expect("try_wait").is_none(),
        "network ls waited for the connect (its exchange ran under the daemon's lock)"
    );
    eprintln!("network ls and inspect during the exchange: {answered:?}");
    assert!(ls.contains("dh"), "{ls}");
    assert!(
        v["Containers"].as_object().is_some_and(|c| c.is_empty()),
        "the pending endpoint is shown: {v}"
    );
    let o = w.uvlan(&["network", "disconnect", "dh", &full]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("still being connected"),
        "{err}"
    );
    let o = connect.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no DHCP server answered"),
        "{err}"
    );
    assert!(!has_eth0(&w), "the failed connect left its interface");

    // Killed during the exchange: the next start rolls the endpoint back.
    let connect = spawn_uvlan(&w, &["network", "connect", "dh", &full]);
    assert!(eventually(|| has_eth0(&w)), "the connect made no interface");
    w.kill_daemon(libc::SIGKILL);
    let o = connect.wait_with_output().expect("wait");
    assert!(!o.status.success(), "a connect whose daemon died succeeded");
    let before = w.daemon_log().len();
    w.start_daemon();
    assert!(
        w.daemon_log()[before..].contains("rolled back its interrupted creation"),
        "{}",
        w.daemon_log()
    );
    assert!(!has_eth0(&w), "the interrupted connect left its interface");
    let v = w.inspect("dh");
    assert!(
        v["Containers"].as_object().is_some_and(|c| c.is_empty()),
        "{v}"
    );
    w.uvlan_ok(&["network", "rm", "dh"]);
}

/// The leased address of the endpoint in namespace `full`, checked to lie in `lo..=hi` of
/// `net` (a /24 prefix written `A.B.C.`).
fn leased_in(w: &World, net: &str, full: &str, prefix: &str, lo: u8, hi: u8) -> String {
    let (cidr, _) = endpoint(w, net, full).expect("in inspect");
    let a = addr(&cidr);
    assert!(
        in_range_of(&a, prefix, lo, hi),
        "{full}: {cidr} is not from {prefix}{lo}-{hi}"
    );
    a
}

/// The random moments of the crash tests: a xorshift generator seeded from
/// `UVLAN_CRASH_SEED`, or from the clock (the seed is printed, so a failure can be replayed).
fn crash_rng() -> impl FnMut() -> u64 {
    let mut seed: u64 = std::env::var("UVLAN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1;
    eprintln!("seed {seed} (UVLAN_CRASH_SEED)");
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// DHCP on a tagged parent (`up0.20`: the DISCOVERs leave tagged, the VLAN's own server
/// answers, not the untagged one) and on macvlan `private` (leases, the LAN, but not each
/// other) and `vepa` (each other through the switch's hairpin).
#[test]
fn tagged_parents_and_private_and_vepa_modes_lease_too() {
    let mut w = World::new();
    let lan = w.lan(LanOptions {
        hairpin: true,
        ..LanOptions::default()
    });
    // VLAN 20 behind a userspace trunk in gw (no 8021q here), with its own server.
    w.ip("gw", "route del 198.51.100.0/24");
    let _trunk = VlanTrunk::start(&lan.gw, "eth0", &[(20, "v20")]);
    w.ip("gw", "link set v20 address 02:00:00:00:fe:20 up");
    w.ip("gw", "addr add 198.51.100.1/24 dev v20");
    let s20 = dhcp_server_on(
        &w,
        &lan.gw,
        "v20",
        "vlan20",
        "198.51.100.100,198.51.100.150",
        "198.51.100.1",
        &[],
    );
    let s0 = dhcp_server(&w, &lan.gw, &[]);
    w.create(&format!(
        "-d macvlan -o parent={PARENT}.20 --ipam-driver dhcp d20"
    ));
    let a = w.connect("d20", "a", &[]);
    let b = w.connect("d20", "b", &[]);
    let ip_a = leased_in(&w, "d20", &a, "198.51.100.", 100, 150);
    let ip_b = leased_in(&w, "d20", &b, "198.51.100.", 100, 150);
    assert_ne!(ip_a, ip_b);
    let leases = s20.wait_leases(|t| t.contains(&ip_a) && t.contains(&ip_b));
    assert!(leases.contains(&ip_a) && leases.contains(&ip_b), "{leases}");
    assert!(
        !s0.log_text().contains("DHCPDISCOVER"),
        "the untagged server saw a tagged DISCOVER:\n{}",
        s0.log_text()
    );
    assert!(w.ping("a", "198.51.100.1", 5), "a → VLAN 20's gateway");
    assert!(w.ping("a", &ip_b, 5), "a → b on VLAN 20");
    for n in [&a, &b] {
        w.uvlan_ok(&["network", "disconnect", "d20", n]);
    }
    w.uvlan_ok(&["network", "rm", "d20"]);

    for (mode, each_other) in [("private", false), ("vepa", true)] {
        w.create(&format!(
            "-d macvlan -o parent={PARENT} -o macvlan_mode={mode} --ipam-driver dhcp m"
        ));
        let (pn, qn) = (format!("{mode}1"), format!("{mode}2"));
        let p = w.connect("m", &pn, &[]);
        let q = w.connect("m", &qn, &[]);
        let ip_p = leased_in(&w, "m", &p, "192.0.2.", 100, 150);
        let ip_q = leased_in(&w, "m", &q, "192.0.2.", 100, 150);
        assert_ne!(ip_p, ip_q, "{mode}");
        assert!(w.ping(&pn, GW_IP, 5), "{mode}: → the gateway");
        assert!(w.ping(&qn, GW_IP, 5), "{mode}: → the gateway");
        assert_eq!(
            w.ping(&pn, &ip_q, if each_other { 5 } else { 2 }),
            each_other,
            "{mode}: endpoint to endpoint"
        );
        for n in [&p, &q] {
            w.uvlan_ok(&["network", "disconnect", "m", n]);
        }
        w.uvlan_ok(&["network", "rm", "m"]);
    }
}

/// A DHCP connect killed (SIGKILL) at a random moment, then the daemon started again: the
/// endpoint is all or nothing. Listed: its `eth0` holds the listed address, which the server
/// leased; not listed: its namespace has no interface but `lo`. A connect that answered
/// success is listed. Seed: `UVLAN_CRASH_SEED` (printed).
#[test]
fn a_dhcp_connect_killed_at_random_points_is_all_or_nothing() {
    // Without dnsmasq's 3 s ping check an exchange takes milliseconds, so the kills land
    // before, in and after it.
    let (mut w, _lan, server) = dhcp_net("macvlan", &["--no-ping"]);
    let mut next = crash_rng();
    let (mut listed_n, mut gone_n) = (0, 0);
    for k in 0..8 {
        let full = w.netns(&format!("k{k}"));
        let mut connect = spawn_uvlan(&w, &["network", "connect", "dh", &full]);
        std::thread::sleep(Duration::from_millis(next() % 120));
        w.kill_daemon(libc::SIGKILL);
        let answered = connect.wait().expect("wait").success();
        w.start_daemon();
        let links = ip_in(&full, "-o link show");
        match endpoint(&w, "dh", &full) {
            Some((cidr, _)) => {
                listed_n += 1;
                assert!(
                    ip_in(&full, "-4 addr show dev eth0").contains(&cidr),
                    "{full}: listed with {cidr}, not on eth0"
                );
                let a = addr(&cidr);
                assert!(in_range(&a), "{cidr}");
                assert!(
                    server.leases_text().contains(&format!(" {a} ")),
                    "{a} is not leased:\n{}",
                    server.leases_text()
                );
                w.uvlan_ok(&["network", "disconnect", "dh", &full]);
            }
            None => {
                gone_n += 1;
                assert!(
                    !answered,
                    "{full}: the connect answered success, then vanished"
                );
                assert_eq!(links.lines().count(), 1, "{full}: only lo is left: {links}");
            }
        }
    }
    eprintln!("{listed_n} connect(s) kept, {gone_n} rolled back");
    w.uvlan_ok(&["network", "rm", "dh"]);
}

/// Docker's network for the plugin-socket test.
const DOCKER_NID: &str = "d4c90000000000000000000000000000000000000000000000000000000000aa";

/// One call of Docker's plugin protocol to the macvlan driver of `w`'s daemon (see
/// `plugin_call`); panics when there is no answer.
fn docker_call(w: &World, method: &str, body: serde_json::Value) -> serde_json::Value {
    let sock = w.plugin_socket("uvlan-macvlan");
    uvlan_system_tests::plugin_call(&sock, method, &body)
        .unwrap_or_else(|| panic!("{method}: no answer\n{}", w.daemon_log()))
}

/// The body of Docker's CreateEndpoint of endpoint `eid` with no address (Docker's null
/// IPAM).
fn create_endpoint_body(eid: &str) -> serde_json::Value {
    serde_json::json!({"NetworkID": DOCKER_NID, "EndpointID": eid,
           "Interface": {"Address": "", "AddressIPv6": "", "MacAddress": ""},
           "Options": {}})
}

/// Docker's CreateEndpoint of endpoint `eid` with no address.
fn docker_create_endpoint(w: &World, eid: &str) -> serde_json::Value {
    docker_call(w, "NetworkDriver.CreateEndpoint", create_endpoint_body(eid))
}

/// Docker's CreateEndpoint of endpoint `eid` with no address, made on a thread: its answer,
/// or `None` when there was none (the daemon died under the call).
fn spawn_create_endpoint(w: &World, eid: &str) -> JoinHandle<Option<serde_json::Value>> {
    let sock = w.plugin_socket("uvlan-macvlan");
    let body = create_endpoint_body(eid);
    std::thread::spawn(move || {
        uvlan_system_tests::plugin_call(&sock, "NetworkDriver.CreateEndpoint", &body)
    })
}

/// Docker's DeleteEndpoint of endpoint `eid`.
fn docker_delete_endpoint(w: &World, eid: &str) -> serde_json::Value {
    docker_call(
        w,
        "NetworkDriver.DeleteEndpoint",
        serde_json::json!({"NetworkID": DOCKER_NID, "EndpointID": eid}),
    )
}

/// Docker's DeleteNetwork of [`DOCKER_NID`], which succeeds.
fn docker_delete_network(w: &World) {
    let v = docker_call(
        w,
        "NetworkDriver.DeleteNetwork",
        serde_json::json!({"NetworkID": DOCKER_NID}),
    );
    assert_eq!(v, serde_json::json!({}), "{}", w.daemon_log());
}

/// The reservation files (Docker's CreateEndpoint) in the daemon's store.
fn reservation_files(w: &World) -> String {
    store_files(w, "reserved.*")
}

/// A Docker endpoint `eid` whose CreateEndpoint exchange runs now: waits (bounded) until
/// a DeleteEndpoint of it is refused as still being created (it answers at once, the state
/// lock being free); false if it never was.
fn wait_pending(w: &World, eid: &str) -> bool {
    eventually(|| {
        let v = docker_delete_endpoint(w, eid);
        v["Err"]
            .as_str()
            .is_some_and(|e| e.contains("still being created"))
    })
}

/// A world whose daemon serves Docker's plugin sockets (no dockerd), with the LAN.
fn docker_world() -> (World, Lan) {
    let mut w = World::with_docker_plugin(&[]);
    let lan = w.lan(LanOptions::default());
    (w, lan)
}

/// Docker's CreateNetwork of [`DOCKER_NID`]: macvlan on the parent, DHCP IPAM.
fn create_network(w: &World) {
    let v = docker_call(
        w,
        "NetworkDriver.CreateNetwork",
        serde_json::json!({
            "NetworkID": DOCKER_NID,
            "Options": {"com.docker.network.generic":
                        {"parent": PARENT, "uvlan.ipam": "dhcp"}},
            "IPv4Data": [{"AddressSpace": "null", "Pool": "0.0.0.0/0"}],
            "IPv6Data": []
        }),
    );
    assert_eq!(v, serde_json::json!({}), "{}", w.daemon_log());
}

/// The reservations in the daemon's store: (the file's JSON) each.
fn reservations(w: &World) -> Vec<serde_json::Value> {
    reservation_files(w)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            serde_json::from_str(&text).unwrap_or_default()
        })
        .collect()
}

/// The addresses in the server's lease file.
fn leased_addrs(server: &Dnsmasq) -> Vec<String> {
    server
        .leases_text()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

/// Docker's CreateEndpoint killed (SIGKILL) at a random moment of its DHCP exchange, then
/// the daemon started again: the server keeps no lease the daemon does not hold in a
/// reservation (an interrupted exchange's offer, written before its REQUEST, is given back
/// at start), no reservation keeps an unfinished offer, and a CreateEndpoint that answered
/// an address keeps it. Seed: `UVLAN_CRASH_SEED` (printed).
#[test]
fn a_docker_create_endpoint_killed_at_random_points_leaves_no_unknown_lease() {
    let (mut w, lan) = docker_world();
    // Without the 3 s ping check the exchange takes milliseconds, so kills land before, in
    // and after it.
    let server = dhcp_server(&w, &lan.gw, &["--no-ping"]);
    create_network(&w);
    let mut next = crash_rng();
    let (mut kept, mut gone) = (0, 0);
    for k in 0..10 {
        let eid = format!("d4c95{k:02}{}", "0".repeat(57));
        let creating = spawn_create_endpoint(&w, &eid);
        std::thread::sleep(Duration::from_millis(next() % 150));
        w.kill_daemon(libc::SIGKILL);
        let answer = creating.join().expect("thread");
        w.start_daemon();
        let held = |w: &World| -> Vec<String> {
            reservations(w)
                .iter()
                .filter_map(|r| r["lease"]["addr"].as_str().map(str::to_string))
                .collect()
        };
        let unknown = |w: &World| {
            let held = held(w);
            leased_addrs(&server)
                .into_iter()
                .filter(|a| !held.contains(a))
                .collect::<Vec<_>>()
        };
        assert!(
            eventually(|| unknown(&w).is_empty()),
            "the server keeps leases the daemon does not know: {:?}\n{}\n{}",
            unknown(&w),
            w.daemon_log(),
            server.log_text()
        );
        assert!(
            reservations(&w).iter().all(|r| r.get("offered").is_none()),
            "{:?}",
            reservations(&w)
        );
        let answered = answer
            .as_ref()
            .and_then(|a| a["Interface"]["Address"].as_str().map(str::to_string));
        if let Some(cidr) = &answered {
            assert!(held(&w).contains(&addr(cidr)), "{cidr} answered, then lost");
        }
        if held(&w).is_empty() {
            gone += 1;
        } else {
            kept += 1;
            let v = docker_delete_endpoint(&w, &eid);
            assert_eq!(v, serde_json::json!({}), "{}", w.daemon_log());
        }
        assert_eq!(reservation_files(&w), "", "a reservation is left");
    }
    eprintln!("{kept} CreateEndpoint(s) kept, {gone} rolled back");
    let log = w.daemon_log();
    eprintln!(
        "{} interrupted offer(s) given back at start",
        log.matches("was interrupted in its DHCP exchange").count()
    );
}

/// The server's ACKs never leave it (an nft rule in its namespace drops them; it records
/// the lease all the same): a CreateEndpoint waiting for its ACK whose daemon is killed
/// leaves a reservation with the offer it asked for, and the next start gives the address
/// back (the lease leaves the server's file) and drops the reservation. Without a kill, the
/// CreateEndpoint fails after its bound and gives the offer back itself.
#[test]
fn a_docker_lease_the_daemon_died_before_recording_is_given_back() {
    let (mut w, lan) = docker_world();
    let server = dhcp_server(&w, &lan.gw, &["--no-ping"]);
    // dnsmasq writes the message type first: option 53, length 1, 5 (ACK), at the start of
    // the options (UDP payload offset 240).
    sh_in(
        &lan.gw,
        "nft add table ip uvdhcpack && nft add chain ip uvdhcpack output '{ type filter hook \
         output priority 0; }' && nft add rule ip uvdhcpack output udp sport 67 \
         @th,1984,16 0x3501 @th,2000,8 5 drop",
    );
    create_network(&w);

    let eid = format!("d4c96{}", "0".repeat(59));
    let creating = spawn_create_endpoint(&w, &eid);
    let leased = server.wait_leases(|t| !t.trim().is_empty());
    let a = leased_addrs(&server).first().cloned().unwrap_or_else(|| {
        panic!(
            "the server leased nothing: {leased}\n{}\n{}",
            w.daemon_log(),
            server.log_text()
        )
    });
    let offered: Vec<_> = reservations(&w)
        .iter()
        .filter_map(|r| r["offered"]["addr"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        offered,
        std::slice::from_ref(&a),
        "the offer is written before its REQUEST"
    );
    w.kill_daemon(libc::SIGKILL);
    let answer = creating.join().expect("thread");
    assert!(
        answer.as_ref().is_none_or(|v| v.get("Err").is_some()),
        "{answer:?}"
    );
    let before = w.daemon_log().len();
    w.start_daemon();
    assert!(
        w.daemon_log()[before..].contains(&format!(
            "was interrupted in its DHCP exchange: the offered {a} was given back, the \
             reservation dropped"
        )),
        "{}",
        w.daemon_log()
    );
    assert_released(&server, &a, "the start after the kill");
    assert_eq!(reservation_files(&w), "", "a reservation is left");

    // No kill: the CreateEndpoint fails after its bound and gives the offer back.
    let eid = format!("d4c97{}", "0".repeat(59));
    let answer = docker_create_endpoint(&w, &eid);
    let err = answer["Err"].as_str().unwrap_or_default();
    assert!(
        err.contains("did not confirm it in time") && err.contains("nothing was left behind"),
        "{answer}"
    );
    let a = err
        .split("offered ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert!(in_range(&a), "{err}");
    assert_released(&server, &a, "the failed CreateEndpoint");
    assert_eq!(reservation_files(&w), "", "a reservation is left");
    sh_in(&lan.gw, "nft delete table ip uvdhcpack");
}

/// Docker's DHCP IPAM (`--ipam-driver null -o uvlan.ipam=dhcp`) through the plugin socket,
/// without dockerd: while a CreateEndpoint's exchange gets no answer (no server on the LAN)
/// `network ls`, `network inspect` and other plugin calls answer (the exchange holds no
/// lock); the CreateEndpoint fails after its bound with the reason and leaves no
/// reservation, and the network can be deleted. A daemon killed during such an exchange
/// leaves no reservation either. With a server, CreateEndpoint answers a lease the server
/// records, and DeleteEndpoint gives it back (the RELEASE runs without the lock too).
#[test]
fn docker_dhcp_exchanges_block_nobody_and_leave_nothing() {
    let (mut w, lan) = docker_world();
    create_network(&w);
    let links = |w: &World| ip_in(&w.ns("host"), "-o link show").lines().count();
    let links_before = links(&w);

    // No server: the exchange blocks nobody, fails after its bound and leaves nothing.
    let eid = format!("d4c91{}", "0".repeat(59));
    let started = Instant::now();
    let creating = spawn_create_endpoint(&w, &eid);
    assert!(
        wait_pending(&w, &eid),
        "no CreateEndpoint exchange seen running:\n{}",
        w.daemon_log()
    );
    let ls = w.uvlan_ok(&["network", "ls"]);
    let v = w.inspect(&DOCKER_NID[..12]);
    // Another plugin call that takes the daemon's state lock: a second endpoint's
    // DeleteEndpoint (nothing to delete).
    let other = docker_delete_endpoint(&w, &format!("d4c92{}", "0".repeat(59)));
    assert!(
        !creating.is_finished(),
        "network ls, inspect and DeleteEndpoint waited for the CreateEndpoint exchange (it \
         ran under the daemon's lock)"
    );
    eprintln!(
        "answered during the exchange, {:?} after it began",
        started.elapsed()
    );
    assert!(ls.contains(&DOCKER_NID[..12]), "{ls}");
    assert!(
        v["Containers"].as_object().is_none_or(|c| c.is_empty()),
        "{v}"
    );
    assert!(other.get("Err").is_none(), "{other}");
    let answer = creating.join().expect("thread").expect("an answer");
    let err = answer["Err"].as_str().unwrap_or_default();
    assert!(
        err.contains("no DHCP server answered") && err.contains("nothing was left behind"),
        "{answer}"
    );
    assert_eq!(reservation_files(&w), "", "a reservation is left");
    assert_eq!(links(&w), links_before, "the probe left an interface");
    // The network is empty: Docker can delete it.
    docker_delete_network(&w);

    // Killed during the exchange: nothing is left after the restart.
    create_network(&w);
    let eid = format!("d4c93{}", "0".repeat(59));
    let creating = spawn_create_endpoint(&w, &eid);
    assert!(wait_pending(&w, &eid), "{}", w.daemon_log());
    w.kill_daemon(libc::SIGKILL);
    let answer = creating.join().expect("thread");
    assert!(
        answer.as_ref().is_none_or(|a| a.get("Err").is_some()),
        "a CreateEndpoint whose daemon died succeeded: {answer:?}"
    );
    w.start_daemon();
    assert_eq!(reservation_files(&w), "", "a reservation is left");
    assert_eq!(links(&w), links_before, "an interface is left");

    // With a server: the lease is answered, recorded, and given back at DeleteEndpoint.
    let server = dhcp_server(&w, &lan.gw, &["--no-ping"]);
    let eid = format!("d4c94{}", "0".repeat(59));
    let made = docker_create_endpoint(&w, &eid);
    let cidr = made["Interface"]["Address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address: {made}\n{}", w.daemon_log()))
        .to_string();
    let a = addr(&cidr);
    assert!(in_range(&a) && cidr.ends_with("/24"), "{made}");
    assert!(
        server
            .wait_leases(|t| t.contains(&format!(" {a} ")))
            .contains(&format!(" {a} ")),
        "{}",
        server.leases_text()
    );
    assert_ne!(reservation_files(&w), "", "the reservation is recorded");
    let v = docker_delete_endpoint(&w, &eid);
    assert_eq!(v, serde_json::json!({}), "{}", w.daemon_log());
    assert_released(&server, &a, "DeleteEndpoint");
    assert!(
        w.daemon_log().contains(&format!("DHCP lease {a} released")),
        "{}",
        w.daemon_log()
    );
    assert_eq!(reservation_files(&w), "", "a reservation is left");
    assert_eq!(links(&w), links_before, "an interface is left");
    docker_delete_network(&w);
}
