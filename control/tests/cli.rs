//! The real `uvlan` binary against a private daemon (root): network create/ls/inspect/rm,
//! Docker's error texts with the state unchanged, endpoints in namespaces, restart after
//! `kill -9`, `run --rm`, trace.
//!
//! Each test builds its own world: a `uvt-<pid>-<n>h` namespace the daemon runs in (so a
//! parent is always a veth the test made there), its own state directory and socket, and
//! `uvt-<pid>-<n>X` namespaces for endpoints. Drop guards kill the daemon and delete the
//! namespaces even when a test fails.
//!
//! Traffic between endpoints is checked with real `ping`.

use std::ops::{Deref, DerefMut};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use uvlan_system_tests::World as Base;

const BIN: &str = env!("CARGO_BIN_EXE_uvlan");

fn sh(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The system tests' world (a private daemon in its own `host` namespace, test namespaces,
/// cleanup on drop) with this file's assertions on top.
struct World(Base);

impl Deref for World {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.0
    }
}

impl DerefMut for World {
    fn deref_mut(&mut self) -> &mut Base {
        &mut self.0
    }
}

impl World {
    fn new() -> World {
        // The harness finds target/<profile>/uvlan: the binary this package builds.
        assert_eq!(uvlan_system_tests::uvlan_bin(), std::path::Path::new(BIN));
        World(Base::new())
    }

    fn log(&self) -> String {
        self.daemon_log()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.uvlan(args);
        assert!(
            o.status.success(),
            "uvlan {} failed: {}\n--- daemon log ---\n{}",
            args.join(" "),
            text(&o.stderr),
            self.log()
        );
        text(&o.stdout)
    }

    /// Runs a failing command: exit ≠ 0, exactly one line on stderr, which is returned.
    fn fail(&self, args: &[&str]) -> String {
        let o = self.uvlan(args);
        let err = text(&o.stderr);
        assert!(
            !o.status.success(),
            "uvlan {} succeeded: {}",
            args.join(" "),
            text(&o.stdout)
        );
        assert_eq!(err.lines().count(), 1, "uvlan {}: {err:?}", args.join(" "));
        err.trim_end().to_string()
    }

    fn ip(&self, s: &str, args: &[&str]) -> String {
        let ns = self.ns(s);
        let o = sh(Command::new("ip").arg("-n").arg(&ns).args(args));
        text(&o.stdout)
    }

    /// A parent for networks: the veth `p0` (down) in the daemon's namespace, its peer `p1`.
    fn add_parent(&self) {
        sh(Command::new("ip").args([
            "-n",
            &self.ns("host"),
            "link",
            "add",
            "p0",
            "type",
            "veth",
            "peer",
            "name",
            "p1",
        ]));
    }

    fn ping(&self, s: &str, addr: &str) -> bool {
        self.0.ping(s, addr, 3)
    }

    /// What a user can observe of the networks: ls (JSON) and inspect of every network.
    fn observe(&self) -> String {
        let ls = self.ok(&["network", "ls", "--format", "json", "--no-trunc"]);
        let mut out = ls.clone();
        for line in ls.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push_str(&self.ok(&["network", "inspect", v["Name"].as_str().unwrap()]));
        }
        out
    }
}

fn inspect(w: &World, net: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&w.ok(&["network", "inspect", net])).unwrap();
    v[0].clone()
}

#[test]
fn create_ls_inspect_rm() {
    let w = World::new();
    w.add_parent();
    let id = w.create("-d ipvlan --subnet 192.0.2.0/24 -o ipvlan_mode=l3 net2");
    let id = id.trim();
    assert_eq!(id.len(), 64);
    w.create("-d macvlan -o parent=p0.20 net10");
    w.create("-d ipvlan --internal -o parent=p0 net1");

    let ls = w.ok(&["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines[0], "NETWORK ID     NAME      DRIVER    SCOPE");
    assert_eq!(lines.len(), 4);
    assert!(lines[1].contains("  net1  "), "natural order: {ls}");
    assert!(
        lines[2].starts_with(&format!("{}   net2 ", &id[..12])),
        "{ls}"
    );
    assert!(lines[3].contains("net10     macvlan   local"), "{ls}");

    let n2 = inspect(&w, "net2");
    assert_eq!(n2["Id"], id);
    assert_eq!(n2["Driver"], "ipvlan");
    assert_eq!(n2["Options"], serde_json::json!({"ipvlan_mode": "l3"}));
    assert_eq!(n2["IPAM"]["Config"][0]["Subnet"], "192.0.2.0/24");
    assert_eq!(n2["IPAM"]["Config"][0]["Gateway"], "192.0.2.1");
    let n10 = inspect(&w, "net10");
    assert_eq!(n10["UvlanWire"]["Parent"], "p0");
    assert_eq!(n10["UvlanWire"]["VlanID"], 20);
    assert_eq!(n10["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    let n1 = inspect(&w, "net1");
    assert_eq!(n1["Internal"], true);
    assert!(n1["UvlanWire"]["Mode"]
        .as_str()
        .unwrap()
        .starts_with("internal"));
    // Output format: a JSON array with 4-space indent.
    assert!(w
        .ok(&["network", "inspect", "net2"])
        .starts_with("[\n    {\n        \"Name\": \"net2\",\n"));

    let rm = w.ok(&["network", "rm", "net1", "net2", "net10"]);
    assert_eq!(rm, "net1\nnet2\nnet10\n");
    assert_eq!(w.ok(&["network", "ls", "-q"]), "");
    let files = std::fs::read_dir(w.dir.join("root/networks"))
        .unwrap()
        .count();
    assert_eq!(files, 0, "rm leaves no state behind");
    let o = w.uvlan(&["network", "inspect", "net2"]);
    assert_eq!(text(&o.stdout), "[]\n");
    assert_eq!(text(&o.stderr), "Error: No such network: net2\n");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn error_matrix_one_line_and_state_unchanged() {
    let mut w = World::new();
    w.add_parent();
    let a = w.netns("a");
    let b = w.netns("b");
    w.create("-d ipvlan --subnet 192.0.2.0/24 -o parent=p0.20 held");
    w.create("-d macvlan --subnet 198.51.100.0/24 mv");
    // Subnets from the default pools (none given).
    w.ok(&["network", "create", "-d", "ipvlan", "pooled"]);
    w.ok(&["network", "connect", "--ip", "192.0.2.10", "held", &a]);
    w.ok(&[
        "network",
        "connect",
        "--mac-address",
        "02:00:00:00:aa:01",
        "mv",
        &a,
    ]);
    // The endpoint of `held` (eth0 in a) has no carrier: its parent p0 is down. The kernel
    // applies the operational state of such a (non-urgent) carrier change in its linkwatch
    // work, up to a second later, so `ip -br addr` would turn from UNKNOWN to DOWN under
    // the test on a slow host: wait for it before taking the pictures (the state that
    // `observe` shows and the addresses `ip -br` prints).
    let t = Instant::now();
    while !w
        .ip("a", &["-br", "link", "show", "eth0"])
        .contains(" DOWN ")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "eth0 in {a} never lost its carrier: {}",
            w.ip("a", &["-br", "link"])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = w.observe();
    let addrs_before = (w.ip("a", &["-br", "addr"]), w.ip("b", &["-br", "addr"]));
    let d = "Error response from daemon: ";
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["network", "create", "n"], "no network driver given: use -d ipvlan or -d macvlan (uvlan has no bridge driver, so unlike docker it needs -d)".into()),
        (vec!["network", "create", "-d", "bridge", "n"], format!("{d}unknown network driver \"bridge\": uvlan provides the ipvlan and macvlan drivers (-d ipvlan or -d macvlan); it has no bridge, overlay or host driver")),
        (vec!["network", "create", "-d", "ipvlan", "-o", "ipvlan_mod=l3", "n"], format!("{d}unknown ipvlan option \"ipvlan_mod\": the known options are parent, ipvlan_mode, ipvlan_flag, uvlan.host_interface (and com.docker.network.* keys, which are stored)")),
        (vec!["network", "create", "-d", "ipvlan", "-o", "ipvlan_mode=L3", "n"], format!("{d}requested ipvlan mode 'L3' is not valid, 'l2' mode is the ipvlan driver default")),
        (vec!["network", "create", "-d", "ipvlan", "-o", "ipvlan_flag=no", "n"], format!("{d}requested ipvlan flag 'no' is not valid, 'bridge' is the ipvlan driver default")),
        (vec!["network", "create", "-d", "macvlan", "-o", "macvlan_mode=l2", "n"], format!("{d}requested macvlan mode 'l2' is not valid, 'bridge' mode is the macvlan driver default")),
        (vec!["network", "create", "-d", "macvlan", "-o", "parent=p0.4095", "n"], format!("{d}vlan id must be between 1-4094, received: 4095")),
        (vec!["network", "create", "-d", "ipvlan", "-o", "parent=p0.x", "n"], format!("{d}unable to parse a valid vlan id from: x (ex. eth0.10 for vlan 10)")),
        (vec!["network", "create", "-d", "ipvlan", "-o", "parent=p0.1.2", "n"], format!("{d}required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received p0.1.2")),
        (vec!["network", "create", "-d", "ipvlan", "-o", "parent=nope0", "n"], format!("{d}invalid subinterface vlan name nope0, example formatting is eth0.10")),
        (vec!["network", "create", "-d", "ipvlan", "-o", "parent=nope0.5", "n"], format!("{d}-o parent interface was not found on the host: nope0")),
        (vec!["network", "create", "-d", "macvlan", "-o", "parent=lo", "n"], format!("{d}loopback interface is not a valid macvlan parent link")),
        (vec!["network", "create", "-d", "macvlan", "-o", "parent=p0.20", "n"], format!("{d}network held is already using parent interface p0.20")),
        (vec!["network", "create", "-d", "ipvlan", "--subnet", "192.0.2.0/24", "--gateway", "198.51.100.1", "n"], "no matching subnet for gateway 198.51.100.1".into()),
        (vec!["network", "create", "-d", "ipvlan", "--subnet", "203.0.113.0/24", "--ip-range", "192.0.2.0/25", "n"], "no matching subnet for range 192.0.2.0/25".into()),
        (vec!["network", "create", "-d", "ipvlan", "--subnet", "203.0.113.0/24", "--aux-address", "r=192.0.2.9", "n"], "no matching subnet for aux-address 192.0.2.9".into()),
        (vec!["network", "create", "-d", "ipvlan", "--subnet", "192.0.2.0/25", "n"], format!("{d}invalid pool request: Pool overlaps with other one on this address space")),
        (vec!["network", "create", "-d", "ipvlan", "held"], format!("{d}network with name held already exists")),
        (vec!["network", "connect", "held", "uvt-no-such"], format!("{d}network namespace \"uvt-no-such\" not found: is it under /run/netns? (create it with \"ip netns add uvt-no-such\")")),
        (vec!["network", "connect", "held", &a], format!("{d}endpoint with name {a} already exists in network held")),
        (vec!["network", "connect", "--ip", "203.0.113.5", "held", &b], format!("{d}invalid endpoint settings: no configured subnet contains IP address 203.0.113.5")),
        (vec!["network", "connect", "--ip", "192.0.2.10", "held", &b], format!("{d}Address already in use")),
        (vec!["network", "connect", "--ip", "172.17.0.50", "pooled", &b], format!("{d}user specified IP address is supported only when connecting to networks with user configured subnets")),
        (vec!["network", "connect", "--ip6", "2001:db8::5", "held", &b], format!("{d}user specified IP address is supported only when connecting to networks with user configured subnets")),
        (vec!["network", "connect", "--ip", "192.0.2.1", "held", &b], format!("{d}Address already in use")),
        (vec!["network", "connect", "--mac-address", "02:00:00:00:aa:02", "held", &b], format!("{d}failed to create endpoint {b} on network held: ipvlan interfaces do not support custom mac address assignment")),
        (vec!["network", "connect", "--mac-address", "02:00:00:00:aa:01", "mv", &b], format!("{d}failed to create endpoint {b} on network mv: MAC address 02:00:00:00:aa:01 is already used by endpoint {a} of network mv: macvlan MACs must be unique on a parent")),
        (vec!["network", "disconnect", "held", &b], format!("{d}container {b} is not connected to the network held")),
        (vec!["network", "connect", "nonet", &b], format!("{d}network nonet not found")),
    ];
    for (args, want) in &cases {
        assert_eq!(&w.fail(args), want, "uvlan {}", args.join(" "));
        assert_eq!(
            w.observe(),
            before,
            "state changed after uvlan {}",
            args.join(" ")
        );
    }
    // rm of a network with endpoints: one line, exit 1, nothing removed.
    let e = w.fail(&["network", "rm", "held"]);
    assert!(
        e.starts_with(&format!(
            "{d}error while removing network: network held has active endpoints (name:\"{a}\" id:\""
        )),
        "{e}"
    );
    assert_eq!(w.observe(), before);
    assert_eq!(
        (w.ip("a", &["-br", "addr"]), w.ip("b", &["-br", "addr"])),
        addrs_before,
        "no interface appeared or changed"
    );
    // The daemon down: the client says so.
    w.kill_daemon(libc::SIGTERM);
    assert_eq!(
        w.fail(&["network", "ls"]),
        format!(
            "cannot reach the uvlan daemon at {}: is \"uvlan daemon\" running?",
            w.socket().display()
        )
    );
}

#[test]
fn internal_ipvlan_l2_endpoints() {
    let mut w = World::new();
    let a = w.netns("a");
    let b = w.netns("b");
    w.create("-d ipvlan --internal --subnet 192.0.2.0/24 --ipv6 --subnet 2001:db8:1::/64 l2net");
    w.ok(&["network", "connect", "l2net", &a]);
    w.ok(&["network", "connect", "--ip", "192.0.2.20", "l2net", &b]);
    let la = w.ip("a", &["-d", "addr", "show", "eth0"]);
    assert!(la.contains("inet 192.0.2.2/24"), "{la}");
    assert!(la.contains("inet6 2001:db8:1::2/64"), "{la}");
    let link = w.ip("a", &["-d", "link", "show", "eth0"]);
    assert!(link.contains("addrgenmode none"), "{link}");
    assert!(!la.contains("NOARP"), "l2 keeps ARP: {la}");
    let lb = w.ip("b", &["addr", "show", "eth0"]);
    assert!(lb.contains("inet 192.0.2.20/24"), "{lb}");
    // Both carry the network's one MAC; their link-locals differ (per-port dev_id).
    let mac = |s: &str| {
        s.split("link/ether ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .to_string()
    };
    assert_eq!(mac(&la), mac(&lb));
    let ll = |s: &str| {
        s.lines()
            .find(|l| l.contains("inet6 fe80"))
            .map(str::to_string)
            .unwrap()
    };
    assert_ne!(ll(&la), ll(&lb));
    // Internal l2: connected routes only.
    assert!(!w.ip("a", &["route"]).contains("default"));
    assert!(!w.ip("a", &["-6", "route"]).contains("default"));
    let n = inspect(&w, "l2net");
    let eps = n["Containers"].as_object().unwrap();
    assert_eq!(eps.len(), 2);
    assert!(eps.values().all(|e| e["MacAddress"] == ""));
    assert!(w
        .ok(&["trace", "l2net", "--from", &a, "--to", "192.0.2.20"])
        .contains(&format!("verdict: deliver to port {b}")));
    assert!(w.ping("a", "192.0.2.20"), "{}", w.log());
    assert!(w.ping("b", "2001:db8:1::2"), "{}", w.log());
    w.ok(&["network", "disconnect", "l2net", &a]);
    w.ok(&["network", "disconnect", "l2net", &b]);
    assert!(
        !w.ip("a", &["-br", "link"]).contains("eth0"),
        "disconnect leaves no TAP"
    );
    assert!(!w.ip("b", &["-br", "link"]).contains("eth0"));
    assert_eq!(inspect(&w, "l2net")["Containers"], serde_json::json!({}));
    // Addresses were freed: a new endpoint gets .2 again.
    w.ok(&["network", "connect", "l2net", &b]);
    assert!(w.ip("b", &["addr"]).contains("192.0.2.2/24"));
}

#[test]
fn routes_and_macs_per_mode() {
    let mut w = World::new();
    w.add_parent();
    sh(Command::new("ip").args(["-n", &w.ns("host"), "link", "set", "p0", "up"]));
    let a = w.netns("a");
    let b = w.netns("b");
    // l3 without a parent: default dev eth0, NOARP.
    w.create("-d ipvlan -o ipvlan_mode=l3 --subnet 192.0.2.0/24 l3net");
    w.ok(&["network", "connect", "l3net", &a]);
    let r = w.ip("a", &["route"]);
    assert!(r.contains("default dev eth0"), "{r}");
    assert!(w.ip("a", &["link", "show", "eth0"]).contains("NOARP"));
    // macvlan with a parent: default via the gateway, a random local MAC, eth1 next.
    w.create("-d macvlan -o parent=p0 --subnet 198.51.100.0/24 mv");
    w.ok(&["network", "connect", "mv", &a]);
    let r = w.ip("a", &["route"]);
    assert!(r.contains("default via 198.51.100.1 dev eth1"), "{r}");
    let n = inspect(&w, "mv");
    let ep = n["Containers"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    let mac = ep["MacAddress"].as_str().unwrap().to_string();
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 3, 2, "unicast, locally administered: {mac}");
    assert!(w.ip("a", &["link", "show", "eth1"]).contains(&mac));
    assert!(n["UvlanWire"]["Mode"].as_str().is_some());
    // ipvlan l2 on a parent: the parent's MAC.
    w.create("-d ipvlan -o parent=p0.7 --subnet 203.0.113.0/24 l2vlan");
    w.ok(&["network", "connect", "l2vlan", &b]);
    let pmac = w.ip("host", &["link", "show", "p0"]);
    let pmac = pmac
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(w.ip("b", &["link", "show", "eth0"]).contains(pmac));
    assert!(w
        .ip("b", &["route"])
        .contains("default via 203.0.113.1 dev eth0"));
    let t = w.ok(&["trace", "l2vlan", "--from", "wire", "--to", "203.0.113.2"]);
    assert!(t.contains("(802.1Q VID 7)"), "{t}");
    assert!(t.contains(&format!("deliver to port {b}")), "{t}");
}

#[test]
fn kill_9_and_restart_keep_eth0() {
    let mut w = World::new();
    let a = w.netns("a");
    let b = w.netns("b");
    w.create("-d ipvlan --internal --subnet 192.0.2.0/24 l2");
    w.ok(&["network", "connect", "l2", &a]);
    w.ok(&["network", "connect", "l2", &b]);
    let before = w.observe();
    w.kill_daemon(libc::SIGKILL);
    let la = w.ip("a", &["addr", "show", "eth0"]);
    assert!(
        la.contains("inet 192.0.2.2/24"),
        "eth0 survives the daemon: {la}"
    );
    w.start_daemon();
    assert_eq!(w.observe(), before);
    let la = w.ip("a", &["addr", "show", "eth0"]);
    assert!(la.contains("LOWER_UP"), "re-attached: {la}");
    assert!(w.ping("a", "192.0.2.3"), "{}", w.log());
    // A namespace deleted while the daemon was down: its endpoint is dropped at restart.
    w.kill_daemon(libc::SIGKILL);
    sh(Command::new("ip").args(["netns", "delete", &b]));
    w.start_daemon();
    let n = inspect(&w, "l2");
    assert_eq!(n["Containers"].as_object().unwrap().len(), 1);
    assert!(w.log().contains("its namespace is gone"), "{}", w.log());
    w.ok(&["network", "disconnect", "l2", &a]);
    w.ok(&["network", "rm", "l2"]);
}

#[test]
fn run_rm_and_detach() {
    let w = World::new();
    w.create("-d macvlan --internal --subnet 192.0.2.0/24 mv");
    let name = w.ns("r1");
    let out = w.ok(&[
        "run", "--net", "mv", "--name", &name, "--rm", "--", "ip", "-br", "addr", "show", "eth0",
    ]);
    assert!(out.contains("192.0.2.2/24"), "{out}");
    let list = text(&sh(Command::new("ip").args(["netns", "list"])).stdout);
    assert!(
        !list.contains(&name),
        "run --rm deletes the namespace: {list}"
    );
    assert_eq!(inspect(&w, "mv")["Containers"], serde_json::json!({}));
    // The command's exit status is uvlan's.
    let o = w.uvlan(&["run", "--net", "mv", "--rm", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let o = w.uvlan(&["run", "--net", "mv", "--rm", "--", "/no/such/cmd"]);
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(inspect(&w, "mv")["Containers"], serde_json::json!({}));
    // -d --rm: the daemon removes it when the process exits.
    let name2 = w.ns("r2");
    let printed = w.ok(&[
        "run", "--net", "mv", "--name", &name2, "-d", "--rm", "--", "sleep", "1",
    ]);
    assert_eq!(printed.trim(), name2);
    assert_eq!(
        inspect(&w, "mv")["Containers"].as_object().unwrap().len(),
        1
    );
    let t = Instant::now();
    loop {
        let gone = inspect(&w, "mv")["Containers"] == serde_json::json!({})
            && !text(&sh(Command::new("ip").args(["netns", "list"])).stdout).contains(&name2);
        if gone {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{}", w.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let files: Vec<_> = std::fs::read_dir(w.dir.join("root/networks"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    w.ok(&["network", "rm", "mv"]);
}

#[test]
fn non_root_clients_are_refused() {
    let w = World::new();
    let o = sh(Command::new(BIN)
        .args(["network", "ls"])
        .env("UVLAN_SOCKET", w.socket())
        .uid(65534)
        .gid(65534));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "permission denied on {}: the uvlan API is for root only; run the command as root\n",
            w.socket().display()
        )
    );
}

use std::os::unix::process::CommandExt;

#[test]
fn learned_addresses_and_proc_paths() {
    let mut w = World::new();
    let a = w.netns("a");
    let b = w.netns("b");
    w.create("-d ipvlan --internal --subnet 192.0.2.0/24 l2");
    w.ok(&["network", "connect", "--ip", "192.0.2.10", "l2", &a]);
    // Attach b by the netns file of a process living in it.
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &b, "sleep", "30"])
        .spawn()
        .unwrap();
    let path = format!("/proc/{}/ns/net", sleeper.id());
    let t = Instant::now();
    while std::fs::read_link(&path).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    w.ok(&["network", "connect", "--ip", "192.0.2.20", "l2", &path]);
    let n = inspect(&w, "l2");
    assert!(n["Containers"]
        .as_object()
        .unwrap()
        .values()
        .any(|e| e["Name"] == path.as_str()));
    // An address added inside a is learned (the engine delivers it to a) ...
    let o = sh(Command::new("ip").args(["-n", &a, "addr", "add", "192.0.2.77/24", "dev", "eth0"]));
    assert!(o.status.success());
    let owner = |w: &World| {
        let t = w.ok(&["trace", "l2", "--from", &path, "--to", "192.0.2.77"]);
        t.lines().last().unwrap_or_default().to_string()
    };
    let t = Instant::now();
    while owner(&w) != format!("verdict: deliver to port {a} (PACKET_HOST)") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", owner(&w));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(w.ping("b", "192.0.2.77"), "{}", w.log());
    // ... the same address added in b conflicts: the first owner keeps it, logged.
    sh(Command::new("ip").args([
        "netns",
        "exec",
        &b,
        "ip",
        "addr",
        "add",
        "192.0.2.77/24",
        "dev",
        "eth0",
    ]));
    let t = Instant::now();
    while !w.log().contains("address conflict: 192.0.2.77") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", w.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        owner(&w),
        format!("verdict: deliver to port {a} (PACKET_HOST)")
    );
    // Removed inside a: no owner any more.
    sh(Command::new("ip").args(["-n", &a, "addr", "del", "192.0.2.77/24", "dev", "eth0"]));
    let t = Instant::now();
    while owner(&w).contains("deliver to port") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", owner(&w));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Link down inside a: its addresses stop matching (C12).
    sh(Command::new("ip").args(["-n", &a, "link", "set", "eth0", "down"]));
    let t = Instant::now();
    loop {
        let v = w.ok(&["trace", "l2", "--from", &path, "--to", "192.0.2.10"]);
        if !v.contains(&format!("deliver to port {a}")) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    w.ok(&["network", "disconnect", "l2", &path]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// `uvlan stats` counts what endpoints send and receive and why frames were dropped, with
/// the engine's drop reasons (the ones `uvlan trace` names).
#[test]
fn stats_count_frames_and_drop_reasons() {
    let mut w = World::new();
    let (a, b, c) = (w.netns("a"), w.netns("b"), w.netns("c"));
    w.create("-d ipvlan --subnet 192.0.2.0/24 open");
    w.create("-d ipvlan --subnet 198.51.100.0/24 -o ipvlan_flag=private closed");
    w.ok(&["network", "connect", "--ip", "192.0.2.10", "open", &a]);
    w.ok(&["network", "connect", "--ip", "192.0.2.11", "open", &b]);
    w.ok(&["network", "connect", "--ip", "198.51.100.10", "closed", &c]);
    w.ok(&["network", "connect", "--ip", "198.51.100.11", "closed", &a]);
    assert!(w.ping("a", "192.0.2.11"));
    assert!(!w.0.ping("c", "198.51.100.11", 1), "private delivered");
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&w.ok(args)).expect("stats JSON")
    };
    let r = json(&["stats", "--format", "json"]);
    let ep = |net: &str, name: &str| {
        r["networks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == net)
            .and_then(|n| {
                n["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == name)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("{net}/{name} missing: {r:#}"))
    };
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    // At least an ARP exchange and one echo each way.
    assert!(n(&ep("open", &a), "sent_frames") >= 2, "{r:#}");
    assert!(n(&ep("open", &b), "received_frames") >= 2, "{r:#}");
    assert!(n(&ep("open", &b), "sent_frames") >= 2, "{r:#}");
    // Private: c's ARP broadcast still reaches a (C17), a's unicast answer is dropped (C19).
    assert!(n(&ep("closed", &c), "sent_frames") >= 1, "{r:#}");
    assert!(n(&ep("closed", &a), "received_frames") >= 1, "{r:#}");
    assert!(
        r["drops"]["private_flag"].as_u64().unwrap_or(0) >= 1,
        "{r:#}"
    );
    // One network only; the table names the reason too.
    let only = json(&["stats", "--format", "json", "closed"]);
    assert_eq!(only["networks"].as_array().unwrap().len(), 1);
    let table = w.ok(&["stats"]);
    assert!(table.starts_with("NETWORK"), "{table}");
    assert!(table.contains("private_flag"), "{table}");
    assert_eq!(
        w.fail(&["stats", "nope"]),
        "Error response from daemon: network nope not found"
    );
}

/// ipvlan L3 egress asks the host's routing and neighbour tables, and `uvlan trace` shows what
/// they answer, through the daemon's own next-hop cache and resolver, as the datapath sees it.
/// The host namespace has no route beyond the parent: an IPv6 destination is unreachable; an
/// IPv4 destination is taken as on-link on the parent (`oif = parent`, C29), so the host
/// starts ARP and the packet waits for its neighbour; once the host has a neighbour entry the
/// packet is routed to that MAC. `uvlan stats` counts the same reasons for real traffic.
#[test]
fn trace_shows_the_hosts_answer_for_routed_egress() {
    let mut w = World::new();
    let host = w.ns("host");
    for args in [
        &["link", "add", "p0", "type", "veth", "peer", "name", "p1"][..],
        &["link", "set", "p0", "up"],
        &["link", "set", "p1", "up"],
    ] {
        assert!(sh(Command::new("ip").arg("-n").arg(&host).args(args))
            .status
            .success());
    }
    let a = w.netns("a");
    w.create("-d ipvlan -o ipvlan_mode=l3 -o parent=p0 --subnet 198.51.100.0/24 --ipv6 --subnet 2001:db8:1::/64 l3");
    w.ok(&["network", "connect", "l3", &a]);
    let verdict = |t: &str| t.lines().last().unwrap_or_default().to_string();

    // IPv6 without a route: ip6_route_output fails.
    let t = w.ok(&["trace", "l3", "--from", &a, "--to", "2001:db8:ffff::99"]);
    assert!(
        verdict(&t).starts_with("verdict: DROP (route_unreachable)"),
        "{t}"
    );
    assert!(t.contains("route      ip6_route_output"), "{t}");
    assert!(t.contains("no route"), "{t}");

    // IPv4 without a route: on-link on the parent, the host resolves it.
    let t = w.ok(&["trace", "l3", "--from", &a, "--to", "203.0.113.99"]);
    assert!(
        verdict(&t).starts_with("verdict: DROP (neighbour_pending)"),
        "{t}"
    );
    assert!(t.contains("route      ip_route_output_flow"), "{t}");
    assert!(t.contains("route      neigh_output"), "{t}");

    // A neighbour entry on the host: routed to its MAC (the daemon drops its cached answers
    // when the host's neighbours change).
    let nh = "02:00:00:00:63:63";
    assert!(sh(Command::new("ip").args([
        "-n",
        &host,
        "neigh",
        "replace",
        "203.0.113.99",
        "lladdr",
        nh,
        "dev",
        "p0",
        "nud",
        "permanent",
    ]))
    .status
    .success());
    let start = Instant::now();
    loop {
        let t = w.ok(&["trace", "l3", "--from", &a, "--to", "203.0.113.99"]);
        if verdict(&t).starts_with(&format!(
            "verdict: route 203.0.113.99 out of parent p0 to next hop {nh}"
        )) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{t}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The datapath drops real traffic to the unroutable destination with the same reason.
    assert!(!w.0.ping("a", "2001:db8:ffff::99", 1));
    let r: serde_json::Value =
        serde_json::from_str(&w.ok(&["stats", "--format", "json"])).expect("stats JSON");
    assert!(
        r["drops"]["route_unreachable"].as_u64().unwrap_or(0) >= 1,
        "{r:#}"
    );
    let table = w.ok(&["stats"]);
    assert!(table.contains("route_unreachable"), "{table}");
}

#[test]
fn slash_31_point_to_point_in_every_mode() {
    let mut w = World::new();
    let h = w.ns("host");
    for args in [
        vec![
            "-n", &h, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
        ],
        vec!["-n", &h, "link", "set", "p0", "up"],
        vec!["-n", &h, "link", "set", "p1", "up"],
    ] {
        let o = sh(Command::new("ip").args(&args));
        assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
    }
    // RFC 3021: no network, broadcast or automatic gateway in a /31; both addresses go to
    // endpoints, which reach each other on the link (one VLAN of p0 per network).
    let cases = [
        ("p2pl2", "ipvlan", "ipvlan_mode=l2", "p0.31", "192.0.2.0"),
        ("p2pl3", "ipvlan", "ipvlan_mode=l3", "p0.32", "192.0.2.2"),
        (
            "p2pmv",
            "macvlan",
            "macvlan_mode=bridge",
            "p0.33",
            "192.0.2.4",
        ),
    ];
    for (net, driver, mode, parent, first) in cases {
        let subnet = format!("{first}/31");
        let parent = format!("parent={parent}");
        w.ok(&[
            "network", "create", "-d", driver, "--subnet", &subnet, "-o", &parent, "-o", mode, net,
        ]);
        let cfg = &inspect(&w, net)["IPAM"]["Config"][0];
        assert_eq!(cfg["Subnet"], subnet.as_str());
        assert!(cfg.get("Gateway").is_none(), "{net}: {cfg}");
        let (a, b) = (w.netns(&format!("{net}a")), w.netns(&format!("{net}b")));
        w.ok(&["network", "connect", net, &a]);
        w.ok(&["network", "connect", net, &b]);
        let last = first.rsplit_once('.').unwrap();
        let second = format!("{}.{}", last.0, last.1.parse::<u8>().unwrap() + 1);
        let addr_a = w.ip(&format!("{net}a"), &["-4", "-o", "addr", "show", "eth0"]);
        let addr_b = w.ip(&format!("{net}b"), &["-4", "-o", "addr", "show", "eth0"]);
        assert!(
            addr_a.contains(&format!("inet {first}/31")),
            "{net}: {addr_a}"
        );
        assert!(
            addr_b.contains(&format!("inet {second}/31")),
            "{net}: {addr_b}"
        );
        // No gateway: l2 and macvlan have the link route only; l3 keeps `default dev eth0`.
        let routes = w.ip(&format!("{net}a"), &["route"]);
        assert_eq!(
            routes.contains("default"),
            mode == "ipvlan_mode=l3",
            "{net}: {routes}"
        );
        assert!(
            w.ping(&format!("{net}a"), &second),
            "{net}: {first} cannot ping {second}\n{}",
            w.log()
        );
        assert!(
            w.ping(&format!("{net}b"), first),
            "{net}: {second} cannot ping {first}"
        );
        // The link is full.
        let c = w.netns(&format!("{net}c"));
        let full = w.fail(&["network", "connect", net, &c]);
        assert!(
            full.contains("no available IPv4 addresses on this network's address pools"),
            "{full}"
        );
    }
}

/// The interfaces of the root namespace, by name.
fn root_links() -> Vec<String> {
    text(&sh(Command::new("ip").args(["-o", "link"])).stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

#[test]
fn doctor_probes_for_real_and_leaves_nothing() {
    let w = World::new();
    // Named namespaces other than the test worlds' (`uvt…`, made and deleted by the tests
    // running beside this one): the doctor probes in unnamed ones and must add none.
    let named = || -> Vec<String> {
        text(&sh(Command::new("ip").args(["netns", "list"])).stdout)
            .lines()
            .filter(|l| !l.starts_with("uvt"))
            .map(str::to_string)
            .collect()
    };
    let netns_before = named();
    let o = sh(Command::new(BIN)
        .args(["doctor", "--format", "json"])
        .env("UVLAN_SOCKET", w.socket()));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&o.stdout), text(&o.stderr)));
    // The system tests run where uvlan works (they make TAPs and namespaces themselves).
    assert_eq!(o.status.code(), Some(0), "{r:#}");
    assert_eq!(r["works"], true);
    let status = |id: &str| {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id}: {r:#}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for id in ["netns", "tun", "bpf"] {
        assert_eq!(status(id), "ok", "{id}: {r:#}");
    }
    // The daemon of this world answers on its socket.
    let daemon = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "daemon")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(daemon.starts_with("running"), "{daemon}");
    assert_eq!(r["kernel_drivers"].as_array().unwrap().len(), 4);
    // Nothing left: no probe interface here, no namespace added.
    assert!(
        !root_links()
            .iter()
            .any(|l| l.starts_with("uvdoc") || l.starts_with("uvprobe")),
        "{:?}",
        root_links()
    );
    assert_eq!(named(), netns_before);
    // The text says the same on one screen.
    let o = sh(Command::new(BIN).arg("doctor"));
    let t = text(&o.stdout);
    assert!(t.ends_with("uvlan works here.\n"), "{t}");
    assert!(t.lines().count() <= 30, "{t}");
    // Not root: exit 1 with the reason, what needs no root still reported.
    let o = sh(Command::new(BIN).arg("doctor").uid(65534).gid(65534));
    let t = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(", not running as root\n"), "{t}");
    assert!(t.contains("TUN/TAP             skipped: needs root"), "{t}");
    assert!(
        t.ends_with(
            "uvlan cannot work here: uvlan's daemon runs as root: run uvlan doctor as root (or \
             with sudo) to probe namespaces, TAPs and BPF\n"
        ),
        "{t}"
    );
}

#[test]
fn sigterm_stops_the_daemon_well_within_the_units_timeout() {
    let unit = include_str!("../../packaging/uvlan.service");
    let timeout: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().strip_suffix('s'))
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec=Ns in packaging/uvlan.service");
    let mut w = World::new();
    w.create("-d ipvlan --subnet 192.0.2.0/24 -o ipvlan_mode=l3 stopnet");
    for n in ["a", "b", "c"] {
        let ns = w.netns(n);
        w.ok(&["network", "connect", "stopnet", &ns]);
    }
    let t = Instant::now();
    // SIGTERM, then SIGKILL after 5 s: a daemon that ends in time ends on its own.
    w.kill_daemon(libc::SIGTERM);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3).min(Duration::from_secs(timeout / 2)),
        "the daemon took {took:?} to stop (the unit allows {timeout} s)\n{}",
        w.log()
    );
    // Its endpoints stay in place for the next start.
    assert!(w.ip("a", &["link", "show", "eth0"]).contains("eth0"));
    assert!(!w.socket().exists(), "the API socket is removed");
}
