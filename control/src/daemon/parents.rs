//! Parents change under the daemon: brought down and up, given a new MAC or MTU, addresses
//! added and removed, deleted and created again. The kernel's slaves follow their parent, and
//! uvlan's endpoints follow it the same way:
//!
//! - state (C62): ports' operational state follows the parent in the engine, and each
//!   endpoint's interface loses its carrier while the parent is down or gone;
//! - MAC (C7, C43): ipvlan and passthru ports take the parent's new MAC, in the engine and on
//!   the endpoint's interface;
//! - MTU (C63, C45): ipvlan endpoints are reset to the parent's MTU on every change, macvlan
//!   endpoints larger than the parent are clamped;
//! - addresses: the engine hands frames for the parent's own addresses to the host
//!   (an address an endpoint already holds stays the endpoint's: first owner wins);
//! - a parent deleted and created again (a new ifindex) gets its wire opened again;
//! - a network that could not be restored at start because its parent was missing comes up,
//!   with its endpoints, when the parent appears.
//!
//! [`Daemon::reconcile_parents`] runs at start (after restoring) and whenever the host's
//! links or addresses change (a netlink watcher in the daemon's namespace).

use std::collections::BTreeMap;
use std::net::IpAddr;

use uvlan_dataplane::fwd::{ConfigError, Engine, ParentId, ParentInfo};
use uvlan_dataplane::wire::MacAddr;

use super::dp::with_engine;
use super::follow::Change;
use super::model::{Daemon, State};

/// The facts the engine should have for a parent, from the host (`None`: the interface is
/// gone, so it is down and keeps its last MAC and MTU).
struct Facts {
    up: bool,
    mac: Option<MacAddr>,
    mtu: u32,
    addrs: Vec<IpAddr>,
}

/// Brings the engine's parent `pid` in line with `want`; returns what changed.
fn apply(e: &mut Engine, pid: ParentId, want: Facts) -> Result<Change, ConfigError> {
    let mut c = Change::default();
    let Some(before): Option<ParentInfo> = e.parent_info(pid) else {
        return Ok(c);
    };
    if before.up != want.up {
        e.set_parent_up(pid, want.up)?;
        c.up = Some(want.up);
    }
    if let Some(mac) = want
        .mac
        .filter(|m| *m != before.mac && m.is_valid_unicast())
    {
        e.set_parent_mac(pid, mac)?;
        c.mac = Some(mac);
    }
    if want.mtu != before.mtu && want.mtu > 0 {
        e.set_parent_mtu(pid, want.mtu)?;
        c.mtu = Some(want.mtu);
    }
    let (mut a, mut b) = (want.addrs.clone(), before.addrs.clone());
    a.sort();
    b.sort();
    if a != b {
        e.set_parent_addrs(pid, want.addrs)?;
        c.addrs = true;
    }
    Ok(c)
}

impl Daemon {
    /// Re-reads every parent in use from the host and makes the engine, the wire and the
    /// endpoints follow it (see the module documentation).
    pub fn reconcile_parents(&self) {
        let mut st = self.lock();
        self.reconcile_locked(&mut st);
    }

    pub(super) fn reconcile_locked(&self, st: &mut State) {
        self.retry_failed_networks(st);
        self.retry_wires(st);
        let mut parents: BTreeMap<ParentId, String> = BTreeMap::new();
        for net in &st.nets {
            if let (Some(rt), Some(p)) = (&net.rt, &net.rec.driver_config.parent) {
                if let Some(pid) = rt.parent {
                    parents.entry(pid).or_insert_with(|| p.ifname.clone());
                }
            }
        }
        for (pid, ifname) in parents {
            let link = match st.host.link(&ifname) {
                Ok(l) => l,
                Err(e) => {
                    (self.log)(&format!("cannot re-read parent {ifname}: {e}"));
                    continue;
                }
            };
            let want = match &link {
                Some(l) => Facts {
                    up: l.up,
                    mac: l.mac,
                    mtu: l.mtu,
                    addrs: l.addrs.clone(),
                },
                None => Facts {
                    up: false,
                    mac: None,
                    mtu: 0,
                    addrs: Vec::new(),
                },
            };
            let change = match with_engine(&*self.dp, move |e: &mut Engine| apply(e, pid, want)) {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    (self.log)(&format!("parent {ifname}: cannot follow its change: {e}"));
                    continue;
                }
                Err(e) => {
                    (self.log)(&format!("parent {ifname}: {e}"));
                    continue;
                }
            };
            // The last index seen stays while the interface is gone: one that comes back
            // under the name is a new interface, and the wire must be opened on it.
            if let Some(l) = &link {
                let before = st.parent_ifindex.insert(ifname.clone(), l.index);
                if before.is_some_and(|b| b != l.index) {
                    self.reopen_wire(st, pid, &ifname);
                }
            } else if change.up == Some(false) {
                (self.log)(&format!(
                    "parent {ifname} is gone: its endpoints have no carrier until an \
                     interface of that name comes back"
                ));
            }
            if change != Change::default() {
                (self.log)(&format!("parent {ifname}: {}", change.describe()));
            }
            if change.endpoints_affected() {
                self.follow_parent(st, pid, &change);
            }
        }
        // Forget interfaces no network uses any more.
        let in_use: Vec<String> = st
            .nets
            .iter()
            .filter(|n| n.rt.is_some())
            .filter_map(|n| {
                n.rec
                    .driver_config
                    .parent
                    .as_ref()
                    .map(|p| p.ifname.clone())
            })
            .collect();
        st.parent_ifindex.retain(|name, _| in_use.contains(name));
    }

    /// Networks whose restore failed (their parent was missing, say, when the daemon
    /// started) are restored, endpoints included, once their parent exists (again).
    fn retry_failed_networks(&self, st: &mut State) {
        for i in 0..st.nets.len() {
            if st.nets[i].rt.is_some() {
                continue;
            }
            let Some(p) = st.nets[i].rec.driver_config.parent.clone() else {
                continue;
            };
            let now = st.host.link(&p.ifname).ok().flatten().map(|l| l.index);
            if now.is_none() || now == st.nets[i].problem_ifindex {
                continue;
            }
            let rec = st.nets[i].rec.clone();
            let net = self.restore_network(st, rec);
            if net.rt.is_some() {
                (self.log)(&format!(
                    "network {}: parent {} is here: network and endpoints restored",
                    net.rec.name, p.ifname
                ));
            }
            st.nets[i] = net;
        }
    }

    /// Networks that should have a wire but have none (opening it failed, e.g. right after
    /// their parent was created again) try again while the parent exists.
    fn retry_wires(&self, st: &mut State) {
        for i in 0..st.nets.len() {
            let net = &st.nets[i];
            let (Some(rt), Some(p)) = (&net.rt, &net.rec.driver_config.parent) else {
                continue;
            };
            let Some(pid) = rt.parent else { continue };
            if net.rec.internal || rt.wire.is_some() {
                continue;
            }
            let ifname = p.ifname.clone();
            if !matches!(st.host.link(&ifname), Ok(Some(_))) {
                continue;
            }
            match self.dp.attach_parent(pid, &ifname) {
                Ok(mode) => {
                    (self.log)(&format!(
                        "network {}: wire on {ifname} opened: {mode}",
                        st.nets[i].rec.name
                    ));
                    if let Some(rt) = st.nets[i].rt.as_mut() {
                        rt.wire = Some(mode);
                    }
                }
                Err(e) => (self.log)(&format!(
                    "network {}: cannot open the wire on {ifname}: {e}",
                    st.nets[i].rec.name
                )),
            }
        }
    }

    /// Closes and opens again every wire attachment of `pid` (its interface was replaced).
    fn reopen_wire(&self, st: &mut State, pid: ParentId, ifname: &str) {
        let mut users = 0;
        for net in st.nets.iter_mut() {
            let Some(rt) = net.rt.as_mut() else { continue };
            if rt.parent == Some(pid) && rt.wire.is_some() {
                if let Err(e) = self.dp.detach_parent(pid) {
                    (self.log)(&format!("closing the old wire of {ifname}: {e}"));
                }
                rt.wire = None;
                users += 1;
            }
        }
        if users == 0 {
            return;
        }
        for net in st.nets.iter_mut() {
            let Some(rt) = net.rt.as_mut() else { continue };
            let wants_wire = rt.parent == Some(pid) && !net.rec.internal;
            if !wants_wire || rt.wire.is_some() {
                continue;
            }
            match self.dp.attach_parent(pid, ifname) {
                Ok(mode) => {
                    (self.log)(&format!(
                        "network {}: wire on {ifname} opened again: {mode}",
                        net.rec.name
                    ));
                    rt.wire = Some(mode);
                }
                Err(e) => (self.log)(&format!(
                    "network {}: cannot open the wire on {ifname} again: {e}",
                    net.rec.name
                )),
            }
        }
    }
}
