//! Many endpoints on one network, for correctness only (the figures are `bench/scale.sh`'s):
//! every endpoint reachable, the daemon's thread count independent of the number of
//! endpoints, the daemon raising a soft open-file limit of 1,024 (systemd's default) so 350
//! endpoints connect (more than 1,024 descriptors at three per endpoint), and a stop and
//! restart keeping every endpoint.

use std::time::{Duration, Instant};
use uvlan_system_tests::World;

/// Endpoints of the reachability and thread checks.
const N: usize = 200;
/// Endpoints under the lowered open-file limit (they need more than 1,024 descriptors at
/// three per endpoint).
const MANY: usize = 350;
/// The soft limit the daemon is started with.
const SOFT: u64 = 1024;

/// Endpoint `i`'s address: the first 250 in 192.0.2.0/24, the rest in 198.51.100.0/24 (one
/// network with both subnets; each endpoint reaches those of its own subnet).
fn ip(i: usize) -> String {
    if i < 250 {
        format!("192.0.2.{}", i + 2)
    } else {
        format!("198.51.100.{}", i - 250 + 2)
    }
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The thread count once the short-lived threads (one per API connection) have ended.
fn settled_threads(pid: u32, at_most: usize) -> usize {
    let t = Instant::now();
    loop {
        let n = threads(pid);
        if n <= at_most || t.elapsed() > Duration::from_secs(5) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `(soft, hard)` "Max open files" of a process.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits")
        .to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

/// 20 pairs of endpoints below `n` (a fixed pseudo-random sequence), plus the first and the
/// last.
fn pairs(n: usize) -> Vec<(usize, usize)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        usize::try_from(x % n as u64).unwrap()
    };
    let mut v = vec![(0, n - 1), (n - 1, 0)];
    while v.len() < 22 {
        let (a, b) = (next(), next());
        if a != b {
            v.push((a, b));
        }
    }
    v
}

#[test]
fn many_endpoints_reachable_few_threads_raised_fd_limit_and_restart() {
    let mut w = World::without_daemon();
    // Started with a soft limit of 1,024 (a process may lower its own; the daemon inherits
    // it), as systemd's default would give it.
    let (soft, hard) = uvlan_control::sys::nofile_limit().unwrap();
    assert!(hard > 2048, "the hard limit {hard} leaves nothing to test");
    uvlan_control::sys::set_nofile_soft_limit(SOFT).unwrap();
    w.start_daemon();
    uvlan_control::sys::set_nofile_soft_limit(soft).unwrap();
    let pid = w.daemon_pid();
    let (dsoft, dhard) = nofile(pid);
    assert_eq!(
        dsoft, dhard,
        "the daemon raised its soft limit to the hard one"
    );
    assert_eq!(dhard, hard.to_string());
    let log = w.daemon_log();
    assert!(
        log.contains(&format!("raised from {SOFT} to the hard limit {hard}")),
        "{log}"
    );

    w.create("-d ipvlan -o ipvlan_mode=l2 --internal --subnet 192.0.2.0/24 --subnet 198.51.100.0/24 scale");
    let name = |i: usize| format!("e{i}");
    let connect = |w: &mut World, i: usize| {
        let ns = w.netns(&name(i));
        w.uvlan_ok(&["network", "connect", "--ip", &ip(i), "scale", &ns]);
    };
    for i in 0..10 {
        connect(&mut w, i);
    }
    let at10 = settled_threads(pid, 0);
    for i in 10..N {
        connect(&mut w, i);
    }
    let at_n = settled_threads(pid, at10);
    assert!(
        at_n <= at10,
        "threads grow with endpoints: {at10} at 10, {at_n} at {N}"
    );
    for (a, b) in pairs(N) {
        assert!(
            w.ping(&name(a), &ip(b), 3),
            "endpoint {a} cannot reach endpoint {b} ({})\n{}",
            ip(b),
            w.daemon_log()
        );
    }
    // Beyond what a soft limit of 1,024 allows at three descriptors per endpoint.
    for i in N..MANY {
        connect(&mut w, i);
    }
    let fds = w.daemon_fds();
    assert!(
        fds as u64 > SOFT,
        "{MANY} endpoints hold {fds} descriptors, more than the soft limit {SOFT} it started with"
    );
    assert!(w.ping(&name(250), &ip(MANY - 1), 3), "second subnet");

    // Stop and restart: every endpoint is back, and reachable.
    w.kill_daemon(libc::SIGTERM);
    w.start_daemon();
    let inspect: serde_json::Value =
        serde_json::from_str(&w.uvlan_ok(&["network", "inspect", "scale"])).unwrap();
    let containers = inspect[0]["Containers"].as_object().unwrap();
    assert_eq!(
        containers.len(),
        MANY,
        "every endpoint is kept across a restart"
    );
    let log = w.daemon_log();
    assert!(!log.contains("could not be restored"), "{log}");
    for (a, b) in [(0, N - 1), (N - 1, 0), (249, 0), (250, MANY - 1)] {
        assert!(
            w.ping(&name(a), &ip(b), 4),
            "after the restart: endpoint {a} cannot reach endpoint {b}\n{}",
            w.daemon_log()
        );
    }
}

/// When descriptors run out anyway (a hard limit too low to raise), a connect says so,
/// instead of naming whichever call happened to fail first.
#[test]
fn running_out_of_descriptors_is_named() {
    let mut w = World::without_daemon();
    // A hard limit the daemon cannot raise (prlimit execs it in place).
    w.start_daemon_under(&["prlimit", "--nofile=64:64", "--"]);
    assert_eq!(nofile(w.daemon_pid()), ("64".to_string(), "64".to_string()));
    w.create("-d ipvlan --internal --subnet 203.0.113.0/24 few");
    let mut failure = None;
    for i in 0..40 {
        let ns = w.netns(&format!("f{i}"));
        let o = w.uvlan(&["network", "connect", "few", &ns]);
        if !o.status.success() {
            failure = Some(String::from_utf8_lossy(&o.stderr).into_owned());
            break;
        }
    }
    let e = failure.expect("40 endpoints cannot fit in 64 descriptors");
    assert!(
        e.contains("too many open files: raise LimitNOFILE (the daemon uses about 3 descriptors per endpoint"),
        "{e}\n{}",
        w.daemon_log()
    );
    // Nothing half-made is left: the failed endpoint is not listed, and the others work.
    let inspect: serde_json::Value =
        serde_json::from_str(&w.uvlan_ok(&["network", "inspect", "few"])).unwrap();
    let n = inspect[0]["Containers"].as_object().unwrap().len();
    assert!(n >= 2, "{n} endpoints fit");
    assert!(w.ping("f0", &format!("203.0.113.{}", n + 1), 3));
}
