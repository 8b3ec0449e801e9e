//! Every testbed under `testbeds/` runs green through `uvlan lab FILE`: the real binary builds
//! it in fresh namespaces, and the observed reachability matrix must equal the expected one.

use std::process::Command;
use uvlan_system_tests::{require_root, sh, uvlan_bin};

#[test]
fn every_testbed_runs_green() {
    require_root();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbeds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testbeds/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let labs_ns = || -> Vec<String> {
        String::from_utf8_lossy(&sh(Command::new("ip").args(["netns", "list"])).stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("ulab"))
            .map(str::to_string)
            .collect()
    };
    let before = labs_ns();
    let mut failed = Vec::new();
    for f in &files {
        let o = sh(Command::new(uvlan_bin()).arg("lab").arg(f));
        if !o.status.success() {
            failed.push(format!(
                "{}:\n{}{}",
                f.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let leftover = sh(Command::new("ip").args(["netns", "list"]));
    assert!(
        !String::from_utf8_lossy(&leftover.stdout).contains("ulab"),
        "a lab left namespaces behind"
    );
}
