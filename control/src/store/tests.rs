use super::*;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let p = std::env::temp_dir().join(format!(
        "uvlan-st-{}-{tag}-{}",
        std::process::id(),
        crate::ids::random_hex(4).unwrap()
    ));
    fs::create_dir_all(&p).unwrap();
    Dir(p)
}

#[test]
fn atomic_write_replaces_whole_files_and_leaves_no_temp() {
    let d = dir("atomic");
    let f = d.0.join("x.json");
    write_atomic(&f, b"first").unwrap();
    write_atomic(&f, b"second, longer").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"second, longer");
    let names: Vec<String> = fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["x.json".to_string()]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn an_interrupted_write_keeps_the_old_file() {
    // A crash between writing the temp file and the rename leaves the temp file behind:
    // the old file is intact and the leftover is removed (logged) on load.
    let d = dir("interrupted");
    let store = Store::open(&d.0).unwrap();
    let id = crate::ids::new_id().unwrap();
    let rec = sample(&id);
    store.create_network(&rec).unwrap();
    let tmp = d.0.join("networks").join(format!("{id}.json.tmp"));
    fs::write(&tmp, b"{\"half\": ").unwrap();
    let mut logs = Vec::new();
    let got = store.load_networks(&mut |m| logs.push(m)).unwrap();
    assert_eq!(got, vec![rec]);
    assert!(!tmp.exists());
    assert_eq!(logs.len(), 1);
    assert!(
        logs[0].contains("left over from an interrupted write"),
        "{logs:?}"
    );
}

fn sample(id: &str) -> NetworkRecord {
    NetworkRecord {
        version: RECORD_VERSION,
        seq: 0,
        id: id.to_string(),
        name: "n1".into(),
        created: crate::ids::now_rfc3339(),
        driver: "ipvlan".into(),
        options: Default::default(),
        internal: false,
        ipv4: true,
        ipv6: false,
        ipam_config: Vec::new(),
        ipam: Default::default(),
        driver_config: DriverConfig {
            parent: None,
            ipvlan_mode: Some("l2".into()),
            ipvlan_flag: Some("bridge".into()),
            macvlan_mode: None,
            isolated_mac: Some("02:11:22:33:44:55".into()),
        },
        endpoints: Vec::new(),
        managed: None,
        dhcp: false,
    }
}

/// `ipv4` false (an IPv6-only network) survives a write and a load; a record without the
/// field (written before `--ipv4=false` existed) loads with IPv4 on.
#[test]
fn ipv4_flag_round_trips_and_defaults_to_on() {
    let d = dir("ipv4");
    let store = Store::open(&d.0).unwrap();
    let id = crate::ids::new_id().unwrap();
    let mut rec = sample(&id);
    rec.ipv4 = false;
    rec.ipv6 = true;
    store.create_network(&rec).unwrap();
    let loaded = store.load_networks(&mut |_| {}).unwrap();
    assert_eq!(loaded.len(), 1);
    assert!(!loaded[0].ipv4 && loaded[0].ipv6);
    let text = serde_json::to_string(&sample(&id)).unwrap();
    assert!(!text.contains("ipv4"), "{text}");
    let old: NetworkRecord = serde_json::from_str(&text).unwrap();
    assert!(old.ipv4);
}

#[test]
fn corrupt_files_are_errors_naming_the_file() {
    let d = dir("corrupt");
    let store = Store::open(&d.0).unwrap();
    let id = crate::ids::new_id().unwrap();
    let path = d.0.join("networks").join(format!("{id}.json"));
    let check = |store: &Store, want: &str| {
        let e = store.load_networks(&mut |_| {}).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(want), "{msg}");
    };
    fs::write(&path, b"{ not json").unwrap();
    check(&store, "invalid JSON");
    let mut rec = sample(&id);
    rec.driver = "bridge".into();
    write_json(&path, &rec).unwrap();
    check(&store, "unknown driver");
    let mut rec = sample(&id);
    rec.id = crate::ids::new_id().unwrap();
    write_json(&path, &rec).unwrap();
    check(&store, "is named after ID");
    let mut rec = sample(&id);
    rec.version = 99;
    write_json(&path, &rec).unwrap();
    check(&store, "record version 99");
    let mut rec = sample(&id);
    rec.driver_config.isolated_mac = Some("01:00:00:00:00:01".into());
    write_json(&path, &rec).unwrap();
    check(&store, "isolated_mac");
    fs::remove_file(&path).unwrap();
    let stray = d.0.join("networks").join("notes.txt");
    fs::write(&stray, b"x").unwrap();
    let e = store.load_networks(&mut |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("notes.txt") && e.contains("unexpected file"),
        "{e}"
    );
}

#[test]
fn one_daemon_per_root() {
    let d = dir("lock");
    let store = Store::open(&d.0).unwrap();
    let held = store.lock().unwrap();
    let again = Store::open(&d.0).unwrap();
    let e = again.lock().unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    drop(held);
    again.lock().unwrap();
}

fn endpoint(n: u8, key: Option<&str>) -> EndpointRecord {
    EndpointRecord {
        host_interface: false,
        lease: None,
        id: crate::ids::new_id().unwrap(),
        sandbox_id: crate::ids::new_id().unwrap(),
        name: format!("ns{n}"),
        netns_path: format!("/run/netns/ns{n}"),
        netns_inode: 4_026_532_000 + u64::from(n),
        ifname: "eth0".into(),
        mac: format!("02:00:00:00:00:{n:02x}"),
        addrs: Default::default(),
        req_ip: None,
        req_ip6: None,
        req_mac: None,
        created: crate::ids::now_rfc3339(),
        owns_netns: false,
        auto_remove: None,
        key: key.map(str::to_string),
        host_name: None,
        intent: None,
    }
}

fn reservation(key: &str) -> ReservedEndpoint {
    ReservedEndpoint {
        key: key.to_string(),
        addrs: Default::default(),
        mac: String::new(),
        req_mac: None,
        created: crate::ids::now_rfc3339(),
        host_name: None,
        endpoint_id: None,
        lease: None,
        offered: None,
    }
}

fn load(store: &Store) -> (Result<Vec<NetworkRecord>, StoreError>, Vec<String>) {
    let mut logs = Vec::new();
    let r = store.load_networks(&mut |m| logs.push(m));
    (r, logs)
}

#[test]
fn endpoints_have_files_of_their_own_and_the_network_file_lists_none() {
    let d = dir("perep");
    let store = Store::open(&d.0).unwrap();
    let id = crate::ids::new_id().unwrap();
    let mut rec = sample(&id);
    store.create_network(&rec).unwrap();
    let (a, b) = (endpoint(1, None), endpoint(2, None));
    store.save_endpoint(&id, &a).unwrap();
    store.save_endpoint(&id, &b).unwrap();
    let net_file = fs::read_to_string(d.0.join("networks").join(format!("{id}.json"))).unwrap();
    assert!(!net_file.contains("endpoints"), "{net_file}");
    assert!(net_file.contains("\"version\": 2"), "{net_file}");
    let ep_dir = d.0.join("endpoints").join(&id);
    assert!(ep_dir.join(format!("{}.json", a.id)).exists());
    rec.endpoints = vec![a.clone(), b.clone()];
    let (got, logs) = load(&store);
    assert_eq!(got.unwrap(), vec![rec.clone()]);
    assert!(logs.is_empty(), "{logs:?}");
    // Removing one touches only its file.
    store.delete_endpoint(&id, &a.id).unwrap();
    rec.endpoints = vec![b.clone()];
    assert_eq!(load(&store).0.unwrap(), vec![rec]);
    // A removed network leaves nothing.
    store.delete_endpoint(&id, &b.id).unwrap();
    store.delete_network(&id).unwrap();
    assert_eq!(fs::read_dir(d.0.join("networks")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(d.0.join("endpoints")).unwrap().count(), 0);
}

#[test]
fn version_1_files_are_migrated_on_load() {
    let d = dir("v1");
    let store = Store::open(&d.0).unwrap();
    let id = crate::ids::new_id().unwrap();
    let mut rec = sample(&id);
    rec.version = RECORD_VERSION_V1;
    rec.endpoints = vec![endpoint(1, Some("k1")), endpoint(2, None)];
    rec.managed = Some(Managed {
        owner: "docker".into(),
        reserved: vec![reservation("k2")],
    });
    // A version 1 file, as the previous build wrote it (endpoints inline).
    let mut v1 = serde_json::to_value(&rec).unwrap();
    v1["endpoints"] = serde_json::to_value(&rec.endpoints).unwrap();
    v1["managed"]["reserved"] =
        serde_json::to_value(&rec.managed.as_ref().unwrap().reserved).unwrap();
    let path = d.0.join("networks").join(format!("{id}.json"));
    fs::write(&path, serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
    let (got, logs) = load(&store);
    let got = got.unwrap();
    let mut want = rec.clone();
    want.version = RECORD_VERSION;
    assert_eq!(got, vec![want.clone()]);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].contains("migrated") && logs[0].contains("2 endpoint(s) and 1 reservation(s)"),
        "{logs:?}"
    );
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\"version\": 2") && !text.contains("\"endpoints\""),
        "{text}"
    );
    let dir = d.0.join("endpoints").join(&id);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
    assert!(dir.join("reserved.k2.json").exists());
    // Loading again finds the same, without migrating.
    let (again, logs) = load(&store);
    assert_eq!(again.unwrap(), vec![want]);
    assert!(logs.is_empty(), "{logs:?}");
}

#[test]
fn missing_state_is_refused_with_the_way_out() {
    // networks/ gone while host.json is there: every TAP would be orphaned.
    let d = dir("nonets");
    let store = Store::open(&d.0).unwrap();
    store
        .load_or_init_host(|| {
            Ok(HostRecord {
                host_id: "h".into(),
            })
        })
        .unwrap();
    fs::remove_dir(d.0.join("networks")).unwrap();
    let e = Store::open(&d.0).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Missing { .. }), "{msg}");
    assert!(
        msg.contains(&d.0.join("networks").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("mkdir -m 700"), "{msg}");
    assert!(!d.0.join("networks").exists(), "nothing was created");

    // host.json gone while networks are stored: a new host ID would move the IPv6 pool.
    let d = dir("nohost");
    let store = Store::open(&d.0).unwrap();
    let id = crate::ids::new_id().unwrap();
    store.create_network(&sample(&id)).unwrap();
    let e = store
        .load_or_init_host(|| {
            Ok(HostRecord {
                host_id: "new".into(),
            })
        })
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Missing { .. }), "{msg}");
    assert!(
        msg.contains("host.json") && msg.contains("host_id"),
        "{msg}"
    );
    assert!(
        !d.0.join("host.json").exists(),
        "no new host ID was written"
    );

    // A network's endpoints directory gone: its endpoints would be forgotten.
    fs::remove_dir(d.0.join("endpoints").join(&id)).unwrap();
    let (r, _) = load(&store);
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains(&d.0.join("endpoints").join(&id).display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("is missing"), "{msg}");

    // Endpoint records of a network without its file.
    let d = dir("nonetfile");
    let store = Store::open(&d.0).unwrap();
    let id = crate::ids::new_id().unwrap();
    store.create_network(&sample(&id)).unwrap();
    store.save_endpoint(&id, &endpoint(1, None)).unwrap();
    fs::remove_file(d.0.join("networks").join(format!("{id}.json"))).unwrap();
    let msg = load(&store).0.unwrap_err().to_string();
    assert!(
        msg.contains(&format!("{id}.json")) && msg.contains("1 endpoint record(s)"),
        "{msg}"
    );
}

#[test]
fn leftovers_of_interrupted_operations_are_finished_and_logged() {
    let d = dir("leftover");
    let store = Store::open(&d.0).unwrap();
    // An interrupted network create (or remove): an empty endpoints directory alone.
    let stray = d.0.join("endpoints").join(crate::ids::new_id().unwrap());
    fs::create_dir(&stray).unwrap();
    // An interrupted attach: the reservation beside its settled endpoint.
    let id = crate::ids::new_id().unwrap();
    let mut rec = sample(&id);
    rec.managed = Some(Managed {
        owner: "docker".into(),
        reserved: Vec::new(),
    });
    store.create_network(&rec).unwrap();
    let ep = endpoint(1, Some("k1"));
    store.save_endpoint(&id, &ep).unwrap();
    store.save_reserved(&id, &reservation("k1")).unwrap();
    // An endpoint with an intent beside its reservation is left to the daemon.
    let mut leaving = endpoint(2, Some("k2"));
    leaving.intent = Some(Intent::Park);
    store.save_endpoint(&id, &leaving).unwrap();
    store.save_reserved(&id, &reservation("k2")).unwrap();
    let (got, logs) = load(&store);
    let got = got.unwrap();
    assert_eq!(got[0].endpoints, vec![ep, leaving]);
    assert_eq!(got[0].managed.as_ref().unwrap().reserved.len(), 1);
    assert!(!stray.exists());
    assert!(!d
        .0
        .join("endpoints")
        .join(&id)
        .join("reserved.k1.json")
        .exists());
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("interrupted network create")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("interrupted attach")),
        "{logs:?}"
    );
}

#[test]
fn duplicate_endpoints_are_refused_naming_the_files() {
    let d = dir("dup");
    let store = Store::open(&d.0).unwrap();
    let (n1, n2) = (crate::ids::new_id().unwrap(), crate::ids::new_id().unwrap());
    store.create_network(&sample(&n1)).unwrap();
    let mut second = sample(&n2);
    second.name = "n2".into();
    second.seq = 1;
    store.create_network(&second).unwrap();
    let ep = endpoint(1, None);
    store.save_endpoint(&n1, &ep).unwrap();
    // The same endpoint ID in two networks.
    let mut copy = endpoint(2, None);
    copy.id = ep.id.clone();
    store.save_endpoint(&n2, &copy).unwrap();
    let msg = load(&store).0.unwrap_err().to_string();
    assert!(
        msg.contains(&ep.id) && msg.contains("is also used in network"),
        "{msg}"
    );
    assert!(msg.contains(&n1) && msg.contains(&n2), "{msg}");
    store.delete_endpoint(&n2, &ep.id).unwrap();
    // A file named after another ID.
    let other = d.0.join("endpoints").join(&n1).join(format!("{}.json", n2));
    fs::copy(
        d.0.join("endpoints")
            .join(&n1)
            .join(format!("{}.json", ep.id)),
        &other,
    )
    .unwrap();
    let msg = load(&store).0.unwrap_err().to_string();
    assert!(
        msg.contains(&other.display().to_string()) && msg.contains("is named after ID"),
        "{msg}"
    );
    fs::remove_file(&other).unwrap();
    // Two endpoints in one namespace, and a key used twice.
    let mut twin = endpoint(1, None);
    twin.netns_inode = ep.netns_inode;
    store.save_endpoint(&n1, &twin).unwrap();
    let msg = load(&store).0.unwrap_err().to_string();
    assert!(
        msg.contains("two endpoints in the same network namespace"),
        "{msg}"
    );
    store.delete_endpoint(&n1, &twin.id).unwrap();
    assert!(load(&store).0.is_ok());
    // A reservation in a network no front end manages.
    store.save_reserved(&n1, &reservation("k9")).unwrap();
    let msg = load(&store).0.unwrap_err().to_string();
    assert!(msg.contains("not managed by a front end"), "{msg}");
}
