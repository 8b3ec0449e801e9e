//! Endpoint addresses: `--ip` / `--ip6` or dynamic, taken and given back.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{taken, AddressSpace, NetworkState, Pool};
use super::{AddrRequest, EndpointAddr, EndpointAddrs};
use crate::ipam::addr::{addr_to_u128, netip_parse_addr, u128_to_addr, Family, Prefix};
use crate::ipam::error::IpamError;

impl AddressSpace {
    /// Addresses for a new endpoint (`--ip` / `--ip6` or dynamic). Static addresses are
    /// checked first as Docker's `validateEndpointSettings` does (right family, inside an
    /// allocated subnet, possibly outside the ip-range); then IPv4 is taken, then IPv6. If the
    /// IPv6 part fails the IPv4 address is given back.
    pub fn allocate(
        &mut self,
        net_id: &str,
        req: &AddrRequest,
    ) -> Result<EndpointAddrs, IpamError> {
        let state = self
            .networks
            .get(net_id)
            .ok_or_else(|| IpamError::UnknownNetwork(net_id.to_string()))?;

        let mut errs = Vec::new();
        let static4 = parse_static(req.v4.as_deref(), Family::V4, &mut errs);
        let static6 = parse_static(req.v6.as_deref(), Family::V6, &mut errs);
        for (addr, family) in [(static4, Family::V4), (static6, Family::V6)] {
            if let Some(addr) = addr {
                let inside = state
                    .ipam
                    .family(family)
                    .iter()
                    .any(|s| s.subnet.contains_go(addr));
                if !inside {
                    errs.push(format!("no configured subnet contains IP address {addr}"));
                }
            }
        }
        if !errs.is_empty() {
            return Err(IpamError::InvalidEndpointSettings(errs));
        }

        let v4 = take_address(
            &mut self.pools,
            net_id,
            state,
            Family::V4,
            static4,
            req.want_v4,
        )?;
        let v6 = match take_address(
            &mut self.pools,
            net_id,
            state,
            Family::V6,
            static6,
            req.want_v6,
        ) {
            Ok(v6) => v6,
            Err(err) => {
                if let Some(done) = v4 {
                    if let Some(pool) = self.pools.get_mut(&done.subnet) {
                        pool.used.remove(addr_to_u128(done.addr));
                    }
                }
                return Err(err);
            }
        };
        let out = EndpointAddrs { v4, v6 };
        if let Some(state) = self.networks.get_mut(net_id) {
            state.endpoints.extend(out.addrs());
        }
        Ok(out)
    }

    /// Gives an endpoint's addresses back (disconnect). Every address must be held by an
    /// endpoint of this network, else nothing is released.
    pub fn release(&mut self, net_id: &str, addrs: &EndpointAddrs) -> Result<(), IpamError> {
        let state = self
            .networks
            .get_mut(net_id)
            .ok_or_else(|| IpamError::UnknownNetwork(net_id.to_string()))?;
        for addr in addrs.addrs() {
            if !state.endpoints.contains(&addr) {
                return Err(IpamError::NotAllocated {
                    addr,
                    name: state.name.clone(),
                    id: net_id.to_string(),
                });
            }
        }
        for addr in addrs.addrs() {
            state.endpoints.remove(&addr);
            if let Some(alloc) = state.ipam.subnet_for(addr) {
                if let Some(pool) = self.pools.get_mut(&alloc.subnet) {
                    pool.used.remove(addr_to_u128(addr));
                }
            }
        }
        Ok(())
    }
}

/// Parses `--ip` / `--ip6` as Docker's `normalizeEndpointIPAMConfig`: the address must be of
/// the flag's family and not unspecified (an IPv4-mapped address counts as IPv4 for `--ip`
/// and is invalid for `--ip6`). Returns the (unmapped) address to check for containment,
/// which is checked even when the family is wrong, as Docker does.
fn parse_static(text: Option<&str>, family: Family, errs: &mut Vec<String>) -> Option<IpAddr> {
    let text = text.filter(|t| !t.is_empty())?;
    let bad = |errs: &mut Vec<String>, shown: String| {
        errs.push(format!("invalid IPv{} address: {shown}", family.number()));
    };
    let Some(addr) = netip_parse_addr(text) else {
        bad(errs, text.to_string());
        return None;
    };
    let valid = match (family, addr) {
        (Family::V4, _) => matches!(addr.to_canonical(), IpAddr::V4(_)),
        (Family::V6, IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_none(),
        (Family::V6, IpAddr::V4(_)) => false,
    };
    if !valid || addr.is_unspecified() {
        bad(errs, addr.to_string());
    }
    Some(addr.to_canonical())
}

/// Takes one endpoint address of `family`: the static one, or the lowest free address in
/// the first subnet (in order) that has one, inside its ip-range if it has one.
fn take_address(
    pools: &mut BTreeMap<Prefix, Pool>,
    net_id: &str,
    state: &NetworkState,
    family: Family,
    static_addr: Option<IpAddr>,
    want_dynamic: bool,
) -> Result<Option<EndpointAddr>, IpamError> {
    let subnets = state.ipam.family(family);
    if let Some(addr) = static_addr {
        let Some(alloc) = subnets.iter().find(|s| s.subnet.contains(addr)) else {
            return Err(IpamError::InvalidEndpointSettings(vec![format!(
                "no configured subnet contains IP address {addr}"
            )]));
        };
        let pool = pools.get_mut(&alloc.subnet).ok_or_else(|| {
            IpamError::CorruptState(format!("no pool for subnet {}", alloc.subnet))
        })?;
        if !taken(pool, addr) {
            return Err(IpamError::AddressInUse);
        }
        return Ok(Some(EndpointAddr {
            addr,
            subnet: alloc.subnet,
            gateway: alloc.gateway,
        }));
    }
    if !want_dynamic || subnets.is_empty() {
        return Ok(None);
    }
    for alloc in subnets {
        let Some(pool) = pools.get_mut(&alloc.subnet) else {
            continue;
        };
        let block = alloc.dynamic_block();
        if let Some(free) = pool.used.first_free(block.first(), block.last()) {
            pool.used.insert(free);
            return Ok(Some(EndpointAddr {
                addr: u128_to_addr(family, free),
                subnet: alloc.subnet,
                gateway: alloc.gateway,
            }));
        }
    }
    Err(IpamError::NoAvailableAddresses {
        family,
        name: state.name.clone(),
        id: net_id.to_string(),
    })
}
