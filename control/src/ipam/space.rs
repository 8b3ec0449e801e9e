//! The address space shared by all networks: pools per subnet, network allocations,
//! endpoint addresses, status, inspect views and persistence.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::addr::{addr_to_u128, netip_parse_addr, u128_to_addr, Family, Prefix};
use super::addrset::AddrSet;
use super::error::{AddrFailure, IpamError};
use super::pools::DefaultPools;
use super::request::{
    group_cli, validate_config, IpamConfig, IpamRequest, SubnetReq, ValidEntry, ValidatedConfig,
};

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
/// [`AddressSpace::restore`] and the unit of [`AddressSpace`]'s serialized form.
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
        let cfg = validate_config(&entries, req.ipv6)?;
        self.create_validated(net_id, net_name, &cfg, req.want_gateway)
    }

    /// `network create` from API-shaped entries (no CLI grouping): daemon validation, then
    /// allocation.
    pub fn create_network_from_config(
        &mut self,
        net_id: &str,
        net_name: &str,
        entries: &[IpamConfig],
        ipv6: bool,
        want_gateway: bool,
    ) -> Result<NetworkIpam, IpamError> {
        let cfg = validate_config(entries, ipv6)?;
        self.create_validated(net_id, net_name, &cfg, want_gateway)
    }

    /// Allocates a network: for each IPv4 entry (a default-pool subnet if there is none),
    /// then each IPv6 entry when IPv6 is on (a default-pool /64 if there is none): the
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
            None if want_gateway => {
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
