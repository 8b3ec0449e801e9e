//! The engine's configuration: parents, networks (masters) and ports, with the kernel's
//! validation rules and errno-named errors.
//!
//! The API is shaped like the kernel's netlink interface on purpose: link attributes come in
//! raw (`Option<u16>` mode, flag bits, MAC bytes), so every rule of `ipvlan_nl_validate`,
//! `ipvlan_link_new`, `macvlan_validate` and `macvlan_common_newlink` can be exercised, and the
//! control plane translates Docker's words into them.

use super::types::*;
use crate::wire::MacAddr;
use ahash::{AHashMap, AHashSet};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Validated macvlan attributes: mode, source-list operation, source MACs.
type ValidMacvlanAttrs = (Option<MacvlanMode>, Option<MacaddrMode>, Vec<MacAddr>);

/// The errno a kernel operation would have returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Invalid argument.
    Einval,
    /// Device or resource busy.
    Ebusy,
    /// Address already in use.
    Eaddrinuse,
    /// Cannot assign requested address.
    Eaddrnotavail,
    /// Operation not supported.
    Eopnotsupp,
    /// No such device.
    Enodev,
    /// File exists.
    Eexist,
}

impl Errno {
    /// The C name.
    pub fn as_str(self) -> &'static str {
        match self {
            Errno::Einval => "EINVAL",
            Errno::Ebusy => "EBUSY",
            Errno::Eaddrinuse => "EADDRINUSE",
            Errno::Eaddrnotavail => "EADDRNOTAVAIL",
            Errno::Eopnotsupp => "EOPNOTSUPP",
            Errno::Enodev => "ENODEV",
            Errno::Eexist => "EEXIST",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused configuration change: the kernel's errno and a sentence saying what was wrong.
/// The engine's state is unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({errno})")]
pub struct ConfigError {
    /// The errno the kernel returns for this case.
    pub errno: Errno,
    /// What was wrong, and what to do about it.
    pub message: String,
}

fn err<T>(errno: Errno, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        errno,
        message: message.into(),
    })
}

/// The link type of a parent (`dev->type`, and whether it is a loopback device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// `ARPHRD_ETHER`.
    Ether,
    /// The loopback device.
    Loopback,
    /// Any other `ARPHRD_*` value.
    Other(u16),
}

/// A parent NIC as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentSpec {
    /// Interface name (`eth0`).
    pub name: String,
    /// Its MAC (M).
    pub mac: MacAddr,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up with carrier.
    pub up: bool,
    /// Link type.
    pub link_type: LinkType,
    /// The parent's own IPv4/IPv6 addresses (frames for them belong to the host).
    pub addrs: Vec<IpAddr>,
}

/// The master device of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Master {
    /// A parent, untagged (`vid: None`) or a VLAN on it (`parent=eth0.20` → `vid: Some(20)`).
    /// `wire: false` is Docker's `--internal`: the parent is held but the dataplane neither
    /// sends nor receives on the wire, and nothing reaches the host stack.
    Parent {
        /// The parent.
        parent: ParentId,
        /// 802.1Q VLAN id, 1–4094.
        vid: Option<u16>,
        /// Whether the network uses the wire.
        wire: bool,
    },
    /// No parent: an isolated network (Docker would create a dummy link). ipvlan ports use
    /// `mac`; the MTU is `mtu`.
    Isolated {
        /// The MAC every ipvlan port of this network carries.
        mac: MacAddr,
        /// The MTU ports get.
        mtu: u32,
    },
}

/// A network to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Name (unique in the engine).
    pub name: String,
    /// Which driver it emulates.
    pub driver: Driver,
    /// Its master.
    pub master: Master,
    /// Kernel behaviour C10: a port may hold one of the parent's own addresses and then wins
    /// lookups for it. Off by default (spec §5: uvlan refuses host IPs on ports, and frames
    /// for the parent's own IPs are never delivered to a port).
    pub allow_parent_addrs: bool,
}

impl NetworkSpec {
    /// A network with `allow_parent_addrs` off.
    pub fn new(name: impl Into<String>, driver: Driver, master: Master) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            driver,
            master,
            allow_parent_addrs: false,
        }
    }
}

/// Where a new link is created: on a network's master, or on an existing port (the kernel
/// then attaches it to that port's master, C6/C44).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRef {
    /// The network's master.
    Network(NetworkId),
    /// An existing port.
    Port(PortId),
}

/// ipvlan link attributes, as `IFLA_IPVLAN_*` would carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpvlanAttrs {
    /// `IFLA_IPVLAN_MODE`; absent at creation means L3 (C1).
    pub mode: Option<u16>,
    /// `IFLA_IPVLAN_FLAGS`; absent leaves the port's flags unchanged.
    pub flags: Option<u16>,
    /// `IFLA_MTU`; absent means the master's MTU.
    pub mtu: Option<u32>,
}

impl IpvlanAttrs {
    /// Explicit mode and flag, as uvlan's control plane always passes them.
    pub fn new(mode: IpvlanMode, flag: IpvlanFlag) -> IpvlanAttrs {
        IpvlanAttrs {
            mode: Some(mode.raw()),
            flags: Some(flag.raw()),
            mtu: None,
        }
    }
}

/// `IFLA_MACVLAN_MACADDR_MODE` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacaddrMode {
    /// `MACVLAN_MACADDR_ADD` (0).
    Add,
    /// `MACVLAN_MACADDR_DEL` (1).
    Del,
    /// `MACVLAN_MACADDR_FLUSH` (2).
    Flush,
    /// `MACVLAN_MACADDR_SET` (3).
    Set,
}

impl MacaddrMode {
    /// From the uapi value.
    pub fn from_raw(v: u32) -> Option<MacaddrMode> {
        match v {
            0 => Some(MacaddrMode::Add),
            1 => Some(MacaddrMode::Del),
            2 => Some(MacaddrMode::Flush),
            3 => Some(MacaddrMode::Set),
            _ => None,
        }
    }
}

/// macvlan link attributes, as `IFLA_ADDRESS`, `IFLA_MTU` and `IFLA_MACVLAN_*` would carry them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacvlanAttrs {
    /// `IFLA_MACVLAN_MODE`; absent at creation means VEPA (C39).
    pub mode: Option<u32>,
    /// `IFLA_MACVLAN_FLAGS` (NOPROMISC, NODST).
    pub flags: Option<u16>,
    /// `IFLA_ADDRESS`; absent means a random locally administered MAC.
    pub address: Option<Vec<u8>>,
    /// `IFLA_MTU`.
    pub mtu: Option<u32>,
    /// `IFLA_MACVLAN_MACADDR_MODE` (source mode list operation).
    pub macaddr_mode: Option<u32>,
    /// `IFLA_MACVLAN_MACADDR` and `IFLA_MACVLAN_MACADDR_DATA` entries.
    pub macaddrs: Vec<Vec<u8>>,
    /// `IFLA_MACVLAN_MACADDR_COUNT` (read-only: supplying it is an error).
    pub macaddr_count: Option<u32>,
    /// `IFLA_MACVLAN_BC_QUEUE_LEN`.
    pub bc_queue_len: Option<u32>,
}

impl MacvlanAttrs {
    /// A given mode and MAC, as uvlan's control plane passes them.
    pub fn new(mode: MacvlanMode, mac: Option<MacAddr>) -> MacvlanAttrs {
        MacvlanAttrs {
            mode: Some(mode.raw()),
            address: mac.map(|m| m.0.to_vec()),
            ..MacvlanAttrs::default()
        }
    }
}

/// Who owns an address in an ipvlan lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A port.
    Port(PortId),
    /// The parent's own stack.
    Host,
}

#[derive(Debug, Clone)]
pub(crate) struct Parent {
    pub(crate) name: String,
    pub(crate) mac: MacAddr,
    pub(crate) perm_mac: MacAddr,
    pub(crate) mtu: u32,
    pub(crate) up: bool,
    pub(crate) link_type: LinkType,
    pub(crate) promisc: bool,
    pub(crate) addrs: Vec<IpAddr>,
    pub(crate) untagged: Option<NetworkId>,
    pub(crate) tagged: AHashMap<u16, NetworkId>,
}

/// An ipvlan master's address table (`port->hlhead`): exact-match IPv4 and IPv6 keys, hashed
/// as one integer each.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddrTable {
    v4: AHashMap<u32, Owner>,
    v6: AHashMap<u128, Owner>,
}

impl AddrTable {
    /// The owner of `a`.
    #[inline]
    pub(crate) fn get(&self, a: IpAddr) -> Option<Owner> {
        match a {
            IpAddr::V4(a) => self.v4.get(&a.to_bits()).copied(),
            IpAddr::V6(a) => self.v6.get(&a.to_bits()).copied(),
        }
    }

    fn insert(&mut self, a: IpAddr, o: Owner) {
        match a {
            IpAddr::V4(a) => self.v4.insert(a.to_bits(), o),
            IpAddr::V6(a) => self.v6.insert(a.to_bits(), o),
        };
    }

    fn remove(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(a) => self.v4.remove(&a.to_bits()),
            IpAddr::V6(a) => self.v6.remove(&a.to_bits()),
        };
    }
}

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

#[derive(Debug, Clone)]
pub(crate) struct Port {
    pub(crate) name: String,
    pub(crate) network: NetworkId,
    pub(crate) mac: MacAddr,
    pub(crate) up: bool,
    pub(crate) mtu: u32,
    pub(crate) dev_id: u16,
    pub(crate) v4: Vec<Ipv4Addr>,
    pub(crate) v6: Vec<Ipv6Addr>,
    pub(crate) mc: McFilter,
    pub(crate) macvlan_mode: MacvlanMode,
    pub(crate) macvlan_flags: u16,
    pub(crate) sources: Vec<MacAddr>,
    pub(crate) bc_queue_len: Option<u32>,
}

/// Read-only facts about a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Name.
    pub name: String,
    /// Network.
    pub network: NetworkId,
    /// Its MAC (ipvlan: the master's).
    pub mac: MacAddr,
    /// Administratively up.
    pub up: bool,
    /// Operationally up: up and its parent up (C62).
    pub oper_up: bool,
    /// MTU.
    pub mtu: u32,
    /// `IFF_NOARP` (ipvlan L3/L3S, C4).
    pub noarp: bool,
    /// ipvlan `dev_id` (0 for macvlan).
    pub dev_id: u16,
    /// Addresses held.
    pub addrs: Vec<IpAddr>,
    /// macvlan mode (`None` for ipvlan).
    pub macvlan_mode: Option<MacvlanMode>,
    /// macvlan flags.
    pub macvlan_flags: u16,
    /// macvlan source-mode allowlist.
    pub sources: Vec<MacAddr>,
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

/// Read-only facts about a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentInfo {
    /// Name.
    pub name: String,
    /// Current MAC.
    pub mac: MacAddr,
    /// MAC at registration (restored when a passthru macvlan goes away, C43).
    pub perm_mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// Up.
    pub up: bool,
    /// Put into promiscuous mode by a passthru macvlan.
    pub promisc: bool,
    /// Own addresses.
    pub addrs: Vec<IpAddr>,
}

/// The macvlan default broadcast queue length.
pub const MACVLAN_DEFAULT_BC_QUEUE_LEN: u32 = 1000;

/// The forwarding engine: configuration plus the pure decision function (see `decide`).
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub(crate) parents: Vec<Option<Parent>>,
    pub(crate) networks: Vec<Option<Network>>,
    pub(crate) ports: Vec<Option<Port>>,
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

fn mac_from_bytes(b: &[u8]) -> Result<MacAddr, ConfigError> {
    let m = match MacAddr::from_slice(b) {
        Some(m) if b.len() == 6 => m,
        _ => {
            return err(
                Errno::Einval,
                format!("a MAC address has 6 bytes, got {}", b.len()),
            )
        }
    };
    if !m.is_valid_unicast() {
        return err(
            Errno::Eaddrnotavail,
            format!("{m} is not a valid unicast MAC address (multicast or zero)"),
        );
    }
    Ok(m)
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
            Some(p) => Ok(p),
            None => err(Errno::Enodev, format!("no port {id}")),
        }
    }

    /// The master MAC (M) of a network.
    #[inline]
    pub(crate) fn master_mac(&self, net: &Network) -> MacAddr {
        net.cached_mac
    }

    /// Recomputes every network's cached master MAC and state from its parent (called after
    /// any change to a parent's MAC or state).
    fn refresh_masters(&mut self) {
        for i in 0..self.networks.len() {
            let Some(master) = self.networks[i].as_ref().map(|n| n.master) else {
                continue;
            };
            let (mac, up) = match master {
                Master::Parent { parent, .. } => self
                    .parent(parent)
                    .map(|p| (p.mac, p.up))
                    .unwrap_or((MacAddr::ZERO, false)),
                Master::Isolated { mac, .. } => (mac, true),
            };
            if let Some(Some(n)) = self.networks.get_mut(i) {
                n.cached_mac = mac;
                n.cached_up = up;
            }
        }
    }

    fn master_mtu(&self, net: &Network) -> u32 {
        match net.master {
            Master::Parent { parent, .. } => self.parent(parent).map(|p| p.mtu).unwrap_or(1500),
            Master::Isolated { mtu, .. } => mtu,
        }
    }

    /// Finds a parent by name.
    pub fn parent_by_name(&self, name: &str) -> Option<ParentId> {
        self.parents
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.name == name))
            .map(|i| ParentId(i as u32))
    }

    /// Finds a network by name.
    pub fn network_by_name(&self, name: &str) -> Option<NetworkId> {
        self.networks
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.name == name))
            .map(|i| NetworkId(i as u32))
    }

    /// Finds a port by name within a network.
    pub fn port_by_name(&self, net: NetworkId, name: &str) -> Option<PortId> {
        let n = self.network(net)?;
        n.ports
            .iter()
            .copied()
            .find(|p| self.port(*p).is_some_and(|p| p.name == name))
    }

    /// Facts about a port.
    pub fn port_info(&self, id: PortId) -> Option<PortInfo> {
        let p = self.port(id)?;
        let net = self.network(p.network)?;
        let mut addrs: Vec<IpAddr> = p.v4.iter().map(|a| IpAddr::V4(*a)).collect();
        addrs.extend(p.v6.iter().map(|a| IpAddr::V6(*a)));
        Some(PortInfo {
            name: p.name.clone(),
            network: p.network,
            mac: p.mac,
            up: p.up,
            oper_up: p.up && self.master_up(net),
            mtu: p.mtu,
            noarp: net.driver == Driver::Ipvlan && net.ipvlan_mode.is_l3(),
            dev_id: p.dev_id,
            addrs,
            macvlan_mode: (net.driver == Driver::Macvlan).then_some(p.macvlan_mode),
            macvlan_flags: p.macvlan_flags,
            sources: p.sources.clone(),
        })
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

    /// Facts about a parent.
    pub fn parent_info(&self, id: ParentId) -> Option<ParentInfo> {
        let p = self.parent(id)?;
        Some(ParentInfo {
            name: p.name.clone(),
            mac: p.mac,
            perm_mac: p.perm_mac,
            mtu: p.mtu,
            up: p.up,
            promisc: p.promisc,
            addrs: p.addrs.clone(),
        })
    }

    /// Every live network.
    pub fn network_ids(&self) -> Vec<NetworkId> {
        (0..self.networks.len())
            .filter(|i| self.networks[*i].is_some())
            .map(|i| NetworkId(i as u32))
            .collect()
    }

    /// The network receiving wire frames of `parent` with this VID (`None` = untagged).
    pub fn network_on(&self, parent: ParentId, vid: Option<u16>) -> Option<NetworkId> {
        let p = self.parent(parent)?;
        match vid {
            None | Some(0) => p.untagged,
            Some(v) => p.tagged.get(&v).copied(),
        }
    }

    #[inline]
    pub(crate) fn master_up(&self, net: &Network) -> bool {
        net.cached_up
    }

    /// The IPv6 link-local address the kernel would give an ipvlan port
    /// (`addrconf_ifid_eui48` with the port's `dev_id`: MAC[0..3] ‖ dev_id ‖ MAC[3..6], U/L bit
    /// not flipped, C8). For a macvlan port: the ordinary EUI-64 of its MAC.
    pub fn port_link_local(&self, id: PortId) -> Option<Ipv6Addr> {
        let p = self.port(id)?;
        let m = p.mac.0;
        let mut iid = [m[0], m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        if p.dev_id != 0 {
            iid[3] = (p.dev_id >> 8) as u8;
            iid[4] = p.dev_id as u8;
        } else {
            iid[0] ^= 2;
        }
        let mut a = [0u8; 16];
        a[0] = 0xfe;
        a[1] = 0x80;
        a[8..].copy_from_slice(&iid);
        Some(Ipv6Addr::from(a))
    }

    // ---- parents -------------------------------------------------------------------------

    /// Registers a parent NIC.
    pub fn add_parent(&mut self, spec: ParentSpec) -> Result<ParentId, ConfigError> {
        if self.parent_by_name(&spec.name).is_some() {
            return err(
                Errno::Eexist,
                format!("parent {} is already registered", spec.name),
            );
        }
        let p = Parent {
            name: spec.name,
            mac: spec.mac,
            perm_mac: spec.mac,
            mtu: spec.mtu,
            up: spec.up,
            link_type: spec.link_type,
            promisc: false,
            addrs: Vec::new(),
            untagged: None,
            tagged: AHashMap::new(),
        };
        let id = ParentId(slot_insert(&mut self.parents, p));
        self.set_parent_addrs(id, spec.addrs)?;
        Ok(id)
    }

    /// Deletes a parent, and with it every network on it and all their ports (C62: deleting
    /// the lower device deletes its slaves). Returns the removed networks and ports.
    pub fn remove_parent(
        &mut self,
        id: ParentId,
    ) -> Result<(Vec<NetworkId>, Vec<PortId>), ConfigError> {
        self.parent_mut(id)?;
        let nets: Vec<NetworkId> = self
            .network_ids()
            .into_iter()
            .filter(|n| {
                matches!(self.network(*n).map(|n| n.master),
                    Some(Master::Parent { parent, .. }) if parent == id)
            })
            .collect();
        let mut ports = Vec::new();
        for n in &nets {
            let ps = self
                .network(*n)
                .map(|n| n.ports.clone())
                .unwrap_or_default();
            for p in ps {
                self.remove_port(p)?;
                ports.push(p);
            }
            self.remove_network(*n)?;
        }
        self.parents[id.index()] = None;
        Ok((nets, ports))
    }

    /// Parent up/down. Ports' operational state follows (C62).
    pub fn set_parent_up(&mut self, id: ParentId, up: bool) -> Result<(), ConfigError> {
        self.parent_mut(id)?.up = up;
        self.refresh_masters();
        Ok(())
    }

    /// Changes the parent's MAC. ipvlan ports follow it (C7); macvlan ports keep theirs.
    pub fn set_parent_mac(&mut self, id: ParentId, mac: MacAddr) -> Result<(), ConfigError> {
        if !mac.is_valid_unicast() {
            return err(
                Errno::Eaddrnotavail,
                format!("{mac} is not a valid unicast MAC"),
            );
        }
        self.parent_mut(id)?.mac = mac;
        self.refresh_masters();
        self.sync_ipvlan_macs(id);
        Ok(())
    }

    fn sync_ipvlan_macs(&mut self, id: ParentId) {
        let Some(mac) = self.parent(id).map(|p| p.mac) else {
            return;
        };
        for n in self.network_ids() {
            let Some(net) = self.network(n) else { continue };
            let on_parent = matches!(net.master, Master::Parent { parent, .. } if parent == id);
            if !on_parent {
                continue;
            }
            let (driver, passthru, ports) = (net.driver, net.passthru, net.ports.clone());
            if driver == Driver::Ipvlan || passthru {
                for p in ports {
                    if let Some(Some(port)) = self.ports.get_mut(p.index()) {
                        port.mac = mac;
                    }
                }
            }
        }
    }

    /// Changes the parent's MTU: every ipvlan port is reset to it (C63); macvlan ports larger
    /// than it are clamped, smaller ones keep theirs (C45).
    pub fn set_parent_mtu(&mut self, id: ParentId, mtu: u32) -> Result<(), ConfigError> {
        self.parent_mut(id)?.mtu = mtu;
        for n in self.network_ids() {
            let Some(net) = self.network(n) else { continue };
            if !matches!(net.master, Master::Parent { parent, .. } if parent == id) {
                continue;
            }
            let (driver, ports) = (net.driver, net.ports.clone());
            for p in ports {
                if let Some(Some(port)) = self.ports.get_mut(p.index()) {
                    match driver {
                        Driver::Ipvlan => port.mtu = mtu,
                        Driver::Macvlan => port.mtu = port.mtu.min(mtu),
                    }
                }
            }
        }
        Ok(())
    }

    /// Replaces the parent's own addresses. Frames for them go to the host stack, never to a
    /// port (unless a network allows ports to hold them, C10).
    pub fn set_parent_addrs(
        &mut self,
        id: ParentId,
        addrs: Vec<IpAddr>,
    ) -> Result<(), ConfigError> {
        let old = std::mem::take(&mut self.parent_mut(id)?.addrs);
        for n in self.network_ids() {
            let Some(net) = self.networks[n.index()].as_mut() else {
                continue;
            };
            if !matches!(net.master, Master::Parent { parent, .. } if parent == id) {
                continue;
            }
            for a in &old {
                if net.addrs.get(*a) == Some(Owner::Host) {
                    net.addrs.remove(*a);
                }
            }
            for a in &addrs {
                if net.addrs.get(*a).is_none() {
                    net.addrs.insert(*a, Owner::Host);
                }
            }
        }
        self.parent_mut(id)?.addrs = addrs;
        Ok(())
    }

    // ---- networks ------------------------------------------------------------------------

    /// Creates a network (a master: the parent, a VLAN on it, or nothing).
    ///
    /// Errors: the name is taken (`EEXIST`); the parent is missing (`ENODEV`); the parent is
    /// loopback or not Ethernet (`EINVAL`, C5); a VID outside 1–4094 (`EINVAL`); the parent
    /// (+VID) already serves a network, whichever the driver (`EBUSY`: its rx_handler slot is
    /// taken, C5/C44).
    pub fn add_network(&mut self, spec: NetworkSpec) -> Result<NetworkId, ConfigError> {
        if self.network_by_name(&spec.name).is_some() {
            return err(
                Errno::Eexist,
                format!("network {} already exists", spec.name),
            );
        }
        if let Master::Parent { parent, vid, .. } = spec.master {
            let Some(p) = self.parent(parent) else {
                return err(Errno::Enodev, format!("no parent {parent}"));
            };
            match p.link_type {
                LinkType::Ether => {}
                LinkType::Loopback | LinkType::Other(_) => {
                    return err(
                        Errno::Einval,
                        format!("Master is either lo or non-ether device: {}", p.name),
                    )
                }
            }
            let held = match vid {
                None => p.untagged,
                Some(v) if (1..=4094).contains(&v) => p.tagged.get(&v).copied(),
                Some(v) => {
                    return err(
                        Errno::Einval,
                        format!("vlan id must be between 1-4094, received: {v}"),
                    )
                }
            };
            if let Some(h) = held {
                let holder = self.network(h).map(|n| n.name.clone()).unwrap_or_default();
                let dev = match vid {
                    Some(v) => format!("{}.{v}", p.name),
                    None => p.name.clone(),
                };
                return err(
                    Errno::Ebusy,
                    format!("Device is already in use: {dev} serves network {holder}"),
                );
            }
        }
        let net = Network {
            name: spec.name,
            driver: spec.driver,
            master: spec.master,
            allow_parent_addrs: spec.allow_parent_addrs,
            ipvlan_mode: IpvlanMode::L3,
            ipvlan_flag: IpvlanFlag::Bridge,
            ports: Vec::new(),
            addrs: AddrTable::default(),
            macs: AHashMap::new(),
            sources: AHashMap::new(),
            passthru: false,
            dev_id_start: 1,
            dev_ids: AHashSet::new(),
            cached_mac: MacAddr::ZERO,
            cached_up: false,
        };
        let id = NetworkId(slot_insert(&mut self.networks, net));
        if let Master::Parent { parent, vid, .. } = spec.master {
            let addrs = {
                let p = self.parent_mut(parent)?;
                match vid {
                    None => p.untagged = Some(id),
                    Some(v) => {
                        p.tagged.insert(v, id);
                    }
                }
                p.addrs.clone()
            };
            let net = self.network_mut(id)?;
            for a in addrs {
                net.addrs.insert(a, Owner::Host);
            }
        }
        self.refresh_masters();
        Ok(id)
    }

    /// Removes a network. It must have no ports (`EBUSY`).
    pub fn remove_network(&mut self, id: NetworkId) -> Result<(), ConfigError> {
        let net = self.network_mut(id)?;
        if !net.ports.is_empty() {
            let n = net.ports.len();
            return err(
                Errno::Ebusy,
                format!(
                    "network {} still has {n} port(s): remove them first",
                    net.name
                ),
            );
        }
        let master = net.master;
        if let Master::Parent { parent, vid, .. } = master {
            if let Ok(p) = self.parent_mut(parent) {
                match vid {
                    None => p.untagged = None,
                    Some(v) => {
                        p.tagged.remove(&v);
                    }
                }
            }
        }
        self.networks[id.index()] = None;
        Ok(())
    }

    fn resolve_link(&self, link: LinkRef) -> Result<NetworkId, ConfigError> {
        match link {
            LinkRef::Network(n) => self.network(n).map(|_| n).ok_or(()),
            LinkRef::Port(p) => self.port(p).map(|p| p.network).ok_or(()),
        }
        .or_else(|_| err(Errno::Enodev, format!("no such link {link:?}")))
    }

    // ---- ipvlan ports --------------------------------------------------------------------

    fn ipvlan_validate(
        attrs: &IpvlanAttrs,
    ) -> Result<(Option<IpvlanMode>, Option<IpvlanFlag>), ConfigError> {
        let mode = match attrs.mode {
            None => None,
            Some(m) => match IpvlanMode::from_raw(m) {
                Some(m) => Some(m),
                None => {
                    return err(
                        Errno::Einval,
                        format!("ipvlan mode {m} is not l2 (0), l3 (1) or l3s (2)"),
                    )
                }
            },
        };
        let flag = match attrs.flags {
            None => None,
            Some(f) if f & !(IpvlanFlag::F_PRIVATE | IpvlanFlag::F_VEPA) != 0 => {
                return err(
                    Errno::Einval,
                    format!(
                        "unknown ipvlan flag bits {f:#x}: only private (0x1) and vepa (0x2) exist"
                    ),
                )
            }
            Some(f) => match IpvlanFlag::from_raw(f) {
                Some(f) => Some(f),
                None => {
                    return err(
                        Errno::Einval,
                        "ipvlan flags private and vepa are mutually exclusive",
                    )
                }
            },
        };
        Ok((mode, flag))
    }

    /// Creates an ipvlan port (`ipvlan_link_new`), down. Without a mode attribute the whole
    /// network switches to L3 (C1); flags, when given, apply to every port (C3).
    pub fn add_ipvlan_port(
        &mut self,
        link: LinkRef,
        name: impl Into<String>,
        attrs: IpvlanAttrs,
    ) -> Result<PortId, ConfigError> {
        let (mode, flag) = Self::ipvlan_validate(&attrs)?;
        let nid = self.resolve_link(link)?;
        let net = self
            .network(nid)
            .ok_or(())
            .or_else(|_| err(Errno::Enodev, "no network"))?;
        if net.driver != Driver::Ipvlan {
            return err(
                Errno::Ebusy,
                format!(
                    "Device is already in use: network {} is a macvlan port",
                    net.name
                ),
            );
        }
        let mac = self.master_mac(net);
        let mtu = attrs.mtu.unwrap_or_else(|| self.master_mtu(net));
        let net = self.network_mut(nid)?;
        // ipvlan_link_new: dev_id from a per-port IDA, round-robin from dev_id_start.
        let dev_id = {
            let free = |s: &AHashSet<u16>, r: std::ops::RangeInclusive<u16>| {
                r.into_iter().find(|d| !s.contains(d))
            };
            match free(&net.dev_ids, net.dev_id_start..=0xfffd)
                .or_else(|| free(&net.dev_ids, 1..=net.dev_id_start.saturating_sub(1).max(1)))
            {
                Some(d) => d,
                None => {
                    return err(
                        Errno::Ebusy,
                        "no free ipvlan dev_id on this master (65533 in use)",
                    )
                }
            }
        };
        net.dev_ids.insert(dev_id);
        net.dev_id_start = if dev_id >= 0xfffd { 1 } else { dev_id + 1 };
        if let Some(f) = flag {
            net.ipvlan_flag = f;
        }
        net.ipvlan_mode = mode.unwrap_or(IpvlanMode::L3);
        let port = Port {
            name: name.into(),
            network: nid,
            mac,
            up: false,
            mtu,
            dev_id,
            v4: Vec::new(),
            v6: Vec::new(),
            mc: McFilter::All,
            macvlan_mode: MacvlanMode::Vepa,
            macvlan_flags: 0,
            sources: Vec::new(),
            bc_queue_len: None,
        };
        let pid = PortId(slot_insert(&mut self.ports, port));
        self.network_mut(nid)?.ports.push(pid);
        Ok(pid)
    }

    /// `ipvlan_nl_changelink`: a mode or flag given on any port changes them for all (C3).
    pub fn ipvlan_changelink(
        &mut self,
        port: PortId,
        attrs: IpvlanAttrs,
    ) -> Result<(), ConfigError> {
        let (mode, flag) = Self::ipvlan_validate(&attrs)?;
        let nid = self.port_ref(port)?.network;
        let net = self.network_mut(nid)?;
        if net.driver != Driver::Ipvlan {
            return err(Errno::Einval, "not an ipvlan port");
        }
        if let Some(f) = flag {
            net.ipvlan_flag = f;
        }
        if let Some(m) = mode {
            net.ipvlan_mode = m;
        }
        if let Some(mtu) = attrs.mtu {
            self.port_mut(port)?.mtu = mtu;
        }
        Ok(())
    }

    // ---- macvlan ports -------------------------------------------------------------------

    fn random_mac(&mut self) -> MacAddr {
        // eth_hw_addr_random: random, unicast, locally administered. The engine has no entropy
        // source of its own, so it draws from a keyed hash of a counter; the control plane
        // passes its own random MACs.
        self.mac_seq += 1;
        let mut h = ahash::RandomState::with_seeds(0x75766c61, 0x6e, 0x6d6163, 0x76).build_hasher();
        h.write_u64(self.mac_seq);
        let v = h.finish().to_le_bytes();
        let mut m = [v[0], v[1], v[2], v[3], v[4], v[5]];
        m[0] = (m[0] & 0xfe) | 0x02;
        MacAddr(m)
    }

    fn macvlan_validate(attrs: &MacvlanAttrs) -> Result<ValidMacvlanAttrs, ConfigError> {
        if let Some(a) = &attrs.address {
            mac_from_bytes(a)?;
        }
        if let Some(f) = attrs.flags {
            if f & !(MACVLAN_FLAG_NOPROMISC | MACVLAN_FLAG_NODST) != 0 {
                return err(
                    Errno::Einval,
                    format!(
                        "unknown macvlan flag bits {f:#x}: only nopromisc (1) and nodst (2) exist"
                    ),
                );
            }
        }
        let mode = match attrs.mode {
            None => None,
            Some(m) => match MacvlanMode::from_raw(m) {
                Some(m) => Some(m),
                None => return err(Errno::Einval, format!("macvlan mode {m} is not one of private (1), vepa (2), bridge (4), passthru (8), source (16)")),
            },
        };
        let maddr_mode = match attrs.macaddr_mode {
            None => None,
            Some(m) => match MacaddrMode::from_raw(m) {
                Some(m) => Some(m),
                None => {
                    return err(
                        Errno::Einval,
                        format!("macaddr mode {m} is not add, del, flush or set"),
                    )
                }
            },
        };
        let mut macs = Vec::with_capacity(attrs.macaddrs.len());
        for b in &attrs.macaddrs {
            macs.push(mac_from_bytes(b)?);
        }
        if attrs.macaddr_count.is_some() {
            return err(Errno::Einval, "IFLA_MACVLAN_MACADDR_COUNT is read-only");
        }
        Ok((mode, maddr_mode, macs))
    }

    fn apply_sources(
        port: &mut Port,
        op: Option<MacaddrMode>,
        macs: &[MacAddr],
    ) -> Result<(), ConfigError> {
        match op {
            None => {
                if !macs.is_empty() {
                    return err(
                        Errno::Einval,
                        "source MAC addresses need a macaddr mode (add, del, set)",
                    );
                }
            }
            Some(MacaddrMode::Add) => {
                for m in macs {
                    if !port.sources.contains(m) {
                        port.sources.push(*m);
                    }
                }
            }
            Some(MacaddrMode::Del) => port.sources.retain(|s| !macs.contains(s)),
            Some(MacaddrMode::Flush) => port.sources.clear(),
            Some(MacaddrMode::Set) => {
                port.sources.clear();
                for m in macs {
                    if !port.sources.contains(m) {
                        port.sources.push(*m);
                    }
                }
            }
        }
        Ok(())
    }

    fn rebuild_sources(&mut self, nid: NetworkId) {
        let Some(net) = self.network(nid) else { return };
        let mut map: AHashMap<MacAddr, Vec<PortId>> = AHashMap::new();
        for p in &net.ports {
            if let Some(port) = self.port(*p) {
                if port.macvlan_mode == MacvlanMode::Source {
                    for s in &port.sources {
                        map.entry(*s).or_default().push(*p);
                    }
                }
            }
        }
        if let Some(Some(net)) = self.networks.get_mut(nid.index()) {
            net.sources = map;
        }
    }

    /// Creates a macvlan port (`macvlan_common_newlink`), down.
    ///
    /// Mode defaults to VEPA and the MAC to a random one (C39). Errors as the kernel's:
    /// invalid mode/flags/macaddr mode → `EINVAL`, multicast or zero MAC → `EADDRNOTAVAIL`
    /// (C40); passthru with other ports or any port on a passthru network → `EINVAL` (C42);
    /// MTU above the lower's → `EINVAL` (C45); source-list attributes outside source mode →
    /// `EINVAL` (C59); an ipvlan master → `EBUSY` (C44).
    pub fn add_macvlan_port(
        &mut self,
        link: LinkRef,
        name: impl Into<String>,
        attrs: MacvlanAttrs,
    ) -> Result<PortId, ConfigError> {
        let (mode, maddr_mode, macs) = Self::macvlan_validate(&attrs)?;
        let nid = self.resolve_link(link)?;
        let net = self
            .network(nid)
            .ok_or(())
            .or_else(|_| err(Errno::Enodev, "no network"))?;
        if net.driver != Driver::Macvlan {
            return err(
                Errno::Ebusy,
                format!(
                    "Device is already in use: network {} is an ipvlan port",
                    net.name
                ),
            );
        }
        let mode = mode.unwrap_or(MacvlanMode::Vepa);
        if mode == MacvlanMode::Passthru && !net.ports.is_empty() {
            return err(
                Errno::Einval,
                format!(
                    "passthru needs a lower device of its own: network {} already has ports",
                    net.name
                ),
            );
        }
        if net.passthru {
            return err(
                Errno::Einval,
                format!(
                    "network {} is passthru: it takes no further macvlan",
                    net.name
                ),
            );
        }
        if mode != MacvlanMode::Source && (maddr_mode.is_some() || !macs.is_empty()) {
            return err(
                Errno::Einval,
                "source MAC lists are only valid in source mode",
            );
        }
        let lower_mtu = self.master_mtu(net);
        let mtu = match attrs.mtu {
            Some(m) if m > lower_mtu => {
                return err(
                    Errno::Einval,
                    format!("MTU {m} is above the lower device's MTU {lower_mtu}"),
                )
            }
            Some(m) => m,
            None => lower_mtu,
        };
        let master_mac = self.master_mac(net);
        let mac = if mode == MacvlanMode::Passthru {
            match &attrs.address {
                Some(a) => mac_from_bytes(a)?,
                None => master_mac,
            }
        } else {
            match &attrs.address {
                Some(a) => mac_from_bytes(a)?,
                None => self.random_mac(),
            }
        };
        let flags = attrs.flags.unwrap_or(0);
        let mut port = Port {
            name: name.into(),
            network: nid,
            mac,
            up: false,
            mtu,
            dev_id: 0,
            v4: Vec::new(),
            v6: Vec::new(),
            mc: McFilter::All,
            macvlan_mode: mode,
            macvlan_flags: flags,
            sources: Vec::new(),
            bc_queue_len: attrs.bc_queue_len,
        };
        Self::apply_sources(&mut port, maddr_mode, &macs)?;
        if mode == MacvlanMode::Passthru {
            // macvlan_common_newlink / macvlan_open: the lower goes promisc unless NOPROMISC,
            // and a MAC given for the passthru device is set on the lower (C43).
            if let Master::Parent { parent, .. } = self
                .network(nid)
                .map(|n| n.master)
                .ok_or(())
                .or_else(|_| err(Errno::Enodev, "no network"))?
            {
                let p = self.parent_mut(parent)?;
                if flags & MACVLAN_FLAG_NOPROMISC == 0 {
                    p.promisc = true;
                }
                p.mac = mac;
            }
        }
        let pid = PortId(slot_insert(&mut self.ports, port));
        let net = self.network_mut(nid)?;
        net.ports.push(pid);
        if mode == MacvlanMode::Passthru {
            net.passthru = true;
        }
        self.refresh_masters();
        self.rebuild_sources(nid);
        Ok(pid)
    }

    /// `macvlan_changelink`: mode, flags and the source list. Switching into or out of
    /// passthru → `EINVAL` (C42); leaving source mode flushes the list (C59).
    pub fn macvlan_changelink(
        &mut self,
        port: PortId,
        attrs: MacvlanAttrs,
    ) -> Result<(), ConfigError> {
        let (mode, maddr_mode, macs) = Self::macvlan_validate(&attrs)?;
        let p = self.port_ref(port)?;
        let nid = p.network;
        if self.network(nid).map(|n| n.driver) != Some(Driver::Macvlan) {
            return err(Errno::Einval, "not a macvlan port");
        }
        let cur = p.macvlan_mode;
        let new = mode.unwrap_or(cur);
        if (cur == MacvlanMode::Passthru) != (new == MacvlanMode::Passthru) {
            return err(
                Errno::Einval,
                "a macvlan cannot be switched into or out of passthru mode",
            );
        }
        if new != MacvlanMode::Source && (maddr_mode.is_some() || !macs.is_empty()) {
            return err(
                Errno::Einval,
                "source MAC lists are only valid in source mode",
            );
        }
        if let Some(mtu) = attrs.mtu {
            let lower = self.network(nid).map(|n| self.master_mtu(n)).unwrap_or(0);
            if mtu > lower {
                return err(
                    Errno::Einval,
                    format!("MTU {mtu} is above the lower device's MTU {lower}"),
                );
            }
        }
        let mut updated = p.clone();
        updated.macvlan_mode = new;
        if let Some(f) = attrs.flags {
            updated.macvlan_flags = f;
        }
        if cur == MacvlanMode::Source && new != MacvlanMode::Source {
            updated.sources.clear();
        }
        Self::apply_sources(&mut updated, maddr_mode, &macs)?;
        if let Some(mtu) = attrs.mtu {
            updated.mtu = mtu;
        }
        if let Some(b) = attrs.bc_queue_len {
            updated.bc_queue_len = Some(b);
        }
        *self.port_mut(port)? = updated;
        self.rebuild_sources(nid);
        Ok(())
    }

    // ---- common port operations ----------------------------------------------------------

    fn macvlan_addr_busy(&self, net: &Network, mac: MacAddr, except: PortId) -> bool {
        // macvlan_addr_busy: the lower's own MAC (not on a passthru port) or an UP sibling's.
        if !net.passthru && mac == self.master_mac(net) {
            return true;
        }
        net.macs.get(&mac).is_some_and(|p| *p != except)
    }

    /// Brings a port up or down. macvlan: up fails with `EADDRINUSE` when the MAC is the
    /// lower's or an up sibling's (C41). ipvlan: a down port's addresses stop matching (C12).
    pub fn set_port_up(&mut self, port: PortId, up: bool) -> Result<(), ConfigError> {
        let p = self.port_ref(port)?;
        let (nid, mac, was_up) = (p.network, p.mac, p.up);
        if up == was_up {
            return Ok(());
        }
        let net = self
            .network(nid)
            .ok_or(())
            .or_else(|_| err(Errno::Enodev, "no network"))?;
        if net.driver == Driver::Macvlan {
            if up {
                if self.macvlan_addr_busy(net, mac, port) {
                    return err(Errno::Eaddrinuse, format!("MAC {mac} is in use on this lower device (the lower's own or an up macvlan's)"));
                }
                self.network_mut(nid)?.macs.insert(mac, port);
            } else {
                let net = self.network_mut(nid)?;
                if net.macs.get(&mac) == Some(&port) {
                    net.macs.remove(&mac);
                }
            }
        }
        self.port_mut(port)?.up = up;
        Ok(())
    }

    /// Sets a port's MAC. ipvlan: `EOPNOTSUPP` (the master's MAC is inherited, C7). macvlan:
    /// `EADDRNOTAVAIL` for an invalid MAC, `EADDRINUSE` when taken (C41); passthru: sets the
    /// lower's MAC (C43).
    pub fn set_port_mac(&mut self, port: PortId, mac: MacAddr) -> Result<(), ConfigError> {
        let p = self.port_ref(port)?;
        let (nid, old, up) = (p.network, p.mac, p.up);
        let net = self
            .network(nid)
            .ok_or(())
            .or_else(|_| err(Errno::Enodev, "no network"))?;
        if net.driver == Driver::Ipvlan {
            return err(
                Errno::Eopnotsupp,
                "an ipvlan port carries its master's MAC and cannot change it",
            );
        }
        if !mac.is_valid_unicast() {
            return err(
                Errno::Eaddrnotavail,
                format!("{mac} is not a valid unicast MAC"),
            );
        }
        if net.passthru {
            if let Master::Parent { parent, .. } = net.master {
                self.parent_mut(parent)?.mac = mac;
            }
        } else if self.macvlan_addr_busy(net, mac, port) {
            return err(
                Errno::Eaddrinuse,
                format!("MAC {mac} is in use on this lower device"),
            );
        }
        let net = self.network_mut(nid)?;
        if up {
            if net.macs.get(&old) == Some(&port) {
                net.macs.remove(&old);
            }
            net.macs.insert(mac, port);
        }
        self.refresh_masters();
        self.port_mut(port)?.mac = mac;
        Ok(())
    }

    /// Sets a port's MTU. macvlan: not above the lower's (`EINVAL`, C45). ipvlan: any (C63).
    pub fn set_port_mtu(&mut self, port: PortId, mtu: u32) -> Result<(), ConfigError> {
        let nid = self.port_ref(port)?.network;
        let net = self
            .network(nid)
            .ok_or(())
            .or_else(|_| err(Errno::Enodev, "no network"))?;
        if net.driver == Driver::Macvlan {
            let lower = self.master_mtu(net);
            if mtu > lower {
                return err(
                    Errno::Einval,
                    format!("MTU {mtu} is above the lower device's MTU {lower}"),
                );
            }
        }
        self.port_mut(port)?.mtu = mtu;
        Ok(())
    }

    /// Sets which multicast groups a port accepts.
    pub fn set_port_mc_filter(&mut self, port: PortId, mc: McFilter) -> Result<(), ConfigError> {
        self.port_mut(port)?.mc = mc;
        Ok(())
    }

    /// Adds an address to a port.
    ///
    /// ipvlan: refused with `EADDRINUSE` when another port of the same master holds it
    /// ("Address already assigned to an ipvlan device", C9), or when it is one of the parent's
    /// own addresses and the network does not allow that (C10 is opt-in). macvlan: recorded
    /// only (macvlan switches by MAC).
    pub fn add_port_addr(&mut self, port: PortId, addr: IpAddr) -> Result<(), ConfigError> {
        let p = self.port_ref(port)?;
        let nid = p.network;
        let already = match addr {
            IpAddr::V4(a) => p.v4.contains(&a),
            IpAddr::V6(a) => p.v6.contains(&a),
        };
        if already {
            return Ok(());
        }
        let net = self.network_mut(nid)?;
        if net.driver == Driver::Ipvlan {
            match net.addrs.get(addr) {
                Some(Owner::Port(other)) if other != port => {
                    return err(
                        Errno::Eaddrinuse,
                        format!("Address already assigned to an ipvlan device: {addr}"),
                    );
                }
                Some(Owner::Host) if !net.allow_parent_addrs => {
                    return err(
                        Errno::Eaddrinuse,
                        format!(
                            "{addr} is one of the parent's own addresses: a port may not take it"
                        ),
                    );
                }
                _ => {}
            }
            net.addrs.insert(addr, Owner::Port(port));
        }
        let p = self.port_mut(port)?;
        match addr {
            IpAddr::V4(a) => p.v4.push(a),
            IpAddr::V6(a) => p.v6.push(a),
        }
        Ok(())
    }

    /// Removes an address from a port (a parent address it shadowed goes back to the host).
    pub fn del_port_addr(&mut self, port: PortId, addr: IpAddr) -> Result<(), ConfigError> {
        let nid = self.port_ref(port)?.network;
        let parent_addrs = match self.network(nid).map(|n| n.master) {
            Some(Master::Parent { parent, .. }) => self
                .parent(parent)
                .map(|p| p.addrs.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let p = self.port_mut(port)?;
        let had = match addr {
            IpAddr::V4(a) => {
                let n = p.v4.len();
                p.v4.retain(|x| *x != a);
                n != p.v4.len()
            }
            IpAddr::V6(a) => {
                let n = p.v6.len();
                p.v6.retain(|x| *x != a);
                n != p.v6.len()
            }
        };
        if !had {
            return err(
                Errno::Eaddrnotavail,
                format!("{addr} is not on port {port}"),
            );
        }
        let host = parent_addrs.contains(&addr);
        let net = self.network_mut(nid)?;
        if net.addrs.get(addr) == Some(Owner::Port(port)) {
            if host {
                net.addrs.insert(addr, Owner::Host);
            } else {
                net.addrs.remove(addr);
            }
        }
        Ok(())
    }

    /// Deletes a port and its addresses. A passthru port gives the lower back its permanent
    /// MAC and leaves promiscuous mode (C43).
    pub fn remove_port(&mut self, port: PortId) -> Result<(), ConfigError> {
        let p = self.port_ref(port)?.clone();
        for a in
            p.v4.iter()
                .map(|a| IpAddr::V4(*a))
                .chain(p.v6.iter().map(|a| IpAddr::V6(*a)))
        {
            self.del_port_addr(port, a)?;
        }
        let nid = p.network;
        let net = self.network_mut(nid)?;
        net.ports.retain(|x| *x != port);
        if net.macs.get(&p.mac) == Some(&port) {
            net.macs.remove(&p.mac);
        }
        net.dev_ids.remove(&p.dev_id);
        let was_passthru = net.passthru && p.macvlan_mode == MacvlanMode::Passthru;
        if was_passthru {
            net.passthru = false;
        }
        let master = net.master;
        if was_passthru {
            if let Master::Parent { parent, .. } = master {
                let par = self.parent_mut(parent)?;
                par.mac = par.perm_mac;
                par.promisc = false;
            }
        }
        self.ports[port.index()] = None;
        self.refresh_masters();
        self.rebuild_sources(nid);
        Ok(())
    }
}

/// A key that steers a frame arriving on a parent to uvlan instead of the host stack. The I/O
/// layer programs these into its XDP/tc filter; everything else stays with the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WireKey {
    /// Frames whose destination MAC is this (an up macvlan port), on VLAN `vid` (0 = untagged).
    DstMac {
        /// VLAN id, 0 = untagged.
        vid: u16,
        /// The MAC.
        mac: MacAddr,
    },
    /// Frames whose destination IP, ARP target or NS target is this (an up ipvlan port).
    Ip {
        /// VLAN id, 0 = untagged.
        vid: u16,
        /// The address.
        addr: IpAddr,
    },
    /// Frames whose source MAC is this (a macvlan `source` device's allowlist).
    SrcMac {
        /// VLAN id, 0 = untagged.
        vid: u16,
        /// The MAC.
        mac: MacAddr,
    },
    /// Every unicast frame on this VLAN (a macvlan `passthru` port takes them all).
    AllUnicast {
        /// VLAN id, 0 = untagged.
        vid: u16,
    },
}

impl Engine {
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

    /// The keys the I/O layer must steer from `parent`'s wire to uvlan, sorted and without
    /// duplicates: addresses of up ipvlan ports, MACs of up macvlan ports (not `source` ones,
    /// which are not addressable by MAC, C58), source allowlists, and all unicast for passthru.
    /// Networks without a wire (`--internal`) contribute nothing. Group frames are never keys:
    /// the host needs them too, so the I/O layer copies them (XDP cannot clone).
    pub fn wire_keys(&self, parent: ParentId) -> Vec<WireKey> {
        let mut keys = Vec::new();
        for nid in self.network_ids() {
            let Some(net) = self.network(nid) else {
                continue;
            };
            let vid = match net.master {
                Master::Parent {
                    parent: p,
                    vid,
                    wire: true,
                } if p == parent => vid.unwrap_or(0),
                _ => continue,
            };
            if net.driver == Driver::Macvlan && net.passthru {
                keys.push(WireKey::AllUnicast { vid });
            }
            for &pid in &net.ports {
                let Some(port) = self.port(pid) else { continue };
                match net.driver {
                    Driver::Ipvlan => {
                        if port.up {
                            keys.extend(port.v4.iter().map(|a| WireKey::Ip {
                                vid,
                                addr: IpAddr::V4(*a),
                            }));
                            keys.extend(port.v6.iter().map(|a| WireKey::Ip {
                                vid,
                                addr: IpAddr::V6(*a),
                            }));
                        }
                    }
                    Driver::Macvlan => {
                        if port.macvlan_mode == MacvlanMode::Source {
                            keys.extend(
                                port.sources
                                    .iter()
                                    .map(|m| WireKey::SrcMac { vid, mac: *m }),
                            );
                        } else if port.up && !net.passthru {
                            keys.push(WireKey::DstMac { vid, mac: port.mac });
                        }
                    }
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}
