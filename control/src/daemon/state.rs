//! The daemon's state and operations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uvlan_dataplane::fwd::{ConfigError, Engine, Master, NetworkSpec, ParentSpec, PortId};

use crate::api::{Connect, CreateNetwork, NetworkSummary, Request, Response, RunInfo};
use crate::ids;
use crate::inspect::NetworkResource;
use crate::ipam::{AddressSpace, DefaultPools, StoredNetwork};
use crate::netns::{Netns, Rtnl, NETNS_RUN_DIR};
use crate::store::{
    AutoRemove, DriverConfig, EndpointRecord, HostRecord, NetworkRecord, ParentRef, Store,
    StoreError, RECORD_VERSION,
};

use super::attach::engine_err;
use super::dp::{with_engine, DataplaneApi};
use super::endpoint::{self};
use super::external;
use super::host::HostNet;
use super::model::{Daemon, EpAddrs, EpMac, EpPlace, EpRt, Net, NetRt, NewIpam, NewNetwork, State};
use super::options::{self, HostIf};
use crate::api::one_line;
use crate::logger::Logger;

/// Errors restoring the daemon from its store at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state is inconsistent.
    #[error("{0}")]
    State(String),
}

/// `/proc/PID/stat` field 22 (start time in clock ticks since boot).
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 1..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

impl Daemon {
    /// Loads the store, rebuilds IPAM, re-creates every network in the engine and
    /// re-attaches every endpoint's TAP. A corrupt file or inconsistent state is an error;
    /// an endpoint whose namespace is gone is removed (logged).
    pub fn start(
        store: Store,
        mut host: Box<dyn HostNet>,
        dp: Arc<dyn DataplaneApi>,
        log: Logger,
    ) -> Result<Arc<Daemon>, StartError> {
        let host_rec = store.load_or_init_host(|| {
            Ok(HostRecord {
                host_id: ids::new_id()?,
            })
        })?;
        let defaults =
            DefaultPools::for_host(&host_rec.host_id).with_reserved(host.reserved_prefixes());
        let mut records = store.load_networks(&mut |m| log(&m))?;
        let stored: Vec<StoredNetwork> = records
            .iter()
            .filter(|r| r.managed.is_none())
            .map(|r| StoredNetwork {
                id: r.id.clone(),
                name: r.name.clone(),
                ipam: r.ipam.clone(),
                endpoints: r.endpoints.iter().flat_map(|e| e.addrs.addrs()).collect(),
            })
            .collect();
        let space = AddressSpace::restore(defaults, stored).map_err(|e| {
            StartError::State(format!(
                "the stored networks under {} do not add up: {e}",
                store.root().join("networks").display()
            ))
        })?;
        let next_seq = records.iter().map(|r| r.seq + 1).max().unwrap_or(0);
        let daemon = Daemon::new(
            store,
            dp,
            log,
            State {
                host,
                space,
                nets: Vec::new(),
                next_seq,
                parent_ifindex: HashMap::new(),
            },
        );
        let mut reapers = Vec::new();
        {
            let mut st = daemon.lock();
            for rec in records.drain(..) {
                let net = daemon.restore_network(&mut st, rec);
                for ep in &net.rec.endpoints {
                    if let Some(a) = ep.auto_remove {
                        reapers.push((net.rec.id.clone(), ep.id.clone(), a));
                    }
                }
                st.nets.push(net);
            }
            // Parents may have changed while the daemon was down.
            daemon.reconcile_locked(&mut st);
        }
        for (net, ep, a) in reapers {
            daemon.spawn_reaper(net, ep, a);
        }
        Ok(daemon)
    }

    /// Serves one API request.
    pub fn handle(&self, req: Request) -> Response {
        let r = match req {
            Request::Ping => Ok(serde_json::Value::from("pong")),
            Request::NetworkCreate(c) => self.create_network(&c).map(Into::into),
            Request::NetworkLs => to_value(self.list()),
            Request::NetworkInspect { name } => self.inspect(&name).and_then(to_value),
            Request::NetworkRm { name } => self.remove_network(&name).map(Into::into),
            Request::NetworkConnect(c) => self.connect(&c).map(Into::into),
            Request::NetworkDisconnect { network, netns } => self
                .disconnect(&network, &netns, false)
                .map(|()| serde_json::Value::Null),
            Request::RunSetup(r) => self.run_setup(&r).and_then(to_value),
            Request::RunRemove { network, netns } => self
                .disconnect(&network, &netns, true)
                .map(|()| serde_json::Value::Null),
            Request::RunWatch {
                network,
                netns,
                pid,
            } => self
                .run_watch(&network, &netns, pid)
                .map(|()| serde_json::Value::Null),
            Request::Trace(t) => self.trace(&t).map(Into::into),
            Request::Stats { networks } => self.stats(&networks).and_then(to_value),
            Request::NetworkEnsure(e) => self.ensure_network(&e).map(Into::into),
            Request::NetworkDelete { network, owner } => {
                self.delete_managed(&network, &owner).map(Into::into)
            }
            Request::EndpointReserve { network, spec } => {
                self.reserve_endpoint(&network, &spec).map(Into::into)
            }
            Request::EndpointAttach(a) => self.attach_endpoint(&a).and_then(to_value),
            Request::EndpointDetach {
                network,
                key,
                forget,
                remove_empty_network,
            } => self
                .detach_endpoint(&network, &key, forget, remove_empty_network)
                .map(Into::into),
            Request::EndpointList { network } => self.list_endpoints(&network).and_then(to_value),
        };
        match r {
            Ok(result) => Response::Ok { result },
            Err(message) => Response::Error {
                message: one_line(&message),
            },
        }
    }

    // ---- networks ------------------------------------------------------------------------

    fn create_network(&self, req: &CreateNetwork) -> Result<String, String> {
        let mut st = self.lock();
        let new = NewNetwork {
            id: None,
            name: req.name.clone(),
            driver: req.driver.clone(),
            options: req.options.clone(),
            ipam: NewIpam::Own(req.ipam.clone()),
            ipv6: req.ipv6,
            internal: req.internal,
            managed: None,
            default_parent: None,
        };
        self.create_locked(&mut st, new)
    }

    /// Creates a network under the lock: name check, IPAM (own, on a copy, or taken as the
    /// front end gives it), driver options, parent, engine, store. Nothing changes on error.
    pub(super) fn create_locked(&self, st: &mut State, req: NewNetwork) -> Result<String, String> {
        if req.name.is_empty() {
            return Err("invalid name: name is empty".to_string());
        }
        if st.nets.iter().any(|n| n.rec.name == req.name) {
            return Err(format!("network with name {} already exists", req.name));
        }
        let driver = options::parse_driver(&req.driver)?;
        let id = match &req.id {
            Some(id) => id.clone(),
            None => ids::new_id().map_err(|e| format!("cannot generate a network ID: {e}"))?,
        };
        if st.nets.iter().any(|n| n.rec.id == id) {
            return Err(format!("network with ID {id} already exists"));
        }

        // IPAM first, as Docker does, on a copy: nothing is reserved unless all succeeds.
        let mut space = st.space.clone();
        let (ipam, ipam_config) = match &req.ipam {
            NewIpam::Own(cfg) => (
                space
                    .create_network_from_config(&id, &req.name, cfg, req.ipv6, true)
                    .map_err(|e| e.to_string())?,
                cfg.clone(),
            ),
            NewIpam::External(cfg) => (external::external_ipam(cfg)?, cfg.clone()),
        };

        let opts = options::parse_driver_opts(driver, &req.options)?;
        let given_parent = opts.parent.clone().or(req.default_parent.clone());
        let parent = match &given_parent {
            None => None,
            Some(given) => {
                let mut lookup_err = None;
                let host = &mut st.host;
                let mut probe = |name: &str| match host.link(name) {
                    Ok(Some(l)) => l.kind,
                    Ok(None) => HostIf::Missing,
                    Err(e) => {
                        lookup_err = Some(e);
                        HostIf::Missing
                    }
                };
                let resolved = options::resolve_parent(driver, given, &mut probe);
                if let Some(e) = lookup_err {
                    return Err(format!("cannot look up parent {given} on the host: {e}"));
                }
                let resolved = resolved?;
                Some(ParentRef {
                    given: given.clone(),
                    ifname: resolved.ifname,
                    vid: resolved.vid,
                })
            }
        };
        if let Some(p) = &parent {
            let holder = st.nets.iter().find(|n| {
                n.rec
                    .driver_config
                    .parent
                    .as_ref()
                    .is_some_and(|q| q.ifname == p.ifname && q.vid == p.vid)
            });
            if let Some(h) = holder {
                return Err(format!(
                    "network {} ({}) is already using parent interface {}",
                    h.rec.name,
                    ids::short_id(&h.rec.id),
                    p.given
                ));
            }
        }
        let isolated_mac = match parent {
            None => Some(
                ids::random_mac()
                    .map_err(|e| format!("cannot generate a MAC: {e}"))?
                    .to_string(),
            ),
            Some(_) => None,
        };
        let rec = NetworkRecord {
            version: RECORD_VERSION,
            seq: st.next_seq,
            id: id.clone(),
            name: req.name.clone(),
            created: ids::now_rfc3339(),
            driver: driver.as_str().to_string(),
            options: req.options.clone(),
            internal: req.internal,
            ipv6: req.ipv6,
            ipam_config,
            ipam,
            driver_config: DriverConfig {
                parent,
                ipvlan_mode: opts.ipvlan_mode.map(|m| m.as_str().to_string()),
                ipvlan_flag: opts.ipvlan_flag.map(|f| f.as_str().to_string()),
                macvlan_mode: opts.macvlan_mode.map(|m| m.as_str().to_string()),
                isolated_mac,
            },
            endpoints: Vec::new(),
            managed: req.managed,
        };
        let rt = self.engine_add_network(st, &rec)?;
        if let Err(e) = self.store.save_network(&rec) {
            self.engine_remove_network(&rt);
            return Err(e.to_string());
        }
        st.space = space;
        st.next_seq += 1;
        st.nets.push(Net {
            rec,
            rt: Some(rt),
            problem: None,
            problem_ifindex: None,
            eps: HashMap::new(),
            parked: HashMap::new(),
        });
        // A parent the engine already had may have changed since it was read.
        self.reconcile_locked(st);
        Ok(id)
    }

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

    fn list(&self) -> Vec<NetworkSummary> {
        let st = self.lock();
        st.nets
            .iter()
            .map(|n| NetworkSummary {
                id: n.rec.id.clone(),
                name: n.rec.name.clone(),
                driver: n.rec.driver.clone(),
                scope: "local".to_string(),
                ipv6: n.rec.ipv6,
                internal: n.rec.internal,
                created: n.rec.created.clone(),
            })
            .collect()
    }

    fn wire_mode(net: &Net) -> String {
        if let Some(p) = &net.problem {
            return format!("down: {p}");
        }
        let parent = net.rec.driver_config.parent.as_ref();
        match (parent, net.rt.as_ref().and_then(|r| r.wire.clone())) {
            (None, _) => "isolated (no parent: nothing leaves the host)".to_string(),
            (Some(_), _) if net.rec.internal => {
                "internal (the parent is held but no frame is sent or received on it)".to_string()
            }
            (Some(_), Some(mode)) => mode,
            (Some(_), None) => "not attached".to_string(),
        }
    }

    fn inspect(&self, key: &str) -> Result<NetworkResource, String> {
        let st = self.lock();
        let i = Self::find(&st, key)?;
        let net = &st.nets[i];
        let status = match &net.rec.managed {
            None => st.space.status(&net.rec.id).map_err(|e| e.to_string())?,
            Some(_) => external::external_status(&net.rec),
        };
        let mut view = NetworkResource::build(&net.rec, status, Self::wire_mode(net));
        if let Some(m) = &net.rec.managed {
            external::decorate_inspect(&mut view, m);
        }
        Ok(view)
    }

    fn remove_network(&self, key: &str) -> Result<String, String> {
        let mut st = self.lock();
        let i = Self::find(&st, key)?;
        if let Some(m) = &st.nets[i].rec.managed {
            return Err(external::refuse_cli(&st.nets[i].rec.name, m, "removed"));
        }
        self.remove_locked(&mut st, i)
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

    fn connect(&self, req: &Connect) -> Result<String, String> {
        let mut st = self.lock();
        let i = Self::find(&st, &req.network)?;
        if let Some(m) = &st.nets[i].rec.managed {
            return Err(external::refuse_cli(&st.nets[i].rec.name, m, "attached to"));
        }
        let ns = Netns::open(&req.netns).map_err(|e| e.to_string())?;
        let path = if req.netns.contains('/') {
            PathBuf::from(&req.netns)
        } else {
            Path::new(NETNS_RUN_DIR).join(&req.netns)
        };
        let place = EpPlace::simple(ns, &req.netns, path, false);
        let addrs = EpAddrs::Allocate {
            ip: req.ip.clone(),
            ip6: req.ip6.clone(),
        };
        let rec = self.connect_locked(&mut st, i, place, addrs, EpMac::Choose(req.mac.clone()))?;
        Ok(rec.ifname)
    }

    /// Finds the endpoint of network `i` for a namespace given by name/path (as at
    /// connect), or by what it resolves to now.
    fn find_endpoint(st: &State, i: usize, netns: &str) -> Option<usize> {
        let eps = &st.nets[i].rec.endpoints;
        if let Some(k) = eps.iter().position(|e| e.name == netns) {
            return Some(k);
        }
        let inode = Netns::open(netns).ok()?.inode();
        eps.iter().position(|e| e.netns_inode == inode)
    }

    fn disconnect(&self, network: &str, netns: &str, delete_netns: bool) -> Result<(), String> {
        let mut st = self.lock();
        self.disconnect_locked(&mut st, network, netns, delete_netns)
    }

    fn disconnect_locked(
        &self,
        st: &mut State,
        network: &str,
        netns: &str,
        delete_netns: bool,
    ) -> Result<(), String> {
        let i = Self::find(st, network)?;
        if let Some(m) = &st.nets[i].rec.managed {
            return Err(external::refuse_cli(
                &st.nets[i].rec.name,
                m,
                "detached from",
            ));
        }
        let Some(k) = Self::find_endpoint(st, i, netns) else {
            return Err(format!(
                "container {netns} is not connected to the network {}",
                st.nets[i].rec.name
            ));
        };
        let mut netrec = st.nets[i].rec.clone();
        let ep = netrec.endpoints.remove(k);
        if delete_netns && !ep.owns_netns {
            return Err(format!(
                "namespace {} was not created by \"uvlan run\"; use \"uvlan network \
                 disconnect\"",
                ep.name
            ));
        }
        let mut space = st.space.clone();
        space
            .release(&netrec.id, &ep.addrs)
            .map_err(|e| e.to_string())?;
        self.store
            .save_network(&netrec)
            .map_err(|e| e.to_string())?;
        st.space = space;
        st.nets[i].rec = netrec;
        if let Some(rt) = st.nets[i].eps.remove(&ep.id) {
            self.teardown_endpoint(rt);
        }
        if delete_netns {
            let name = Path::new(&ep.netns_path)
                .strip_prefix(NETNS_RUN_DIR)
                .ok()
                .and_then(|p| p.to_str())
                .map(str::to_string);
            match name {
                Some(n) => {
                    if let Err(e) = Netns::delete(&n) {
                        (self.log)(&format!("deleting namespace {n}: {e}"));
                    }
                }
                None => (self.log)(&format!(
                    "not deleting {}: not a named namespace",
                    ep.netns_path
                )),
            }
        }
        Ok(())
    }

    // ---- run -----------------------------------------------------------------------------

    fn run_setup(&self, req: &Connect) -> Result<RunInfo, String> {
        let mut st = self.lock();
        let i = Self::find(&st, &req.network)?;
        let name = req.netns.clone();
        let ns = Netns::open_name(&name).map_err(|e| e.to_string())?;
        if let Some(m) = &st.nets[i].rec.managed {
            return Err(external::refuse_cli(&st.nets[i].rec.name, m, "attached to"));
        }
        let path = Path::new(NETNS_RUN_DIR).join(&name);
        let place = EpPlace::simple(ns, &name, path, true);
        let addrs = EpAddrs::Allocate {
            ip: req.ip.clone(),
            ip6: req.ip6.clone(),
        };
        let rec = self.connect_locked(&mut st, i, place, addrs, EpMac::Choose(req.mac.clone()))?;
        Ok(RunInfo {
            netns: name,
            netns_path: rec.netns_path,
            ifname: rec.ifname,
        })
    }

    fn run_watch(&self, network: &str, netns: &str, pid: i32) -> Result<(), String> {
        let mut st = self.lock();
        let i = Self::find(&st, network)?;
        let Some(k) = Self::find_endpoint(&st, i, netns) else {
            return Err(format!(
                "container {netns} is not connected to the network {}",
                st.nets[i].rec.name
            ));
        };
        let Some(start_time) = process_start_time(pid) else {
            // Already gone: remove now.
            return self.disconnect_locked(&mut st, network, netns, true);
        };
        let auto = AutoRemove { pid, start_time };
        let mut netrec = st.nets[i].rec.clone();
        netrec.endpoints[k].auto_remove = Some(auto);
        self.store
            .save_network(&netrec)
            .map_err(|e| e.to_string())?;
        let (net_id, ep_id) = (netrec.id.clone(), netrec.endpoints[k].id.clone());
        st.nets[i].rec = netrec;
        drop(st);
        self.spawn_reaper(net_id, ep_id, auto);
        Ok(())
    }

    /// Waits (on its own thread) for an auto-remove process to exit, then removes its
    /// endpoint and namespace.
    fn spawn_reaper(&self, net_id: String, ep_id: String, auto: AutoRemove) {
        let Some(me) = self.me.upgrade() else { return };
        let spawned = std::thread::Builder::new()
            .name(format!("uvlan-reap-{}", auto.pid))
            .spawn(move || {
                if process_start_time(auto.pid) == Some(auto.start_time) {
                    crate::sys::wait_for_exit(auto.pid);
                }
                let mut st = me.lock();
                let Some(i) = st.nets.iter().position(|n| n.rec.id == net_id) else {
                    return;
                };
                let Some(ep) = st.nets[i].rec.endpoints.iter().find(|e| e.id == ep_id) else {
                    return;
                };
                let name = ep.name.clone();
                if let Err(e) = me.disconnect_locked(&mut st, &net_id, &name, true) {
                    (me.log)(&format!(
                        "auto-removing {name} after its process exited: {e}"
                    ));
                }
            });
        if let Err(e) = spawned {
            (self.log)(&format!("cannot start the auto-remove thread: {e}"));
        }
    }

    // ---- trace ---------------------------------------------------------------------------

    fn trace(&self, req: &crate::api::TraceRequest) -> Result<String, String> {
        let st = self.lock();
        let i = Self::find(&st, &req.network)?;
        let net = &st.nets[i];
        let Some(rt) = &net.rt else {
            return Err(format!(
                "network {} is down: {}",
                net.rec.name,
                net.problem.clone().unwrap_or_default()
            ));
        };
        let ports: Vec<(EndpointRecord, PortId)> = net
            .rec
            .endpoints
            .iter()
            .filter_map(|e| net.eps.get(&e.id).map(|r| (e.clone(), r.port)))
            .collect();
        let input = super::trace::TraceInput {
            rec: &net.rec,
            nid: rt.nid,
            parent: rt.parent,
            ports: &ports,
        };
        super::trace::run(&*self.dp, &input, req)
    }
}

pub(super) fn to_value<T: serde::Serialize>(v: T) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| format!("internal error encoding the answer: {e}"))
}
