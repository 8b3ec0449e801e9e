//! The stored form of the address space and its replay: [`AddressSpace::restore`] and the
//! serde implementations built on it.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{taken, AddressSpace, NetworkState, Pool, StoredNetwork};
use crate::ipam::addr::Family;
use crate::ipam::error::IpamError;
use crate::ipam::pools::DefaultPools;

impl AddressSpace {
    /// All networks with their endpoint addresses, in creation order (what the store saves).
    pub fn stored_networks(&self) -> Vec<StoredNetwork> {
        self.network_ids()
            .into_iter()
            .filter_map(|id| {
                let state = self.networks.get(&id)?;
                Some(StoredNetwork {
                    name: state.name.clone(),
                    ipam: state.ipam.clone(),
                    endpoints: state.endpoints.iter().copied().collect(),
                    id,
                })
            })
            .collect()
    }

    /// Rebuilds the address space from stored networks (Docker's request replay). Subnets
    /// without a range are claimed first, then subnets with a range join or create their
    /// pools, then gateways and aux addresses, then endpoint addresses are reserved. Any
    /// state that some sequence of successful operations could produce is accepted; a
    /// malformed record, two claims on one subnet, overlapping range-less subnets, or an
    /// address used twice is an error.
    pub fn restore(
        defaults: DefaultPools,
        networks: Vec<StoredNetwork>,
    ) -> Result<AddressSpace, IpamError> {
        let mut space = AddressSpace::new(defaults);
        let mut ids = BTreeSet::new();
        for net in &networks {
            if !ids.insert(net.id.as_str()) {
                return Err(IpamError::CorruptState(format!(
                    "network ID {} appears twice",
                    net.id
                )));
            }
            check_record(net)?;
        }
        let corrupt = |net: &StoredNetwork, what: String| {
            IpamError::CorruptState(format!("network {} ({}): {what}", net.name, net.id))
        };

        for net in &networks {
            for alloc in net.ipam.subnets().filter(|a| a.ip_range.is_none()) {
                if let Some((other, pool)) =
                    space.pools.iter().find(|(k, _)| k.overlaps(&alloc.subnet))
                {
                    let owner = pool.master.as_deref().unwrap_or("?");
                    return Err(corrupt(
                        net,
                        format!(
                            "subnet {} overlaps subnet {other} held by network {owner}",
                            alloc.subnet
                        ),
                    ));
                }
                space
                    .pools
                    .insert(alloc.subnet, Pool::new(alloc.subnet, Some(net.id.clone())));
            }
        }
        for net in &networks {
            for alloc in net.ipam.subnets() {
                let Some(range) = alloc.ip_range else {
                    continue;
                };
                let pool = space
                    .pools
                    .entry(alloc.subnet)
                    .or_insert_with(|| Pool::new(alloc.subnet, None));
                if let Some(owner) = pool.children.get(&range) {
                    return Err(corrupt(
                        net,
                        format!(
                            "subnet {} with ip-range {range} is also held by network {owner}",
                            alloc.subnet
                        ),
                    ));
                }
                pool.children.insert(range, net.id.clone());
            }
        }
        for net in &networks {
            for alloc in net.ipam.subnets() {
                let Some(pool) = space.pools.get_mut(&alloc.subnet) else {
                    return Err(corrupt(net, format!("no pool for subnet {}", alloc.subnet)));
                };
                let reserved = alloc
                    .gateway
                    .iter()
                    .map(|g| ("gateway".to_string(), *g))
                    .chain(
                        alloc
                            .aux
                            .iter()
                            .map(|(n, a)| (format!("aux address {n}"), *a)),
                    );
                for (what, addr) in reserved {
                    if !taken(pool, addr) {
                        return Err(corrupt(
                            net,
                            format!("{what} {addr} is already in use in subnet {}", alloc.subnet),
                        ));
                    }
                }
            }
        }
        for net in &networks {
            let mut held = BTreeSet::new();
            for &addr in &net.endpoints {
                let Some(alloc) = net.ipam.subnet_for(addr) else {
                    return Err(corrupt(
                        net,
                        format!("endpoint address {addr} is in none of its subnets"),
                    ));
                };
                let Some(pool) = space.pools.get_mut(&alloc.subnet) else {
                    return Err(corrupt(net, format!("no pool for subnet {}", alloc.subnet)));
                };
                if !taken(pool, addr) {
                    return Err(corrupt(
                        net,
                        format!(
                            "endpoint address {addr} is already in use in subnet {}",
                            alloc.subnet
                        ),
                    ));
                }
                held.insert(addr);
            }
            let state = NetworkState {
                seq: space.next_seq,
                name: net.name.clone(),
                ipam: net.ipam.clone(),
                endpoints: held,
            };
            space.next_seq += 1;
            space.networks.insert(net.id.clone(), state);
        }
        Ok(space)
    }
}

/// Structural checks on one stored network record.
fn check_record(net: &StoredNetwork) -> Result<(), IpamError> {
    let bad = |what: String| {
        IpamError::CorruptState(format!("network {} ({}): {what}", net.name, net.id))
    };
    if net.id.is_empty() {
        return Err(bad("empty network ID".to_string()));
    }
    for family in [Family::V4, Family::V6] {
        for alloc in net.ipam.family(family) {
            let s = alloc.subnet;
            if s.family() != family {
                return Err(bad(format!("subnet {s} is listed under {family}")));
            }
            if !s.is_masked() {
                return Err(bad(format!("subnet {s} is not masked")));
            }
            if let Some(r) = alloc.ip_range {
                if !r.is_masked() || !s.covers(&r) {
                    return Err(bad(format!(
                        "ip-range {r} is not a block inside subnet {s}"
                    )));
                }
            }
            for addr in alloc.gateway.iter().chain(alloc.aux.values()) {
                if !s.contains(*addr) {
                    return Err(bad(format!("address {addr} is outside subnet {s}")));
                }
            }
        }
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct AddressSpaceRecord {
    defaults: DefaultPools,
    networks: Vec<StoredNetwork>,
}

impl Serialize for AddressSpace {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AddressSpaceRecord {
            defaults: self.defaults.clone(),
            networks: self.stored_networks(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AddressSpace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let record = AddressSpaceRecord::deserialize(deserializer)?;
        AddressSpace::restore(record.defaults, record.networks).map_err(serde::de::Error::custom)
    }
}
