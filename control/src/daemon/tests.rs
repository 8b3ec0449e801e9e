//! Control logic on a fake host with the configuration-only dataplane (no root needed):
//! network create/ls/inspect/rm, Docker's error texts, state unchanged after each error,
//! persistence across a restart.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::dp::EngineOnly;
use super::host::{HostLink, HostNet};
use super::options::HostIf;
use super::Daemon;
use crate::api::{CreateNetwork, Request, Response};
use crate::inspect::{to_docker_json, NetworkResource};
use crate::ipam::{IpamConfig, Prefix};
use crate::store::Store;
use uvlan_dataplane::wire::MacAddr;

/// The fake host's interfaces, shared so a test can change them under a running daemon.
type Links = Arc<std::sync::Mutex<HashMap<String, HostLink>>>;

struct FakeHost(Links);

impl FakeHost {
    fn new() -> FakeHost {
        let mut m = HashMap::new();
        let link = |index, name: &str, kind, mac: Option<[u8; 6]>| HostLink {
            index,
            name: name.to_string(),
            mac: mac.map(MacAddr),
            mtu: if kind == HostIf::Loopback {
                65536
            } else {
                1500
            },
            up: true,
            kind,
            addrs: Vec::<IpAddr>::new(),
        };
        m.insert("lo".into(), link(1, "lo", HostIf::Loopback, None));
        m.insert(
            "eth0".into(),
            link(2, "eth0", HostIf::Ether, Some([2, 0, 0, 0, 0, 0xe0])),
        );
        m.insert(
            "eth1".into(),
            link(3, "eth1", HostIf::Ether, Some([2, 0, 0, 0, 0, 0xe1])),
        );
        m.insert("tun0".into(), link(4, "tun0", HostIf::Other(65534), None));
        FakeHost(Arc::new(std::sync::Mutex::new(m)))
    }
}

impl HostNet for FakeHost {
    fn link(&mut self, name: &str) -> Result<Option<HostLink>, String> {
        Ok(self.0.lock().unwrap().get(name).cloned())
    }
    fn reserved_prefixes(&mut self) -> Vec<Prefix> {
        Vec::new()
    }
}

struct TempRoot(PathBuf);

impl TempRoot {
    fn new(tag: &str) -> TempRoot {
        let p = std::env::temp_dir().join(format!(
            "uvlan-dt-{}-{tag}-{}",
            std::process::id(),
            crate::ids::random_hex(4).unwrap()
        ));
        TempRoot(p)
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(root: &TempRoot) -> Result<Arc<Daemon>, super::StartError> {
    start_on(root, FakeHost::new())
}

fn start_on(root: &TempRoot, host: FakeHost) -> Result<Arc<Daemon>, super::StartError> {
    let store = Store::open(&root.0)?;
    Daemon::start(
        store,
        Box::new(host),
        Arc::new(EngineOnly::new()),
        Arc::new(|_m: &str| {}),
        false,
    )
}

fn ok(d: &Daemon, r: Request) -> serde_json::Value {
    match d.handle(r.clone()) {
        Response::Ok { result } => result,
        Response::Error { message } => panic!("{r:?} failed: {message}"),
    }
}

fn err(d: &Daemon, r: Request) -> String {
    match d.handle(r.clone()) {
        Response::Ok { result } => panic!("{r:?} unexpectedly succeeded: {result}"),
        Response::Error { message } => message,
    }
}

fn create(name: &str, driver: &str, opts: &[(&str, &str)], subnets: &[&str]) -> Request {
    Request::NetworkCreate(CreateNetwork {
        name: name.to_string(),
        driver: driver.to_string(),
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ipam: subnets
            .iter()
            .map(|s| IpamConfig {
                subnet: s.to_string(),
                ..IpamConfig::default()
            })
            .collect(),
        ipv4: None,
        ipv6: false,
        internal: false,
        ipam_driver: None,
    })
}

/// Everything a user can observe: ls, inspect of every network, the store files.
fn snapshot(d: &Daemon, root: &TempRoot) -> String {
    let ls = ok(d, Request::NetworkLs);
    let mut out = ls.to_string();
    for n in ls.as_array().unwrap() {
        let name = n["name"].as_str().unwrap().to_string();
        out.push_str(&ok(d, Request::NetworkInspect { name }).to_string());
    }
    let mut files: Vec<_> = std::fs::read_dir(root.0.join("networks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        out.push_str(&std::fs::read_to_string(f).unwrap());
    }
    out
}

fn inspect(d: &Daemon, name: &str) -> NetworkResource {
    serde_json::from_value(ok(
        d,
        Request::NetworkInspect {
            name: name.to_string(),
        },
    ))
    .unwrap()
}

#[test]
fn default_pools_gateway_and_inspect_shape() {
    let root = TempRoot::new("shape");
    let d = start(&root).unwrap();
    let id = ok(&d, create("n1", "ipvlan", &[], &[]));
    let id = id.as_str().unwrap().to_string();
    assert!(crate::ids::is_valid_id(&id));
    ok(&d, create("n2", "macvlan", &[("parent", "eth0.20")], &[]));
    let n1 = inspect(&d, "n1");
    assert_eq!(n1.id, id);
    assert_eq!(n1.ipam.config[0].subnet, "172.17.0.0/16");
    assert_eq!(n1.ipam.config[0].gateway.as_deref(), Some("172.17.0.1"));
    assert_eq!(inspect(&d, "n2").ipam.config[0].subnet, "172.18.0.0/16");
    // By ID and by unique ID prefix.
    assert_eq!(inspect(&d, &id).name, "n1");
    assert_eq!(inspect(&d, &id[..6]).name, "n1");

    let n2 = inspect(&d, "n2");
    assert_eq!(
        n2.options,
        BTreeMap::from([("parent".to_string(), "eth0.20".to_string())]),
        "Options is exactly the -o map, defaults are not written back"
    );
    assert_eq!(n2.uvlan_wire.parent, "eth0");
    assert_eq!(n2.uvlan_wire.vlan_id, 20);
    assert!(n2.uvlan_wire.mode.starts_with("none (configuration only"));
    assert_eq!(n1.uvlan_wire.vlan_id, 0);
    assert!(n1.uvlan_wire.mode.starts_with("isolated"));

    let text = to_docker_json(&[n1]);
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("        \"") && !l.starts_with("         "))
        .map(|l| l.trim().split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "Name",
            "Id",
            "Created",
            "Scope",
            "Driver",
            "EnableIPv4",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Attachable",
            "Ingress",
            "ConfigFrom",
            "ConfigOnly",
            "Options",
            "Labels",
            "Containers",
            "Status",
            "UvlanWire"
        ]
    );
    assert!(text.starts_with("[\n    {\n        \"Name\": \"n1\",\n"));
    assert!(text.contains("\"Options\": {},\n"));
    assert!(text.contains("\"Scope\": \"local\""));
    assert!(text.contains("\"IPsInUse\": 3"), "{text}");
    assert!(text.contains("\"DynamicIPsAvailable\": 65533"), "{text}");
}

#[test]
fn create_errors_have_dockers_texts_and_change_nothing() {
    let root = TempRoot::new("errs");
    let d = start(&root).unwrap();
    ok(
        &d,
        create(
            "held",
            "ipvlan",
            &[("parent", "eth0.20")],
            &["192.0.2.0/25"],
        ),
    );
    let before = snapshot(&d, &root);
    let cases: Vec<(Request, String)> = vec![
        (
            create("held", "ipvlan", &[], &[]),
            "network with name held already exists".into(),
        ),
        (
            create("x", "", &[], &[]),
            "no network driver given: use -d ipvlan or -d macvlan (uvlan has no bridge \
             driver, so unlike docker it needs -d)"
                .into(),
        ),
        (
            create("x", "bridge", &[], &[]),
            "unknown network driver \"bridge\": uvlan provides the ipvlan and macvlan drivers \
             (-d ipvlan or -d macvlan); it has no bridge, overlay or host driver"
                .into(),
        ),
        (
            create("x", "ipvlan", &[("ipvlan_mod", "l3")], &[]),
            "unknown ipvlan option \"ipvlan_mod\": the known options are parent, ipvlan_mode, \
             ipvlan_flag, uvlan.host_interface (and com.docker.network.* keys, which are stored)"
                .into(),
        ),
        (
            create("x", "ipvlan", &[("ipvlan_mode", "l4")], &[]),
            "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default"
                .into(),
        ),
        (
            create("x", "ipvlan", &[("ipvlan_flag", "x")], &[]),
            "requested ipvlan flag 'x' is not valid, 'bridge' is the ipvlan driver default".into(),
        ),
        (
            create("x", "macvlan", &[("macvlan_mode", "l2")], &[]),
            "requested macvlan mode 'l2' is not valid, 'bridge' mode is the macvlan driver \
             default"
                .into(),
        ),
        (
            create("x", "ipvlan", &[("parent", "eth0.4095")], &[]),
            "vlan id must be between 1-4094, received: 4095".into(),
        ),
        (
            create("x", "macvlan", &[("parent", "eth0.0")], &[]),
            "vlan id must be between 1-4094, received: 0".into(),
        ),
        (
            create("x", "ipvlan", &[("parent", "eth9")], &[]),
            "invalid subinterface vlan name eth9, example formatting is eth0.10".into(),
        ),
        (
            create("x", "ipvlan", &[("parent", "eth0.1.2")], &[]),
            "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead \
             received eth0.1.2"
                .into(),
        ),
        (
            create("x", "ipvlan", &[("parent", "eth0.x")], &[]),
            "unable to parse a valid vlan id from: x (ex. eth0.10 for vlan 10)".into(),
        ),
        (
            create("x", "macvlan", &[("parent", "eth9.10")], &[]),
            "-o parent interface was not found on the host: eth9".into(),
        ),
        (
            create("x", "ipvlan", &[("parent", "lo")], &[]),
            "loopback interface is not a valid ipvlan parent link".into(),
        ),
        (
            create("x", "macvlan", &[("parent", "lo.5")], &[]),
            "loopback interface is not a valid macvlan parent link".into(),
        ),
        (
            create("x", "ipvlan", &[("parent", "eth0.20")], &[]),
            "network held is already using parent interface eth0.20".into(),
        ),
        (
            create("x", "macvlan", &[("parent", "eth0.020")], &[]),
            "network held is already using parent interface eth0.020".into(),
        ),
        (
            create("x", "ipvlan", &[], &["192.0.2.0/24"]),
            "invalid pool request: Pool overlaps with other one on this address space".into(),
        ),
        (
            Request::NetworkCreate(CreateNetwork {
                name: "x".into(),
                driver: "ipvlan".into(),
                ipam: vec![IpamConfig {
                    subnet: "198.51.100.0/24".into(),
                    gateway: Some("203.0.113.1".into()),
                    ..IpamConfig::default()
                }],
                ..CreateNetwork::default()
            }),
            "invalid network config: invalid gateway 203.0.113.1: parent subnet \
             198.51.100.0/24 doesn't contain this address"
                .into(),
        ),
        (
            Request::NetworkCreate(CreateNetwork {
                name: "x".into(),
                driver: "ipvlan".into(),
                ipam: vec![IpamConfig {
                    subnet: "198.51.100.0/24".into(),
                    ip_range: Some("203.0.113.0/25".into()),
                    ..IpamConfig::default()
                }],
                ..CreateNetwork::default()
            }),
            "invalid network config: invalid ip-range 203.0.113.0/25: parent subnet \
             198.51.100.0/24 doesn't contain ip-range"
                .into(),
        ),
        (
            Request::NetworkCreate(CreateNetwork {
                name: "x".into(),
                driver: "ipvlan".into(),
                ipam: vec![IpamConfig {
                    subnet: "198.51.100.0/24".into(),
                    aux: BTreeMap::from([("r".to_string(), "203.0.113.9".to_string())]),
                    ..IpamConfig::default()
                }],
                ..CreateNetwork::default()
            }),
            "invalid network config: invalid auxiliary address r: parent subnet \
             198.51.100.0/24 doesn't contain this address"
                .into(),
        ),
        (
            Request::NetworkRm {
                name: "nope".into(),
            },
            "network nope not found".into(),
        ),
        (
            Request::NetworkInspect {
                name: "nope".into(),
            },
            "network nope not found".into(),
        ),
        (
            create("x", "ipvlan", &[("parent", "tun0")], &[]),
            "parent interface tun0 is not an Ethernet device (link type 65534): ipvlan needs \
             an Ethernet parent"
                .into(),
        ),
    ];
    for (req, want) in cases {
        assert_eq!(err(&d, req.clone()), want, "{req:?}");
        assert_eq!(snapshot(&d, &root), before, "state changed after {req:?}");
    }
    // A create that fails after IPAM allocated (bad mode) releases the subnet again.
    err(
        &d,
        create("x", "ipvlan", &[("ipvlan_mode", "l4")], &["203.0.113.0/24"]),
    );
    ok(&d, create("ok", "ipvlan", &[], &["203.0.113.0/24"]));
}

/// `network create --ipv4=false --ipv6`: no IPv4 pool (the default 172.17.0.0/16 stays
/// free), inspect and ls say IPv4 is off, the record keeps it across a restart; the
/// refusals change nothing.
#[test]
fn ipv6_only_network_create_inspect_restart() {
    let root = TempRoot::new("v6only");
    let v6only = |name: &str, subnets: &[&str], ipv4: bool, ipv6: bool| {
        let Request::NetworkCreate(mut c) = create(name, "macvlan", &[], subnets) else {
            unreachable!()
        };
        c.ipv4 = Some(ipv4);
        c.ipv6 = ipv6;
        c.internal = true;
        Request::NetworkCreate(c)
    };
    {
        let d = start(&root).unwrap();
        ok(&d, v6only("v6", &["2001:db8::/64"], false, true));
        let v = inspect(&d, "v6");
        assert!(!v.enable_ipv4 && v.enable_ipv6);
        let subnets: Vec<&str> = v.ipam.config.iter().map(|c| c.subnet.as_str()).collect();
        assert_eq!(subnets, ["2001:db8::/64"]);
        assert_eq!(v.ipam.config[0].gateway.as_deref(), Some("2001:db8::1"));
        assert_eq!(
            v.status.ipam.subnets.keys().collect::<Vec<_>>(),
            ["2001:db8::/64"]
        );
        let text = to_docker_json(&[v]);
        assert!(text.contains("\"EnableIPv4\": false,"), "{text}");
        let ls = ok(&d, Request::NetworkLs);
        assert_eq!(ls[0]["ipv4"], false, "{ls}");
        // A dual-stack network made next takes the first default IPv4 pool.
        ok(&d, create("n4", "ipvlan", &[], &[]));
        assert_eq!(inspect(&d, "n4").ipam.config[0].subnet, "172.17.0.0/16");
        assert!(inspect(&d, "n4").enable_ipv4);
        // The record says ipv4 false; a default record says nothing (old stores load).
        let id = inspect(&d, "v6").id;
        let file =
            std::fs::read_to_string(root.0.join("networks").join(format!("{id}.json"))).unwrap();
        assert!(file.contains("\"ipv4\": false"), "{file}");
        let id4 = inspect(&d, "n4").id;
        let file4 =
            std::fs::read_to_string(root.0.join("networks").join(format!("{id4}.json"))).unwrap();
        assert!(!file4.contains("ipv4"), "{file4}");

        let before = snapshot(&d, &root);
        let cases = [
            (
                v6only("x", &["2001:db8:1::/64"], false, false),
                "IPv4 or IPv6 must be enabled".to_string(),
            ),
            (
                v6only("x", &["2001:db8:1::/64", "192.0.2.0/24"], false, true),
                "invalid network config: IPv4 is disabled (--ipv4=false) but subnet \
                 192.0.2.0/24 is IPv4: drop the IPv4 --subnet (and its --ip-range, --gateway \
                 and --aux-address), or enable IPv4"
                    .to_string(),
            ),
            (
                with_ipam(v6only("x", &[], false, true), "dhcp"),
                "--ipv6 cannot be used with --ipam-driver dhcp: uvlan's DHCP client is IPv4 \
                 only"
                    .to_string(),
            ),
            (
                with_ipam(v6only("x", &[], false, false), "dhcp"),
                "--ipv4=false cannot be used with --ipam-driver dhcp: uvlan's DHCP client \
                 leases IPv4 addresses only"
                    .to_string(),
            ),
        ];
        for (req, want) in cases {
            assert_eq!(err(&d, req.clone()), want, "{req:?}");
            assert_eq!(snapshot(&d, &root), before, "state changed after {req:?}");
        }

        // Docker's driver option: used when --ipv4 is not given (and kept in Options),
        // dropped when it is (--ipv4 wins); a value that is no boolean is Docker's error.
        let with_opt = |name: &str, value: &str, given: Option<bool>| {
            let Request::NetworkCreate(mut c) = v6only(name, &[], false, true) else {
                unreachable!()
            };
            c.ipv4 = given;
            c.options
                .insert("com.docker.network.enable_ipv4".into(), value.into());
            Request::NetworkCreate(c)
        };
        assert_eq!(
            err(&d, with_opt("x", "no", None)),
            "driver-opt \"com.docker.network.enable_ipv4\" is not a valid bool"
        );
        assert_eq!(snapshot(&d, &root), before);
        ok(&d, with_opt("o1", "false", None));
        let o1 = inspect(&d, "o1");
        assert!(!o1.enable_ipv4 && o1.ipam.config.iter().all(|c| c.subnet.contains(':')));
        assert_eq!(
            o1.options
                .get("com.docker.network.enable_ipv4")
                .map(String::as_str),
            Some("false")
        );
        ok(&d, with_opt("o2", "true", Some(false)));
        let o2 = inspect(&d, "o2");
        assert!(!o2.enable_ipv4);
        assert!(o2.options.is_empty(), "{:?}", o2.options);
        ok(&d, Request::NetworkRm { name: "o1".into() });
        ok(&d, Request::NetworkRm { name: "o2".into() });
    }
    // After a restart: still IPv6-only, and the IPv4 pool it never took is still free.
    let d = start(&root).unwrap();
    let v = inspect(&d, "v6");
    assert!(!v.enable_ipv4 && v.enable_ipv6);
    assert_eq!(v.ipam.config.len(), 1);
    ok(&d, Request::NetworkRm { name: "n4".into() });
    ok(&d, create("again", "ipvlan", &[], &[]));
    assert_eq!(inspect(&d, "again").ipam.config[0].subnet, "172.17.0.0/16");
}

/// A front end's (Docker's) IPv6-only network: `ipv4` false in the ensure request, only
/// the IPv6 subnet; an IPv4 subnet with it, or neither family, is refused; asking again
/// with IPv4 on is another configuration.
#[test]
fn ensure_ipv6_only_network() {
    let root = TempRoot::new("ensure-v6");
    let d = start(&root).unwrap();
    let id = "b".repeat(64);
    let req = |subnets: &[(&str, &str)], ipv4: bool, ipv6: bool| {
        let Request::NetworkEnsure(mut e) = ensure(Some(&id), "docker", &[], subnets) else {
            unreachable!()
        };
        e.ipv4 = ipv4;
        e.ipv6 = ipv6;
        Request::NetworkEnsure(e)
    };
    let before = snapshot(&d, &root);
    assert_eq!(
        err(&d, req(&[("2001:db8::/64", "2001:db8::1")], false, false)),
        "IPv4 or IPv6 must be enabled"
    );
    assert!(err(
        &d,
        req(
            &[
                ("192.0.2.0/24", "192.0.2.1"),
                ("2001:db8::/64", "2001:db8::1")
            ],
            false,
            true
        )
    )
    .contains("IPv4 is disabled (--ipv4=false) but subnet 192.0.2.0/24 is IPv4"));
    assert_eq!(snapshot(&d, &root), before);
    ok(&d, req(&[("2001:db8::/64", "2001:db8::1")], false, true));
    let v = inspect(&d, &id);
    assert!(!v.enable_ipv4 && v.enable_ipv6);
    assert_eq!(v.ipam.config.len(), 1);
    // The same request again is the same network; with IPv4 on it is another one.
    ok(&d, req(&[("2001:db8::/64", "2001:db8::1")], false, true));
    let e = err(&d, req(&[("2001:db8::/64", "2001:db8::1")], true, true));
    assert!(e.contains("ipv4 false instead of true"), "{e}");
}

#[test]
fn parent_sharing_is_per_parent_and_vid() {
    let root = TempRoot::new("share");
    let d = start(&root).unwrap();
    ok(&d, create("a", "ipvlan", &[("parent", "eth0")], &[]));
    ok(&d, create("b", "macvlan", &[("parent", "eth0.10")], &[]));
    ok(&d, create("c", "ipvlan", &[("parent", "eth0.11")], &[]));
    ok(&d, create("d", "macvlan", &[("parent", "eth1")], &[]));
    let e = err(&d, create("e", "macvlan", &[("parent", "eth0")], &[]));
    assert_eq!(e, "network a is already using parent interface eth0");
    // Removing the holder frees the parent.
    assert_eq!(ok(&d, Request::NetworkRm { name: "a".into() }), "a");
    ok(&d, create("e", "macvlan", &[("parent", "eth0")], &[]));
}

fn with_ipam(r: Request, driver: &str) -> Request {
    match r {
        Request::NetworkCreate(mut c) => {
            c.ipam_driver = Some(driver.to_string());
            Request::NetworkCreate(c)
        }
        other => other,
    }
}

#[test]
fn dhcp_networks_have_no_subnet_and_refuse_what_dhcp_cannot_do() {
    let root = TempRoot::new("dhcp");
    {
        let d = start(&root).unwrap();
        let mv = || create("d1", "macvlan", &[("parent", "eth1")], &[]);
        let e = err(
            &d,
            with_ipam(
                create("d1", "macvlan", &[("parent", "eth1")], &["192.0.2.0/24"]),
                "dhcp",
            ),
        );
        assert!(e.starts_with("--subnet, --gateway"), "{e}");
        let e = err(&d, with_ipam(create("d1", "macvlan", &[], &[]), "dhcp"));
        assert!(e.contains("needs a parent"), "{e}");
        let l3 = create(
            "d1",
            "ipvlan",
            &[("parent", "eth1"), ("ipvlan_mode", "l3")],
            &[],
        );
        let e = err(&d, with_ipam(l3, "dhcp"));
        assert!(e.contains("ipvlan_mode=l2"), "{e}");
        assert_eq!(err(&d, with_ipam(mv(), "null")), "ipv4 pool is empty");
        let e = err(&d, with_ipam(mv(), "bogus"));
        assert!(e.starts_with("IPAM driver \"bogus\" not found"), "{e}");
        assert_eq!(ok(&d, Request::NetworkLs), serde_json::json!([]));
        ok(&d, with_ipam(mv(), "dhcp"));
        let v = inspect(&d, "d1");
        assert!(v.ipam.config.is_empty(), "{:?}", v.ipam.config);
        assert_eq!(v.ipam.driver, "dhcp");
        // The network takes no subnet from the address space: a default-pool network
        // still gets the first pool.
        ok(&d, create("n2", "macvlan", &[("parent", "eth1.7")], &[]));
    }
    // The record says dhcp; the restart does not put it in the address space.
    let d = start(&root).unwrap();
    let rec = std::fs::read_dir(root.0.join("networks"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .find(|t| t.contains("\"d1\""))
        .expect("d1's record");
    assert!(rec.contains("\"dhcp\": true"), "{rec}");
    ok(&d, Request::NetworkRm { name: "d1".into() });
    ok(&d, Request::NetworkRm { name: "n2".into() });
}

#[test]
fn state_survives_a_restart_and_rm_frees_everything() {
    let root = TempRoot::new("restart");
    let before;
    {
        let d = start(&root).unwrap();
        ok(
            &d,
            create("n1", "ipvlan", &[("ipvlan_mode", "l3")], &["192.0.2.0/24"]),
        );
        ok(&d, create("n2", "macvlan", &[("parent", "eth1.7")], &[]));
        before = snapshot(&d, &root);
    }
    let d = start(&root).unwrap();
    assert_eq!(snapshot(&d, &root), before);
    // The restored IPAM still holds the subnets.
    assert_eq!(
        err(&d, create("n3", "ipvlan", &[], &["192.0.2.0/25"])),
        "invalid pool request: Pool overlaps with other one on this address space"
    );
    ok(&d, Request::NetworkRm { name: "n1".into() });
    ok(&d, Request::NetworkRm { name: "n2".into() });
    assert_eq!(ok(&d, Request::NetworkLs), serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(root.0.join("networks")).unwrap().count(),
        0
    );
    ok(&d, create("n3", "ipvlan", &[], &["192.0.2.0/24"]));
}

#[test]
fn a_corrupt_state_file_stops_the_daemon_naming_it() {
    let root = TempRoot::new("corrupt");
    {
        let d = start(&root).unwrap();
        ok(&d, create("n1", "ipvlan", &[], &[]));
    }
    let file = std::fs::read_dir(root.0.join("networks"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let e = start(&root)
        .err()
        .expect("a corrupt file must stop the daemon");
    let msg = e.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("is corrupt"), "{msg}");
    // Untouched: the operator can repair it.
    assert_eq!(std::fs::read(&file).unwrap(), &good[..good.len() / 2]);
    std::fs::write(&file, &good).unwrap();
    let d = start(&root).unwrap();
    assert_eq!(inspect(&d, "n1").name, "n1");
}

fn ensure(
    id: Option<&str>,
    owner: &str,
    opts: &[(&str, &str)],
    subnets: &[(&str, &str)],
) -> Request {
    Request::NetworkEnsure(crate::api::EnsureNetwork {
        id: id.map(str::to_string),
        name: id.map_or("cninet".to_string(), |i| {
            crate::ids::short_id(i).to_string()
        }),
        owner: owner.to_string(),
        driver: "ipvlan".to_string(),
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        subnets: subnets
            .iter()
            .map(|(s, g)| IpamConfig {
                subnet: s.to_string(),
                gateway: Some(g.to_string()),
                ..IpamConfig::default()
            })
            .collect(),
        ipv4: true,
        ipv6: false,
        internal: false,
        parent_from_default_route: false,
    })
}

fn reserve(net: &str, key: &str, addr: &str, mac: Option<&str>) -> Request {
    Request::EndpointReserve {
        network: net.to_string(),
        spec: crate::api::EndpointSpec {
            key: key.to_string(),
            address: Some(addr.to_string()),
            mac: mac.map(str::to_string),
            ..Default::default()
        },
    }
}

/// Docker's spelling of DHCP IPAM, `-o uvlan.ipam=dhcp` (with the null IPAM, which sends no
/// subnet), makes a Docker network a DHCP network; the uvlan CLI is sent to
/// `--ipam-driver dhcp`; an endpoint of such a network cannot be given an address.
#[test]
fn uvlan_ipam_dhcp_is_dockers_spelling() {
    let root = TempRoot::new("ipamopt");
    let d = start(&root).unwrap();
    let dhcp = [("parent", "eth1"), ("uvlan.ipam", "dhcp")];
    let e = err(&d, create("c1", "macvlan", &dhcp, &[]));
    assert!(
        e.contains("uvlan network create takes --ipam-driver dhcp"),
        "{e}"
    );
    let id = "ab".repeat(32);
    let pool = [("192.0.2.0/24", "192.0.2.1/24")];
    let e = err(&d, ensure(Some(&id), "docker", &dhcp, &pool));
    assert!(e.contains("takes no subnet"), "{e}");
    let bad = [("parent", "eth1"), ("uvlan.ipam", "static")];
    let e = err(&d, ensure(Some(&id), "docker", &bad, &[]));
    assert!(e.contains("invalid uvlan.ipam value \"static\""), "{e}");
    assert_eq!(ok(&d, Request::NetworkLs), serde_json::json!([]));
    ok(&d, ensure(Some(&id), "docker", &dhcp, &[]));
    let v = inspect(&d, crate::ids::short_id(&id));
    assert_eq!(v.ipam.driver, "dhcp");
    assert!(v.ipam.config.is_empty(), "{:?}", v.ipam.config);
    let e = err(&d, reserve(&id, &"cd".repeat(32), "192.0.2.5/24", None));
    assert!(e.contains("leases its addresses from DHCP"), "{e}");
}

/// While a Docker endpoint's CreateEndpoint leases its address without the state lock
/// (pending), its key and MAC stay taken: a second CreateEndpoint of it, another endpoint
/// asking for its MAC, its DeleteEndpoint and deleting its network are refused; once it is
/// done, the network can go.
#[test]
fn a_pending_dhcp_reservation_holds_its_key_and_mac() {
    let root = TempRoot::new("pending");
    let d = start(&root).unwrap();
    let id = "ab".repeat(32);
    let mut r = ensure(
        Some(&id),
        "docker",
        &[("parent", "eth1"), ("uvlan.ipam", "dhcp")],
        &[],
    );
    if let Request::NetworkEnsure(e) = &mut r {
        e.driver = "macvlan".to_string();
    }
    ok(&d, r);
    let key = "cd".repeat(32);
    let mac = "02:42:c0:00:02:07";
    {
        let mut st = d.lock();
        let i = st.nets.iter().position(|n| n.rec.id == id).unwrap();
        st.nets[i].pending.insert(key.clone(), mac.parse().unwrap());
    }
    let reserve = |key: &str, mac: Option<&str>| Request::EndpointReserve {
        network: id.clone(),
        spec: crate::api::EndpointSpec {
            key: key.to_string(),
            mac: mac.map(str::to_string),
            ..Default::default()
        },
    };
    let e = err(&d, reserve(&key, None));
    assert!(e.contains("is still being created"), "{e}");
    let e = err(&d, reserve(&"ef".repeat(32), Some(mac)));
    assert!(
        e.contains(&format!("already used by endpoint {key}")),
        "{e}"
    );
    let detach = Request::EndpointDetach {
        network: id.clone(),
        key: key.clone(),
        forget: true,
        remove_empty_network: false,
    };
    let e = err(&d, detach);
    assert!(e.contains("is still being created"), "{e}");
    let delete = Request::NetworkDelete {
        network: id.clone(),
        owner: "docker".to_string(),
    };
    let e = err(&d, delete.clone());
    assert!(e.contains("(being created)"), "{e}");
    d.lock().nets[0].pending.clear();
    assert_eq!(ok(&d, delete), serde_json::json!(true));
}

#[test]
fn managed_networks_take_the_front_ends_ipam_and_refuse_the_cli() {
    let root = TempRoot::new("managed");
    let d = start(&root).unwrap();
    ok(
        &d,
        create("own", "ipvlan", &[("parent", "eth0")], &["192.0.2.0/24"]),
    );
    let id = "ab".repeat(32);
    let opts = [("parent", "eth1"), ("ipvlan_mode", "l3")];
    // The front end's subnet may overlap uvlan's own networks: its IPAM decides.
    let e = ensure(
        Some(&id),
        "docker",
        &opts,
        &[("192.0.2.0/24", "192.0.2.1/24")],
    );
    assert_eq!(ok(&d, e.clone()), serde_json::json!(id));
    assert_eq!(ok(&d, e), serde_json::json!(id), "idempotent");
    let other = ensure(
        Some(&id),
        "docker",
        &[("parent", "eth1")],
        &[("192.0.2.0/24", "192.0.2.1/24")],
    );
    assert!(err(&d, other).contains("already exists with another configuration"));
    let bad = ensure(
        Some(&"cd".repeat(32)),
        "docker",
        &[("ipvlan_mode", "l4")],
        &[],
    );
    assert_eq!(
        err(&d, bad),
        "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default"
    );
    let shared = ensure(Some(&"cd".repeat(32)), "docker", &[("parent", "eth0")], &[]);
    assert!(err(&d, shared).contains("is already using parent interface eth0"));
    let not_cni = ensure(Some(&id), "cni", &opts, &[("192.0.2.0/24", "192.0.2.1/24")]);
    assert!(err(&d, not_cni).contains("is not managed by cni"));
    let short = crate::ids::short_id(&id).to_string();
    // The uvlan CLI leaves it alone.
    let rm = err(
        &d,
        Request::NetworkRm {
            name: short.clone(),
        },
    );
    assert!(rm.contains("is managed by docker"), "{rm}");
    // Inspect: Docker's gateway, the owner label, external IPAM.
    let v = inspect(&d, &short);
    assert_eq!(
        v.labels.get("uvlan.managed-by").map(String::as_str),
        Some("docker")
    );
    assert_eq!(v.ipam.driver, "external");
    assert_eq!(v.ipam.config[0].gateway.as_deref(), Some("192.0.2.1"));
    // Endpoints: ipvlan refuses a MAC with Docker's text; addresses are taken as given.
    let key = "ef".repeat(32);
    assert_eq!(
        err(
            &d,
            reserve(&id, &key, "192.0.2.7/24", Some("02:00:00:00:00:09"))
        ),
        "ipvlan interfaces do not support custom mac address assignment"
    );
    assert_eq!(
        ok(&d, reserve(&id, &key, "192.0.2.7/24", None)),
        serde_json::json!("")
    );
    let list = ok(
        &d,
        Request::EndpointList {
            network: id.clone(),
        },
    );
    assert_eq!(list[0]["address"], "192.0.2.7/24");
    assert_eq!(list[0]["attached"], false);
    assert_eq!(v.status.ipam.subnets["192.0.2.0/24"].ips_in_use, 3);
    let busy = err(
        &d,
        Request::NetworkRm {
            name: short.clone(),
        },
    );
    assert!(busy.contains("is managed by docker"), "{busy}");
    // Names follow Docker's once learned; a taken name is not stolen.
    assert!(d.rename_managed(&id, "docker", "mynet").unwrap());
    assert!(!d.rename_managed(&id, "docker", "own").unwrap());
    // Persistence across a restart: network and reservation.
    drop(d);
    let d = start(&root).unwrap();
    let list = ok(
        &d,
        Request::EndpointList {
            network: "mynet".into(),
        },
    );
    assert_eq!(list.as_array().unwrap().len(), 1);
    let detach = |forget| Request::EndpointDetach {
        network: id.clone(),
        key: key.clone(),
        forget,
        remove_empty_network: false,
    };
    assert_eq!(ok(&d, detach(true)), serde_json::json!(true));
    assert_eq!(ok(&d, detach(true)), serde_json::json!(false), "idempotent");
    let del = || Request::NetworkDelete {
        network: id.clone(),
        owner: "docker".into(),
    };
    // Docker's DeleteNetwork drops a stale reservation (a DeleteEndpoint uvlan missed).
    ok(&d, reserve(&id, &key, "192.0.2.7/24", None));
    assert_eq!(ok(&d, del()), serde_json::json!(true));
    assert_eq!(ok(&d, del()), serde_json::json!(false), "idempotent");
    let names: Vec<String> = ok(&d, Request::NetworkLs)
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["own"]);
    // uvlan's own IPAM was never touched: its subnet is still whole.
    assert_eq!(
        inspect(&d, "own").status.ipam.subnets["192.0.2.0/24"].ips_in_use,
        3
    );
    // A CNI network without a master and no default route in the daemon's namespace.
    let mut cni = ensure(None, "cni", &[], &[]);
    if let Request::NetworkEnsure(e) = &mut cni {
        e.parent_from_default_route = true;
    }
    assert!(err(&d, cni).contains("no IPv4 default route"));
}

#[test]
fn the_engine_follows_parent_changes() {
    use uvlan_dataplane::fwd::{Engine, ParentInfo};
    let root = TempRoot::new("follow");
    let host = FakeHost::new();
    let links = host.0.clone();
    let d = start_on(&root, host).unwrap();
    ok(
        &d,
        create("n1", "ipvlan", &[("parent", "eth0")], &["192.0.2.0/24"]),
    );
    let info = |d: &Daemon| -> ParentInfo {
        super::dp::with_engine(&*d.dp, |e: &mut Engine| {
            let id = e.parent_by_name("eth0").unwrap();
            e.parent_info(id).unwrap()
        })
        .unwrap()
    };
    let before = info(&d);
    assert_eq!((before.mtu, before.up), (1500, true));
    let addr: IpAddr = "192.0.2.77".parse().unwrap();
    {
        let mut l = links.lock().unwrap();
        let eth0 = l.get_mut("eth0").unwrap();
        eth0.mtu = 1400;
        eth0.up = false;
        eth0.mac = Some(MacAddr([2, 0, 0, 0, 0, 0x99]));
        eth0.addrs.push(addr);
    }
    d.reconcile_parents();
    let after = info(&d);
    assert_eq!(after.mtu, 1400);
    assert!(!after.up);
    assert_eq!(after.mac, MacAddr([2, 0, 0, 0, 0, 0x99]));
    assert_eq!(after.addrs, vec![addr]);
    // Gone: down, last facts kept.
    links.lock().unwrap().remove("eth0");
    links.lock().unwrap().get_mut("eth1").unwrap().up = true;
    d.reconcile_parents();
    let gone = info(&d);
    assert!(!gone.up);
    assert_eq!(gone.mtu, 1400);
    // A restart reads the parent as it is now (the network cannot come up without it).
    drop(d);
    let host = FakeHost::new();
    host.0.lock().unwrap().get_mut("eth0").unwrap().mtu = 9000;
    let d = start_on(&root, host).unwrap();
    assert_eq!(info(&d).mtu, 9000);
}

#[test]
fn missing_state_stops_the_daemon_and_changes_nothing() {
    let root = TempRoot::new("missing");
    {
        let d = start(&root).unwrap();
        ok(&d, create("n1", "ipvlan", &[], &["192.0.2.0/24"]));
    }
    let host = root.0.join("host.json");
    let saved = std::fs::read(&host).unwrap();
    // host.json gone, networks stored: refused, no new host ID written.
    std::fs::remove_file(&host).unwrap();
    let msg = start(&root).err().expect("refused").to_string();
    assert!(msg.contains(&host.display().to_string()), "{msg}");
    assert!(!host.exists());
    std::fs::write(&host, &saved).unwrap();
    // networks/ gone: refused, nothing created.
    let nets = root.0.join("networks");
    let moved = root.0.join("networks.away");
    std::fs::rename(&nets, &moved).unwrap();
    let msg = start(&root).err().expect("refused").to_string();
    assert!(msg.contains(&nets.display().to_string()), "{msg}");
    assert!(!nets.exists());
    std::fs::rename(&moved, &nets).unwrap();
    let d = start(&root).unwrap();
    assert_eq!(inspect(&d, "n1").name, "n1");
}

/// `-o uvlan.host_interface=IP` on a network whose addresses the front end manages (Docker):
/// the address must be one of the network's auxiliary addresses, or Docker's IPAM could give
/// it to a container; refused before any interface is made, and the network is gone again.
#[test]
fn the_host_interface_option_needs_an_aux_address_on_a_managed_network() {
    let root = TempRoot::new("hostopt");
    let d = start(&root).unwrap();
    let id = "ef".repeat(32);
    let e = ensure(
        Some(&id),
        "docker",
        &[("parent", "eth0"), ("uvlan.host_interface", "192.0.2.50")],
        &[("192.0.2.0/24", "192.0.2.1/24")],
    );
    let msg = err(&d, e);
    assert!(
        msg.contains("uvlan.host_interface=192.0.2.50")
            && msg.contains("--aux-address host=192.0.2.50"),
        "{msg}"
    );
    let ls = ok(&d, Request::NetworkLs);
    assert_eq!(ls, serde_json::json!([]), "the network stayed: {ls}");
    let bad = ensure(
        Some(&id),
        "docker",
        &[("parent", "eth0"), ("uvlan.host_interface", "not-an-ip")],
        &[("192.0.2.0/24", "192.0.2.1/24")],
    );
    assert!(err(&d, bad).contains("is not an IP address"));
}

/// The host interface's default name: `uv-` and the network's name, cut to 15 bytes at a
/// character boundary.
#[test]
fn host_interface_names_fit_the_kernel() {
    use super::connect::host_ifname;
    assert_eq!(host_ifname("l2"), "uv-l2");
    assert_eq!(host_ifname("my-macvlan-net"), "uv-my-macvlan-n");
    assert_eq!(host_ifname("0123456789abcdef"), "uv-0123456789ab");
    // 'é' is two bytes: it does not fit in the last byte.
    assert_eq!(host_ifname("abcdefghijké"), "uv-abcdefghijk");
    assert!(host_ifname("abcdefghijké").len() <= 15);
}
