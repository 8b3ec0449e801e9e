//! An endpoint's attachment, shared by every way of making one (connect, a front end's
//! attach, restore): its port in the engine with its addresses, the plan of its interface,
//! the TAP handed to the dataplane with the address watcher, the teardown, and following a
//! TAP a front end moves into its sandbox (see `managed.rs`).

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uvlan_dataplane::fwd::{
    ConfigError, Driver, Engine, Errno, IpvlanAttrs, LinkRef, MacvlanAttrs, NetworkId, PortId,
};
use uvlan_dataplane::port::tap::Tap;
use uvlan_dataplane::wire::MacAddr;

use crate::netns::{Netns, Rtnl};
use crate::store::{DriverConfig, EndpointRecord};

use super::dp::{with_engine, DpError};
use super::endpoint::{self, IfPlan};
use super::model::{Daemon, EpRt, Net};
use super::options;

/// How long a teardown waits for the interface to leave its namespace before it deletes it
/// itself.
const GONE_WAIT: Duration = Duration::from_secs(5);
/// How long the daemon waits for a front end to move a TAP into its sandbox.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(120);
/// How often it looks. A timed loop, and justified: the sandbox Docker moves the TAP into
/// may not exist yet when the daemon starts following (Docker creates it after Join), so
/// there is no namespace to subscribe to, and the move, rename and link-up happen in
/// namespaces the daemon learns of only by looking. The loop runs only between a Join and
/// its TAP's arrival (a few looks; at most [`FOLLOW_TIMEOUT`]), on a thread that then ends:
/// an idle daemon never runs it.
const FOLLOW_POLL: Duration = Duration::from_millis(20);

pub(super) fn engine_err(e: DpError) -> String {
    e.to_string()
}

pub(super) fn port_err(driver: Driver, e: ConfigError) -> String {
    if e.errno == Errno::Eaddrinuse {
        format!("Address already in use ({})", e.message)
    } else {
        format!("failed to create the {} port: {e}", driver.as_str())
    }
}

impl Daemon {
    /// Adds the engine port with its declared addresses (and the ipvlan link-local when the
    /// endpoint has IPv6). Returns the port, its MAC and MTU, and the link-local.
    pub(super) fn engine_add_port(
        &self,
        nid: NetworkId,
        driver: Driver,
        dc: &DriverConfig,
        ep: &EndpointRecord,
        mac: MacAddr,
    ) -> Result<(PortId, MacAddr, u32, Option<Ipv6Addr>), String> {
        let name = ep.name.clone();
        let addrs: Vec<IpAddr> = ep.addrs.addrs().collect();
        let has_v6 = ep.addrs.v6.is_some();
        let ipvlan = (dc.ipvlan_mode(), dc.ipvlan_flag());
        let mmode = dc.macvlan_mode();
        with_engine(&*self.dp, move |e: &mut Engine| {
            let pid = match (driver, ipvlan, mmode) {
                (Driver::Ipvlan, (Some(m), Some(f)), _) => {
                    e.add_ipvlan_port(LinkRef::Network(nid), name, IpvlanAttrs::new(m, f))?
                }
                (Driver::Macvlan, _, Some(m)) => e.add_macvlan_port(
                    LinkRef::Network(nid),
                    name,
                    MacvlanAttrs::new(m, Some(mac)),
                )?,
                _ => {
                    return Err(ConfigError {
                        errno: Errno::Einval,
                        message: "the network's stored driver options are incomplete".into(),
                    })
                }
            };
            let ll = if driver == Driver::Ipvlan && has_v6 {
                e.port_link_local(pid)
            } else {
                None
            };
            let all = addrs.into_iter().chain(ll.map(IpAddr::V6));
            for a in all {
                if let Err(err) = e.add_port_addr(pid, a) {
                    let _ = e.remove_port(pid);
                    return Err(err);
                }
            }
            let Some(info) = e.port_info(pid) else {
                return Err(ConfigError {
                    errno: Errno::Enodev,
                    message: "the new port vanished".into(),
                });
            };
            Ok((pid, info.mac, info.mtu, ll))
        })
        .map_err(engine_err)?
        .map_err(|e| port_err(driver, e))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn if_plan(
        &self,
        net: &Net,
        driver: Driver,
        ifname: String,
        mac: MacAddr,
        mtu: u32,
        ep: &EndpointRecord,
        link_local: Option<Ipv6Addr>,
    ) -> IfPlan {
        let dc = &net.rec.driver_config;
        let mode = dc.ipvlan_mode();
        IfPlan {
            ifname,
            mac,
            mtu,
            addrs: ep.addrs,
            link_local,
            noarp: driver == Driver::Ipvlan && mode.is_some_and(|m| m.is_l3()),
            addr_gen_none: driver == Driver::Ipvlan,
            routes: endpoint::route_plan(
                driver,
                mode,
                dc.parent.is_some(),
                net.rec.internal,
                &ep.addrs,
            ),
            // A host interface gets no driver routes: routes toward the endpoints instead
            // (`connect::host_routes`).
            custom_routes: ep.host_interface.then(Vec::new),
            host_scope: ep.host_interface,
            mark: self.mark(&ep.id),
        }
    }

    /// Port up, TAP to the dataplane, the fast path's programs on a fast-path endpoint's
    /// veth (`fast_veth`: the ifindex of the daemon's end), watcher started. On failure the
    /// TAP, the endpoint's interface and the port are removed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_endpoint(
        &self,
        port: PortId,
        tap: Tap,
        ifindex: u32,
        ns: Netns,
        up: bool,
        label: &str,
        driver: Driver,
        watch: bool,
        fast_veth: Option<u32>,
    ) -> Result<EpRt, String> {
        let undo = |tap: Option<Tap>| {
            match tap {
                Some(t) => endpoint::destroy_tap(t),
                None => {
                    if let Ok(Some(t)) = self.dp.remove_tap(port) {
                        endpoint::destroy_tap(t);
                    }
                }
            }
            endpoint::delete_link(&ns, ifindex);
            let _ = with_engine(&*self.dp, move |e: &mut Engine| e.remove_port(port));
        };
        match with_engine(&*self.dp, move |e: &mut Engine| e.set_port_up(port, up)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                undo(Some(tap));
                return Err(port_err(driver, e));
            }
            Err(e) => {
                undo(Some(tap));
                return Err(e.to_string());
            }
        }
        // Read now, not at the teardown (`TUNGETIFF` waits for RTNL).
        let fast_names = match (fast_veth, tap.name()) {
            (Some(_), Ok(t)) => endpoint::fast_names_of_tap(&t),
            _ => Vec::new(),
        };
        if let Err(e) = self.dp.add_tap(port, tap) {
            undo(None);
            return Err(format!(
                "cannot hand the endpoint's TAP to the dataplane: {e}"
            ));
        }
        if let Some(veth) = fast_veth {
            if let Err(e) = self.dp.add_fast_port(port, veth) {
                undo(None);
                return Err(format!(
                    "cannot attach the fast path to the endpoint's veth: {e}"
                ));
            }
        }
        let gone = Arc::new(endpoint::Gone::default());
        if !watch {
            let rt = EpRt {
                port,
                ifindex,
                netns: ns,
                watcher: None,
                reaper: None,
                gone,
                fast_veth,
                fast_names: fast_names.clone(),
            };
            self.follow_on_attach(&rt, label);
            return Ok(rt);
        }
        let watcher = match super::mirror::start_watcher(
            self.dp.clone(),
            self.log.clone(),
            &ns,
            ifindex,
            port,
            label.to_string(),
            gone.clone(),
        ) {
            Ok(w) => w,
            Err(e) => {
                undo(None);
                return Err(e);
            }
        };
        let rt = EpRt {
            port,
            ifindex,
            netns: ns,
            watcher: Some(watcher),
            reaper: None,
            gone,
            fast_veth,
            fast_names,
        };
        self.follow_on_attach(&rt, label);
        Ok(rt)
    }

    /// Takes `port`'s TAP back from the dataplane (`None` when it had none, or when the
    /// dataplane refused, which is logged).
    pub(super) fn take_tap_back(&self, port: PortId) -> Option<Tap> {
        match self.dp.remove_tap(port) {
            Ok(t) => t,
            Err(e) => {
                (self.log)(&format!("taking the TAP of {port} back: {e}"));
                None
            }
        }
    }

    /// Takes the endpoint out of the engine and the dataplane and destroys its TAP. Returns
    /// once the interface has left its namespace (with its addresses): the kernel's slower
    /// rest of the work goes on on a short-lived thread (see [`endpoint::destroy_tap_async`]).
    pub(super) fn teardown_endpoint(&self, mut rt: EpRt) {
        drop(rt.reaper.take());
        // A fast-path endpoint: `take_fast_port` empties the cache and unpairs its veth and
        // TAP before it returns (its programs forward nothing from then on); their links
        // are closed after the interfaces are gone, off this command's path.
        let links = match rt.fast_veth.map(|_| self.dp.take_fast_port(rt.port)) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                (self.log)(&format!("taking {} out of the fast path: {e}", rt.port));
                None
            }
            None => None,
        };
        let tap = self.take_tap_back(rt.port);
        let port = rt.port;
        match with_engine(&*self.dp, move |e: &mut Engine| e.remove_port(port)) {
            Ok(Ok(()))
            | Ok(Err(ConfigError {
                errno: Errno::Enodev,
                ..
            })) => {}
            Ok(Err(e)) => (self.log)(&format!("removing {port} from the engine: {e}")),
            Err(e) => (self.log)(&format!("removing {port} from the engine: {e}")),
        }
        if let Some(veth) = rt.fast_veth {
            // The veth pair goes with its endpoint end; the TAP is not persistent. The
            // daemon's end too, in case the endpoint's end is not where the daemon last saw
            // it (a front end moved it, and the daemon has not followed it yet). Returns
            // once the TAP and both ends are deleted; the links close after the reply.
            let gone = rt.gone.clone();
            endpoint::destroy_fast_async(
                rt.netns,
                rt.ifindex,
                veth,
                tap,
                links,
                rt.fast_names,
                gone.clone(),
            );
            gone.wait(GONE_WAIT);
            drop(rt.watcher.take());
            return;
        }
        let gone = match tap {
            // The address watcher sees the interface leave.
            Some(t) if rt.watcher.is_some() => {
                endpoint::destroy_tap_async(t, rt.gone.clone());
                rt.gone.wait(GONE_WAIT)
            }
            Some(t) => {
                endpoint::destroy_tap(t);
                false
            }
            None => false,
        };
        drop(rt.watcher.take());
        if !gone {
            endpoint::delete_link(&rt.netns, rt.ifindex);
        }
    }

    /// Follows a TAP a front end moves into its sandbox (see `managed.rs`'s module docs):
    /// waits until the interface with `ifindex` and `mac` is up in the endpoint's namespace,
    /// then settles it, starts its watcher and records its final name.
    pub(super) fn spawn_follow(
        &self,
        net_id: &str,
        ep_id: &str,
        port: PortId,
        ifindex: u32,
        mac: MacAddr,
    ) {
        let Some(me) = self.me.upgrade() else { return };
        let (net_id, ep_id) = (net_id.to_string(), ep_id.to_string());
        let label = ep_id.clone();
        let spawned = std::thread::Builder::new()
            .name("uvlan-follow".to_string())
            .spawn(move || {
                let start = Instant::now();
                loop {
                    std::thread::sleep(FOLLOW_POLL);
                    match me.follow_step(&net_id, &ep_id, port, ifindex, mac) {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(e) => {
                            (me.log)(&format!("endpoint {ep_id}: {e}"));
                            return;
                        }
                    }
                    if start.elapsed() > FOLLOW_TIMEOUT {
                        (me.log)(&format!(
                            "endpoint {ep_id}: its interface did not arrive in its sandbox \
                             within {} s; it gets no traffic until it does and the daemon is \
                             restarted",
                            FOLLOW_TIMEOUT.as_secs()
                        ));
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            (self.log)(&format!("cannot start the thread following {label}: {e}"));
        }
    }

    /// One look: `Ok(true)` when done (settled, or the endpoint is gone), `Ok(false)` to
    /// look again.
    fn follow_step(
        &self,
        net_id: &str,
        ep_id: &str,
        port: PortId,
        ifindex: u32,
        mac: MacAddr,
    ) -> Result<bool, String> {
        let mut st = self.lock();
        let Some(i) = st.nets.iter().position(|n| n.rec.id == net_id) else {
            return Ok(true);
        };
        let Some(k) = st.nets[i].rec.endpoints.iter().position(|e| e.id == ep_id) else {
            return Ok(true);
        };
        if st.nets[i].eps.get(ep_id).map(|r| r.port) != Some(port) {
            return Ok(true);
        }
        let ep = st.nets[i].rec.endpoints[k].clone();
        // Docker creates the sandbox after Join (when the container's process exists).
        let ns = match Netns::open_path(Path::new(&ep.netns_path)) {
            Ok(ns) if ep.netns_inode == 0 || ns.inode() == ep.netns_inode => ns,
            Ok(_) => return Err(format!("its sandbox {} was replaced", ep.netns_path)),
            Err(_) => return Ok(false),
        };
        let link = Rtnl::open(&ns)
            .and_then(|mut r| r.link_get_by_index(ifindex))
            .ok()
            .filter(|l| l.mac == Some(mac.0) && l.is_up());
        let Some(link) = link else {
            return Ok(false);
        };
        let driver = options::parse_driver(&st.nets[i].rec.driver)?;
        let link_local = if driver == Driver::Ipvlan && ep.addrs.v6.is_some() {
            with_engine(&*self.dp, move |e: &mut Engine| e.port_link_local(port))
                .ok()
                .flatten()
        } else {
            None
        };
        let plan = self.if_plan(
            &st.nets[i],
            driver,
            link.name.clone(),
            mac,
            link.mtu,
            &ep,
            link_local,
        );
        if let Err(e) = endpoint::settle_moved(&ns, ifindex, &plan) {
            (self.log)(&format!("endpoint {ep_id}: {e}"));
        }
        let gone = match st.nets[i].eps.get(ep_id) {
            Some(rt) => rt.gone.clone(),
            None => return Ok(true),
        };
        let watcher = super::mirror::start_watcher(
            self.dp.clone(),
            self.log.clone(),
            &ns,
            ifindex,
            port,
            ep.name.clone(),
            gone,
        )?;
        let mut settled = ep;
        settled.ifname = link.name.clone();
        settled.netns_inode = ns.inode();
        self.store
            .save_endpoint(net_id, &settled)
            .map_err(|e| e.to_string())?;
        st.nets[i].rec.endpoints[k] = settled;
        if let Some(rt) = st.nets[i].eps.get_mut(ep_id) {
            rt.netns = ns;
            rt.ifindex = ifindex;
            rt.watcher = Some(watcher);
        }
        Ok(true)
    }
}
