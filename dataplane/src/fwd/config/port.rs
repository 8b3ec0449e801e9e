//! Ports (the slaves): creation-independent operations, up/down, MAC, MTU, multicast
//! filter, addresses and removal, and the read-only facts about a port.

use super::errors::err;
use super::{ConfigError, Engine, Errno, Master, Owner};
use crate::fwd::types::*;
use crate::wire::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

impl Engine {
    /// Finds a port by name within a network.
    pub fn port_by_name(&self, net: NetworkId, name: &str) -> Option<PortId> {
        let n = self.network(net)?;
        n.ports
            .iter()
            .copied()
            .find(|p| self.port(*p).is_some_and(|p| p.name == name))
    }

    /// A port's MTU (the one the MTU rule checks frames to it against), without the
    /// allocation [`port_info`](Engine::port_info) makes: the datapath asks it per frame.
    #[inline]
    pub fn port_mtu(&self, id: PortId) -> Option<u32> {
        self.port(id).map(|p| p.mtu)
    }

    /// A port's name and network, without copying anything (what the run loop compares on
    /// every publication to see whether a port it serves is still the same port).
    pub fn port_ident(&self, id: PortId) -> Option<(&str, NetworkId)> {
        self.port(id).map(|p| (p.name.as_str(), p.network))
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

    // ---- common port operations ----------------------------------------------------------
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
