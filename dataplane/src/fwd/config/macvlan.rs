//! macvlan network configuration: `macvlan.c`'s link attributes and validation
//! (`macvlan_validate`, `macvlan_common_newlink`, `macvlan_changelink`), source mode's
//! allowlists, passthru, and `macvlan_addr_busy`.

use super::errors::err;
use super::{slot_insert, ConfigError, Engine, Errno, LinkRef, Master, Network, Port};
use crate::fwd::types::*;
use crate::wire::MacAddr;
use ahash::AHashMap;
use std::hash::{BuildHasher, Hasher};

/// Validated macvlan attributes: mode, source-list operation, source MACs.
type ValidMacvlanAttrs = (Option<MacvlanMode>, Option<MacaddrMode>, Vec<MacAddr>);

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

/// The macvlan default broadcast queue length.
pub const MACVLAN_DEFAULT_BC_QUEUE_LEN: u32 = 1000;

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

    pub(super) fn rebuild_sources(&mut self, nid: NetworkId) {
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
        let pid = PortId(slot_insert(&mut self.ports, std::sync::Arc::new(port)));
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

    pub(super) fn macvlan_addr_busy(&self, net: &Network, mac: MacAddr, except: PortId) -> bool {
        // macvlan_addr_busy: the lower's own MAC (not on a passthru port) or an UP sibling's.
        if !net.passthru && mac == self.master_mac(net) {
            return true;
        }
        net.macs.get(&mac).is_some_and(|p| *p != except)
    }
}
