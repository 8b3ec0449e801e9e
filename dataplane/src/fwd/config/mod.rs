//! The engine's configuration: parents, networks (masters) and ports, with the kernel's
//! validation rules and errno-named errors.
//!
//! The API is shaped like the kernel's netlink interface on purpose: link attributes come in
//! raw (`Option<u16>` mode, flag bits, MAC bytes), so every rule of `ipvlan_nl_validate`,
//! `ipvlan_link_new`, `macvlan_validate` and `macvlan_common_newlink` can be exercised, and the
//! control plane translates Docker's words into them.
//!
//! Files, along the kernel's own:
//! - `mod.rs`: the [`Engine`] and the tables it shares (networks, slots, lookups);
//! - `parent.rs`: parents (lower devices), networks on them (masters) and their cached
//!   state, wire keys;
//! - `port.rs`: port operations common to both drivers (up/down, MAC, MTU, addresses,
//!   removal);
//! - `ipvlan.rs`: `ipvlan_main.c`'s rules and the master's address table;
//! - `macvlan.rs`: `macvlan.c`'s rules, source mode, passthru;
//! - `errors.rs`: [`ConfigError`] and [`Errno`].

mod errors;
mod ipvlan;
mod macvlan;
mod parent;
mod port;

pub use errors::{ConfigError, Errno};
pub use ipvlan::{IpvlanAttrs, Owner};
pub use macvlan::{MacaddrMode, MacvlanAttrs, MACVLAN_DEFAULT_BC_QUEUE_LEN};
pub use parent::{LinkRef, LinkType, Master, NetworkSpec, ParentInfo, ParentSpec, WireKey};
pub use port::PortInfo;

pub(crate) use ipvlan::AddrTable;
pub(crate) use parent::Parent;
pub(crate) use port::Port;

use super::types::*;
use crate::wire::MacAddr;
use ahash::{AHashMap, AHashSet};
use errors::err;

#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub(crate) name: String,
    pub(crate) driver: Driver,
    pub(crate) master: Master,
    pub(crate) allow_parent_addrs: bool,
    pub(crate) ipvlan_mode: IpvlanMode,
    pub(crate) ipvlan_flag: IpvlanFlag,
    pub(crate) ports: Vec<PortId>,
    pub(crate) addrs: AddrTable,
    pub(crate) macs: AHashMap<MacAddr, PortId>,
    pub(crate) sources: AHashMap<MacAddr, Vec<PortId>>,
    pub(crate) passthru: bool,
    pub(crate) dev_id_start: u16,
    pub(crate) dev_ids: AHashSet<u16>,
    /// The master's MAC (M) and whether it is up, cached from the parent for the datapath
    /// (kept current by [`Engine::refresh_masters`] after every change to a parent).
    pub(crate) cached_mac: MacAddr,
    pub(crate) cached_up: bool,
}

/// Read-only facts about a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: Driver,
    /// Master.
    pub master: Master,
    /// ipvlan mode (port-wide).
    pub ipvlan_mode: Option<IpvlanMode>,
    /// ipvlan flag (port-wide).
    pub ipvlan_flag: Option<IpvlanFlag>,
    /// Ports in creation order.
    pub ports: Vec<PortId>,
    /// The master's MAC (M).
    pub master_mac: MacAddr,
    /// The master's MTU.
    pub master_mtu: u32,
    /// macvlan passthru network.
    pub passthru: bool,
    /// The broadcast queue length: max over the ports' requests, default 1000 (C60).
    pub bc_queue_len: u32,
}

/// The forwarding engine: configuration plus the pure decision function (see `decide`).
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub(crate) parents: Vec<Option<Parent>>,
    pub(crate) networks: Vec<Option<Network>>,
    /// Shared between the engine's copies (each publication is one): changing a port copies
    /// that port only (`Arc::make_mut`), so a copy costs the same whatever the number of ports.
    pub(crate) ports: Vec<Option<std::sync::Arc<Port>>>,
    mac_seq: u64,
}

fn slot_insert<T>(v: &mut Vec<Option<T>>, t: T) -> u32 {
    if let Some(i) = v.iter().position(Option::is_none) {
        v[i] = Some(t);
        i as u32
    } else {
        v.push(Some(t));
        (v.len() - 1) as u32
    }
}

impl Engine {
    /// An empty engine.
    pub fn new() -> Engine {
        Engine::default()
    }

    // ---- lookups -------------------------------------------------------------------------

    #[inline]
    pub(crate) fn parent(&self, id: ParentId) -> Option<&Parent> {
        self.parents.get(id.index()).and_then(Option::as_ref)
    }

    #[inline]
    pub(crate) fn network(&self, id: NetworkId) -> Option<&Network> {
        self.networks.get(id.index()).and_then(Option::as_ref)
    }

    #[inline]
    pub(crate) fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(id.index()).and_then(Option::as_deref)
    }

    /// The shared copy of a port. Ports change only through `Arc::make_mut`, which moves a
    /// port that anyone else holds (an `Arc` or a `Weak`) to a new allocation: a caller that
    /// keeps a `Weak` of it tells a changed or replaced port by its address.
    #[inline]
    pub(crate) fn port_arc(&self, id: PortId) -> Option<&std::sync::Arc<Port>> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    fn parent_mut(&mut self, id: ParentId) -> Result<&mut Parent, ConfigError> {
        match self.parents.get_mut(id.index()).and_then(Option::as_mut) {
            Some(p) => Ok(p),
            None => err(Errno::Enodev, format!("no parent {id}")),
        }
    }

    fn network_mut(&mut self, id: NetworkId) -> Result<&mut Network, ConfigError> {
        match self.networks.get_mut(id.index()).and_then(Option::as_mut) {
            Some(n) => Ok(n),
            None => err(Errno::Enodev, format!("no network {id}")),
        }
    }

    fn port_ref(&self, id: PortId) -> Result<&Port, ConfigError> {
        match self.port(id) {
            Some(p) => Ok(p),
            None => err(Errno::Enodev, format!("no port {id}")),
        }
    }

    fn port_mut(&mut self, id: PortId) -> Result<&mut Port, ConfigError> {
        match self.ports.get_mut(id.index()).and_then(Option::as_mut) {
            Some(p) => Ok(std::sync::Arc::make_mut(p)),
            None => err(Errno::Enodev, format!("no port {id}")),
        }
    }

    /// Finds a network by name.
    pub fn network_by_name(&self, name: &str) -> Option<NetworkId> {
        self.networks
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.name == name))
            .map(|i| NetworkId(i as u32))
    }

    /// Facts about a network.
    pub fn network_info(&self, id: NetworkId) -> Option<NetworkInfo> {
        let n = self.network(id)?;
        let ipv = n.driver == Driver::Ipvlan;
        Some(NetworkInfo {
            name: n.name.clone(),
            driver: n.driver,
            master: n.master,
            ipvlan_mode: ipv.then_some(n.ipvlan_mode),
            ipvlan_flag: ipv.then_some(n.ipvlan_flag),
            ports: n.ports.clone(),
            master_mac: self.master_mac(n),
            master_mtu: self.master_mtu(n),
            passthru: n.passthru,
            bc_queue_len: n
                .ports
                .iter()
                .filter_map(|p| self.port(*p).and_then(|p| p.bc_queue_len))
                .max()
                .unwrap_or(MACVLAN_DEFAULT_BC_QUEUE_LEN),
        })
    }

    /// Every live network.
    pub fn network_ids(&self) -> Vec<NetworkId> {
        (0..self.networks.len())
            .filter(|i| self.networks[*i].is_some())
            .map(|i| NetworkId(i as u32))
            .collect()
    }

    /// Every live parent.
    pub fn parent_ids(&self) -> Vec<ParentId> {
        (0..self.parents.len())
            .filter(|i| self.parents[*i].is_some())
            .map(|i| ParentId(i as u32))
            .collect()
    }

    /// Every live port.
    pub fn port_ids(&self) -> Vec<PortId> {
        (0..self.ports.len())
            .filter(|i| self.ports[*i].is_some())
            .map(|i| PortId(i as u32))
            .collect()
    }
}
