//! The route stage: ipvlan L3/L3S egress through the host's routing and neighbour tables.
//!
//! `ipvlan_process_v4_outbound` / `ipvlan_process_v6_outbound` strip the L2 header, look the
//! destination up with `ip_route_output_flow` / `ip6_route_output` in the master's namespace
//! with `oif = master`, and send the packet with `ip_local_out`, whose `neigh_output` fills in
//! the next hop's MAC. Those tables belong to the host, so the engine asks them through
//! [`Routes`]; the answer ([`NextHop`]) decides the frame's fate like every other branch of
//! [`Engine::decide`](super::Engine::decide):
//!
//! | answer | fate |
//! |---|---|
//! | [`NextHop::Mac`] | a [`Target::Routed`](super::Target::Routed) output carrying the next hop's MAC |
//! | [`NextHop::Local`] (`RTN_LOCAL`) | the parent's own stack ([`Target::HostStack`](super::Target::HostStack)), as for the parent's own addresses (C37) |
//! | [`NextHop::BadRouteType`] | drop, [`DropReason::L3RouteType`](super::DropReason::L3RouteType) (C29) |
//! | [`NextHop::Pending`] | drop, [`DropReason::NeighbourPending`](super::DropReason::NeighbourPending) |
//! | [`NextHop::Unreachable`] | drop, [`DropReason::RouteUnreachable`](super::DropReason::RouteUnreachable) |
//!
//! The engine stays pure: it calls the trait and nothing else. The datapath's implementation
//! (`run`) is a next-hop cache in front of the control plane's netlink resolver; the trace run
//! through `DataplaneHandle::trace` uses that very object, so it sees the answers the datapath
//! sees. Tests script the answers with a closure (`|parent, dst| NextHop::…`).

use super::observe::{step, Detail, Tracer};
use super::ParentId;
use crate::wire::MacAddr;
use std::net::IpAddr;

/// How the host's tables say to reach a routed destination (ipvlan L3/L3S egress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// A unicast route and a usable neighbour entry: send with dst MAC = this, src MAC = the
    /// parent's MAC.
    Mac(MacAddr),
    /// A unicast route whose next hop has no usable neighbour entry yet: the host is resolving
    /// it (ARP/NS). The kernel queues the packet meanwhile; uvlan drops it.
    Pending,
    /// The route is `RTN_LOCAL`: the destination is the host itself (C37).
    Local,
    /// The route type is neither unicast nor local (broadcast, multicast, anycast; C29).
    BadRouteType,
    /// No route: the lookup failed (IPv6 without a route, a parent the host does not have).
    Unreachable,
}

impl NextHop {
    /// What the host's tables answered, in words (for the trace).
    pub fn describe(self) -> &'static str {
        match self {
            NextHop::Mac(_) => "a unicast route with a resolved next hop",
            NextHop::Pending => "a unicast route; the next hop is being resolved (ARP/NS)",
            NextHop::Local => "RTN_LOCAL: the destination is the host itself",
            NextHop::BadRouteType => "a route type that is neither unicast nor local",
            NextHop::Unreachable => "no route",
        }
    }
}

/// The host's routing and neighbour tables, as the route stage asks them.
///
/// Implementations may do I/O (netlink) and keep a cache; the engine only calls
/// [`Routes::next_hop`], once per routed frame.
pub trait Routes {
    /// The next hop for `dst` routed out of `parent` (`oif = parent`) in the parent's
    /// namespace.
    fn next_hop(&mut self, parent: ParentId, dst: IpAddr) -> NextHop;
}

/// Any `FnMut(ParentId, IpAddr) -> NextHop` answers like a table (scripted answers in tests
/// and tools).
impl<F: FnMut(ParentId, IpAddr) -> NextHop> Routes for F {
    #[inline]
    fn next_hop(&mut self, parent: ParentId, dst: IpAddr) -> NextHop {
        self(parent, dst)
    }
}

/// A host without routes: every destination is [`NextHop::Unreachable`]. For engines that no
/// datapath runs (configuration-only dataplanes, tools), where nothing can be routed.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRoutes;

impl Routes for NoRoutes {
    #[inline]
    fn next_hop(&mut self, _parent: ParentId, _dst: IpAddr) -> NextHop {
        NextHop::Unreachable
    }
}

/// The route lookup of `ipvlan_process_v4_outbound` / `ipvlan_process_v6_outbound`.
#[inline]
fn lookup_fn(dst: IpAddr) -> &'static str {
    match dst {
        IpAddr::V4(_) => "ip_route_output_flow",
        IpAddr::V6(_) => "ip6_route_output",
    }
}

/// Asks `routes` for the next hop of `dst` out of `parent`, recording the route lookup and,
/// for a unicast route, the neighbour step.
#[inline]
pub(crate) fn resolve<R: Routes + ?Sized, T: Tracer>(
    routes: &mut R,
    t: &mut T,
    parent: ParentId,
    dst: IpAddr,
) -> NextHop {
    let answer = routes.next_hop(parent, dst);
    step!(
        t,
        Route,
        lookup_fn(dst),
        Detail::Route {
            parent,
            dst,
            answer
        }
    );
    if matches!(answer, NextHop::Mac(_) | NextHop::Pending) {
        step!(t, Route, "neigh_output", Detail::Neighbour(answer));
    }
    answer
}
