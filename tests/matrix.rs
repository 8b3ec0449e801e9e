//! Every driver × mode × flag on an internal network with three endpoints in two subnets:
//! the reachability matrix the real binary produces (ping between namespaces) must equal the
//! one the kernel drivers give (`docs/conformance.md`; `docs/modes.md` draws each mode).
//!
//! e1 = 192.0.2.10 and e2 = 192.0.2.11 share a subnet; e3 = 198.51.100.10 is in the other.
//! Internal networks have no wire: vepa traffic that would need a hairpinning switch is lost;
//! L2 endpoints have no default route; L3 endpoints keep `default dev eth0`.

use uvlan_system_tests::World;

const E: [(&str, &str); 3] = [
    ("e1", "192.0.2.10"),
    ("e2", "192.0.2.11"),
    ("e3", "198.51.100.10"),
];
const PAIRS: [(usize, usize); 6] = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)];

/// Expected reachability for (same subnet, cross subnet).
fn expected(driver: &str, mode: &str, flag: &str) -> (bool, bool) {
    match (driver, mode, flag) {
        ("ipvlan", "l2", "bridge") => (true, false),
        ("ipvlan", "l2", _) => (false, false), // private: dropped; vepa: needs the wire
        ("ipvlan", _, "bridge") => (true, true), // l3/l3s route between subnets of one master
        ("ipvlan", _, _) => (false, false),
        ("macvlan", "bridge", _) => (true, false),
        ("macvlan", _, _) => (false, false), // vepa/private need the wire; source never local
        _ => unreachable!(),
    }
}

fn run_case(w: &mut World, driver: &str, mode: &str, flag: &str) {
    let net = format!("{}{}{}", &driver[..2], mode, flag);
    let mut args = vec![
        "network",
        "create",
        "-d",
        driver,
        "--internal",
        "--subnet",
        "192.0.2.0/24",
        "--subnet",
        "198.51.100.0/24",
    ];
    let (o1, o2);
    if driver == "ipvlan" {
        o1 = format!("ipvlan_mode={mode}");
        o2 = format!("ipvlan_flag={flag}");
        args.extend(["-o", &o1, "-o", &o2]);
    } else {
        o1 = format!("macvlan_mode={mode}");
        args.extend(["-o", &o1]);
    }
    args.push(&net);
    w.uvlan_ok(&args);
    for (name, ip) in E {
        let ns = format!("{net}{name}");
        let full = w.netns(&ns);
        w.uvlan_ok(&["network", "connect", "--ip", ip, &net, &full]);
    }
    let (same, cross) = expected(driver, mode, flag);
    let mut got = Vec::new();
    let mut want = Vec::new();
    for (a, b) in PAIRS {
        let expect = if E[a].1.starts_with("192.0.2") == E[b].1.starts_with("192.0.2") {
            same
        } else {
            cross
        };
        let reached = w.ping(
            &format!("{net}{}", E[a].0),
            E[b].1,
            if expect { 4 } else { 1 },
        );
        got.push(format!("{}->{}:{}", E[a].0, E[b].0, reached));
        want.push(format!("{}->{}:{}", E[a].0, E[b].0, expect));
    }
    assert_eq!(
        got,
        want,
        "{driver} {mode} {flag}\n--- daemon log ---\n{}",
        w.daemon_log()
    );
    for (name, _) in E {
        let full = w.ns(&format!("{net}{name}"));
        w.uvlan_ok(&["network", "disconnect", &net, &full]);
    }
    w.uvlan_ok(&["network", "rm", &net]);
}

#[test]
fn ipvlan_l2_matrix() {
    let mut w = World::new();
    for flag in ["bridge", "private", "vepa"] {
        run_case(&mut w, "ipvlan", "l2", flag);
    }
}

#[test]
fn ipvlan_l3_matrix() {
    let mut w = World::new();
    for flag in ["bridge", "private", "vepa"] {
        run_case(&mut w, "ipvlan", "l3", flag);
    }
}

#[test]
fn ipvlan_l3s_matrix() {
    let mut w = World::new();
    for flag in ["bridge", "private", "vepa"] {
        run_case(&mut w, "ipvlan", "l3s", flag);
    }
}

#[test]
fn macvlan_matrix() {
    let mut w = World::new();
    for mode in ["bridge", "vepa", "private", "source"] {
        run_case(&mut w, "macvlan", mode, "");
    }
}

#[test]
fn macvlan_passthru_takes_one_endpoint_only() {
    let mut w = World::new();
    w.create("-d macvlan --internal --subnet 192.0.2.0/24 -o macvlan_mode=passthru pt");
    let a = w.netns("pta");
    let b = w.netns("ptb");
    w.uvlan_ok(&["network", "connect", "pt", &a]);
    let o = w.uvlan(&["network", "connect", "pt", &b]);
    assert!(
        !o.status.success(),
        "a second passthru endpoint must be refused"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err}");
}
