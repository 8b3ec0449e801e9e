//! Endpoint plumbing inside a namespace: the TAP, its MAC/MTU/addresses/routes, and the
//! address watcher that mirrors later changes into the engine.
//!
//! Routes follow Docker ≤ 27, the version the seed documents describe (`docs/README.md`,
//! "What an endpoint gets"):
//! - ipvlan l3/l3s: `default dev eth0` for each family the endpoint has, always (also
//!   without a parent, and with `--internal`);
//! - ipvlan l2 and macvlan: `default via GATEWAY` when the network has a parent, is not
//!   `--internal`, and the endpoint's subnet has a gateway; otherwise only the connected
//!   route the kernel adds with the address.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::ipam::EndpointAddrs;
use crate::netns::{
    set_ipv6_disabled, AddrGenMode, AddrOptions, LinkInfo, Netns, NetnsError, Route, Rtnl,
    IPV4_DEVCONF_ARP_NOTIFY,
};
use uvlan_dataplane::fwd::{Driver, IpvlanMode};
use uvlan_dataplane::port::fast_path::FastLinks;
use uvlan_dataplane::port::tap::{Tap, TapError, TapOptions};
use uvlan_dataplane::wire::MacAddr;

/// The default routes an endpoint gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan {
    /// IPv4 default route, if any.
    pub v4: Option<DefaultRoute>,
    /// IPv6 default route, if any.
    pub v6: Option<DefaultRoute>,
}

/// One default route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultRoute {
    /// `default via GW dev IF`.
    Via(IpAddr),
    /// `default dev IF` (ipvlan L3 style).
    Dev,
}

/// The routes of an endpoint (see the module docs).
pub fn route_plan(
    driver: Driver,
    ipvlan_mode: Option<IpvlanMode>,
    has_parent: bool,
    internal: bool,
    addrs: &EndpointAddrs,
) -> RoutePlan {
    let l3 = driver == Driver::Ipvlan && ipvlan_mode.is_some_and(IpvlanMode::is_l3);
    let pick = |a: Option<crate::ipam::EndpointAddr>| {
        let a = a?;
        if l3 {
            Some(DefaultRoute::Dev)
        } else if has_parent && !internal {
            a.gateway.map(DefaultRoute::Via)
        } else {
            None
        }
    };
    RoutePlan {
        v4: pick(addrs.v4),
        v6: pick(addrs.v6),
    }
}

/// Everything needed to build an endpoint's interface.
#[derive(Clone, Debug)]
pub struct IfPlan {
    /// Interface name inside (`eth0`).
    pub ifname: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses.
    pub addrs: EndpointAddrs,
    /// ipvlan: the per-slave link-local (EUI-48 with `dev_id`), set by hand with
    /// `addr_gen_mode none` so ports sharing one MAC get distinct link-locals.
    pub link_local: Option<Ipv6Addr>,
    /// ipvlan L3/L3S: `arp off`.
    pub noarp: bool,
    /// ipvlan: `addrgenmode none` (all ports share one MAC, so EUI-64 link-locals would
    /// collide; the per-port one is `link_local`).
    pub addr_gen_none: bool,
    /// A host interface (`network connect --host`): addresses as /32 and /128, so that the
    /// host gets no connected route for the network's subnets (the parent usually has one).
    pub host_scope: bool,
    /// Default routes.
    pub routes: RoutePlan,
    /// Routes a front end chose (CNI: the IPAM result's), installed instead of `routes`.
    pub custom_routes: Option<Vec<CustomRoute>>,
    /// The interface's alias marking it as this endpoint's ([`mark`]).
    pub mark: String,
}

/// The alias every endpoint's interface carries from its creation on: `uvlan:<EID>@<HOST>`,
/// with the endpoint ID and the first 12 hex digits of the daemon's host ID (so that a
/// daemon with another state directory never takes another's interfaces for its own). It
/// follows the device through Docker's move and rename, so a start finds every interface a
/// daemon made, whatever its name, in its own namespace and in every namespace its store
/// names.
pub fn mark(ep_id: &str, host: &str) -> String {
    format!("{MARK_PREFIX}{ep_id}@{host}")
}

const MARK_PREFIX: &str = "uvlan:";

/// The endpoint ID and host of a [`mark`].
pub fn parse_mark(alias: &str) -> Option<(&str, &str)> {
    alias.strip_prefix(MARK_PREFIX)?.split_once('@')
}

/// Tells a teardown when the endpoint's interface has left its namespace: the address
/// watcher reports its removal, or the thread closing the TAP is done.
#[derive(Debug, Default)]
pub struct Gone {
    /// (a teardown expects the removal, the interface is gone).
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Gone {
    fn state(&self) -> std::sync::MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A teardown is removing the interface: its removal is no news to log.
    pub fn expect(&self) {
        self.state().0 = true;
    }

    /// Whether a teardown removes the interface.
    pub fn expected(&self) -> bool {
        self.state().0
    }

    /// The interface is gone.
    pub fn done(&self) {
        self.state().1 = true;
        self.cv.notify_all();
    }

    /// Waits up to `timeout` for [`Gone::done`]; true if it came.
    pub fn wait(&self, timeout: Duration) -> bool {
        let g = self.state();
        let (g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |s| !s.1)
            .unwrap_or_else(|p| p.into_inner());
        g.1
    }
}

/// One route a front end asks for: `DST/LEN [via GW] dev IF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustomRoute {
    /// Destination network address.
    pub dst: IpAddr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Next hop; `None`: directly connected.
    pub gateway: Option<IpAddr>,
}

fn nerr(what: &str) -> impl FnOnce(NetnsError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// TAP options for endpoints: persistent (survives a daemon restart), vnet_hdr offloads.
pub fn tap_options(ifname: &str) -> TapOptions {
    TapOptions {
        name: Some(ifname.to_string()),
        persist: true,
        ..TapOptions::default()
    }
}

/// Creates the TAP inside the namespace and configures it as `plan` says. On failure the
/// TAP is removed again.
pub fn create_interface(netns: &Netns, netns_path: &Path, plan: &IfPlan) -> Result<Tap, String> {
    let tap = Tap::create_in_netns(netns_path, &tap_options(&plan.ifname))
        .map_err(|e| format!("cannot create the endpoint's TAP {}: {e}", plan.ifname))?;
    match configure_interface(netns, tap.ifindex(), plan) {
        Ok(()) => Ok(tap),
        Err(e) => {
            destroy_tap(tap);
            Err(e)
        }
    }
}

/// Applies MAC, MTU, ARP, IPv6 settings, addresses, link up and routes to an interface.
pub fn configure_interface(netns: &Netns, idx: u32, plan: &IfPlan) -> Result<(), String> {
    let mut rtnl = Rtnl::open(netns).map_err(nerr("cannot reach the namespace"))?;
    rtnl.link_set_alias(idx, &plan.mark)
        .map_err(nerr("cannot mark the endpoint's interface"))?;
    rtnl.link_set_mac(idx, plan.mac.0)
        .map_err(nerr("cannot set the endpoint's MAC"))?;
    rtnl.link_set_mtu(idx, plan.mtu)
        .map_err(nerr("cannot set the endpoint's MTU"))?;
    if plan.addr_gen_none {
        rtnl.link_set_addr_gen_mode(idx, AddrGenMode::None)
            .map_err(nerr("cannot set addrgenmode none"))?;
    }
    if plan.noarp {
        rtnl.link_set_arp(idx, false)
            .map_err(nerr("cannot turn ARP off (ipvlan l3/l3s)"))?;
    }
    let has_v6 = plan.addrs.v6.is_some();
    set_ipv6_disabled(netns, &plan.ifname, !has_v6)
        .map_err(nerr("cannot set disable_ipv6 on the endpoint"))?;
    if !plan.noarp {
        // Through netlink: `/proc/sys/net/ipv4` costs milliseconds per new namespace once
        // there are a thousand (see `Rtnl::link_set_inet_conf`).
        rtnl.link_set_inet_conf(idx, &[(IPV4_DEVCONF_ARP_NOTIFY, 1)])
            .map_err(nerr("cannot set arp_notify"))?;
    }
    let nodad = AddrOptions { nodad: true };
    let len = |a: crate::ipam::EndpointAddr| match (plan.host_scope, a.addr) {
        (true, IpAddr::V4(_)) => 32,
        (true, IpAddr::V6(_)) => 128,
        (false, _) => a.prefix_len(),
    };
    if let Some(a) = plan.addrs.v4 {
        rtnl.addr_add(idx, a.addr, len(a), AddrOptions::default())
            .map_err(nerr("cannot add the IPv4 address"))?;
    }
    if let Some(a) = plan.addrs.v6 {
        rtnl.addr_add(idx, a.addr, len(a), nodad)
            .map_err(nerr("cannot add the IPv6 address"))?;
        if let Some(ll) = plan.link_local {
            rtnl.addr_add(idx, IpAddr::V6(ll), 64, nodad)
                .map_err(nerr("cannot add the link-local address"))?;
        }
    }
    rtnl.link_set_up(idx, true)
        .map_err(nerr("cannot bring the endpoint up"))?;
    if let Some(routes) = &plan.custom_routes {
        for r in routes {
            let route = Route::to(r.dst, r.prefix_len, r.gateway, Some(idx));
            rtnl.route_replace(&route).map_err(|e| {
                format!(
                    "cannot add the route {}/{}{}: {e}",
                    r.dst,
                    r.prefix_len,
                    r.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
                )
            })?;
        }
        return Ok(());
    }
    for (route, v6) in [(plan.routes.v4, false), (plan.routes.v6, true)] {
        let r = match route {
            None => continue,
            Some(DefaultRoute::Via(gw)) => Route::default_via(gw, Some(idx)),
            Some(DefaultRoute::Dev) => Route::default_dev(v6, idx),
        };
        rtnl.route_replace(&r)
            .map_err(nerr("cannot add the default route"))?;
    }
    Ok(())
}

/// The names, in the daemon's namespace, of a fast-path endpoint's TAP (its slow path) and
/// of the daemon's end of its veth: `uvs` and `uvv` followed by the endpoint ID's first 10
/// characters.
pub fn fast_names(ep_id: &str) -> (String, String) {
    let t: String = ep_id.chars().take(10).collect();
    (format!("uvs{t}"), format!("uvv{t}"))
}

/// The names [`fast_names`] gave a fast-path endpoint whose TAP is named `tap`: the TAP's
/// and the daemon's end of its veth.
pub fn fast_names_of_tap(tap: &str) -> Vec<String> {
    let veth = tap.strip_prefix("uvs").map(|rest| format!("uvv{rest}"));
    std::iter::once(tap.to_string()).chain(veth).collect()
}

/// An interface of the daemon's namespace that must not talk by itself: IPv6 off, ARP off,
/// up.
fn quiet_up(here: &Netns, rtnl: &mut Rtnl, name: &str, idx: u32) -> Result<(), String> {
    set_ipv6_disabled(here, name, true).map_err(nerr("cannot disable IPv6"))?;
    rtnl.link_set_arp(idx, false)
        .map_err(nerr("cannot turn ARP off"))?;
    rtnl.link_set_up(idx, true)
        .map_err(nerr("cannot bring the link up"))
}

/// Creates a fast-path endpoint (see `uvlan_dataplane::port::fast_path`): a veth pair whose
/// end `plan.ifname` in `netns` is configured as `plan` says, and whose other end, plus a
/// TAP (the slow path, not persistent: it goes with the daemon), sit in the daemon's
/// namespace under [`fast_names`]. Returns the TAP, the daemon-side veth's ifindex and the
/// endpoint interface's ifindex. On failure both are removed again.
pub fn create_fast_interface(
    netns: &Netns,
    plan: &IfPlan,
    ep_id: &str,
) -> Result<(Tap, u32, u32), String> {
    create_fast(FastEnd::Inside(netns), plan, ep_id)
}

/// Like [`create_fast_interface`], but the endpoint's end of the veth pair stays in the
/// daemon's namespace under `name`, for a front end to move into its sandbox (Docker), set
/// as [`create_for_move`] sets a TAP: marked, MAC, MTU and ARP (they follow the device).
pub fn create_fast_for_move(
    name: &str,
    plan: &IfPlan,
    ep_id: &str,
) -> Result<(Tap, u32, u32), String> {
    create_fast(FastEnd::ForMove(name), plan, ep_id)
}

/// Where [`create_fast`] puts the endpoint's end of the veth pair.
enum FastEnd<'a> {
    /// `plan.ifname` in this namespace, configured whole.
    Inside(&'a Netns),
    /// This name in the daemon's namespace, for a front end to move.
    ForMove(&'a str),
}

fn create_fast(end: FastEnd<'_>, plan: &IfPlan, ep_id: &str) -> Result<(Tap, u32, u32), String> {
    let (tap_name, veth_name) = fast_names(ep_id);
    // A teardown of an endpoint with the same names may still be deleting them.
    CLOSING.wait(Some(&[&tap_name, &veth_name]), CLOSING_WAIT);
    let here = Netns::current().map_err(nerr("cannot open the daemon's namespace"))?;
    let mut rtnl = Rtnl::open(&here).map_err(nerr("cannot reach the daemon's namespace"))?;
    let tap = Tap::create(&TapOptions {
        name: Some(tap_name.clone()),
        persist: false,
        ..TapOptions::default()
    })
    .map_err(|e| format!("cannot create the endpoint's TAP {tap_name}: {e}"))?;
    let (peer_ns, peer_name) = match end {
        FastEnd::Inside(ns) => (ns, plan.ifname.as_str()),
        FastEnd::ForMove(name) => (&here, name),
    };
    let build = |rtnl: &mut Rtnl| -> Result<(u32, u32), String> {
        quiet_up(&here, rtnl, &tap_name, tap.ifindex())?;
        rtnl.link_add_veth(&veth_name, peer_name, peer_ns.fd())
            .map_err(nerr("cannot create the endpoint's veth pair"))?;
        let veth = rtnl
            .link_get(&veth_name)
            .map_err(nerr("cannot find the endpoint's veth"))?
            .index;
        quiet_up(&here, rtnl, &veth_name, veth)?;
        let idx = Rtnl::open(peer_ns)
            .and_then(|mut r| r.link_get(peer_name))
            .map_err(nerr("cannot find the endpoint's interface"))?
            .index;
        match end {
            FastEnd::Inside(ns) => configure_interface(ns, idx, plan)?,
            FastEnd::ForMove(_) => set_for_move(rtnl, idx, plan)?,
        }
        Ok((veth, idx))
    };
    match build(&mut rtnl) {
        Ok((veth, idx)) => Ok((tap, veth, idx)),
        Err(e) => {
            // One end takes the other with it.
            if let Ok(l) = rtnl.link_get(&veth_name) {
                let _ = rtnl.link_delete(l.index);
            }
            destroy_tap(tap);
            Err(e)
        }
    }
}

/// Adopts a fast-path endpoint after a restart: the veth pair outlived the previous daemon
/// (both its namespaces did), only its TAP went with it. When `ifname` in `netns` is a veth
/// whose peer is the daemon's end named by [`fast_names`] (each end names the other in
/// `IFLA_LINK`), a new TAP is made under its name and both daemon-side links are set quiet
/// and up; the endpoint interface keeps everything it had (MAC, addresses, routes, up or
/// down). Returns the TAP, the daemon-side veth's ifindex and the endpoint interface's
/// ifindex; `Ok(None)` when the pair is not intact (nothing was changed). On failure the
/// new TAP is removed again.
pub fn adopt_fast_interface(
    netns: &Netns,
    ifname: &str,
    ep_id: &str,
) -> Result<Option<(Tap, u32, u32)>, String> {
    let (tap_name, veth_name) = fast_names(ep_id);
    let here = Netns::current().map_err(nerr("cannot open the daemon's namespace"))?;
    let mut rtnl = Rtnl::open(&here).map_err(nerr("cannot reach the daemon's namespace"))?;
    let Ok(eth) = Rtnl::open(netns).and_then(|mut r| r.link_get(ifname)) else {
        return Ok(None);
    };
    let Ok(veth) = rtnl.link_get(&veth_name) else {
        return Ok(None);
    };
    let is_veth = |l: &LinkInfo| l.kind.as_deref() == Some("veth");
    if !is_veth(&eth)
        || !is_veth(&veth)
        || eth.link.unwrap_or(eth.index) != veth.index
        || veth.link.unwrap_or(veth.index) != eth.index
    {
        return Ok(None);
    }
    // A TAP of that name can only be a leftover (the slow path's TAP is not persistent).
    if let Ok(l) = rtnl.link_get(&tap_name) {
        let _ = rtnl.link_delete(l.index);
    }
    let tap = Tap::create(&TapOptions {
        name: Some(tap_name.clone()),
        persist: false,
        ..TapOptions::default()
    })
    .map_err(|e| format!("cannot create the endpoint's TAP {tap_name}: {e}"))?;
    let set = |rtnl: &mut Rtnl| -> Result<(), String> {
        quiet_up(&here, rtnl, &tap_name, tap.ifindex())?;
        quiet_up(&here, rtnl, &veth_name, veth.index)
    };
    match set(&mut rtnl) {
        Ok(()) => Ok(Some((tap, veth.index, eth.index))),
        Err(e) => {
            destroy_tap(tap);
            Err(e)
        }
    }
}

/// Deletes whatever is left in the daemon's namespace under `ep_id`'s [`fast_names`]: the
/// daemon's end of the endpoint's veth pair (the endpoint's end goes with it, wherever it
/// is, also one a crash left unmarked) and the TAP. Used for the ends of a pair that did
/// not survive whole (so that they can be made again), for a rolled-back creation, and for
/// a front end's endpoint that is forgotten after its Leave.
pub fn delete_fast_leftovers(ep_id: &str) {
    let (tap_name, veth_name) = fast_names(ep_id);
    if let Ok(here) = Netns::current() {
        delete_named(&here, &veth_name);
        delete_named(&here, &tap_name);
    }
}

/// Whether the endpoint's interface `ifname` in `netns` is a veth (a fast-path endpoint's).
pub fn is_veth(netns: &Netns, ifname: &str) -> bool {
    Rtnl::open(netns)
        .and_then(|mut r| r.link_get(ifname))
        .is_ok_and(|l| l.kind.as_deref() == Some("veth"))
}

/// Deletes the interface `ifname` in `netns` if it exists.
pub fn delete_named(netns: &Netns, ifname: &str) {
    if let Ok(mut r) = Rtnl::open(netns) {
        if let Ok(l) = r.link_get(ifname) {
            let _ = r.link_delete(l.index);
        }
    }
}

/// Adds (or deletes) the host's routes toward endpoint addresses through the host interface
/// `host_ifname` in the daemon's namespace: `ADDR/32 dev IF` and `ADDR/128 dev IF`, one per
/// address, so the host's other routes (the parent's subnet included) are not disturbed. A
/// route already gone is not an error on delete.
pub fn host_routes(host_ifname: &str, targets: &[EndpointAddrs], add: bool) -> Result<(), String> {
    let here = Netns::current().map_err(nerr("cannot open the daemon's namespace"))?;
    let mut rtnl = Rtnl::open(&here).map_err(nerr("cannot reach the daemon's namespace"))?;
    let idx = rtnl
        .link_get(host_ifname)
        .map_err(nerr("cannot find the host interface"))?
        .index;
    let mut failed = Vec::new();
    for a in targets.iter().flat_map(|t| t.v4.into_iter().chain(t.v6)) {
        let len = if a.addr.is_ipv4() { 32 } else { 128 };
        let r = Route::to(a.addr, len, None, Some(idx));
        let done = if add {
            rtnl.route_replace(&r)
        } else {
            rtnl.route_del(&r).or_else(|e| match &e {
                NetnsError::Netlink { source, .. }
                    if matches!(source.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) =>
                {
                    Ok(())
                }
                _ => Err(e),
            })
        };
        if let Err(e) = done {
            failed.push(format!("{}/{len} dev {host_ifname}: {e}", a.addr));
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "cannot {} the host route(s) {}",
            if add { "add" } else { "delete" },
            failed.join(", ")
        )),
    }
}

/// Makes the host interface's routes exactly one per address of `want` (at start: endpoints
/// may have gone while the daemon was down): host routes (/32, /128, no gateway) through
/// `host_ifname` toward other addresses are deleted, missing ones added.
pub fn sync_host_routes(host_ifname: &str, want: &[EndpointAddrs]) -> Result<(), String> {
    let here = Netns::current().map_err(nerr("cannot open the daemon's namespace"))?;
    let mut rtnl = Rtnl::open(&here).map_err(nerr("cannot reach the daemon's namespace"))?;
    let idx = rtnl
        .link_get(host_ifname)
        .map_err(nerr("cannot find the host interface"))?
        .index;
    let keep: Vec<IpAddr> = want
        .iter()
        .flat_map(|t| t.v4.into_iter().chain(t.v6))
        .map(|a| a.addr)
        .collect();
    for v6 in [false, true] {
        let routes = rtnl
            .route_list(v6)
            .map_err(nerr("cannot list the host's routes"))?;
        for r in routes {
            let host_route = r.oif == Some(idx)
                && r.gateway.is_none()
                && r.prefix_len == if v6 { 128 } else { 32 };
            if host_route && !keep.contains(&r.dst) {
                rtnl.route_del(&r)
                    .map_err(nerr("cannot delete a stale host route"))?;
            }
        }
    }
    host_routes(host_ifname, want, true)
}

/// Creates the TAP in the calling thread's namespace (the daemon's) under `name`, for a
/// front end to move into its sandbox (Docker): MAC, MTU and ARP are set, since they follow
/// the device; addresses, routes and per-namespace settings are not (the front end
/// addresses it; [`settle_moved`] does the rest once it arrived). On failure the TAP is
/// removed again.
pub fn create_for_move(name: &str, plan: &IfPlan) -> Result<Tap, String> {
    let tap = Tap::create(&tap_options(name))
        .map_err(|e| format!("cannot create the endpoint's TAP {name}: {e}"))?;
    let set = || -> Result<(), String> {
        let here = Netns::current().map_err(nerr("cannot open the daemon's namespace"))?;
        let mut rtnl = Rtnl::open(&here).map_err(nerr("cannot reach the daemon's namespace"))?;
        set_for_move(&mut rtnl, tap.ifindex(), plan)
    };
    match set() {
        Ok(()) => Ok(tap),
        Err(e) => {
            destroy_tap(tap);
            Err(e)
        }
    }
}

/// The settings of an interface a front end moves that follow it across namespaces: its
/// mark, MAC, MTU and ARP.
fn set_for_move(rtnl: &mut Rtnl, idx: u32, plan: &IfPlan) -> Result<(), String> {
    rtnl.link_set_alias(idx, &plan.mark)
        .map_err(nerr("cannot mark the endpoint's interface"))?;
    rtnl.link_set_mac(idx, plan.mac.0)
        .map_err(nerr("cannot set the endpoint's MAC"))?;
    rtnl.link_set_mtu(idx, plan.mtu)
        .map_err(nerr("cannot set the endpoint's MTU"))?;
    if plan.noarp {
        rtnl.link_set_arp(idx, false)
            .map_err(nerr("cannot turn ARP off (ipvlan l3/l3s)"))?;
    }
    Ok(())
}

/// Finishes an endpoint a front end moved into `netns` (interface `idx`): the settings that
/// do not follow a device across namespaces. ipvlan with IPv6: `addrgenmode none` and the
/// port's own link-local instead of the EUI-64 one the kernel may have made from the shared
/// MAC; otherwise `arp_notify`.
pub fn settle_moved(netns: &Netns, idx: u32, plan: &IfPlan) -> Result<(), String> {
    let mut rtnl = Rtnl::open(netns).map_err(nerr("cannot reach the sandbox"))?;
    if plan.addr_gen_none {
        rtnl.link_set_addr_gen_mode(idx, AddrGenMode::None)
            .map_err(nerr("cannot set addrgenmode none"))?;
        if let Some(ll) = plan.link_local {
            let stale: Vec<_> = rtnl
                .addr_list(Some(idx))
                .map_err(nerr("cannot list the endpoint's addresses"))?
                .into_iter()
                .filter(|a| matches!(a.addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 && v6 != ll))
                .collect();
            for a in stale {
                let _ = rtnl.addr_del(idx, a.addr, a.prefix_len);
            }
            match rtnl.addr_add(idx, IpAddr::V6(ll), 64, AddrOptions { nodad: true }) {
                Ok(()) => {}
                Err(NetnsError::Netlink { source, .. })
                    if source.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(format!("cannot add the link-local address: {e}")),
            }
        }
    }
    if !plan.noarp {
        rtnl.link_set_inet_conf(idx, &[(IPV4_DEVCONF_ARP_NOTIFY, 1)])
            .map_err(nerr("cannot set arp_notify"))?;
    }
    Ok(())
}

/// Re-attaches to a persistent TAP still in the daemon's namespace (a front end had not
/// moved it yet when the daemon stopped). `Ok(None)` when there is none by that name.
pub fn reattach_host_tap(name: &str) -> Result<Option<Tap>, String> {
    match attach_when_released(|| Tap::attach(name, &tap_options(name))) {
        Ok(t) => Ok(Some(t)),
        Err(TapError::NotFound { .. }) => Ok(None),
        Err(e) => Err(format!("cannot re-attach to the TAP {name}: {e}")),
    }
}

/// How long a restart waits, over all its TAPs together, for TAPs that are still busy.
const BUSY_BUDGET: Duration = Duration::from_secs(5);
/// Milliseconds of [`BUSY_BUDGET`] already spent by this process.
static BUSY_SPENT_MS: AtomicU64 = AtomicU64::new(0);

/// Attaches to a persistent single-queue TAP, waiting while it is busy. A daemon that was
/// killed (SIGKILL, OOM) can hold a TAP after it has been reaped: its io_uring instance is
/// torn down by a kernel worker after the process exits, and the multishot reads in flight
/// keep their reference to the TAP's file until that worker cancels them. The TAP turns
/// free a few milliseconds later. A TAP another live process holds stays busy: the wait is
/// bounded by [`BUSY_BUDGET`] for the whole process, so a thousand such TAPs cost 5 s, not
/// 5 s each, and the error then names the TAP as busy.
fn attach_when_released(
    mut attach: impl FnMut() -> Result<Tap, TapError>,
) -> Result<Tap, TapError> {
    const STEP_MS: u64 = 10;
    loop {
        match attach() {
            Err(TapError::Busy { .. })
                if BUSY_SPENT_MS.fetch_add(STEP_MS, Ordering::Relaxed) + STEP_MS
                    <= BUSY_BUDGET.as_millis() as u64 =>
            {
                std::thread::sleep(Duration::from_millis(STEP_MS));
            }
            r => return r,
        }
    }
}

/// Removes a TAP for good: clears persistence and closes the fd (the device goes away).
pub fn destroy_tap(tap: Tap) {
    let _ = tap.set_persist(false);
    drop(tap);
}

/// Removes a TAP for good without waiting for the slow part of the kernel's work: the
/// device leaves its namespace (with its addresses) within a millisecond or two of the
/// close, but the close then waits for an RCU barrier (20–30 ms on a loaded host) before it
/// returns. The close runs on a short-lived thread; `gone` is told when it returns (the
/// address watcher tells it earlier, when the interface leaves the namespace).
pub fn destroy_tap_async(tap: Tap, gone: Arc<Gone>) {
    gone.expect();
    // Not persistent any more: even if the thread cannot start, dropping the closure closes
    // the fd and the device goes.
    let _ = tap.set_persist(false);
    let told = gone.clone();
    let spawned = std::thread::Builder::new()
        .name("uvlan-tap-close".to_string())
        .spawn(move || {
            drop(tap);
            told.done();
        });
    if spawned.is_err() {
        // The closure, and with it the TAP, was dropped: closed synchronously.
        gone.done();
    }
}

/// Names of the daemon's namespace that a fast-path teardown is still deleting after its
/// command returned ([`destroy_fast_async`]); a new pair under one of them waits.
struct Closing {
    names: Mutex<Vec<String>>,
    cv: Condvar,
}

static CLOSING: Closing = Closing {
    names: Mutex::new(Vec::new()),
    cv: Condvar::new(),
};

/// How long a new fast-path pair waits for a teardown still deleting interfaces under its
/// names; then it goes ahead (and fails with the kernel's error if a name is still taken).
const CLOSING_WAIT: Duration = Duration::from_secs(10);

impl Closing {
    fn names(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, names: &[String]) {
        self.names().extend(names.iter().cloned());
    }

    fn remove(&self, names: &[String]) {
        let mut g = self.names();
        for n in names {
            if let Some(i) = g.iter().position(|x| x == n) {
                g.swap_remove(i);
            }
        }
        drop(g);
        self.cv.notify_all();
    }

    /// Waits until none of `names` is being deleted (`None`: until nothing is), at most
    /// `timeout`; true if so.
    fn wait(&self, names: Option<&[&str]>, timeout: Duration) -> bool {
        let busy = |g: &mut Vec<String>| match names {
            Some(n) => g.iter().any(|x| n.contains(&x.as_str())),
            None => !g.is_empty(),
        };
        let g = self.names();
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |g| busy(g))
            .unwrap_or_else(|p| p.into_inner());
        !busy(&mut g)
    }
}

/// Waits (at most `timeout`) until every fast-path teardown still running after its command
/// returned has deleted its interfaces ([`destroy_fast_async`]); true if all did. The daemon
/// calls it before it exits, so a stop leaves no half-deleted pair.
pub fn wait_fast_closed(timeout: Duration) -> bool {
    CLOSING.wait(None, timeout)
}

/// Deletes a fast-path endpoint's interfaces with as few RCU waits in a row as the kernel
/// allows. The caller took the port out of the fast path first (`take_fast_port`: no cache
/// entry and no partner entry is left, so its programs forward nothing). Two short-lived
/// threads then delete, at the same time, the endpoint's end `ifindex` in `netns` (the veth
/// pair goes with it; then the daemon's end `veth` if it is still there, when a front end
/// moved the endpoint's end elsewhere) and the TAP; `gone` is told when both are deleted,
/// and only then are `links` closed: the kernel detached the programs with the interfaces,
/// so the closes cost nothing, whereas closing a link on a live interface waits for an RCU
/// grace period under RTNL, which no other RTNL user can overlap. The caller waits for
/// `gone` (bounded); should it stop waiting earlier, `names` (the TAP's and the daemon's
/// veth end's) stay reserved until the deletions are done: a new pair under them
/// ([`create_fast_interface`], [`create_fast_for_move`]) waits.
pub fn destroy_fast_async(
    netns: Netns,
    ifindex: u32,
    veth: u32,
    tap: Option<Tap>,
    links: Option<FastLinks>,
    names: Vec<String>,
    gone: Arc<Gone>,
) {
    gone.expect();
    CLOSING.add(&names);
    let work = Arc::new(Mutex::new(Some((netns, tap, links, names, gone))));
    let run = move |work: &Mutex<Option<FastTeardown>>| {
        let job = work.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((netns, tap, links, names, gone)) = job else {
            return;
        };
        // The TAP and the veth pair at the same time: each deletion waits for RCU (a grace
        // period under RTNL for the program still attached, an RCU barrier after it), and
        // the barriers overlap.
        std::thread::scope(|s| {
            if let Some(t) = tap {
                let spawned = std::thread::Builder::new()
                    .name("uvlan-fast-close".to_string())
                    .spawn_scoped(s, move || destroy_tap(t));
                // No thread: the closure and the TAP in it were dropped, closing it here.
                drop(spawned);
            }
            delete_link(&netns, ifindex);
            if let Ok(here) = Netns::current() {
                delete_link(&here, veth);
            }
        });
        gone.done();
        // The kernel detached the programs with the interfaces: these closes cost nothing.
        drop(links);
        CLOSING.remove(&names);
    };
    let theirs = Arc::clone(&work);
    let spawned = std::thread::Builder::new()
        .name("uvlan-fast-close".to_string())
        .spawn(move || run(&theirs));
    if spawned.is_err() {
        // No thread: the same work, here.
        run(&work);
    }
}

/// What [`destroy_fast_async`]'s thread deletes and whom it tells.
type FastTeardown = (
    Netns,
    Option<Tap>,
    Option<FastLinks>,
    Vec<String>,
    Arc<Gone>,
);

/// Re-attaches to an endpoint's persistent TAP after a restart. `Ok(None)` when the TAP no
/// longer exists in the namespace (it must be created again).
pub fn reattach_tap(netns_path: &Path, ifname: &str) -> Result<Option<Tap>, String> {
    match attach_when_released(|| Tap::attach_in_netns(netns_path, ifname, &tap_options(ifname))) {
        Ok(t) => Ok(Some(t)),
        Err(TapError::NotFound { .. }) => Ok(None),
        Err(e) => Err(format!(
            "cannot re-attach to the endpoint's TAP {ifname}: {e}"
        )),
    }
}

/// Deletes the interface `idx` in the namespace if it still exists (after its TAP fd was
/// closed it normally is gone already).
pub fn delete_link(netns: &Netns, idx: u32) {
    if let Ok(mut r) = Rtnl::open(netns) {
        if r.link_get_by_index(idx).is_ok() {
            let _ = r.link_delete(idx);
        }
    }
}

/// Deletes the interface left in the daemon's namespace under `name` (Docker moves an
/// endpoint's interface back there after Leave), if there is one: a TAP, or a fast-path
/// endpoint's veth (its peer, the daemon's end, goes with it).
pub fn delete_host_interface(name: &str) {
    let Ok(here) = Netns::current() else { return };
    let Ok(mut r) = Rtnl::open(&here) else { return };
    if let Ok(l) = r.link_get(name) {
        if matches!(l.kind.as_deref(), Some("tun" | "veth")) {
            let _ = r.link_delete(l.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{EndpointAddr, Prefix};

    fn addrs(v4: bool, v6: bool, gw: bool) -> EndpointAddrs {
        let a4 = EndpointAddr {
            addr: "192.0.2.2".parse().unwrap(),
            subnet: "192.0.2.0/24".parse::<Prefix>().unwrap(),
            gateway: gw.then(|| "192.0.2.1".parse().unwrap()),
        };
        let a6 = EndpointAddr {
            addr: "2001:db8::2".parse().unwrap(),
            subnet: "2001:db8::/64".parse::<Prefix>().unwrap(),
            gateway: gw.then(|| "2001:db8::1".parse().unwrap()),
        };
        EndpointAddrs {
            v4: v4.then_some(a4),
            v6: v6.then_some(a6),
        }
    }

    #[test]
    fn l2_and_macvlan_route_via_the_gateway_only_with_a_wire() {
        let a = addrs(true, true, true);
        let via4 = Some(DefaultRoute::Via("192.0.2.1".parse().unwrap()));
        let via6 = Some(DefaultRoute::Via("2001:db8::1".parse().unwrap()));
        for (d, m) in [
            (Driver::Ipvlan, Some(IpvlanMode::L2)),
            (Driver::Macvlan, None),
        ] {
            let p = route_plan(d, m, true, false, &a);
            assert_eq!((p.v4, p.v6), (via4, via6));
            let internal = route_plan(d, m, true, true, &a);
            assert_eq!((internal.v4, internal.v6), (None, None));
            let no_parent = route_plan(d, m, false, false, &a);
            assert_eq!((no_parent.v4, no_parent.v6), (None, None));
            let no_gw = route_plan(d, m, true, false, &addrs(true, false, false));
            assert_eq!((no_gw.v4, no_gw.v6), (None, None));
        }
    }

    #[test]
    fn l3_routes_default_dev_always() {
        for mode in [IpvlanMode::L3, IpvlanMode::L3s] {
            for (parent, internal) in [(true, false), (true, true), (false, false)] {
                let p = route_plan(
                    Driver::Ipvlan,
                    Some(mode),
                    parent,
                    internal,
                    &addrs(true, true, true),
                );
                assert_eq!(p.v4, Some(DefaultRoute::Dev));
                assert_eq!(p.v6, Some(DefaultRoute::Dev));
            }
            let v4only = route_plan(
                Driver::Ipvlan,
                Some(mode),
                false,
                false,
                &addrs(true, false, true),
            );
            assert_eq!((v4only.v4, v4only.v6), (Some(DefaultRoute::Dev), None));
        }
    }
}
