//! A network in the engine and on the wire: adding it (with its parent) and opening its
//! wire, removing it, and restoring a stored network with its endpoints (at start, and
//! when a missing parent appears).

use std::collections::HashMap;
use std::path::Path;

use uvlan_dataplane::fwd::{ConfigError, Driver, Engine, Master, NetworkSpec, ParentSpec, PortId};
use uvlan_dataplane::port::tap::Tap;

use crate::ids;
use crate::netns::{Netns, Rtnl};
use crate::store::{EndpointRecord, NetworkRecord};

use super::attach::engine_err;
use super::dp::with_engine;
use super::endpoint;
use super::model::{Daemon, EpRt, Net, NetRt, State};
use super::options;
use super::recover::{self, NsAt};

/// A front end's endpoint interface found at restore: its TAP, its namespace, the ifindex of
/// the daemon's end of its veth pair (a fast-path endpoint), the interface's ifindex.
type Found = (Tap, Netns, Option<u32>, u32);

impl Daemon {
    /// Registers the network (and its parent, if new) in the engine and opens the wire.
    pub(super) fn engine_add_network(
        &self,
        st: &mut State,
        rec: &NetworkRecord,
    ) -> Result<NetRt, String> {
        let driver = options::parse_driver(&rec.driver)?;
        let dc = &rec.driver_config;
        let (master_parent, host_link) = match &dc.parent {
            None => (None, None),
            Some(p) => {
                let link = st
                    .host
                    .link(&p.ifname)
                    .map_err(|e| format!("cannot look up parent {} on the host: {e}", p.ifname))?
                    .ok_or_else(|| {
                        format!(
                            "-o parent interface was not found on the host: {}",
                            p.ifname
                        )
                    })?;
                (Some(p.clone()), Some(link))
            }
        };
        let name = rec.name.clone();
        let internal = rec.internal;
        let isolated = dc.isolated_mac();
        // The parent's own addresses come with the next reconcile (after the endpoints are
        // restored): an address an endpoint held before the parent took it stays the
        // endpoint's, as at run time (first owner wins).
        let spec = host_link.as_ref().map(|l| ParentSpec {
            addrs: Vec::new(),
            ..l.parent_spec()
        });
        let (parent, nid, fresh_parent) = with_engine(&*self.dp, move |e: &mut Engine| {
            let (parent, fresh) = match (&master_parent, spec) {
                (Some(p), Some(spec)) => match e.parent_by_name(&p.ifname) {
                    Some(id) => (Some(id), false),
                    None => (Some(e.add_parent(spec)?), true),
                },
                _ => (None, false),
            };
            let master = match (parent, &master_parent) {
                (Some(pid), Some(p)) => Master::Parent {
                    parent: pid,
                    vid: p.vid,
                    wire: !internal,
                },
                _ => Master::Isolated {
                    mac: isolated.unwrap_or_default(),
                    mtu: 1500,
                },
            };
            match e.add_network(NetworkSpec::new(name, driver, master)) {
                Ok(nid) => Ok((parent, nid, fresh)),
                Err(err) => {
                    if let (Some(pid), true) = (parent, fresh) {
                        let _ = e.remove_parent(pid);
                    }
                    Err(err)
                }
            }
        })
        .map_err(engine_err)?
        .map_err(|e: ConfigError| format!("cannot set up the network in the engine: {e}"))?;
        // The interface the engine's parent now stands for (an entry left from an earlier
        // parent of that name would make the next reconcile reopen this wire).
        if let Some(l) = &host_link {
            if fresh_parent {
                st.parent_ifindex.insert(l.name.clone(), l.index);
            } else {
                st.parent_ifindex.entry(l.name.clone()).or_insert(l.index);
            }
        }
        let mut rt = NetRt {
            nid,
            parent,
            wire: None,
        };
        if let (Some(pid), Some(p), false) = (parent, &dc.parent, internal) {
            match self.dp.attach_parent(pid, &p.ifname) {
                Ok(mode) => rt.wire = Some(mode),
                Err(e) => {
                    self.engine_remove_network(&rt);
                    return Err(format!(
                        "cannot open the wire on parent interface {} for network {}: {e}",
                        p.ifname, rec.name
                    ));
                }
            }
        }
        Ok(rt)
    }

    /// Closes the wire and removes the network (and its parent when unused) from the engine.
    pub(super) fn engine_remove_network(&self, rt: &NetRt) {
        if let (Some(pid), Some(_)) = (rt.parent, &rt.wire) {
            if let Err(e) = self.dp.detach_parent(pid) {
                (self.log)(&format!("closing the wire of {pid}: {e}"));
            }
        }
        let nid = rt.nid;
        let parent = rt.parent;
        let r = with_engine(&*self.dp, move |e: &mut Engine| {
            e.remove_network(nid)?;
            if let Some(pid) = parent {
                let used = e.network_ids().into_iter().any(|n| {
                    matches!(e.network_info(n).map(|i| i.master),
                        Some(Master::Parent { parent, .. }) if parent == pid)
                });
                if !used {
                    e.remove_parent(pid)?;
                }
            }
            Ok::<(), ConfigError>(())
        });
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => (self.log)(&format!("removing {nid} from the engine: {e}")),
            Err(e) => (self.log)(&format!("removing {nid} from the engine: {e}")),
        }
    }

    /// Removes network `i` (no endpoints allowed) from IPAM, store and engine.
    pub(super) fn remove_locked(&self, st: &mut State, i: usize) -> Result<String, String> {
        // The host interface goes with its network, once it is the only endpoint left.
        let only_host = {
            let net = &st.nets[i];
            net.rec.managed.as_ref().map_or(0, |m| m.reserved.len()) == 0
                && !net.rec.endpoints.is_empty()
                && net.rec.endpoints.iter().all(|e| e.host_interface)
        };
        if only_host {
            self.remove_host_interface(st, i)?;
        }
        let net = &st.nets[i];
        let reserved = net.rec.managed.as_ref().map_or(0, |m| m.reserved.len());
        if !net.rec.endpoints.is_empty() || reserved > 0 || !net.pending.is_empty() {
            let reserved = net.rec.managed.iter().flat_map(|m| m.reserved.iter());
            // Endpoints whose CreateEndpoint leases their address now.
            let pending = net
                .pending
                .keys()
                .map(|k| format!("name:\"(being created)\" id:{:?}", ids::short_id(k)));
            let eps: Vec<String> = net
                .rec
                .endpoints
                .iter()
                .map(|e| format!("name:{:?} id:{:?}", e.name, ids::short_id(&e.sandbox_id)))
                .chain(
                    reserved
                        .map(|r| format!("name:\"(not joined)\" id:{:?}", ids::short_id(&r.key))),
                )
                .chain(pending)
                .collect();
            return Err(format!(
                "error while removing network: network {} has active endpoints ({})",
                net.rec.name,
                eps.join(", ")
            ));
        }
        // Every check first; then the store (the commit point), then the address space,
        // which cannot fail for a network it holds without endpoints.
        let own_ipam = net.rec.own_ipam();
        if own_ipam {
            // What `remove_network` refuses, checked before anything changes.
            match st.space.endpoint_addresses(&net.rec.id) {
                Some(held) if held.is_empty() => {}
                Some(held) => {
                    return Err(format!(
                        "error while removing network: network {} still holds {} endpoint \
                         address(es)",
                        net.rec.name,
                        held.len()
                    ))
                }
                None => {
                    return Err(format!(
                        "error while removing network: network {} is not in the address space",
                        net.rec.id
                    ))
                }
            }
        }
        self.store
            .delete_network(&net.rec.id)
            .map_err(|e| e.to_string())?;
        let net = st.nets.remove(i);
        if own_ipam {
            if let Err(e) = st.space.remove_network(&net.rec.id) {
                (self.log)(&format!("network {}: {e}", net.rec.name));
            }
        }
        if let Some(rt) = &net.rt {
            self.engine_remove_network(rt);
        }
        Ok(net.rec.name)
    }

    pub(super) fn restore_network(&self, st: &mut State, rec: NetworkRecord) -> Net {
        let mut net = match self.engine_add_network(st, &rec) {
            Ok(rt) => Net {
                rec,
                rt: Some(rt),
                problem: None,
                problem_ifindex: None,
                eps: HashMap::new(),
                parked: HashMap::new(),
                pending: HashMap::new(),
                releasing: Default::default(),
            },
            Err(e) => {
                let problem_ifindex = rec
                    .driver_config
                    .parent
                    .as_ref()
                    .and_then(|p| st.host.link(&p.ifname).ok().flatten())
                    .map(|l| l.index);
                (self.log)(&format!(
                    "network {}: {e}; it stays listed, but its endpoints do not work until \
                     this is fixed: the daemon tries again when its parent interface appears \
                     (or restart the daemon)",
                    rec.name
                ));
                return Net {
                    rec,
                    rt: None,
                    problem: Some(e),
                    problem_ifindex,
                    eps: HashMap::new(),
                    parked: HashMap::new(),
                    pending: HashMap::new(),
                    releasing: Default::default(),
                };
            }
        };
        let mut gone = std::collections::HashSet::new();
        for ep in &net.rec.endpoints {
            match self.restore_endpoint(&net, ep) {
                Ok(Some(rt)) => {
                    net.eps.insert(ep.id.clone(), rt);
                }
                Ok(None) => {
                    gone.insert(ep.id.clone());
                }
                Err(e) => (self.log)(&format!(
                    "network {}: endpoint {} could not be restored: {}; it stays registered \
                     and keeps its addresses, without traffic (restart the daemon to try \
                     again, or disconnect it)",
                    net.rec.name,
                    ep.name,
                    self.fd_hint(e)
                )),
            }
        }
        if !gone.is_empty() {
            // Their namespaces are gone, and every interface in them with them (see
            // `restore_endpoint`): the records go, then the addresses.
            let rec = &mut net.rec;
            let (kept, removed): (Vec<EndpointRecord>, Vec<EndpointRecord>) =
                std::mem::take(&mut rec.endpoints)
                    .into_iter()
                    .partition(|e| !gone.contains(&e.id));
            rec.endpoints = kept;
            for e in &removed {
                // A front end's TAP may be back in the daemon's namespace (Docker moves it
                // there when it tears the sandbox down): remove it.
                if let Some(h) = &e.host_name {
                    endpoint::delete_host_interface(h);
                }
                if let Err(err) = self.store.delete_endpoint(&rec.id, &e.id) {
                    (self.log)(&format!(
                        "network {}: endpoint {}: {err}; it is dropped again at the next start",
                        rec.name, e.name
                    ));
                }
                if rec.own_ipam() {
                    if let Err(err) = st.space.release(&rec.id, &e.addrs) {
                        (self.log)(&format!(
                            "network {}: endpoint {}: giving back its addresses: {err}",
                            rec.name, e.name
                        ));
                    }
                }
            }
        }
        net
    }

    /// The interface of a front end's endpoint found in its sandbox by its mark, with the
    /// sandbox: a TAP re-attached, or, while the fast path is on for its network (`fast`),
    /// a whole veth pair adopted (a new TAP, the daemon's end's ifindex); `None` when the
    /// sandbox or the interface is gone. A veth pair that is not whole, or met with the
    /// fast path off, is deleted (`None`: a TAP cannot take its place in a sandbox the
    /// front end already set up).
    fn find_moved(&self, ep: &EndpointRecord, fast: bool) -> Result<Option<Found>, String> {
        let path = Path::new(&ep.netns_path);
        let ns = match recover::open_ns(path, 0) {
            NsAt::Same(ns) => ns,
            NsAt::Gone(_) => return Ok(None),
            NsAt::Unreachable(why) => return Err(format!("cannot open its sandbox: {why}")),
        };
        let mark = self.mark(&ep.id);
        let link = Rtnl::open(&ns)
            .and_then(|mut r| r.link_list())
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|l| l.alias.as_deref() == Some(mark.as_str()));
        let Some(link) = link else {
            return Ok(None);
        };
        if link.kind.as_deref() == Some("veth") {
            if fast {
                if let Some((tap, veth, idx)) =
                    endpoint::adopt_fast_interface(&ns, &link.name, &ep.id)?
                {
                    return Ok(Some((tap, ns, Some(veth), idx)));
                }
            }
            endpoint::delete_named(&ns, &link.name);
            endpoint::delete_fast_leftovers(&ep.id);
            return Ok(None);
        }
        match endpoint::reattach_tap(path, &link.name)? {
            Some(tap) => {
                let idx = tap.ifindex();
                Ok(Some((tap, ns, None, idx)))
            }
            None => Ok(None),
        }
    }

    /// The interface of a front end's endpoint that was not recorded in its sandbox yet
    /// (see [`Daemon::restore_endpoint`]): still in the daemon's namespace under its host
    /// name, a TAP re-attached, or a veth pair adopted while the fast path is on for its
    /// network (`fast`; else, or when the pair is not whole, made again from `plan` as
    /// a fast-path or TAP endpoint for the front end to move); else found in its sandbox
    /// ([`Daemon::find_moved`]). `None` when it is nowhere.
    fn find_unmoved(
        &self,
        ep: &EndpointRecord,
        fast: bool,
        plan: impl FnOnce() -> endpoint::IfPlan,
    ) -> Result<Option<Found>, String> {
        let here = Netns::current().map_err(|e| e.to_string())?;
        if !endpoint::is_veth(&here, &ep.ifname) {
            return match endpoint::reattach_host_tap(&ep.ifname)? {
                Some(tap) => {
                    let idx = tap.ifindex();
                    Ok(Some((tap, here, None, idx)))
                }
                // Docker may have moved it into the sandbox before the daemon recorded the
                // arrival: it carries the endpoint's mark there.
                None => self.find_moved(ep, fast),
            };
        }
        if fast {
            if let Some((tap, veth, idx)) =
                endpoint::adopt_fast_interface(&here, &ep.ifname, &ep.id)?
            {
                return Ok(Some((tap, here, Some(veth), idx)));
            }
        }
        endpoint::delete_named(&here, &ep.ifname);
        endpoint::delete_fast_leftovers(&ep.id);
        let plan = plan();
        if fast {
            let (tap, veth, idx) = endpoint::create_fast_for_move(&ep.ifname, &plan, &ep.id)?;
            Ok(Some((tap, here, Some(veth), idx)))
        } else {
            let tap = endpoint::create_for_move(&ep.ifname, &plan)?;
            let idx = tap.ifindex();
            Ok(Some((tap, here, None, idx)))
        }
    }

    /// Restores an endpoint as a fast-path endpoint (the fast path is on for its network):
    /// its veth pair is adopted as it is (the endpoint interface keeps its addresses,
    /// routes and state) with a new TAP, or, when there is no whole pair (its interface was
    /// gone, or its daemon-side end), made again from `plan` (the stored MAC, addresses and
    /// routes). On failure (the engine's port aside, which the caller removes) nothing of
    /// it is left.
    fn restore_fast(
        &self,
        net: &Net,
        driver: Driver,
        ep: &EndpointRecord,
        ns: Netns,
        port: PortId,
        plan: impl FnOnce() -> endpoint::IfPlan,
    ) -> Result<EpRt, String> {
        let (tap, veth, idx, fresh) = match endpoint::adopt_fast_interface(&ns, &ep.ifname, &ep.id)?
        {
            Some((tap, veth, idx)) => (tap, veth, idx, false),
            None => {
                if endpoint::is_veth(&ns, &ep.ifname) {
                    (self.log)(&format!(
                        "network {}: endpoint {}: its veth pair did not survive whole; \
                             creating it again",
                        net.rec.name, ep.name
                    ));
                    endpoint::delete_named(&ns, &ep.ifname);
                }
                endpoint::delete_fast_leftovers(&ep.id);
                let (tap, veth, idx) = endpoint::create_fast_interface(&ns, &plan(), &ep.id)?;
                (tap, veth, idx, true)
            }
        };
        let up = Rtnl::open(&ns)
            .and_then(|mut r| r.link_get_by_index(idx))
            .map(|l| l.is_up())
            .unwrap_or(fresh);
        self.finish_endpoint(port, tap, idx, ns, up, &ep.name, driver, true, Some(veth))
    }

    /// Re-creates an endpoint after a restart. `Ok(None)`: its namespace is gone, so the
    /// endpoint is dropped (logged).
    fn restore_endpoint(&self, net: &Net, ep: &EndpointRecord) -> Result<Option<EpRt>, String> {
        let Some(rt) = &net.rt else {
            return Err("its network is down".to_string());
        };
        let path = Path::new(&ep.netns_path);
        let driver = options::parse_driver(&net.rec.driver)?;
        // Fast-path endpoints (veth) of the previous daemon are adopted while the fast path
        // is on for this network; one whose interface is gone is made again as `network
        // connect` would make it now.
        let fast = self.fast_path()
            && !matches!(options::fast_path_opt(&net.rec.options), Ok(Some(false)));
        // An endpoint the front end had not moved yet when the daemon stopped: its
        // interface is still in the daemon's namespace under its host name; follow it again.
        if ep.netns_inode == 0 && ep.host_name.is_some() {
            let mac = ep
                .mac()
                .ok_or_else(|| format!("stored MAC {:?} is invalid", ep.mac))?;
            let (port, info_mac, mtu, link_local) =
                self.engine_add_port(rt.nid, driver, &net.rec.driver_config, ep, mac)?;
            let undo_port = || {
                let _ = with_engine(&*self.dp, move |e: &mut Engine| e.remove_port(port));
            };
            let plan = || {
                self.if_plan(
                    net,
                    driver,
                    ep.ifname.clone(),
                    info_mac,
                    mtu,
                    ep,
                    link_local,
                )
            };
            let found = self
                .find_unmoved(ep, fast, plan)
                .inspect_err(|_| undo_port())?;
            let Some((tap, ns, veth, ifindex)) = found else {
                undo_port();
                (self.log)(&format!(
                    "network {}: endpoint {}: its interface {} is neither in the daemon's \
                     namespace nor in its sandbox; removing the endpoint",
                    net.rec.name, ep.name, ep.ifname
                ));
                return Ok(None);
            };
            let rt_ep =
                self.finish_endpoint(port, tap, ifindex, ns, false, &ep.name, driver, false, veth)?;
            self.spawn_follow(&net.rec.id, &ep.id, port, ifindex, info_mac);
            return Ok(Some(rt_ep));
        }
        let ns = match recover::open_ns(path, ep.netns_inode) {
            NsAt::Same(ns) => ns,
            NsAt::Gone(why) => {
                (self.log)(&format!(
                    "network {}: endpoint {}: its namespace is gone ({why}), and its \
                     interface with it; removing the endpoint",
                    net.rec.name, ep.name
                ));
                return Ok(None);
            }
            NsAt::Unreachable(why) => {
                return Err(format!("cannot open its namespace: {why}"));
            }
        };
        let mac = ep
            .mac()
            .ok_or_else(|| format!("stored MAC {:?} is invalid", ep.mac))?;
        let (port, info_mac, mtu, link_local) =
            self.engine_add_port(rt.nid, driver, &net.rec.driver_config, ep, mac)?;
        let undo_port = |why: String| {
            let _ = with_engine(&*self.dp, move |e: &mut Engine| e.remove_port(port));
            why
        };
        let plan = || {
            self.if_plan(
                net,
                driver,
                ep.ifname.clone(),
                info_mac,
                mtu,
                ep,
                link_local,
            )
        };
        if endpoint::is_veth(&ns, &ep.ifname) {
            if fast {
                return self
                    .restore_fast(net, driver, ep, ns, port, plan)
                    .map(Some)
                    .map_err(undo_port);
            }
            // Its TAP went with the previous daemon and the fast path is off now.
            (self.log)(&format!(
                "network {}: endpoint {}: a fast-path endpoint, and the fast path is off: \
                 making it again as a TAP endpoint",
                net.rec.name, ep.name
            ));
            endpoint::delete_named(&ns, &ep.ifname);
        }
        let (tap, fresh) = match endpoint::reattach_tap(path, &ep.ifname) {
            Ok(Some(t)) => (t, false),
            Ok(None) => {
                (self.log)(&format!(
                    "network {}: endpoint {}: its interface {} was gone; creating it again",
                    net.rec.name, ep.name, ep.ifname
                ));
                if fast {
                    return self
                        .restore_fast(net, driver, ep, ns, port, plan)
                        .map(Some)
                        .map_err(undo_port);
                }
                let t = endpoint::create_interface(&ns, path, &plan()).map_err(&undo_port)?;
                (t, true)
            }
            Err(e) => return Err(undo_port(e)),
        };
        let ifindex = tap.ifindex();
        let up = Rtnl::open(&ns)
            .and_then(|mut r| r.link_get_by_index(ifindex))
            .map(|l| l.is_up())
            .unwrap_or(fresh);
        let rt_ep =
            self.finish_endpoint(port, tap, ifindex, ns, up, &ep.name, driver, true, None)?;
        Ok(Some(rt_ep))
    }
}
