//! Every testbed under `testbeds/` runs green through `uvlan lab FILE`: the real binary builds
//! it in fresh namespaces, and every stage's reachability matrix, captures and command checks
//! must come out as the testbed expects. The embedded copies are what `uvlan lab NAME` runs
//! from any directory; the default one runs without an argument.

use std::process::Command;
use std::time::Instant;
use uvlan_system_tests::{require_root, sh, uvlan_bin};

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
