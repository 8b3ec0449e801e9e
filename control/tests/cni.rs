//! The CNI plugin driven as a container runtime drives it (root): environment + stdin,
//! the standard `host-local` and `static` IPAM and `tuning` plugins from Debian's
//! containernetworking-plugins, and a conflist applied plugin by plugin (ADD in order with
//! `prevResult` chaining, CHECK, DEL in reverse order), against a uvlan daemon the test
//! runs in its own namespace (its parent is a veth the test made there).

use std::ops::Deref;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use uvlan_system_tests::{SuiteOptions, World as Base};

const CNI_BIN: &str = env!("CARGO_BIN_EXE_uvlan-cni");
const UPSTREAM: &str = "/usr/lib/cni";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sh(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

/// The system tests' world (a private daemon in its own `host` namespace, cleanup on drop)
/// plus a CNI_PATH directory with uvlan's plugin under both names and the upstream IPAM and
/// tuning plugins, and a parent veth `p0` in the daemon's namespace.
struct World(Base);

impl Deref for World {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.0
    }
}

impl World {
    fn new() -> World {
        for p in ["host-local", "static", "tuning"] {
            assert!(
                std::path::Path::new(UPSTREAM).join(p).exists(),
                "{UPSTREAM}/{p} is missing: run scripts/deps.sh --test (containernetworking-plugins)"
            );
        }
        let mut w = World(Base::new());
        let bin = w.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["uvlan-ipvlan", "uvlan-macvlan"] {
            std::os::unix::fs::symlink(CNI_BIN, bin.join(name)).unwrap();
        }
        for name in ["host-local", "static", "tuning"] {
            std::os::unix::fs::symlink(format!("{UPSTREAM}/{name}"), bin.join(name)).unwrap();
        }
        w.0.wired_parent();
        w
    }

    fn log(&self) -> String {
        self.daemon_log()
    }

    fn uvlan_cmd(&self, args: &[&str]) -> Output {
        self.uvlan(args)
    }

    fn networks(&self) -> String {
        text(
            &self
                .uvlan_cmd(&["network", "ls", "--format", "json"])
                .stdout,
        )
    }

    /// Runs one plugin as a runtime does. Returns the exit code and the JSON printed.
    fn plugin(&self, cmd: &str, conf: &Value, container: &str, ifname: &str) -> (i32, Value) {
        let ty = conf["type"].as_str().unwrap().to_string();
        let netns = format!("/run/netns/{}", self.ns(container));
        let mut child = Command::new(self.dir.join("bin").join(&ty))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("ctr-{container}"))
            .env("CNI_NETNS", &netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", "IgnoreUnknown=1")
            .env("CNI_PATH", self.dir.join("bin"))
            .env("UVLAN_SOCKET", self.socket())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = text(&out.stdout);
        let v = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{ty} {cmd}: {e}: {stdout:?}"))
        };
        (out.status.code().unwrap_or(-1), v)
    }

    fn plugin_ok(&self, cmd: &str, conf: &Value, container: &str, ifname: &str) -> Value {
        let (code, v) = self.plugin(cmd, conf, container, ifname);
        assert_eq!(
            code,
            0,
            "{} {cmd} failed: {v}\n{}",
            conf["type"],
            self.log()
        );
        v
    }

    /// The runtime's side of a conflist: each plugin's configuration with the list's name
    /// and version, and `prevResult` when there is one.
    fn plugin_conf(list: &Value, i: usize, prev: Option<&Value>) -> Value {
        let mut c = list["plugins"][i].clone();
        c["name"] = list["name"].clone();
        c["cniVersion"] = list["cniVersion"].clone();
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn list_add(&self, list: &Value, container: &str) -> Value {
        let mut prev: Option<Value> = None;
        for i in 0..list["plugins"].as_array().unwrap().len() {
            let c = Self::plugin_conf(list, i, prev.as_ref());
            prev = Some(self.plugin_ok("ADD", &c, container, "eth0"));
        }
        prev.unwrap()
    }

    fn list_run(
        &self,
        cmd: &str,
        list: &Value,
        container: &str,
        result: &Value,
    ) -> Vec<(i32, Value)> {
        let n = list["plugins"].as_array().unwrap().len();
        let order: Vec<usize> = if cmd == "DEL" {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        order
            .into_iter()
            .map(|i| {
                self.plugin(
                    cmd,
                    &Self::plugin_conf(list, i, Some(result)),
                    container,
                    "eth0",
                )
            })
            .collect()
    }

    fn exec(&self, container: &str, args: &[&str]) -> Output {
        sh(Command::new("ip")
            .args(["netns", "exec", &self.ns(container)])
            .args(args))
    }

    fn ping(&self, container: &str, addr: &str) -> bool {
        (0..3).any(|_| {
            self.exec(container, &["ping", "-n", "-q", "-c", "1", "-W", "1", addr])
                .status
                .success()
        })
    }
}

fn addr_of(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn cni_macvlan_conflist_with_host_local_and_tuning() {
    let mut w = World::new();
    w.0.netns("a");
    w.0.netns("b");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "uvt-cnimv",
        "plugins": [
            {
                "type": "uvlan-macvlan", "master": "p0", "mode": "bridge",
                "ipam": {
                    "type": "host-local", "dataDir": w.dir.join("ipam"),
                    "ranges": [[{"subnet": "203.0.113.0/24", "gateway": "203.0.113.1"}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            { "type": "tuning", "mtu": 1400 }
        ]
    });
    let ra = w.list_add(&list, "a");
    let rb = w.list_add(&list, "b");
    // The result follows the schema: interface in the sandbox, its address and route.
    assert_eq!(ra["cniVersion"], "1.0.0");
    assert_eq!(ra["interfaces"][0]["name"], "eth0");
    assert_eq!(
        ra["interfaces"][0]["sandbox"],
        format!("/run/netns/{}", w.ns("a"))
    );
    assert_eq!(ra["ips"][0]["interface"], 0);
    assert_eq!(ra["ips"][0]["gateway"], "203.0.113.1");
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0");
    let (a, b) = (addr_of(&ra), addr_of(&rb));
    assert_ne!(a, b);
    let link = text(&w.exec("a", &["ip", "-o", "link", "show", "eth0"]).stdout);
    let mac = ra["interfaces"][0]["mac"].as_str().unwrap();
    assert!(link.contains("mtu 1400"), "tuning applied on top: {link}");
    assert!(link.contains(mac), "{link} has {mac}");
    // A TAP, or with the fast path (`UVLAN_TEST_FAST_PATH=on`) a veth.
    let kind = if SuiteOptions::from_env(&[]).fast_path_on() {
        " veth "
    } else {
        " tun "
    };
    let detail = text(
        &w.exec("a", &["ip", "-d", "-o", "link", "show", "eth0"])
            .stdout,
    );
    assert!(detail.contains(kind), "eth0 is a{kind}interface: {detail}");
    let routes = text(&w.exec("a", &["ip", "route"]).stdout);
    assert!(
        routes.contains("default via 203.0.113.1 dev eth0"),
        "{routes}"
    );
    assert!(w.ping("a", &b), "a cannot ping {b}\n{}", w.log());
    assert!(w.ping("b", &a), "b cannot ping {a}");
    // The network shows in uvlan, managed by CNI; the CLI leaves it alone.
    assert!(
        w.networks().contains("\"Name\":\"uvt-cnimv\""),
        "{}",
        w.networks()
    );
    let rm = w.uvlan_cmd(&["network", "rm", "uvt-cnimv"]);
    assert!(
        text(&rm.stderr).contains("managed by cni"),
        "{}",
        text(&rm.stderr)
    );
    // CHECK against the final result passes for every plugin.
    for (code, v) in w.list_run("CHECK", &list, "a", &ra) {
        assert_eq!(code, 0, "CHECK: {v}");
    }
    // DEL in reverse order; twice (idempotent).
    for _ in 0..2 {
        for (code, v) in w.list_run("DEL", &list, "a", &ra) {
            assert_eq!(code, 0, "DEL: {v}");
        }
    }
    assert!(!text(&w.exec("a", &["ip", "-o", "link"]).stdout).contains("eth0"));
    // CHECK now reports the container unknown to uvlan.
    let (code, v) = w.plugin(
        "CHECK",
        &World::plugin_conf(&list, 0, Some(&ra)),
        "a",
        "eth0",
    );
    assert_eq!((code, v["code"].as_u64()), (1, Some(3)), "{v}");
    // DEL succeeds when the namespace is gone.
    let o = sh(Command::new("ip").args(["netns", "delete", &w.ns("b")]));
    assert!(o.status.success());
    for (code, v) in w.list_run("DEL", &list, "b", &rb) {
        assert_eq!(code, 0, "DEL after the namespace went: {v}");
    }
    // The last endpoint took the network with it; host-local released both addresses.
    assert!(!w.networks().contains("uvt-cnimv"), "{}", w.networks());
    assert_eq!(held_addrs(&w, "uvt-cnimv"), Vec::<String>::new());
}

/// The addresses host-local holds for a network (one file per address in its data dir).
fn held_addrs(w: &World, net: &str) -> Vec<String> {
    std::fs::read_dir(w.dir.join("ipam").join(net))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cni_ipvlan_l3_vlan_ipv6_status_gc_and_errors() {
    let mut w = World::new();
    w.0.netns("a");
    w.0.netns("b");
    let conf = |mode: &str| {
        json!({
            "cniVersion": "1.1.0", "name": "uvt-cniip", "type": "uvlan-ipvlan",
            "master": "p0", "vlan": 20, "mode": mode,
            "ipam": {
                "type": "host-local", "dataDir": w.dir.join("ipam"),
                "ranges": [[{"subnet": "198.51.100.0/24"}], [{"subnet": "2001:db8:5::/64"}]],
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        })
    };
    // VERSION.
    let (code, v) = w.plugin(
        "VERSION",
        &json!({"cniVersion": "1.1.0", "type": "uvlan-ipvlan"}),
        "a",
        "eth0",
    );
    assert_eq!(code, 0);
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("1.1.0")));
    // A bad mode: uvlan's (Docker's) text, CNI's error format, the address given back.
    let (code, v) = w.plugin("ADD", &conf("l4"), "a", "eth0");
    assert_eq!(code, 1);
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["code"], 100);
    assert_eq!(
        v["msg"],
        "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default"
    );
    assert!(!w.networks().contains("uvt-cniip"));
    assert_eq!(
        held_addrs(&w, "uvt-cniip"),
        Vec::<String>::new(),
        "IPAM released"
    );
    // STATUS: the daemon answers.
    let (code, v) = w.plugin("STATUS", &conf("l3"), "a", "eth0");
    assert_eq!(code, 0, "STATUS: {v}");
    // ADD two containers (host-local 1.1.1 speaks up to 1.0.0: the plugin negotiates).
    let ra = w.plugin_ok("ADD", &conf("l3"), "a", "eth0");
    let rb = w.plugin_ok("ADD", &conf("l3"), "b", "eth0");
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["ips"].as_array().unwrap().len(), 2, "{ra}");
    assert_eq!(ra["interfaces"][0]["mtu"], 1500);
    let a4 = addr_of(&ra);
    assert!(a4.starts_with("198.51.100."), "{a4}");
    let b6 = rb["ips"][1]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let la = text(&w.exec("a", &["ip", "-d", "link", "show", "eth0"]).stdout);
    assert!(la.contains("NOARP"), "l3: {la}");
    assert!(w.ping("a", &addr_of(&rb)), "{}", w.log());
    assert!(w.ping("a", &b6), "IPv6 {b6}\n{}", w.log());
    let inspect: Value =
        serde_json::from_slice(&w.uvlan_cmd(&["network", "inspect", "uvt-cniip"]).stdout).unwrap();
    assert_eq!(inspect[0]["UvlanWire"]["VlanID"], 20);
    assert_eq!(inspect[0]["Labels"]["uvlan.managed-by"], "cni");
    assert_eq!(inspect[0]["Containers"].as_object().unwrap().len(), 2);
    // GC: only a's attachment is still valid, so b's goes.
    let mut gc = conf("l3");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-a", "ifname": "eth0"}]);
    let (code, v) = w.plugin("GC", &gc, "a", "eth0");
    assert_eq!((code, v), (0, Value::Null));
    assert!(!text(&w.exec("b", &["ip", "-o", "link"]).stdout).contains("eth0"));
    assert!(w.ping("a", &a4));
    let mut prev = conf("l3");
    prev["prevResult"] = ra.clone();
    assert_eq!(w.plugin("CHECK", &prev, "a", "eth0").0, 0);
    // Removing a's address inside makes CHECK fail.
    let o = w.exec(
        "a",
        &["ip", "addr", "del", &format!("{a4}/24"), "dev", "eth0"],
    );
    assert!(o.status.success());
    let (code, v) = w.plugin("CHECK", &prev, "a", "eth0");
    assert_eq!((code, v["code"].as_u64()), (1, Some(101)), "{v}");
    assert_eq!(w.plugin("DEL", &prev, "a", "eth0").0, 0);
    assert!(!w.networks().contains("uvt-cniip"), "{}", w.networks());
}

/// `static` IPAM (Debian's 1.1.1, which speaks up to CNI 1.0.0) under a 1.1.0
/// configuration: ADD, then CHECK and DEL, which the IPAM plugin gets with the same
/// configuration, `prevResult` included (the spec's delegation; `static`'s CHECK fails with
/// "Required prevResult missing" without it), in the version negotiated with it.
#[test]
fn cni_static_ipam_check_gets_the_prev_result() {
    let mut w = World::new();
    w.0.netns("a");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "uvt-cnist", "type": "uvlan-macvlan",
        "master": "p0", "mode": "bridge",
        "ipam": {
            "type": "static",
            "addresses": [
                {"address": "192.0.2.10/24", "gateway": "192.0.2.1"},
                {"address": "2001:db8:7::10/64"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    });
    let ra = w.plugin_ok("ADD", &conf, "a", "eth0");
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["ips"][0]["address"], "192.0.2.10/24", "{ra}");
    assert_eq!(ra["ips"][0]["gateway"], "192.0.2.1", "{ra}");
    assert_eq!(ra["ips"][1]["address"], "2001:db8:7::10/64", "{ra}");
    let shown = text(&w.exec("a", &["ip", "-o", "addr", "show", "eth0"]).stdout);
    assert!(shown.contains("inet 192.0.2.10/24"), "{shown}");
    let mut prev = conf.clone();
    prev["prevResult"] = ra.clone();
    let (code, v) = w.plugin("CHECK", &prev, "a", "eth0");
    assert_eq!(code, 0, "CHECK: {v}\n{}", w.log());
    // static compares the result with its configuration itself: a result whose gateway is
    // not the configured one fails its CHECK (uvlan's own CHECK looks at addresses and the
    // MAC only), so the prevResult really reached it.
    let mut wrong = prev.clone();
    wrong["prevResult"]["ips"][0]["gateway"] = json!("192.0.2.254");
    let (code, v) = w.plugin("CHECK", &wrong, "a", "eth0");
    assert_eq!(code, 1, "CHECK with a wrong gateway passed: {v}");
    assert!(
        v["msg"].as_str().unwrap_or_default().contains("static"),
        "not static's error: {v}"
    );
    // DEL with the prevResult, twice (idempotent); the network goes with its last endpoint.
    for _ in 0..2 {
        let (code, v) = w.plugin("DEL", &prev, "a", "eth0");
        assert_eq!(code, 0, "DEL: {v}");
    }
    assert!(!text(&w.exec("a", &["ip", "-o", "link"]).stdout).contains("eth0"));
    assert!(!w.networks().contains("uvt-cnist"), "{}", w.networks());
}
