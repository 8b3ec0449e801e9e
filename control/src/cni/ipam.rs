//! Delegating to a standard IPAM plugin (`host-local`, `static`, `dhcp`, ...) found in
//! `CNI_PATH`, as libcni's `invoke.DelegateAdd` does: same environment and command, the
//! network configuration on stdin, in the highest version both plugins speak.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::types::{best_common, code, CniError, CniResult};

/// Finds plugin `name` in the `CNI_PATH` directories.
pub fn find_plugin(name: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("invalid IPAM plugin type {name:?}"),
        ));
    }
    cni_path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("failed to find IPAM plugin {name:?} in path [{cni_path}]"),
            )
        })
}

/// Runs `plugin` with `CNI_COMMAND=command` (the rest of the environment inherited) and
/// `stdin`. Returns its stdout parsed as JSON (`Value::Null` when empty); a failure is the
/// plugin's own CNI error when it printed one.
pub fn exec(plugin: &Path, command: &str, stdin: &Value) -> Result<Value, CniError> {
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(
                code::IO,
                format!("cannot run IPAM plugin {}", plugin.display()),
            )
            .details(e.to_string())
        })?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.to_string().as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(code::IO, format!("IPAM plugin {} failed", plugin.display()))
            .details(e.to_string())
    })?;
    plugin_answer(
        plugin,
        command,
        out.status.success(),
        &out.stdout,
        &out.stderr,
    )
}

/// Reads what IPAM plugin `plugin` printed for `command` (`succeeded`: it exited 0): its
/// stdout parsed as JSON (`Value::Null` when empty), or the plugin's own CNI error when it
/// failed and printed one. Pure: `exec` runs the plugin, this reads its answer.
pub fn plugin_answer(
    plugin: &Path,
    command: &str,
    succeeded: bool,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<Value, CniError> {
    let text = String::from_utf8_lossy(stdout);
    if !succeeded {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if let Some(c) = v.get("code").and_then(Value::as_u64) {
                let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
                let det = v.get("details").and_then(Value::as_str).unwrap_or_default();
                return Err(CniError::new(c as u32, msg).details(det));
            }
        }
        return Err(CniError::new(
            code::IO,
            format!("IPAM plugin {} {command} failed", plugin.display()),
        )
        .details(format!(
            "{} {}",
            text.trim(),
            String::from_utf8_lossy(stderr).trim()
        )));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!(
                "cannot decode the answer of IPAM plugin {}",
                plugin.display()
            ),
        )
        .details(e.to_string())
    })
}

/// The version to talk to `plugin` in: the configuration's if it speaks it, else the
/// highest both speak below it (e.g. 1.0.0 for Debian's host-local 1.1.1 under a 1.1.0
/// configuration).
pub fn negotiate(plugin: &Path, want: &str) -> Result<String, CniError> {
    let v = exec(
        plugin,
        "VERSION",
        &serde_json::json!({ "cniVersion": want }),
    )?;
    version_from_answer(plugin, want, &v)
}

/// The version to talk to `plugin` in, from its answer `v` to VERSION (see [`negotiate`]).
pub fn version_from_answer(plugin: &Path, want: &str, v: &Value) -> Result<String, CniError> {
    let offered: Vec<String> = v
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if offered.iter().any(|o| o == want) {
        return Ok(want.to_string());
    }
    best_common(want, &offered).ok_or_else(|| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "IPAM plugin {} speaks none of the CNI versions up to {want} (it offers {offered:?})",
                plugin.display()
            ),
        )
    })
}

/// The configuration handed to the IPAM plugin: the whole network configuration the main
/// plugin got, `prevResult` included (the spec's delegation: CHECK and DEL, and an ADD in a
/// chain, pass it on; `static`'s CHECK needs it), with `cniVersion` set to `version`, the
/// one negotiated with the IPAM plugin. A `prevResult` of another version is rewritten in
/// that version's shape (the plugin decodes it as its `cniVersion` says, and an older plugin
/// knows no newer result); one this plugin cannot read goes unchanged, for the IPAM plugin
/// to judge.
pub fn delegated_config(conf: &Value, version: &str) -> Value {
    let mut c = conf.clone();
    if let Some(o) = c.as_object_mut() {
        let conf_version = o
            .get("cniVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(prev) = o.get_mut("prevResult") {
            // A result without a version is in the configuration's (as libcni reads it).
            let from = prev
                .get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(conf_version);
            if from.as_deref() != Some(version) {
                if let Ok(r) = CniResult::from_value(prev) {
                    *prev = r.to_json(version);
                }
            }
        }
        o.insert("cniVersion".to_string(), Value::String(version.to_string()));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_are_found_in_cni_path_only() {
        let dir = std::env::temp_dir().join(format!("uvlan-cnipath-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fake-ipam"), b"#!/bin/sh\n").unwrap();
        let path = format!("/nonexistent:{}", dir.display());
        assert_eq!(
            find_plugin("fake-ipam", &path).unwrap(),
            dir.join("fake-ipam")
        );
        let e = find_plugin("host-local", "/nonexistent").unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("failed to find IPAM plugin"), "{e}");
        assert!(find_plugin("../x", &path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn delegated_config_sets_the_version_and_keeps_the_prev_result() {
        let prev = serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1500,
                            "sandbox": "/run/netns/x"}],
            "ips": [{"address": "192.0.2.10/24", "gateway": "192.0.2.1", "interface": 0},
                    {"address": "2001:db8::10/64", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}]
        });
        let c = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "prevResult": prev,
                                   "ipam": {"type": "static"}});
        // The same version: everything as the main plugin got it.
        let same = delegated_config(&c, "1.1.0");
        assert_eq!(same, c);
        // Negotiated down to 1.0.0: the prevResult in 1.0.0's shape (no interface MTU).
        let d = delegated_config(&c, "1.0.0");
        assert_eq!(d["cniVersion"], "1.0.0");
        assert_eq!(d["ipam"]["type"], "static");
        assert_eq!(d["prevResult"]["cniVersion"], "1.0.0");
        assert!(d["prevResult"]["interfaces"][0].get("mtu").is_none());
        assert_eq!(d["prevResult"]["ips"][0]["gateway"], "192.0.2.1");
        assert_eq!(d["prevResult"]["routes"][0]["dst"], "0.0.0.0/0");
        // Down to 0.4.0: the addresses carry their family.
        let old = delegated_config(&c, "0.4.0");
        assert_eq!(old["prevResult"]["ips"][0]["version"], "4");
        assert_eq!(old["prevResult"]["ips"][1]["version"], "6");
        // A prevResult already in the negotiated version goes unchanged.
        let mut v100 = c.clone();
        v100["prevResult"]["cniVersion"] = "1.0.0".into();
        assert_eq!(
            delegated_config(&v100, "1.0.0")["prevResult"],
            v100["prevResult"]
        );
        // A prevResult this plugin cannot read goes unchanged; none stays none.
        let odd = serde_json::json!({"cniVersion": "1.1.0", "prevResult": {"ips": "x"}});
        assert_eq!(
            delegated_config(&odd, "1.0.0")["prevResult"],
            odd["prevResult"]
        );
        let none = serde_json::json!({"cniVersion": "1.1.0", "name": "n"});
        assert!(delegated_config(&none, "1.0.0").get("prevResult").is_none());
    }
}
