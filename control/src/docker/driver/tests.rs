//! The remote driver's protocol handling against a daemon double.

use super::*;
use std::sync::Mutex;

/// Records requests and answers from a script.
struct Fake {
    seen: Mutex<Vec<Request>>,
    /// How many requests had been seen at each `learn_names_now`.
    learned_at: Mutex<Vec<usize>>,
    answer: Box<dyn Fn(&Request) -> Response + Send + Sync>,
}

impl Backend for Fake {
    fn call(&self, req: Request) -> Response {
        let a = (self.answer)(&req);
        self.seen.lock().unwrap().push(req);
        a
    }

    fn learn_names_now(&self) {
        let n = self.seen.lock().unwrap().len();
        self.learned_at.lock().unwrap().push(n);
    }
}

fn fake(answer: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Fake {
    Fake {
        seen: Mutex::new(Vec::new()),
        learned_at: Mutex::new(Vec::new()),
        answer: Box::new(answer),
    }
}

fn ok(v: Value) -> Response {
    Response::Ok { result: v }
}

const NID: &str = "1e8c9969c8eda1d9528b8e468341456b2b4db9db632421259a7a645b6b76e2e2";
const EID: &str = "d38095591cdd2f1b9f154acdbe3daa1a0f403e5d2c5139271e6d8abf15245324";

#[test]
fn handshake_and_unknown_methods() {
    let b = fake(|_| ok(Value::Null));
    let r = handle(&b, Driver::Ipvlan, "Plugin.Activate", b"");
    assert_eq!(r, Reply::ok(json!({"Implements": ["NetworkDriver"]})));
    let r = handle(&b, Driver::Macvlan, "NetworkDriver.GetCapabilities", b"{}");
    assert_eq!(
        r.body,
        json!({"Scope": "local", "ConnectivityScope": "global"})
    );
    let r = handle(&b, Driver::Ipvlan, "IpamDriver.RequestPool", b"{}");
    assert_eq!(r.status, 404);
    assert!(r.body["Err"].as_str().unwrap().contains("uvlan-ipvlan"));
    for m in ["DiscoverNew", "ProgramExternalConnectivity", "FreeNetwork"] {
        let r = handle(&b, Driver::Ipvlan, &format!("NetworkDriver.{m}"), b"{}");
        assert_eq!(r, Reply::ok(json!({})));
    }
    assert!(b.seen.lock().unwrap().is_empty());
}

#[test]
fn create_network_as_docker_20_10_sends_it() {
    let b = fake(|_| ok(json!(NID)));
    let body = format!(
        r#"{{"NetworkID":"{NID}","Options":{{"com.docker.network.enable_ipv6":true,"com.docker.network.generic":{{"parent":"eth0.20","ipvlan_mode":"l3"}},"com.docker.network.internal":true}},"IPv4Data":[{{"AddressSpace":"LocalDefault","AuxAddresses":{{"r":"192.0.2.9/24"}},"Gateway":"192.0.2.1/24","Pool":"192.0.2.0/24"}}],"IPv6Data":[{{"AddressSpace":"LocalDefault","Gateway":"2001:db8:1::1/64","Pool":"2001:db8:1::/64"}}]}}"#
    );
    let r = handle(
        &b,
        Driver::Ipvlan,
        "NetworkDriver.CreateNetwork",
        body.as_bytes(),
    );
    assert_eq!(r, Reply::ok(json!({})));
    let seen = b.seen.lock().unwrap();
    let Request::NetworkEnsure(e) = &seen[0] else {
        panic!("{seen:?}")
    };
    assert_eq!(e.id.as_deref(), Some(NID));
    assert_eq!(e.name, "1e8c9969c8ed");
    assert_eq!((e.owner.as_str(), e.driver.as_str()), ("docker", "ipvlan"));
    assert_eq!(e.options.get("parent").map(String::as_str), Some("eth0.20"));
    assert_eq!(e.options.get("ipvlan_mode").map(String::as_str), Some("l3"));
    assert!(e.ipv6 && e.internal);
    assert_eq!(e.subnets.len(), 2);
    assert_eq!(e.subnets[0].gateway.as_deref(), Some("192.0.2.1/24"));
    assert_eq!(
        e.subnets[0].aux.get("r").map(String::as_str),
        Some("192.0.2.9/24")
    );
    assert_eq!(e.subnets[1].subnet, "2001:db8:1::/64");
    // Names were learned before the network was made, so its errors name networks.
    assert_eq!(*b.learned_at.lock().unwrap(), [0]);
}

#[test]
fn null_ipam_is_refused_as_docker_drivers_do() {
    let create = |driver: Driver, options: &str, v4: &str, v6: &str| {
        let b = fake(|_| ok(json!(NID)));
        let body = format!(
            r#"{{"NetworkID":"{NID}","Options":{options},"IPv4Data":{v4},"IPv6Data":{v6}}}"#
        );
        let r = handle(&b, driver, "NetworkDriver.CreateNetwork", body.as_bytes());
        let sent = b.seen.lock().unwrap().len();
        (r.body["Err"].as_str().map(str::to_string), sent)
    };
    let null4 = r#"[{"AddressSpace":"null","Pool":"0.0.0.0/0"}]"#;
    let null6 = r#"[{"AddressSpace":"null","Pool":"::/0"}]"#;
    let real4 = r#"[{"Pool":"192.0.2.0/24","Gateway":"192.0.2.1/24"}]"#;
    let real6 = r#"[{"Pool":"2001:db8::/64"}]"#;
    let v6on = r#"{"com.docker.network.enable_ipv6":true}"#;
    for driver in [Driver::Ipvlan, Driver::Macvlan] {
        // Docker 20.10 (no enable_ipv4 key): IPv4 is always wanted.
        for v4 in [null4, "null", "[]"] {
            assert_eq!(
                create(driver, "{}", v4, "null"),
                (Some("ipv4 pool is empty".into()), 0)
            );
        }
        assert_eq!(
            create(driver, v6on, null4, null6),
            (Some("ipv4 pool is empty".into()), 0)
        );
        assert_eq!(
            create(driver, v6on, real4, null6),
            (Some("ipv6 pool is empty".into()), 0)
        );
        assert_eq!(
            create(driver, v6on, real4, "null"),
            (Some("ipv6 pool is empty".into()), 0)
        );
        // IPv6 off: its data is not looked at.
        assert_eq!(create(driver, "{}", real4, null6), (None, 1));
        assert_eq!(create(driver, v6on, real4, real6), (None, 1));
        // Docker >= 28 with --ipv4=false: no IPv4 pool is needed.
        let v4off =
            r#"{"com.docker.network.enable_ipv4":false,"com.docker.network.enable_ipv6":true}"#;
        assert_eq!(create(driver, v4off, "[]", real6), (None, 1));
        assert_eq!(
            create(driver, v4off, "[]", null6),
            (Some("ipv6 pool is empty".into()), 0)
        );
    }
}

/// Docker 28's `--ipv4=false` reaches the daemon as an IPv6-only network: `ipv4` false, only
/// the IPv6 pool as a subnet (an IPv4 pool sent anyway is not used); without the key (Docker
/// before 28) and with it true, IPv4 stays on.
#[test]
fn enable_ipv4_false_is_passed_to_the_daemon() {
    let create = |options: &str, v4: &str| {
        let b = fake(|_| ok(json!(NID)));
        let body = format!(
            r#"{{"NetworkID":"{NID}","Options":{options},"IPv4Data":{v4},"IPv6Data":[{{"Pool":"2001:db8::/64","Gateway":"2001:db8::1/64"}}]}}"#
        );
        let r = handle(
            &b,
            Driver::Ipvlan,
            "NetworkDriver.CreateNetwork",
            body.as_bytes(),
        );
        assert_eq!(r.body["Err"].as_str(), None);
        let seen = b.seen.lock().unwrap().clone();
        let Some(Request::NetworkEnsure(e)) = seen.first() else {
            panic!("{seen:?}")
        };
        e.clone()
    };
    let real4 = r#"[{"Pool":"192.0.2.0/24","Gateway":"192.0.2.1/24"}]"#;
    let off = r#"{"com.docker.network.enable_ipv4":false,"com.docker.network.enable_ipv6":true}"#;
    for v4 in ["[]", "null", real4] {
        let e = create(off, v4);
        assert!(!e.ipv4 && e.ipv6, "{e:?}");
        let subnets: Vec<&str> = e.subnets.iter().map(|s| s.subnet.as_str()).collect();
        assert_eq!(subnets, ["2001:db8::/64"]);
    }
    let on = r#"{"com.docker.network.enable_ipv4":true,"com.docker.network.enable_ipv6":true}"#;
    let old = r#"{"com.docker.network.enable_ipv6":true}"#;
    for opts in [on, old] {
        let e = create(opts, real4);
        assert!(e.ipv4 && e.ipv6, "{e:?}");
        assert_eq!(e.subnets.len(), 2);
    }
    // The flag travels in the request's JSON only when it is off.
    let json = serde_json::to_string(&Request::NetworkEnsure(create(off, "[]"))).unwrap();
    assert!(json.contains(r#""ipv4":false"#), "{json}");
    let json = serde_json::to_string(&Request::NetworkEnsure(create(old, real4))).unwrap();
    assert!(!json.contains("ipv4"), "{json}");
}

/// `--ipam-driver null -o uvlan.ipam=dhcp`: the null pool is accepted and no subnet is
/// sent; a real pool, IPv6, or no option at all are refused before the daemon is asked.
#[test]
fn dhcp_ipam_takes_the_null_pool_only() {
    let create = |options: &str, v4: &str| {
        let b = fake(|_| ok(json!(NID)));
        let body = format!(
            r#"{{"NetworkID":"{NID}","Options":{options},"IPv4Data":{v4},"IPv6Data":null}}"#
        );
        let r = handle(
            &b,
            Driver::Macvlan,
            "NetworkDriver.CreateNetwork",
            body.as_bytes(),
        );
        let seen = b.seen.lock().unwrap().clone();
        (r.body["Err"].as_str().map(str::to_string), seen)
    };
    let null4 = r#"[{"AddressSpace":"null","Pool":"0.0.0.0/0"}]"#;
    let real4 = r#"[{"Pool":"192.0.2.0/24","Gateway":"192.0.2.1/24"}]"#;
    let dhcp = r#"{"com.docker.network.generic":{"parent":"eth0","uvlan.ipam":"dhcp"}}"#;
    let (err, seen) = create(dhcp, null4);
    assert_eq!(err, None);
    let Request::NetworkEnsure(e) = &seen[0] else {
        panic!("{seen:?}")
    };
    assert!(e.subnets.is_empty(), "{:?}", e.subnets);
    assert_eq!(
        e.options.get("uvlan.ipam").map(String::as_str),
        Some("dhcp")
    );
    let (err, seen) = create(dhcp, real4);
    assert!(err.unwrap().contains("needs --ipam-driver null"));
    assert!(seen.is_empty());
    let v6 = r#"{"com.docker.network.enable_ipv6":true,"com.docker.network.generic":{"uvlan.ipam":"dhcp"}}"#;
    let (err, seen) = create(v6, null4);
    assert!(err.unwrap().contains("--ipv6 cannot be used"));
    assert!(seen.is_empty());
    // Another value reaches the daemon, which refuses it by name.
    let other = r#"{"com.docker.network.generic":{"uvlan.ipam":"static"}}"#;
    assert_eq!(create(other, null4).1.len(), 1);
    let plain = r#"{"com.docker.network.generic":{"parent":"eth0"}}"#;
    assert_eq!(
        create(plain, null4).0.as_deref(),
        Some("ipv4 pool is empty")
    );
}

/// Docker's CreateEndpoint of [`EID`] on a macvlan network with `address` and `mac` (empty:
/// none) through `b`: the reply, and the endpoint the driver asked the daemon to reserve
/// first.
fn create_macvlan_endpoint(b: &Fake, address: &str, mac: &str) -> (Reply, EndpointSpec) {
    let body = format!(
        r#"{{"NetworkID":"{NID}","EndpointID":"{EID}","Interface":{{"Address":"{address}","AddressIPv6":"","MacAddress":"{mac}"}},"Options":{{}}}}"#
    );
    let r = handle(
        b,
        Driver::Macvlan,
        "NetworkDriver.CreateEndpoint",
        body.as_bytes(),
    );
    let seen = b.seen.lock().unwrap();
    let Request::EndpointReserve { spec, .. } = &seen[0] else {
        panic!()
    };
    (r, spec.clone())
}

/// On a DHCP network the daemon answers the leased address with the MAC; Docker gets
/// both when it sent neither, and its own when it sent them.
#[test]
fn create_endpoint_answers_a_leased_address() {
    for (sent_mac, want) in [
        (
            "",
            json!({"Interface": {"MacAddress": "02:aa:bb:cc:dd:ee", "Address": "192.0.2.120/24"}}),
        ),
        (
            "02:aa:bb:cc:dd:ee",
            json!({"Interface": {"Address": "192.0.2.120/24"}}),
        ),
    ] {
        let b =
            fake(|_| ok(json!({"MacAddress": "02:aa:bb:cc:dd:ee", "Address": "192.0.2.120/24"})));
        let (r, spec) = create_macvlan_endpoint(&b, "", sent_mac);
        assert_eq!(r, Reply::ok(want));
        assert_eq!(spec.address, None);
    }
    // ipvlan: no MAC of its own.
    let b = fake(|_| ok(json!({"MacAddress": "", "Address": "192.0.2.121/24"})));
    let body = format!(
        r#"{{"NetworkID":"{NID}","EndpointID":"{EID}","Interface":{{"Address":""}},"Options":{{}}}}"#
    );
    let r = handle(
        &b,
        Driver::Ipvlan,
        "NetworkDriver.CreateEndpoint",
        body.as_bytes(),
    );
    assert_eq!(
        r,
        Reply::ok(json!({"Interface": {"Address": "192.0.2.121/24"}}))
    );
}

#[test]
fn daemon_errors_become_err_answers() {
    let b = fake(|_| Response::Error {
        message: "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default"
            .into(),
    });
    let body = format!(
        r#"{{"NetworkID":"{NID}","Options":{{"com.docker.network.generic":{{"ipvlan_mode":"l4"}}}},"IPv4Data":[{{"Pool":"192.0.2.0/24"}}],"IPv6Data":null}}"#
    );
    let r = handle(
        &b,
        Driver::Ipvlan,
        "NetworkDriver.CreateNetwork",
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["Err"],
        "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default"
    );
    let r = handle(
        &b,
        Driver::Ipvlan,
        "NetworkDriver.CreateNetwork",
        b"{not json",
    );
    assert!(r.body["Err"]
        .as_str()
        .unwrap()
        .starts_with("malformed CreateNetwork request"));
    let r = handle(
        &b,
        Driver::Ipvlan,
        "NetworkDriver.CreateNetwork",
        br#"{"NetworkID":"x"}"#,
    );
    assert!(r.body["Err"].as_str().unwrap().contains("64 hex"));
}

#[test]
fn create_endpoint_answers_a_mac_only_when_docker_sent_none() {
    for (sent, chosen, want) in [
        (
            "",
            "02:aa:bb:cc:dd:ee",
            json!({"Interface": {"MacAddress": "02:aa:bb:cc:dd:ee"}}),
        ),
        (
            "02:00:00:00:00:09",
            "02:00:00:00:00:09",
            json!({"Interface": {}}),
        ),
        ("", "", json!({"Interface": {}})),
    ] {
        let chosen = chosen.to_string();
        let b = fake(move |_| ok(json!(chosen)));
        let (r, spec) = create_macvlan_endpoint(&b, "192.0.2.2/24", sent);
        assert_eq!(r, Reply::ok(want));
        assert_eq!(spec.address.as_deref(), Some("192.0.2.2/24"));
        assert_eq!(spec.address_v6, None);
        assert_eq!(spec.mac.as_deref(), (!sent.is_empty()).then_some(sent));
    }
}

#[test]
fn join_answers_by_mode() {
    let info = |v4: Option<Option<&str>>, v6: Option<Option<&str>>| AttachInfo {
        network_id: NID.into(),
        endpoint_id: EID.into(),
        ifname: "uvdd38095591cdd".into(),
        mac: "02:00:00:00:00:01".into(),
        mtu: 1500,
        default_v4: v4.map(|v| DefaultRouteView {
            via: v.map(str::to_string),
        }),
        default_v6: v6.map(|v| DefaultRouteView {
            via: v.map(str::to_string),
        }),
        routes: Vec::new(),
    };
    let l2 = join_answer(&info(Some(Some("192.0.2.1")), Some(Some("2001:db8::1"))));
    assert_eq!(
        l2,
        json!({"InterfaceName": {"SrcName": "uvdd38095591cdd", "DstPrefix": "eth"},
               "DisableGatewayService": true, "Gateway": "192.0.2.1", "GatewayIPv6": "2001:db8::1"})
    );
    let l3 = join_answer(&info(Some(None), Some(None)));
    assert_eq!(
        l3["StaticRoutes"],
        json!([{"Destination": "0.0.0.0/0", "RouteType": 1}, {"Destination": "::/0", "RouteType": 1}])
    );
    assert!(l3.get("Gateway").is_none());
    let internal = join_answer(&info(None, None));
    assert!(internal.get("Gateway").is_none() && internal.get("StaticRoutes").is_none());
    // A DHCP lease's classless routes (which replace its router).
    let mut dhcp = info(None, None);
    dhcp.routes = vec![
        crate::api::RouteView {
            dst: "0.0.0.0/0".into(),
            via: Some("192.0.2.1".into()),
        },
        crate::api::RouteView {
            dst: "198.51.100.0/24".into(),
            via: None,
        },
    ];
    let dhcp = join_answer(&dhcp);
    assert!(dhcp.get("Gateway").is_none(), "{dhcp}");
    assert_eq!(
        dhcp["StaticRoutes"],
        json!([{"Destination": "0.0.0.0/0", "RouteType": 0, "NextHop": "192.0.2.1"},
               {"Destination": "198.51.100.0/24", "RouteType": 1}])
    );
}

#[test]
fn join_leave_delete_requests() {
    let attach = AttachInfo {
        network_id: NID.into(),
        endpoint_id: EID.into(),
        ifname: "uvdd38095591cdd".into(),
        mac: "02:00:00:00:00:01".into(),
        mtu: 1500,
        default_v4: None,
        default_v6: None,
        routes: Vec::new(),
    };
    let a = serde_json::to_value(&attach).unwrap();
    let b = fake(move |r| match r {
        Request::EndpointAttach(_) => ok(a.clone()),
        _ => ok(json!(true)),
    });
    let body = format!(
        r#"{{"NetworkID":"{NID}","EndpointID":"{EID}","SandboxKey":"/proc/self/ns/net","Options":{{}}}}"#
    );
    let r = handle(&b, Driver::Ipvlan, "NetworkDriver.Join", body.as_bytes());
    assert_eq!(r.body["InterfaceName"]["SrcName"], "uvdd38095591cdd");
    handle(&b, Driver::Ipvlan, "NetworkDriver.Leave", body.as_bytes());
    handle(
        &b,
        Driver::Ipvlan,
        "NetworkDriver.DeleteEndpoint",
        body.as_bytes(),
    );
    let seen = b.seen.lock().unwrap();
    let Request::EndpointAttach(j) = &seen[0] else {
        panic!()
    };
    assert_eq!(j.host_name.as_deref(), Some("uvdd38095591cdd"));
    assert_eq!(
        (j.netns.as_str(), j.key.as_str()),
        ("/proc/self/ns/net", EID)
    );
    assert!(matches!(
        &seen[1],
        Request::EndpointDetach { forget: false, .. }
    ));
    assert!(matches!(
        &seen[2],
        Request::EndpointDetach { forget: true, .. }
    ));
    let no_sandbox = format!(r#"{{"NetworkID":"{NID}","EndpointID":"{EID}"}}"#);
    let r = handle(
        &b,
        Driver::Ipvlan,
        "NetworkDriver.Join",
        no_sandbox.as_bytes(),
    );
    assert!(r.body["Err"].as_str().unwrap().contains("SandboxKey"));
}

/// A directory removed when the test ends.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("uvlan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sandbox_keys_must_be_network_namespaces() {
    let tmp = TempDir::new("sandbox-key");
    let netns_dir = tmp.0.join("netns");
    std::fs::create_dir(&netns_dir).unwrap();
    std::fs::create_dir(tmp.0.join("exec")).unwrap();
    let plain = netns_dir.join("0123456789ab");
    std::fs::write(&plain, b"").unwrap();
    let socket = tmp.0.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // Network namespaces, and a namespace Docker is about to create in its directory.
    for ok in [
        "/proc/self/ns/net".to_string(),
        "/proc/thread-self/ns/net".to_string(),
        p(&netns_dir.join("fedcba987654")),
        p(&tmp.0.join("exec/netns/fedcba987654")),
    ] {
        assert_eq!(check_sandbox_key(&ok), Ok(()), "{ok}");
    }
    for (bad, why) in [
        (
            "/etc/passwd".to_string(),
            "is not a network namespace (an nsfs file",
        ),
        (p(&plain), "is not a network namespace (an nsfs file"),
        (
            "/proc/self/ns/mnt".to_string(),
            "is not a network namespace (an nsfs file",
        ),
        (
            "/proc/self/ns/uts".to_string(),
            "is not a network namespace (an nsfs file",
        ),
        ("/dev/null".to_string(), "not a regular file"),
        (p(&socket), "not a regular file"),
        (p(&netns_dir), "a directory"),
        ("/".to_string(), "a directory"),
        (p(&tmp.0.join("elsewhere")), "does not exist"),
        (p(&tmp.0.join("netns2/abc")), "does not exist"),
        (p(&tmp.0.join("gone/netns/abc")), "does not exist"),
        ("netns/abc".to_string(), "not an absolute path"),
        ("/proc/self/ns/net\0".to_string(), "not an absolute path"),
        (String::new(), "without a SandboxKey"),
    ] {
        let e = check_sandbox_key(&bad).expect_err(&bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn join_refuses_a_sandbox_key_that_is_not_a_network_namespace() {
    let b = fake(|_| ok(json!(true)));
    for key in [
        "/etc/passwd",
        "/proc/self/ns/mnt",
        "/nonexistent/abc",
        "relative",
    ] {
        let body = format!(
            r#"{{"NetworkID":"{NID}","EndpointID":"{EID}","SandboxKey":"{key}","Options":{{}}}}"#
        );
        let r = handle(&b, Driver::Ipvlan, "NetworkDriver.Join", body.as_bytes());
        assert_eq!(r.status, 200, "{key}");
        let e = r.body["Err"].as_str().unwrap_or_default();
        assert!(
            e.contains("SandboxKey") && e.contains(key),
            "{key}: {}",
            r.body
        );
    }
    // Nothing was asked of the daemon: no TAP is made for a bad key.
    assert!(b.seen.lock().unwrap().is_empty());
}
