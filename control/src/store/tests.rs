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
    }
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
