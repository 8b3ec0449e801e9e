//! The daemon's state and operations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uvlan_dataplane::fwd::PortId;

use crate::api::{Connect, CreateNetwork, NetworkSummary, Request, Response, RunInfo};
use crate::ids;
use crate::inspect::NetworkResource;
use crate::ipam::{AddressSpace, DefaultPools, StoredNetwork};
use crate::netns::{Netns, NETNS_RUN_DIR};
use crate::store::{
    AutoRemove, DriverConfig, EndpointRecord, HostRecord, NetworkRecord, ParentRef, Store,
    StoreError, RECORD_VERSION,
};

use super::dp::DataplaneApi;
use super::external;
use super::host::HostNet;
use super::model::{Daemon, EpAddrs, EpMac, EpPlace, Net, NewIpam, NewNetwork, State};
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
