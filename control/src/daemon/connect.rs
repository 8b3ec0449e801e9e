//! Connecting an endpoint to a network, shared by the CLI (`network connect`, `run`) and the
//! front ends' attach: its MAC, its addresses (allocated by uvlan's IPAM or given), its
//! port, its interface (in the namespace, or in the daemon's namespace for the front end to
//! move), and its record. Nothing changes on error.

use std::collections::BTreeSet;

use uvlan_dataplane::fwd::{Driver, Engine, MacvlanMode, PortId};
use uvlan_dataplane::wire::MacAddr;

use std::net::{IpAddr, Ipv4Addr};

use crate::dhcp;
use crate::ids;
use crate::ipam::AddrRequest;
use crate::netns::{AddrOptions, Netns, Route, Rtnl};
use crate::store::{EndpointRecord, Intent, NetworkRecord};

use super::dp::with_engine;
use super::endpoint;
use super::model::{Daemon, EpAddrs, EpMac, EpPlace, State};
use super::options;

/// The default name of a network's host interface: `uv-` and the network's name, cut to the
/// kernel's 15 bytes (at a character boundary).
pub(super) fn host_ifname(network: &str) -> String {
    let mut n = String::from("uv-");
    for c in network.chars() {
        if n.len() + c.len_utf8() > 15 {
            break;
        }
        n.push(c);
    }
    n
}

/// An interface name the kernel accepts (`dev_valid_name`): 1 to 15 bytes, not `.` or `..`,
/// no `/`, `:` or whitespace.
fn check_ifname(n: &str) -> Result<(), String> {
    let bad = n.is_empty()
        || n.len() > 15
        || n == "."
        || n == ".."
        || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    match bad {
        true => Err(format!(
            "invalid interface name {n:?}: 1 to 15 bytes, not \".\" or \"..\", without \"/\", \":\" \
             or spaces"
        )),
        false => Ok(()),
    }
}

/// The option of `network create` (and of Docker's `docker network create -o`) that gives the
/// network a host interface at once: `uvlan.host_interface=IP`, or `IP,IP6`.
pub const HOST_INTERFACE_OPTION: &str = "uvlan.host_interface";

/// The longest random pause before a connect's first DISCOVER (RFC 2131 4.4.1 asks for 1 to
/// 10 s at boot; a connect is one client among running ones, and a short pause is enough to
/// spread a burst of parallel connects).
pub(super) const CONNECT_JITTER: std::time::Duration = std::time::Duration::from_millis(100);

impl Daemon {
    /// Makes network `i`'s host interface (`network connect --host`, or the
    /// [`HOST_INTERFACE_OPTION`]): an endpoint in the daemon's own namespace named `ifname`
    /// (default [`host_ifname`]), with host-scoped addresses and routes toward the other
    /// endpoints. Refused where a kernel shim would reach no endpoint, and when the network
    /// has one already. Nothing changes on error.
    pub(super) fn make_host_interface(
        &self,
        st: &mut State,
        i: usize,
        addrs: EpAddrs,
        ifname: Option<String>,
        mac: Option<String>,
    ) -> Result<EndpointRecord, String> {
        let net = &st.nets[i].rec;
        options::host_interface_allowed(net)?;
        if let Some(h) = net.endpoints.iter().find(|e| e.host_interface) {
            return Err(format!(
                "network {} already has a host interface ({}); remove it with \"uvlan network \
                 disconnect --host {}\"",
                net.name, h.ifname, net.name
            ));
        }
        if net.dhcp {
            return Err(format!(
                "network {} leases its addresses from DHCP: it has no host interface",
                net.name
            ));
        }
        let ifname = ifname.unwrap_or_else(|| host_ifname(&net.name));
        check_ifname(&ifname)?;
        let ns = Netns::current().map_err(|e| e.to_string())?;
        let place = EpPlace {
            ns,
            name: format!("host:{ifname}"),
            path: std::path::PathBuf::from("/proc/self/ns/net"),
            owns_netns: false,
            ifname: Some(ifname),
            host_name: None,
            routes: Some(Vec::new()),
            mtu: None,
            key: None,
            host_interface: true,
            lease: None,
        };
        self.connect_locked(st, i, place, addrs, EpMac::Choose(mac))
    }

    /// Removes network `i`'s host interface, if it has one, as a disconnect removes an
    /// endpoint: the intent, the interface (its routes go with it), the record, the
    /// addresses. Used by `network disconnect --host` and before a network is removed.
    pub(super) fn remove_host_interface(&self, st: &mut State, i: usize) -> Result<(), String> {
        let Some(k) = st.nets[i]
            .rec
            .endpoints
            .iter()
            .position(|e| e.host_interface)
        else {
            return Ok(());
        };
        let ep = st.nets[i].rec.endpoints[k].clone();
        let net_id = st.nets[i].rec.id.clone();
        let mut marked = ep.clone();
        marked.intent = Some(Intent::Remove {
            delete_netns: false,
        });
        self.store
            .save_endpoint(&net_id, &marked)
            .map_err(|e| e.to_string())?;
        match st.nets[i].eps.remove(&ep.id) {
            Some(rt) => self.teardown_endpoint(rt),
            None => {
                super::recover::remove_interfaces(&self.host_tag, &ep, &self.log);
            }
        }
        if let Err(e) = self.store.delete_endpoint(&net_id, &ep.id) {
            (self.log)(&format!(
                "host interface {}: {e} (the next start finishes the removal)",
                ep.ifname
            ));
        }
        st.nets[i].rec.endpoints.remove(k);
        let own_ipam = st.nets[i].rec.own_ipam();
        if own_ipam {
            if let Err(e) = st.space.release(&net_id, &ep.addrs) {
                (self.log)(&format!(
                    "host interface {}: giving back its addresses: {e}",
                    ep.ifname
                ));
            }
        }
        self.freed_endpoint(st);
        Ok(())
    }

    /// Chooses the endpoint's MAC: ipvlan none (the engine gives the master's), macvlan the
    /// requested one (checked) or a random unique one.
    pub(super) fn choose_mac(
        st: &mut State,
        net_idx: usize,
        req: Option<&str>,
    ) -> Result<MacAddr, String> {
        let net = &st.nets[net_idx];
        let driver = options::parse_driver(&net.rec.driver)?;
        if driver == Driver::Ipvlan {
            if req.is_some() {
                return Err(
                    "ipvlan interfaces do not support custom mac address assignment".to_string(),
                );
            }
            return Ok(MacAddr::ZERO);
        }
        let parent = net.rec.driver_config.parent.clone();
        // MACs in use on the same parent (any VID), or on this network without a parent.
        let mut taken: Vec<(MacAddr, String, String)> = Vec::new();
        let mut all: BTreeSet<MacAddr> = BTreeSet::new();
        for n in &st.nets {
            let same = match (&parent, &n.rec.driver_config.parent) {
                (Some(p), Some(q)) => p.ifname == q.ifname,
                (None, None) => n.rec.id == net.rec.id,
                _ => false,
            };
            let reserved = n.rec.managed.iter().flat_map(|m| m.reserved.iter());
            // Endpoints whose CreateEndpoint leases their address now hold their MAC too.
            let pending = n.pending.iter().filter(|(_, m)| !m.is_zero());
            let macs = n
                .rec
                .endpoints
                .iter()
                .map(|ep| (ep.mac(), ep.name.clone()))
                .chain(reserved.map(|r| (r.mac.parse().ok(), r.key.clone())))
                .chain(pending.map(|(k, m)| (Some(*m), k.clone())));
            for (mac, holder) in macs {
                if let Some(m) = mac {
                    all.insert(m);
                    if same && n.rec.driver == "macvlan" {
                        taken.push((m, holder, n.rec.name.clone()));
                    }
                }
            }
        }
        let parent_mac = match &parent {
            Some(p) => st.host.link(&p.ifname).ok().flatten().and_then(|l| l.mac),
            None => None,
        };
        // A passthru macvlan carries the lower's MAC (C43). The kernel would write a requested
        // MAC onto the lower; uvlan never reprograms the host's NIC, so it refuses one.
        if net.rec.driver_config.macvlan_mode() == Some(MacvlanMode::Passthru) {
            if let Some(m) = parent_mac {
                return match req {
                    None => Ok(m),
                    Some(_) => Err(
                        "a passthru macvlan endpoint carries the parent interface's MAC: \
                         --mac-address would have to change the parent's own MAC, which uvlan \
                         never does"
                            .to_string(),
                    ),
                };
            }
        }
        match req {
            Some(text) => {
                let m: MacAddr = text.parse().map_err(|e| format!("{e}"))?;
                if !m.is_valid_unicast() {
                    return Err(format!(
                        "MAC address {m} is a multicast or zero address: an endpoint needs a \
                         unicast MAC"
                    ));
                }
                if let Some((_, ep, n)) = taken.iter().find(|(t, _, _)| *t == m) {
                    return Err(format!(
                        "MAC address {m} is already used by endpoint {ep} of network {n}: \
                         macvlan MACs must be unique on a parent"
                    ));
                }
                if parent_mac == Some(m) {
                    return Err(format!(
                        "MAC address {m} is the parent interface's own MAC: pick another one"
                    ));
                }
                Ok(m)
            }
            None => loop {
                let m = ids::random_mac().map_err(|e| format!("cannot generate a MAC: {e}"))?;
                if !all.contains(&m) && parent_mac != Some(m) {
                    return Ok(m);
                }
            },
        }
    }

    /// Creates an endpoint of network `i`: MAC, addresses (allocated or given), engine
    /// port, TAP or fast-path veth pair (in the namespace, or in the daemon's namespace for
    /// the front end to move), dataplane, watcher, store. Nothing changes on error. On a DHCP
    /// network the lease is taken under the lock; [`Daemon::connect_unlocking`] takes it
    /// without.
    pub(super) fn connect_locked(
        &self,
        st: &mut State,
        i: usize,
        place: EpPlace,
        addrs: EpAddrs,
        mac: EpMac,
    ) -> Result<EndpointRecord, String> {
        self.connect_inner(st, i, place, addrs, mac, false)
    }

    /// [`Daemon::connect_locked`] for the CLI (`network connect`, `run`): on a DHCP network
    /// the endpoint is made and recorded with its `create` intent under the lock (so its
    /// name, MAC and namespace are taken, and a crash from here on is rolled back at the next
    /// start), then the lock is released for the exchange with the server (up to
    /// [`dhcp::ACQUIRE_TIMEOUT`]; other requests go on meanwhile), after a random pause of up
    /// to [`CONNECT_JITTER`] so that a burst of connects does not reach the server at once,
    /// and at most [`super::model::DHCP_SLOTS`] at a time;
    /// then, under the lock again, the lease is recorded and the intent cleared, or
    /// everything is rolled back. Until then the endpoint is not shown by inspect, cannot be
    /// disconnected and is not renewed.
    pub(super) fn connect_unlocking(
        &self,
        mut st: std::sync::MutexGuard<'_, State>,
        i: usize,
        place: EpPlace,
        addrs: EpAddrs,
        mac: EpMac,
    ) -> Result<EndpointRecord, String> {
        if !st.nets[i].rec.dhcp {
            return self.connect_locked(&mut st, i, place, addrs, mac);
        }
        let rec = self.connect_inner(&mut st, i, place, addrs, mac, true)?;
        let net_id = st.nets[i].rec.id.clone();
        let netname = st.nets[i].rec.name.clone();
        drop(st);
        let mac = rec.mac().map(|m| m.octets()).unwrap_or_default();
        let leased = self.in_dhcp_turn(mac, || {
            Netns::open_path(std::path::Path::new(&rec.netns_path))
                .map_err(|e| e.to_string())
                .and_then(|ns| match ns.inode() == rec.netns_inode {
                    true => Ok(ns),
                    false => Err(format!("{} is now another namespace", rec.netns_path)),
                })
                .and_then(|ns| self.lease_endpoint(&ns, &rec))
        });
        let mut st = self.lock();
        self.finish_lease(&mut st, &net_id, &netname, rec, leased)
    }

    /// Runs the DHCP acquisition `acquire` of client `mac`, which the caller runs without
    /// the state lock (`network connect` and `run`, Docker's CreateEndpoint): it waits for a
    /// turn (at most [`super::model::DHCP_SLOTS`] at a time, one per MAC), then pauses at
    /// random for up to [`CONNECT_JITTER`], so that a burst of new endpoints does not reach
    /// the server at once.
    pub(super) fn in_dhcp_turn<T>(&self, mac: [u8; 6], acquire: impl FnOnce() -> T) -> T {
        let turn = self.dhcp_turn(mac);
        std::thread::sleep(dhcp::jitter(CONNECT_JITTER));
        let out = acquire();
        drop(turn);
        out
    }

    /// The end of [`Daemon::connect_unlocking`], under the lock: the lease recorded, or the
    /// pending endpoint rolled back.
    fn finish_lease(
        &self,
        st: &mut State,
        net_id: &str,
        netname: &str,
        mut rec: EndpointRecord,
        leased: Result<(dhcp::Lease, crate::ipam::EndpointAddr), String>,
    ) -> Result<EndpointRecord, String> {
        let name = rec.name.clone();
        let i = st.nets.iter().position(|n| n.rec.id == net_id);
        let k = i.and_then(|i| {
            let eps = &st.nets[i].rec.endpoints;
            eps.iter()
                .position(|e| e.id == rec.id && e.intent.is_some())
        });
        let (Some(i), Some(k)) = (i, k) else {
            // Nothing removes a pending endpoint; should something have, its lease goes back.
            if let Ok((lease, _)) = leased {
                rec.lease = Some(lease);
                self.release_lease(&rec, None);
            }
            return Err(format!(
                "cannot connect {name} to network {netname}: the endpoint was removed while \
                 it leased its address"
            ));
        };
        let drop_pending = |st: &mut State, rec: &EndpointRecord, why: String| {
            st.nets[i].rec.endpoints.remove(k);
            match st.nets[i].eps.remove(&rec.id) {
                Some(rt) => self.teardown_endpoint(rt),
                None => {
                    super::recover::remove_interfaces(&self.host_tag, rec, &self.log);
                }
            }
            if let Err(e) = self.store.delete_endpoint(net_id, &rec.id) {
                // The intent stays: the next start removes what is left.
                (self.log)(&format!("endpoint {name}: {e}"));
            }
            self.freed_endpoint(st);
            why
        };
        match leased {
            Ok((lease, addr)) => {
                rec.addrs.v4 = Some(addr);
                rec.lease = Some(lease);
                rec.intent = None;
                if let Err(e) = self.store.save_endpoint(net_id, &rec) {
                    let port = st.nets[i].eps.get(&rec.id).map(|rt| rt.port);
                    self.release_lease(&rec, port);
                    return Err(drop_pending(st, &rec, e.to_string()));
                }
                st.nets[i].rec.endpoints[k] = rec.clone();
                self.renew_kick();
                Ok(rec)
            }
            Err(e) => Err(drop_pending(
                st,
                &rec,
                format!("cannot connect {name} to network {netname}: {e}; nothing was left behind"),
            )),
        }
    }

    fn connect_inner(
        &self,
        st: &mut State,
        i: usize,
        place: EpPlace,
        addrs: EpAddrs,
        mac: EpMac,
        defer_lease: bool,
    ) -> Result<EndpointRecord, String> {
        let name = place.name.clone();
        let netname = st.nets[i].rec.name.clone();
        if let Some(p) = &st.nets[i].problem {
            return Err(format!("network {netname} is down: {p}"));
        }
        let Some(nid) = st.nets[i].rt.as_ref().map(|r| r.nid) else {
            return Err(format!("network {netname} is not set up in the dataplane"));
        };
        // A TAP the front end moves has no namespace yet (its inode is learned on arrival).
        let inode = match place.host_name {
            Some(_) => 0,
            None => place.ns.inode(),
        };
        if inode != 0
            && st.nets[i]
                .rec
                .endpoints
                .iter()
                .any(|e| e.netns_inode == inode)
        {
            return Err(format!(
                "endpoint with name {name} already exists in network {netname}"
            ));
        }
        let driver = options::parse_driver(&st.nets[i].rec.driver)?;
        let (mac, req_mac) = match mac {
            EpMac::Choose(req) => (
                Self::choose_mac(st, i, req.as_deref()).map_err(|e| {
                    format!("failed to create endpoint {name} on network {netname}: {e}")
                })?,
                req,
            ),
            EpMac::Fixed(m) => (m, None),
        };
        let net_id = st.nets[i].rec.id.clone();
        // Taken from the address space directly (no copy of it): given back below if a later
        // step fails.
        let own_ipam = matches!(addrs, EpAddrs::Allocate { .. }) && st.nets[i].rec.own_ipam();
        let (addrs, req_ip, req_ip6) = match addrs {
            // A DHCP network: the address comes with the lease (`--ip` is asked for).
            EpAddrs::Allocate { ip6: Some(_), .. } if st.nets[i].rec.dhcp => {
                return Err(format!(
                    "network {netname} leases IPv4 addresses from DHCP: --ip6 cannot be used"
                ))
            }
            EpAddrs::Allocate { ip, ip6: None } if st.nets[i].rec.dhcp => {
                (Default::default(), ip, None)
            }
            EpAddrs::Allocate { ip, ip6 } => {
                Self::check_static_ips(&st.nets[i].rec, ip.is_some(), ip6.is_some())?;
                (
                    st.space
                        .allocate(
                            &net_id,
                            &AddrRequest::with_ips(ip.as_deref(), ip6.as_deref()),
                        )
                        .map_err(|e| e.to_string())?,
                    ip,
                    ip6,
                )
            }
            EpAddrs::Given(a) => (a, None, None),
        };
        let release = |st: &mut State, why: String| {
            if own_ipam {
                if let Err(e) = st.space.release(&net_id, &addrs) {
                    (self.log)(&format!("giving back the addresses of {name}: {e}"));
                }
            }
            why
        };
        let made = self.make_endpoint(
            st,
            i,
            place,
            nid,
            driver,
            mac,
            addrs,
            (req_ip, req_ip6, req_mac),
            defer_lease,
        );
        match made {
            Ok(rec) => Ok(rec),
            Err(e) => Err(release(st, e)),
        }
    }

    /// The part of [`Daemon::connect_locked`] after the addresses are taken: the record with
    /// its `create` intent, the engine port, the TAP (or veth pair), the dataplane and
    /// watcher, the settled record. On error everything it did is undone (the caller gives
    /// the addresses back). With `defer_lease` on a DHCP network it stops before the lease:
    /// the endpoint is in the state with its intent, for [`Daemon::finish_lease`].
    #[allow(clippy::too_many_arguments)]
    fn make_endpoint(
        &self,
        st: &mut State,
        i: usize,
        place: EpPlace,
        nid: uvlan_dataplane::fwd::NetworkId,
        driver: Driver,
        mac: MacAddr,
        addrs: crate::ipam::EndpointAddrs,
        (req_ip, req_ip6, req_mac): (Option<String>, Option<String>, Option<String>),
        defer_lease: bool,
    ) -> Result<EndpointRecord, String> {
        let name = place.name.clone();
        let given_lease = place.lease.clone();
        let net_id = st.nets[i].rec.id.clone();
        let inode = match place.host_name {
            Some(_) => 0,
            None => place.ns.inode(),
        };
        let ifname = match (&place.ifname, &place.host_name) {
            (_, Some(host)) => host.clone(),
            (Some(n), None) => n.clone(),
            (None, None) => Rtnl::open(&place.ns)
                .and_then(|mut r| r.next_free_name("eth"))
                .map_err(|e| format!("cannot pick an interface name in {name}: {e}"))?,
        };
        let mut rec = EndpointRecord {
            id: ids::new_id().map_err(|e| e.to_string())?,
            sandbox_id: ids::new_id().map_err(|e| e.to_string())?,
            name: name.clone(),
            netns_path: place.path.display().to_string(),
            netns_inode: inode,
            ifname: ifname.clone(),
            mac: mac.to_string(),
            addrs,
            req_ip,
            req_ip6,
            req_mac,
            created: ids::now_rfc3339(),
            owns_netns: place.owns_netns,
            auto_remove: None,
            key: place.key.clone(),
            host_name: place.host_name.clone(),
            intent: Some(Intent::Create),
            host_interface: place.host_interface,
            lease: None,
        };
        if let Some(k) = &place.key {
            if ids::is_valid_id(k)
                && st
                    .nets
                    .iter()
                    .all(|n| n.rec.endpoints.iter().all(|e| e.id != *k))
            {
                // Docker's endpoint ID doubles as uvlan's.
                rec.id = k.clone();
            }
        }
        let (port, port_mac, port_mtu, link_local) =
            self.engine_add_port(nid, driver, &st.nets[i].rec.driver_config, &rec, mac)?;
        rec.mac = port_mac.to_string();
        let undo_port = |why: String| {
            let _ = with_engine(&*self.dp, move |e: &mut Engine| e.remove_port(port));
            why
        };
        let mtu = match place.mtu {
            None | Some(0) => port_mtu,
            Some(m) if (68..=port_mtu).contains(&m) => m,
            Some(m) => {
                return Err(undo_port(format!(
                    "invalid MTU {m}: it must be between 68 and the parent's MTU {port_mtu}"
                )))
            }
        };
        let mut plan = self.if_plan(&st.nets[i], driver, ifname, port_mac, mtu, &rec, link_local);
        plan.custom_routes = place.routes.clone();
        // Write-ahead: the record with its intent exists before anything is made in the
        // kernel, so a crash from here on is rolled back at the next start.
        self.store
            .save_endpoint(&net_id, &rec)
            .map_err(|e| undo_port(e.to_string()))?;
        let forget = |why: String| {
            if let Err(e) = self.store.delete_endpoint(&net_id, &rec.id) {
                // The intent stays: the next start removes what is left.
                (self.log)(&format!("endpoint {name}: {e}"));
            }
            why
        };
        // Every endpoint but the host interface: `network connect`, `run`, Docker's Join
        // (the veth end Docker moves) and CNI ADD.
        let fast = match options::fast_path_opt(&st.nets[i].rec.options) {
            _ if place.host_interface => false,
            Ok(None) => self.fast_path(),
            Ok(Some(false)) => false,
            Ok(Some(true)) if self.fast_path() => true,
            Ok(Some(true)) => {
                return Err(forget(undo_port(format!(
                    "network {} asks for the fast path ({}=true) but the daemon runs without \
                     it: start it with --fast-path on or auto (see uvlan doctor)",
                    st.nets[i].rec.name,
                    options::FAST_PATH_OPT
                ))))
            }
            Err(e) => return Err(forget(undo_port(e))),
        };
        let mut fast_veth = None;
        let mut fast_idx = None;
        let (tap, ns, up, watch) = match &place.host_name {
            None if fast => {
                let (tap, veth, idx) = endpoint::create_fast_interface(&place.ns, &plan, &rec.id)
                    .map_err(|e| forget(undo_port(self.fd_hint(e))))?;
                fast_veth = Some(veth);
                fast_idx = Some(idx);
                (tap, place.ns, true, true)
            }
            None => {
                let tap = endpoint::create_interface(&place.ns, &place.path, &plan)
                    .map_err(|e| forget(undo_port(self.fd_hint(e))))?;
                (tap, place.ns, true, true)
            }
            Some(host) if fast => {
                let (tap, veth, idx) = endpoint::create_fast_for_move(host, &plan, &rec.id)
                    .map_err(|e| forget(undo_port(self.fd_hint(e))))?;
                let here = match Netns::current() {
                    Ok(h) => h,
                    Err(e) => {
                        endpoint::destroy_tap(tap);
                        endpoint::delete_fast_leftovers(&rec.id);
                        return Err(forget(undo_port(self.fd_hint(e.to_string()))));
                    }
                };
                fast_veth = Some(veth);
                fast_idx = Some(idx);
                (tap, here, false, false)
            }
            Some(host) => {
                let tap = endpoint::create_for_move(host, &plan)
                    .map_err(|e| forget(undo_port(self.fd_hint(e))))?;
                let here = match Netns::current() {
                    Ok(h) => h,
                    Err(e) => {
                        endpoint::destroy_tap(tap);
                        return Err(forget(undo_port(self.fd_hint(e.to_string()))));
                    }
                };
                (tap, here, false, false)
            }
        };
        let ifindex = fast_idx.unwrap_or_else(|| tap.ifindex());
        let rt = self
            .finish_endpoint(port, tap, ifindex, ns, up, &name, driver, watch, fast_veth)
            .map_err(|e| forget(self.fd_hint(e)))?;
        if let Some(lease) = given_lease {
            // Leased before (Docker's CreateEndpoint): the front end puts the address on the
            // interface, uvlan keeps the lease from here on.
            rec.lease = Some(lease);
        } else if st.nets[i].rec.dhcp && defer_lease {
            // Pending: the lease is taken without the lock (`connect_unlocking`).
            st.nets[i].rec.endpoints.push(rec.clone());
            st.nets[i].eps.insert(rec.id.clone(), rt);
            return Ok(rec);
        } else if st.nets[i].rec.dhcp {
            // The record keeps its `create` intent until the lease is on the interface: a
            // crash in between is rolled back at the next start.
            match self.lease_endpoint(&rt.netns, &rec) {
                Ok((lease, addr)) => {
                    rec.addrs.v4 = Some(addr);
                    rec.lease = Some(lease);
                }
                Err(e) => {
                    self.teardown_endpoint(rt);
                    return Err(forget(format!(
                        "cannot connect {name} to network {}: {e}; nothing was left behind",
                        st.nets[i].rec.name
                    )));
                }
            }
        }
        rec.intent = None;
        if let Err(e) = self.store.save_endpoint(&net_id, &rec) {
            self.release_lease(&rec, Some(rt.port));
            self.teardown_endpoint(rt);
            return Err(forget(e.to_string()));
        }
        st.nets[i].rec.endpoints.push(rec.clone());
        st.nets[i].eps.insert(rec.id.clone(), rt);
        if rec.lease.is_some() {
            self.renew_kick();
        }
        self.host_routes(st, i, &rec, true);
        if place.host_name.is_some() {
            self.spawn_follow(&net_id, &rec.id, port, ifindex, port_mac);
        }
        Ok(rec)
    }

    /// The host interface's routes (`network connect --host`) toward endpoint `ep` of
    /// network `i`, added when it connects and deleted when it leaves; for the host interface
    /// itself, toward every other endpoint (its own routes go with its interface). Failures
    /// are logged: the endpoint itself is fine, only the host's shortcut to it is missing.
    pub(super) fn host_routes(&self, st: &State, i: usize, ep: &EndpointRecord, add: bool) {
        let eps = &st.nets[i].rec.endpoints;
        let Some(h) = eps.iter().find(|e| e.host_interface) else {
            return;
        };
        let targets: Vec<crate::ipam::EndpointAddrs> = if ep.host_interface {
            if !add {
                return;
            }
            eps.iter()
                .filter(|e| !e.host_interface)
                .map(|e| e.addrs)
                .collect()
        } else if h.id == ep.id {
            return;
        } else {
            vec![ep.addrs]
        };
        if let Err(e) = endpoint::host_routes(&h.ifname, &targets, add) {
            (self.log)(&format!(
                "network {}: host interface {}: {e}",
                st.nets[i].rec.name, h.ifname
            ));
        }
    }

    /// At start: the host interface of network `i`, if any, routes toward exactly the
    /// endpoints the network has now (some may have gone while the daemon was down).
    pub(super) fn sync_host_routes(&self, st: &State, i: usize) {
        let eps = &st.nets[i].rec.endpoints;
        let Some(h) = eps.iter().find(|e| e.host_interface) else {
            return;
        };
        let want: Vec<crate::ipam::EndpointAddrs> = eps
            .iter()
            .filter(|e| !e.host_interface)
            .map(|e| e.addrs)
            .collect();
        if let Err(e) = endpoint::sync_host_routes(&h.ifname, &want) {
            (self.log)(&format!(
                "network {}: host interface {}: {e}",
                st.nets[i].rec.name, h.ifname
            ));
        }
    }

    /// A DHCP network's new endpoint: leases an address for `rec` (its MAC, a client
    /// identifier from its ID, `--ip` as option 50) and puts it on the interface with the
    /// lease's routes (classless routes, else the router as default route). On error nothing
    /// of the lease is left on the interface (the caller removes the interface).
    fn lease_endpoint(
        &self,
        ns: &Netns,
        rec: &EndpointRecord,
    ) -> Result<(dhcp::Lease, crate::ipam::EndpointAddr), String> {
        let requested = match &rec.req_ip {
            None => None,
            Some(t) => Some(
                t.parse::<Ipv4Addr>()
                    .map_err(|_| format!("invalid --ip {t:?}: expected an IPv4 address"))?,
            ),
        };
        let mut rtnl = Rtnl::open(ns).map_err(|e| e.to_string())?;
        let ifindex = rtnl.link_get(&rec.ifname).map_err(|e| e.to_string())?.index;
        let mac = rec.mac().map(|m| m.octets()).unwrap_or_default();
        let client = dhcp::Client {
            ifindex,
            mac,
            client_id: dhcp::client_id_for(&rec.id),
            hostname: Some(rec.name.clone()).filter(|n| !n.contains('/')),
        };
        let lease = dhcp::acquire(ns, &client, requested).map_err(|e| e.to_string())?;
        let addr = dhcp::endpoint_addr(&lease)
            .ok_or_else(|| format!("the DHCP server gave a bad address {}", lease.addr))?;
        let configured = (|| -> Result<(), crate::netns::NetnsError> {
            rtnl.addr_add(
                ifindex,
                IpAddr::V4(lease.addr),
                lease.prefix_len,
                AddrOptions::default(),
            )?;
            if lease.routes.is_empty() {
                if let Some(r) = lease.router {
                    rtnl.route_replace(&Route::default_via(IpAddr::V4(r), Some(ifindex)))?;
                }
            }
            // RFC 3442: with classless routes the router option is ignored.
            for (dst, len, gw) in &lease.routes {
                let gw = (!gw.is_unspecified()).then_some(IpAddr::V4(*gw));
                rtnl.route_replace(&Route::to(IpAddr::V4(*dst), *len, gw, Some(ifindex)))?;
            }
            Ok(())
        })();
        if let Err(e) = configured {
            let _ = dhcp::release(ns, mac, &lease);
            return Err(format!(
                "cannot configure the lease {}/{} on {}: {e}",
                lease.addr, lease.prefix_len, rec.ifname
            ));
        }
        (self.log)(&format!(
            "endpoint {}: DHCP lease {}/{} from {} for {}s",
            rec.name, lease.addr, lease.prefix_len, lease.server_id, lease.lease_secs
        ));
        Ok((lease, addr))
    }

    /// Gives an endpoint's DHCP lease back (RELEASE), while its address is still on its
    /// interface; with the endpoint's dataplane `port`, waits (a quarter of a second at most)
    /// until the dataplane has read the RELEASE from the endpoint's queue, so that removing
    /// the endpoint right after does not take the frame with it. Failures are logged: the
    /// lease then expires at the server.
    pub(super) fn release_lease(&self, ep: &EndpointRecord, port: Option<PortId>) {
        let Some(lease) = &ep.lease else {
            return;
        };
        let mac = ep.mac().map(|m| m.octets()).unwrap_or_default();
        let sent = Netns::open_path(std::path::Path::new(&ep.netns_path))
            .map_err(|e| e.to_string())
            .and_then(|ns| {
                dhcp::release_observed(&ns, mac, lease, || port.and_then(|p| self.port_read(p)))
                    .map_err(|e| e.to_string())
            });
        match sent {
            Ok(Some(before)) => {
                if let Some(p) = port {
                    self.wait_port_read(p, before);
                }
            }
            Ok(None) => {}
            Err(e) => (self.log)(&format!(
                "endpoint {}: DHCP RELEASE of {}: {e} (the lease expires at the server)",
                ep.name, lease.addr
            )),
        }
    }

    /// Frames the dataplane has read from port `p`'s TAP (`None`: no counters).
    pub(super) fn port_read(&self, p: PortId) -> Option<u64> {
        let stats = self.dp.stats().ok().flatten()?;
        stats.port(p).map(|c| c.rx_frames)
    }

    /// Waits (250 ms at most) until the dataplane has read more than `before` frames from
    /// port `p`: a frame just sent from the endpoint is then out of its queue.
    pub(super) fn wait_port_read(&self, p: PortId, before: u64) {
        let end = std::time::Instant::now() + std::time::Duration::from_millis(250);
        while std::time::Instant::now() < end {
            match self.port_read(p) {
                Some(n) if n > before => return,
                None => return,
                Some(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
    }

    /// Docker ≤ 29.0 (the seeds' Docker): `--ip`/`--ip6` only on a network whose subnets of
    /// that family the user configured, not on one from the default pools.
    fn check_static_ips(rec: &NetworkRecord, ip: bool, ip6: bool) -> Result<(), String> {
        let user_subnet = |v6: bool| {
            rec.ipam_config
                .iter()
                .any(|c| !c.subnet.is_empty() && c.subnet.contains(':') == v6)
        };
        if (ip && !user_subnet(false)) || (ip6 && !user_subnet(true)) {
            return Err(
                "user specified IP address is supported only when connecting to \
                        networks with user configured subnets"
                    .to_string(),
            );
        }
        Ok(())
    }
}
