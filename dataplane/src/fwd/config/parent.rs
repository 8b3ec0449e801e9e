//! Parents (the lower devices), the networks (masters) on them, the masters' cached state,
//! and the wire keys the I/O layer steers to uvlan.

use super::errors::err;
use super::{slot_insert, AddrTable, ConfigError, Engine, Errno, Network, Owner};
use crate::fwd::types::*;
use crate::wire::MacAddr;
use ahash::{AHashMap, AHashSet};
use std::net::IpAddr;

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
    /// lookups for it. Off by default (uvlan's default deviation, docs/conformance.md: it refuses host IPs on ports, and frames
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
    /// The master MAC (M) of a network.
    #[inline]
    pub(crate) fn master_mac(&self, net: &Network) -> MacAddr {
        net.cached_mac
    }

    /// Recomputes every network's cached master MAC and state from its parent (called after
    /// any change to a parent's MAC or state).
    pub(super) fn refresh_masters(&mut self) {
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

    pub(crate) fn master_mtu(&self, net: &Network) -> u32 {
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
                        std::sync::Arc::make_mut(port).mac = mac;
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
                    let port = std::sync::Arc::make_mut(port);
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

    pub(super) fn resolve_link(&self, link: LinkRef) -> Result<NetworkId, ConfigError> {
        match link {
            LinkRef::Network(n) => self.network(n).map(|_| n).ok_or(()),
            LinkRef::Port(p) => self.port(p).map(|p| p.network).ok_or(()),
        }
        .or_else(|_| err(Errno::Enodev, format!("no such link {link:?}")))
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
