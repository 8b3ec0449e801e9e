//! Facts about the host namespace the daemon needs: parent interfaces (MAC, MTU, state,
//! addresses) and the prefixes dynamic subnets must avoid. Behind a trait so the control
//! logic is testable without root.

use std::net::IpAddr;

use crate::ipam::Prefix;
use crate::netns::{NeighState, Netns, RouteKind, Rtnl};
use uvlan_dataplane::fwd::{LinkType, ParentSpec};
use uvlan_dataplane::wire::MacAddr;

use super::options::HostIf;

/// `ARPHRD_ETHER`.
const ARPHRD_ETHER: u16 = 1;

/// One host interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLink {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Its MAC, if Ethernet-like.
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Link type class.
    pub kind: HostIf,
    /// Its own addresses.
    pub addrs: Vec<IpAddr>,
}

impl HostLink {
    /// The engine's view of this interface as a parent.
    pub fn parent_spec(&self) -> ParentSpec {
        ParentSpec {
            name: self.name.clone(),
            mac: self.mac.unwrap_or_default(),
            mtu: self.mtu,
            up: self.up,
            link_type: match self.kind {
                HostIf::Loopback => LinkType::Loopback,
                HostIf::Ether | HostIf::Missing => LinkType::Ether,
                HostIf::Other(t) => LinkType::Other(t),
            },
            addrs: self.addrs.clone(),
        }
    }
}

/// Host facts.
pub trait HostNet: Send {
    /// The interface `name` in the host namespace, if it exists.
    fn link(&mut self, name: &str) -> Result<Option<HostLink>, String>;
    /// Prefixes dynamic subnets must avoid: on-link IPv4 routes and the nameservers of
    /// `/etc/resolv.conf` (Docker's `InferReservedNetworks`).
    fn reserved_prefixes(&mut self) -> Vec<Prefix>;
    /// The interface of the IPv4 default route (the CNI plugins' default `master`).
    fn default_route_link(&mut self) -> Option<String> {
        None
    }
}

/// The host namespace through netlink.
pub struct RtnlHost {
    rtnl: Rtnl,
}

impl RtnlHost {
    /// Opens a netlink socket in the daemon's own namespace.
    pub fn open() -> Result<RtnlHost, String> {
        let ns = Netns::current().map_err(|e| e.to_string())?;
        let rtnl = Rtnl::open(&ns).map_err(|e| e.to_string())?;
        Ok(RtnlHost { rtnl })
    }
}

impl HostNet for RtnlHost {
    fn link(&mut self, name: &str) -> Result<Option<HostLink>, String> {
        let info = match self.rtnl.link_get(name) {
            Ok(i) => i,
            Err(crate::netns::NetnsError::LinkNotFound { .. }) => return Ok(None),
            Err(crate::netns::NetnsError::InvalidArgument(_)) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let addrs = self
            .rtnl
            .addr_list(Some(info.index))
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|a| a.addr)
            .collect();
        let kind = if info.is_loopback() {
            HostIf::Loopback
        } else if info.link_type == ARPHRD_ETHER && info.mac.is_some() {
            HostIf::Ether
        } else {
            HostIf::Other(info.link_type)
        };
        let up = info.is_up();
        Ok(Some(HostLink {
            index: info.index,
            name: info.name,
            mac: info.mac.map(MacAddr),
            mtu: info.mtu,
            up,
            kind,
            addrs,
        }))
    }

    fn default_route_link(&mut self) -> Option<String> {
        let routes = self.rtnl.route_list(false).ok()?;
        let oif = routes.iter().find(|r| r.is_default())?.oif?;
        self.rtnl.link_get_by_index(oif).ok().map(|l| l.name)
    }

    fn reserved_prefixes(&mut self) -> Vec<Prefix> {
        let mut out = Vec::new();
        if let Ok(routes) = self.rtnl.route_list(false) {
            for r in routes {
                if r.gateway.is_none() && r.prefix_len > 0 {
                    if let Some(p) = Prefix::new(r.dst, r.prefix_len) {
                        out.push(p.masked());
                    }
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") {
            out.extend(nameservers(&text));
        }
        out
    }
}

/// The `nameserver` addresses of a resolv.conf, as /32 or /128 prefixes.
pub fn nameservers(text: &str) -> Vec<Prefix> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .filter_map(|a| Prefix::new(a, if a.is_ipv4() { 32 } else { 128 }))
        .collect()
}

/// How the host would reach a routed destination (the answer the dataplane needs for
/// ipvlan L3/L3S egress; mirrors `run::NextHop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopAnswer {
    /// Send with this destination MAC.
    Mac(MacAddr),
    /// Resolution started: drop and retry later.
    Pending,
    /// The destination is the host itself.
    Local,
    /// A broadcast/multicast/other route type.
    BadRouteType,
    /// No route.
    Unreachable,
}

/// Resolves `dst` out of `parent_ifindex` with the host's routing and neighbour tables
/// (`ip route get`, then `ip neigh get`, starting resolution when there is no usable entry).
pub fn resolve_next_hop(rtnl: &mut Rtnl, parent_ifindex: u32, dst: IpAddr) -> HopAnswer {
    let route = match rtnl.route_get(dst, Some(parent_ifindex)) {
        Ok(Some(r)) => r,
        Ok(None) | Err(_) => return HopAnswer::Unreachable,
    };
    match route.kind {
        RouteKind::Unicast => {}
        RouteKind::Local => return HopAnswer::Local,
        _ => return HopAnswer::BadRouteType,
    }
    let hop = route.gateway.unwrap_or(dst);
    let oif = route.oif.unwrap_or(parent_ifindex);
    match rtnl.neigh_get(oif, hop) {
        Ok(Some(n)) if n.state.is_usable() || n.state == NeighState::NoArp => {
            if let Some(mac) = n.mac {
                return HopAnswer::Mac(MacAddr(mac));
            }
        }
        _ => {}
    }
    match rtnl.neigh_resolve(oif, hop) {
        Ok(()) => HopAnswer::Pending,
        Err(_) => HopAnswer::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_reserved() {
        let t = "# c\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch x\nnameserver bad\n";
        let got: Vec<String> = nameservers(t).iter().map(|p| p.to_string()).collect();
        assert_eq!(got, vec!["192.0.2.53/32", "fe80::1/128"]);
    }
}
