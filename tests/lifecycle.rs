//! `disconnect`, `network rm` and `run --rm` leave no link, namespace, file descriptor or state
//! behind, and `kill -9` of the daemon followed by a restart keeps the endpoints and traffic.

use std::time::{Duration, Instant};
use uvlan_system_tests::World;

fn links(w: &World, ns: &str) -> String {
    String::from_utf8_lossy(&w.exec(ns, "ip -br link").stdout).into_owned()
}

/// Name and MAC of each link (operstate left out: a re-attached TAP reports UP, a fresh one
/// UNKNOWN).
fn link_macs(w: &World, ns: &str) -> Vec<(String, String)> {
    links(w, ns)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(2)?.to_string()))
        })
        .collect()
}

fn state_files(w: &World) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![w.dir.join("root")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p.strip_prefix(&w.dir).unwrap_or(&p).display().to_string());
            }
        }
    }
    v.sort();
    v
}

/// The fd count settles (the dataplane closes TAPs between batches).
fn fds_settle(w: &World, want: usize) -> usize {
    let t = Instant::now();
    loop {
        let n = w.daemon_fds();
        if n <= want || t.elapsed() > Duration::from_secs(3) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn disconnect_and_rm_leave_nothing_behind() {
    let mut w = World::new();
    let before_files = state_files(&w);
    let before_fds = w.daemon_fds();
    for (driver, opt) in [
        ("ipvlan", "ipvlan_mode=l2"),
        ("macvlan", "macvlan_mode=bridge"),
    ] {
        let net = format!("life{driver}");
        w.create(&format!("-d {driver} --subnet 192.0.2.0/24 -o {opt} {net}"));
        let mut nss = Vec::new();
        for i in 0..3 {
            let ns = w.netns(&format!("{driver}{i}"));
            w.uvlan_ok(&["network", "connect", &net, &ns]);
            nss.push(format!("{driver}{i}"));
        }
        assert!(
            w.ping(&nss[0], "192.0.2.3", 4),
            "endpoints talk before teardown"
        );
        assert!(w.daemon_fds() > before_fds, "the daemon holds the TAPs");
        // `rm` of a network with endpoints is refused, and changes nothing
        let o = w.uvlan(&["network", "rm", &net]);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("has active endpoints"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        for ns in &nss {
            w.uvlan_ok(&["network", "disconnect", &net, &w.ns(ns)]);
            assert!(
                !links(&w, ns).contains("eth0"),
                "disconnect removed the TAP in {ns}"
            );
        }
        w.uvlan_ok(&["network", "rm", &net]);
    }
    assert_eq!(
        fds_settle(&w, before_fds),
        before_fds,
        "daemon fds back to where they were"
    );
    assert_eq!(state_files(&w), before_files, "no state left");
    assert_eq!(w.uvlan_ok(&["network", "ls", "-q"]).trim(), "");
}

#[test]
fn run_rm_removes_namespace_and_endpoint() {
    let w = World::new();
    w.create("-d ipvlan --internal --subnet 198.51.100.0/24 runnet");
    let name = format!("{}runrm", w.prefix);
    let out = w.uvlan_ok(&[
        "run", "--net", "runnet", "--name", &name, "--rm", "--", "ip", "-4", "-o", "addr", "show",
        "eth0",
    ]);
    assert!(out.contains("198.51.100."), "{out}");
    let nss = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!nss.contains(&name), "namespace removed: {nss}");
    let inspect = w.uvlan_ok(&["network", "inspect", "runnet"]);
    assert!(
        inspect.contains("\"Containers\": {}"),
        "endpoint removed: {inspect}"
    );
    // exit codes pass through
    let o = w.uvlan(&["run", "--net", "runnet", "--rm", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    w.uvlan_ok(&["network", "rm", "runnet"]);
}

#[test]
fn kill_9_and_restart_keep_endpoints_and_traffic() {
    let mut w = World::new();
    w.create("-d macvlan --internal --subnet 203.0.113.0/24 k9");
    w.connect("k9", "k9a", &["--ip", "203.0.113.10"]);
    w.connect("k9", "k9b", &["--ip", "203.0.113.11"]);
    assert!(w.ping("k9a", "203.0.113.11", 4));
    let mac_before = link_macs(&w, "k9a");
    w.kill_daemon(libc::SIGKILL);
    // the namespaces keep eth0 while the daemon is gone (persistent TAPs)
    assert!(links(&w, "k9a").contains("eth0"));
    assert!(
        !w.ping("k9a", "203.0.113.11", 1),
        "no dataplane, no traffic"
    );
    w.start_daemon();
    assert!(
        w.ping("k9a", "203.0.113.11", 6),
        "traffic resumes after the restart\n{}",
        w.daemon_log()
    );
    assert_eq!(link_macs(&w, "k9a"), mac_before, "same link, same MAC");
    let inspect = w.uvlan_ok(&["network", "inspect", "k9"]);
    assert!(
        inspect.contains("203.0.113.10/24") && inspect.contains("203.0.113.11/24"),
        "{inspect}"
    );
}

/// The rule for endpoints whose namespace cannot be used at start (docs/reliability.md):
/// a namespace that is gone (its file removed, `ip netns delete`) took the interface with
/// it, so the endpoint is removed with a log line and its address freed; one that cannot be
/// opened for another reason is kept, with its address, and can be disconnected once it can
/// be reached again. Nothing is dropped silently.
#[test]
fn namespaces_gone_or_unreachable_at_start() {
    let mut w = World::new();
    w.create("-d ipvlan --internal --subnet 198.51.100.0/24 gone");
    let a = w.netns("ga");
    let b = w.netns("gb");
    let c = w.netns("gc");
    // b is connected through a path of the test's own (a symlink to its /run/netns file).
    let link = w.dir.join("gb-link");
    std::os::unix::fs::symlink(format!("/run/netns/{b}"), &link).unwrap();
    let link_s = link.display().to_string();
    w.uvlan_ok(&["network", "connect", "--ip", "198.51.100.10", "gone", &a]);
    w.uvlan_ok(&[
        "network",
        "connect",
        "--ip",
        "198.51.100.11",
        "gone",
        &link_s,
    ]);
    w.uvlan_ok(&["network", "connect", "--ip", "198.51.100.12", "gone", &c]);
    w.kill_daemon(libc::SIGTERM);
    // a's namespace is deleted; b's path now loops (ELOOP: it cannot be opened).
    assert!(
        uvlan_system_tests::sh(std::process::Command::new("ip").args(["netns", "del", &a]))
            .status
            .success()
    );
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&link, &link).unwrap();
    w.start_daemon();
    let log = w.daemon_log();
    assert!(
        log.contains(&format!("endpoint {a}: its namespace is gone")),
        "{log}"
    );
    assert!(
        log.contains(&format!("endpoint {link_s} could not be restored"))
            && log.contains("it stays registered and keeps its addresses"),
        "{log}"
    );
    let inspect = w.uvlan_ok(&["network", "inspect", "gone"]);
    assert!(!inspect.contains(&format!("\"{a}\"")), "{inspect}");
    assert!(inspect.contains("198.51.100.11/24"), "kept: {inspect}");
    // a's address is free again; b's is not given out while its interface holds it.
    let d = w.netns("gd");
    w.uvlan_ok(&["network", "connect", "--ip", "198.51.100.10", "gone", &d]);
    let o = w.uvlan(&["network", "connect", "--ip", "198.51.100.11", "gone", &d]);
    assert!(!o.status.success());
    let e = w.netns("ge");
    let o = w.uvlan(&["network", "connect", "--ip", "198.51.100.11", "gone", &e]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Address already in use"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Reachable again: disconnect removes its interface too.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(format!("/run/netns/{b}"), &link).unwrap();
    assert!(links(&w, "gb").contains("eth0"));
    w.uvlan_ok(&["network", "disconnect", "gone", &link_s]);
    assert!(!links(&w, "gb").contains("eth0"), "{}", links(&w, "gb"));
    assert!(w.ping("gd", "198.51.100.12", 4), "the others work");
}
