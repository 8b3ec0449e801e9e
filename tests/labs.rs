//! Every testbed under `testbeds/` runs green through `uvlan lab FILE`: the real binary builds
//! it in fresh namespaces, and every stage's reachability matrix, captures and command checks
//! must come out as the testbed expects. The embedded copies are what `uvlan lab NAME` runs
//! from any directory; the default one runs without an argument.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;
use uvlan_system_tests::capture::tshark;
use uvlan_system_tests::{require_root, sh, uvlan_bin};

/// The tests here count what labs leave behind: one lab at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn leftovers() -> Vec<String> {
    let mut v = Vec::new();
    let ns = sh(Command::new("ip").args(["netns", "list"]));
    for l in String::from_utf8_lossy(&ns.stdout).lines() {
        if l.starts_with("ulab") {
            v.push(format!("namespace {l}"));
        }
    }
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("uvlan-lab-") {
                v.push(format!("state directory {n}"));
            }
        }
    }
    v
}

#[test]
fn every_testbed_runs_green_and_the_default_runs_from_anywhere() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbeds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testbeds/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected every seed example as a testbed"
    );
    let before = leftovers();
    let mut failed = Vec::new();
    let all = Instant::now();
    for f in &files {
        let t = Instant::now();
        // `UVLAN_TEST_FAST_PATH=on|off|auto`: the labs' daemons run with `--fast-path`.
        let mut cmd = Command::new(uvlan_bin());
        cmd.arg("lab").arg(f);
        if let Ok(fast) = std::env::var("UVLAN_TEST_FAST_PATH") {
            if !fast.is_empty() {
                cmd.args(["--fast-path", &fast]);
            }
        }
        let o = sh(&mut cmd);
        eprintln!(
            "{:<40} {:>5.1} s  {}",
            f.file_name().unwrap_or_default().to_string_lossy(),
            t.elapsed().as_secs_f64(),
            if o.status.success() { "ok" } else { "FAILED" }
        );
        if !o.status.success() {
            failed.push(format!(
                "{}:\n{}{}",
                f.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    eprintln!("all labs: {:.1} s", all.elapsed().as_secs_f64());
    assert!(failed.is_empty(), "{}", failed.join("\n"));

    // The embedded default testbed, without an argument, from a directory without testbeds/.
    let o = sh(Command::new(uvlan_bin()).arg("lab").current_dir("/"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("lab ipvlan-l3-no-parent: as expected"),
        "{out}"
    );
    let o = sh(Command::new(uvlan_bin())
        .args(["lab", "no-such-testbed"])
        .current_dir("/"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no-such-testbed") && err.contains("cookbook-ipvlan-driver"),
        "{err}"
    );

    let after: Vec<String> = leftovers()
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert!(after.is_empty(), "labs left things behind: {after:?}");
}

/// A directory the test deletes however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The default lab's `[[uvlan_capture]]` of ipnet210 (with drops), kept by `--out DIR`: the
/// report names the file, and tshark reads every frame back with its endpoint, direction and
/// verdict, the pings to c5 (isolated1) as `no_wire` drops recorded inbound only.
#[test]
fn a_lab_keeps_its_uvlan_capture_and_tshark_reads_the_verdicts() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = leftovers();
    let out =
        TempDir(std::env::temp_dir().join(format!("uvlan-test-lab-out-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&out.0);
    let o = sh(Command::new(uvlan_bin())
        .args(["lab", "ipvlan-l3-no-parent", "--out"])
        .arg(&out.0)
        .current_dir("/"));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let file = out.0.join("stage1-ipnet210.pcapng");
    let line = text
        .lines()
        .find(|l| l.starts_with("uvlan capture "))
        .unwrap_or_else(|| panic!("no uvlan capture line in\n{text}"));
    assert!(
        line.contains(&file.display().to_string()) && !line.contains("removed with the lab"),
        "{line}"
    );
    let frames = tshark(
        &file,
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "icmp.type",
            "ip.dst",
            "frame.comment",
        ],
    );
    assert!(!frames.is_empty(), "{line}");
    // The report counts what tshark reads.
    assert!(
        line.contains(&format!(": {} record(s), ", frames.len())),
        "tshark read {} frames; {line}",
        frames.len()
    );
    let ends = |f: &[String], ep: &str| f[0].ends_with(&format!("-{ep}"));
    let inbound = |f: &[String]| f[1] == "0x00000001";
    let outbound = |f: &[String]| f[1] == "0x00000002";
    for f in &frames {
        assert!(
            f[4].starts_with("verdict: "),
            "a record without its verdict: {f:?}"
        );
    }
    // c1 -> c2 across the two subnets: in at c1, out at c2, both saying so.
    let to_c2 = |f: &&Vec<String>| {
        f[2] == "8" && f[3] == "10.1.214.10" && f[4].contains("verdict: forward to ")
    };
    assert!(
        frames
            .iter()
            .filter(to_c2)
            .any(|f| ends(f, "c1") && inbound(f)),
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .filter(to_c2)
            .any(|f| ends(f, "c2") && outbound(f)),
        "{frames:?}"
    );
    // Pings to c5 (isolated1, 192.168.11.0/24): dropped, recorded once, inbound.
    let drops: Vec<&Vec<String>> = frames
        .iter()
        .filter(|f| f[4] == "verdict: drop (no_wire); kernel: dummy master (uvlan: no wire)")
        .collect();
    assert!(!drops.is_empty(), "{frames:?}");
    for d in &drops {
        assert!(inbound(d) && d[3].starts_with("192.168.11."), "{d:?}");
    }
    for ep in ["c1", "c2", "c3", "c4"] {
        assert!(
            drops.iter().any(|d| ends(d, ep)),
            "no drop from {ep}: {drops:?}"
        );
    }
    // Nothing was delivered to c5: it is on another network, not in this capture.
    assert!(!frames.iter().any(|f| ends(f, "c5")), "{frames:?}");
    let after: Vec<String> = leftovers()
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert!(after.is_empty(), "the lab left things behind: {after:?}");
}
