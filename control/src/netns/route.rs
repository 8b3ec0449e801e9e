//! Routes, route lookups (`ip route get`) and neighbour entries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{NetnsError, Result, Rtnl};

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;

/// Kind of a route (`rtm_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// A gateway or directly connected route.
    Unicast,
    /// A local address of this namespace.
    Local,
    /// A broadcast address.
    Broadcast,
    /// Anycast.
    Anycast,
    /// Multicast.
    Multicast,
    /// Silently dropped.
    Blackhole,
    /// Unreachable.
    Unreachable,
    /// Administratively prohibited.
    Prohibit,
    /// Continue lookup in another table.
    Throw,
    /// Another type (raw value).
    Other(u8),
}

impl From<RouteType> for RouteKind {
    fn from(t: RouteType) -> Self {
        match t {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local => RouteKind::Local,
            RouteType::Broadcast => RouteKind::Broadcast,
            RouteType::Anycast => RouteKind::Anycast,
            RouteType::Multicast => RouteKind::Multicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            RouteType::Unreachable => RouteKind::Unreachable,
            RouteType::Prohibit => RouteKind::Prohibit,
            RouteType::Throw => RouteKind::Throw,
            other => RouteKind::Other(u8::from(other)),
        }
    }
}

/// A route in the main table: what [`Rtnl::route_add`] installs and [`Rtnl::route_list`]
/// reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination network address (`0.0.0.0` / `::` with prefix 0 for a default route).
    pub dst: IpAddr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Next hop, if any (`via`).
    pub gateway: Option<IpAddr>,
    /// Output interface index (`dev`).
    pub oif: Option<u32>,
    /// Metric (`RTA_PRIORITY`), if set.
    pub metric: Option<u32>,
    /// Scope (`0` universe, `253` link, `254` host). For [`Rtnl::route_add`] it is chosen
    /// as `ip route add` does: link for IPv4 routes without a gateway, universe otherwise.
    pub scope: u8,
}

impl Route {
    /// `default via GW [dev OIF]` (IPv4 or IPv6 from the gateway's family).
    pub fn default_via(gateway: IpAddr, oif: Option<u32>) -> Route {
        Route {
            dst: unspecified(gateway.is_ipv6()),
            prefix_len: 0,
            gateway: Some(gateway),
            oif,
            metric: None,
            scope: 0,
        }
    }

    /// `default dev OIF` (scope link for IPv4): the ipvlan L3 style default route.
    pub fn default_dev(ipv6: bool, oif: u32) -> Route {
        Route {
            dst: unspecified(ipv6),
            prefix_len: 0,
            gateway: None,
            oif: Some(oif),
            metric: None,
            scope: if ipv6 { 0 } else { 253 },
        }
    }

    /// `DST/PREFIX [via GW] [dev OIF]`.
    pub fn to(dst: IpAddr, prefix_len: u8, gateway: Option<IpAddr>, oif: Option<u32>) -> Route {
        let scope = if gateway.is_none() && dst.is_ipv4() {
            253
        } else {
            0
        };
        Route {
            dst,
            prefix_len,
            gateway,
            oif,
            metric: None,
            scope,
        }
    }

    /// True for a default route.
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }
}

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// The answer of [`Rtnl::route_get`] (like `ip route get`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteLookup {
    /// Route type: unicast, local, broadcast, ...
    pub kind: RouteKind,
    /// Next hop; `None` means the destination is on-link.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// Table the route came from, when reported.
    pub table: Option<u32>,
}

/// State of a neighbour entry (`NUD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighState {
    /// Resolution in progress.
    Incomplete,
    /// Confirmed recently.
    Reachable,
    /// Valid but unconfirmed.
    Stale,
    /// Waiting before probing.
    Delay,
    /// Being probed.
    Probe,
    /// Resolution failed.
    Failed,
    /// No ARP needed (e.g. NOARP device).
    NoArp,
    /// Static entry.
    Permanent,
    /// No state.
    None,
    /// Another value (raw).
    Other(u16),
}

impl NeighState {
    /// True if the entry's link-layer address can be used to send now.
    pub fn is_usable(self) -> bool {
        matches!(
            self,
            NeighState::Reachable
                | NeighState::Stale
                | NeighState::Delay
                | NeighState::Probe
                | NeighState::Permanent
                | NeighState::NoArp
        )
    }
}

impl From<NeighbourState> for NeighState {
    fn from(s: NeighbourState) -> Self {
        match s {
            NeighbourState::Incomplete => NeighState::Incomplete,
            NeighbourState::Reachable => NeighState::Reachable,
            NeighbourState::Stale => NeighState::Stale,
            NeighbourState::Delay => NeighState::Delay,
            NeighbourState::Probe => NeighState::Probe,
            NeighbourState::Failed => NeighState::Failed,
            NeighbourState::Noarp => NeighState::NoArp,
            NeighbourState::Permanent => NeighState::Permanent,
            NeighbourState::None => NeighState::None,
            other => NeighState::Other(u16::from(other)),
        }
    }
}

/// A neighbour (ARP / NDP) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub ifindex: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address, once known.
    pub mac: Option<[u8; 6]>,
    /// Entry state.
    pub state: NeighState,
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn from_route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn route_msg(r: &Route) -> Result<RouteMessage> {
    let max = if r.dst.is_ipv4() { 32 } else { 128 };
    if r.prefix_len > max {
        return Err(NetnsError::InvalidArgument(format!(
            "route prefix /{} for {}: at most /{max}",
            r.prefix_len, r.dst
        )));
    }
    if let Some(gw) = r.gateway {
        if gw.is_ipv4() != r.dst.is_ipv4() {
            return Err(NetnsError::InvalidArgument(format!(
                "gateway {gw} is not of the same family as {}",
                r.dst
            )));
        }
    }
    let mut m = RouteMessage::default();
    m.header.address_family = family(&r.dst);
    m.header.destination_prefix_length = r.prefix_len;
    m.header.table = RT_TABLE_MAIN as u8;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::from(r.scope);
    m.header.kind = RouteType::Unicast;
    if r.prefix_len > 0 {
        m.attributes
            .push(RouteAttribute::Destination(route_addr(r.dst)));
    }
    if let Some(gw) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
    }
    if let Some(oif) = r.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = r.metric {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    Ok(m)
}

fn describe(r: &Route) -> String {
    let mut s = format!("{}/{}", r.dst, r.prefix_len);
    if r.is_default() {
        s = "default".to_string();
    }
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev {oif}"));
    }
    s
}

impl Rtnl {
    /// Adds a route to the main table (`ip route add`). Fails if it exists.
    pub fn route_add(&mut self, route: &Route) -> Result<()> {
        let m = route_msg(route)?;
        let op = format!("add route {}", describe(route));
        self.ack(
            &op,
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds or replaces a route in the main table (`ip route replace`).
    pub fn route_replace(&mut self, route: &Route) -> Result<()> {
        let m = route_msg(route)?;
        let op = format!("replace route {}", describe(route));
        self.ack(
            &op,
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Deletes a route from the main table (`ip route del`): matches destination, and the
    /// gateway and interface when given.
    pub fn route_del(&mut self, route: &Route) -> Result<()> {
        let mut m = route_msg(route)?;
        m.header.scope = RouteScope::NoWhere;
        m.header.protocol = RouteProtocol::Unspec;
        let op = format!("delete route {}", describe(route));
        self.ack(&op, RouteNetlinkMessage::DelRoute(m), 0)
    }

    /// The unicast routes of the main table for one family (`ip [-6] route`).
    pub fn route_list(&mut self, ipv6: bool) -> Result<Vec<Route>> {
        let mut q = RouteMessage::default();
        q.header.address_family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let replies = self.dump("list routes", RouteNetlinkMessage::GetRoute(q))?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewRoute(m) = r else {
                continue;
            };
            let mut table = u32::from(m.header.table);
            let mut route = Route {
                dst: unspecified(ipv6),
                prefix_len: m.header.destination_prefix_length,
                gateway: None,
                oif: None,
                metric: None,
                scope: u8::from(m.header.scope),
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(d) => {
                        if let Some(ip) = from_route_addr(d) {
                            route.dst = ip;
                        }
                    }
                    RouteAttribute::Gateway(g) => route.gateway = from_route_addr(g),
                    RouteAttribute::Oif(o) => route.oif = Some(*o),
                    RouteAttribute::Priority(p) => route.metric = Some(*p),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table == RT_TABLE_MAIN && m.header.kind == RouteType::Unicast {
                out.push(route);
            }
        }
        Ok(out)
    }

    /// Asks the kernel how it would send to `dst` (`ip route get DST [oif IF]`).
    /// `Ok(None)` when there is no route (`ENETUNREACH`/`EHOSTUNREACH`).
    pub fn route_get(&mut self, dst: IpAddr, oif: Option<u32>) -> Result<Option<RouteLookup>> {
        let mut q = RouteMessage::default();
        q.header.address_family = family(&dst);
        q.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        q.attributes
            .push(RouteAttribute::Destination(route_addr(dst)));
        if let Some(oif) = oif {
            q.attributes.push(RouteAttribute::Oif(oif));
        }
        let op = format!("route lookup for {dst}");
        let replies = match self.get(&op, RouteNetlinkMessage::GetRoute(q)) {
            Err(NetnsError::Netlink { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
                ) =>
            {
                return Ok(None)
            }
            r => r?,
        };
        for r in replies {
            let RouteNetlinkMessage::NewRoute(m) = r else {
                continue;
            };
            let mut out = RouteLookup {
                kind: RouteKind::from(m.header.kind),
                gateway: None,
                oif: None,
                prefsrc: None,
                table: Some(u32::from(m.header.table)),
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Gateway(g) => out.gateway = from_route_addr(g),
                    RouteAttribute::Oif(o) => out.oif = Some(*o),
                    RouteAttribute::PrefSource(p) => out.prefsrc = from_route_addr(p),
                    RouteAttribute::Table(t) => out.table = Some(*t),
                    _ => {}
                }
            }
            if matches!(
                out.kind,
                RouteKind::Unreachable | RouteKind::Prohibit | RouteKind::Blackhole
            ) {
                return Ok(None);
            }
            return Ok(Some(out));
        }
        Ok(None)
    }

    /// The neighbour entry for `ip` on link `ifindex` (`ip neigh get IP dev IF`);
    /// `Ok(None)` if the kernel has none. A missing entry is not resolved by this call:
    /// use [`Rtnl::neigh_resolve`] to start resolution, then poll.
    pub fn neigh_get(&mut self, ifindex: u32, ip: IpAddr) -> Result<Option<Neighbour>> {
        let mut q = NeighbourMessage::default();
        q.header.family = family(&ip);
        q.header.ifindex = ifindex;
        q.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(ip)));
        let op = format!("neighbour lookup for {ip} on link {ifindex}");
        let replies = match self.get(&op, RouteNetlinkMessage::GetNeighbour(q)) {
            Err(NetnsError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(None)
            }
            r => r?,
        };
        Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewNeighbour(n) => Some(neighbour_from(n, ip)),
            _ => None,
        }))
    }

    /// Starts (or refreshes) resolution of `ip` on link `ifindex`: creates the entry if
    /// needed and sends an ARP request / neighbour solicitation, like a packet would
    /// (`RTM_NEWNEIGH` with `NTF_USE`). Returns at once; poll [`Rtnl::neigh_get`] for the
    /// answer.
    pub fn neigh_resolve(&mut self, ifindex: u32, ip: IpAddr) -> Result<()> {
        let mut q = NeighbourMessage::default();
        q.header.family = family(&ip);
        q.header.ifindex = ifindex;
        q.header.flags = NeighbourFlags::Use;
        q.header.state = NeighbourState::None;
        q.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(ip)));
        let op = format!("neighbour resolution of {ip} on link {ifindex}");
        self.ack(
            &op,
            RouteNetlinkMessage::NewNeighbour(q),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }
}

fn neighbour_from(n: &NeighbourMessage, ip: IpAddr) -> Neighbour {
    let mut mac = None;
    let mut addr = ip;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(&l[..]).ok(),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => addr = IpAddr::V4(*v4),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => addr = IpAddr::V6(*v6),
            _ => {}
        }
    }
    Neighbour {
        ifindex: n.header.ifindex,
        ip: addr,
        mac,
        state: NeighState::from(n.header.state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_constructors_pick_scope_like_iproute2() {
        let r = Route::default_dev(false, 3);
        assert_eq!((r.scope, r.prefix_len), (253, 0));
        assert_eq!(r.dst, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(Route::default_dev(true, 3).scope, 0);
        let r = Route::default_via("2001:db8::1".parse().unwrap(), Some(2));
        assert_eq!(r.dst, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(r.scope, 0);
        assert_eq!(
            Route::to("198.51.100.0".parse().unwrap(), 24, None, Some(1)).scope,
            253
        );
    }

    #[test]
    fn route_msg_rejects_mixed_families_and_bad_prefix() {
        let mut r = Route::default_via("192.0.2.1".parse().unwrap(), None);
        r.dst = "::".parse().unwrap();
        assert!(route_msg(&r).is_err());
        let r = Route::to("192.0.2.0".parse().unwrap(), 33, None, None);
        assert!(route_msg(&r).is_err());
    }
}
