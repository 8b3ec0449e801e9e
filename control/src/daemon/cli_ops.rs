//! The operations the uvlan CLI asks for: `network create`, `ls`, `inspect`, `rm`,
//! `connect` and `disconnect`, `run` (its namespace's endpoint, and removing it when the
//! process exits), and `trace`. Networks a front end manages are listed and inspected like
//! the others, but the CLI cannot change them.

use std::path::{Path, PathBuf};

use uvlan_dataplane::fwd::PortId;

use crate::api::{Connect, CreateNetwork, NetworkSummary, RunInfo};
use crate::inspect::NetworkResource;
use crate::netns::{ExitWatcher, Netns, NETNS_RUN_DIR};
use crate::store::{AutoRemove, EndpointRecord, Intent};

use super::external;
use super::model::{Daemon, EpAddrs, EpMac, EpPlace, Net, NewIpam, NewNetwork, State};

/// `/proc/PID/stat` field 22 (start time in clock ticks since boot).
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 1..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// `--ipam-driver`: `default` (or absent) is uvlan's IPAM; `dhcp` leases each endpoint's
/// IPv4 address from the parent's LAN and takes no subnet (the server's decides), no IPv6;
/// `null` is refused as Docker's macvlan and ipvlan drivers refuse it.
fn ipam_driver(req: &CreateNetwork, ipv4: bool) -> Result<NewIpam, String> {
    match req.ipam_driver.as_deref() {
        None | Some("" | "default") => Ok(NewIpam::Own(req.ipam.clone())),
        Some("dhcp") => {
            if !req.ipam.is_empty() {
                return Err(
                    "--subnet, --gateway, --ip-range and --aux-address cannot be used with \
                     --ipam-driver dhcp: the LAN's DHCP server decides the subnet, the gateway \
                     and the addresses"
                        .to_string(),
                );
            }
            if req.ipv6 {
                return Err(
                    "--ipv6 cannot be used with --ipam-driver dhcp: uvlan's DHCP client is \
                     IPv4 only"
                        .to_string(),
                );
            }
            if !ipv4 {
                return Err(
                    "--ipv4=false cannot be used with --ipam-driver dhcp: uvlan's DHCP client \
                     leases IPv4 addresses only"
                        .to_string(),
                );
            }
            Ok(NewIpam::Dhcp)
        }
        Some("null") => Err("ipv4 pool is empty".to_string()),
        Some(other) => Err(format!(
            "IPAM driver {other:?} not found: uvlan knows \"default\" and \"dhcp\""
        )),
    }
}

impl Daemon {
    pub(super) fn create_network(&self, req: &CreateNetwork) -> Result<String, String> {
        let mut options = req.options.clone();
        let ipv4 = super::options::enable_ipv4(req.ipv4, &mut options)?;
        let mut st = self.lock();
        let new = NewNetwork {
            id: None,
            name: req.name.clone(),
            driver: req.driver.clone(),
            options,
            ipam: ipam_driver(req, ipv4)?,
            ipv4,
            ipv6: req.ipv6,
            internal: req.internal,
            managed: None,
            default_parent: None,
        };
        let id = self.create_locked(&mut st, new)?;
        self.host_interface_option(&mut st, &id)?;
        Ok(id)
    }

    pub(super) fn list(&self) -> Vec<NetworkSummary> {
        let st = self.lock();
        st.nets
            .iter()
            .map(|n| NetworkSummary {
                id: n.rec.id.clone(),
                name: n.rec.name.clone(),
                driver: n.rec.driver.clone(),
                scope: "local".to_string(),
                ipv4: n.rec.ipv4,
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

    pub(super) fn inspect(&self, key: &str) -> Result<NetworkResource, String> {
        let st = self.lock();
        let i = Self::find(&st, key)?;
        let net = &st.nets[i];
        let status = match &net.rec.managed {
            None if net.rec.dhcp => Default::default(),
            None => st.space.status(&net.rec.id).map_err(|e| e.to_string())?,
            Some(_) => external::external_status(&net.rec),
        };
        // An endpoint still leasing its address (`connect_unlocking`) is not shown yet.
        let settled;
        let rec = match net.rec.endpoints.iter().any(|e| e.intent.is_some()) {
            false => &net.rec,
            true => {
                let mut r = net.rec.clone();
                r.endpoints.retain(|e| e.intent.is_none());
                settled = r;
                &settled
            }
        };
        let mut view = NetworkResource::build(rec, status, Self::wire_mode(net));
        for (id, rt) in &net.eps {
            if rt.fast_veth.is_some() {
                view.uvlan_wire
                    .endpoint_kinds
                    .insert(id.clone(), "veth+fast-path".to_string());
            }
        }
        if let Some(m) = &net.rec.managed {
            external::decorate_inspect(&mut view, m);
        }
        Ok(view)
    }

    pub(super) fn remove_network(&self, key: &str) -> Result<String, String> {
        let mut st = self.lock();
        let i = Self::find(&st, key)?;
        if let Some(m) = &st.nets[i].rec.managed {
            return Err(external::refuse_cli(&st.nets[i].rec.name, m, "removed"));
        }
        self.remove_locked(&mut st, i)
    }

    pub(super) fn connect(&self, req: &Connect) -> Result<String, String> {
        let st = self.lock();
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
        let rec = self.connect_unlocking(st, i, place, addrs, EpMac::Choose(req.mac.clone()))?;
        Ok(rec.ifname)
    }

    /// `network connect --host`: an interface of network `req.network` in the daemon's own
    /// namespace, made like an endpoint (a port: its own MAC on macvlan, the parent's on
    /// ipvlan; the address from `--ip`/`--ip6` or the IPAM), with host-scoped addresses and
    /// a route to each endpoint. Refused where the kernel's shim would reach no endpoint.
    pub(super) fn connect_host(&self, req: &Connect) -> Result<String, String> {
        let mut st = self.lock();
        let i = Self::find(&st, &req.network)?;
        let net = &st.nets[i].rec;
        if let Some(m) = &net.managed {
            return Err(external::refuse_cli(
                &net.name,
                m,
                "given a host interface by",
            ));
        }
        let addrs = EpAddrs::Allocate {
            ip: req.ip.clone(),
            ip6: req.ip6.clone(),
        };
        let rec =
            self.make_host_interface(&mut st, i, addrs, req.ifname.clone(), req.mac.clone())?;
        Ok(rec.ifname)
    }

    /// `network disconnect --host`: removes the network's host interface and its routes.
    pub(super) fn disconnect_host(&self, network: &str) -> Result<(), String> {
        let mut st = self.lock();
        let i = Self::find(&st, network)?;
        let net = &st.nets[i].rec;
        if let Some(m) = &net.managed {
            return Err(external::refuse_cli(&net.name, m, "detached from"));
        }
        if !net.endpoints.iter().any(|e| e.host_interface) {
            return Err(format!("network {} has no host interface", net.name));
        }
        self.remove_host_interface(&mut st, i)
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

    pub(super) fn disconnect(
        &self,
        network: &str,
        netns: &str,
        delete_netns: bool,
    ) -> Result<(), String> {
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
        let ep = st.nets[i].rec.endpoints[k].clone();
        if ep.intent.is_some() {
            return Err(format!(
                "container {netns} is still being connected to the network {} (its DHCP \
                 exchange is running): try again when the connect has finished",
                st.nets[i].rec.name
            ));
        }
        if delete_netns && !ep.owns_netns {
            return Err(format!(
                "namespace {} was not created by \"uvlan run\"; use \"uvlan network \
                 disconnect\"",
                ep.name
            ));
        }
        let net_id = st.nets[i].rec.id.clone();
        // Intent first: a crash from here on is finished at the next start (the interface,
        // then the record, then the addresses).
        let mut marked = ep.clone();
        marked.intent = Some(Intent::Remove { delete_netns });
        self.store
            .save_endpoint(&net_id, &marked)
            .map_err(|e| e.to_string())?;
        // The lease goes back while the address is still on the interface.
        let port = st.nets[i].eps.get(&ep.id).map(|rt| rt.port);
        self.release_lease(&ep, port);
        match st.nets[i].eps.remove(&ep.id) {
            Some(rt) => self.teardown_endpoint(rt),
            // Not restored at start: its interface may still be there.
            None => {
                super::recover::remove_interfaces(&self.host_tag, &ep, &self.log);
            }
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
        // The interface is gone: the record, then the addresses (never handed out while an
        // interface holds them).
        if let Err(e) = self.store.delete_endpoint(&net_id, &ep.id) {
            (self.log)(&format!(
                "endpoint {}: {e} (the next start finishes the removal)",
                ep.name
            ));
        }
        st.nets[i].rec.endpoints.remove(k);
        self.host_routes(st, i, &ep, false);
        if st.nets[i].rec.own_ipam() {
            if let Err(e) = st.space.release(&net_id, &ep.addrs) {
                (self.log)(&format!(
                    "endpoint {}: giving back its addresses: {e}",
                    ep.name
                ));
            }
        }
        self.freed_endpoint(st);
        Ok(())
    }

    pub(super) fn run_setup(&self, req: &Connect) -> Result<RunInfo, String> {
        let st = self.lock();
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
        let rec = self.connect_unlocking(st, i, place, addrs, EpMac::Choose(req.mac.clone()))?;
        let dns = rec.lease.iter().flat_map(|l| &l.dns);
        Ok(RunInfo {
            netns: name,
            netns_path: rec.netns_path.clone(),
            ifname: rec.ifname.clone(),
            dns: dns.map(|a| a.to_string()).collect(),
        })
    }

    pub(super) fn run_watch(&self, network: &str, netns: &str, pid: i32) -> Result<(), String> {
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
        let net_id = st.nets[i].rec.id.clone();
        let mut ep = st.nets[i].rec.endpoints[k].clone();
        ep.auto_remove = Some(auto);
        self.store
            .save_endpoint(&net_id, &ep)
            .map_err(|e| e.to_string())?;
        let ep_id = ep.id.clone();
        st.nets[i].rec.endpoints[k] = ep;
        self.watch_exit(&mut st, &net_id, &ep_id, auto);
        Ok(())
    }

    /// Removes the endpoint and its namespace once its auto-remove process has exited: a
    /// pidfd on the watcher hub (no thread while it waits), kept with the endpoint. A process
    /// already gone (or its PID taken by another) is handled at once.
    pub(super) fn watch_exit(&self, st: &mut State, net_id: &str, ep_id: &str, auto: AutoRemove) {
        let me = self.me.clone();
        let (net, ep) = (net_id.to_string(), ep_id.to_string());
        // On the hub thread: the removal takes the daemon's lock, under which this watcher
        // is dropped, so it runs on a thread of its own (one per exit, gone when done).
        let on_exit = move || {
            let spawned = std::thread::Builder::new()
                .name(format!("uvlan-reap-{}", auto.pid))
                .spawn(move || {
                    if let Some(d) = me.upgrade() {
                        d.reap(&net, &ep);
                    }
                });
            if let Err(e) = spawned {
                // Logged by nobody (the daemon may be gone): stderr is the daemon's log.
                eprintln!("cannot start the auto-remove thread: {e}");
            }
        };
        if process_start_time(auto.pid) != Some(auto.start_time) {
            on_exit();
            return;
        }
        let rt = st
            .nets
            .iter_mut()
            .find(|n| n.rec.id == net_id)
            .and_then(|n| n.eps.get_mut(ep_id));
        let Some(rt) = rt else {
            return;
        };
        match ExitWatcher::start(auto.pid, on_exit) {
            Ok(w) => rt.reaper = Some(w),
            Err(e) => (self.log)(&format!(
                "cannot watch process {} to auto-remove its endpoint: {e}",
                auto.pid
            )),
        }
    }

    /// Removes an auto-remove endpoint (and its namespace) after its process exited.
    fn reap(&self, net_id: &str, ep_id: &str) {
        let mut st = self.lock();
        let Some(i) = st.nets.iter().position(|n| n.rec.id == net_id) else {
            return;
        };
        let Some(ep) = st.nets[i].rec.endpoints.iter().find(|e| e.id == ep_id) else {
            return;
        };
        let name = ep.name.clone();
        if let Err(e) = self.disconnect_locked(&mut st, net_id, &name, true) {
            (self.log)(&format!(
                "auto-removing {name} after its process exited: {e}"
            ));
        }
    }

    pub(super) fn trace(&self, req: &crate::api::TraceRequest) -> Result<String, String> {
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
