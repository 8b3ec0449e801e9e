//! Networks managed by a front end with its own IPAM: the Docker remote driver and the CNI
//! plugin.
//!
//! Such a network is set up exactly like one made with `uvlan network create` (the same
//! option validation and texts, the same parent rules, engine, TAPs and watchers), but
//! uvlan allocates no address for it: subnets, gateways and every endpoint's addresses come
//! from the front end (Docker's IPAM, a CNI IPAM plugin), and the uvlan CLI refuses to
//! remove it or to attach or detach its endpoints.
//!
//! Endpoint life cycle, keyed by the front end's key (Docker's endpoint ID, CNI's
//! `CONTAINERID/IFNAME`):
//! - reserve (Docker's CreateEndpoint): addresses and MAC are recorded; on a network with
//!   DHCP IPAM (Docker's `-o uvlan.ipam=dhcp`) the address is first leased on a probe
//!   (`probe`), without the state lock, and answered to the front end, and the lease is kept
//!   with the reservation;
//! - attach (Docker's Join, CNI ADD): the interface is made, either inside the namespace,
//!   addressed and routed (CNI), or in the daemon's namespace for Docker to move into its
//!   sandbox: the daemon then follows it there (by interface index and MAC), finishes the
//!   settings that do not survive a move, and starts the address watcher. It is a TAP, or,
//!   with the fast path, one end of a veth pair whose other end stays in the daemon's
//!   namespace (`endpoint::create_fast_interface`, `endpoint::create_fast_for_move`), as
//!   for `network connect`;
//! - detach (Docker's Leave): the endpoint goes back to reserved; its TAP is kept ("parked")
//!   because Docker moves it back to the host namespace after Leave (a veth pair stays
//!   without a descriptor, its programs detached);
//! - forget (Docker's DeleteEndpoint, CNI DEL): everything goes, a DHCP lease is released
//!   (from the endpoint's interface if it is still attached, else from a probe, without the
//!   state lock).
//!
//! Detaching or forgetting what is not there succeeds (CNI DEL and Docker's retries are
//! idempotent).
//!
//! The rules of these networks' data (the IPAM taken as given, inspect, the CLI's refusal)
//! are in `external.rs`; following a TAP into its sandbox is in `attach.rs`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use uvlan_dataplane::fwd::{Driver, Engine};
use uvlan_dataplane::port::tap::Tap;
use uvlan_dataplane::wire::MacAddr;

use crate::api::{
    AttachEndpoint, AttachInfo, DefaultRouteView, EndpointSpec, EnsureNetwork, ManagedEndpoint,
    RouteSpec, RouteView,
};
use crate::ids;
use crate::ipam::{EndpointAddr, EndpointAddrs};
use crate::netns::{Netns, Rtnl, NETNS_RUN_DIR};
use crate::store::{Intent, Managed, NetworkRecord, ReservedEndpoint};

use super::dp::with_engine;
use super::endpoint::{self, CustomRoute, DefaultRoute};
use super::external::{parse_bare_or_cidr, parse_cidr_addr};
use super::model::{Daemon, EpAddrs, EpMac, EpPlace, EpRt, NewIpam, NewNetwork, State};
use super::options;

/// The endpoint addresses a front end gave, with each family's gateway: the given one, else
/// the gateway of the network's subnet holding the address.
fn spec_addrs(rec: &NetworkRecord, spec: &EndpointSpec) -> Result<EndpointAddrs, String> {
    let one = |text: &Option<String>,
               gw: &Option<String>,
               v6: bool|
     -> Result<Option<EndpointAddr>, String> {
        let Some(text) = text.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let (addr, subnet) = parse_cidr_addr(text)?;
        if addr.is_ipv6() != v6 {
            return Err(format!(
                "address {text} is not an IPv{} address",
                if v6 { 6 } else { 4 }
            ));
        }
        let gateway = match gw.as_deref().filter(|g| !g.is_empty()) {
            Some(g) => Some(parse_bare_or_cidr(g)?),
            None => rec.ipam.subnet_for(addr).and_then(|s| s.gateway),
        };
        Ok(Some(EndpointAddr {
            addr,
            subnet,
            gateway,
        }))
    };
    Ok(EndpointAddrs {
        v4: one(&spec.address, &spec.gateway, false)?,
        v6: one(&spec.address_v6, &spec.gateway_v6, true)?,
    })
}

fn parse_routes(routes: &[RouteSpec]) -> Result<Vec<CustomRoute>, String> {
    routes
        .iter()
        .map(|r| {
            let (_, dst) = parse_cidr_addr(&r.dst).map_err(|e| format!("route: {e}"))?;
            let gateway = match r.gw.as_deref().filter(|g| !g.is_empty()) {
                Some(g) => Some(
                    g.parse::<IpAddr>()
                        .map_err(|_| format!("route to {}: invalid gateway {g:?}", r.dst))?,
                ),
                None => None,
            };
            if gateway.is_some_and(|g| g.is_ipv4() != dst.addr().is_ipv4()) {
                return Err(format!(
                    "route to {}: gateway of the other IP family",
                    r.dst
                ));
            }
            Ok(CustomRoute {
                dst: dst.addr(),
                prefix_len: dst.bits(),
                gateway,
            })
        })
        .collect()
}

fn route_view(r: Option<DefaultRoute>) -> Option<DefaultRouteView> {
    r.map(|r| DefaultRouteView {
        via: match r {
            DefaultRoute::Via(gw) => Some(gw.to_string()),
            DefaultRoute::Dev => None,
        },
    })
}

/// A DHCP lease's classless static routes (option 121) for the front end: with them, RFC 3442
/// has the client ignore the router, so they replace the IPv4 default route.
fn with_lease_routes(mut info: AttachInfo, lease: Option<&crate::dhcp::Lease>) -> AttachInfo {
    let Some(lease) = lease.filter(|l| !l.routes.is_empty()) else {
        return info;
    };
    info.default_v4 = None;
    info.routes = lease
        .routes
        .iter()
        .map(|(dst, len, gw)| RouteView {
            dst: format!("{dst}/{len}"),
            via: (!gw.is_unspecified()).then(|| gw.to_string()),
        })
        .collect();
    info
}

/// A new reservation for `spec` (not yet joined, no lease): `mac` is the endpoint's own for
/// macvlan, empty for ipvlan (the port takes the parent's).
fn new_reservation(spec: &EndpointSpec, addrs: EndpointAddrs, mac: String) -> ReservedEndpoint {
    ReservedEndpoint {
        key: spec.key.clone(),
        addrs,
        mac,
        req_mac: spec.mac.clone(),
        created: ids::now_rfc3339(),
        host_name: None,
        endpoint_id: None,
        lease: None,
        offered: None,
    }
}

/// The answer to a reservation: its MAC, or with a DHCP lease `{"MacAddress": MAC,
/// "Address": "ADDR/LEN"}`.
fn reserved_answer(r: &ReservedEndpoint) -> serde_json::Value {
    match (&r.lease, r.addrs.v4) {
        (Some(_), Some(a)) => serde_json::json!({ "MacAddress": r.mac, "Address": a.cidr() }),
        _ => serde_json::Value::String(r.mac.clone()),
    }
}

/// What differs between an existing managed network and a request for it.
fn config_diff(rec: &NetworkRecord, e: &EnsureNetwork) -> Option<String> {
    if rec.driver != e.driver {
        return Some(format!("driver {} instead of {}", rec.driver, e.driver));
    }
    if rec.options != e.options {
        return Some(format!(
            "options {:?} instead of {:?}",
            rec.options, e.options
        ));
    }
    if rec.internal != e.internal {
        return Some(format!(
            "internal {} instead of {}",
            rec.internal, e.internal
        ));
    }
    if rec.ipv4 != e.ipv4 {
        return Some(format!("ipv4 {} instead of {}", rec.ipv4, e.ipv4));
    }
    if rec.ipv6 != e.ipv6 {
        return Some(format!("ipv6 {} instead of {}", rec.ipv6, e.ipv6));
    }
    if rec.ipam_config != e.subnets {
        return Some("other subnets".to_string());
    }
    None
}

mod dhcp;

impl Daemon {
    /// A network by exact name or ID (managed operations never guess by prefix).
    fn find_exact(st: &State, key: &str) -> Option<usize> {
        st.nets
            .iter()
            .position(|n| n.rec.id == key)
            .or_else(|| st.nets.iter().position(|n| n.rec.name == key))
    }

    fn unknown(network: &str) -> String {
        format!(
            "network {network} is not known to uvlan (was it made while uvlan's daemon was \
             not running, or was uvlan's state directory removed?): remove the network and \
             create it again"
        )
    }

    fn managed_index(st: &State, network: &str) -> Result<usize, String> {
        let i = Self::find_exact(st, network).ok_or_else(|| Self::unknown(network))?;
        if st.nets[i].rec.managed.is_none() {
            return Err(format!(
                "network {} was made with the uvlan CLI, not by a container runtime: use \
                 \"uvlan network connect\"",
                st.nets[i].rec.name
            ));
        }
        Ok(i)
    }

    /// [`crate::api::Request::NetworkEnsure`].
    pub(super) fn ensure_network(&self, e: &EnsureNetwork) -> Result<String, String> {
        let mut st = self.lock();
        self.ensure_locked(&mut st, e)
            .map(|i| st.nets[i].rec.id.clone())
    }

    fn ensure_locked(&self, st: &mut State, e: &EnsureNetwork) -> Result<usize, String> {
        if e.owner.is_empty() {
            return Err("a managed network needs an owner".to_string());
        }
        if let Some(id) = &e.id {
            if !ids::is_valid_id(id) {
                return Err(format!("network ID {id:?} is not 64 hex characters"));
            }
        }
        let existing = match &e.id {
            Some(id) => st.nets.iter().position(|n| n.rec.id == *id),
            None => st.nets.iter().position(|n| n.rec.name == e.name),
        };
        if let Some(i) = existing {
            let rec = &st.nets[i].rec;
            if rec.managed.as_ref().map(|m| m.owner.as_str()) != Some(e.owner.as_str()) {
                return Err(format!(
                    "network {} already exists and is not managed by {}: pick another name",
                    rec.name, e.owner
                ));
            }
            return match config_diff(rec, e) {
                None => Ok(i),
                Some(d) => Err(format!(
                    "network {} already exists with another configuration ({d}); remove its \
                     endpoints so it goes away, or use another network name",
                    rec.name
                )),
            };
        }
        let has_parent = e.options.get("parent").is_some_and(|p| !p.is_empty());
        let default_parent = if e.parent_from_default_route && !has_parent {
            Some(st.host.default_route_link().ok_or_else(|| {
                "no master given and the uvlan daemon's namespace has no IPv4 default route to \
                 take it from: set \"master\""
                    .to_string()
            })?)
        } else {
            None
        };
        let ipam = match e.options.get(options::IPAM_OPT).map(String::as_str) {
            None => NewIpam::External(e.subnets.clone()),
            Some("dhcp") if e.subnets.is_empty() && !e.ipv6 && e.ipv4 => NewIpam::Dhcp,
            Some("dhcp") => {
                return Err(format!(
                    "{}=dhcp: the LAN's DHCP server gives the addresses, so the network takes \
                     no subnet and no IPv6: create it with --ipam-driver null and without \
                     --subnet, --gateway, --ip-range, --aux-address, --ipv6 and --ipv4=false",
                    options::IPAM_OPT
                ))
            }
            Some(other) => {
                return Err(format!(
                    "invalid {} value {other:?}: the only value is dhcp (with --ipam-driver \
                     null)",
                    options::IPAM_OPT
                ))
            }
        };
        let new = NewNetwork {
            id: e.id.clone(),
            name: e.name.clone(),
            driver: e.driver.clone(),
            options: e.options.clone(),
            ipam,
            ipv4: e.ipv4,
            ipv6: e.ipv6,
            internal: e.internal,
            managed: Some(Managed {
                owner: e.owner.clone(),
                reserved: Vec::new(),
            }),
            default_parent,
        };
        let id = self.create_locked(st, new)?;
        self.host_interface_option(st, &id)?;
        Self::find_exact(st, &id).ok_or_else(|| "the new network vanished".to_string())
    }

    /// [`crate::api::Request::NetworkDelete`].
    pub(super) fn delete_managed(&self, network: &str, owner: &str) -> Result<bool, String> {
        let mut st = self.lock();
        let Some(i) = Self::find_exact(&st, network) else {
            return Ok(false);
        };
        match &st.nets[i].rec.managed {
            Some(m) if m.owner == owner => {}
            _ => {
                return Err(format!(
                    "network {} is not managed by {owner}",
                    st.nets[i].rec.name
                ))
            }
        }
        // Docker removes a network only when it has no endpoint left in its own view: any
        // endpoint or reservation uvlan still holds is stale (a DeleteEndpoint that did not
        // reach uvlan), so it goes too.
        if owner == crate::api::OWNER_DOCKER {
            let keys: Vec<String> = st.nets[i]
                .rec
                .endpoints
                .iter()
                .filter_map(|e| e.key.clone())
                .chain(
                    st.nets[i]
                        .rec
                        .managed
                        .iter()
                        .flat_map(|m| m.reserved.iter().map(|r| r.key.clone())),
                )
                .collect();
            let id = st.nets[i].rec.id.clone();
            drop(st);
            for k in keys {
                (self.log)(&format!("network {id}: dropping stale endpoint {k}"));
                self.detach_endpoint(&id, &k, true, false)?;
            }
            st = self.lock();
        }
        let Some(i) = Self::find_exact(&st, network) else {
            return Ok(false);
        };
        self.remove_locked(&mut st, i).map(|_| true)
    }

    /// [`crate::api::Request::EndpointReserve`]: answers the MAC (`""` for ipvlan), or on a
    /// DHCP network the MAC and the leased address (see [`reserved_answer`]).
    pub(super) fn reserve_endpoint(
        &self,
        network: &str,
        spec: &EndpointSpec,
    ) -> Result<serde_json::Value, String> {
        let mut st = self.lock();
        let i = Self::managed_index(&st, network)?;
        let rec = &st.nets[i].rec;
        let macvlan = rec.driver == Driver::Macvlan.as_str();
        if let Some(r) = rec
            .managed
            .iter()
            .flat_map(|m| m.reserved.iter())
            .find(|r| r.key == spec.key)
        {
            return Ok(reserved_answer(r));
        }
        if rec
            .endpoints
            .iter()
            .any(|e| e.key.as_deref() == Some(spec.key.as_str()))
        {
            return Err(format!(
                "endpoint {} already exists in network {}",
                spec.key, rec.name
            ));
        }
        if rec.managed.is_some() && st.nets[i].pending.contains_key(&spec.key) {
            return Err(format!(
                "endpoint {} of network {} is still being created (its DHCP exchange runs): \
                 try again",
                spec.key, rec.name
            ));
        }
        let dhcp = rec.dhcp;
        if dhcp && (spec.address.is_some() || spec.address_v6.is_some()) {
            return Err(format!(
                "network {} leases its addresses from DHCP: an endpoint cannot be given one",
                rec.name
            ));
        }
        let addrs = spec_addrs(rec, spec)?;
        let chosen = Self::choose_mac(&mut st, i, spec.mac.as_deref())?;
        let mac = if macvlan {
            chosen.to_string()
        } else {
            String::new()
        };
        if !ReservedEndpoint::key_is_storable(&spec.key) {
            return Err(format!(
                "endpoint key {:?} is not usable: 1 to 200 characters of letters, digits, \
                 '_', '.', ':' and '-', not starting with a dot",
                spec.key
            ));
        }
        if dhcp {
            return self.reserve_leased(st, i, spec, chosen, addrs);
        }
        let r = new_reservation(spec, addrs, mac.clone());
        let net_id = st.nets[i].rec.id.clone();
        self.store
            .save_reserved(&net_id, &r)
            .map_err(|e| e.to_string())?;
        let answer = reserved_answer(&r);
        if let Some(m) = st.nets[i].rec.managed.as_mut() {
            m.reserved.push(r);
        }
        Ok(answer)
    }

    /// [`crate::api::Request::EndpointAttach`].
    pub(super) fn attach_endpoint(&self, a: &AttachEndpoint) -> Result<AttachInfo, String> {
        let mut st = self.lock();
        let i = match &a.ensure {
            Some(e) => self.ensure_locked(&mut st, e)?,
            None => Self::managed_index(&st, &a.network)?,
        };
        if st.nets[i].rec.managed.is_none() {
            return Err(Self::managed_index(&st, &a.network)
                .err()
                .unwrap_or_default());
        }
        if st.nets[i].pending.contains_key(&a.key) || st.nets[i].releasing.contains(&a.key) {
            return Err(format!(
                "endpoint {} of network {} is being created or deleted (its DHCP exchange \
                 runs): try again",
                a.key, st.nets[i].rec.name
            ));
        }
        if let Some(ep) = st.nets[i]
            .rec
            .endpoints
            .iter()
            .find(|e| e.key.as_deref() == Some(a.key.as_str()))
        {
            return Err(format!(
                "endpoint {} of network {} is already attached (to {} as {})",
                a.key, st.nets[i].rec.name, ep.netns_path, ep.ifname
            ));
        }
        // Docker's sandbox does not exist yet at Join: the TAP is followed there later.
        let ns = match &a.host_name {
            Some(_) => Netns::current(),
            None => Netns::open(&a.netns),
        }
        .map_err(|e| e.to_string())?;
        let path = if a.netns.contains('/') {
            PathBuf::from(&a.netns)
        } else {
            Path::new(NETNS_RUN_DIR).join(&a.netns)
        };
        let routes = a.routes.as_deref().map(parse_routes).transpose()?;
        // The endpoint's addresses and MAC: given now, or reserved earlier (the reservation
        // goes once the endpoint is made).
        let mut from_reserved = false;
        let mut lease = None;
        // The endpoint ID of an earlier attachment under this key (Docker's Leave kept it).
        let mut left_id = None;
        let (addrs, mac) = match &a.spec {
            Some(spec) => {
                if spec.key != a.key {
                    return Err(format!(
                        "endpoint key mismatch: {:?} and {:?}",
                        spec.key, a.key
                    ));
                }
                (
                    spec_addrs(&st.nets[i].rec, spec)?,
                    EpMac::Choose(spec.mac.clone()),
                )
            }
            None => {
                let m = st.nets[i].rec.managed.as_ref();
                let k = m
                    .and_then(|m| m.reserved.iter().position(|r| r.key == a.key))
                    .ok_or_else(|| {
                        format!(
                            "endpoint {} of network {} was not created first (or uvlan's \
                             state was lost): remove the container and run it again",
                            a.key, st.nets[i].rec.name
                        )
                    })?;
                let r = st.nets[i]
                    .rec
                    .managed
                    .as_ref()
                    .and_then(|m| m.reserved.get(k))
                    .ok_or_else(|| "internal error: reservation vanished".to_string())?;
                let mac = match r.mac.parse::<MacAddr>() {
                    Ok(m) => EpMac::Fixed(m),
                    Err(_) => EpMac::Choose(None),
                };
                from_reserved = true;
                lease = r.lease.clone();
                left_id = r.endpoint_id.clone();
                (r.addrs, mac)
            }
        };
        if st.nets[i].rec.dhcp && lease.is_none() {
            return Err(format!(
                "endpoint {} of network {} has no DHCP lease (network {} leases its addresses \
                 at CreateEndpoint): remove the container and run it again",
                a.key, st.nets[i].rec.name, st.nets[i].rec.name
            ));
        }
        let place = EpPlace {
            ns,
            name: a.label.clone(),
            path,
            owns_netns: false,
            ifname: a.ifname.clone(),
            host_name: a.host_name.clone(),
            routes,
            mtu: a.mtu,
            key: Some(a.key.clone()),
            host_interface: false,
            lease,
        };
        // A fast-path endpoint's veth pair kept since that Leave is of no more use, and
        // would hold the names the new one takes (its ID is Docker's endpoint ID again).
        if let Some(id) = left_id.filter(|_| !st.nets[i].parked.contains_key(&a.key)) {
            endpoint::delete_fast_leftovers(&id);
        }
        let rec = self.connect_locked(&mut st, i, place, EpAddrs::Given(addrs), mac)?;
        if from_reserved {
            // The endpoint is settled: its reservation goes (a crash before this is finished
            // when the store is loaded: a reservation beside its settled endpoint).
            let net_id = st.nets[i].rec.id.clone();
            if let Err(e) = self.store.delete_reserved(&net_id, &a.key) {
                (self.log)(&format!("endpoint {}: {e}", a.key));
            }
            if let Some(m) = st.nets[i].rec.managed.as_mut() {
                m.reserved.retain(|r| r.key != a.key);
            }
        }
        // A parked TAP of an earlier attachment under this key is no longer needed.
        if let Some(old) = st.nets[i].parked.remove(&a.key) {
            endpoint::destroy_tap(old);
        }
        let net = &st.nets[i].rec;
        let driver = options::parse_driver(&net.driver)?;
        let plan = endpoint::route_plan(
            driver,
            net.driver_config.ipvlan_mode(),
            net.driver_config.parent.is_some(),
            net.internal,
            &rec.addrs,
        );
        let info = AttachInfo {
            network_id: net.id.clone(),
            endpoint_id: rec.id.clone(),
            ifname: rec.ifname.clone(),
            mac: rec.mac.clone(),
            mtu: st.nets[i]
                .eps
                .get(&rec.id)
                .and_then(|rt| {
                    let ns = &rt.netns;
                    Rtnl::open(ns)
                        .and_then(|mut r| r.link_get_by_index(rt.ifindex))
                        .ok()
                        .map(|l| l.mtu)
                })
                .unwrap_or(0),
            default_v4: route_view(plan.v4),
            default_v6: route_view(plan.v6),
            routes: Vec::new(),
        };
        Ok(with_lease_routes(info, rec.lease.as_ref()))
    }

    /// [`crate::api::Request::EndpointDetach`].
    pub(super) fn detach_endpoint(
        &self,
        network: &str,
        key: &str,
        forget: bool,
        remove_empty_network: bool,
    ) -> Result<bool, String> {
        let mut st = self.lock();
        let Some(mut i) = Self::find_exact(&st, network) else {
            return Ok(false);
        };
        if st.nets[i].rec.managed.is_none() {
            return Err(Self::managed_index(&st, network).err().unwrap_or_default());
        }
        if st.nets[i].pending.contains_key(key) {
            return Err(format!(
                "endpoint {key} of network {} is still being created (its DHCP exchange runs): \
                 try again",
                st.nets[i].rec.name
            ));
        }
        let mut changed = false;
        let mut host_name = None;
        let net_id = st.nets[i].rec.id.clone();
        let macvlan = st.nets[i].rec.driver == Driver::Macvlan.as_str();
        if let Some(k) = st.nets[i]
            .rec
            .endpoints
            .iter()
            .position(|e| e.key.as_deref() == Some(key))
        {
            let ep = st.nets[i].rec.endpoints[k].clone();
            host_name = ep.host_name.clone();
            let park = !forget && ep.host_name.is_some();
            // Leave: the reservation first, then the endpoint's intent (see the store's
            // docs): a crash before the intent leaves the endpoint attached (the stale
            // reservation goes on load); after it, the next start finishes the detach.
            let reservation = (!forget).then(|| ReservedEndpoint::of_endpoint(&ep, macvlan, park));
            if let Some(r) = &reservation {
                self.store
                    .save_reserved(&net_id, r)
                    .map_err(|e| e.to_string())?;
            }
            let mut marked = ep.clone();
            marked.intent = Some(if park {
                Intent::Park
            } else {
                Intent::Remove {
                    delete_netns: false,
                }
            });
            self.store
                .save_endpoint(&net_id, &marked)
                .map_err(|e| e.to_string())?;
            if forget {
                // Its address is still on its interface, in the sandbox.
                let port = st.nets[i].eps.get(&ep.id).map(|rt| rt.port);
                self.release_lease(&ep, port);
            }
            match st.nets[i].eps.remove(&ep.id) {
                Some(rt) if park => {
                    if let Some(tap) = self.park(rt) {
                        st.nets[i].parked.insert(key.to_string(), tap);
                    }
                }
                Some(rt) => self.teardown_endpoint(rt),
                // Not restored at start: its interface may still be there.
                None if !park => {
                    super::recover::remove_interfaces(&self.host_tag, &ep, &self.log);
                }
                None => {}
            }
            if let Err(e) = self.store.delete_endpoint(&net_id, &ep.id) {
                (self.log)(&format!("endpoint {key}: {e} (the next start finishes it)"));
            }
            st.nets[i].rec.endpoints.remove(k);
            self.host_routes(&st, i, &ep, false);
            if let (Some(r), Some(m)) = (reservation, st.nets[i].rec.managed.as_mut()) {
                m.reserved.push(r);
            }
            self.freed_endpoint(&mut st);
            changed = true;
        } else if forget {
            let pos = st.nets[i]
                .rec
                .managed
                .as_ref()
                .and_then(|m| m.reserved.iter().position(|r| r.key == key));
            if let Some(mut k) = pos {
                if st.nets[i].releasing.contains(key) {
                    return Err(format!(
                        "endpoint {key} of network {} is being deleted already (its DHCP lease \
                         is being given back): try again",
                        st.nets[i].rec.name
                    ));
                }
                // The kernel first (its TAP), then the record: a crash in between leaves a
                // reservation whose TAP is gone, and DeleteEndpoint's retry finishes it.
                let r = st.nets[i]
                    .rec
                    .managed
                    .as_ref()
                    .map(|m| m.reserved[k].clone());
                // A DHCP lease goes back from a probe: the endpoint's interface, if any, has
                // left its sandbox and with it its address. The RELEASE can wait on the
                // network (up to a second for the server's next hop), so it runs without the
                // state lock; the reservation stays, its key busy, until it is sent.
                if let Some((lease, mac)) = r.as_ref().and_then(|r| {
                    let mac = r.mac.parse::<MacAddr>().unwrap_or(MacAddr::ZERO);
                    r.lease.clone().map(|l| (l, mac))
                }) {
                    let addrs = EndpointAddrs {
                        v4: crate::dhcp::endpoint_addr(&lease),
                        v6: None,
                    };
                    match self.make_probe(&st, i, key, mac, addrs) {
                        Ok(p) => {
                            st.nets[i].releasing.insert(key.to_string());
                            drop(st);
                            self.probe_release(&p, &lease);
                            st = self.lock();
                            self.drop_probe(p);
                            // Nothing removes a network that holds a reservation, nor the
                            // reservation of a busy key.
                            let Some(j) = st.nets.iter().position(|n| n.rec.id == net_id) else {
                                return Ok(true);
                            };
                            i = j;
                            st.nets[i].releasing.remove(key);
                            let pos = st.nets[i]
                                .rec
                                .managed
                                .as_ref()
                                .and_then(|m| m.reserved.iter().position(|r| r.key == key));
                            let Some(pos) = pos else {
                                return Ok(true);
                            };
                            k = pos;
                        }
                        Err(e) => (self.log)(&format!(
                            "endpoint {}: DHCP RELEASE of {}: {e} (the lease expires at the \
                             server)",
                            ids::short_id(key),
                            lease.addr
                        )),
                    }
                }
                match st.nets[i].parked.remove(key) {
                    Some(tap) => endpoint::destroy_tap(tap),
                    None => {
                        // A fast-path endpoint's veth pair, wherever its end is now.
                        if let Some(id) = r.as_ref().and_then(|r| r.endpoint_id.as_ref()) {
                            endpoint::delete_fast_leftovers(id);
                        }
                        if let Some(name) = r.and_then(|r| r.host_name) {
                            endpoint::delete_host_interface(&name);
                        }
                    }
                }
                self.store
                    .delete_reserved(&net_id, key)
                    .map_err(|e| e.to_string())?;
                if let Some(m) = st.nets[i].rec.managed.as_mut() {
                    m.reserved.remove(k);
                }
                changed = true;
            }
        }
        if forget && changed {
            // A TAP an earlier attachment left (parked, or moved back by Docker).
            if let Some(tap) = st.nets[i].parked.remove(key) {
                endpoint::destroy_tap(tap);
            }
            if let Some(name) = host_name {
                endpoint::delete_host_interface(&name);
            }
        }
        let net = &st.nets[i].rec;
        let empty =
            net.endpoints.is_empty() && net.managed.as_ref().is_none_or(|m| m.reserved.is_empty());
        if remove_empty_network && empty {
            if let Err(e) = self.remove_locked(&mut st, i) {
                (self.log)(&format!("removing the empty network {network}: {e}"));
            }
        }
        Ok(changed)
    }

    /// Takes an attached endpoint out of the engine and the dataplane but keeps its TAP
    /// (returned, for the caller to keep). A fast-path endpoint keeps its veth pair, which
    /// needs no descriptor to live: its programs are detached (by `remove_tap`), its TAP
    /// (the slow path) goes, the daemon's end is set down (the endpoint's end has no
    /// carrier), and nothing is returned; forgetting the endpoint deletes the pair by the
    /// names of its daemon-side end ([`endpoint::delete_fast_leftovers`]).
    fn park(&self, mut rt: EpRt) -> Option<Tap> {
        drop(rt.watcher.take());
        let tap = self.take_tap_back(rt.port);
        let port = rt.port;
        if let Ok(Err(e)) = with_engine(&*self.dp, move |e: &mut Engine| e.remove_port(port)) {
            (self.log)(&format!("removing {port} from the engine: {e}"));
        }
        let Some(veth) = rt.fast_veth else {
            return tap;
        };
        if let Some(t) = tap {
            endpoint::destroy_tap(t);
        }
        let down = Netns::current()
            .and_then(|here| Rtnl::open(&here))
            .and_then(|mut r| r.link_set_up(veth, false));
        if let Err(e) = down {
            (self.log)(&format!("setting the veth of {port} down: {e}"));
        }
        None
    }

    /// [`crate::api::Request::EndpointList`].
    pub(super) fn list_endpoints(&self, network: &str) -> Result<Vec<ManagedEndpoint>, String> {
        let st = self.lock();
        let i = Self::managed_index(&st, network)?;
        let rec = &st.nets[i].rec;
        let cidr = |a: Option<EndpointAddr>| a.map(|a| a.cidr()).unwrap_or_default();
        let mut out: Vec<ManagedEndpoint> = rec
            .endpoints
            .iter()
            .map(|e| ManagedEndpoint {
                key: e.key.clone().unwrap_or_default(),
                endpoint_id: e.id.clone(),
                netns: e.netns_path.clone(),
                ifname: e.ifname.clone(),
                mac: e.mac.clone(),
                address: cidr(e.addrs.v4),
                address_v6: cidr(e.addrs.v6),
                attached: true,
            })
            .collect();
        for r in rec.managed.iter().flat_map(|m| m.reserved.iter()) {
            out.push(ManagedEndpoint {
                key: r.key.clone(),
                endpoint_id: String::new(),
                netns: String::new(),
                ifname: String::new(),
                mac: r.mac.clone(),
                address: cidr(r.addrs.v4),
                address_v6: cidr(r.addrs.v6),
                attached: false,
            });
        }
        Ok(out)
    }

    /// The managed networks of `owner`, as `(id, name)`.
    pub fn managed_networks(&self, owner: &str) -> Vec<(String, String)> {
        let st = self.lock();
        st.nets
            .iter()
            .filter(|n| n.rec.managed.as_ref().is_some_and(|m| m.owner == owner))
            .map(|n| (n.rec.id.clone(), n.rec.name.clone()))
            .collect()
    }

    /// Renames a managed network (the Docker driver shows Docker's name once it learns it).
    /// Answers false when the name is taken by another network (the name stays).
    pub fn rename_managed(&self, id: &str, owner: &str, name: &str) -> Result<bool, String> {
        let mut st = self.lock();
        let i = Self::find_exact(&st, id).ok_or_else(|| Self::unknown(id))?;
        if st.nets[i].rec.managed.as_ref().map(|m| m.owner.as_str()) != Some(owner) {
            return Err(format!("network {id} is not managed by {owner}"));
        }
        if st.nets[i].rec.name == name {
            return Ok(true);
        }
        if name.is_empty() || st.nets.iter().any(|n| n.rec.name == name) {
            return Ok(false);
        }
        // The name changes in place (no copy of the endpoints), and back if the store fails.
        let old = std::mem::replace(&mut st.nets[i].rec.name, name.to_string());
        if let Err(e) = self.store.save_network(&st.nets[i].rec) {
            st.nets[i].rec.name = old;
            return Err(e.to_string());
        }
        Ok(true)
    }
}
