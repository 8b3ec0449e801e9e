//! Crash injection: the daemon is killed with SIGKILL at a random moment of an operation
//! (`network connect`, `network disconnect`, `uvlan run --rm`, Docker's Join and Leave
//! through the plugin socket, CNI ADD and DEL through the plugin binary), then started
//! again. After every restart:
//!
//! - every endpoint is all or nothing: a namespace has an interface exactly when the
//!   network lists an endpoint there, with the listed address, and that endpoint reaches
//!   the others (traffic); Docker's interfaces exist exactly for endpoints the daemon holds;
//! - no IPv4 address is on two interfaces at once, in any namespace of the test.
//!
//! The Docker part speaks Docker's plugin protocol to the daemon's plugin socket and does
//! what dockerd does around it (moving the TAP into the sandbox after Join and back after
//! Leave), so no dockerd is needed; the CNI part runs the `uvlan-cni` binary as a runtime
//! does, with the `static` IPAM plugin.
//!
//! With `UVLAN_TEST_FAST_PATH=on` every endpoint is a veth pair: Docker's and CNI's
//! interfaces are checked to be veths (TAPs otherwise), and kills come later (see
//! [`MAX_DELAY_FAST_MS`]).
//!
//! Iterations: `UVLAN_CRASH_ITERATIONS` (default 12; `bench/crash_injection.sh` runs more),
//! seed: `UVLAN_CRASH_SEED` (default from the clock; printed, so a failure can be replayed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uvlan_system_tests::{plugin_call, sh, uvlan_bin, World};

const UPSTREAM: &str = "/usr/lib/cni";
/// The uvlan CLI's network (connect, disconnect, run) and its anchor endpoint.
const NET: &str = "crash";
const ANCHOR_IP: &str = "192.0.2.2";
/// The CNI network and its addresses (203.0.113.10 + i).
const CNI_NET: &str = "uvt-crashcni";
/// Docker's network: ID, subnet.
const DOCKER_NET: &str = "d0cce700000000000000000000000000000000000000000000000000000000aa";
/// Kill delays after the client starts, in milliseconds (a client reaches the daemon
/// within a few milliseconds, an operation takes a few more).
const MAX_DELAY_MS: u64 = 30;
/// The same with the fast path (`UVLAN_TEST_FAST_PATH=on`): a veth endpoint takes several
/// times a TAP endpoint's time to make and remove (two program links, each waiting for an
/// RCU grace period), so kills must also come after some operations finished.
const MAX_DELAY_FAST_MS: u64 = 150;

/// Whether the suite runs with the fast path (see `World::start_daemon`): endpoints of
/// every kind are then veths.
fn fast_path_on() -> bool {
    std::env::var("UVLAN_TEST_FAST_PATH").is_ok_and(|v| v == "on")
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the test holds in each namespace it made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Connected (or not) to the CLI network.
    Cli,
    /// A Docker sandbox.
    Sandbox,
    /// A CNI container.
    Cni,
}

struct Crash {
    w: World,
    rng: Rng,
    /// Short name → role, for every namespace the test made.
    spaces: BTreeMap<String, Role>,
    /// Names of namespaces `uvlan run` made (full names; deleted at the end).
    runs: Vec<String>,
    seq: usize,
    plugin: std::path::PathBuf,
    /// Per operation: (runs, completed by the client, outcome seen after the restart).
    tally: BTreeMap<&'static str, (u32, u32)>,
}

impl Drop for Crash {
    fn drop(&mut self) {
        for n in &self.runs {
            let _ = sh(Command::new("ip").args(["netns", "del", n]));
        }
    }
}

impl Crash {
    fn new(seed: u64) -> Crash {
        assert!(
            std::path::Path::new(UPSTREAM).join("static").exists(),
            "{UPSTREAM}/static is missing: run scripts/deps.sh --test (containernetworking-plugins)"
        );
        let w = World::with_docker_plugin(&[]);
        let plugin = w.plugin_socket("uvlan-ipvlan");
        // A parent for the CNI network (the CNI plugins need a master).
        let h = w.ns("host");
        for args in [
            vec![
                "-n", &h, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
            ],
            vec!["-n", &h, "link", "set", "p0", "up"],
        ] {
            let o = sh(Command::new("ip").args(&args));
            assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
        }
        let bin = w.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let cni_bin = uvlan_bin().with_file_name("uvlan-cni");
        assert!(
            cni_bin.exists(),
            "{} is missing: cargo build --workspace --bins",
            cni_bin.display()
        );
        std::os::unix::fs::symlink(&cni_bin, bin.join("uvlan-ipvlan")).unwrap();
        std::os::unix::fs::symlink(format!("{UPSTREAM}/static"), bin.join("static")).unwrap();
        w.create(&format!("-d ipvlan --internal --subnet 192.0.2.0/24 {NET}"));
        let mut c = Crash {
            w,
            rng: Rng(seed | 1),
            spaces: BTreeMap::new(),
            runs: Vec::new(),
            seq: 0,
            plugin,
            tally: BTreeMap::new(),
        };
        let a = c.space("anchor", Role::Cli);
        c.w.uvlan_ok(&["network", "connect", "--ip", ANCHOR_IP, NET, &a]);
        let made = plugin_call(
            &c.plugin,
            "NetworkDriver.CreateNetwork",
            &json!({
                "NetworkID": DOCKER_NET,
                "Options": {"com.docker.network.generic": {}},
                "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "198.51.100.0/24",
                              "Gateway": "198.51.100.1/24"}],
                "IPv6Data": []
            }),
        );
        assert_eq!(made, Some(json!({})), "{}", c.w.daemon_log());
        c
    }

    fn space(&mut self, name: &str, role: Role) -> String {
        let full = self.w.netns(name);
        self.spaces.insert(name.to_string(), role);
        full
    }

    fn fresh(&mut self, tag: &str, role: Role) -> String {
        self.seq += 1;
        let name = format!("{tag}{}", self.seq);
        self.space(&name, role);
        name
    }

    /// Kills the daemon `delay` after `start` began the operation, waits for the client
    /// (`wait`), starts the daemon again. Returns whether the client reported success.
    fn crash_during(&mut self, op: &'static str, start: impl FnOnce(&Crash) -> Pending) -> bool {
        let max = if fast_path_on() {
            MAX_DELAY_FAST_MS
        } else {
            MAX_DELAY_MS
        };
        let delay = Duration::from_millis(self.rng.below(max + 1));
        let pending = start(self);
        std::thread::sleep(delay);
        self.w.kill_daemon(libc::SIGKILL);
        let ok = pending.wait();
        self.w.start_daemon();
        let t = self.tally.entry(op).or_default();
        t.0 += 1;
        t.1 += u32::from(ok);
        ok
    }

    fn uvlan_child(&self, args: &[&str]) -> Pending {
        Pending::Child(
            Command::new(uvlan_bin())
                .args(args)
                .env("UVLAN_SOCKET", self.w.socket())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn uvlan"),
        )
    }

    fn cni(&self, cmd: &str, container: &str) -> Command {
        let mut c = Command::new(self.w.dir.join("bin").join("uvlan-ipvlan"));
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("ctr-{container}"))
            .env("CNI_NETNS", format!("/run/netns/{}", self.w.ns(container)))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.w.dir.join("bin"))
            .env("UVLAN_SOCKET", self.w.socket())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn cni_conf(i: usize) -> String {
        json!({
            "cniVersion": "1.0.0",
            "name": CNI_NET,
            "type": "uvlan-ipvlan",
            "master": "p0",
            "mode": "l2",
            "ipam": {"type": "static", "addresses": [{"address": format!("203.0.113.{}/24", 10 + i)}]}
        })
        .to_string()
    }

    fn cni_child(&self, cmd: &str, container: &str, i: usize) -> Pending {
        let mut child = self.cni(cmd, container).spawn().expect("spawn uvlan-cni");
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(Self::cni_conf(i).as_bytes());
        Pending::Child(child)
    }

    fn cni_now(&self, cmd: &str, container: &str, i: usize) -> bool {
        self.cni_child(cmd, container, i).wait()
    }

    fn docker_child(&self, method: &'static str, body: Value) -> Pending {
        let sock = self.plugin.clone();
        Pending::Thread(std::thread::spawn(move || {
            plugin_call(&sock, method, &body).is_some_and(|v| v.get("Err").is_none())
        }))
    }

    fn docker_now(&self, method: &'static str, body: &Value) -> Value {
        plugin_call(&self.plugin, method, body)
            .unwrap_or_else(|| panic!("{method}: no answer\n{}", self.w.daemon_log()))
    }

    fn ip(&self, args: &[&str]) -> String {
        text(&sh(Command::new("ip").args(args)).stdout)
    }

    /// Non-loopback interfaces of namespace `full` with their IPv4 addresses.
    fn interfaces(&self, full: &str) -> Vec<(String, Vec<String>)> {
        let v: Value =
            serde_json::from_str(&self.ip(&["-n", full, "-j", "addr"])).unwrap_or(json!([]));
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["ifname"] != "lo")
            .map(|l| {
                let addrs = l["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["family"] == "inet")
                    .map(|a| a["local"].as_str().unwrap_or_default().to_string())
                    .collect();
                (l["ifname"].as_str().unwrap_or_default().to_string(), addrs)
            })
            .collect()
    }

    /// `Containers` of a network: the endpoints' names and IPv4 addresses.
    fn listed(&self, net: &str) -> HashMap<String, String> {
        // A network a front end makes on its first endpoint may not exist yet.
        let o = self.w.uvlan(&["network", "inspect", net]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(json!([]));
        v[0]["Containers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, c)| {
                (
                    c["Name"].as_str().unwrap_or_default().to_string(),
                    c["IPv4Address"]
                        .as_str()
                        .unwrap_or_default()
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    fn uvd_taps(&self) -> Vec<String> {
        self.ip(&["-n", &self.w.ns("host"), "-o", "link"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("uvd"))
            .collect()
    }

    /// The invariants (see the module docs); `what` names the step for the messages.
    fn check(&self, what: &str) {
        let log = || self.w.daemon_log();
        // No address twice, anywhere.
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut all: Vec<String> = self.spaces.keys().map(|n| self.w.ns(n)).collect();
        all.push(self.w.ns("host"));
        all.extend(self.runs.iter().cloned());
        for full in &all {
            for (ifname, addrs) in self.interfaces(full) {
                for a in addrs {
                    if let Some(other) = seen.insert(a.clone(), format!("{full}/{ifname}")) {
                        panic!(
                            "after {what}: {a} is on {other} and on {full}/{ifname}\n{}",
                            log()
                        );
                    }
                }
            }
        }
        // The CLI network, and run's namespaces: interface ⇔ listed, same address, traffic.
        let listed = self.listed(NET);
        let mut cli: Vec<String> = self
            .spaces
            .iter()
            .filter(|(_, r)| **r == Role::Cli)
            .map(|(n, _)| self.w.ns(n))
            .collect();
        cli.extend(
            self.runs
                .iter()
                .filter(|n| std::path::Path::new(&format!("/run/netns/{n}")).exists())
                .cloned(),
        );
        for full in &cli {
            let ifs = self.interfaces(full);
            match (listed.get(full), ifs.as_slice()) {
                (None, []) => {}
                (Some(addr), [(_, addrs)]) => {
                    assert!(
                        addrs.contains(addr),
                        "after {what}: {full} is listed with {addr} but has {addrs:?}\n{}",
                        log()
                    );
                    if addr != ANCHOR_IP {
                        assert!(
                            ping(full, ANCHOR_IP),
                            "after {what}: endpoint {full} ({addr}) has no traffic\n{}",
                            log()
                        );
                    }
                }
                (l, i) => panic!(
                    "after {what}: {full}: listed as {l:?} but has interfaces {i:?}: not all \
                     or nothing\n{}",
                    log()
                ),
            }
        }
        for name in listed.keys() {
            assert!(
                cli.contains(name),
                "after {what}: {name} is listed but is no namespace of the test\n{}",
                log()
            );
        }
        // CNI: the same.
        let listed = self.listed(CNI_NET);
        let mut with_if = 0;
        for (n, r) in &self.spaces {
            if *r != Role::Cni {
                continue;
            }
            let full = self.w.ns(n);
            let ifs = self.interfaces(&full);
            if let [(ifname, addrs)] = ifs.as_slice() {
                with_if += 1;
                self.expect_kind(&full, ifname, &format!("after {what}: CNI"));
                assert!(
                    listed.values().any(|a| addrs.contains(a)),
                    "after {what}: CNI container {full} has {addrs:?}, which no endpoint of \
                     {CNI_NET} holds ({listed:?})\n{}",
                    log()
                );
            } else {
                assert!(ifs.is_empty(), "after {what}: {full}: {ifs:?}");
            }
        }
        assert_eq!(
            with_if,
            listed.len(),
            "after {what}: CNI interfaces and endpoints differ ({listed:?})\n{}",
            log()
        );
    }

    /// The kind of endpoint interface `ifname` in namespace `full`: a veth with the fast
    /// path, else a TAP.
    fn expect_kind(&self, full: &str, ifname: &str, what: &str) {
        let link = self.ip(&["-n", full, "-d", "-o", "link", "show", "dev", ifname]);
        let kind = if fast_path_on() { "veth" } else { "tun" };
        assert!(
            link.contains(&format!(" {kind} ")),
            "{what}: {ifname} in {full} is no {kind}: {link}\n{}",
            self.w.daemon_log()
        );
    }

    // ---- the operations --------------------------------------------------------------

    fn cli_spaces(&self, connected: bool) -> Vec<String> {
        let listed = self.listed(NET);
        self.spaces
            .iter()
            .filter(|(n, r)| **r == Role::Cli && *n != "anchor")
            .filter(|(n, _)| listed.contains_key(&self.w.ns(n)) == connected)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn connect(&mut self) {
        let name = self.fresh("c", Role::Cli);
        let full = self.w.ns(&name);
        self.crash_during("connect", |c| {
            c.uvlan_child(&["network", "connect", NET, &full])
        });
        self.check(&format!("a connect of {full}"));
    }

    fn disconnect(&mut self) {
        let mut have = self.cli_spaces(true);
        if have.is_empty() {
            let name = self.fresh("c", Role::Cli);
            self.w
                .uvlan_ok(&["network", "connect", NET, &self.w.ns(&name)]);
            have.push(name);
        }
        let name = have[usize::try_from(self.rng.below(have.len() as u64)).unwrap()].clone();
        let full = self.w.ns(&name);
        self.crash_during("disconnect", |c| {
            c.uvlan_child(&["network", "disconnect", NET, &full])
        });
        self.check(&format!("a disconnect of {full}"));
    }

    fn run(&mut self) {
        self.seq += 1;
        let full = format!("{}r{}", self.w.prefix, self.seq);
        self.runs.push(full.clone());
        self.crash_during("run --rm", |c| {
            c.uvlan_child(&[
                "run", "--net", NET, "--name", &full, "--rm", "--", "sleep", "0.05",
            ])
        });
        self.check(&format!("a run of {full}"));
        // What a run left behind (its removal may have met the dead daemon) goes now.
        if self.listed(NET).contains_key(&full) {
            self.w.uvlan_ok(&["network", "disconnect", NET, &full]);
        }
        let _ = sh(Command::new("ip").args(["netns", "del", &full]));
        self.runs.retain(|n| *n != full);
    }

    /// Docker: CreateEndpoint, Join (killed), the move into the sandbox, Leave (killed),
    /// the move back, DeleteEndpoint; checked after each crash, and nothing left at the end.
    fn docker(&mut self) {
        self.seq += 1;
        let i = self.seq;
        let eid = format!("{:064x}", 0xd0c0_0000_u64 + i as u64);
        let eid = format!("e{}", &eid[1..]);
        let host_tap = format!("uvd{}", &eid[..12]);
        let sandbox = self.fresh("s", Role::Sandbox);
        let sb_full = self.w.ns(&sandbox);
        let ep = json!({"NetworkID": DOCKER_NET, "EndpointID": eid});
        let addr = format!("198.51.100.{}/24", 10 + (i % 200));
        let made = self.docker_now(
            "NetworkDriver.CreateEndpoint",
            &json!({"NetworkID": DOCKER_NET, "EndpointID": eid,
                    "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""},
                    "Options": {}}),
        );
        assert!(made.get("Err").is_none(), "{made}");
        let mut join = ep.clone();
        join["SandboxKey"] = json!(format!("/run/netns/{sb_full}"));
        join["Options"] = json!({});
        self.crash_during("docker join", |c| {
            c.docker_child("NetworkDriver.Join", join.clone())
        });
        let taps = self.uvd_taps();
        if self.listed(DOCKER_NET).len() == 1 {
            assert_eq!(
                taps,
                vec![host_tap.clone()],
                "after a Join: the TAP of the attached endpoint\n{}",
                self.w.daemon_log()
            );
            let h = self.w.ns("host");
            self.expect_kind(&h, &host_tap, "after a Join");
            // dockerd moves it into the sandbox and names it eth0.
            let h = self.w.ns("host");
            for args in [
                vec!["-n", &h, "link", "set", "dev", &host_tap, "netns", &sb_full],
                vec![
                    "-n", &sb_full, "link", "set", "dev", &host_tap, "name", "eth0",
                ],
                vec!["-n", &sb_full, "link", "set", "dev", "eth0", "up"],
            ] {
                let o = sh(Command::new("ip").args(&args));
                assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
            }
            self.crash_during("docker leave", |c| {
                c.docker_child("NetworkDriver.Leave", ep.clone())
            });
            // Attached still (Leave rolled back), or reserved with its TAP kept.
            let sb_ifs = self.interfaces(&sb_full);
            assert_eq!(
                sb_ifs.len(),
                1,
                "after a Leave: the TAP stays in the sandbox until Docker moves it\n{}",
                self.w.daemon_log()
            );
            if self.listed(DOCKER_NET).len() == 1 {
                let left = self.docker_now("NetworkDriver.Leave", &ep);
                assert!(left.get("Err").is_none(), "{left}");
            }
            // dockerd moves it back under its first name.
            let h = self.w.ns("host");
            for args in [
                vec!["-n", &sb_full, "link", "set", "dev", "eth0", "down"],
                vec![
                    "-n", &sb_full, "link", "set", "dev", "eth0", "name", &host_tap,
                ],
                vec!["-n", &sb_full, "link", "set", "dev", &host_tap, "netns", &h],
            ] {
                let o = sh(Command::new("ip").args(&args));
                assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
            }
        } else {
            assert!(
                taps.is_empty(),
                "after a failed Join: TAPs left in the host namespace: {taps:?}\n{}",
                self.w.daemon_log()
            );
        }
        let gone = self.docker_now("NetworkDriver.DeleteEndpoint", &ep);
        assert!(gone.get("Err").is_none(), "{gone}");
        assert!(
            self.uvd_taps().is_empty(),
            "after DeleteEndpoint: TAPs left: {:?}\n{}",
            self.uvd_taps(),
            self.w.daemon_log()
        );
        assert!(
            self.interfaces(&sb_full).is_empty(),
            "after DeleteEndpoint: the sandbox keeps an interface"
        );
        assert!(self.listed(DOCKER_NET).is_empty());
        self.check("a Docker join and leave");
    }

    fn cni_add(&mut self) {
        let name = self.fresh("k", Role::Cni);
        let i = self.seq;
        self.crash_during("cni add", |c| c.cni_child("ADD", &name, i));
        self.check(&format!("a CNI ADD of {name}"));
        // A runtime whose ADD failed calls DEL; one whose ADD worked calls it later.
        assert!(
            self.cni_now("DEL", &name, i),
            "CNI DEL after ADD\n{}",
            self.w.daemon_log()
        );
        self.check(&format!("a CNI DEL of {name} after its ADD"));
    }

    fn cni_del(&mut self) {
        let name = self.fresh("k", Role::Cni);
        let i = self.seq;
        assert!(
            self.cni_now("ADD", &name, i),
            "CNI ADD\n{}",
            self.w.daemon_log()
        );
        self.crash_during("cni del", |c| c.cni_child("DEL", &name, i));
        self.check(&format!("a CNI DEL of {name}"));
        assert!(
            self.cni_now("DEL", &name, i),
            "CNI DEL again\n{}",
            self.w.daemon_log()
        );
        self.check(&format!("a repeated CNI DEL of {name}"));
    }
}

/// A client under way.
enum Pending {
    Child(Child),
    Thread(std::thread::JoinHandle<bool>),
}

impl Pending {
    fn wait(self) -> bool {
        match self {
            Pending::Child(mut c) => {
                let t = Instant::now();
                loop {
                    if let Ok(Some(st)) = c.try_wait() {
                        return st.success();
                    }
                    if t.elapsed() > Duration::from_secs(30) {
                        let _ = c.kill();
                        let _ = c.wait();
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Pending::Thread(t) => t.join().unwrap_or(false),
        }
    }
}

fn ping(full: &str, addr: &str) -> bool {
    (0..3).any(|_| {
        sh(Command::new("ip").args([
            "netns", "exec", full, "ping", "-n", "-q", "-c", "1", "-W", "1", addr,
        ]))
        .status
        .success()
    })
}

#[test]
fn kill_9_at_random_points_leaves_each_endpoint_all_or_nothing() {
    let iterations: usize = std::env::var("UVLAN_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("UVLAN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash injection: {iterations} iterations, seed {seed} (UVLAN_CRASH_SEED)");
    let mut c = Crash::new(seed);
    let started = Instant::now();
    let ops: [fn(&mut Crash); 7] = [
        Crash::connect,
        Crash::disconnect,
        Crash::run,
        Crash::docker,
        Crash::cni_add,
        Crash::cni_del,
        Crash::disconnect,
    ];
    for n in 0..iterations {
        // Every kind early on (the short run covers each), then at random.
        let k = if n < ops.len() {
            n
        } else {
            usize::try_from(c.rng.below(ops.len() as u64)).unwrap()
        };
        ops[k](&mut c);
    }
    let mut kinds = HashSet::new();
    for (op, (runs, done)) in &c.tally {
        kinds.insert(*op);
        println!("  {op:<12} {runs:>4} killed, {done:>4} of them answered success before the kill");
    }
    println!(
        "  {} iterations in {:.1} s; every endpoint all or nothing, no address twice",
        iterations,
        started.elapsed().as_secs_f64()
    );
    let log = c.w.daemon_log();
    println!(
        "  recovery: {} interrupted operation(s) finished or rolled back, {} unknown interface(s) removed",
        log.matches("rolled back its interrupted").count()
            + log.matches("finished its interrupted").count(),
        log.matches("which no record names").count()
    );
}
