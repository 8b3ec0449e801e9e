//! ipvlan network configuration: `ipvlan_main.c`'s link attributes and validation
//! (`ipvlan_nl_validate`, `ipvlan_link_new`, `ipvlan_nl_changelink`) and the master's address
//! table.

use super::errors::err;
use super::{slot_insert, ConfigError, Engine, Errno, LinkRef, Port};
use crate::fwd::types::*;
use ahash::{AHashMap, AHashSet};
use std::net::IpAddr;

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

/// Who owns an address in an ipvlan lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A port.
    Port(PortId),
    /// The parent's own stack.
    Host,
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

    pub(super) fn insert(&mut self, a: IpAddr, o: Owner) {
        match a {
            IpAddr::V4(a) => self.v4.insert(a.to_bits(), o),
            IpAddr::V6(a) => self.v6.insert(a.to_bits(), o),
        };
    }

    pub(super) fn remove(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(a) => self.v4.remove(&a.to_bits()),
            IpAddr::V6(a) => self.v6.remove(&a.to_bits()),
        };
    }
}

impl Engine {
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
        let pid = PortId(slot_insert(&mut self.ports, std::sync::Arc::new(port)));
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
}
