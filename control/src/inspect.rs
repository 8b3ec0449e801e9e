//! `uvlan network inspect` output, shaped like `docker network inspect` (API ≥ 1.52, with
//! `Status`), plus one uvlan field, `UvlanWire`.
//!
//! The daemon builds [`NetworkResource`] values; the CLI prints them as a JSON array with a
//! 4-space indent, as Docker's CLI does. Field order is Docker's
//! (`docker network inspect` of Docker 20.10–27); maps are printed sorted by key, as Go's encoder does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ipam::{IpamConfig, SubnetStatus};
use crate::store::NetworkRecord;

/// `IPAM` of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamView {
    /// `default`, or `dhcp` (`--ipam-driver dhcp`).
    #[serde(rename = "Driver")]
    pub driver: String,
    /// IPAM options (always empty in uvlan).
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    /// One entry per allocated subnet, IPv4 first.
    #[serde(rename = "Config")]
    pub config: Vec<IpamConfig>,
}

/// `ConfigFrom`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFrom {
    /// Always empty.
    #[serde(rename = "Network")]
    pub network: String,
}

/// An endpoint's DHCP lease, as `network inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpView {
    /// The server that granted it (option 54).
    #[serde(rename = "Server")]
    pub server: String,
    /// The router (option 3), if any.
    #[serde(rename = "Router", default, skip_serializing_if = "String::is_empty")]
    pub router: String,
    /// DNS servers (option 6).
    #[serde(rename = "DNS", default)]
    pub dns: Vec<String>,
    /// Lease time in seconds.
    #[serde(rename = "LeaseSeconds")]
    pub lease_secs: u32,
    /// When it was granted (seconds since the Unix epoch).
    #[serde(rename = "Obtained")]
    pub obtained: u64,
}

/// One `Containers` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    /// The namespace (as given to connect/run).
    #[serde(rename = "Name")]
    pub name: String,
    /// Endpoint ID.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// macvlan: the MAC; ipvlan: `""` (as Docker shows it).
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// `ADDR/LEN` or `""`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// uvlan's addition on a network with `--ipam-driver dhcp`: the endpoint's lease.
    #[serde(rename = "UvlanDhcp", default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpView>,
    /// `ADDR/LEN` or `""`.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// `Status.IPAM`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamStatus {
    /// Per subnet usage.
    #[serde(rename = "Subnets")]
    pub subnets: BTreeMap<String, SubnetStatus>,
}

/// `Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// IPAM usage.
    #[serde(rename = "IPAM")]
    pub ipam: IpamStatus,
}

/// uvlan's own field: how the network reaches the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UvlanWire {
    /// The host interface frames use (`eth0` for `parent=eth0.20`), `""` without a parent.
    #[serde(rename = "Parent")]
    pub parent: String,
    /// The 802.1Q VID uvlan tags with on `Parent` (no kernel VLAN device exists); 0 = none.
    #[serde(rename = "VlanID")]
    pub vlan_id: u16,
    /// What the dataplane uses, or why there is no wire.
    #[serde(rename = "Mode")]
    pub mode: String,
    /// The kind of each endpoint's interface, by endpoint ID: `tap` (every frame through
    /// the dataplane), or `veth+fast-path` (unicast to siblings the engine decided goes
    /// through the kernel cache; see `uvlan daemon --fast-path`).
    #[serde(rename = "EndpointKinds", default)]
    pub endpoint_kinds: BTreeMap<String, String>,
}

/// One network, as `docker network inspect` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkResource {
    /// Name.
    #[serde(rename = "Name")]
    pub name: String,
    /// ID (64 hex).
    #[serde(rename = "Id")]
    pub id: String,
    /// Creation time, RFC 3339 with nanoseconds.
    #[serde(rename = "Created")]
    pub created: String,
    /// Always `local`.
    #[serde(rename = "Scope")]
    pub scope: String,
    /// `ipvlan` or `macvlan`.
    #[serde(rename = "Driver")]
    pub driver: String,
    /// False for an IPv6-only network (`--ipv4=false`).
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: bool,
    /// `--ipv6`.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// IPAM.
    #[serde(rename = "IPAM")]
    pub ipam: IpamView,
    /// `--internal` as given.
    #[serde(rename = "Internal")]
    pub internal: bool,
    /// Always false.
    #[serde(rename = "Attachable")]
    pub attachable: bool,
    /// Always false.
    #[serde(rename = "Ingress")]
    pub ingress: bool,
    /// Always `{"Network": ""}`.
    #[serde(rename = "ConfigFrom")]
    pub config_from: ConfigFrom,
    /// Always false.
    #[serde(rename = "ConfigOnly")]
    pub config_only: bool,
    /// Exactly the `-o` map.
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    /// Labels (none in uvlan).
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
    /// Endpoints by sandbox ID.
    #[serde(rename = "Containers")]
    pub containers: BTreeMap<String, EndpointView>,
    /// IPAM usage.
    #[serde(rename = "Status")]
    pub status: NetworkStatus,
    /// uvlan: parent, VID and wire mode.
    #[serde(rename = "UvlanWire")]
    pub uvlan_wire: UvlanWire,
    /// uvlan: the host's own interface on the network (`network connect --host`), if any. It
    /// is not a container, so `Containers` does not list it.
    #[serde(
        rename = "UvlanHostInterface",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub uvlan_host_interface: Option<HostInterfaceView>,
}

/// `UvlanHostInterface`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInterfaceView {
    /// The interface's name in the daemon's namespace.
    #[serde(rename = "Name")]
    pub name: String,
    /// Endpoint ID.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// Its MAC (the parent's on ipvlan).
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// `ADDR/32` or `""`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// `ADDR/128` or `""`.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

impl NetworkResource {
    /// The view of a stored network with its IPAM usage and wire description.
    pub fn build(
        rec: &NetworkRecord,
        subnets: BTreeMap<String, SubnetStatus>,
        wire_mode: String,
    ) -> NetworkResource {
        let macvlan = rec.driver == "macvlan";
        let host_interface =
            rec.endpoints
                .iter()
                .find(|ep| ep.host_interface)
                .map(|ep| HostInterfaceView {
                    name: ep.ifname.clone(),
                    endpoint_id: ep.id.clone(),
                    mac_address: ep.mac.clone(),
                    ipv4_address: ep
                        .addrs
                        .v4
                        .map(|a| format!("{}/32", a.addr))
                        .unwrap_or_default(),
                    ipv6_address: ep
                        .addrs
                        .v6
                        .map(|a| format!("{}/128", a.addr))
                        .unwrap_or_default(),
                });
        let containers = rec
            .endpoints
            .iter()
            .filter(|ep| !ep.host_interface)
            .map(|ep| {
                let view = EndpointView {
                    name: ep.name.clone(),
                    endpoint_id: ep.id.clone(),
                    mac_address: if macvlan {
                        ep.mac.clone()
                    } else {
                        String::new()
                    },
                    ipv4_address: ep.addrs.v4.map(|a| a.cidr()).unwrap_or_default(),
                    dhcp: ep.lease.as_ref().map(|l| DhcpView {
                        server: l.server_id.to_string(),
                        router: l.router.map(|r| r.to_string()).unwrap_or_default(),
                        dns: l.dns.iter().map(|d| d.to_string()).collect(),
                        lease_secs: l.lease_secs,
                        obtained: l.obtained,
                    }),
                    ipv6_address: ep.addrs.v6.map(|a| a.cidr()).unwrap_or_default(),
                };
                (ep.sandbox_id.clone(), view)
            })
            .collect();
        let parent = rec.driver_config.parent.as_ref();
        NetworkResource {
            name: rec.name.clone(),
            id: rec.id.clone(),
            created: rec.created.clone(),
            scope: "local".to_string(),
            driver: rec.driver.clone(),
            enable_ipv4: rec.ipv4,
            enable_ipv6: rec.ipv6,
            ipam: IpamView {
                driver: if rec.dhcp { "dhcp" } else { "default" }.to_string(),
                options: BTreeMap::new(),
                config: rec.ipam.config_view(),
            },
            internal: rec.internal,
            attachable: false,
            ingress: false,
            config_from: ConfigFrom::default(),
            config_only: false,
            options: rec.options.clone(),
            labels: BTreeMap::new(),
            containers,
            status: NetworkStatus {
                ipam: IpamStatus { subnets },
            },
            uvlan_wire: UvlanWire {
                parent: parent.map(|p| p.ifname.clone()).unwrap_or_default(),
                vlan_id: parent.and_then(|p| p.vid).unwrap_or(0),
                mode: wire_mode,
                endpoint_kinds: rec
                    .endpoints
                    .iter()
                    .map(|e| (e.id.clone(), "tap".to_string()))
                    .collect(),
            },
            uvlan_host_interface: host_interface,
        }
    }
}

/// Prints values as Docker's CLI does: an indented JSON array, 4 spaces.
pub fn to_docker_json<T: Serialize>(items: &[T]) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if items.serialize(&mut ser).is_err() {
        return "[]".to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| "[]".to_string())
}
