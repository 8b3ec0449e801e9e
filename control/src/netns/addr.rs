//! Interface addresses (IPv4 and IPv6).

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{NetnsError, Result, Rtnl};

/// `IFA_F_*` flags of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AddrFlags(pub u32);

impl AddrFlags {
    /// `IFA_F_SECONDARY`.
    pub const SECONDARY: u32 = 0x01;
    /// `IFA_F_NODAD`: no duplicate address detection.
    pub const NODAD: u32 = 0x02;
    /// `IFA_F_DADFAILED`: DAD found a duplicate.
    pub const DADFAILED: u32 = 0x08;
    /// `IFA_F_DEPRECATED`.
    pub const DEPRECATED: u32 = 0x20;
    /// `IFA_F_TENTATIVE`: DAD still running.
    pub const TENTATIVE: u32 = 0x40;
    /// `IFA_F_PERMANENT`: configured (not autoconfigured).
    pub const PERMANENT: u32 = 0x80;

    /// True if DAD is still running on the address.
    pub fn is_tentative(self) -> bool {
        self.0 & Self::TENTATIVE != 0
    }

    /// True if DAD failed.
    pub fn dad_failed(self) -> bool {
        self.0 & Self::DADFAILED != 0
    }
}

/// An address on a link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddrInfo {
    /// Interface index.
    pub ifindex: u32,
    /// The local address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Scope (`0` universe, `253` link, `254` host).
    pub scope: u8,
    /// `IFA_F_*` flags.
    pub flags: AddrFlags,
}

/// Options for [`Rtnl::addr_add`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrOptions {
    /// IPv6: skip duplicate address detection (`nodad`), so the address is usable at once.
    pub nodad: bool,
}

fn family_of(addr: &IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn check_prefix(addr: &IpAddr, prefix_len: u8) -> Result<()> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(NetnsError::InvalidArgument(format!(
            "prefix length /{prefix_len} for {addr}: at most /{max}"
        )));
    }
    Ok(())
}

/// The directed broadcast of `addr/prefix_len`, as Docker (vishvananda/netlink) sets it.
fn broadcast(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len >= 31 {
        return None;
    }
    let host_mask = u32::MAX >> prefix_len;
    Some(Ipv4Addr::from(u32::from(addr) | host_mask))
}

fn addr_msg(ifindex: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(&addr);
    m.header.prefix_len = prefix_len;
    m.header.index = ifindex;
    m.header.scope = AddressScope::Universe;
    if addr.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(addr));
    }
    m.attributes.push(AddressAttribute::Address(addr));
    m
}

impl AddrInfo {
    pub(super) fn from_message(m: &AddressMessage) -> Option<AddrInfo> {
        let mut local = None;
        let mut address = None;
        let mut flags = u32::from(m.header.flags.bits());
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = f.bits(),
                _ => {}
            }
        }
        Some(AddrInfo {
            ifindex: m.header.index,
            // IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS otherwise.
            addr: local.or(address)?,
            prefix_len: m.header.prefix_len,
            scope: u8::from(m.header.scope),
            flags: AddrFlags(flags),
        })
    }
}

impl Rtnl {
    /// Adds `addr/prefix_len` to link `ifindex` (`ip addr add`). IPv4 addresses get the
    /// subnet's broadcast address (for prefixes shorter than /31), as Docker sets them.
    pub fn addr_add(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
        opts: AddrOptions,
    ) -> Result<()> {
        check_prefix(&addr, prefix_len)?;
        let mut m = addr_msg(ifindex, addr, prefix_len);
        if let IpAddr::V4(v4) = addr {
            if let Some(b) = broadcast(v4, prefix_len) {
                m.attributes.push(AddressAttribute::Broadcast(b));
            }
        }
        if opts.nodad {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let op = format!("add address {addr}/{prefix_len} to link {ifindex}");
        self.ack(
            &op,
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes `addr/prefix_len` from link `ifindex` (`ip addr del`).
    pub fn addr_del(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        check_prefix(&addr, prefix_len)?;
        let m = addr_msg(ifindex, addr, prefix_len);
        let op = format!("delete address {addr}/{prefix_len} from link {ifindex}");
        self.ack(&op, RouteNetlinkMessage::DelAddress(m), 0)
    }

    /// The addresses of link `ifindex` (`None`: of every link), IPv4 then IPv6.
    pub fn addr_list(&mut self, ifindex: Option<u32>) -> Result<Vec<AddrInfo>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = AddressMessage::default();
            m.header.family = family;
            m.header.index = ifindex.unwrap_or(0);
            let replies = self.dump("list addresses", RouteNetlinkMessage::GetAddress(m))?;
            out.extend(replies.iter().filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) => AddrInfo::from_message(a),
                _ => None,
            }));
        }
        if let Some(i) = ifindex {
            out.retain(|a| a.ifindex == i);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_matches_docker() {
        assert_eq!(
            broadcast(Ipv4Addr::new(192, 0, 2, 7), 24),
            Some(Ipv4Addr::new(192, 0, 2, 255))
        );
        assert_eq!(
            broadcast(Ipv4Addr::new(198, 51, 100, 1), 0),
            Some(Ipv4Addr::BROADCAST)
        );
        assert_eq!(broadcast(Ipv4Addr::new(192, 0, 2, 7), 31), None);
        assert_eq!(broadcast(Ipv4Addr::new(192, 0, 2, 7), 32), None);
    }

    #[test]
    fn prefix_bounds() {
        assert!(check_prefix(&"192.0.2.1".parse().unwrap(), 33).is_err());
        assert!(check_prefix(&"2001:db8::1".parse().unwrap(), 128).is_ok());
        assert!(check_prefix(&"2001:db8::1".parse().unwrap(), 129).is_err());
    }
}
