//! The address space shared by all networks: pools per subnet, network allocations,
//! endpoint addresses, status, inspect views and persistence.
//!
//! Files: this one holds the [`AddressSpace`], its pools and network allocation and
//! removal; `types.rs` the public records; `endpoint.rs` endpoint addresses (allocate,
//! release); `persist.rs` the stored form and its replay ([`AddressSpace::restore`]).

mod endpoint;
mod persist;
mod types;

pub use types::{
    AddrRequest, EndpointAddr, EndpointAddrs, NetworkIpam, StoredNetwork, SubnetAlloc, SubnetStatus,
};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::addr::{addr_to_u128, u128_to_addr, Family, Prefix};
use super::addrset::AddrSet;
use super::error::{AddrFailure, IpamError};
use super::pools::DefaultPools;
use super::request::{
    group_cli, validate_config, IpamConfig, IpamRequest, SubnetReq, ValidEntry, ValidatedConfig,
};

/// One subnet's pool, shared by every network using that exact subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pool {
    used: AddrSet,
    /// The network holding the subnet without an ip-range (at most one).
    master: Option<String>,
    /// ip-range → network joined with that range.
    children: BTreeMap<Prefix, String>,
}

impl Pool {
    /// A fresh pool with Docker's reservations (`newPoolData`): the first address except in
    /// an IPv4 /31 or /32, and the IPv4 broadcast address except in a /31 or /32.
    fn new(subnet: Prefix, master: Option<String>) -> Pool {
        let mut used = AddrSet::default();
        let v4 = subnet.family() == Family::V4;
        if !v4 || subnet.host_bits() > 1 {
            used.insert(subnet.first());
        }
        if v4 && subnet.host_bits() > 1 {
            used.insert(subnet.last());
        }
        Pool {
            used,
            master,
            children: BTreeMap::new(),
        }
    }

    fn is_unused(&self) -> bool {
        self.master.is_none() && self.children.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct NetworkState {
    seq: u64,
    name: String,
    ipam: NetworkIpam,
    endpoints: BTreeSet<IpAddr>,
}

/// Pools as they were before a multi-step operation touched them, to undo it on failure.
#[derive(Default)]
struct Journal {
    saved: BTreeMap<Prefix, Option<Pool>>,
}

impl Journal {
    fn touch(&mut self, pools: &BTreeMap<Prefix, Pool>, key: Prefix) {
        self.saved
            .entry(key)
            .or_insert_with(|| pools.get(&key).cloned());
    }

    fn rollback(self, pools: &mut BTreeMap<Prefix, Pool>) {
        for (key, old) in self.saved {
            match old {
                Some(pool) => {
                    pools.insert(key, pool);
                }
                None => {
                    pools.remove(&key);
                }
            }
        }
    }
}

/// The IPAM state of the host: default pools, every allocated subnet pool, every network's
/// allocation and every endpoint address. Pure logic: no I/O, no clock.
///
/// Every operation either succeeds completely or leaves the state unchanged.
///
/// Serialized, it is the list of networks (in creation order) with their allocations and
/// endpoint addresses, plus the default pools; deserializing replays that list through
/// [`AddressSpace::restore`], so inconsistent stored state is an error, never dropped.
#[derive(Clone, Debug)]
pub struct AddressSpace {
    defaults: DefaultPools,
    pools: BTreeMap<Prefix, Pool>,
    networks: BTreeMap<String, NetworkState>,
    next_seq: u64,
}

impl PartialEq for AddressSpace {
    /// Same defaults, same pools (users and taken addresses), same networks in the same
    /// creation order. Internal sequence numbers are not compared.
    fn eq(&self, other: &Self) -> bool {
        self.defaults == other.defaults
            && self.pools == other.pools
            && self.stored_networks() == other.stored_networks()
    }
}

impl Eq for AddressSpace {}

fn taken(pool: &mut Pool, addr: IpAddr) -> bool {
    pool.used.insert(addr_to_u128(addr))
}

impl AddressSpace {
    /// An empty address space drawing dynamic subnets from `defaults`.
    pub fn new(defaults: DefaultPools) -> AddressSpace {
        AddressSpace {
            defaults,
            pools: BTreeMap::new(),
            networks: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The default pools in use.
    pub fn defaults(&self) -> &DefaultPools {
        &self.defaults
    }

    /// Replaces the prefixes dynamic subnets must avoid (host nameservers, on-link routes).
    /// Existing allocations are not affected.
    pub fn set_reserved_prefixes(&mut self, reserved: Vec<Prefix>) {
        self.defaults.reserved = reserved;
    }

    /// `network create` from the raw flags: CLI grouping, daemon validation, allocation.
    pub fn create_network(
        &mut self,
        net_id: &str,
        net_name: &str,
        req: &IpamRequest,
    ) -> Result<NetworkIpam, IpamError> {
        let entries = group_cli(req)?;
        let cfg = validate_config(&entries, req.ipv4, req.ipv6)?;
        self.create_validated(net_id, net_name, &cfg, req.want_gateway)
    }

    /// `network create` from API-shaped entries (no CLI grouping): daemon validation, then
    /// allocation. `ipv4` is false for `--ipv4=false`.
    pub fn create_network_from_config(
        &mut self,
        net_id: &str,
        net_name: &str,
        entries: &[IpamConfig],
        ipv4: bool,
        ipv6: bool,
        want_gateway: bool,
    ) -> Result<NetworkIpam, IpamError> {
        let cfg = validate_config(entries, ipv4, ipv6)?;
        self.create_validated(net_id, net_name, &cfg, want_gateway)
    }

    /// Allocates a network: for each IPv4 entry when IPv4 is on (a default-pool subnet if
    /// there is none), then each IPv6 entry when IPv6 is on (a default-pool /64 if there is none): the
    /// subnet's pool, then its gateway, then its aux addresses. On any error everything
    /// this call reserved is released.
    pub fn create_validated(
        &mut self,
        net_id: &str,
        net_name: &str,
        cfg: &ValidatedConfig,
        want_gateway: bool,
    ) -> Result<NetworkIpam, IpamError> {
        if self.networks.contains_key(net_id) {
            return Err(IpamError::NetworkExists(net_id.to_string()));
        }
        let mut journal = Journal::default();
        match self.allocate_network(&mut journal, net_id, cfg, want_gateway) {
            Ok(ipam) => {
                let state = NetworkState {
                    seq: self.next_seq,
                    name: net_name.to_string(),
                    ipam: ipam.clone(),
                    endpoints: BTreeSet::new(),
                };
                self.next_seq += 1;
                self.networks.insert(net_id.to_string(), state);
                Ok(ipam)
            }
            Err(err) => {
                journal.rollback(&mut self.pools);
                Err(err)
            }
        }
    }

    fn allocate_network(
        &mut self,
        journal: &mut Journal,
        net_id: &str,
        cfg: &ValidatedConfig,
        want_gateway: bool,
    ) -> Result<NetworkIpam, IpamError> {
        let mut ipam = NetworkIpam::default();
        if cfg.ipv4 {
            let default_v4 = [ValidEntry::default_dynamic(Family::V4)];
            let v4: &[ValidEntry] = if cfg.v4.is_empty() {
                &default_v4
            } else {
                &cfg.v4
            };
            for entry in v4 {
                let alloc = self.allocate_subnet(journal, net_id, entry, want_gateway)?;
                ipam.v4.push(alloc);
            }
        }
        if cfg.ipv6 {
            let default_v6 = [ValidEntry::default_dynamic(Family::V6)];
            let v6: &[ValidEntry] = if cfg.v6.is_empty() {
                &default_v6
            } else {
                &cfg.v6
            };
            for entry in v6 {
                let alloc = self.allocate_subnet(journal, net_id, entry, want_gateway)?;
                ipam.v6.push(alloc);
            }
        }
        Ok(ipam)
    }

    fn allocate_subnet(
        &mut self,
        journal: &mut Journal,
        net_id: &str,
        entry: &ValidEntry,
        want_gateway: bool,
    ) -> Result<SubnetAlloc, IpamError> {
        let (subnet, ip_range, dynamic) = match entry.subnet {
            SubnetReq::Static(subnet) => {
                let range = entry.range.as_ref().map(|(r, _)| *r);
                self.claim_pool(journal, net_id, subnet, range)?;
                (subnet, range, false)
            }
            SubnetReq::Dynamic { family, size } => {
                if let Some((_, text)) = &entry.range {
                    return Err(IpamError::RangeOnDynamicSubnet {
                        range: text.clone(),
                        subnet: entry.subnet_text.clone(),
                    });
                }
                let subnet = self.pick_dynamic(family, size)?;
                journal.touch(&self.pools, subnet);
                self.pools
                    .insert(subnet, Pool::new(subnet, Some(net_id.to_string())));
                (subnet, None, true)
            }
        };
        journal.touch(&self.pools, subnet);
        let Some(pool) = self.pools.get_mut(&subnet) else {
            return Err(IpamError::CorruptState(format!(
                "pool {subnet} vanished while it was being allocated"
            )));
        };

        let gateway = match &entry.gateway {
            Some((addr, text)) => {
                let cause = if !subnet.contains(*addr) {
                    Some(AddrFailure::OutOfRange)
                } else if !taken(pool, *addr) {
                    Some(AddrFailure::InUse)
                } else {
                    None
                };
                if let Some(cause) = cause {
                    return Err(IpamError::Gateway {
                        gateway: text.clone(),
                        cause,
                    });
                }
                Some(*addr)
            }
            // A point-to-point subnet (IPv4 /31 or /32, IPv6 /127 or /128) has no room for a
            // gateway: every address it has is an endpoint's (RFC 3021, RFC 6164).
            None if want_gateway && subnet.host_bits() > 1 => {
                let block = ip_range.unwrap_or(subnet);
                let Some(free) = pool.used.first_free(block.first(), block.last()) else {
                    return Err(IpamError::Gateway {
                        gateway: String::new(),
                        cause: AddrFailure::Exhausted,
                    });
                };
                pool.used.insert(free);
                Some(u128_to_addr(subnet.family(), free))
            }
            None => None,
        };

        let mut aux = BTreeMap::new();
        for (name, (addr, text)) in &entry.aux {
            if !subnet.contains(*addr) {
                return Err(IpamError::AuxOutsidePool {
                    name: name.clone(),
                    addr: text.clone(),
                    pool: subnet,
                });
            }
            if !taken(pool, *addr) {
                return Err(IpamError::AuxAddress {
                    name: name.clone(),
                    addr: text.clone(),
                    cause: AddrFailure::InUse,
                });
            }
            aux.insert(name.clone(), *addr);
        }

        Ok(SubnetAlloc {
            subnet,
            ip_range,
            gateway,
            aux,
            dynamic,
        })
    }

    /// Docker's `allocateSubnet`: a subnet without a range must overlap no allocated pool;
    /// a subnet with a range skips the overlap check and joins an identical pool (unless that
    /// pool already has this range), or gets a pool of its own.
    fn claim_pool(
        &mut self,
        journal: &mut Journal,
        net_id: &str,
        subnet: Prefix,
        range: Option<Prefix>,
    ) -> Result<(), IpamError> {
        if let Some(pool) = self.pools.get(&subnet) {
            let Some(range) = range else {
                return Err(IpamError::PoolOverlap);
            };
            if pool.children.contains_key(&range) {
                return Err(IpamError::PoolOverlap);
            }
            journal.touch(&self.pools, subnet);
            if let Some(pool) = self.pools.get_mut(&subnet) {
                pool.children.insert(range, net_id.to_string());
            }
            return Ok(());
        }
        match range {
            None => {
                if self.pools.keys().any(|k| k.overlaps(&subnet)) {
                    return Err(IpamError::PoolOverlap);
                }
                journal.touch(&self.pools, subnet);
                self.pools
                    .insert(subnet, Pool::new(subnet, Some(net_id.to_string())));
            }
            Some(range) => {
                journal.touch(&self.pools, subnet);
                let mut pool = Pool::new(subnet, None);
                pool.children.insert(range, net_id.to_string());
                self.pools.insert(subnet, pool);
            }
        }
        Ok(())
    }

    /// The lowest subnet, in default-pool order, that overlaps neither an allocated pool nor
    /// a reserved prefix. `size` (from `0.0.0.0/N`) overrides the pools' subnet length; a
    /// pool whose base is smaller than that is skipped.
    fn pick_dynamic(&self, family: Family, size: Option<u8>) -> Result<Prefix, IpamError> {
        let mut blockers: Vec<Prefix> = self
            .pools
            .keys()
            .filter(|k| k.family() == family)
            .copied()
            .collect();
        blockers.extend(
            self.defaults
                .reserved
                .iter()
                .filter(|r| r.family() == family)
                .copied(),
        );
        for spec in self.defaults.ordered(family) {
            let size = size.unwrap_or(spec.size);
            if size < spec.base.bits() || size > family.width() {
                continue;
            }
            let Some(block) = 1u128.checked_shl(u32::from(family.width() - size)) else {
                // ::/0 as a whole: one candidate only.
                if blockers.is_empty() {
                    return Ok(spec.base);
                }
                continue;
            };
            let mut cand = spec.base.first();
            while cand <= spec.base.last() {
                let Some(candidate) = Prefix::from_u128(family, cand, size) else {
                    break;
                };
                let last_blocking = blockers
                    .iter()
                    .filter(|b| b.overlaps(&candidate))
                    .map(Prefix::last)
                    .max();
                let Some(last) = last_blocking else {
                    return Ok(candidate);
                };
                // Next candidate: the first aligned block after the blocker.
                let next = last
                    .checked_add(1)
                    .and_then(|n| n.checked_add(block - 1))
                    .map(|n| n & !(block - 1));
                match next {
                    Some(n) if n > cand => cand = n,
                    _ => break,
                }
            }
        }
        Err(IpamError::PoolsExhausted)
    }

    /// `network rm`: releases the network's gateways and aux addresses and its claim on each
    /// pool; a pool is freed when its last user leaves. Refused while endpoints still hold
    /// addresses (disconnect them first).
    pub fn remove_network(&mut self, net_id: &str) -> Result<NetworkIpam, IpamError> {
        let state = self
            .networks
            .get(net_id)
            .ok_or_else(|| IpamError::UnknownNetwork(net_id.to_string()))?;
        if !state.endpoints.is_empty() {
            return Err(IpamError::ActiveEndpoints {
                name: state.name.clone(),
                id: net_id.to_string(),
                count: state.endpoints.len(),
            });
        }
        let Some(state) = self.networks.remove(net_id) else {
            return Err(IpamError::UnknownNetwork(net_id.to_string()));
        };
        for alloc in state.ipam.subnets() {
            let Some(pool) = self.pools.get_mut(&alloc.subnet) else {
                continue;
            };
            for addr in alloc.gateway.iter().chain(alloc.aux.values()) {
                pool.used.remove(addr_to_u128(*addr));
            }
            match alloc.ip_range {
                None => {
                    if pool.master.as_deref() == Some(net_id) {
                        pool.master = None;
                    }
                }
                Some(range) => {
                    if pool.children.get(&range).map(String::as_str) == Some(net_id) {
                        pool.children.remove(&range);
                    }
                }
            }
            if pool.is_unused() {
                self.pools.remove(&alloc.subnet);
            }
        }
        Ok(state.ipam)
    }

    /// The allocation of a network.
    pub fn network(&self, net_id: &str) -> Option<&NetworkIpam> {
        self.networks.get(net_id).map(|s| &s.ipam)
    }

    /// IDs of all networks, in creation order.
    pub fn network_ids(&self) -> Vec<String> {
        let mut ids: Vec<(&u64, &String)> =
            self.networks.iter().map(|(id, s)| (&s.seq, id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Addresses held by the network's endpoints, lowest first.
    pub fn endpoint_addresses(&self, net_id: &str) -> Option<Vec<IpAddr>> {
        self.networks
            .get(net_id)
            .map(|s| s.endpoints.iter().copied().collect())
    }

    /// `Status.IPAM.Subnets` for a network, keyed by subnet text.
    pub fn status(&self, net_id: &str) -> Result<BTreeMap<String, SubnetStatus>, IpamError> {
        let state = self
            .networks
            .get(net_id)
            .ok_or_else(|| IpamError::UnknownNetwork(net_id.to_string()))?;
        let mut out = BTreeMap::new();
        for alloc in state.ipam.subnets() {
            let Some(pool) = self.pools.get(&alloc.subnet) else {
                return Err(IpamError::CorruptState(format!(
                    "network {} ({net_id}) uses subnet {} but no pool holds it",
                    state.name, alloc.subnet
                )));
            };
            let block = alloc.dynamic_block();
            let free = block
                .size()
                .saturating_sub(pool.used.count_in(block.first(), block.last()));
            let to_u64 = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
            out.insert(
                alloc.subnet.to_string(),
                SubnetStatus {
                    ips_in_use: to_u64(pool.used.len()),
                    dynamic_ips_available: to_u64(free),
                },
            );
        }
        Ok(out)
    }

    /// `IPAM.Config` of a network as `docker network inspect` shows it.
    pub fn config_view(&self, net_id: &str) -> Result<Vec<IpamConfig>, IpamError> {
        self.network(net_id)
            .map(NetworkIpam::config_view)
            .ok_or_else(|| IpamError::UnknownNetwork(net_id.to_string()))
    }
}
