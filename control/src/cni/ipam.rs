//! Delegating to a standard IPAM plugin (`host-local`, `static`, `dhcp`, ...) found in
//! `CNI_PATH`, as libcni's `invoke.DelegateAdd` does: same environment and command, the
//! network configuration on stdin, in the highest version both plugins speak.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::types::{best_common, code, CniError};

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

/// The configuration handed to the IPAM plugin: the whole network configuration with
/// `cniVersion` set to `version` (and a `prevResult` in the matching shape dropped, as IPAM
/// plugins do not use it).
pub fn delegated_config(conf: &Value, version: &str) -> Value {
    let mut c = conf.clone();
    if let Some(o) = c.as_object_mut() {
        o.insert("cniVersion".to_string(), Value::String(version.to_string()));
        o.remove("prevResult");
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
    fn delegated_config_sets_the_version() {
        let c = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "prevResult": {}, "ipam": {"type": "host-local"}});
        let d = delegated_config(&c, "1.0.0");
        assert_eq!(d["cniVersion"], "1.0.0");
        assert!(d.get("prevResult").is_none());
        assert_eq!(d["ipam"]["type"], "host-local");
    }
}
