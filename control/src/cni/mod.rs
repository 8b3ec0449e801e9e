//! The CNI plugin (spec 1.1.0): one binary, `uvlan-cni`, installed as `uvlan-ipvlan` and
//! `uvlan-macvlan` (it picks the driver from the name it was run as, else from the
//! configuration's `type`).
//!
//! It accepts the upstream ipvlan/macvlan plugins' configuration keys as they are
//! (`master`, `mode`, `mtu`, `mac`, `linkInContainer`, `ipam`) plus `flag` (ipvlan) and
//! `vlan`, delegates IPAM to the standard IPAM plugins in `CNI_PATH`, and asks the uvlan
//! daemon (`$UVLAN_SOCKET`, default `/run/uvlan/uvlan.sock`) to ensure the network (named
//! after the configuration's `name`, managed by CNI) and attach the endpoint: a TAP (with the
//! daemon's fast path, one end of a veth pair) named `CNI_IFNAME` in `CNI_NETNS`, with the
//! IPAM result's addresses and routes. Endpoints are
//! keyed by `CONTAINERID/IFNAME`; DEL is idempotent and succeeds when the namespace is
//! gone; the network goes away with its last endpoint.

pub mod ipam;
pub mod types;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::api::{
    self, AttachEndpoint, AttachInfo, ClientError, EndpointSpec, EnsureNetwork, ManagedEndpoint,
    Request, RouteSpec, OWNER_CNI,
};
use crate::netns::{Netns, Rtnl};
use types::{
    at_least, code, CniError, CniResult, InterfaceConfig, IpConfig, NetConf, SUPPORTED_VERSIONS,
};

/// The driver behind a plugin name.
pub fn driver_for(name: &str) -> Option<&'static str> {
    match name {
        "uvlan-ipvlan" => Some("ipvlan"),
        "uvlan-macvlan" => Some("macvlan"),
        _ => None,
    }
}

/// What a run of the plugin gets from the runtime.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, split.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`.
    pub path: String,
    /// The name the binary was run as.
    pub argv0: String,
    /// The daemon's socket.
    pub socket: PathBuf,
}

impl Invocation {
    /// Reads the CNI environment.
    pub fn from_env() -> Invocation {
        let argv0 = std::env::args().next().unwrap_or_default();
        Invocation::from_vars(|k| std::env::var(k).ok(), &argv0, api::socket_path(None))
    }

    /// The invocation the environment variables `var` (`CNI_COMMAND`, ...; unset ones read
    /// as empty) and the program path `argv0` describe, talking to the daemon at `socket`.
    /// Pure: [`Invocation::from_env`] passes the process's environment.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        argv0: &str,
        socket: PathBuf,
    ) -> Invocation {
        let var = |k: &str| var(k).unwrap_or_default();
        let argv0 = Path::new(argv0)
            .file_name()
            .map_or_else(|| argv0.to_string(), |f| f.to_string_lossy().into_owned());
        Invocation {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: parse_args(&var("CNI_ARGS")),
            path: var("CNI_PATH"),
            argv0,
            socket,
        }
    }

    /// The endpoint key: `CONTAINERID/IFNAME`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_id, self.ifname)
    }

    fn require(&self, what: &[(&str, &str)]) -> Result<(), CniError> {
        for (name, value) in what {
            if value.is_empty() {
                return Err(CniError::new(
                    code::BAD_ENV,
                    format!("required env variable {name} missing"),
                ));
            }
        }
        Ok(())
    }
}

/// `CNI_ARGS` (`K=V;K2=V2`).
pub fn parse_args(text: &str) -> BTreeMap<String, String> {
    text.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Runs the plugin: reads stdin, does the command, prints the result or the error on
/// stdout. Returns the exit code.
pub fn main() -> i32 {
    let inv = Invocation::from_env();
    let mut input = Vec::new();
    let _ = std::io::stdin().take(16 << 20).read_to_end(&mut input);
    let (out, code) = run(&inv, &input);
    if !out.is_null() {
        println!("{out}");
    }
    code
}

/// Decodes the network configuration on stdin: its JSON and its `cniVersion` (0.1.0 when
/// absent or empty). Pure.
pub fn parse_stdin(stdin: &[u8]) -> Result<(Value, String), CniError> {
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(code::DECODE, "cannot decode the network configuration")
            .details(e.to_string())
    })?;
    let version = raw
        .get("cniVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .unwrap_or("0.1.0")
        .to_string();
    Ok((raw, version))
}

/// Does one command; returns what to print (`Null`: nothing) and the exit code.
pub fn run(inv: &Invocation, stdin: &[u8]) -> (Value, i32) {
    let (raw, version) = match parse_stdin(stdin) {
        Ok(parsed) => parsed,
        Err(err) => {
            return (
                err.to_json(SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1]),
                1,
            );
        }
    };
    let reply_version = if SUPPORTED_VERSIONS.contains(&version.as_str()) {
        version.clone()
    } else {
        SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_string()
    };
    match dispatch(inv, &raw, &version) {
        Ok(v) => (v, 0),
        Err(e) => (e.to_json(&reply_version), 1),
    }
}

fn dispatch(inv: &Invocation, raw: &Value, version: &str) -> Result<Value, CniError> {
    if inv.command == "VERSION" {
        return Ok(serde_json::json!({
            "cniVersion": SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1],
            "supportedVersions": SUPPORTED_VERSIONS,
        }));
    }
    let (conf, driver) = decode_conf(inv, raw, version)?;
    match inv.command.as_str() {
        "ADD" => add(inv, raw, &conf, driver, version),
        "DEL" => del(inv, raw, &conf, version).map(|()| Value::Null),
        "CHECK" => check(inv, raw, &conf, version).map(|()| Value::Null),
        "STATUS" => status(inv, &conf, version).map(|()| Value::Null),
        "GC" => gc(inv, raw, &conf, version).map(|()| Value::Null),
        "" => Err(CniError::new(
            code::BAD_ENV,
            "required env variable CNI_COMMAND missing",
        )),
        other => Err(CniError::new(
            code::BAD_ENV,
            format!("unknown CNI_COMMAND {other:?}"),
        )),
    }
}

/// Decodes and checks the network configuration `raw` (of `cniVersion` `version`) of a
/// command other than VERSION: a supported version, the keys uvlan knows, a driver (from the
/// name the plugin runs as, else `type`) and a name. Pure.
pub fn decode_conf(
    inv: &Invocation,
    raw: &Value,
    version: &str,
) -> Result<(NetConf, &'static str), CniError> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI versions: config is {version:?}, plugin supports {SUPPORTED_VERSIONS:?}"),
        ));
    }
    let conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
        CniError::new(code::DECODE, "cannot decode the network configuration")
            .details(e.to_string())
    })?;
    let driver = driver_for(&inv.argv0)
        .or_else(|| driver_for(&conf.plugin_type))
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "unknown plugin type {:?}: install this binary as uvlan-ipvlan or uvlan-macvlan",
                    conf.plugin_type
                ),
            )
        })?;
    if conf.name.is_empty() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "the network configuration has no name",
        ));
    }
    Ok((conf, driver))
}

fn needs(version: &str, min: &str, command: &str) -> Result<(), CniError> {
    if at_least(version, min) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("{command} needs cniVersion {min} or later (the configuration says {version})"),
        ))
    }
}

fn daemon_error(e: ClientError) -> CniError {
    match e {
        ClientError::Daemon(m) => CniError::new(code::DAEMON, m),
        ClientError::Unreachable { .. } => {
            CniError::new(code::TRY_AGAIN, "the uvlan daemon is not reachable")
                .details(e.to_string())
        }
        other => {
            CniError::new(code::IO, "talking to the uvlan daemon failed").details(other.to_string())
        }
    }
}

/// The uvlan network a configuration describes. Pure.
pub fn ensure_for(conf: &NetConf, driver: &str) -> Result<EnsureNetwork, CniError> {
    if conf.link_in_container == Some(true) {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            "linkInContainer is not supported: uvlan's parents live in the uvlan daemon's namespace",
        ));
    }
    let mut options = BTreeMap::new();
    let master = conf.master.clone().filter(|m| !m.is_empty());
    match (&master, conf.vlan) {
        (Some(m), Some(vid)) => {
            options.insert("parent".to_string(), format!("{m}.{vid}"));
        }
        (Some(m), None) => {
            options.insert("parent".to_string(), m.clone());
        }
        (None, Some(_)) => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "\"vlan\" needs a \"master\"",
            ));
        }
        (None, None) => {}
    }
    let mode = conf.mode.clone().filter(|m| !m.is_empty());
    match driver {
        "ipvlan" => {
            if let Some(m) = mode {
                options.insert("ipvlan_mode".to_string(), m);
            }
            if let Some(f) = conf.flag.clone().filter(|f| !f.is_empty()) {
                options.insert("ipvlan_flag".to_string(), f);
            }
            if conf.mac.is_some() {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "ipvlan interfaces do not support custom mac address assignment",
                ));
            }
        }
        _ => {
            if let Some(m) = mode {
                options.insert("macvlan_mode".to_string(), m);
            }
            if conf.flag.is_some() {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "\"flag\" is an ipvlan option",
                ));
            }
        }
    }
    Ok(EnsureNetwork {
        id: None,
        name: conf.name.clone(),
        owner: OWNER_CNI.to_string(),
        driver: driver.to_string(),
        options,
        subnets: Vec::new(),
        ipv4: true,
        ipv6: false,
        internal: false,
        parent_from_default_route: master.is_none(),
    })
}

fn ipam_type(conf: &NetConf) -> Option<String> {
    conf.ipam
        .as_ref()
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Runs the IPAM plugin for `command`, in a version both speak.
fn run_ipam(
    inv: &Invocation,
    raw: &Value,
    conf: &NetConf,
    command: &str,
    version: &str,
) -> Result<Option<Value>, CniError> {
    let Some(t) = ipam_type(conf) else {
        return Ok(None);
    };
    let plugin = ipam::find_plugin(&t, &inv.path)?;
    let v = ipam::negotiate(&plugin, version)?;
    if matches!(command, "STATUS" | "GC") && !at_least(&v, "1.1.0") {
        return Ok(None); // the IPAM plugin predates these verbs
    }
    ipam::exec(&plugin, command, &ipam::delegated_config(raw, &v)).map(Some)
}

/// The MAC the runtime asks for: `runtimeConfig.mac`, else `CNI_ARGS` `MAC`, else the
/// configuration's `mac`. Pure.
pub fn requested_mac(inv: &Invocation, conf: &NetConf) -> Option<String> {
    conf.runtime_config
        .as_ref()
        .and_then(|r| r.mac.clone())
        .or_else(|| inv.args.get("MAC").cloned())
        .or_else(|| conf.mac.clone())
        .filter(|m| !m.is_empty())
}

/// Builds the endpoint from the IPAM result: one address per family, routes with their
/// gateway filled in from the address of the same family (as the upstream plugins do). Pure.
pub fn endpoint_from(
    ipam: &CniResult,
    key: &str,
    mac: Option<String>,
) -> Result<(EndpointSpec, Vec<RouteSpec>), CniError> {
    let mut spec = EndpointSpec {
        key: key.to_string(),
        mac,
        ..EndpointSpec::default()
    };
    for ip in &ipam.ips {
        let addr: IpAddr = ip
            .address
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                CniError::new(
                    code::DECODE,
                    format!("IPAM gave a bad address {:?}", ip.address),
                )
            })?;
        let (slot, gw) = if addr.is_ipv4() {
            (&mut spec.address, &mut spec.gateway)
        } else {
            (&mut spec.address_v6, &mut spec.gateway_v6)
        };
        if slot.is_some() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "uvlan endpoints take one IPv4 and one IPv6 address; the IPAM plugin gave more of one family",
            ));
        }
        *slot = Some(ip.address.clone());
        *gw = ip.gateway.clone();
    }
    let routes = ipam
        .routes
        .iter()
        .map(|r| {
            let v4 = r
                .dst
                .split('/')
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .map(|a| a.is_ipv4());
            let gw = r.gw.clone().or_else(|| match v4 {
                Some(true) => spec.gateway.clone(),
                Some(false) => spec.gateway_v6.clone(),
                None => None,
            });
            RouteSpec {
                dst: r.dst.clone(),
                gw,
            }
        })
        .collect();
    Ok((spec, routes))
}

fn add(
    inv: &Invocation,
    raw: &Value,
    conf: &NetConf,
    driver: &str,
    version: &str,
) -> Result<Value, CniError> {
    inv.require(&[
        ("CNI_CONTAINERID", &inv.container_id),
        ("CNI_NETNS", &inv.netns),
        ("CNI_IFNAME", &inv.ifname),
    ])?;
    let ensure = ensure_for(conf, driver)?;
    let ipam_result = match run_ipam(inv, raw, conf, "ADD", version)? {
        Some(v) => CniResult::from_value(&v)?,
        None => CniResult::default(),
    };
    let release = |e: CniError| {
        let _ = run_ipam(inv, raw, conf, "DEL", version);
        e
    };
    let (spec, routes) =
        endpoint_from(&ipam_result, &inv.key(), requested_mac(inv, conf)).map_err(release)?;
    let req = AttachEndpoint {
        network: conf.name.clone(),
        ensure: Some(ensure),
        spec: Some(spec),
        key: inv.key(),
        netns: inv.netns.clone(),
        host_name: None,
        ifname: Some(inv.ifname.clone()),
        routes: Some(routes),
        mtu: conf.mtu.filter(|m| *m > 0),
        label: inv.key(),
    };
    let info: AttachInfo = api::call_typed(&inv.socket, &Request::EndpointAttach(Box::new(req)))
        .map_err(daemon_error)
        .map_err(release)?;
    let result = CniResult {
        interfaces: vec![InterfaceConfig {
            name: info.ifname,
            mac: info.mac,
            mtu: Some(info.mtu).filter(|m| *m > 0),
            sandbox: inv.netns.clone(),
        }],
        ips: ipam_result
            .ips
            .iter()
            .map(|ip| IpConfig {
                interface: Some(0),
                ..ip.clone()
            })
            .collect(),
        routes: ipam_result.routes.clone(),
        dns: ipam_result
            .dns
            .clone()
            .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
            .or_else(|| conf.dns.clone()),
    };
    Ok(result.to_json(version))
}

fn del(inv: &Invocation, raw: &Value, conf: &NetConf, version: &str) -> Result<(), CniError> {
    inv.require(&[
        ("CNI_CONTAINERID", &inv.container_id),
        ("CNI_IFNAME", &inv.ifname),
    ])?;
    let req = Request::EndpointDetach {
        network: conf.name.clone(),
        key: inv.key(),
        forget: true,
        remove_empty_network: true,
    };
    api::call(&inv.socket, &req).map_err(daemon_error)?;
    run_ipam(inv, raw, conf, "DEL", version).map(|_| ())
}

fn endpoints(inv: &Invocation, network: &str) -> Result<Vec<ManagedEndpoint>, CniError> {
    match api::call_typed(
        &inv.socket,
        &Request::EndpointList {
            network: network.to_string(),
        },
    ) {
        Ok(v) => Ok(v),
        // No such network: no endpoints.
        Err(ClientError::Daemon(m)) if m.contains("is not known to uvlan") => Ok(Vec::new()),
        Err(e) => Err(daemon_error(e)),
    }
}

fn check(inv: &Invocation, raw: &Value, conf: &NetConf, version: &str) -> Result<(), CniError> {
    needs(version, "0.4.0", "CHECK")?;
    inv.require(&[
        ("CNI_CONTAINERID", &inv.container_id),
        ("CNI_NETNS", &inv.netns),
        ("CNI_IFNAME", &inv.ifname),
    ])?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs a prevResult"))
        .and_then(CniResult::from_value)?;
    let key = inv.key();
    let ep = endpoints(inv, &conf.name)?
        .into_iter()
        .find(|e| e.key == key && e.attached)
        .ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!("no uvlan endpoint {key} in network {}", conf.name),
            )
        })?;
    let mismatch = |what: String| CniError::new(code::CHECK_MISMATCH, what);
    let ns = Netns::open(&inv.netns).map_err(|e| {
        CniError::new(code::UNKNOWN_CONTAINER, "cannot open CNI_NETNS").details(e.to_string())
    })?;
    let same_ns = Netns::open(&ep.netns)
        .map(|n| n.inode() == ns.inode())
        .unwrap_or(false);
    if !same_ns || ep.ifname != inv.ifname {
        return Err(mismatch(format!(
            "endpoint {key} is {} in {}, not {} in {}",
            ep.ifname, ep.netns, inv.ifname, inv.netns
        )));
    }
    let mut rtnl = Rtnl::open(&ns)
        .map_err(|e| CniError::new(code::IO, "cannot read CNI_NETNS").details(e.to_string()))?;
    let link = rtnl.link_get(&inv.ifname).map_err(|e| {
        mismatch(format!("interface {} is missing", inv.ifname)).details(e.to_string())
    })?;
    if let Some(i) = prev
        .interfaces
        .iter()
        .find(|i| i.name == inv.ifname && !i.sandbox.is_empty())
    {
        let mac = link
            .mac
            .map(|m| uvlan_dataplane::wire::MacAddr(m).to_string())
            .unwrap_or_default();
        if !i.mac.is_empty() && !i.mac.eq_ignore_ascii_case(&mac) {
            return Err(mismatch(format!(
                "interface {} has MAC {mac}, the result says {}",
                inv.ifname, i.mac
            )));
        }
    }
    let have: Vec<String> = rtnl
        .addr_list(Some(link.index))
        .map_err(|e| CniError::new(code::IO, "cannot list addresses").details(e.to_string()))?
        .into_iter()
        .map(|a| format!("{}/{}", a.addr, a.prefix_len))
        .collect();
    for ip in &prev.ips {
        if !have.contains(&ip.address) {
            return Err(mismatch(format!(
                "address {} is missing on {} (it has {have:?})",
                ip.address, inv.ifname
            )));
        }
    }
    run_ipam(inv, raw, conf, "CHECK", version).map(|_| ())
}

fn status(inv: &Invocation, conf: &NetConf, version: &str) -> Result<(), CniError> {
    needs(version, "1.1.0", "STATUS")?;
    api::call(&inv.socket, &Request::Ping).map_err(|e| {
        CniError::new(code::NOT_AVAILABLE, "the uvlan daemon is not available")
            .details(e.to_string())
    })?;
    let raw = serde_json::to_value(
        conf.ipam
            .as_ref()
            .map(|i| serde_json::json!({"cniVersion": version, "name": conf.name, "ipam": i})),
    )
    .unwrap_or(Value::Null);
    if !raw.is_null() {
        run_ipam(inv, &raw, conf, "STATUS", version)?;
    }
    Ok(())
}

fn gc(inv: &Invocation, raw: &Value, conf: &NetConf, version: &str) -> Result<(), CniError> {
    needs(version, "1.1.0", "GC")?;
    let valid: Vec<String> = conf
        .valid_attachments
        .iter()
        .chain(conf.legacy_attachments.iter())
        .flatten()
        .map(|a| format!("{}/{}", a.container_id, a.ifname))
        .collect();
    for ep in endpoints(inv, &conf.name)? {
        if valid.contains(&ep.key) {
            continue;
        }
        let req = Request::EndpointDetach {
            network: conf.name.clone(),
            key: ep.key.clone(),
            forget: true,
            remove_empty_network: true,
        };
        api::call(&inv.socket, &req).map_err(daemon_error)?;
    }
    run_ipam(inv, raw, conf, "GC", version).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inv(cmd: &str) -> Invocation {
        Invocation {
            command: cmd.into(),
            container_id: "c1".into(),
            netns: "/run/netns/none".into(),
            ifname: "eth0".into(),
            argv0: "uvlan-macvlan".into(),
            socket: PathBuf::from("/nonexistent/uvlan.sock"),
            ..Invocation::default()
        }
    }

    #[test]
    fn version_and_errors() {
        let (v, code) = run(&inv("VERSION"), br#"{"cniVersion":"1.1.0"}"#);
        assert_eq!(code, 0);
        assert_eq!(v["supportedVersions"], json!(SUPPORTED_VERSIONS));
        let (v, code) = run(&inv("ADD"), b"not json");
        assert_eq!((code, v["code"].as_u64()), (1, Some(6)));
        let (v, _) = run(
            &inv("ADD"),
            br#"{"cniVersion":"9.9.9","name":"n","type":"uvlan-macvlan"}"#,
        );
        assert_eq!(v["code"], 1);
        let (v, _) = run(
            &inv("ADD"),
            br#"{"cniVersion":"1.0.0","name":"n","type":"uvlan-macvlan","linkInContainer":true}"#,
        );
        assert_eq!(v["code"], 2);
        let mut bad_env = inv("ADD");
        bad_env.netns.clear();
        let (v, _) = run(
            &bad_env,
            br#"{"cniVersion":"1.0.0","name":"n","type":"uvlan-macvlan"}"#,
        );
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "required env variable CNI_NETNS missing");
        let (v, _) = run(
            &inv("CHECK"),
            br#"{"cniVersion":"0.3.1","name":"n","type":"uvlan-macvlan"}"#,
        );
        assert_eq!(v["code"], 1);
        let (v, _) = run(
            &inv("STATUS"),
            br#"{"cniVersion":"1.1.0","name":"n","type":"uvlan-macvlan"}"#,
        );
        assert_eq!(
            (v["code"].as_u64(), v["cniVersion"].as_str()),
            (Some(50), Some("1.1.0"))
        );
        // No daemon: DEL cannot clean up, and says to try again.
        let (v, _) = run(
            &inv("DEL"),
            br#"{"cniVersion":"1.0.0","name":"n","type":"uvlan-macvlan"}"#,
        );
        assert_eq!(v["code"], 11);
        let mut other = inv("ADD");
        other.argv0 = "uvlan-cni".into();
        let (v, _) = run(
            &other,
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#,
        );
        assert_eq!(v["code"], 7);
    }

    #[test]
    fn configurations_map_to_uvlan_options() {
        let conf: NetConf = serde_json::from_value(json!({
            "name": "n", "type": "uvlan-ipvlan", "master": "eth1", "vlan": 20, "mode": "l3", "flag": "private"
        }))
        .unwrap();
        let e = ensure_for(&conf, "ipvlan").unwrap();
        assert_eq!(e.options.get("parent").map(String::as_str), Some("eth1.20"));
        assert_eq!(e.options.get("ipvlan_mode").map(String::as_str), Some("l3"));
        assert_eq!(
            e.options.get("ipvlan_flag").map(String::as_str),
            Some("private")
        );
        assert!(!e.parent_from_default_route);
        let conf: NetConf =
            serde_json::from_value(json!({"name": "n", "type": "uvlan-macvlan", "mode": "vepa"}))
                .unwrap();
        let e = ensure_for(&conf, "macvlan").unwrap();
        assert!(e.parent_from_default_route && !e.options.contains_key("parent"));
        assert_eq!(
            e.options.get("macvlan_mode").map(String::as_str),
            Some("vepa")
        );
        let conf: NetConf = serde_json::from_value(
            json!({"name": "n", "type": "uvlan-ipvlan", "mac": "02:00:00:00:00:01"}),
        )
        .unwrap();
        assert!(ensure_for(&conf, "ipvlan")
            .unwrap_err()
            .msg
            .contains("do not support custom mac"));
        let conf: NetConf =
            serde_json::from_value(json!({"name": "n", "type": "uvlan-ipvlan", "vlan": 3}))
                .unwrap();
        assert_eq!(
            ensure_for(&conf, "ipvlan").unwrap_err().code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn endpoints_from_ipam_results() {
        let r = CniResult::from_value(&json!({
            "ips": [{"address": "192.0.2.5/24", "gateway": "192.0.2.1"}, {"address": "2001:db8::5/64"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "198.51.100.0/24", "gw": "192.0.2.254"}, {"dst": "::/0"}]
        }))
        .unwrap();
        let (spec, routes) = endpoint_from(&r, "c1/eth0", None).unwrap();
        assert_eq!(spec.address.as_deref(), Some("192.0.2.5/24"));
        assert_eq!(spec.gateway.as_deref(), Some("192.0.2.1"));
        assert_eq!(spec.address_v6.as_deref(), Some("2001:db8::5/64"));
        assert_eq!(routes[0].gw.as_deref(), Some("192.0.2.1"));
        assert_eq!(routes[1].gw.as_deref(), Some("192.0.2.254"));
        assert_eq!(routes[2].gw, None);
        let two = CniResult::from_value(
            &json!({"ips": [{"address": "192.0.2.5/24"}, {"address": "192.0.2.6/24"}]}),
        )
        .unwrap();
        assert!(endpoint_from(&two, "k", None).is_err());
        let mut i = inv("ADD");
        i.args = parse_args("IgnoreUnknown=1;MAC=02:00:00:00:00:07");
        let conf: NetConf =
            serde_json::from_value(json!({"name": "n", "mac": "02:00:00:00:00:01"})).unwrap();
        assert_eq!(
            requested_mac(&i, &conf).as_deref(),
            Some("02:00:00:00:00:07")
        );
    }
}
