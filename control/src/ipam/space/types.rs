//! The public records of the address space: allocations, endpoint addresses, requests,
//! status and the stored form of a network.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ipam::addr::{Family, Prefix};
use crate::ipam::request::IpamConfig;

/// What one network holds in one subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetAlloc {
    /// The subnet (masked).
    pub subnet: Prefix,
    /// The range dynamic addresses come from, when narrower than the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Prefix>,
    /// The reserved gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Reserved auxiliary addresses by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux: BTreeMap<String, IpAddr>,
    /// Whether the subnet was taken from the default pools.
    #[serde(default)]
    pub dynamic: bool,
}

impl SubnetAlloc {
    /// The block dynamic addresses come from: the ip-range, else the subnet.
    pub fn dynamic_block(&self) -> Prefix {
        self.ip_range.unwrap_or(self.subnet)
    }

    /// The `IPAM.Config[]` entry Docker shows for this subnet.
    pub fn config_view(&self) -> IpamConfig {
        IpamConfig {
            subnet: self.subnet.to_string(),
            ip_range: self.ip_range.map(|r| r.to_string()),
            gateway: self.gateway.map(|g| g.to_string()),
            aux: self
                .aux
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        }
    }
}

/// A network's IPAM allocation: its IPv4 subnets, then its IPv6 subnets, each in the order
/// they were requested (the order dynamic addresses are tried in).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkIpam {
    /// IPv4 subnets.
    #[serde(default)]
    pub v4: Vec<SubnetAlloc>,
    /// IPv6 subnets (empty unless the network has IPv6).
    #[serde(default)]
    pub v6: Vec<SubnetAlloc>,
}

impl NetworkIpam {
    /// The subnets of one family.
    pub fn family(&self, family: Family) -> &[SubnetAlloc] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// All subnets, IPv4 first.
    pub fn subnets(&self) -> impl Iterator<Item = &SubnetAlloc> {
        self.v4.iter().chain(self.v6.iter())
    }

    /// The subnet containing `addr` (the first one, in order), e.g. to find the gateway an
    /// endpoint's routes use.
    pub fn subnet_for(&self, addr: IpAddr) -> Option<&SubnetAlloc> {
        self.family(Family::of(addr))
            .iter()
            .find(|s| s.subnet.contains(addr))
    }

    /// `IPAM.Config` as `docker network inspect` shows it: IPv4 entries first, then IPv6.
    pub fn config_view(&self) -> Vec<IpamConfig> {
        self.subnets().map(SubnetAlloc::config_view).collect()
    }
}

/// One address given to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointAddr {
    /// The address.
    pub addr: IpAddr,
    /// The subnet it belongs to (its prefix length is the interface's).
    pub subnet: Prefix,
    /// The gateway of that subnet, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

impl EndpointAddr {
    /// The prefix length to configure on the interface.
    pub fn prefix_len(&self) -> u8 {
        self.subnet.bits()
    }

    /// `ADDR/LEN`, as inspect's `IPv4Address` / `IPv6Address`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.subnet.bits())
    }
}

/// The addresses of one endpoint (either family may be absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointAddrs {
    /// IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v4: Option<EndpointAddr>,
    /// IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6: Option<EndpointAddr>,
}

impl EndpointAddrs {
    /// The addresses present, IPv4 first.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4.iter().chain(self.v6.iter()).map(|e| e.addr)
    }
}

/// An endpoint's address request (`--ip`, `--ip6`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRequest {
    /// `--ip`, as given (empty means absent).
    pub v4: Option<String>,
    /// `--ip6`, as given (empty means absent).
    pub v6: Option<String>,
    /// Take a dynamic IPv4 address when `v4` is absent (ignored if the network has no IPv4).
    pub want_v4: bool,
    /// Take a dynamic IPv6 address when `v6` is absent (ignored if the network has no IPv6).
    pub want_v6: bool,
}

impl AddrRequest {
    /// Dynamic addresses of every family the network has (what `docker run` does).
    pub fn dynamic() -> AddrRequest {
        AddrRequest {
            v4: None,
            v6: None,
            want_v4: true,
            want_v6: true,
        }
    }

    /// `--ip` / `--ip6` as given; families without a static address are dynamic.
    pub fn with_ips(v4: Option<&str>, v6: Option<&str>) -> AddrRequest {
        AddrRequest {
            v4: v4.map(str::to_string),
            v6: v6.map(str::to_string),
            want_v4: true,
            want_v6: true,
        }
    }
}

/// Per-subnet usage (`Status.IPAM.Subnets[S]` in inspect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetStatus {
    /// Addresses taken in the subnet's shared pool: network/broadcast (or the IPv6 anycast),
    /// gateways, aux addresses and endpoints of every network sharing it.
    #[serde(rename = "IPsInUse")]
    pub ips_in_use: u64,
    /// Free addresses in this network's ip-range (else subnet), saturating at 2^64−1.
    #[serde(rename = "DynamicIPsAvailable")]
    pub dynamic_ips_available: u64,
}

/// A network as stored, with the endpoint addresses it holds: the input of
/// [`AddressSpace::restore`](super::AddressSpace::restore) and the unit of
/// [`AddressSpace`](super::AddressSpace)'s serialized form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNetwork {
    /// Network ID.
    pub id: String,
    /// Network name (used in error texts).
    pub name: String,
    /// Its allocation.
    pub ipam: NetworkIpam,
    /// Addresses held by its endpoints.
    #[serde(default)]
    pub endpoints: Vec<IpAddr>,
}
