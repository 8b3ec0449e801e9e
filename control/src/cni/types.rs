//! CNI's JSON: the plugin configuration uvlan accepts, results, errors, and versions
//! (CNI spec 1.1.0, `containernetworking/cni` SPEC.md).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// CNI's well-known error codes.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const BAD_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// The plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// uvlan: the daemon refused or failed the request.
    pub const DAEMON: u32 = 100;
    /// uvlan: CHECK found the attachment differs from its result.
    pub const CHECK_MISMATCH: u32 = 101;
}

/// A CNI error, printed as `{cniVersion, code, msg, details}` on stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// The error code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// More detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with a code and message.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }

    /// The JSON printed for it.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v =
            serde_json::json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

/// `runtimeConfig` keys uvlan uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RuntimeConfig {
    /// `mac` (macvlan).
    #[serde(default)]
    pub mac: Option<String>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// The plugin configuration: the upstream ipvlan/macvlan plugins' keys, plus `flag` and
/// `vlan`. Unknown keys are ignored (CNI lets runtimes add keys).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NetConf {
    /// `cniVersion`.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The network name (the uvlan network's name).
    #[serde(default)]
    pub name: String,
    /// `uvlan-ipvlan` or `uvlan-macvlan`.
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// The parent interface in the uvlan daemon's namespace (default: the interface of its
    /// IPv4 default route).
    #[serde(default)]
    pub master: Option<String>,
    /// ipvlan `l2|l3|l3s` (default l2); macvlan `bridge|private|vepa|passthru` (default
    /// bridge).
    #[serde(default)]
    pub mode: Option<String>,
    /// uvlan: ipvlan flag `bridge|private|vepa`.
    #[serde(default)]
    pub flag: Option<String>,
    /// uvlan: tag with this VID on `master` (like a parent `master.VID`).
    #[serde(default)]
    pub vlan: Option<u16>,
    /// The interface MTU (0 or absent: the parent's).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// macvlan: the MAC.
    #[serde(default)]
    pub mac: Option<String>,
    /// Upstream: the master is inside the container namespace (not supported by uvlan).
    #[serde(rename = "linkInContainer", default)]
    pub link_in_container: Option<bool>,
    /// IPAM plugin configuration (`type` names the plugin).
    #[serde(default)]
    pub ipam: Option<Value>,
    /// DNS settings copied into the result when the IPAM gives none.
    #[serde(default)]
    pub dns: Option<Value>,
    /// Runtime-provided values.
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<RuntimeConfig>,
    /// The previous result (CHECK, DEL, chaining).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments still in use.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// GC: the legacy name libcni also sends.
    #[serde(rename = "cni.dev/attachments", default)]
    pub legacy_attachments: Option<Vec<Attachment>>,
}

/// Parses a version `a.b.c` for comparison.
pub fn version_tuple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next().unwrap_or(Some(0))?);
    if it.next().is_some() {
        return None;
    }
    Some(t)
}

/// True if `v` is at least `min`.
pub fn at_least(v: &str, min: &str) -> bool {
    match (version_tuple(v), version_tuple(min)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

/// The highest of `offered` this plugin and a peer both speak that is at most `want`.
pub fn best_common(want: &str, offered: &[String]) -> Option<String> {
    let want_t = version_tuple(want)?;
    offered
        .iter()
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .filter_map(|v| Some((version_tuple(v)?, v)))
        .filter(|(t, _)| *t <= want_t)
        .max()
        .map(|(_, v)| v.clone())
}

/// One address of a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `ADDR/LEN`.
    pub address: String,
    /// The gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The index in `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    /// Other keys (mtu, advmss, priority, table, scope), passed through.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One interface of a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceConfig {
    /// The name.
    pub name: String,
    /// The MAC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path; empty for a host interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// A result in the current (1.x) shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// Interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceConfig>,
    /// Addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

impl CniResult {
    /// Reads a result of any supported version (0.3.x/0.4.0 `ips[].version` is ignored).
    pub fn from_value(v: &Value) -> Result<CniResult, CniError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode a CNI result").details(e.to_string())
        })
    }

    /// The JSON for `version`: 0.3.x and 0.4.0 results carry `ips[].version`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}));
        v["cniVersion"] = Value::String(version.to_string());
        if !at_least(version, "1.0.0") {
            if let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut) {
                for ip in ips {
                    let fam = ip
                        .get("address")
                        .and_then(Value::as_str)
                        .and_then(|a| a.split('/').next())
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        .map(|a| if a.is_ipv4() { "4" } else { "6" });
                    if let Some(f) = fam {
                        ip["version"] = Value::String(f.to_string());
                    }
                }
            }
            if let Some(ifs) = v.get_mut("interfaces").and_then(Value::as_array_mut) {
                for i in ifs {
                    if let Some(o) = i.as_object_mut() {
                        o.remove("mtu");
                    }
                }
            }
        } else if !at_least(version, "1.1.0") {
            if let Some(ifs) = v.get_mut("interfaces").and_then(Value::as_array_mut) {
                for i in ifs {
                    if let Some(o) = i.as_object_mut() {
                        o.remove("mtu");
                    }
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions() {
        assert!(at_least("1.1.0", "1.0.0") && at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0") && !at_least("garbage", "0.1.0"));
        let offered: Vec<String> = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(best_common("1.1.0", &offered).as_deref(), Some("1.0.0"));
        assert_eq!(best_common("0.4.0", &offered).as_deref(), Some("0.4.0"));
        assert_eq!(best_common("0.2.0", &offered), None);
        assert_eq!(version_tuple("1.0"), Some((1, 0, 0)));
        assert_eq!(version_tuple("1.0.0.0"), None);
    }

    #[test]
    fn upstream_configs_parse_as_they_are() {
        let c: NetConf = serde_json::from_value(json!({
            "cniVersion": "1.0.0", "name": "mynet", "type": "uvlan-macvlan", "master": "eth0",
            "mode": "bridge", "mtu": 1400, "mac": "02:00:00:00:00:01", "linkInContainer": false,
            "ipam": {"type": "host-local", "subnet": "203.0.113.0/24"},
            "runtimeConfig": {"mac": "02:00:00:00:00:02"}, "args": {"x": 1}, "someRuntimeKey": true
        }))
        .unwrap();
        assert_eq!(c.master.as_deref(), Some("eth0"));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(
            c.runtime_config.unwrap().mac.as_deref(),
            Some("02:00:00:00:00:02")
        );
        assert_eq!(c.ipam.unwrap()["type"], "host-local");
        let gc: NetConf = serde_json::from_value(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "uvlan-ipvlan", "vlan": 20, "flag": "private",
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]
        }))
        .unwrap();
        assert_eq!((gc.vlan, gc.flag.as_deref()), (Some(20), Some("private")));
        assert_eq!(gc.valid_attachments.unwrap()[0].container_id, "c1");
    }

    #[test]
    fn results_by_version() {
        let r = CniResult::from_value(&json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "192.0.2.5/24", "gateway": "192.0.2.1"}],
            "routes": [{"dst": "0.0.0.0/0", "priority": 5}],
            "dns": {}
        }))
        .unwrap();
        assert_eq!(r.routes[0].extra.get("priority"), Some(&json!(5)));
        let mut r = r;
        r.interfaces.push(InterfaceConfig {
            name: "eth0".into(),
            mac: "02:00:00:00:00:01".into(),
            mtu: Some(1500),
            sandbox: "/run/netns/x".into(),
        });
        let v11 = r.to_json("1.1.0");
        assert_eq!(v11["cniVersion"], "1.1.0");
        assert_eq!(v11["interfaces"][0]["mtu"], 1500);
        assert!(v11["ips"][0].get("version").is_none());
        let v10 = r.to_json("1.0.0");
        assert!(v10["interfaces"][0].get("mtu").is_none());
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert!(CniResult::from_value(&json!({"ips": "x"})).is_err());
    }

    #[test]
    fn error_json() {
        let e = CniError::new(code::INVALID_CONFIG, "bad").details("why");
        assert_eq!(
            e.to_json("1.1.0"),
            json!({"cniVersion": "1.1.0", "code": 7, "msg": "bad", "details": "why"})
        );
        assert_eq!(e.to_string(), "bad: why");
    }
}
