//! libnetwork's remote network driver protocol (`moby/libnetwork docs/remote.md`), as
//! Docker 20.10 speaks it, translated into daemon requests on managed networks.
//!
//! Every call is `POST /<Method>` with a JSON body; the answer is JSON, `{"Err": "..."}` on
//! failure (HTTP 200, so Docker prints `remote: TEXT`); unknown methods get 404, which Docker
//! takes as "not implemented".

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use uvlan_dataplane::fwd::Driver;

use crate::api::{
    AttachEndpoint, AttachInfo, DefaultRouteView, EndpointSpec, EnsureNetwork, Request, Response,
    OWNER_DOCKER,
};
use crate::ids;
use crate::ipam::IpamConfig;

/// The plugin name (socket `NAME.sock`, `docker network create -d NAME`) of a driver.
pub fn plugin_name(driver: Driver) -> &'static str {
    match driver {
        Driver::Ipvlan => "uvlan-ipvlan",
        Driver::Macvlan => "uvlan-macvlan",
    }
}

/// Docker's generic options key: the `-o` map.
const GENERIC: &str = "com.docker.network.generic";
/// Docker's `--ipv6`.
const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// Docker's `--ipv4` (Docker ≥ 28 sends it; older Dockers always want IPv4).
const ENABLE_IPV4: &str = "com.docker.network.enable_ipv4";
/// Docker's `--internal`.
const INTERNAL: &str = "com.docker.network.internal";

/// The prefix of the TAP names the driver hands Docker (`uvd` + 12 hex of the endpoint
/// ID: 15 characters, Linux's limit).
pub const HOST_PREFIX: &str = "uvd";

/// One answer: HTTP status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    fn err(text: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            body: json!({ "Err": text.into() }),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamData {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct CreateNetworkReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "IPv4Data", default)]
    ipv4: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6: Option<Vec<IpamData>>,
}

#[derive(Debug, Deserialize)]
struct NetworkReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointInterface {
    #[serde(default)]
    address: String,
    #[serde(rename = "AddressIPv6", default)]
    address_v6: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Debug, Deserialize)]
struct EndpointReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Interface", default)]
    interface: Option<EndpointInterface>,
    #[serde(rename = "SandboxKey", default)]
    sandbox_key: String,
}

/// What the driver needs from outside itself: the daemon's requests, and a look at the
/// sandbox Docker names at Join. The daemon, or a test double.
pub trait Backend: Send + Sync {
    /// Serves one daemon request.
    fn call(&self, req: Request) -> Response;
    /// A network was created: learn Docker's name for it (see `names`).
    fn network_created(&self, _id: &str) {}
    /// Before a network is created: learn at once the names Docker has for the networks
    /// still shown under their short IDs, so that an error naming one of them (a parent in
    /// use) names it as Docker does.
    fn learn_names_now(&self) {}
    /// Checks the `SandboxKey` of a Join before anything is made for it; by default with
    /// [`check_sandbox_key`] (a double may answer without touching the file system).
    fn check_sandbox(&self, key: &str) -> Result<(), String> {
        check_sandbox_key(key)
    }
}

fn call(b: &dyn Backend, req: Request) -> Result<Value, String> {
    match b.call(req) {
        Response::Ok { result } => Ok(result),
        Response::Error { message } => Err(message),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], method: &str) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("malformed {method} request from Docker: {e}"))
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if ids::is_valid_id(id) {
        Ok(())
    } else {
        Err(format!("{what} {id:?} is not 64 hex characters"))
    }
}

/// What Docker's options say about a network, besides the `-o` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flags {
    ipv4: bool,
    ipv6: bool,
    internal: bool,
}

/// The options Docker sends at CreateNetwork, as uvlan's `-o` map and Docker's flags.
fn network_options(
    options: &BTreeMap<String, Value>,
) -> Result<(BTreeMap<String, String>, Flags), String> {
    let mut out = BTreeMap::new();
    if let Some(generic) = options.get(GENERIC) {
        let Value::Object(map) = generic else {
            return Err(format!("{GENERIC} is not an object"));
        };
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => return Err(format!("option {k} has a value uvlan cannot use: {other}")),
            };
            out.insert(k.clone(), text);
        }
    }
    let flag = |key: &str, absent: bool| match options.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => absent,
    };
    let flags = Flags {
        ipv4: flag(ENABLE_IPV4, true),
        ipv6: flag(ENABLE_IPV6, false),
        internal: flag(INTERNAL, false),
    };
    Ok((out, flags))
}

/// uvlan's option asking for DHCP IPAM (`-o uvlan.ipam=dhcp`, with `--ipam-driver null`).
const IPAM_OPT: &str = "uvlan.ipam";

/// Whether the IPv4 pools Docker sent are its null IPAM's (`0.0.0.0/0`) or none.
fn null_v4(v4: Option<&[IpamData]>) -> bool {
    v4.unwrap_or_default()
        .iter()
        .all(|d| d.pool.is_empty() || d.pool == "0.0.0.0/0")
}

/// Docker's ipvlan and macvlan drivers refuse a network whose IPAM gave no pool for a family
/// it wants (`--ipam-driver null` gives `0.0.0.0/0` and `::/0`): `ipv4 pool is empty`,
/// `ipv6 pool is empty` (moby `ipvlan_network.go`, `macvlan_network.go` CreateNetwork).
fn refuse_null_pools(
    flags: Flags,
    v4: Option<&[IpamData]>,
    v6: Option<&[IpamData]>,
) -> Result<(), String> {
    let empty = |data: Option<&[IpamData]>, null: &str| match data.and_then(|d| d.first()) {
        None => true,
        Some(first) => first.pool.is_empty() || first.pool == null,
    };
    if flags.ipv4 && empty(v4, "0.0.0.0/0") {
        return Err("ipv4 pool is empty".to_string());
    }
    if flags.ipv6 && empty(v6, "::/0") {
        return Err("ipv6 pool is empty".to_string());
    }
    Ok(())
}

fn ipam_configs(data: Option<Vec<IpamData>>) -> Vec<IpamConfig> {
    data.unwrap_or_default()
        .into_iter()
        .filter(|d| !d.pool.is_empty())
        .map(|d| IpamConfig {
            subnet: d.pool,
            ip_range: None,
            gateway: (!d.gateway.is_empty()).then_some(d.gateway),
            aux: d.aux_addresses.unwrap_or_default(),
        })
        .collect()
}

/// The Join answer for an attached endpoint: Docker moves `SrcName` into the sandbox as
/// `ethN`; l2/macvlan endpoints with a wire get `Gateway`s, l3/l3s ones a connected default
/// route per family (so Docker adds no gateway bridge); a DHCP lease's classless routes
/// become `StaticRoutes` (`RouteType` 0 with a `NextHop`, 1 on the link).
pub fn join_answer(info: &AttachInfo) -> Value {
    let mut answer = json!({
        "InterfaceName": { "SrcName": info.ifname, "DstPrefix": "eth" },
        "DisableGatewayService": true,
    });
    let mut routes = Vec::new();
    for (route, key, dst) in [
        (&info.default_v4, "Gateway", "0.0.0.0/0"),
        (&info.default_v6, "GatewayIPv6", "::/0"),
    ] {
        match route {
            Some(DefaultRouteView { via: Some(gw) }) => {
                answer[key] = json!(gw);
            }
            Some(DefaultRouteView { via: None }) => {
                routes.push(json!({ "Destination": dst, "RouteType": 1 }));
            }
            None => {}
        }
    }
    for r in &info.routes {
        routes.push(match &r.via {
            Some(gw) => json!({ "Destination": r.dst, "RouteType": 0, "NextHop": gw }),
            None => json!({ "Destination": r.dst, "RouteType": 1 }),
        });
    }
    if !routes.is_empty() {
        answer["StaticRoutes"] = Value::Array(routes);
    }
    answer
}

/// Serves one call for the plugin of `driver`.
pub fn handle(b: &dyn Backend, driver: Driver, method: &str, body: &[u8]) -> Reply {
    match dispatch(b, driver, method, body) {
        Some(Ok(v)) => Reply::ok(v),
        Some(Err(e)) => Reply::err(e),
        None => Reply {
            status: 404,
            body: json!({
                "Err": format!("{method} is not implemented by uvlan's {} driver", plugin_name(driver))
            }),
        },
    }
}

fn dispatch(
    b: &dyn Backend,
    driver: Driver,
    method: &str,
    body: &[u8],
) -> Option<Result<Value, String>> {
    let r = match method {
        "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver"] })),
        // As Docker's ipvlan and macvlan drivers register: local data, global connectivity
        // (their endpoints are reachable from other hosts on the parent's LAN).
        "NetworkDriver.GetCapabilities" => {
            Ok(json!({ "Scope": "local", "ConnectivityScope": "global" }))
        }
        "NetworkDriver.CreateNetwork" => create_network(b, driver, body),
        "NetworkDriver.DeleteNetwork" => parse::<NetworkReq>(body, method).and_then(|r| {
            call(
                b,
                Request::NetworkDelete {
                    network: r.network_id,
                    owner: OWNER_DOCKER.to_string(),
                },
            )
            .map(|_| json!({}))
        }),
        "NetworkDriver.CreateEndpoint" => create_endpoint(b, body),
        "NetworkDriver.EndpointOperInfo" => {
            parse::<EndpointReq>(body, method).map(|_| json!({ "Value": {} }))
        }
        "NetworkDriver.DeleteEndpoint" | "NetworkDriver.Leave" => {
            let forget = method == "NetworkDriver.DeleteEndpoint";
            parse::<EndpointReq>(body, method).and_then(|r| {
                call(
                    b,
                    Request::EndpointDetach {
                        network: r.network_id,
                        key: r.endpoint_id,
                        forget,
                        remove_empty_network: false,
                    },
                )
                .map(|_| json!({}))
            })
        }
        "NetworkDriver.Join" => join(b, body),
        "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity"
        | "NetworkDriver.AllocateNetwork"
        | "NetworkDriver.FreeNetwork" => Ok(json!({})),
        _ => return None,
    };
    Some(r)
}

fn create_network(b: &dyn Backend, driver: Driver, body: &[u8]) -> Result<Value, String> {
    let r: CreateNetworkReq = parse(body, "CreateNetwork")?;
    check_id("network ID", &r.network_id)?;
    let (options, flags) = network_options(&r.options.unwrap_or_default())?;
    let mut subnets = Vec::new();
    if options.get(IPAM_OPT).is_some_and(|v| v == "dhcp") {
        // The LAN's DHCP server gives the addresses: Docker's IPAM must give none (the
        // daemon checks the option's value, IPv6 and the network's other rules).
        if !null_v4(r.ipv4.as_deref()) {
            return Err(format!(
                "{IPAM_OPT}=dhcp needs --ipam-driver null (and no --subnet): the LAN's DHCP \
                 server gives the addresses, not Docker's IPAM"
            ));
        }
        if flags.ipv6 {
            return Err(format!(
                "{IPAM_OPT}=dhcp leases IPv4 addresses only: --ipv6 cannot be used"
            ));
        }
        if !flags.ipv4 {
            return Err(format!(
                "{IPAM_OPT}=dhcp leases IPv4 addresses only: --ipv4=false cannot be used"
            ));
        }
    } else if !options.contains_key(IPAM_OPT) {
        // (Another value of the option: the daemon refuses it by name.)
        refuse_null_pools(flags, r.ipv4.as_deref(), r.ipv6.as_deref())?;
        // With enable_ipv4=false (Docker 28's --ipv4=false) Docker's IPAM allocates no IPv4
        // pool; an IPv4 pool sent anyway is not used, as Docker's own drivers do not.
        if flags.ipv4 {
            subnets = ipam_configs(r.ipv4);
        }
        if flags.ipv6 {
            subnets.extend(ipam_configs(r.ipv6));
        }
    }
    let Flags {
        ipv4,
        ipv6,
        internal,
    } = flags;
    b.learn_names_now();
    let req = EnsureNetwork {
        id: Some(r.network_id.clone()),
        name: ids::short_id(&r.network_id).to_string(),
        owner: OWNER_DOCKER.to_string(),
        driver: driver.as_str().to_string(),
        options,
        subnets,
        ipv4,
        ipv6,
        internal,
        parent_from_default_route: false,
    };
    call(b, Request::NetworkEnsure(req))?;
    b.network_created(&r.network_id);
    Ok(json!({}))
}

fn create_endpoint(b: &dyn Backend, body: &[u8]) -> Result<Value, String> {
    let r: EndpointReq = parse(body, "CreateEndpoint")?;
    check_id("endpoint ID", &r.endpoint_id)?;
    let iface = r.interface.unwrap_or_default();
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let spec = EndpointSpec {
        key: r.endpoint_id,
        address: nonempty(&iface.address),
        address_v6: nonempty(&iface.address_v6),
        gateway: None,
        gateway_v6: None,
        mac: nonempty(&iface.mac_address),
    };
    let reserved = call(
        b,
        Request::EndpointReserve {
            network: r.network_id,
            spec,
        },
    )?;
    // The MAC, or on a DHCP network the MAC and the leased address.
    let (mac, address) = match &reserved {
        Value::Object(m) => (
            m.get("MacAddress")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            m.get("Address").and_then(Value::as_str),
        ),
        other => (other.as_str().unwrap_or_default(), None),
    };
    // Docker fills in only what it did not send itself: a MAC it did not choose (macvlan),
    // an address its (null) IPAM did not give.
    let mut answer = serde_json::Map::new();
    if iface.mac_address.is_empty() && !mac.is_empty() {
        answer.insert("MacAddress".into(), json!(mac));
    }
    if let Some(a) = address.filter(|_| iface.address.is_empty()) {
        answer.insert("Address".into(), json!(a));
    }
    Ok(json!({ "Interface": answer }))
}

/// The directory Docker keeps its sandboxes' namespace files in: `<exec-root>/netns`
/// (libnetwork's `osl.GenerateKey`).
const DOCKER_NETNS_DIR: &str = "netns";

/// Checks Docker's `SandboxKey` at Join: the path of the container's network namespace.
///
/// * An existing file must be a network namespace: a regular file (nsfs inodes are; a
///   directory, FIFO or device is refused without being opened) that, opened, is an nsfs
///   inode of type `CLONE_NEWNET` (`ioctl(NS_GET_NSTYPE)`), like `/proc/PID/ns/net` or
///   Docker's bind mount of one.
/// * A path that does not exist yet is accepted only where Docker puts its namespaces,
///   `<exec-root>/netns/<sandbox ID>` with an existing `<exec-root>`: for a new container
///   Docker calls Join before it creates the namespace file (and, for the first one, its
///   `netns` directory) and bind-mounts the namespace there (libnetwork's external key, set
///   by the runtime's prestart hook). The TAP is followed into the namespace when Docker
///   moves it there.
pub fn check_sandbox_key(key: &str) -> Result<(), String> {
    use std::path::Path;
    if key.is_empty() {
        return Err("Join without a SandboxKey: uvlan needs the container's namespace".into());
    }
    if !key.starts_with('/') || key.contains('\0') {
        return Err(format!(
            "SandboxKey {key:?} is not an absolute path: uvlan needs the path of the \
             container's network namespace"
        ));
    }
    let path = Path::new(key);
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(format!(
            "SandboxKey {key} is not a network namespace: it is {}",
            if m.is_dir() {
                "a directory"
            } else {
                "not a regular file (a socket, FIFO or device)"
            }
        )),
        Ok(_) => match crate::netns::Netns::open_path(path) {
            Ok(_) => Ok(()),
            Err(crate::netns::NetnsError::NotANetns { .. }) => Err(format!(
                "SandboxKey {key} is not a network namespace (an nsfs file of type net, like \
                 /proc/PID/ns/net or Docker's bind mount of one); if it is Docker's, run the \
                 uvlan daemon in dockerd's mount namespace"
            )),
            Err(e) => Err(format!("cannot check SandboxKey {key}: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let netns_dir = path
                .parent()
                .filter(|dir| dir.file_name() == Some(std::ffi::OsStr::new(DOCKER_NETNS_DIR)));
            let in_netns_dir = netns_dir
                .and_then(Path::parent)
                .is_some_and(|exec_root| exec_root.is_dir());
            if in_netns_dir && path.file_name().is_some() {
                Ok(())
            } else {
                Err(format!(
                    "SandboxKey {key} does not exist, and is not where Docker creates a \
                     container's namespace after Join (EXEC-ROOT/{DOCKER_NETNS_DIR}/ID, in an \
                     existing EXEC-ROOT)"
                ))
            }
        }
        Err(e) => Err(format!("cannot check SandboxKey {key}: {e}")),
    }
}

fn join(b: &dyn Backend, body: &[u8]) -> Result<Value, String> {
    let r: EndpointReq = parse(body, "Join")?;
    check_id("endpoint ID", &r.endpoint_id)?;
    if r.sandbox_key.is_empty() {
        return Err("Join without a SandboxKey: uvlan needs the container's namespace".into());
    }
    b.check_sandbox(&r.sandbox_key)?;
    let host_name = format!("{HOST_PREFIX}{}", ids::short_id(&r.endpoint_id));
    let req = AttachEndpoint {
        network: r.network_id,
        ensure: None,
        spec: None,
        key: r.endpoint_id,
        netns: r.sandbox_key.clone(),
        host_name: Some(host_name),
        ifname: None,
        routes: None,
        mtu: None,
        label: r.sandbox_key,
    };
    let info: AttachInfo = serde_json::from_value(call(b, Request::EndpointAttach(Box::new(req)))?)
        .map_err(|e| format!("internal error: unexpected attach answer: {e}"))?;
    Ok(join_answer(&info))
}

#[cfg(test)]
mod tests;
