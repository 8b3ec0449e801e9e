//! Networks a front end manages with its own IPAM (the Docker remote driver, the CNI
//! plugin; their operations are in `managed.rs`): the allocation taken as the front end
//! gives it, their IPAM status, how inspect marks them, and the uvlan CLI's refusal to
//! change them. Network creation, inspect and the CLI operations use these too.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::inspect::NetworkResource;
use crate::ipam::{IpamConfig, IpamError, NetworkIpam, Prefix, SubnetAlloc, SubnetStatus};
use crate::store::{Managed, NetworkRecord};

/// The inspect label naming a managed network's owner.
pub const OWNER_LABEL: &str = "uvlan.managed-by";

/// Parses `ADDR/LEN` into the address and its (masked) subnet.
pub fn parse_cidr_addr(text: &str) -> Result<(IpAddr, Prefix), String> {
    let bad = || format!("invalid address {text:?}: expected ADDRESS/PREFIXLEN");
    let (a, l) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().map_err(|_| bad())?;
    let prefix = Prefix::new(addr, len).ok_or_else(bad)?;
    Ok((addr, prefix.masked()))
}

/// Parses an address given either bare or as `ADDR/LEN` (Docker sends gateways and aux
/// addresses with the pool's length).
pub fn parse_bare_or_cidr(text: &str) -> Result<IpAddr, String> {
    let a = text.split_once('/').map_or(text, |(a, _)| a);
    a.parse()
        .map_err(|_| format!("invalid address {text:?}: expected an IP address"))
}

/// The allocation of a network whose front end did the IPAM: its subnets, gateways and aux
/// addresses as given (checked for form and containment only). An IPv6-only network
/// (`ipv4` false) needs `ipv6` and takes no IPv4 subnet.
pub fn external_ipam(cfg: &[IpamConfig], ipv4: bool, ipv6: bool) -> Result<NetworkIpam, String> {
    if !ipv4 && !ipv6 {
        return Err(IpamError::NoAddressFamily.to_string());
    }
    let mut ipam = NetworkIpam::default();
    for c in cfg {
        let (_, subnet) = parse_cidr_addr(&c.subnet)
            .map_err(|e| format!("invalid subnet {:?}: {e}", c.subnet))?;
        if !ipv4 && subnet.addr().is_ipv4() {
            return Err(IpamError::Ipv4Disabled(c.subnet.clone()).to_string());
        }
        let inside = |what: &str, a: IpAddr| {
            if subnet.contains(a) {
                Ok(a)
            } else {
                Err(format!(
                    "invalid {what} {a}: parent subnet {subnet} doesn't contain this address"
                ))
            }
        };
        let gateway = match &c.gateway {
            Some(g) if !g.is_empty() => Some(inside("gateway", parse_bare_or_cidr(g)?)?),
            _ => None,
        };
        let ip_range = match &c.ip_range {
            Some(r) if !r.is_empty() => Some(parse_cidr_addr(r)?.1),
            _ => None,
        };
        let mut aux = BTreeMap::new();
        for (name, a) in &c.aux {
            aux.insert(
                name.clone(),
                inside("auxiliary address", parse_bare_or_cidr(a)?)?,
            );
        }
        let alloc = SubnetAlloc {
            subnet,
            ip_range,
            gateway,
            aux,
            dynamic: false,
        };
        match subnet.addr() {
            IpAddr::V4(_) => ipam.v4.push(alloc),
            IpAddr::V6(_) => ipam.v6.push(alloc),
        }
    }
    Ok(ipam)
}

/// `Status.IPAM` for a managed network: the addresses uvlan knows of in each subnet
/// (network and broadcast or anycast, gateway, aux, endpoints, reservations); the free
/// count is the subnet's size minus those (the front end's IPAM may know more).
pub fn external_status(rec: &NetworkRecord) -> BTreeMap<String, SubnetStatus> {
    let mut held: Vec<IpAddr> = rec.endpoints.iter().flat_map(|e| e.addrs.addrs()).collect();
    if let Some(m) = &rec.managed {
        held.extend(m.reserved.iter().flat_map(|r| r.addrs.addrs()));
    }
    rec.ipam
        .subnets()
        .map(|s| {
            let v4 = s.subnet.addr().is_ipv4();
            let reserved: u64 = match (v4, s.subnet.host_bits()) {
                (true, b) if b > 1 => 2,
                (true, _) => 0,
                (false, _) => 1,
            };
            let used = reserved
                + s.gateway.iter().count() as u64
                + s.aux.len() as u64
                + held.iter().filter(|a| s.subnet.contains(**a)).count() as u64;
            let size = u64::try_from(s.subnet.size()).unwrap_or(u64::MAX);
            (
                s.subnet.to_string(),
                SubnetStatus {
                    ips_in_use: used,
                    dynamic_ips_available: size.saturating_sub(used),
                },
            )
        })
        .collect()
}

/// Marks a managed network in inspect: the owner label, and `IPAM.Driver` `external` (`dhcp`
/// when uvlan leases its addresses, `uvlan.ipam=dhcp`).
pub fn decorate_inspect(view: &mut NetworkResource, m: &Managed) {
    view.labels.insert(OWNER_LABEL.to_string(), m.owner.clone());
    if view.ipam.driver != "dhcp" {
        view.ipam.driver = "external".to_string();
    }
}

/// The error for a uvlan CLI operation on a managed network.
pub fn refuse_cli(name: &str, m: &Managed, verb: &str) -> String {
    let how = match m.owner.as_str() {
        "docker" => "use docker (docker network rm, docker run --network, docker network connect/disconnect)",
        "cni" => "its endpoints come and go with the container runtime's CNI ADD and DEL",
        _ => "use the tool that created it",
    };
    format!(
        "network {name} is managed by {} and cannot be {verb} with the uvlan CLI: {how}",
        m.owner
    )
}
