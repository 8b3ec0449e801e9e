//! A network in the engine and on the wire: adding it (with its parent) and opening its
//! wire, removing it, and restoring a stored network with its endpoints (at start, and
//! when a missing parent appears).

use std::collections::HashMap;
use std::path::Path;

use uvlan_dataplane::fwd::{ConfigError, Engine, Master, NetworkSpec, ParentSpec};

use crate::ids;
use crate::netns::{Netns, Rtnl};
use crate::store::{EndpointRecord, NetworkRecord};

use super::attach::engine_err;
use super::dp::with_engine;
use super::endpoint;
use super::model::{Daemon, EpRt, Net, NetRt, State};
use super::options;

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
        let net = &st.nets[i];
        let reserved = net.rec.managed.as_ref().map_or(0, |m| m.reserved.len());
        if !net.rec.endpoints.is_empty() || reserved > 0 {
            let reserved = net.rec.managed.iter().flat_map(|m| m.reserved.iter());
            let eps: Vec<String> = net
                .rec
                .endpoints
                .iter()
                .map(|e| format!("name:{:?} id:{:?}", e.name, ids::short_id(&e.sandbox_id)))
                .chain(
                    reserved
                        .map(|r| format!("name:\"(not joined)\" id:{:?}", ids::short_id(&r.key))),
                )
                .collect();
            return Err(format!(
                "error while removing network: network {} has active endpoints ({})",
                net.rec.name,
                eps.join(", ")
            ));
        }
        let mut space = st.space.clone();
        if net.rec.managed.is_none() {
            space
                .remove_network(&net.rec.id)
                .map_err(|e| format!("error while removing network: {e}"))?;
        }
        self.store
            .delete_network(&net.rec.id)
            .map_err(|e| e.to_string())?;
        let net = st.nets.remove(i);
        st.space = space;
        if let Some(rt) = &net.rt {
            self.engine_remove_network(rt);
        }
        Ok(net.rec.name)
    }

    pub(super) fn restore_network(&self, st: &mut State, mut rec: NetworkRecord) -> Net {
        let mut net = match self.engine_add_network(st, &rec) {
            Ok(rt) => Net {
                rec: rec.clone(),
                rt: Some(rt),
                problem: None,
                problem_ifindex: None,
                eps: HashMap::new(),
                parked: HashMap::new(),
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
                };
            }
        };
        let mut gone = Vec::new();
        for ep in &rec.endpoints {
            match self.restore_endpoint(&net, ep) {
                Ok(Some(rt)) => {
                    net.eps.insert(ep.id.clone(), rt);
                }
                Ok(None) => gone.push(ep.id.clone()),
                Err(e) => (self.log)(&format!(
                    "network {}: endpoint {} could not be restored: {e}; it stays registered \
                     (disconnect it to free its addresses)",
                    rec.name, ep.name
                )),
            }
        }
        if !gone.is_empty() {
            let removed: Vec<EndpointRecord> = rec
                .endpoints
                .iter()
                .filter(|e| gone.contains(&e.id))
                .cloned()
                .collect();
            rec.endpoints.retain(|e| !gone.contains(&e.id));
            // A front end's TAP may be back in the daemon's namespace (Docker moves it there
            // when it tears the sandbox down): remove it.
            for e in &removed {
                if let Some(h) = &e.host_name {
                    endpoint::delete_host_tap(h);
                }
            }
            let mut space = st.space.clone();
            let released = match rec.managed {
                Some(_) => Ok(()),
                None => removed
                    .iter()
                    .try_for_each(|e| space.release(&rec.id, &e.addrs)),
            };
            match released
                .map_err(|e| e.to_string())
                .and_then(|()| self.store.save_network(&rec).map_err(|e| e.to_string()))
            {
                Ok(()) => {
                    st.space = space;
                    net.rec = rec;
                }
                Err(e) => (self.log)(&format!(
                    "network {}: cannot drop endpoints whose namespace is gone: {e}",
                    rec.name
                )),
            }
        }
        net
    }

    /// Re-creates an endpoint after a restart. `Ok(None)`: its namespace is gone, so the
    /// endpoint is dropped (logged).
    fn restore_endpoint(&self, net: &Net, ep: &EndpointRecord) -> Result<Option<EpRt>, String> {
        let Some(rt) = &net.rt else {
            return Err("its network is down".to_string());
        };
        let path = Path::new(&ep.netns_path);
        let driver = options::parse_driver(&net.rec.driver)?;
        // An endpoint the front end had not moved yet when the daemon stopped: its TAP is
        // still in the daemon's namespace under its host name; follow it again.
        if ep.netns_inode == 0 && ep.host_name.is_some() {
            let mac = ep
                .mac()
                .ok_or_else(|| format!("stored MAC {:?} is invalid", ep.mac))?;
            let Some(tap) = endpoint::reattach_host_tap(&ep.ifname)? else {
                (self.log)(&format!(
                    "network {}: endpoint {}: its interface {} is neither in the daemon's \
                     namespace nor settled in its sandbox; removing the endpoint",
                    net.rec.name, ep.name, ep.ifname
                ));
                return Ok(None);
            };
            let (port, info_mac, _, _) =
                match self.engine_add_port(rt.nid, driver, &net.rec.driver_config, ep, mac) {
                    Ok(p) => p,
                    Err(e) => {
                        drop(tap);
                        return Err(e);
                    }
                };
            let ifindex = tap.ifindex();
            let host = Netns::current().map_err(|e| e.to_string())?;
            let rt_ep =
                self.finish_endpoint(port, tap, ifindex, host, false, &ep.name, driver, false)?;
            self.spawn_follow(&net.rec.id, &ep.id, port, ifindex, info_mac);
            return Ok(Some(rt_ep));
        }
        let ns = match Netns::open_path(path) {
            Ok(ns) if ns.inode() == ep.netns_inode => ns,
            Ok(_) => {
                (self.log)(&format!(
                    "network {}: endpoint {}: {} is now another namespace than the one it was \
                     attached to; removing the endpoint",
                    net.rec.name, ep.name, ep.netns_path
                ));
                return Ok(None);
            }
            Err(e) => {
                (self.log)(&format!(
                    "network {}: endpoint {}: its namespace is gone ({e}); removing the \
                     endpoint",
                    net.rec.name, ep.name
                ));
                return Ok(None);
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
        let (tap, fresh) = match endpoint::reattach_tap(path, &ep.ifname) {
            Ok(Some(t)) => (t, false),
            Ok(None) => {
                (self.log)(&format!(
                    "network {}: endpoint {}: its interface {} was gone; creating it again",
                    net.rec.name, ep.name, ep.ifname
                ));
                let plan = self.if_plan(
                    net,
                    driver,
                    ep.ifname.clone(),
                    info_mac,
                    mtu,
                    ep,
                    link_local,
                );
                let t = endpoint::create_interface(&ns, path, &plan).map_err(&undo_port)?;
                (t, true)
            }
            Err(e) => return Err(undo_port(e)),
        };
        let ifindex = tap.ifindex();
        let up = Rtnl::open(&ns)
            .and_then(|mut r| r.link_get_by_index(ifindex))
            .map(|l| l.is_up())
            .unwrap_or(fresh);
        let rt_ep = self.finish_endpoint(port, tap, ifindex, ns, up, &ep.name, driver, true)?;
        Ok(Some(rt_ep))
    }
}
